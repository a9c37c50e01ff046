//! The cluster's PostgreSQL parameters (`pgrepl config show|set|reset`) on a running cluster
//! under a writer through rw: a reloadable parameter reaches every member with no restart; one
//! that needs a restart marks every member pending restart (in `status`, and in `/patroni` as
//! Patroni says it), and a restarted member runs with it; a value PostgreSQL refuses is refused
//! before anything changes; of two changes made from the same reading, one wins and the other
//! is told; `pgrepl up` keeps what `config set` set. `pgrepl restart --rolling --pending` in
//! synchronous mode applies a pending parameter with one switchover, the synchronous standby
//! waiting until another replica took its role, and no acknowledged row lost.

mod common;

use common::http::get;
use common::writer::{missing, Writer};
use common::{eventually, TestCluster};
use serde_json::Value;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// When the server at `port` started.
async fn started_at(c: &TestCluster, port: u16) -> String {
    let row = c.admin(port).await.query_one("SELECT pg_postmaster_start_time()::text", &[]).await.unwrap();
    row.get(0)
}

fn pending(status: &Value, member: &str) -> Vec<String> {
    let m = status["members"].as_array().unwrap().iter().find(|m| m["name"] == member).unwrap();
    m["pending_restart"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

/// `/patroni`'s `pending_restart` on `member` (Patroni's: `true`, or no such field) and the
/// parameters pgrepl names beside it.
fn patroni_pending(c: &TestCluster, member: &str) -> (Value, Value) {
    let body = get(&c.api_of(member), "/patroni").json();
    (body["pending_restart"].clone(), body["pgrepl"]["pending_restart"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_reach_every_member_reloaded_or_pending_restart_and_bad_ones_are_refused() {
    let c = TestCluster::new();
    c.ok(&["up", "--replicas", "2"]);
    let members = c.all_members();
    let password = c.secret("admin");
    let writer = Writer::start(c.rw_port, password.clone()).await;
    let mut started = Vec::new();
    for (_, port) in &members {
        started.push(started_at(&c, *port).await);
    }

    // A reloadable parameter: on every member at once, nothing restarted.
    let out = c.ok(&["config", "set", "work_mem=7MB"]);
    assert!(out.contains("set work_mem = '7MB' for every member"), "{out}");
    for (name, port) in &members {
        eventually(LIMIT, &format!("work_mem on {name}"), || async {
            (c.show(*port, "work_mem").await.as_deref() == Some("7MB")).then_some(())
        })
        .await;
    }
    for ((name, port), before) in members.iter().zip(&started) {
        assert_eq!(&started_at(&c, *port).await, before, "{name} was not restarted");
    }
    assert!(c.ok(&["config", "show"]).contains("work_mem = '7MB'"));
    for (name, _) in &members {
        assert_eq!(patroni_pending(&c, name), (Value::Null, Value::Null), "{name}: nothing pending");
    }

    // One that needs a restart: every member says so, and runs on with the old value.
    c.ok(&["config", "set", "shared_buffers=64MB"]);
    eventually(LIMIT, "every member pending restart of shared_buffers", || async {
        let s = c.status();
        members.iter().all(|(name, _)| pending(&s, name) == ["shared_buffers"]).then_some(())
    })
    .await;
    assert_eq!(c.show(members[0].1, "shared_buffers").await.as_deref(), Some("128MB"));
    let said = c.ok(&["status"]);
    assert!(said.contains("pending restart") && said.contains("shared_buffers"), "{said}");
    for (name, _) in &members {
        eventually(LIMIT, &format!("/patroni of {name} pending restart"), || async {
            (patroni_pending(&c, name) == (Value::Bool(true), serde_json::json!(["shared_buffers"]))).then_some(())
        })
        .await;
    }

    // A value PostgreSQL refuses: told in its words, and nothing changes.
    let before = c.config_revision();
    for (pair, words) in [
        ("shared_buffers=lots", "invalid value for parameter \"shared_buffers\""),
        ("work_mem=1", "outside the valid range for parameter \"work_mem\""),
        ("no_such_setting=1", "unrecognized configuration parameter \"no_such_setting\""),
        ("port=6000", "port is set by pgrepl on every member"),
    ] {
        let out = c.run(&["config", "set", pair]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(words), "{pair}: {err}");
    }
    assert_eq!(c.config_revision(), before, "nothing was written");

    // Two changes from the same reading: the first wins, the second is told.
    let read = c.config_revision().to_string();
    c.ok(&["config", "set", "maintenance_work_mem=32MB", "--if-revision", &read]);
    let late = c.run(&["config", "set", "maintenance_work_mem=48MB", "--if-revision", &read]);
    let err = String::from_utf8_lossy(&late.stderr);
    assert!(!late.status.success() && err.contains("it changed since it was read"), "{err}");
    assert!(c.ok(&["config", "show"]).contains("maintenance_work_mem = '32MB'"));

    // A restarted replica runs with shared_buffers and is no longer pending.
    let replica = members.iter().find(|(name, _)| *name != c.leader()).unwrap().clone();
    c.ok(&["stop", &replica.0]);
    c.ok(&["start", &replica.0]);
    eventually(LIMIT, "the restarted replica to run with shared_buffers", || async {
        (c.show(replica.1, "shared_buffers").await.as_deref() == Some("64MB")).then_some(())
    })
    .await;
    eventually(LIMIT, "the restarted replica no longer pending", || async {
        pending(&c.status(), &replica.0).is_empty().then_some(())
    })
    .await;
    eventually(LIMIT, "/patroni of the restarted replica without pending_restart", || async {
        (patroni_pending(&c, &replica.0) == (Value::Null, Value::Null)).then_some(())
    })
    .await;

    // `pgrepl up` again keeps them: they are in the directory's configuration too.
    let toml = std::fs::read_to_string(c.dir.join("pgrepl.toml")).unwrap();
    assert!(toml.contains("work_mem = \"7MB\"") && toml.contains("shared_buffers = \"64MB\""), "{toml}");
    let at = c.config_revision();
    c.ok(&["up"]);
    assert_eq!(c.config_revision(), at, "up changed nothing");
    c.ok(&["config", "reset", "maintenance_work_mem"]);
    assert!(!c.ok(&["config", "show"]).contains("maintenance_work_mem"));

    let acked = writer.stop().await;
    assert!(!acked.is_empty());
    assert_eq!(missing(c.primary_port(), &password, &acked).await, Vec::<i64>::new());
}

/// The longest time between two acknowledged writes.
fn longest_gap(log: &common::writer::WriteLog) -> Duration {
    log.acked.windows(2).map(|w| w[1].1.duration_since(w[0].1)).max().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_applies_pending_parameters_with_one_switchover_and_nothing_lost() {
    let c = TestCluster::new();
    let out = c.run_env(&["up", "--replicas", "2"], &[("PGREPL_SYNCHRONOUS", "on")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let password = c.secret("admin");
    let first = c.leader();
    // The synchronous standby, as the primary has it.
    let sync_standby: String = eventually(LIMIT, "a synchronous standby", || async {
        let primary = c.admin(c.primary_port()).await;
        let rows = primary
            .query("SELECT application_name FROM pg_stat_replication WHERE sync_state = 'sync'", &[])
            .await
            .ok()?;
        rows.first().map(|r| r.get(0))
    })
    .await;
    let writer = Writer::start(c.rw_port, password.clone()).await;
    c.ok(&["config", "set", "shared_buffers=64MB"]);
    eventually(LIMIT, "every member pending restart", || async {
        let s = c.status();
        s["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["pending_restart"] == serde_json::json!(["shared_buffers"]))
            .then_some(())
    })
    .await;

    let out = c.ok(&["restart", "--rolling", "--pending"]);
    assert!(out.contains("rolling restart done"), "{out}");
    assert_eq!(out.matches("restarted ").count(), 3, "each member once: {out}");
    assert_eq!(out.matches("switched over").count(), 1, "{out}");
    assert_ne!(c.leader(), first, "the old primary handed over");
    let s = c.status();
    for m in s["members"].as_array().unwrap() {
        assert_eq!(m["pending_restart"], serde_json::json!([]), "{s:#}");
        let port = m["port"].as_u64().unwrap() as u16;
        assert_eq!(c.show(port, "shared_buffers").await.as_deref(), Some("64MB"), "{}", m["name"]);
    }
    assert_eq!(c.converged(), Some(c.leader()), "{:#}", c.status());
    // Nothing is left to restart: a second run says so.
    assert!(c.ok(&["restart", "--rolling", "--pending"]).contains("nothing to do"));
    // The synchronous standby waited until the leader had made another replica synchronous.
    let log = std::fs::read_to_string(c.dir.join(format!("members/{sync_standby}/member.log"))).unwrap_or_default();
    assert!(
        log.contains("restarts once the leader has made another streaming replica"),
        "{sync_standby}, synchronous at the start, waited for its role to move:\n{log}"
    );

    assert!(c.ok(&["reload"]).contains("every running member reloaded"));
    let log = writer.stop_with_log().await;
    eprintln!("rolling restart under the writer: {} rows, longest write gap {:?}", log.acked.len(), longest_gap(&log));
    let acked: Vec<i64> = log.acked.iter().map(|(id, _)| *id).collect();
    assert_eq!(missing(c.primary_port(), &password, &acked).await, Vec::<i64>::new());
}
