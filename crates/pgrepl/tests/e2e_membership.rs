//! End-to-end: the cluster changing while it serves. Scaling (S5) with rows and slots
//! following; passwords set from configuration, reset on start and changed live (S6);
//! `destroy_on_restart` and an emptied replica directory (S9); promote with the primary down,
//! handover from a running primary, and the old primary rejoining as a replica (S10).

mod common;

use common::{connect, describe, eventually, TestCluster};
use std::time::Duration;

async fn replication_rows(c: &TestCluster) -> Vec<(String, String)> {
    let primary = c.admin(c.primary_port()).await;
    let rows = primary.query("SELECT application_name, state FROM pg_stat_replication ORDER BY 1", &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

async fn slots(c: &TestCluster) -> Vec<String> {
    let primary = c.admin(c.primary_port()).await;
    primary
        .query("SELECT slot_name FROM pg_replication_slots ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn streaming(names: &[&str]) -> Vec<(String, String)> {
    names.iter().map(|n| (n.to_string(), "streaming".to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_adds_and_removes_replicas_and_their_slots() {
    let c = TestCluster::new();
    c.ok(&["up"]);
    assert_eq!(replication_rows(&c).await, streaming(&["node-2"]), "one replica by default, as in the seed's template");
    let out = c.ok(&["scale", "3"]);
    assert!(out.contains("has 3 replica(s)"), "{out}");
    assert_eq!(replication_rows(&c).await, streaming(&["node-2", "node-3", "node-4"]));
    assert_eq!(slots(&c).await, ["node_2", "node_3", "node_4"]);
    c.ok(&["scale", "1"]);
    assert_eq!(replication_rows(&c).await, streaming(&["node-2"]));
    assert_eq!(slots(&c).await, ["node_2"]);
    let status = c.status();
    assert_eq!(status["members"].as_array().unwrap().len(), 2, "{status:#}");
    // Removed members' directories are kept, never deleted; new members never reuse their names.
    assert!(c.dir.join("members/node-4/data").exists());
    c.ok(&["scale", "2"]);
    assert_eq!(replication_rows(&c).await, streaming(&["node-2", "node-5"]));
    c.ok(&["scale", "0"]);
    assert_eq!(replication_rows(&c).await, vec![]);
    assert_eq!(slots(&c).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_come_from_the_seeds_variables_and_change_live() {
    let c = TestCluster::new();
    let seed_env = [
        ("POSTGRESQL_USER", "user"),
        ("POSTGRESQL_PASSWORD", "Pass-1"),
        ("POSTGRESQL_DATABASE", "userdb"),
        ("POSTGRESQL_ADMIN_PASSWORD", "Admin-1"),
        ("POSTGRESQL_MASTER_USER", "master"),
        ("POSTGRESQL_MASTER_PASSWORD", "Repl-1"),
        ("ALLOW_IP_RANGE", "127.0.0.0/8,10.20.0.0/16"),
    ];
    let out = c.run_env(&["up"], &seed_env);
    assert!(out.status.success(), "{}", describe(&out));
    let primary = c.primary_port();
    let replica = c.members("replica", "streaming")[0].1;
    for port in [primary, replica] {
        connect(port, "user", "Pass-1", "userdb").await.expect("the seed's user logs in with its password");
        connect(port, "postgres", "Admin-1", "userdb").await.expect("the admin logs in with the admin password");
    }
    // S7: the allowed ranges reach pg_hba.conf with scram-sha-256; replication only for the
    // replication role from the members' address.
    let rules = c.admin(primary).await.query(
        "SELECT array_to_string(database, ','), array_to_string(user_name, ','), address || '/' || netmask, auth_method \
         FROM pg_hba_file_rules WHERE type = 'host' ORDER BY line_number", &[]).await.unwrap();
    let rules: Vec<(String, String, String, String)> =
        rules.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    let rule = |db: &str, user: &str, net: &str| {
        (db.to_string(), user.to_string(), net.to_string(), "scram-sha-256".to_string())
    };
    assert!(rules.contains(&rule("all", "all", "127.0.0.0/255.0.0.0")), "{rules:?}");
    assert!(rules.contains(&rule("all", "all", "10.20.0.0/255.255.0.0")), "{rules:?}");
    assert!(rules.contains(&rule("replication", "master", "127.0.0.1/255.255.255.255")), "{rules:?}");
    assert!(rules.iter().all(|r| r.3 == "scram-sha-256"), "{rules:?}");
    let repl_user: String =
        c.admin(primary).await.query_one("SELECT usename::text FROM pg_stat_replication", &[]).await.unwrap().get(0);
    assert_eq!(repl_user, "master");

    // Live changes: new logins work on primary and replica, old ones fail, streaming goes on.
    for (flag, value) in [("--user", "Pass-2"), ("--admin", "Admin-2"), ("--replication", "Repl-2")] {
        let out = c.run_stdin(&["passwd", flag], &format!("{value}\n"));
        assert!(out.status.success(), "{}", describe(&out));
    }
    for port in [primary, replica] {
        eventually(Duration::from_secs(5), "the new user password on every member", || async {
            connect(port, "user", "Pass-2", "userdb").await.ok().map(|_| ())
        })
        .await;
        connect(port, "postgres", "Admin-2", "userdb").await.expect("new admin password");
        assert!(connect(port, "user", "Pass-1", "userdb").await.is_err(), "the old user password still works");
    }
    assert_eq!(replication_rows(&c).await, streaming(&["node-2"]), "streaming was lost");
    let writer = connect(primary, "user", "Pass-2", "userdb").await.unwrap();
    writer.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)").await.unwrap();
    let reader = connect(replica, "user", "Pass-2", "userdb").await.unwrap();
    eventually(Duration::from_secs(5), "the row on the replica", || async {
        reader.query_one("SELECT x FROM t", &[]).await.ok().map(|_| ())
    })
    .await;

    // A new replication connection needs the new replication password: restart the replica.
    // Its data is kept by default (S9: destroy_on_restart is false).
    let marker = c.dir.join("members/node-2/data/kept-across-restarts");
    std::fs::write(&marker, "x").unwrap();
    c.ok(&["stop", "node-2"]);
    c.ok(&["start", "node-2"]);
    assert!(marker.exists(), "a replica's data was wiped although destroy_on_restart is false");
    assert_eq!(replication_rows(&c).await, streaming(&["node-2"]));

    // S9: an emptied replica directory is cloned afresh.
    c.ok(&["stop", "node-2"]);
    std::fs::remove_dir_all(c.dir.join("members/node-2/data")).unwrap();
    c.ok(&["start", "node-2"]);
    assert_eq!(replication_rows(&c).await, streaming(&["node-2"]));

    // S6: passwords are reset to the configured values on every start.
    c.ok(&["down"]);
    let mut env = seed_env.to_vec();
    env[1] = ("POSTGRESQL_PASSWORD", "Pass-3");
    let out = c.run_env(&["up"], &env);
    assert!(out.status.success(), "{}", describe(&out));
    for port in [c.primary_port(), c.members("replica", "streaming")[0].1] {
        eventually(Duration::from_secs(5), "the configured password after restart", || async {
            connect(port, "user", "Pass-3", "userdb").await.ok().map(|_| ())
        })
        .await;
    }
    connect(c.primary_port(), "postgres", "Admin-1", "userdb")
        .await
        .expect("the configured admin password after restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_on_restart_reclones_a_replica() {
    let c = TestCluster::new();
    let out = c.run_env(&["up"], &[("DESTROY_DATABASE_ON_RESTART", "True")]);
    assert!(out.status.success(), "{}", describe(&out));
    let marker = c.dir.join("members/node-2/data/wiped-on-restart");
    std::fs::write(&marker, "x").unwrap();
    let primary_marker = c.dir.join("members/node-1/data/never-wiped");
    std::fs::write(&primary_marker, "x").unwrap();
    c.ok(&["stop", "node-2"]);
    c.ok(&["start", "node-2"]);
    assert!(!marker.exists(), "the replica kept its data although destroy_on_restart is true");
    assert_eq!(replication_rows(&c).await, streaming(&["node-2"]));
    c.ok(&["down"]);
    c.ok(&["up"]);
    assert!(primary_marker.exists(), "the primary's data was wiped");
    assert!(c.ok(&["logs", "node-2"]).contains("destroy_on_restart is set"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_with_the_primary_down_then_the_old_primary_rejoins() {
    let c = TestCluster::new();
    // Failover is manual here: with it automatic, a replica may win the stopped primary's
    // lease before `promote node-2` runs, which then makes a second promotion (timeline 3).
    let out = c.run_env(&["up", "--replicas", "2"], &[("PGREPL_AUTOMATIC_FAILOVER", "false")]);
    assert!(out.status.success(), "{}", describe(&out));
    let admin = c.secret("admin");
    let old = c.admin(c.primary_port()).await;
    old.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)").await.unwrap();
    drop(old);
    c.ok(&["stop", "node-1"]);
    let refused = c.run(&["promote", "node-1"]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("node-1 is stopped; start it first"),
        "{}",
        describe(&refused)
    );

    let out = c.ok(&["promote", "node-2"]);
    assert!(out.contains("node-2 is the primary"), "{out}");
    let new_port = c.port_of("node-2");
    assert_eq!(c.primary_port(), new_port);
    let new = connect(new_port, "postgres", &admin, "postgres").await.unwrap();
    let in_recovery: bool = new.query_one("SELECT pg_is_in_recovery()", &[]).await.unwrap().get(0);
    assert!(!in_recovery);
    new.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
    assert_eq!(replication_rows(&c).await, streaming(&["node-3"]), "node-3 follows the new primary");

    // The old primary comes back as a replica of the new one, on the new timeline.
    c.ok(&["start", "node-1"]);
    assert_eq!(replication_rows(&c).await, streaming(&["node-1", "node-3"]));
    let back = connect(c.port_of("node-1"), "postgres", &admin, "postgres").await.unwrap();
    let in_recovery: bool = back.query_one("SELECT pg_is_in_recovery()", &[]).await.unwrap().get(0);
    assert!(in_recovery, "the old primary came back writable");
    eventually(Duration::from_secs(5), "the new primary's row on the old primary", || async {
        let n: i64 = back.query_one("SELECT count(*) FROM t", &[]).await.ok()?.get(0);
        (n == 2).then_some(())
    })
    .await;
    let status = c.status();
    for m in status["members"].as_array().unwrap() {
        assert_eq!(m["timeline"], 2, "{status:#}");
    }
    assert!(c.ok(&["logs", "node-1"]).contains("rewinding this former primary"));

    // A planned handover from a running primary loses nothing.
    new.batch_execute("INSERT INTO t VALUES (3)").await.unwrap();
    drop(new);
    c.ok(&["promote", "node-3"]);
    let third = connect(c.primary_port(), "postgres", &admin, "postgres").await.unwrap();
    assert_eq!(c.primary_port(), c.port_of("node-3"));
    let n: i64 = third.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 3, "a committed row was lost in the handover");
    assert_eq!(replication_rows(&c).await, streaming(&["node-1", "node-2"]));
}
