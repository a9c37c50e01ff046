//! End-to-end: `pgrepl up` on this machine with real PostgreSQL, checked through real SQL
//! connections: streaming (S2), read-only replicas (S3), endpoints (S4), status, logs, psql
//! (S12), down/up keeping data (S11), and secrets kept out of logs and process arguments.

mod common;

use common::{connect, eventually, TestCluster};
use std::time::Duration;
use tokio_postgres::error::SqlState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_streams_to_two_replicas_that_serve_reads_and_refuse_writes() {
    let c = TestCluster::new();
    let out = c.ok(&["up", "--replicas", "2"]);
    assert!(out.contains("is ready in"), "{out}");
    assert!(out.contains("read-write: postgresql://app@127.0.0.1:"), "{out}");

    // S2: one streaming row per replica in pg_stat_replication.
    let primary = c.admin(c.primary_port()).await;
    let rows = primary.query("SELECT application_name, state FROM pg_stat_replication ORDER BY 1", &[]).await.unwrap();
    let rows: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        rows,
        [("node-2".to_string(), "streaming".to_string()), ("node-3".to_string(), "streaming".to_string())]
    );
    let slots: Vec<String> = primary
        .query("SELECT slot_name FROM pg_replication_slots ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(slots, ["node_2", "node_3"]);

    // A row written on the primary by the application user is read on both replicas within 5 s.
    let app = connect(c.primary_port(), "app", &c.secret("user"), "app").await.unwrap();
    app.batch_execute("CREATE TABLE seen (id int PRIMARY KEY, note text); INSERT INTO seen VALUES (1, 'from primary')")
        .await
        .unwrap();
    let replicas = c.members("replica", "streaming");
    assert_eq!(replicas.len(), 2);
    for (name, port) in &replicas {
        let replica = connect(*port, "app", &c.secret("user"), "app").await.unwrap();
        eventually(Duration::from_secs(5), &format!("the row on {name}"), || async {
            let n: i64 = replica.query_one("SELECT count(*) FROM seen", &[]).await.ok()?.get(0);
            (n == 1).then_some(())
        })
        .await;
        // S3: a write on a replica fails with PostgreSQL's read-only error.
        let err = replica.execute("INSERT INTO seen VALUES (2, 'from replica')", &[]).await.unwrap_err();
        assert_eq!(err.code(), Some(&SqlState::READ_ONLY_SQL_TRANSACTION), "{err}");
    }

    // S4: the endpoints, as the seed lists them with `dig postgresql-slave A`.
    let ro = c.ok(&["endpoints", "--ro"]);
    let mut listed: Vec<&str> = ro.lines().collect();
    listed.sort();
    let mut expected: Vec<String> = replicas.iter().map(|(_, p)| format!("127.0.0.1:{p}")).collect();
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(c.ok(&["endpoints", "--rw"]).trim(), format!("127.0.0.1:{}", c.primary_port()));

    // Status: the documented JSON fields.
    let status = c.status();
    assert_eq!(status["cluster"], "pgrepl");
    assert_eq!(status["leader"], "node-1");
    for m in status["members"].as_array().unwrap() {
        for field in
            ["name", "role", "state", "host", "port", "timeline", "lsn", "lag_bytes", "lag_seconds", "decision"]
        {
            assert!(m.get(field).is_some(), "member lacks {field}: {m}");
        }
        assert_eq!(m["warning"], serde_json::Value::Null, "{m}");
        let replay_timeline = if m["role"] == "replica" { serde_json::json!(1) } else { serde_json::Value::Null };
        assert_eq!(m["replay_timeline"], replay_timeline, "{m}");
        assert_eq!(m["timeline"], 1);
    }
    assert_eq!(status["replication"].as_array().unwrap().len(), 2);
    let table = c.ok(&["status"]);
    assert!(table.contains("replica, streaming from node-1"), "{table}");

    // S12: logs and a psql shell on the primary and on a replica.
    assert!(c.ok(&["logs", "node-1"]).contains("bootstrapping a new cluster"));
    assert!(c.ok(&["logs", "node-2"]).contains("started streaming WAL"));
    assert_eq!(c.ok(&["psql", "node-2", "--", "-Atc", "SELECT pg_is_in_recovery()"]).trim(), "t");
    assert_eq!(c.ok(&["psql", "--", "-Atc", "SELECT note FROM seen"]).trim(), "from primary");
    let err = c.run(&["promote", "node-9"]);
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr)
        .contains("unknown member \"node-9\"; the members are node-1, node-2, node-3"));

    // Invariant 4: no password in any log, nor in any process's arguments.
    let secrets = c.secrets();
    let passwords: Vec<&str> = ["user", "admin", "replication"].iter().map(|k| secrets[k].as_str().unwrap()).collect();
    let mut logs = std::fs::read_to_string(c.dir.join("supervisor.log")).unwrap();
    for n in 1..=3 {
        logs += &std::fs::read_to_string(c.dir.join(format!("members/node-{n}/member.log"))).unwrap();
    }
    let mut cmdlines = String::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(bytes) = std::fs::read(entry.path().join("cmdline")) {
            cmdlines += &String::from_utf8_lossy(&bytes);
        }
    }
    assert!(cmdlines.contains("agent"), "the agents' command lines should have been read");
    for p in &passwords {
        assert!(!logs.contains(p), "a password appears in a log");
        assert!(!cmdlines.contains(p), "a password appears in a process's arguments");
    }
    for file in ["secrets.json", "members/node-2/pgpass", "pgrepl.toml"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(c.dir.join(file)).unwrap().permissions());
        assert_eq!(mode & 0o077, 0, "{file} is readable by others");
    }
    let config = std::fs::read_to_string(c.dir.join("pgrepl.toml")).unwrap();
    assert!(passwords.iter().all(|p| !config.contains(p)));

    // S11: down then up keeps the data, and the replicas stream again.
    drop((primary, app));
    let down = c.ok(&["down"]);
    assert!(down.contains("data is kept"), "{down}");
    assert!(connect(replicas[0].1, "app", &c.secret("user"), "app").await.is_err(), "members still answer after down");
    c.ok(&["up"]);
    assert_eq!(c.members("replica", "streaming").len(), 2);
    let app = connect(c.primary_port(), "app", &c.secret("user"), "app").await.unwrap();
    let note: String = app.query_one("SELECT note FROM seen WHERE id = 1", &[]).await.unwrap().get(0);
    assert_eq!(note, "from primary");
}
