//! End-to-end on the etcd store (`store = etcd://...`): a local cluster keeps its state under
//! `/pgrepl/<cluster>/` in a real etcd and nothing in `DIR/store`; it fails over automatically
//! when its primary's member is lost; losing etcd fences the primary before its lease could
//! expire and the cluster recovers when etcd returns; `down --destroy` removes its keys and no
//! other cluster's. One cluster goes through all of it, to keep the run short.

mod common;

use common::etcd::{Etcd, EtcdExt};
use common::writer::{missing, PrimaryWatch, Writer};
use common::{eventually, kill9, pids, postmaster_pid, TestCluster};
use pgrepl_store::{Condition, Store};
use std::time::{Duration, Instant};

/// Where the cluster of the default name (`pgrepl`) keeps its keys.
const PREFIX: &str = "/pgrepl/pgrepl/";

async fn wait_for_acks(w: &Writer, at_least: usize, what: &str) {
    eventually(Duration::from_secs(60), what, || async { (w.acked() >= at_least).then_some(()) }).await;
}

#[tokio::test]
async fn a_cluster_on_etcd_fails_over_survives_losing_etcd_and_is_destroyed_with_its_keys() {
    let started = Instant::now();
    let mut etcd = Etcd::start().await;
    let store = etcd.store_setting();
    let env = [("PGREPL_STORE", store.as_str())];
    let c = TestCluster::new();

    // 1. The cluster's state is in etcd under its prefix, not in the directory.
    let out = c.run_env(&["up", "--replicas", "2"], &env);
    assert!(out.status.success(), "{}", common::describe(&out));
    let keys = etcd.keys(PREFIX).await;
    for key in ["initialize", "leader", "spec", "members/node-1", "members/node-2", "members/node-3"] {
        assert!(keys.iter().any(|k| k == key), "{key} is not under {PREFIX} in etcd: {keys:?}");
    }
    assert!(!c.dir.join("store").exists(), "the file store was created beside etcd");
    let toml = std::fs::read_to_string(c.dir.join("pgrepl.toml")).unwrap();
    assert!(toml.contains(&format!("store = \"{store}\"")), "{toml}");

    // The store cannot change under an existing cluster, and a second directory cannot take
    // over the same name on the same etcd.
    let out = c.run_env(&["up"], &[("PGREPL_STORE", "file")]);
    assert!(!out.status.success(), "{}", common::describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("store (PGREPL_STORE): \"file\" is not this cluster's store"), "{stderr}");
    assert!(!c.dir.join("store").exists());
    let other = TestCluster::new();
    let out = other.run_env(&["up"], &env);
    assert!(!out.status.success(), "{}", common::describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already holds a cluster named \"pgrepl\" (keys under /pgrepl/pgrepl/)"), "{stderr}");
    assert!(!other.dir.join("pgrepl.toml").exists(), "the refused directory got a configuration");
    eprintln!("up on etcd and its checks: {:?}", started.elapsed());

    // 2. The primary's member is lost (supervisor first, so nothing restarts it): another
    // member takes over and writes come back through rw; `up` brings the lost one back.
    let old = c.leader();
    let password = c.secret("admin");
    let watch = PrimaryWatch::start(c.member_ports(), password.clone());
    let writer = Writer::start(c.rw_port, password.clone()).await;
    wait_for_acks(&writer, 30, "30 rows before the fault").await;
    kill9(std::fs::read_to_string(c.dir.join("supervisor.pid")).unwrap().trim().parse().unwrap());
    let agent = pids(&c, &format!("agent --member {old}"));
    assert_eq!(agent.len(), 1);
    kill9(agent[0]);
    kill9(postmaster_pid(&c, &old));
    let killed = Instant::now();
    let before = writer.acked();
    wait_for_acks(&writer, before + 30, "writes through rw after the failover").await;
    let failover = killed.elapsed();
    let acked = writer.stop().await;
    let new = c.leader();
    assert_ne!(new, old, "another member leads");
    assert_eq!(common::member(&c.status(), &new)["role"], "primary");
    // Asynchronous mode: at most the writes in flight at the kill may be lost.
    let lost = missing(c.primary_port(), &password, &acked).await;
    assert!(lost.len() <= 2, "lost {lost:?}");
    c.ok(&["up"]);
    let primary =
        eventually(Duration::from_secs(60), "one primary, every other member streaming", || async { c.converged() })
            .await;
    assert_eq!(primary, new);
    assert_eq!(watch.stop().await, 1, "never two writable primaries at once");
    eprintln!("failover on etcd: writes back {failover:?} after the kill; rejoined at {:?}", started.elapsed());

    // 3. etcd dies: the primary cannot renew its lease and is fenced before the lease (ttl 4 s)
    // could expire. etcd comes back on the same data: the cluster converges and takes writes.
    let primary = c.leader();
    let daemons = |c: &TestCluster| {
        let mut found: Vec<i32> = ["supervise", "agent --member", "router"].iter().flat_map(|n| pids(c, n)).collect();
        found.sort();
        found
    };
    let running = daemons(&c);
    etcd.stop();
    let lost_at = Instant::now();
    eventually(Duration::from_secs(10), "the primary to be fenced", || async {
        (!c.postgres_runs(&primary)).then_some(())
    })
    .await;
    let fenced = lost_at.elapsed();
    assert!(fenced < Duration::from_secs(4), "fenced only after {fenced:?}");
    let log = std::fs::read_to_string(c.dir.join(format!("members/{primary}/member.log"))).unwrap();
    assert!(log.contains("fencing: the leader lease was not renewed"), "{log}");
    etcd.restart().await;
    let restarted = Instant::now();
    // etcd extends every lease by its full TTL when it starts, so the statuses published before
    // the loss live on until each agent rewrites its own: converged only counts with the
    // primary's server really running.
    eventually(Duration::from_secs(60), "one primary, every other member streaming after etcd returned", || async {
        c.converged().filter(|p| c.postgres_runs(p))
    })
    .await;
    let recovered = restarted.elapsed();
    // Riding out the outage, no process died (a write to a connection etcd dropped must be an
    // error to handle, not a SIGPIPE that ends the process).
    // Should one have been restarted, the supervisor's log says which and how it ended.
    let restarts: Vec<String> = std::fs::read_to_string(c.dir.join("supervisor.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("exited"))
        .map(String::from)
        .collect();
    assert_eq!(daemons(&c), running, "the supervisor, agents and router are the same processes: {restarts:#?}");
    eventually(Duration::from_secs(15), "a write through rw after etcd returned", || async {
        let client = common::connect(c.rw_port, "postgres", &password, "postgres").await.ok()?;
        client.batch_execute("CREATE TABLE IF NOT EXISTS after_etcd_loss (id int)").await.ok()
    })
    .await;
    eprintln!("etcd lost: primary fenced after {fenced:?}; converged {recovered:?} after etcd returned");

    // 4. `down --destroy` removes this cluster's keys and leaves another cluster's alone.
    let neighbour = etcd.store("/pgrepl/pgrepl-2/").await;
    neighbour.put("spec", b"{}", Condition::Absent, None).await.unwrap();
    c.ok(&["down", "--destroy"]);
    assert_eq!(etcd.keys(PREFIX).await, Vec::<String>::new(), "keys left under {PREFIX}");
    assert_eq!(etcd.keys("/pgrepl/pgrepl-2/").await, ["spec"], "another cluster's keys were touched");
    assert!(!c.dir.exists() || std::fs::read_dir(&c.dir).unwrap().next().is_none(), "the directory is not empty");
    eprintln!("whole test: {:?}", started.elapsed());
}
