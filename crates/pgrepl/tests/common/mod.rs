//! The end-to-end test kit: a cluster directory in a temporary place that the unprivileged
//! PostgreSQL user can reach, the real `pgrepl` binary run against it, SQL clients over TCP with
//! the cluster's real passwords, and a bounded `eventually`. Dropping a `TestCluster` runs
//! `pgrepl down`, so a failing test leaves no process behind.
#![allow(dead_code)]

pub mod etcd;
pub mod http;
pub mod netns;
pub mod three_hosts;
pub mod writer;

use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Every variable pgrepl's settings read, one a line (`#` starts a comment), cleared with
/// `PGREPL_DIR` so the host's environment cannot leak into a test. A unit test of the binary
/// (`config::env`) fails, printing the expected text, when the file and `SETTINGS` differ.
const PGREPL_VARS: &str = include_str!("variables.txt");

/// `N` distinct TCP ports free on 127.0.0.1 now: bound together, so the kernel cannot hand the
/// same one out twice (ports taken one at a time, each let go at once, can repeat).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<_> = (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

fn reachable_by_others(path: &Path) -> bool {
    path.ancestors().skip(1).all(|dir| std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
        && std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o005 == 0o005)
}

/// The pgrepl binary, copied to a place the `postgres` OS user can execute when the build
/// directory is not (a root-owned checkout under /root, say): pgrepl run as root switches to that
/// user and starts its supervisor and agents from its own binary.
pub fn pgrepl_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let built = PathBuf::from(env!("CARGO_BIN_EXE_pgrepl"));
        if reachable_by_others(&built) {
            return built;
        }
        let dir = std::env::temp_dir().join(format!("pgrepl-test-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = dir.join("pgrepl");
        std::fs::copy(&built, &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        copy
    })
}

pub struct TestCluster {
    tmp: tempfile::TempDir,
    pub dir: PathBuf,
    /// The router's endpoints: free ports of this test's own (never 5432/5433).
    pub rw_port: u16,
    pub ro_port: u16,
}

impl TestCluster {
    pub fn new() -> TestCluster {
        let tmp = tempfile::Builder::new().prefix("pgrepl-e2e-").tempdir_in("/tmp").unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = tmp.path().join("c");
        let [rw_port, ro_port] = free_ports();
        TestCluster { tmp, dir, rw_port, ro_port }
    }

    /// A second directory beside the cluster's, for tests that need one.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(pgrepl_bin());
        cmd.env_remove("PGREPL_DIR");
        for v in PGREPL_VARS.lines().filter(|l| !l.starts_with('#')) {
            cmd.env_remove(v);
        }
        cmd.env("PGREPL_PORT", self.rw_port.to_string()).env("PGREPL_RO_PORT", self.ro_port.to_string());
        cmd.arg("--dir").arg(&self.dir).args(args).envs(env.iter().copied());
        cmd
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).stdin(Stdio::null()).output().unwrap()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    pub fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command(args, &[])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs a command that must succeed; returns its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "pgrepl {args:?} failed:\n{}", describe(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    pub fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).unwrap()
    }

    pub fn secrets(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir.join("secrets.json")).unwrap()).unwrap()
    }

    pub fn secret(&self, kind: &str) -> String {
        self.secrets()[kind].as_str().unwrap().to_string()
    }

    /// `(name, port)` of every member in `role` ("primary" or "replica") that is `state`.
    pub fn members(&self, role: &str, state: &str) -> Vec<(String, u16)> {
        self.members_where(|m| m["role"] == role && m["state"] == state)
    }

    /// `(name, port)` of every member the status lists.
    pub fn all_members(&self) -> Vec<(String, u16)> {
        self.members_where(|_| true)
    }

    fn members_where(&self, keep: impl Fn(&Value) -> bool) -> Vec<(String, u16)> {
        let status = self.status();
        status["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| keep(m))
            .map(|m| (m["name"].as_str().unwrap().to_string(), m["port"].as_u64().unwrap() as u16))
            .collect()
    }

    /// `SHOW name` on the member at `port` as the admin user (`None` while it does not answer).
    pub async fn show(&self, port: u16, name: &str) -> Option<String> {
        let password = self.secret("admin");
        let connecting = connect(port, "postgres", &password, "postgres");
        let client = tokio::time::timeout(std::time::Duration::from_secs(3), connecting).await.ok()?.ok()?;
        let row = client.query_one(&format!("SHOW {name}"), &[]).await.ok()?;
        Some(row.get(0))
    }

    /// The spec's revision, as `pgrepl config show --json` prints it.
    pub fn config_revision(&self) -> u64 {
        let shown: Value = serde_json::from_str(&self.ok(&["config", "show", "--json"])).unwrap();
        shown["revision"].as_u64().unwrap()
    }

    pub fn port_of(&self, member: &str) -> u16 {
        let status = self.status();
        let m = status["members"].as_array().unwrap().iter().find(|m| m["name"] == member).unwrap();
        m["port"].as_u64().unwrap() as u16
    }

    /// Where `member`'s HTTP API answers (`host:port`), as `status --json` shows it.
    pub fn api_of(&self, name: &str) -> String {
        let status = self.status();
        member(&status, name)["api"].as_str().unwrap_or_else(|| panic!("{name} has no API: {status:#}")).to_string()
    }

    pub fn primary_port(&self) -> u16 {
        let primaries = self.members("primary", "running");
        assert_eq!(primaries.len(), 1, "expected one running primary: {:#}", self.status());
        primaries[0].1
    }

    /// The admin user over TCP with the cluster's admin password.
    pub async fn admin(&self, port: u16) -> tokio_postgres::Client {
        connect(port, "postgres", &self.secret("admin"), "postgres").await.unwrap()
    }
}

/// What the failover tests ask of a running cluster.
impl TestCluster {
    /// The member holding the leader lease ("" when none does).
    pub fn leader(&self) -> String {
        self.status()["leader"].as_str().unwrap_or_default().to_string()
    }

    /// Every member's PostgreSQL port.
    pub fn member_ports(&self) -> Vec<u16> {
        self.status()["members"].as_array().unwrap().iter().map(|m| m["port"].as_u64().unwrap() as u16).collect()
    }

    /// One running primary and every other member streaming, as `status` shows it (`None` also
    /// while `status` cannot read the store).
    pub fn converged(&self) -> Option<String> {
        let out = self.run(&["status", "--json"]);
        let status: Value = serde_json::from_slice(&out.stdout).ok().filter(|_| out.status.success())?;
        one_primary_others_streaming(&status)
    }

    /// Whether PostgreSQL of `member` runs (its postmaster.pid names a live process, not a
    /// killed one waiting to be reaped).
    pub fn postgres_runs(&self, member: &str) -> bool {
        postmaster_runs(&self.dir.join(format!("members/{member}/data")))
    }

    /// Loses `member`: nothing may restart it (the supervisor goes first), then its agent and
    /// its PostgreSQL die together.
    pub fn lose_member(&self, member: &str) {
        kill9(std::fs::read_to_string(self.dir.join("supervisor.pid")).unwrap().trim().parse().unwrap());
        let agent = pids(self, &format!("agent --member {member}"));
        assert_eq!(agent.len(), 1);
        kill9(agent[0]);
        kill9(postmaster_pid(self, member));
    }
}

/// The running primary's name when `status --json` shows one and every other member streaming.
pub fn one_primary_others_streaming(status: &Value) -> Option<String> {
    let members = status["members"].as_array()?;
    let primaries: Vec<_> = members.iter().filter(|m| m["role"] == "primary" && m["state"] == "running").collect();
    let streaming = members.iter().filter(|m| m["state"] == "streaming").count();
    (primaries.len() == 1 && streaming == members.len() - 1).then(|| primaries[0]["name"].as_str().unwrap().to_string())
}

/// The entry of `name` in `status --json`'s members.
pub fn member<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["members"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap()
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if self.dir.join("pgrepl.toml").exists() {
            let _ = self.command(&["down"], &[]).stdin(Stdio::null()).output();
        }
    }
}

pub fn describe(out: &Output) -> String {
    format!(
        "exit: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub async fn connect(
    port: u16,
    user: &str,
    password: &str,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname(db)
        .connect_timeout(Duration::from_secs(5));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Retries `check` until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(t) = check().await {
            return t;
        }
        assert!(start.elapsed() < limit, "gave up after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pids of processes whose command line mentions this cluster's directory and `needle`.
pub fn pids(c: &TestCluster, needle: &str) -> Vec<i32> {
    let dir = c.dir.to_string_lossy().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let after_name = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or_default();
        let zombie = after_name.starts_with('Z');
        // A child forked but not yet exec'd (the agent starting pg_ctl, say) still shows its
        // parent's command line: it is not another daemon.
        let parent = after_name.split(' ').nth(1).unwrap_or_default();
        let parent_cmdline = std::fs::read(format!("/proc/{parent}/cmdline")).unwrap_or_default();
        let forked = String::from_utf8_lossy(&parent_cmdline).replace('\0', " ") == cmdline;
        if !zombie && !forked && cmdline.contains(&dir) && cmdline.contains(needle) {
            found.push(pid);
        }
    }
    found
}

/// Whether the postmaster named by `data`'s postmaster.pid runs: a live process, not a killed
/// one waiting to be reaped.
pub fn postmaster_runs(data: &Path) -> bool {
    let pid = std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|t| t.lines().next()?.trim().parse::<i32>().ok());
    pid.is_some_and(alive)
}

/// Every live PostgreSQL process of the server in `data` (the postmaster and its children: their
/// working directory is the data directory), as the fencer finds them.
pub fn server_processes(data: &Path) -> Vec<i32> {
    let data = std::fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let cwd = std::fs::read_link(entry.path().join("cwd")).ok();
        if comm.trim() == "postgres" && cwd.as_deref() == Some(data.as_path()) && alive(pid) {
            found.push(pid);
        }
    }
    found
}

/// Whether `pid` is a live process, not a killed one waiting to be reaped.
pub fn alive(pid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().any(|l| l.starts_with("State:") && !l.contains("(zombie)"))
}

/// Sends `sig` to `pid`, which must exist.
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: a signal to a process this test started.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "signal {sig} to {pid}");
}

pub fn kill9(pid: i32) {
    signal(pid, libc::SIGKILL);
}

pub fn postmaster_pid(c: &TestCluster, member: &str) -> i32 {
    let text = std::fs::read_to_string(c.dir.join(format!("members/{member}/data/postmaster.pid"))).unwrap();
    text.lines().next().unwrap().trim().parse().unwrap()
}
