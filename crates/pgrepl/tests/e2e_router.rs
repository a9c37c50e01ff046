//! End-to-end: the router's read-write and read-only endpoints (S4), with real clients. Reads
//! and writes land where they should, reads spread over the replicas, TLS passes through, a
//! stopped replica gets no new reads, promote moves rw and closes rw connections to the old
//! primary, and with no primary a client gets a prompt, clear error.

mod common;

use common::{connect, describe, eventually, TestCluster};
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;

/// `(inet_server_port(), pg_is_in_recovery())` of a new connection through `port`.
async fn lands_on(c: &TestCluster, port: u16) -> (u16, bool) {
    let client = connect(port, "postgres", &c.secret("admin"), "postgres").await.unwrap();
    let row = client.query_one("SELECT inet_server_port(), pg_is_in_recovery()", &[]).await.unwrap();
    (row.get::<_, i32>(0) as u16, row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_route_reads_and_writes_and_follow_the_primary() {
    let c = TestCluster::new();
    let (rw, ro) = (c.rw_port, c.ro_port);
    let config = c.scratch("pgrepl.toml");
    std::fs::write(
        &config,
        // Failover is manual here, so that stopping the primary leaves the cluster without one.
        "rw_wait = \"1s\"\nro_max_lag = \"1MB\"\nautomatic_failover = false\n",
    )
    .unwrap();
    let out = c.run(&["up", "--replicas", "2", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ca = c.dir.join("ca.crt");
    let tls = format!("?sslmode=verify-full&sslrootcert={}", ca.display());
    assert!(
        stdout.contains(&format!("read-write: postgresql://app@127.0.0.1:{rw}/app{tls}  (routes to node-1)")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("read-only:  postgresql://app@127.0.0.1:{ro}/app{tls}  (routes to node-2, node-3)")),
        "{stdout}"
    );

    // rw reaches the primary, and writes work through it.
    assert_eq!(lands_on(&c, rw).await, (c.port_of("node-1"), false));
    let app = connect(rw, "app", &c.secret("user"), "app").await.unwrap();
    app.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)").await.unwrap();

    // ro spreads over both replicas and never reaches the primary.
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        let (port, in_recovery) = lands_on(&c, ro).await;
        assert!(in_recovery, "a read-only connection reached the primary");
        seen.insert(port);
    }
    assert_eq!(seen, BTreeSet::from([c.port_of("node-2"), c.port_of("node-3")]));

    // Status and endpoints show where each endpoint routes.
    let status = c.status();
    assert_eq!(status["endpoints"]["router"], true);
    assert_eq!(status["endpoints"]["rw"]["address"], format!("127.0.0.1:{rw}"));
    assert_eq!(status["endpoints"]["rw"]["routes_to"], serde_json::json!(["node-1"]));
    assert_eq!(status["endpoints"]["ro"]["routes_to"], serde_json::json!(["node-2", "node-3"]));
    let endpoints = c.ok(&["endpoints"]);
    assert!(
        endpoints.contains(&format!("rw 127.0.0.1:{rw} -> node-1 127.0.0.1:{}", c.port_of("node-1"))),
        "{endpoints}"
    );

    // TLS from the client to PostgreSQL passes through the router untouched, and the client
    // verifies the member's certificate (issued from the cluster CA, naming the endpoints'
    // address) through both endpoints, with the connection string `up` printed.
    for port in [rw, ro] {
        let psql = Command::new("psql")
            .arg(format!("postgresql://postgres@127.0.0.1:{port}/postgres{tls}"))
            .args(["-Atc", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"])
            .env("PGPASSWORD", c.secret("admin"))
            .output()
            .unwrap();
        assert!(psql.status.success(), "psql over TLS to {port}: {}", String::from_utf8_lossy(&psql.stderr));
        assert_eq!(String::from_utf8_lossy(&psql.stdout).trim(), "t");
    }

    // A replica that falls behind by more than ro_max_lag gets no new reads, then again once
    // it catches up.
    let node3 = connect(c.port_of("node-3"), "postgres", &c.secret("admin"), "postgres").await.unwrap();
    node3.batch_execute("SELECT pg_wal_replay_pause()").await.unwrap();
    app.batch_execute("CREATE TABLE bulk AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 50000) g")
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "ro to leave the lagging node-3", || async {
        let routes = c.status()["endpoints"]["ro"]["routes_to"].clone();
        (routes == serde_json::json!(["node-2"])).then_some(())
    })
    .await;
    // The router reads the store on its own schedule (within 200 ms of a change).
    eventually(Duration::from_secs(2), "four reads in a row on node-2 only", || async {
        for _ in 0..4 {
            if lands_on(&c, ro).await != (c.port_of("node-2"), true) {
                return None;
            }
        }
        Some(())
    })
    .await;
    node3.batch_execute("SELECT pg_wal_replay_resume()").await.unwrap();
    eventually(Duration::from_secs(5), "ro to take node-3 back", || async {
        let routes = c.status()["endpoints"]["ro"]["routes_to"].clone();
        (routes == serde_json::json!(["node-2", "node-3"])).then_some(())
    })
    .await;

    // A stopped replica gets no new read-only connection.
    c.ok(&["stop", "node-3"]);
    for _ in 0..4 {
        assert_eq!(lands_on(&c, ro).await, (c.port_of("node-2"), true));
    }

    // promote moves rw, and a connection opened before it is closed.
    let before = connect(rw, "app", &c.secret("user"), "app").await.unwrap();
    before.query_one("SELECT 1", &[]).await.unwrap();
    c.ok(&["promote", "node-2"]);
    let err = before.query_one("SELECT 1", &[]).await.expect_err("the old rw connection should be closed");
    // Closed by the router, or first by the demoted server's own shutdown (57P01).
    assert!(err.code().is_none() || err.code() == Some(&SqlState::ADMIN_SHUTDOWN), "{err:?}");
    assert!(before.query_one("SELECT 1", &[]).await.is_err(), "the old rw connection still answers");
    assert_eq!(lands_on(&c, rw).await, (c.port_of("node-2"), false));
    let app = connect(rw, "app", &c.secret("user"), "app").await.unwrap();
    app.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
    // With no replica left, reads fall back to the primary (the default `ro_fallback`)...
    // ...unless node-1 streams again: it rejoined as a replica of node-2.
    let (port, in_recovery) = lands_on(&c, ro).await;
    assert!(port == c.port_of("node-1") && in_recovery, "ro should reach the rejoined node-1, got {port}");

    // No primary: rw answers promptly with a clear PostgreSQL error.
    c.ok(&["stop", "node-2"]);
    let start = Instant::now();
    let err = connect(rw, "app", &c.secret("user"), "app").await.expect_err("rw without a primary");
    let waited = start.elapsed();
    assert_eq!(err.code(), Some(&SqlState::CANNOT_CONNECT_NOW), "{err}");
    let message = err.as_db_error().map(|e| e.message().to_string()).unwrap_or_default();
    assert!(message.starts_with("pgrepl router: no primary is available"), "{message}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "waited {waited:?} with rw_wait = 1s"
    );
    // All of the above ran spliced in the kernel (`make test` runs as root), TLS included.
    let log = std::fs::read_to_string(c.dir.join("router.log")).unwrap();
    assert!(log.contains("the kernel splices connections' bytes"), "{log}");
    assert!(!log.contains("copying it instead"), "{log}");
}
