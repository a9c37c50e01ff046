//! End-to-end: each agent's HTTP API under `pgrepl up`. Patroni's health checks answer with
//! Patroni's codes on the primary and on replicas, lag bounds follow a replica whose replay is
//! paused while the primary writes, `/cluster` is `status --json`, and `/liveness` tells a
//! stuck loop (its PostgreSQL stopped, a query of the loop unanswered: the API answers 503) and a stopped agent (SIGSTOP: no
//! answer, which probes read as not alive) from a live one.

mod common;

use common::http::{code, get, request};
use common::{eventually, pids, server_processes, signal, TestCluster};
use std::time::Duration;

const CHECKS: &[&str] = &[
    "/",
    "/primary",
    "/read-write",
    "/master",
    "/leader",
    "/replica",
    "/read-only",
    "/sync",
    "/async",
    "/health",
    "/liveness",
    "/readiness",
];

/// What Patroni answers on its primary and on a healthy asynchronous replica.
fn expected(path: &str, primary: bool) -> u16 {
    let on_both = ["/read-only", "/health", "/liveness", "/readiness"];
    let on_replica = ["/replica", "/async"];
    let passes = on_both.contains(&path) || (primary != on_replica.contains(&path)) && path != "/sync";
    if passes {
        200
    } else {
        503
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_agent_answers_patronis_checks_and_liveness_tells_a_stuck_loop() {
    let c = TestCluster::new();
    c.ok(&["up", "--replicas", "2"]);
    let apis: Vec<(String, String)> =
        ["node-1", "node-2", "node-3"].iter().map(|m| (m.to_string(), c.api_of(m))).collect();
    assert_eq!(c.leader(), "node-1");

    // Every check, with GET (a JSON body), HEAD and OPTIONS (the status alone).
    for (member, api) in &apis {
        let primary = member == "node-1";
        for path in CHECKS {
            let want = expected(path, primary);
            let reply = get(api, path);
            assert_eq!(reply.status, want, "GET {path} on {member}: {}", reply.body);
            let body = reply.json();
            assert_eq!(body["role"], if primary { "primary" } else { "replica" }, "{body}");
            assert_eq!(body["patroni"]["name"], member.as_str());
            assert_eq!(body["state"], "running");
            for method in ["HEAD", "OPTIONS"] {
                let reply = request(api, method, path, &[], "", Duration::from_secs(5)).unwrap();
                assert_eq!(reply.status, want, "{method} {path} on {member}");
                assert!(reply.body.is_empty(), "{method} {path} has a body: {:?}", reply.body);
            }
        }
    }
    let (_, primary_api) = &apis[0];
    let (_, n3_api) = &apis[2];
    assert_eq!(get(primary_api, "/patroni").json()["xlog"]["location"].as_u64().map(|l| l > 0), Some(true));
    let bad = get(n3_api, "/replica?lag=lots");
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("lag=\"lots\""), "{}", bad.body);
    assert_eq!(get(n3_api, "/nothing-here").status, 404);

    // `/cluster` is what `status --json` prints.
    let cluster = get(n3_api, "/cluster").json();
    let status = c.status();
    assert_eq!(cluster["leader"], status["leader"]);
    assert_eq!(cluster["cluster"], status["cluster"]);
    let names = |v: &serde_json::Value| -> Vec<(String, String, String)> {
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["name"].to_string(), m["role"].to_string(), m["api"].to_string()))
            .collect()
    };
    assert_eq!(names(&cluster), names(&status));

    // Lag: node-3 stops replaying while the primary writes some 10 MB of WAL.
    let n3 = c.admin(c.port_of("node-3")).await;
    n3.batch_execute("SELECT pg_wal_replay_pause()").await.unwrap();
    let primary = c.admin(c.primary_port()).await;
    primary
        .batch_execute("CREATE TABLE filler AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 40000) g")
        .await
        .unwrap();
    eventually(Duration::from_secs(15), "node-3's replay lag over 1MB at /replica?lag=1MB", || async {
        (code(n3_api, "GET", "/replica?lag=1MB") == 503).then_some(())
    })
    .await;
    let lag = get(n3_api, "/patroni").json()["pgrepl"]["lag_bytes"].as_u64().unwrap();
    assert!(lag > 1 << 20, "lag {lag}");
    assert_eq!(code(n3_api, "GET", "/replica"), 200, "no bound: still a replica");
    assert_eq!(code(n3_api, "GET", "/replica?lag=1GB"), 200);
    assert_eq!(code(n3_api, "GET", "/async?lag=1MB"), 503);
    assert_eq!(code(n3_api, "GET", "/readiness"), 503, "behind maximum_lag_on_failover (1MB)");
    assert_eq!(code(n3_api, "GET", "/readiness?mode=write"), 200, "it received everything");
    assert_eq!(code(n3_api, "GET", "/replica?replication_state=streaming"), 200);
    let (_, n2_api) = &apis[1];
    eventually(Duration::from_secs(10), "node-2, replaying, within 1MB", || async {
        (code(n2_api, "GET", "/replica?lag=1MB") == 200).then_some(())
    })
    .await;
    n3.batch_execute("SELECT pg_wal_replay_resume()").await.unwrap();
    eventually(Duration::from_secs(15), "node-3 caught up at /readiness", || async {
        (code(n3_api, "GET", "/readiness") == 200 && code(n3_api, "GET", "/replica?lag=1MB") == 200).then_some(())
    })
    .await;

    // A stopped agent answers nothing: a probe with a timeout reads it as not alive.
    let agent = pids(&c, "agent --member node-2");
    assert_eq!(agent.len(), 1);
    signal(agent[0], libc::SIGSTOP);
    eventually(Duration::from_secs(2), "node-2's agent stopped", || async {
        let status = std::fs::read_to_string(format!("/proc/{}/status", agent[0])).ok()?;
        status.lines().any(|l| l.starts_with("State:") && l.contains("stopped")).then_some(())
    })
    .await;
    let stopped = request(n2_api, "GET", "/liveness", &[], "", Duration::from_secs(2));
    signal(agent[0], libc::SIGCONT);
    assert!(stopped.is_err(), "a stopped agent answered: {stopped:?}");
    eventually(Duration::from_secs(5), "node-2's loop beating again", || async {
        let age = get(n2_api, "/liveness").json()["pgrepl"]["loop_age_ms"].as_u64()?;
        (age < 1000).then_some(())
    })
    .await;

    // A stuck loop: node-2's PostgreSQL stopped (SIGSTOP), its agent's loop waits on a query
    // that gets no answer; the API still answers, and /liveness turns 503 once the loop has not
    // beaten for a ttl (4 s).
    let server = server_processes(&c.dir.join("members/node-2/data"));
    assert!(server.len() > 2, "node-2's PostgreSQL processes: {server:?}");
    for pid in &server {
        signal(*pid, libc::SIGSTOP);
    }
    let held = std::time::Instant::now();
    let stuck = eventually(Duration::from_secs(10), "node-2's /liveness 503 with its loop stuck", || async {
        let reply = get(n2_api, "/liveness");
        (reply.status == 503).then_some(reply)
    })
    .await;
    let waited = held.elapsed();
    // The postmaster, continued first, may at once reap a backend that exited while stopped
    // (a client's connection ending): that one has nothing left to continue.
    for pid in &server {
        // SAFETY: a signal to a process of this test's cluster.
        if unsafe { libc::kill(*pid, libc::SIGCONT) } != 0 {
            let e = std::io::Error::last_os_error();
            assert_eq!(e.raw_os_error(), Some(libc::ESRCH), "SIGCONT to {pid}: {e}");
        }
    }
    assert!(waited >= Duration::from_secs(3), "503 after {waited:?}, before a ttl could pass");
    assert!(stuck.json()["pgrepl"]["loop_age_ms"].as_u64().unwrap() > 4000, "{}", stuck.body);
    eventually(Duration::from_secs(10), "node-2's /liveness 200 once its server answers", || async {
        (code(n2_api, "GET", "/liveness") == 200).then_some(())
    })
    .await;
}
