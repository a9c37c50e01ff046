//! End-to-end: maintenance mode (`pgrepl pause` / `pgrepl resume`). On one machine: while
//! paused a switchover still works, the primary's killed PostgreSQL is not restarted and a lost
//! primary member is not replaced, for several lease lifetimes; after `resume` the restart and
//! the failover happen. On `pgrepl node` members sharing an etcd: pause through one node's
//! directory reaches both, a primary that loses the store is not fenced while paused, and is
//! fenced again once resumed.

mod common;

use common::etcd::{Etcd, EtcdExt};
use common::writer::PrimaryWatch;
use common::{eventually, free_ports, kill9, pgrepl_bin, pids, postmaster_pid, TestCluster};
use serde_json::Value;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Several lease lifetimes (`ttl` is 4 s): without maintenance mode a killed PostgreSQL is
/// restarted within about a second and a lost leader replaced after about `ttl`.
const A_GOOD_WHILE: Duration = Duration::from_secs(12);

/// Checks `check` every 300 ms for `span`; fails at the first sample where it does not hold.
async fn holds_for<F, Fut>(span: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    while start.elapsed() < span {
        if let Err(seen) = check().await {
            panic!("{what} stopped holding after {:?}: {seen}", start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Whether the process in `dir/members/MEMBER/data/postmaster.pid` lives (a zombie does not).
fn server_runs(dir: &Path, member: &str) -> bool {
    let pid_file = dir.join(format!("members/{member}/data/postmaster.pid"));
    let pid = std::fs::read_to_string(pid_file).ok().and_then(|t| t.lines().next()?.trim().parse::<i32>().ok());
    let stat = pid.and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok());
    stat.is_some_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

fn decisions(status: &Value) -> Vec<String> {
    status["members"].as_array().unwrap().iter().filter_map(|m| m["decision"].as_str().map(String::from)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_paused_nothing_fails_over_or_restarts_until_resume_and_a_switchover_still_works() {
    let c = TestCluster::new();
    c.ok(&["up", "--replicas", "1"]);
    let first = c.leader();
    let password = c.secret("admin");
    let watch = PrimaryWatch::start(c.member_ports(), password.clone());

    let out = c.ok(&["pause"]);
    assert!(out.contains("MAINTENANCE MODE"), "{out}");
    let status = c.status();
    assert_eq!(status["maintenance_mode"], true, "{status:#}");
    assert!(status["paused_since_ms"].as_u64().is_some(), "{status:#}");
    let said = decisions(&status);
    assert!(said.len() == 2 && said.iter().all(|d| d.starts_with("paused: ")), "{said:?}");
    assert!(c.ok(&["status"]).contains("MAINTENANCE MODE"));
    let log = std::fs::read_to_string(c.dir.join(format!("members/{first}/member.log"))).unwrap();
    assert!(log.contains("maintenance mode: no automatic failover"), "{log}");

    // A manual switchover still works: the old primary rejoins as a replica of the new one.
    c.ok(&["switchover"]);
    let leader = c.leader();
    assert_ne!(leader, first);
    assert_eq!(c.converged(), Some(leader.clone()), "{:#}", c.status());
    assert_eq!(c.status()["maintenance_mode"], true);
    // A new member clones and streams (joining is not restarting).
    c.ok(&["scale", "2"]);
    assert_eq!(c.converged(), Some(leader.clone()), "{:#}", c.status());

    // What maintenance mode holds back is said at once: `start` refuses, `up` does not claim
    // the cluster ready.
    assert!(c.ok(&["pause"]).contains("already in maintenance mode"));
    let out = c.run(&["start", "node-2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("maintenance mode"), "{}", common::describe(&out));
    assert!(stderr.contains("`pgrepl resume`"), "{stderr}");
    let out = c.ok(&["up"]);
    assert!(out.contains("is in maintenance mode") && !out.contains("is ready"), "{out}");

    // The primary's PostgreSQL killed: not restarted, no failover, the lease kept.
    kill9(postmaster_pid(&c, &leader));
    eventually(Duration::from_secs(5), "the killed postmaster gone", || async {
        (!server_runs(&c.dir, &leader)).then_some(())
    })
    .await;
    holds_for(A_GOOD_WHILE, "no restart and no failover while paused", || async {
        let status = c.status();
        let others_primary = c.members("primary", "running").iter().any(|(m, _)| *m != leader);
        match (server_runs(&c.dir, &leader), status["leader"].as_str()) {
            (false, Some(l)) if l == leader && !others_primary => Ok(()),
            _ => Err(format!("{status:#}")),
        }
    })
    .await;
    let status = c.status();
    let decision = common::member(&status, &leader)["decision"].as_str().unwrap().to_string();
    assert!(decision.starts_with("paused: PostgreSQL is stopped"), "{decision}");
    // The unchanged sentence is logged again about once per loop_wait (1 s) while paused.
    let log = std::fs::read_to_string(c.dir.join(format!("members/{leader}/member.log"))).unwrap();
    let reminders = log.lines().filter(|l| l.contains("paused: PostgreSQL is stopped")).count();
    assert!(reminders >= 6, "{reminders} times in 12 s:\n{log}");

    // Resumed: the leader restarts its server.
    let out = c.ok(&["resume"]);
    assert!(out.contains("resumed"), "{out}");
    assert_eq!(c.status()["maintenance_mode"], false);
    let back = eventually(Duration::from_secs(30), "the leader's server restarted", || async {
        c.converged().filter(|p| server_runs(&c.dir, p))
    })
    .await;
    assert_eq!(back, leader, "restarted in place, not failed over");

    // Paused again, the supervisor and the primary's agent die while its PostgreSQL runs on,
    // unfenced: resume refuses (a failover would leave two primaries). `up` starts the agents
    // (starting no server), then resume goes through, the primary keeping its place.
    c.ok(&["pause"]);
    kill9(std::fs::read_to_string(c.dir.join("supervisor.pid")).unwrap().trim().parse().unwrap());
    let agent = pids(&c, &format!("agent --member {leader}"));
    assert_eq!(agent.len(), 1);
    kill9(agent[0]);
    eventually(Duration::from_secs(5), "the agent gone", || async {
        pids(&c, &format!("agent --member {leader}")).is_empty().then_some(())
    })
    .await;
    let out = c.run(&["resume"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("runs without its agent"), "{}", common::describe(&out));
    assert_eq!(c.status()["maintenance_mode"], true);
    assert!(c.ok(&["up"]).contains("is in maintenance mode"));
    c.ok(&["resume"]);
    let primary = eventually(Duration::from_secs(30), "convergence after resume", || async { c.converged() }).await;
    assert_eq!(primary, leader, "the primary kept its place");

    // Paused again, the primary's whole member is lost (supervisor, agent, PostgreSQL): its
    // lease runs out, and nobody takes over.
    c.ok(&["pause"]);
    let replica = first;
    c.lose_member(&leader);
    holds_for(A_GOOD_WHILE, "no failover while paused", || async {
        // The lost member's last status (a running primary) and lease live out their TTL.
        let status = c.status();
        let others_primary = c.members("primary", "running").iter().any(|(m, _)| *m != leader);
        match status["leader"].as_str() {
            None | Some("") if !others_primary => Ok(()),
            Some(l) if l == leader && !others_primary => Ok(()),
            _ => Err(format!("{status:#}")),
        }
    })
    .await;
    let status = c.status();
    let decision = common::member(&status, &replica)["decision"].as_str().unwrap().to_string();
    assert!(decision.starts_with("paused: nobody holds the leader lease"), "{decision}");

    // Resumed: a replica fails over; `up` brings the lost member back as a replica.
    c.ok(&["resume"]);
    let new = eventually(Duration::from_secs(30), "the failover after resume", || async {
        c.members("primary", "running").into_iter().map(|(m, _)| m).find(|m| *m != leader)
    })
    .await;
    c.ok(&["up"]);
    assert_eq!(c.converged(), Some(new), "{:#}", c.status());
    assert_eq!(watch.stop().await, 1, "never two writable primaries at once");
}

/// Two `pgrepl node` members on this machine sharing one etcd, each with its own directory.
struct Nodes {
    tmp: tempfile::TempDir,
    store: String,
    ports: [u16; 2],
    children: Vec<Child>,
}

impl Nodes {
    fn dir(&self, i: usize) -> PathBuf {
        self.tmp.path().join(format!("h{}", i + 1))
    }

    fn pgrepl(&self, i: usize) -> Command {
        let mut cmd = Command::new(pgrepl_bin());
        cmd.env_clear().env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        cmd.arg("--dir").arg(self.dir(i));
        cmd
    }

    fn start(&mut self, i: usize) {
        let log = std::fs::File::create(self.tmp.path().join(format!("node-{}.log", i + 1))).unwrap();
        let mut cmd = self.pgrepl(i);
        cmd.args(["node", "--member", &format!("node-{}", i + 1), "--pg-port", &self.ports[i].to_string()])
            .envs([
                ("PGREPL_CLUSTER", "paused-nodes"),
                ("PGREPL_STORE", self.store.as_str()),
                ("PGREPL_ADMIN_PASSWORD", "admin-of-paused-nodes"),
                ("PGREPL_REPLICATION_PASSWORD", "replication-of-paused-nodes"),
                // Three members on one host: each HTTP API on a free port, not all on 8008.
                ("PGREPL_API_PORT", "0"),
            ])
            .env("PGREPL_TLS_CA_CERT_FILE", self.tmp.path().join("ca/ca.crt"))
            .env("PGREPL_TLS_CA_KEY_FILE", self.tmp.path().join("ca/ca.key"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.children.push(cmd.spawn().unwrap());
    }

    /// Runs `pgrepl ARGS` against host `i`'s directory; must succeed.
    fn ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.pgrepl(i).args(args).stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "pgrepl {args:?} failed:\n{}", common::describe(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn status(&self, i: usize) -> Option<Value> {
        let out = self.pgrepl(i).args(["status", "--json"]).stdin(Stdio::null()).output().unwrap();
        serde_json::from_slice(&out.stdout).ok().filter(|_| out.status.success())
    }

    /// The running primary, when the other member streams from it.
    fn converged(&self) -> Option<String> {
        let status = self.status(0)?;
        let members = status["members"].as_array()?;
        let primary = members.iter().find(|m| m["role"] == "primary" && m["state"] == "running")?;
        members
            .iter()
            .all(|m| m == primary || m["state"] == "streaming")
            .then(|| primary["name"].as_str().unwrap().into())
    }

    fn postgres_runs(&self, member: &str) -> bool {
        let i: usize = member.strip_prefix("node-").unwrap().parse::<usize>().unwrap() - 1;
        server_runs(&self.dir(i), member)
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &self.children {
            // SAFETY: SIGTERM to a node this test started; it stops its PostgreSQL.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_nodes_on_etcd_keep_the_primary_running_without_the_store_and_fence_it_again_once_resumed() {
    let mut etcd = Etcd::start().await;
    let tmp = tempfile::Builder::new().prefix("pgrepl-pause-").tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    common::three_hosts::make_ca(&tmp.path().join("ca"), "paused-nodes");
    let mut nodes = Nodes { tmp, store: etcd.store_setting(), ports: free_ports(), children: vec![] };
    nodes.start(0);
    eventually(Duration::from_secs(60), "node-1 to bootstrap", || async { nodes.converged() }).await;
    nodes.start(1);
    let primary = eventually(Duration::from_secs(60), "node-2 to stream", || async {
        nodes.converged().filter(|_| nodes.status(0).is_some_and(|s| s["members"].as_array().unwrap().len() == 2))
    })
    .await;

    // Paused through the other host's directory: both agents take it in.
    let out = nodes.ok(1, &["pause"]);
    assert!(out.contains("MAINTENANCE MODE"), "{out}");
    let status = nodes.status(0).unwrap();
    assert_eq!(status["maintenance_mode"], true);
    assert!(decisions(&status).iter().all(|d| d.starts_with("paused: ")), "{status:#}");

    // The store lost while paused: the fence is disarmed, so the primary keeps running.
    etcd.stop();
    holds_for(A_GOOD_WHILE, "the primary running without the store while paused", || async {
        if nodes.postgres_runs(&primary) {
            Ok(())
        } else {
            Err(format!("{primary}'s PostgreSQL stopped"))
        }
    })
    .await;
    etcd.restart().await;
    eventually(Duration::from_secs(30), "the agents to publish again", || async {
        let status = nodes.status(0)?;
        let members = status["members"].as_array()?;
        (members.iter().all(|m| m["decision"].as_str().is_some_and(|d| d.starts_with("paused: ")))
            && nodes.converged() == Some(primary.clone()))
        .then_some(())
    })
    .await;

    // Resumed: the fence is armed again, and losing the store stops the primary before its
    // lease (ttl 4 s) could expire.
    let out = nodes.ok(0, &["resume"]);
    assert!(out.contains("resumed"), "{out}");
    assert_eq!(nodes.status(1).unwrap()["maintenance_mode"], false);
    tokio::time::sleep(Duration::from_secs(2)).await;
    etcd.stop();
    let lost = Instant::now();
    eventually(Duration::from_secs(10), "the primary fenced after resume", || async {
        (!nodes.postgres_runs(&primary)).then_some(())
    })
    .await;
    assert!(lost.elapsed() < Duration::from_secs(4), "fenced only after {:?}", lost.elapsed());
    etcd.restart().await;
}
