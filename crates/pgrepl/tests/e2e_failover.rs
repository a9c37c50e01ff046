//! End-to-end: automatic failover, switchover and rejoin on one machine (file store), with a
//! writer inserting acknowledged rows through the rw endpoint and a checker proving none is lost
//! (synchronous mode) and that no two servers were ever writable at once.

mod common;

use common::writer::{missing, PrimaryWatch, Writer};
use common::{eventually, kill9, postmaster_pid, TestCluster};
use std::time::{Duration, Instant};

async fn wait_for_acks(w: &Writer, at_least: usize, what: &str) {
    eventually(Duration::from_secs(60), what, || async { (w.acked() >= at_least).then_some(()) }).await;
}

#[tokio::test]
async fn losing_the_primarys_member_fails_over_without_losing_an_acknowledged_row_in_synchronous_mode() {
    let c = TestCluster::new();
    let out = c.run_env(&["up", "--replicas", "2"], &[("PGREPL_SYNCHRONOUS", "on")]);
    assert!(out.status.success(), "{}", common::describe(&out));
    let old = c.leader();
    let password = c.secret("admin");
    eventually(Duration::from_secs(30), "a synchronous replica", || async {
        let client = c.admin(c.primary_port()).await;
        let row = client.query_one("SHOW synchronous_standby_names", &[]).await.ok()?;
        (!row.get::<_, String>(0).is_empty()).then_some(())
    })
    .await;
    let watch = PrimaryWatch::start(c.member_ports(), password.clone());
    let writer = Writer::start(c.rw_port, password.clone()).await;
    wait_for_acks(&writer, 50, "50 rows before the fault").await;

    c.lose_member(&old);
    let killed = Instant::now();
    let before = writer.acked();
    wait_for_acks(&writer, before + 50, "writes through rw after the failover").await;
    let took = killed.elapsed();
    let acked = writer.stop().await;
    let new = c.leader();
    assert_ne!(new, old, "another member leads");
    let status = c.status();
    assert_eq!(common::member(&status, &new)["role"], "primary");
    assert_eq!(missing(c.primary_port(), &password, &acked).await, Vec::<i64>::new(), "acknowledged rows lost");
    eprintln!("writes came back {took:?} after the kill; {} rows acknowledged", acked.len());

    // The lost member comes back (`up` restarts the supervisor) and rejoins as a replica of the
    // new primary, rewound onto its timeline.
    c.ok(&["up"]);
    let primary =
        eventually(Duration::from_secs(60), "one primary, every other member streaming", || async { c.converged() })
            .await;
    assert_eq!(primary, new);
    let status = c.status();
    assert_eq!(common::member(&status, &old)["timeline"], common::member(&status, &new)["timeline"]);
    assert_eq!(
        missing(c.port_of(&old), &password, &acked).await,
        Vec::<i64>::new(),
        "the rejoined member has every row"
    );

    // A second failover in a row: the replicas now follow timeline 2 and must still qualify.
    let writer = Writer::start(c.rw_port, password.clone()).await;
    wait_for_acks(&writer, 20, "rows before the second fault").await;
    c.lose_member(&new);
    let before = writer.acked();
    wait_for_acks(&writer, before + 20, "writes through rw after the second failover").await;
    let acked = writer.stop().await;
    let third = c.leader();
    assert_ne!(third, new, "another member leads again");
    assert_eq!(missing(c.primary_port(), &password, &acked).await, Vec::<i64>::new(), "acknowledged rows lost");
    c.ok(&["up"]);
    eventually(Duration::from_secs(60), "convergence after the second failover", || async { c.converged() }).await;
    assert_eq!(watch.stop().await, 1, "never two writable primaries at once");
}

#[tokio::test]
async fn a_primary_that_cannot_restart_gives_way_after_primary_start_timeout_then_rejoins() {
    let c = TestCluster::new();
    let out = c.run_env(&["up", "--replicas", "1"], &[("PGREPL_PRIMARY_START_TIMEOUT", "3s")]);
    assert!(out.status.success(), "{}", common::describe(&out));
    let old = c.leader();
    let password = c.secret("admin");
    let writer = Writer::start(c.rw_port, password.clone()).await;
    wait_for_acks(&writer, 20, "20 rows before the fault").await;

    // PostgreSQL crashes and will not start again (a setting it refuses); its agent lives on.
    let auto_conf = c.dir.join(format!("members/{old}/data/postgresql.auto.conf"));
    let good = std::fs::read_to_string(&auto_conf).unwrap();
    std::fs::write(&auto_conf, format!("{good}no_such_setting = 1\n")).unwrap();
    kill9(postmaster_pid(&c, &old));
    let before = writer.acked();
    wait_for_acks(&writer, before + 20, "writes through rw after the failover").await;
    let acked = writer.stop().await;
    assert_ne!(c.leader(), old);
    let log = std::fs::read_to_string(c.dir.join(format!("members/{old}/member.log"))).unwrap();
    assert!(log.contains("has not started as primary within primary_start_timeout"), "{log}");

    // Repaired, it rejoins as a replica. (If its rewind already failed on the bad setting, its
    // directory was moved aside and a fresh clone is under way beside it: nothing to repair.)
    match std::fs::write(&auto_conf, good) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("repair {}: {e}", auto_conf.display()),
    }
    eventually(Duration::from_secs(60), "the old primary to rejoin", || async { c.converged() }).await;
    let new = c.leader();
    let missing_rows = missing(c.port_of(&new), &password, &acked).await;
    // Asynchronous mode: rows acknowledged in the instant before the crash may be lost, but
    // no more than the writes in flight (the replica was streaming).
    assert!(missing_rows.len() <= 2, "lost {missing_rows:?}");
}

#[tokio::test]
async fn switchover_hands_over_to_the_least_lagging_replica_losing_nothing() {
    let c = TestCluster::new();
    c.ok(&["up", "--replicas", "2"]);
    let old = c.leader();
    let password = c.secret("admin");
    // The switchover is to pick the least lagging replica. The one it would pick were lags
    // equal (the first by name) is held back: its replay paused, the lag the choice compares
    // (the primary's replay_lsn of it) grows while the writer writes.
    let mut replicas = eventually(Duration::from_secs(30), "both replicas streaming", || async {
        let streaming: Vec<String> = c.members("replica", "streaming").into_iter().map(|(name, _)| name).collect();
        (streaming.len() == 2).then_some(streaming)
    })
    .await;
    replicas.sort();
    let [held, ahead] = [replicas[0].clone(), replicas[1].clone()];
    // The watch asks one server after another; the expected new primary first, so that a
    // sweep that saw the old primary before its stop cannot also see the new one after its
    // promotion: two counted then means both were writable at once.
    let watch = PrimaryWatch::start([&ahead, &old, &held].map(|m| c.port_of(m)).to_vec(), password.clone());
    let writer = Writer::start(c.rw_port, password.clone()).await;
    wait_for_acks(&writer, 30, "30 rows before the switchover").await;
    c.admin(c.port_of(&held)).await.batch_execute("SELECT pg_wal_replay_pause()").await.unwrap();
    let lags = eventually(Duration::from_secs(30), "the held-back replica to lag the most", || async {
        let status = c.status();
        let lag = |name: &str| common::member(&status, name)["lag_bytes"].as_u64();
        let (held_lag, ahead_lag) = (lag(&held)?, lag(&ahead)?);
        (held_lag > ahead_lag).then_some((held_lag, ahead_lag))
    })
    .await;
    eprintln!("lag of {held} (replay paused): {} bytes, of {ahead}: {} bytes", lags.0, lags.1);
    let out = c.ok(&["switchover"]);
    let new = c.leader();
    assert_eq!(new, ahead, "the least lagging replica takes over, not {held}: {out}");
    assert!(out.contains(&format!("{new} is the primary")), "{out}");
    // The held-back replica catches up (it may have been restarted meanwhile for not streaming,
    // which ends the pause too).
    eventually(Duration::from_secs(30), "the held-back replica to replay again", || async {
        let client = common::connect(c.port_of(&held), "postgres", &password, "postgres").await.ok()?;
        client.batch_execute("SELECT pg_wal_replay_resume()").await.ok()
    })
    .await;
    let before = writer.acked();
    wait_for_acks(&writer, before + 30, "writes after the switchover").await;
    let acked = writer.stop().await;
    assert_eq!(missing(c.primary_port(), &password, &acked).await, Vec::<i64>::new(), "a switchover loses nothing");
    eventually(Duration::from_secs(60), "the old primary to stream from the new", || async { c.converged() }).await;
    assert_eq!(watch.stop().await, 1, "never two writable primaries at once");

    // A switchover to a member that does not stream is refused; a forced failover is not.
    c.ok(&["stop", &old]);
    let out = c.run(&["switchover", "--to", &old]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("stopped"), "{}", common::describe(&out));
    c.ok(&["start", &old]);
    c.ok(&["failover", "--to", &old]);
    assert_eq!(c.leader(), old);
}

#[tokio::test]
async fn losing_the_store_fences_the_primary_before_its_lease_could_expire_and_the_cluster_recovers() {
    use std::os::unix::fs::PermissionsExt;
    let c = TestCluster::new();
    c.ok(&["up", "--replicas", "1"]);
    let old = c.leader();
    let store = c.dir.join("store");
    let mode = std::fs::metadata(&store).unwrap().permissions().mode();

    // The store becomes unreachable for every agent (they run as the unprivileged user).
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o000)).unwrap();
    let lost = Instant::now();
    eventually(Duration::from_secs(10), "the primary to be fenced", || async {
        (!c.postgres_runs(&old)).then_some(())
    })
    .await;
    let fenced = lost.elapsed();
    // ttl is 4 s and the lease was renewed at most about a second before the loss.
    assert!(fenced < Duration::from_secs(4), "fenced only after {fenced:?}");
    let log = std::fs::read_to_string(c.dir.join(format!("members/{old}/member.log"))).unwrap();
    assert!(log.contains("fencing: the leader lease was not renewed"), "{log}");

    // The store comes back: the cluster converges on one primary again and takes writes.
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(mode)).unwrap();
    eventually(Duration::from_secs(60), "one primary, every other member streaming", || async { c.converged() }).await;
    let client = common::connect(c.rw_port, "postgres", &c.secret("admin"), "postgres").await.unwrap();
    client.batch_execute("CREATE TABLE after_store_loss (id int)").await.unwrap();
    eprintln!("fenced {fenced:?} after the store was lost");
}

async fn standby_names(c: &TestCluster) -> Option<String> {
    let client = common::connect(c.primary_port(), "postgres", &c.secret("admin"), "postgres").await.ok()?;
    client.query_one("SHOW synchronous_standby_names", &[]).await.ok().map(|r| r.get(0))
}

#[tokio::test]
async fn quorum_mode_keeps_synchronous_standby_names_right_as_replicas_come_and_go() {
    let c = TestCluster::new();
    let out = c.run_env(&["up", "--replicas", "2"], &[("PGREPL_SYNCHRONOUS", "quorum")]);
    assert!(out.status.success(), "{}", common::describe(&out));
    let all = "ANY 1 (\"node-2\", \"node-3\")".to_string();
    eventually(Duration::from_secs(30), "both replicas in the quorum", || async {
        (standby_names(&c).await? == all).then_some(())
    })
    .await;

    // A synchronous replica dies: commits must not wait for it, and the record must not count it;
    // nothing else changes (the leader stays).
    let before = c.leader();
    kill9(postmaster_pid(&c, "node-3"));
    c.ok(&["stop", "node-3"]);
    let one = "FIRST 1 (\"node-2\")".to_string();
    eventually(Duration::from_secs(30), "the quorum without node-3", || async {
        (standby_names(&c).await? == one).then_some(())
    })
    .await;
    let client = c.admin(c.rw_port).await;
    client.batch_execute("CREATE TABLE quorum_write (id int); INSERT INTO quorum_write VALUES (1)").await.unwrap();
    assert_eq!(c.leader(), before, "losing a replica does not move the leader");

    // It comes back: the quorum grows again.
    c.ok(&["start", "node-3"]);
    eventually(Duration::from_secs(60), "node-3 back in the quorum", || async {
        (standby_names(&c).await? == all).then_some(())
    })
    .await;
}
