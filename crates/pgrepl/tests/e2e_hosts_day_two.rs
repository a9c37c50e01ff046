//! Day-two operations on a cluster of `pgrepl node` members on three hosts (network
//! namespaces, etcd), run from a directory that holds no member, only the store and the
//! cluster's name: `status`, `config set` (a reloadable parameter reaches every host's server,
//! one that needs a restart marks every member pending), `restart --rolling --pending` (one
//! switchover, every member restarted, nothing pending after), `pause` and `resume`, `scale`
//! (refused: it starts no host), `switchover`; then `stop`, `start` and `remove` (the leader
//! stopped hands over and its server stays down while its node runs; a running member is not
//! removed; a stopped one is, its slot dropped and its status gone for good), under a writer
//! through a host's router, in synchronous mode, with no acknowledged row lost and never two
//! writable primaries.

mod common;

use common::three_hosts::{host_of, Cluster, ADMIN_PASSWORD, HOSTS};
use common::writer::{missing_at, Writer};
use common::{eventually, member, pgrepl_bin};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);

/// A directory with only what a command needs to reach the cluster: its name and its store.
fn remote_dir(c: &Cluster) -> PathBuf {
    let dir = c.tmp.path().join("remote");
    std::fs::create_dir_all(&dir).unwrap();
    let toml = format!("cluster = \"hosts\"\nstore = \"{}\"\nrequire_tls = false\n", c.store_setting());
    std::fs::write(dir.join("pgrepl.toml"), toml).unwrap();
    dir
}

fn remote(dir: &PathBuf, args: &[&str]) -> Output {
    Command::new(pgrepl_bin())
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_clear()
        .env("PATH", common::three_hosts::PATH)
        .output()
        .unwrap()
}

fn remote_ok(dir: &PathBuf, args: &[&str]) -> String {
    let out = remote(dir, args);
    assert!(
        out.status.success(),
        "pgrepl {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status(dir: &PathBuf) -> Option<Value> {
    serde_json::from_str(&remote_ok(dir, &["status", "--json"])).ok()
}

/// `SHOW name` on host `i`'s member.
async fn show(c: &Cluster, i: usize, name: &str) -> Option<String> {
    let client = common::writer::connect_at(c.pg(i), ADMIN_PASSWORD).await.ok()?;
    client.query_one(&format!("SHOW {name}"), &[]).await.ok().map(|r| r.get(0))
}

/// Three hosts in synchronous mode, each node given `more_env` too, converged; its primary,
/// and a directory holding no member to run commands from.
async fn synchronous_cluster(more_env: Vec<Vec<(String, String)>>) -> (Cluster, String, PathBuf) {
    let mut c = Cluster::new();
    c.synchronous = Some("on");
    c.more_env = more_env;
    c.start_etcd().await;
    c.configure();
    for i in 0..HOSTS {
        c.start_node(i);
    }
    let first = eventually(LIMIT, "one primary and two streaming replicas", || async { c.converged(0) }).await;
    let dir = remote_dir(&c);
    (c, first, dir)
}

#[tokio::test]
async fn config_set_and_a_rolling_restart_from_a_host_without_a_member_keep_every_row() {
    let (c, first, dir) = synchronous_cluster(vec![vec![]; HOSTS]).await;
    let s = status(&dir).expect("status from a directory holding no member");
    assert_eq!(s["leader"], first.as_str(), "{s:#}");

    let w = (host_of(&first) + 1) % HOSTS;
    let writer = Writer::start_at(c.rw(w), ADMIN_PASSWORD.to_string()).await;

    remote_ok(&dir, &["config", "set", "work_mem=9MB"]);
    for i in 0..HOSTS {
        eventually(LIMIT, "work_mem on every host", || async {
            (show(&c, i, "work_mem").await? == "9MB").then_some(())
        })
        .await;
    }
    remote_ok(&dir, &["config", "set", "shared_buffers=48MB"]);
    eventually(LIMIT, "every member pending restart", || async {
        let s = status(&dir)?;
        let all =
            s["members"].as_array()?.iter().all(|m| m["pending_restart"] == serde_json::json!(["shared_buffers"]));
        all.then_some(())
    })
    .await;
    let out = remote_ok(&dir, &["restart", "--rolling", "--pending"]);
    assert_eq!(out.matches("restarted ").count(), HOSTS, "{out}");
    assert_eq!(out.matches("switched over").count(), 1, "{out}");
    for i in 0..HOSTS {
        assert_eq!(show(&c, i, "shared_buffers").await.as_deref(), Some("48MB"), "host {i}");
    }
    let second = eventually(LIMIT, "converged after the rolling restart", || async { c.converged(0) }).await;
    assert_ne!(second, first, "the old primary handed over");
    let s = status(&dir).unwrap();
    assert!(s["members"].as_array().unwrap().iter().all(|m| m["pending_restart"] == serde_json::json!([])), "{s:#}");

    // Maintenance mode from the same directory: every agent takes it in, then leaves it.
    remote_ok(&dir, &["pause"]);
    assert_eq!(status(&dir).unwrap()["maintenance_mode"], true);
    remote_ok(&dir, &["resume"]);
    assert_eq!(status(&dir).unwrap()["maintenance_mode"], false);

    // `scale` starts no host: refused, saying what to do instead.
    let out = remote(&dir, &["scale", "3"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("`scale` starts no host"), "{said}");

    // A switchover from the same directory.
    remote_ok(&dir, &["switchover"]);
    let third = eventually(LIMIT, "converged after the switchover", || async { c.converged(0) }).await;
    assert_ne!(third, second);

    let acked = writer.stop().await;
    assert!(!acked.is_empty());
    let lost = missing_at(c.pg(host_of(&third)), ADMIN_PASSWORD, &acked).await;
    assert_eq!(lost, Vec::<i64>::new(), "synchronous mode: no acknowledged row lost");
}

/// The state `status --json` shows for `name`.
fn state_of(s: &Value, name: &str) -> String {
    member(s, name)["state"].as_str().unwrap_or_default().to_string()
}

/// The replication slots on host `i`'s server.
async fn slots(c: &Cluster, i: usize) -> Vec<String> {
    let client = common::writer::connect_at(c.pg(i), ADMIN_PASSWORD).await.unwrap();
    let rows = client.query("SELECT slot_name::text FROM pg_replication_slots ORDER BY 1", &[]).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn stop_start_and_remove_from_a_host_without_a_member_keep_every_row() {
    let (mut c, first, dir) = synchronous_cluster(vec![vec![]; HOSTS]).await;
    let watch = c.watch();
    // The writer goes through the router of a host whose member is not the one stopped.
    let w = (host_of(&first) + 1) % HOSTS;
    let writer = Writer::start_at(c.rw(w), ADMIN_PASSWORD.to_string()).await;

    // The leader, stopped: it hands over and its server stays down while its node runs on.
    let out = remote_ok(&dir, &["stop", &first]);
    assert!(out.contains(&format!("{first} stopped")), "{out}");
    let second = eventually(LIMIT, "another leader, the first kept stopped", || async {
        let s = status(&dir)?;
        let leader = s["leader"].as_str()?.to_string();
        (leader != first && state_of(&s, &first) == "stopped" && state_of(&s, &leader) == "running").then_some(leader)
    })
    .await;
    let h = host_of(&first);
    assert!(!c.postgres_runs(h), "the stopped member's server is down");
    let log = c.node_log(h);
    assert!(
        log.contains("`pgrepl stop` asked for this member to be kept down"),
        "{}",
        common::three_hosts::tail(&log, 30)
    );
    assert!(log.contains("released the leader lease: a replica can take over at once"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!c.postgres_runs(h), "it stays down");
    assert!(c.restart_exited_nodes().is_empty(), "its node runs on");

    // Started again from the same directory, it rejoins as a replica of the new leader.
    let out = remote_ok(&dir, &["start", &first]);
    assert!(out.contains(&format!("{first} is running")), "{out}");
    let leader = eventually(LIMIT, "all three streaming again", || async { c.converged(0) }).await;
    assert_eq!(leader, second);

    // A running member is not removed; once stopped, it is, for good.
    let out = remote(&dir, &["remove", &first]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("is running") && said.contains("nothing was changed"), "{said}");
    assert_eq!(status(&dir).unwrap()["members"].as_array().unwrap().len(), HOSTS);
    remote_ok(&dir, &["stop", &first]);
    let out = remote_ok(&dir, &["remove", &first]);
    assert!(out.contains(&format!("{first} removed")), "{out}");
    let slot = first.replace('-', "_");
    assert!(!slots(&c, host_of(&second)).await.contains(&slot), "the leader dropped the removed member's slot");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = status(&dir).unwrap();
    let names: Vec<&str> = s["members"].as_array().unwrap().iter().filter_map(|m| m["name"].as_str()).collect();
    assert_eq!(names.len(), HOSTS - 1, "{s:#}");
    assert!(!names.contains(&first.as_str()), "its status does not come back while its node runs: {s:#}");
    assert!(c.restart_exited_nodes().is_empty());
    assert_eq!(common::one_primary_others_streaming(&s).as_deref(), Some(second.as_str()), "{s:#}");

    let acked = writer.stop().await;
    assert!(!acked.is_empty());
    let lost = missing_at(c.pg(host_of(&second)), ADMIN_PASSWORD, &acked).await;
    assert_eq!(lost, Vec::<i64>::new(), "synchronous mode: no acknowledged row lost");
    assert_eq!(watch.stop().await, 1, "never two writable primaries at once");
}

/// `pgrepl ARGS` from `dir` with `input` on its standard input.
fn remote_with_input(dir: &PathBuf, args: &[&str], input: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(pgrepl_bin())
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_clear()
        .env("PATH", common::three_hosts::PATH)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "pgrepl {args:?} failed:\n{said}");
    said
}

/// Logs in as `app` at `addr` and asks whether the server is a replica.
async fn app_login(addr: std::net::SocketAddr, password: &str) -> Result<bool, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(addr.ip().to_string())
        .port(addr.port())
        .user("app")
        .password(password)
        .dbname("app")
        .connect_timeout(Duration::from_secs(5));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client.query_one("SELECT pg_is_in_recovery()", &[]).await?.get(0))
}

fn stale_secrets(s: &Value, name: &str) -> Value {
    member(s, name).get("stale_secrets").cloned().unwrap_or(serde_json::json!([]))
}

#[tokio::test]
async fn passwords_change_from_a_host_without_a_member_and_roll_out_host_by_host() {
    let app = [("PGREPL_USER", "app"), ("PGREPL_PASSWORD", "app-old"), ("PGREPL_DATABASE", "app")];
    let app: Vec<(String, String)> = app.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let (mut c, first, dir) = synchronous_cluster(vec![app; HOSTS]).await;
    let watch = c.watch();
    let w = (host_of(&first) + 1) % HOSTS;
    let writer = Writer::start_at(c.rw(w), ADMIN_PASSWORD.to_string()).await;

    // The user password, from a directory that holds neither a member nor a secret: the
    // primary sets its verifier, and the new password logs in through every host's endpoints.
    let said = remote_with_input(&dir, &["passwd", "--user"], "app-new\n");
    assert!(said.contains("the user password is changed"), "{said}");
    for i in 0..HOSTS {
        let ro = std::net::SocketAddr::new(c.hosts.addr(i), common::three_hosts::RO_PORT);
        let in_recovery = app_login(c.rw(i), "app-new").await.unwrap();
        assert!(!in_recovery, "rw of host {i} reaches the primary");
        assert!(app_login(ro, "app-new").await.unwrap(), "ro of host {i} reaches a replica");
        assert!(app_login(c.rw(i), "app-old").await.is_err(), "the old password no longer logs in");
    }

    // The replication password: set on the primary at once; the hosts keep the old one until
    // each is given the new one, and their replicas stream on meanwhile.
    let said = remote_with_input(&dir, &["passwd", "--replication"], "repl-new\n");
    assert!(said.contains("the replication password is changed"), "{said}");
    assert!(said.contains("still hold the old replication password"), "{said}");
    let s = eventually(LIMIT, "every host saying it holds the old replication password", || async {
        let s = status(&dir)?;
        (0..HOSTS)
            .all(|i| stale_secrets(&s, &common::three_hosts::member(i)) == serde_json::json!(["replication"]))
            .then_some(s)
    })
    .await;
    assert_eq!(common::one_primary_others_streaming(&s).as_deref(), Some(first.as_str()), "{s:#}");
    // Host by host, replicas first and the primary last (it hands over): the new secret, a
    // node restart, and that member streams again with nothing stale left.
    let mut order: Vec<usize> = (0..HOSTS).filter(|i| *i != host_of(&first)).collect();
    order.push(host_of(&first));
    for i in order {
        let name = common::three_hosts::member(i);
        c.stop_node(i);
        c.more_env[i].push(("PGREPL_REPLICATION_PASSWORD".to_string(), "repl-new".to_string()));
        c.start_node(i);
        eventually(LIMIT, "the restarted member streaming with the new password", || async {
            let s = status(&dir)?;
            let back = common::one_primary_others_streaming(&s).is_some() && s["members"].as_array()?.len() == HOSTS;
            (back && stale_secrets(&s, &name) == serde_json::json!([])).then_some(())
        })
        .await;
    }
    let s = status(&dir).unwrap();
    assert!((0..HOSTS).all(|i| stale_secrets(&s, &common::three_hosts::member(i)) == serde_json::json!([])), "{s:#}");
    let last = common::one_primary_others_streaming(&s).unwrap();
    assert_ne!(last, first, "the old primary handed over when its node restarted");

    let acked = writer.stop().await;
    assert!(!acked.is_empty());
    let lost = missing_at(c.pg(host_of(&last)), ADMIN_PASSWORD, &acked).await;
    assert_eq!(lost, Vec::<i64>::new(), "synchronous mode: no acknowledged row lost");
    assert_eq!(watch.stop().await, 1, "never two writable primaries at once");
}
