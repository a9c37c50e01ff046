//! End-to-end: a power loss, as near as one machine can make one. Every process of a running
//! cluster (supervisor, router, agents, every PostgreSQL process) is killed with -9 at once, the
//! store keeping the statuses of before within their TTL; then `pgrepl up` must return only
//! once the cluster is ready again: right after it returns, one primary runs, every replica
//! streams, and both endpoints answer. Twice in a row, since one restart may be lucky.

mod common;

use common::{connect, pids, TestCluster};
use std::collections::BTreeSet;
use std::time::Instant;

/// The pid's parent, from `/proc/PID/stat` ("PID (comm) S PPID ...").
fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.split_whitespace().nth(1)?.parse().ok()
}

/// Every process of the cluster: those naming its directory (supervisor, router, agents,
/// postmasters) and every descendant of those (PostgreSQL's backends, walsenders, ...).
fn every_process(c: &TestCluster) -> BTreeSet<i32> {
    let mut found: BTreeSet<i32> = pids(c, "").into_iter().collect();
    loop {
        let more: Vec<i32> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
            .filter(|pid| !found.contains(pid) && parent(*pid).is_some_and(|p| found.contains(&p)))
            .collect();
        if more.is_empty() {
            return found;
        }
        found.extend(more);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_every_process_is_killed_at_once_up_returns_only_when_the_cluster_is_ready() {
    let c = TestCluster::new();
    c.ok(&["up", "--replicas", "2"]);
    let password = c.secret("admin");
    let rw = connect(c.rw_port, "postgres", &password, "postgres").await.unwrap();
    rw.batch_execute("CREATE TABLE survived (n int); INSERT INTO survived VALUES (1)").await.unwrap();
    drop(rw);

    for round in 1..=2 {
        // 1 supervisor, 1 router, 3 agents and 3 postmasters name the directory; the servers'
        // other processes are found as their descendants.
        let named = pids(&c, "").len();
        let victims = every_process(&c);
        assert!(named >= 8 && victims.len() > named, "round {round}: {named} named, {victims:?} in all");
        for pid in &victims {
            // SAFETY: SIGKILL to a process of this test's cluster.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        let killed = Instant::now();
        while !every_process(&c).is_empty() {
            assert!(killed.elapsed().as_secs() < 10, "round {round}: killed processes linger");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }

        let started = Instant::now();
        let out = c.run(&["up"]);
        let took = started.elapsed();
        assert!(out.status.success(), "round {round}: {}", common::describe(&out));
        // Right after `up` returns, no retrying: the cluster must be ready.
        let status = c.status();
        let primary = c.converged().unwrap_or_else(|| panic!("round {round}: not ready after up: {status:#}"));
        assert_eq!(status["members"].as_array().unwrap().len(), 3, "{status:#}");
        assert!(
            status["replication"].as_array().unwrap().iter().filter(|r| r["state"] == "streaming").count() == 2,
            "round {round}: {status:#}"
        );
        let rw = connect(c.rw_port, "postgres", &password, "postgres").await.unwrap();
        rw.batch_execute(&format!("INSERT INTO survived VALUES ({})", round + 1)).await.unwrap();
        let on_primary: i64 = rw.query_one("SELECT count(*) FROM survived", &[]).await.unwrap().get(0);
        assert_eq!(on_primary, round + 1, "round {round}: rows lost");
        let ro = connect(c.ro_port, "postgres", &password, "postgres").await.unwrap();
        let in_recovery: bool = ro.query_one("SELECT pg_is_in_recovery()", &[]).await.unwrap().get(0);
        assert!(in_recovery, "round {round}: the ro endpoint reached a primary");
        eprintln!("round {round}: up took {took:?}; {primary} is the primary");
    }
}
