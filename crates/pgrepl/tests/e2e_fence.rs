//! End-to-end: the fence outside the agent. The leader's agent is stopped (SIGSTOP) while its
//! PostgreSQL keeps running and a probe writes straight at every member's port: the fencer
//! kills that PostgreSQL before the lease could expire (counted from the lease's real expiry
//! in the store, set by the last renewal the agent sent), a replica takes over only after it,
//! no two servers ever accept a write at once, and when the agent wakes its member rejoins as
//! a replica. A killed fencer is replaced by its agent and still fences; a fencer whose agent was
//! killed fences at the deadline, exits, and leaves the fence for the next agent to record.

mod common;

use common::writer::{missing, unix_ms, Ack, WriteProbe, Writer};
use common::{eventually, kill9, pids, signal, TestCluster};
use serde_json::Value;
use std::time::Duration;

/// The leader key's expiry in the file store (`expires_at_unix_ms`), with its holder.
fn lease_in_store(c: &TestCluster) -> Option<(String, u64)> {
    let state: Value = serde_json::from_slice(&std::fs::read(c.dir.join("store/state.json")).ok()?).ok()?;
    let entry = &state["entries"]["leader"];
    let value: Value = match &entry["value"] {
        Value::String(text) => serde_json::from_str(text).ok()?,
        other => other.clone(),
    };
    Some((value["member"].as_str()?.to_string(), entry["expires_at_unix_ms"].as_u64()?))
}

fn agent_of(c: &TestCluster, member: &str) -> i32 {
    let found = pids(c, &format!("agent --member {member}"));
    assert_eq!(found.len(), 1, "one agent of {member}: {found:?}");
    found[0]
}

fn fencer_of(c: &TestCluster, member: &str) -> Vec<i32> {
    pids(c, &format!("fencer --data-dir {}/members/{member}/data", c.dir.display()))
}

fn log_of(c: &TestCluster, member: &str) -> String {
    std::fs::read_to_string(c.dir.join(format!("members/{member}/member.log"))).unwrap_or_default()
}

/// Stops the leader's agent and checks the fence against the lease's real expiry.
async fn stopped_agent_is_fenced(synchronous: &str) {
    let c = TestCluster::new();
    let out = c.run_env(&["up", "--replicas", "2"], &[("PGREPL_SYNCHRONOUS", synchronous)]);
    assert!(out.status.success(), "{}", common::describe(&out));
    let old = c.leader();
    let password = c.secret("admin");
    let status = c.status();
    let members = status["members"].as_array().unwrap();
    let names: Vec<String> = members.iter().map(|m| m["name"].as_str().unwrap().to_string()).collect();
    let ports: Vec<u16> = members.iter().map(|m| m["port"].as_u64().unwrap() as u16).collect();
    let probe = WriteProbe::start(c.primary_port(), ports.clone(), password.clone()).await;
    let writer = Writer::start(c.rw_port, password.clone()).await;
    eventually(Duration::from_secs(30), "acknowledged writes before the fault", || async {
        (writer.acked() >= 20).then_some(())
    })
    .await;

    let agent = agent_of(&c, &old);
    signal(agent, libc::SIGSTOP);
    let stopped_ms = unix_ms();
    // The last renewal the agent sent is the one in the store now (a write in flight lands
    // within a moment); its expiry is the real deadline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (holder, expires_ms) = lease_in_store(&c).expect("the leader key in the store");
    assert_eq!(holder, old);
    let new = eventually(Duration::from_secs(30), "another member taking over", || async {
        let status = c.status();
        let leader = status["leader"].as_str()?.to_string();
        (leader != old && common::member(&status, &leader)["role"] == "primary").then_some(leader)
    })
    .await;
    if c.postgres_runs(&old) {
        panic!(
            "the stopped agent's PostgreSQL was not fenced by the takeover at {} (stopped at {stopped_ms}, expiry {expires_ms}):\nold:\n{}\nnew:\n{}",
            unix_ms(),
            log_of(&c, &old),
            log_of(&c, &new)
        );
    }
    let before = writer.acked();
    eventually(Duration::from_secs(30), "writes through rw after the takeover", || async {
        (writer.acked() >= before + 20).then_some(())
    })
    .await;

    signal(agent, libc::SIGCONT);
    let primary =
        eventually(Duration::from_secs(30), "the old leader back as a streaming replica", || async { c.converged() })
            .await;
    assert_eq!(primary, new);
    let acked = writer.stop().await;
    let acks = probe.stop().await;
    let of = |name: &str| -> &Vec<Ack> { &acks[names.iter().position(|n| n == name).unwrap()] };

    // The old primary took its last write before the lease could expire, the new one its
    // first after: never two servers accepting writes at once.
    let old_last = of(&old).iter().map(|a| a.acked_ms).max().expect("the old primary took probe writes");
    let new_first = of(&new).iter().map(|a| a.sent_ms).min().expect("the new primary took probe writes");
    eprintln!(
        "agent stopped at {stopped_ms}; lease expiry {expires_ms} (+{} ms); old primary's last ack +{} ms; new primary's first write +{} ms",
        expires_ms - stopped_ms,
        old_last as i64 - stopped_ms as i64,
        new_first as i64 - stopped_ms as i64
    );
    assert!(
        old_last < expires_ms,
        "the old primary acknowledged a write at {old_last}, after its lease could expire at {expires_ms}"
    );
    assert!(
        new_first > expires_ms,
        "the new primary took a write at {new_first}, before the old lease could expire at {expires_ms}"
    );
    for (i, name) in names.iter().enumerate() {
        if *name != old && *name != new {
            assert!(acks[i].is_empty(), "{name} was never primary but acknowledged {} writes", acks[i].len());
        }
    }

    // The fence is in the log and in the store, and fired before the lease could expire.
    let status = c.status();
    let fenced_ms = common::member(&status, &old)["last_fenced_unix_ms"].as_u64().expect("the fence in status");
    assert!(fenced_ms < expires_ms, "fenced at {fenced_ms}, lease expiry {expires_ms}");
    assert!(fenced_ms > stopped_ms, "fenced at {fenced_ms}, before the agent was even stopped at {stopped_ms}");
    let log = log_of(&c, &old);
    assert!(log.contains("fencing: the leader lease was not renewed"), "{log}");
    assert!(log.contains("the fencer stopped this member's PostgreSQL"), "{log}");
    assert!(log.contains("rewinding this former primary to rejoin as a replica"), "{log}");
    if synchronous == "on" {
        assert_eq!(missing(c.primary_port(), &password, &acked).await, Vec::<i64>::new(), "acknowledged rows lost");
    }
}

#[tokio::test]
async fn a_stopped_agents_primary_is_fenced_before_its_lease_could_expire_and_rejoins_asynchronous() {
    stopped_agent_is_fenced("off").await;
}

#[tokio::test]
async fn a_stopped_agents_primary_is_fenced_before_its_lease_could_expire_and_rejoins_synchronous() {
    stopped_agent_is_fenced("on").await;
}

#[tokio::test]
async fn a_killed_fencer_is_replaced_at_once_and_the_new_one_fences() {
    let c = TestCluster::new();
    let out = c.run(&["up", "--replicas", "1"]);
    assert!(out.status.success(), "{}", common::describe(&out));
    let old = c.leader();
    let first = fencer_of(&c, &old);
    assert_eq!(first.len(), 1, "one fencer for {old}");
    kill9(first[0]);
    let second = eventually(Duration::from_secs(10), "a new fencer", || async {
        fencer_of(&c, &old).into_iter().find(|p| *p != first[0])
    })
    .await;
    assert!(log_of(&c, &old).contains("the fencer went away; starting a new one"));
    // Give the agent a cycle to arm the new fencer, then stop the agent: the new fencer fences.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let agent = agent_of(&c, &old);
    signal(agent, libc::SIGSTOP);
    eventually(Duration::from_secs(30), "the new fencer stopping the old primary", || async {
        (!c.postgres_runs(&old)).then_some(())
    })
    .await;
    let new = eventually(Duration::from_secs(30), "the replica taking over", || async {
        c.status()["leader"].as_str().filter(|l| *l != old).map(str::to_string)
    })
    .await;
    signal(agent, libc::SIGCONT);
    assert_eq!(eventually(Duration::from_secs(30), "convergence", || async { c.converged() }).await, new);
    assert_eq!(fencer_of(&c, &old), vec![second], "still the one replacement fencer");
}

#[tokio::test]
async fn a_fencer_outlives_its_killed_agent_fences_at_the_deadline_and_the_next_agent_records_it() {
    let c = TestCluster::new();
    let out = c.run(&["up", "--replicas", "1"]);
    assert!(out.status.success(), "{}", common::describe(&out));
    let old = c.leader();
    let fencer = fencer_of(&c, &old);
    assert_eq!(fencer.len(), 1);
    // Nothing restarts the agent: the supervisor goes first. PostgreSQL keeps running.
    kill9(std::fs::read_to_string(c.dir.join("supervisor.pid")).unwrap().trim().parse().unwrap());
    kill9(agent_of(&c, &old));
    let killed_ms = unix_ms();
    eventually(Duration::from_secs(10), "the fencer to kill the agentless primary", || async {
        (!c.postgres_runs(&old)).then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "the fencer to exit, having nothing left to guard", || async {
        fencer_of(&c, &old).is_empty().then_some(())
    })
    .await;
    assert!(log_of(&c, &old).contains("fencing: the leader lease was not renewed"));
    // The killed server's lock files are gone (its postmaster may not be reaped yet, and
    // PostgreSQL would take a lock naming it for a running server).
    let member_dir = c.dir.join(format!("members/{old}"));
    assert!(!member_dir.join("data/postmaster.pid").exists(), "postmaster.pid of the killed server left");
    let run: Vec<String> = std::fs::read_dir(member_dir.join("run"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into())
        .collect();
    assert!(!run.iter().any(|n| n.starts_with(".s.PGSQL.") && n.ends_with(".lock")), "socket lock left: {run:?}");
    // The next agent (started by `up`) learns of the fence and records it.
    let out = c.run(&["up"]);
    assert!(out.status.success(), "{}", common::describe(&out));
    let fenced_ms = eventually(Duration::from_secs(30), "the fence recorded in the store", || async {
        common::member(&c.status(), &old)["last_fenced_unix_ms"].as_u64()
    })
    .await;
    assert!(fenced_ms > killed_ms, "fenced at {fenced_ms}, the agent killed at {killed_ms}");
    // Whoever leads now (the replica, or the old leader taking its lease back if its agent came
    // back first), the cluster converges.
    eventually(Duration::from_secs(30), "convergence", || async { c.converged() }).await;
    assert!(!std::path::Path::new(&format!("{}/members/{old}/run/.pgrepl-fence.fired", c.dir.display())).exists());
}
