//! End-to-end: no replica left behind a fork (issue 15). A replica is cut off from the primary's
//! WAL (its password file made wrong and its walsender ended, so it cannot reconnect) while writes
//! go on and the other replica replays them; then `failover --to` the cut-off one. The other
//! replica, replayed past the new timeline's switch point, must be seen as forked (a warning in
//! its log and in `status`), rewound and streaming again, and every member must hold the same
//! rows. Also: a request for a leader that cannot take over fails within seconds, non-zero, and
//! is withdrawn; and a member promoted without having seen the newest timeline's history file
//! starts a second timeline of that number, whose members from the other branch are told apart
//! by their histories and cloned afresh.

mod common;

use common::{eventually, TestCluster};
use pgrepl_core::Lsn;
use std::time::{Duration, Instant};

/// Makes `member` unable to fetch WAL from `primary_port`: a wrong password file, then its
/// walsender on the primary ended, so its WAL receiver's reconnections are refused. Returns the
/// password file's contents, to put back.
async fn cut_off(c: &TestCluster, member: &str, primary_port: u16) -> String {
    let passfile = c.dir.join(format!("members/{member}/pgpass"));
    let good = std::fs::read_to_string(&passfile).unwrap();
    // Writing in place keeps the file's owner and mode (libpq refuses a readable one).
    std::fs::write(&passfile, "*:*:*:*:not-the-password\n").unwrap();
    let primary = c.admin(primary_port).await;
    let ended = "SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = $1";
    primary.execute(ended, &[&member]).await.unwrap();
    eventually(Duration::from_secs(30), &format!("{member} to stop streaming"), || async {
        let status = c.status();
        (common::member(&status, member)["state"] != "streaming").then_some(())
    })
    .await;
    good
}

fn restore(c: &TestCluster, member: &str, good: &str) {
    std::fs::write(c.dir.join(format!("members/{member}/pgpass")), good).unwrap();
}

async fn lsn(c: &TestCluster, port: u16, query: &str) -> Lsn {
    let client = c.admin(port).await;
    let text: String = client.query_one(query, &[]).await.unwrap().get(0);
    text.parse().unwrap()
}

/// `count:sum:md5` of table `rows` on the member at `port`.
async fn digest(c: &TestCluster, port: u16) -> Option<String> {
    let client = common::connect(port, "postgres", &c.secret("admin"), "postgres").await.ok()?;
    let query = "SELECT count(*)::text || ':' || coalesce(sum(id), 0)::text || ':' || \
                 md5(coalesce(string_agg(id::text, ',' ORDER BY id), '')) FROM rows";
    client.query_one(query, &[]).await.ok().map(|r| r.get(0))
}

fn member_log(c: &TestCluster, member: &str) -> String {
    std::fs::read_to_string(c.dir.join(format!("members/{member}/member.log"))).unwrap_or_default()
}

#[tokio::test]
async fn a_replica_replayed_past_the_new_timelines_fork_point_is_rewound_and_streams_again() {
    let c = TestCluster::new();
    c.ok(&["up", "--replicas", "2"]);
    let old = c.leader();
    let replicas: Vec<String> = c.members("replica", "streaming").into_iter().map(|(n, _)| n).collect();
    assert_eq!(replicas.len(), 2, "{:#}", c.status());
    let (future, other) = (replicas[0].clone(), replicas[1].clone());
    let (old_port, future_port, other_port) = (c.port_of(&old), c.port_of(&future), c.port_of(&other));
    let rw = c.admin(c.rw_port).await;
    rw.batch_execute("CREATE TABLE rows (id int PRIMARY KEY); INSERT INTO rows SELECT generate_series(1, 100)")
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "the first rows everywhere", || async {
        let d = digest(&c, future_port).await?;
        (d.starts_with("100:") && digest(&c, other_port).await? == d).then_some(())
    })
    .await;

    // The future primary is cut off; writes go on and the other replica replays them all.
    let good = cut_off(&c, &future, old_port).await;
    for batch in 0..10 {
        let from = 101 + batch * 50;
        rw.execute("INSERT INTO rows SELECT generate_series($1::int, $1::int + 49)", &[&from]).await.unwrap();
    }
    drop(rw);
    let end = lsn(&c, old_port, "SELECT pg_current_wal_lsn()::text").await;
    eventually(Duration::from_secs(30), "the other replica to replay every write", || async {
        (lsn(&c, other_port, "SELECT pg_last_wal_replay_lsn()::text").await >= end).then_some(())
    })
    .await;
    let future_at =
        lsn(&c, future_port, "SELECT greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text").await;
    assert!(future_at < end, "the cut-off replica has all the WAL ({future_at} of {end}): no fork to make");

    // A switchover to it is refused at once; a promote (which does not check first) gives up
    // within seconds, not after its --wait, and its request is withdrawn.
    let out = c.run(&["switchover", "--to", &future]);
    assert!(!out.status.success(), "{}", common::describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not streaming"), "{}", common::describe(&out));
    let asked = Instant::now();
    let out = c.run(&["promote", &future, "--wait", "120"]);
    let took = asked.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{}", common::describe(&out));
    assert!(stderr.contains(&format!("{future} cannot become the primary")), "{stderr}");
    assert!(stderr.contains("the request was withdrawn"), "{stderr}");
    assert!(took < Duration::from_secs(15), "promote gave up only after {took:?}");
    eprintln!("promote {future} gave up after {took:?}: {}", stderr.trim());
    assert_eq!(c.leader(), old);

    // Forced failover to the cut-off replica: a new timeline begins where its WAL ends, before
    // what the other replica has replayed. The command returns once every member streams.
    let mut failover = c.command(&["failover", "--to", &future, "--wait", "120"], &[]).spawn().unwrap();
    let (mut warned, mut printed, mut samples) = (None, None, 0);
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = failover.try_wait().unwrap() {
            break exit;
        }
        assert!(started.elapsed() < Duration::from_secs(150), "failover --to did not return");
        let out = c.run(&["status", "--json"]);
        if let Ok(status) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
            if let Some(w) = common::member(&status, &other)["warning"].as_str() {
                warned.get_or_insert(w.to_string());
                samples += 1;
            }
        }
        if printed.is_none() {
            let out = c.run(&["status"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            printed = text.lines().find(|l| l.starts_with(&format!("WARNING {other}: "))).map(str::to_string);
        }
        if c.leader() == future {
            // Its password file can be put back now: there is nothing left for it to fetch.
            restore(&c, &future, &good);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    restore(&c, &future, &good);
    eprintln!("failover --to {future} returned {exit} after {:?}", started.elapsed());
    assert!(exit.success(), "failover --to {future} failed");
    assert_eq!(c.leader(), future);

    let warned = warned.expect("status --json never showed a warning for the forked replica");
    eprintln!("status --json showed the warning in {samples} samples; the text form: {printed:?}");
    assert!(printed.is_some_and(|p| p.contains("forked from")), "status never printed a WARNING line");
    assert!(warned.contains("forked from") && warned.contains(&format!("{future}'s timeline")), "{warned}");
    let log = member_log(&c, &other);
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains(&format!("this replica's WAL forked from {future}'s timeline")))
        .unwrap_or_else(|| panic!("no fork warning in {other}'s log:\n{log}"));
    eprintln!("{other} warned: {warning}");
    assert!(warning.contains("replayed timeline 1 up to"), "{warning}");
    assert!(
        log.contains("rewound and rejoined as a replica") || log.contains("will be cloned afresh"),
        "{other} was neither rewound nor re-cloned:\n{log}"
    );

    // Converged on the new timeline, and every member holds the same rows, including one
    // written after the failover.
    eventually(Duration::from_secs(60), "one primary, every other member streaming", || async { c.converged() }).await;
    let status = c.status();
    for m in [&old, &future, &other] {
        assert_eq!(common::member(&status, m)["warning"], serde_json::Value::Null, "{m}: {status:#}");
        let timeline = &common::member(&status, m)["timeline"];
        assert_eq!(timeline, &common::member(&status, &future)["timeline"], "{m}: {status:#}");
    }
    let rw = c.admin(c.rw_port).await;
    rw.batch_execute("INSERT INTO rows VALUES (100000)").await.unwrap();
    let want = digest(&c, future_port).await.unwrap();
    eventually(Duration::from_secs(30), "the same rows on every member", || async {
        for port in [old_port, other_port] {
            if digest(&c, port).await? != want {
                return None;
            }
        }
        Some(())
    })
    .await;
    eprintln!("every member holds {want}");
}

#[tokio::test]
async fn a_switchover_or_promote_nobody_can_carry_out_fails_within_seconds() {
    let c = TestCluster::new();
    c.ok(&["up", "--replicas", "1"]);
    let old = c.leader();
    let (replica, _) = c.members("replica", "streaming")[0].clone();
    let good = cut_off(&c, &replica, c.port_of(&old)).await;

    let asked = Instant::now();
    let out = c.run(&["switchover"]);
    assert!(!out.status.success(), "{}", common::describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no replica streams"), "{}", common::describe(&out));
    let out = c.run(&["promote", &replica, "--wait", "120"]);
    let took = asked.elapsed();
    assert!(!out.status.success(), "{}", common::describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{replica} cannot become the primary: {replica} is not streaming")), "{stderr}");
    assert!(took < Duration::from_secs(15), "gave up only after {took:?}");
    eprintln!("switchover and promote {replica} gave up after {took:?}");

    // The request was withdrawn: once the replica streams again the leader stays where it is.
    restore(&c, &replica, &good);
    eventually(Duration::from_secs(60), "the replica to stream again", || async { c.converged() }).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(c.leader(), old, "a withdrawn request moved the leader later");
}

#[tokio::test]
async fn replicas_on_another_branch_under_the_new_timelines_number_are_cloned_afresh() {
    let c = TestCluster::new();
    c.ok(&["up", "--replicas", "2"]);
    let old = c.leader();
    let replicas: Vec<String> = c.members("replica", "streaming").into_iter().map(|(n, _)| n).collect();
    let (first, last) = (replicas[0].clone(), replicas[1].clone());
    let (first_port, last_port) = (c.port_of(&first), c.port_of(&last));
    let rw = c.admin(c.rw_port).await;
    rw.batch_execute("CREATE TABLE rows (id int PRIMARY KEY); INSERT INTO rows SELECT generate_series(1, 100)")
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "the first rows everywhere", || async {
        let d = digest(&c, first_port).await?;
        (d.starts_with("100:") && digest(&c, last_port).await? == d).then_some(())
    })
    .await;

    // `last` is cut off on timeline 1, and `first` will let nobody replicate from it, so that
    // `last` never fetches the history file of the timeline 2 that `first` starts.
    let good = cut_off(&c, &last, c.port_of(&old)).await;
    rw.batch_execute("INSERT INTO rows SELECT generate_series(101, 200)").await.unwrap();
    drop(rw);
    let hba = c.dir.join(format!("members/{first}/data/pg_hba.conf"));
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("host replication all 0.0.0.0/0 reject\nhost replication all ::/0 reject\n{rules}"))
        .unwrap();
    c.admin(first_port).await.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    let _ = c.run(&["failover", "--to", &first, "--wait", "5"]); // nobody can stream from it: not ready
    eventually(Duration::from_secs(60), &format!("{first} to run as primary and {old} to rejoin it"), || async {
        let status = c.status();
        let running = common::member(&status, &first)["state"] == "running";
        (running && common::member(&status, &old)["role"] == "replica").then_some(())
    })
    .await;
    restore(&c, &last, &good);
    let rw = c.admin(c.rw_port).await;
    rw.batch_execute("INSERT INTO rows SELECT generate_series(201, 300)").await.unwrap();
    drop(rw);
    let history = c.dir.join(format!("members/{last}/data/pg_wal/00000002.history"));
    assert!(!history.exists(), "{last} has timeline 2's history file: it would not reuse the number");

    // Forced to `last`: knowing of no timeline 2, it promotes to a timeline 2 of its own, which
    // left timeline 1 earlier than `first`'s did. Both others must be cloned afresh from it.
    let out = c.run(&["failover", "--to", &last, "--wait", "120"]);
    let status = c.status();
    eprintln!("failover --to {last}: {}\n{status:#}", common::describe(&out));
    assert_eq!(common::member(&status, &last)["timeline"], 2, "a new number: nothing to tell apart");
    assert!(out.status.success(), "{}", common::describe(&out));
    // `first` ran its own timeline 2; pg_rewind, comparing timeline numbers, finds nothing to
    // rewind, so it must be cloned. (`old`, stopped on timeline 1 where `first` began, is past
    // `last`'s switch point: rewound, or cloned when pg_rewind lacks the WAL.)
    let log = member_log(&c, &first);
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("on a line that left timeline 1 at"))
        .unwrap_or_else(|| panic!("no other-branch warning in {first}'s log:\n{log}"));
    eprintln!("{first} warned: {warning}");
    assert!(log.contains("which pg_rewind cannot tell from its own timeline, so it will be cloned afresh"), "{log}");
    let log = member_log(&c, &old);
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains(&format!("this replica's WAL forked from {last}'s timeline")))
        .unwrap_or_else(|| panic!("no fork warning in {old}'s log:\n{log}"));
    eprintln!("{old} warned: {warning}");
    let want = digest(&c, last_port).await.unwrap();
    assert!(want.starts_with("100:"), "{want}");
    eventually(Duration::from_secs(30), "the same rows on every member", || async {
        for port in [c.port_of(&old), first_port] {
            if digest(&c, port).await? != want {
                return None;
            }
        }
        Some(())
    })
    .await;
    eprintln!("every member holds {want}");
}
