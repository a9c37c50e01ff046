//! End-to-end: processes dying under a running cluster. A killed agent is restarted by the
//! supervisor; a killed PostgreSQL is restarted in place by its agent; a killed supervisor's
//! agents are adopted by the next `up` without a second agent per member, and `down` stops
//! everything that is left; a replica whose WAL receiver ended and is not started again is
//! restarted by its agent.

mod common;

use common::{eventually, kill9, pids, postmaster_pid, TestCluster};
use std::time::Duration;

async fn count_rows(c: &TestCluster, port: u16) -> Option<i64> {
    let client = common::connect(port, "postgres", &c.secret("admin"), "postgres").await.ok()?;
    client.query_one("SELECT count(*) FROM t", &[]).await.ok().map(|r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_recover_from_killed_processes() {
    let c = TestCluster::new();
    c.ok(&["up"]);
    let primary = c.primary_port();
    c.admin(primary).await.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)").await.unwrap();

    // An agent killed with -9: the supervisor starts a new one, which takes the member back.
    let agents = pids(&c, "agent --member node-1");
    assert_eq!(agents.len(), 1, "one agent for node-1");
    kill9(agents[0]);
    eventually(Duration::from_secs(10), "a new agent for node-1", || async {
        let now = pids(&c, "agent --member node-1");
        (now.len() == 1 && now[0] != agents[0]).then_some(())
    })
    .await;
    c.admin(primary).await.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();

    // The primary's PostgreSQL killed with -9: its agent restarts it in place, still primary.
    let old_postmaster = postmaster_pid(&c, "node-1");
    kill9(old_postmaster);
    eventually(Duration::from_secs(20), "node-1 writable again", || async {
        let client = common::connect(primary, "postgres", &c.secret("admin"), "postgres").await.ok()?;
        client.batch_execute("INSERT INTO t VALUES (3)").await.ok()
    })
    .await;
    assert_ne!(postmaster_pid(&c, "node-1"), old_postmaster);
    eventually(Duration::from_secs(10), "node-1 published as the running primary again", || async {
        (c.members("primary", "running") == [("node-1".to_string(), primary)]).then_some(())
    })
    .await;
    let replica = c.port_of("node-2");
    eventually(Duration::from_secs(10), "all rows on the replica", || async {
        (count_rows(&c, replica).await? == 3).then_some(())
    })
    .await;

    // The supervisor killed with -9: its agents run on; `up` adopts them without doubling any.
    let supervisor: i32 = std::fs::read_to_string(c.dir.join("supervisor.pid")).unwrap().trim().parse().unwrap();
    kill9(supervisor);
    let out = c.ok(&["up"]);
    assert!(out.contains("is ready"), "{out}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    for member in ["node-1", "node-2"] {
        assert_eq!(pids(&c, &format!("agent --member {member}")).len(), 1, "{member} must have exactly one agent");
    }
    assert!(c.ok(&["logs", "node-1"]).contains("already holds"), "the second agent should have refused to start");

    // `down` stops the old agents too, and every PostgreSQL.
    c.ok(&["down"]);
    assert_eq!(pids(&c, "pgrepl"), Vec::<i32>::new(), "pgrepl processes left after down");
    assert!(pids(&c, "postgres").is_empty(), "PostgreSQL left running after down");
}

/// The WAL receiver's pid on the server at `port`, while it has one.
async fn wal_receiver(c: &TestCluster, port: u16) -> Option<i32> {
    let client = common::connect(port, "postgres", &c.secret("admin"), "postgres").await.ok()?;
    client.query_opt("SELECT pid FROM pg_stat_wal_receiver", &[]).await.ok()?.map(|r| r.get(0))
}

/// A replica whose WAL receiver ended and whose PostgreSQL makes no new attempt to stream (here
/// for an hour: `wal_retrieve_retry_interval` after a second failure in a row; in a nemesis run,
/// after "server closed the connection unexpectedly" on a lossy link) is restarted by its agent
/// after `stream_restart_timeout` (10 s), and streams again without being rewound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_wal_receiver_gave_up_is_restarted() {
    let c = TestCluster::new();
    c.ok(&["up"]);
    let leader = c.leader();
    let (replica, port) = c.members("replica", "streaming").into_iter().next().expect("a streaming replica");
    let admin = c.admin(port).await;
    admin.batch_execute("ALTER SYSTEM SET wal_retrieve_retry_interval = '1h'").await.unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The first failure in an hour is retried at once; the next waits the whole interval.
    let mut gave_up = false;
    for _ in 0..5 {
        let pid = eventually(Duration::from_secs(10), "a WAL receiver", || wal_receiver(&c, port)).await;
        common::signal(pid, libc::SIGTERM);
        tokio::time::sleep(Duration::from_secs(3)).await;
        if wal_receiver(&c, port).await.is_none() {
            gave_up = true;
            break;
        }
    }
    assert!(gave_up, "PostgreSQL kept starting a new WAL receiver");
    let postmaster = postmaster_pid(&c, &replica);
    let since = std::time::Instant::now();
    eventually(Duration::from_secs(20), "the replica streaming again", || async {
        let status = c.status();
        // Read only once it runs: while it restarts there may be no postmaster.pid to read.
        let restarted = c.postgres_runs(&replica) && postmaster_pid(&c, &replica) != postmaster;
        (restarted && common::member(&status, &replica)["state"] == "streaming").then_some(())
    })
    .await;
    eprintln!("{replica} streamed again {:?} after its WAL receiver gave up", since.elapsed());
    let log = c.ok(&["logs", &replica]);
    let sentence = format!("restarting PostgreSQL: this replica has not streamed from {leader} for ");
    assert!(log.contains(&sentence), "no restart sentence in the log of {replica}:\n{log}");
    assert!(!log.contains("rewinding"), "{replica} was rewound:\n{log}");
    assert!(wal_receiver(&c, port).await.is_some(), "a WAL receiver again");
}

/// A write to a connection the other side dropped (an etcd member killed, a client gone) is an
/// error for the process to handle. A SIGPIPE must not end a long-running pgrepl process, as it
/// would with the signal's default action, which the short commands keep (`status | head`).
#[tokio::test]
async fn a_sigpipe_ends_no_long_running_process() {
    let c = TestCluster::new();
    c.ok(&["up"]);
    let mut daemons = Vec::new();
    for kind in [" supervise", " router", " agent --member ", " fencer --data-dir "] {
        let found = pids(&c, kind);
        assert!(!found.is_empty(), "no{kind} process");
        daemons.extend(found);
    }
    for pid in &daemons {
        common::signal(*pid, libc::SIGPIPE);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for pid in &daemons {
        assert!(common::alive(*pid), "process {pid} ended on SIGPIPE");
    }
}
