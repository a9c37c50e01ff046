//! Three hosts (network namespaces on a bridge), each running one member of a three-member
//! etcd cluster and one `pgrepl node --router`, all in one pgrepl cluster: starting, stopping and
//! restarting their processes, reading `status` as a host sees it, and asking each host's
//! PostgreSQL from inside that host (so a cut-off host is still seen). Shared by the tests that
//! run a cluster across hosts (`e2e_hosts`, `nemesis`).

use super::netns::{Hosts, OnDrop};
use super::pgrepl_bin;
use super::writer::PrimaryWatch;
use super::{eventually, one_primary_others_streaming};
use pgrepl_store::{EtcdStore, Store};
use serde_json::Value;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

pub const HOSTS: usize = 3;
pub const ADMIN_PASSWORD: &str = "admin-across-hosts";
pub const REPLICATION_PASSWORD: &str = "replication-across-hosts";
/// Each host has its own address, so every member uses PostgreSQL's own port...
pub const PG_PORT: u16 = 5432;
/// ...and each host's router the next ones.
pub const RW_PORT: u16 = 6432;
pub const RO_PORT: u16 = 6433;
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct Cluster {
    pub hosts: Arc<Hosts>,
    pub tmp: tempfile::TempDir,
    /// The running `pgrepl node` of each host.
    pub nodes: Vec<Option<i32>>,
    /// The running etcd member of each host.
    pub etcd: Vec<Option<i32>>,
    /// The `synchronous` setting every node is given (`None`: the default).
    pub synchronous: Option<&'static str>,
    /// The directory of the CA (`ca.crt`, `ca.key`, made by `pgrepl ca init`) each host's node
    /// is given: one for all, unless a test gives a host another.
    pub ca: Vec<PathBuf>,
    /// `require_tls` for every node. False unless a test says otherwise: TLS is on (members
    /// serve it, replicas verify it), but the kit's own probes log in from inside each host at
    /// its address without TLS (tokio-postgres here has no TLS connector).
    pub require_tls: bool,
    /// `tls.mode` for every node (`None`: the default, on).
    pub tls_mode: Option<&'static str>,
    /// `tls.ca_in_store` for every node: no CA is given (`ca` is unused); the first node makes
    /// one and keeps it in etcd.
    pub ca_in_store: bool,
    /// More variables for host `i`'s node (over its pgrepl.toml on host 1).
    pub more_env: Vec<Vec<(String, String)>>,
}

pub fn member(i: usize) -> String {
    format!("node-{}", i + 1)
}

pub fn host_of(member: &str) -> usize {
    member.strip_prefix("node-").and_then(|n| n.parse::<usize>().ok()).expect("a node-N member") - 1
}

impl Cluster {
    pub fn new() -> Cluster {
        let hosts = Arc::new(Hosts::create(HOSTS));
        let tmp = tempfile::Builder::new().prefix("pgrepl-hosts-").tempdir_in("/tmp").unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let ca = tmp.path().join("ca");
        make_ca(&ca, "hosts");
        Cluster {
            hosts,
            tmp,
            nodes: vec![None; HOSTS],
            etcd: vec![None; HOSTS],
            synchronous: None,
            ca: vec![ca; HOSTS],
            require_tls: false,
            tls_mode: None,
            ca_in_store: false,
            more_env: vec![vec![]; HOSTS],
        }
    }

    pub fn dir(&self, i: usize) -> PathBuf {
        self.tmp.path().join(format!("h{}", i + 1))
    }

    pub fn log(&self, i: usize) -> PathBuf {
        self.tmp.path().join(format!("node-{}.log", i + 1))
    }

    pub fn store_setting(&self) -> String {
        let endpoints: Vec<String> = (0..HOSTS).map(|i| format!("{}:2379", self.hosts.addr(i))).collect();
        format!("etcd://{}", endpoints.join(","))
    }

    /// One etcd member per host, as one static cluster; returns once it has a quorum.
    pub async fn start_etcd(&mut self) {
        for i in 0..HOSTS {
            self.start_etcd_member(i);
        }
        let endpoints: Vec<String> = (0..HOSTS).map(|i| format!("http://{}:2379", self.hosts.addr(i))).collect();
        let probe = EtcdStore::connect(&endpoints, "/pgrepl-probe/", Duration::from_secs(1)).await.unwrap();
        eventually(Duration::from_secs(30), "the three etcd members to have a quorum", || async {
            probe.snapshot().await.ok().map(|_| ())
        })
        .await;
    }

    /// Starts host `i`'s etcd member (again: its data directory is kept, so a restarted member
    /// rejoins the cluster it was in).
    pub fn start_etcd_member(&mut self, i: usize) {
        assert!(self.etcd[i].is_none(), "host {i}'s etcd already runs");
        let peers: Vec<String> = (0..HOSTS).map(|i| format!("e{}=http://{}:2380", i + 1, self.hosts.addr(i))).collect();
        let token = format!("pgrepl-hosts-{}", self.hosts.namespace(0));
        let addr = self.hosts.addr(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.tmp.path().join(format!("etcd-{}.log", i + 1)))
            .unwrap();
        let mut cmd = self.hosts.command(i, "/usr/bin/etcd");
        cmd.env_clear()
            .env("PATH", PATH)
            .args(["--name", &format!("e{}", i + 1), "--data-dir"])
            .arg(self.tmp.path().join(format!("etcd-{}", i + 1)))
            .args(["--listen-client-urls", &format!("http://{addr}:2379")])
            .args(["--advertise-client-urls", &format!("http://{addr}:2379")])
            .args(["--listen-peer-urls", &format!("http://{addr}:2380")])
            .args(["--initial-advertise-peer-urls", &format!("http://{addr}:2380")])
            .args(["--initial-cluster", &peers.join(","), "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &token])
            // Without pre-vote (etcd 3.4's default; 3.5 turns it on), a member rejoining
            // after a partition forces an election with the higher term it campaigned to,
            // and the leader lease cannot be renewed until that election ends.
            .arg("--pre-vote=true")
            .args(["--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"])
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.etcd[i] = Some(self.hosts.spawn(cmd, OnDrop::Kill));
    }

    /// Host 1 reads its settings from a pgrepl.toml holding the passwords (mode 0600); the
    /// others from the environment.
    pub fn configure(&self) {
        let dir = self.dir(0);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let synchronous = self.synchronous.map(|s| format!("synchronous = \"{s}\"\n")).unwrap_or_default();
        let toml = format!(
            "cluster = \"hosts\"\nstore = \"{}\"\nlisten = \"{}\"\nallow = [\"{}\"]\nport = {RW_PORT}\nro_port = {RO_PORT}\n\
             {synchronous}\n[database]\nadmin_password = \"{ADMIN_PASSWORD}\"\nreplication_password = \"{REPLICATION_PASSWORD}\"\n",
            self.store_setting(),
            self.hosts.addr(0),
            self.hosts.cidr()
        );
        let file = dir.join("pgrepl.toml");
        std::fs::write(&file, toml).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// What host `i`'s node is given of TLS (host 1 too: the rest of its settings are in its
    /// pgrepl.toml).
    fn tls_env(&self, i: usize) -> Vec<(String, String)> {
        let mut env = if self.ca_in_store {
            vec![("PGREPL_TLS_CA_IN_STORE".to_string(), "true".to_string())]
        } else {
            vec![
                ("PGREPL_TLS_CA_CERT_FILE".to_string(), self.ca[i].join("ca.crt").display().to_string()),
                ("PGREPL_TLS_CA_KEY_FILE".to_string(), self.ca[i].join("ca.key").display().to_string()),
            ]
        };
        env.push(("PGREPL_REQUIRE_TLS".to_string(), self.require_tls.to_string()));
        env.extend(self.tls_mode.map(|m| ("PGREPL_TLS".to_string(), m.to_string())));
        env.extend(self.more_env[i].iter().cloned());
        env
    }

    pub fn env(&self, i: usize) -> Vec<(String, String)> {
        if i == 0 {
            return self.tls_env(0);
        }
        let synchronous = self.synchronous.map(|s| ("PGREPL_SYNCHRONOUS", s.to_string()));
        [
            ("PGREPL_CLUSTER", "hosts".to_string()),
            ("PGREPL_STORE", self.store_setting()),
            ("PGREPL_LISTEN", self.hosts.addr(i).to_string()),
            ("PGREPL_ALLOW", self.hosts.cidr()),
            ("PGREPL_PORT", RW_PORT.to_string()),
            ("PGREPL_RO_PORT", RO_PORT.to_string()),
            ("PGREPL_ADMIN_PASSWORD", ADMIN_PASSWORD.to_string()),
            ("PGREPL_REPLICATION_PASSWORD", REPLICATION_PASSWORD.to_string()),
        ]
        .into_iter()
        .chain(synchronous)
        .map(|(k, v)| (k.to_string(), v))
        .chain(self.tls_env(i))
        .collect()
    }

    /// `pgrepl --dir DIR ARGS` inside host `i`, with nothing of this process's environment.
    pub fn pgrepl(&self, i: usize) -> Command {
        let mut cmd = self.hosts.command(i, pgrepl_bin());
        cmd.env_clear().env("PATH", PATH).arg("--dir").arg(self.dir(i));
        cmd
    }

    pub fn start_node(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "host {i}'s node already runs");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log(i)).unwrap();
        let mut cmd = self.pgrepl(i);
        cmd.args(["node", "--member", &member(i), "--pg-port", &PG_PORT.to_string(), "--router"])
            .envs(self.env(i))
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.nodes[i] = Some(self.hosts.spawn(cmd, OnDrop::Terminate));
    }

    /// Stops host `i`'s node as systemd would (SIGTERM), waiting until it has ended.
    pub fn stop_node(&mut self, i: usize) {
        let node = self.nodes[i].take().expect("a running node");
        let status = self.hosts.terminate(node, Duration::from_secs(90));
        assert!(status.success(), "{}'s node ended with {status}", member(i));
    }

    /// Starts again every node that exited on its own (as systemd would), saying how each ended.
    pub fn restart_exited_nodes(&mut self) -> Vec<String> {
        let mut said = Vec::new();
        for i in 0..HOSTS {
            let Some(pid) = self.nodes[i] else { continue };
            if let Some(status) = self.hosts.exited(pid) {
                said.push(format!("{}'s node exited on its own ({status}), started again", member(i)));
                self.nodes[i] = None;
                self.start_node(i);
            }
        }
        said
    }

    /// The host's node and its PostgreSQL die at once (kill -9 of both).
    pub fn lose_member(&mut self, i: usize) {
        let node = self.nodes[i].take().expect("a running node");
        self.hosts.kill9(node);
        let pid_file = self.dir(i).join(format!("members/{}/data/postmaster.pid", member(i)));
        let pid: i32 = std::fs::read_to_string(pid_file).unwrap().lines().next().unwrap().trim().parse().unwrap();
        // SAFETY: SIGKILL to the postmaster of a member this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    }

    fn status_command(&self, i: usize) -> Command {
        let mut cmd = self.pgrepl(i);
        cmd.args(["status", "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    }

    pub fn status_output(&self, i: usize) -> Output {
        self.status_command(i).output().unwrap()
    }

    /// `pgrepl status --json` as host `i` sees it (`None` while it cannot read the store).
    pub fn status(&self, i: usize) -> Option<Value> {
        parse_status(&self.status_output(i))
    }

    pub fn leader(&self, i: usize) -> Option<String> {
        self.status(i)?["leader"].as_str().map(String::from)
    }

    /// One running primary and every other member streaming, as host `i` sees it.
    pub fn converged(&self, i: usize) -> Option<String> {
        all_converged(&self.status(i)?)
    }

    /// As `converged`, without holding the runtime's thread while `status` runs.
    pub async fn converged_async(&self, i: usize) -> Option<String> {
        let mut cmd = tokio::process::Command::from(self.status_command(i));
        let out = cmd.kill_on_drop(true).output().await.ok()?;
        all_converged(&parse_status(&out)?)
    }

    /// Whether host `i`'s PostgreSQL runs (its postmaster.pid names a live process).
    pub fn postgres_runs(&self, i: usize) -> bool {
        super::postmaster_runs(&self.dir(i).join(format!("members/{}/data", member(i))))
    }

    /// Whether host `i`'s server takes no connection, asked from inside the host: refused at
    /// TCP (not running) or at login because it is shutting down (a fast shutdown ends every
    /// session and refuses new ones at once, though its WAL senders may wait up to
    /// `wal_sender_timeout` for replicas that a cut network no longer lets answer).
    pub async fn takes_no_connections(&self, i: usize) -> bool {
        let stream = match self.hosts.tcp_in(i, self.pg(i), Duration::from_millis(500)).await {
            Ok(stream) => stream,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionRefused,
        };
        let mut config = tokio_postgres::Config::new();
        config.user("postgres").password(ADMIN_PASSWORD).dbname("postgres");
        match config.connect_raw(stream, tokio_postgres::NoTls).await {
            Ok(_) => false,
            Err(e) => e.code() == Some(&tokio_postgres::error::SqlState::CANNOT_CONNECT_NOW),
        }
    }

    /// `pg_is_in_recovery()` of each host's server, asked from inside the host.
    pub async fn in_recovery(&self) -> Vec<Option<bool>> {
        let mut answers = Vec::new();
        for i in 0..HOSTS {
            let answer = match self.hosts.sql_in(i, PG_PORT, "postgres", ADMIN_PASSWORD).await {
                Ok(c) => c.query_one("SELECT pg_is_in_recovery()", &[]).await.ok().map(|r| r.get::<_, bool>(0)),
                Err(_) => None,
            };
            answers.push(answer);
        }
        answers
    }

    /// Samples every host's server from inside that host.
    pub fn watch(&self) -> PrimaryWatch {
        let hosts = self.hosts.clone();
        PrimaryWatch::start_probing(HOSTS, move |i| {
            let hosts = hosts.clone();
            async move {
                let c = hosts.sql_in(i, PG_PORT, "postgres", ADMIN_PASSWORD).await.ok()?;
                let row = c.query_one("SELECT pg_is_in_recovery()", &[]).await.ok()?;
                Some(!row.get::<_, bool>(0))
            }
        })
    }

    pub fn rw(&self, i: usize) -> SocketAddr {
        SocketAddr::new(self.hosts.addr(i), RW_PORT)
    }

    pub fn pg(&self, i: usize) -> SocketAddr {
        SocketAddr::new(self.hosts.addr(i), PG_PORT)
    }

    pub fn node_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log(i)).unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        (0..HOSTS).map(|i| format!("--- node-{} ---\n{}", i + 1, tail(&self.node_log(i), 80))).collect()
    }
}

impl Drop for Cluster {
    /// A failing test shows what each host's node said last.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

fn parse_status(out: &Output) -> Option<Value> {
    serde_json::from_slice(&out.stdout).ok().filter(|_| out.status.success())
}

fn all_converged(status: &Value) -> Option<String> {
    let all_there = status["members"].as_array()?.len() == HOSTS;
    one_primary_others_streaming(status).filter(|_| all_there)
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n") + "\n"
}

/// A new CA for `cluster` in `dir`, made by `pgrepl ca init`.
pub fn make_ca(dir: &std::path::Path, cluster: &str) {
    let out = Command::new(pgrepl_bin()).args(["ca", "init", "--cluster", cluster]).arg(dir).output().unwrap();
    assert!(out.status.success(), "pgrepl ca init: {}", String::from_utf8_lossy(&out.stderr));
    let key_mode = std::fs::metadata(dir.join("ca.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(key_mode, 0o600, "the CA's key is private");
}
