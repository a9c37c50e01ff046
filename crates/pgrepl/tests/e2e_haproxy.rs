//! End-to-end: Debian's HAProxy with Patroni's own recipe (`option httpchk OPTIONS /primary`,
//! `http-check expect status 200`, `on-marked-down shutdown-sessions`, and the `/replica`
//! pair) in front of a cluster started by `pgrepl up`, checking each member's HTTP API: writes
//! through the primary port land on the primary, reads through the replicas port on a replica,
//! and after `pgrepl switchover` the primary port reaches the new primary within seconds while
//! HAProxy shuts down the sessions of the servers it marked down (docs/api.md has the same
//! configuration).

mod common;

use common::writer::connect_at;
use common::{eventually, free_ports, member, postmaster_pid, TestCluster};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn haproxy_bin() -> PathBuf {
    ["/usr/sbin/haproxy", "/usr/bin/haproxy", "/usr/local/sbin/haproxy"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("haproxy is not installed; scripts/setup.sh installs Debian's haproxy")
}

/// Patroni's recipe, one `server` per member: its PostgreSQL address, checked on its API port.
fn haproxy_config(status: &Value, primary_port: u16, replicas_port: u16) -> String {
    let mut servers = String::new();
    for m in status["members"].as_array().unwrap() {
        let api: SocketAddr = m["api"].as_str().unwrap().parse().unwrap();
        servers += &format!(
            "    server {} {}:{} maxconn 100 check port {}\n",
            m["name"].as_str().unwrap(),
            m["host"].as_str().unwrap(),
            m["port"],
            api.port()
        );
    }
    let listen = |name: &str, port: u16, check: &str| {
        format!(
            "listen {name}\n    bind 127.0.0.1:{port}\n    option httpchk OPTIONS {check}\n    http-check expect status 200\n    \
             default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions\n{servers}\n"
        )
    };
    format!(
        "global\n    maxconn 100\n\ndefaults\n    mode tcp\n    retries 2\n    timeout client 30m\n    timeout connect 4s\n    \
         timeout server 30m\n    timeout check 5s\n\n{}{}",
        listen("primary", primary_port, "/primary"),
        listen("replicas", replicas_port, "/replica")
    )
}

/// HAProxy in the foreground, stopped when dropped.
struct Haproxy(Child);

impl Haproxy {
    fn start(config: &Path) -> Haproxy {
        let check = Command::new(haproxy_bin()).arg("-c").arg("-f").arg(config).output().unwrap();
        assert!(check.status.success(), "haproxy -c: {}", common::describe(&check));
        let child = Command::new(haproxy_bin())
            .arg("-db")
            .arg("-f")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Haproxy(child)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A session through HAProxy: the server's port and whether it is in recovery.
async fn server_of(client: &tokio_postgres::Client) -> Option<(u16, bool)> {
    let row = client.query_one("SELECT inet_server_port(), pg_is_in_recovery()", &[]).await.ok()?;
    Some((row.get::<_, i32>(0) as u16, row.get(1)))
}

/// `n` new sessions through `port`, each its server's port and recovery state (`None`: a
/// session could not be had).
async fn sessions(port: u16, password: &str, n: usize) -> Option<Vec<(u16, bool)>> {
    let mut seen = Vec::new();
    for _ in 0..n {
        let client = connect_at(SocketAddr::from(([127, 0, 0, 1], port)), password).await.ok()?;
        seen.push(server_of(&client).await?);
    }
    Some(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_with_patroni_s_recipe_routes_writes_to_the_primary_and_reads_to_replicas_and_moves_after_a_switchover()
{
    let c = TestCluster::new();
    c.ok(&["up", "--replicas", "2"]);
    let password = c.secret("admin");
    let status = c.status();
    let old = c.leader();
    let port_of = |name: &str| member(&status, name)["port"].as_u64().unwrap() as u16;
    let [primary_port, replicas_port] = free_ports();
    let config = c.scratch("haproxy.cfg");
    std::fs::write(&config, haproxy_config(&status, primary_port, replicas_port)).unwrap();
    let _haproxy = Haproxy::start(&config);

    // Servers start up in HAProxy until their checks fail: wait until every session lands right.
    let primary_only =
        |seen: &Vec<(u16, bool)>| seen.iter().all(|&(port, recovery)| port == port_of(&old) && !recovery);
    eventually(Duration::from_secs(20), "every session through the primary port on the primary", || async {
        sessions(primary_port, &password, 6).await.filter(primary_only)
    })
    .await;
    let writes = connect_at(SocketAddr::from(([127, 0, 0, 1], primary_port)), &password).await.unwrap();
    writes
        .batch_execute("CREATE TABLE through_haproxy (id int); INSERT INTO through_haproxy VALUES (1)")
        .await
        .unwrap();
    let replicas: Vec<u16> = c.members("replica", "streaming").into_iter().map(|(_, p)| p).collect();
    assert_eq!(replicas.len(), 2);
    let seen = eventually(Duration::from_secs(20), "every session through the replicas port on a replica", || async {
        sessions(replicas_port, &password, 6).await.filter(|s| s.iter().all(|&(p, r)| r && replicas.contains(&p)))
    })
    .await;
    assert!(replicas.iter().all(|p| seen.iter().any(|(q, _)| q == p)), "reads go to both replicas: {seen:?}");
    let read = connect_at(SocketAddr::from(([127, 0, 0, 1], replicas_port)), &password).await.unwrap();
    eventually(Duration::from_secs(5), "the row on a replica", || async {
        let n: i64 = read.query_one("SELECT count(*) FROM through_haproxy", &[]).await.ok()?.get(0);
        (n == 1).then_some(())
    })
    .await;

    // A session through the replicas port on the member about to be promoted: its server keeps
    // running through the promotion, so only HAProxy (on-marked-down shutdown-sessions) ends it.
    let new = c.members("replica", "streaming")[0].0.clone();
    let on_new = eventually(Duration::from_secs(10), "a read session on the switchover's target", || async {
        let client = connect_at(SocketAddr::from(([127, 0, 0, 1], replicas_port)), &password).await.ok()?;
        (server_of(&client).await? == (port_of(&new), true)).then_some(client)
    })
    .await;

    let new_postmaster = postmaster_pid(&c, &new);
    let out = c.ok(&["switchover", "--to", &new]);
    assert!(out.contains(&format!("{new} is the primary")), "{out}");
    let switched = Instant::now();
    let moved =
        eventually(Duration::from_secs(10), "every session through the primary port on the new primary", || async {
            sessions(primary_port, &password, 4)
                .await
                .filter(|s| s.iter().all(|&(port, recovery)| port == port_of(&new) && !recovery))
        })
        .await;
    eprintln!("the primary port reached {new} {:?} after the switchover returned: {moved:?}", switched.elapsed());
    assert!(writes.simple_query("SELECT 1").await.is_err(), "the session on the old primary was not ended");
    eventually(Duration::from_secs(10), "HAProxy to end the read session on the promoted member", || async {
        on_new.is_closed().then_some(()).or(on_new.simple_query("SELECT 1").await.is_err().then_some(()))
    })
    .await;
    assert_eq!(postmaster_pid(&c, &new), new_postmaster, "promoted without a restart, which would end sessions too");
    // The old primary rejoins as a replica and takes reads again.
    eventually(Duration::from_secs(60), "convergence", || async { c.converged().filter(|l| *l == new) }).await;
    eventually(
        Duration::from_secs(20),
        "reads through the replicas port on the replicas, the old primary among them",
        || async {
            sessions(replicas_port, &password, 6).await.filter(|s| {
                s.iter().all(|&(p, r)| r && p != port_of(&new)) && s.iter().any(|&(p, _)| p == port_of(&old))
            })
        },
    )
    .await;
}
