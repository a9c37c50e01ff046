//! The image test kit: real containers of the `pgrepl` image (built by `make image`) on a
//! private Docker network made for each test, driven with the `docker` command as a user
//! would. Dropping a `Net` removes its containers, volumes and network, so a failing test
//! leaves nothing behind. Passwords reach `docker run` through its environment (`-e NAME`),
//! never its arguments.
#![allow(dead_code)]

pub mod compose;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The image under test; `PGREPL_TEST_IMAGE` picks another tag.
pub fn image() -> String {
    std::env::var("PGREPL_TEST_IMAGE").unwrap_or_else(|_| "pgrepl:latest".into())
}

pub fn docker(args: &[&str]) -> Output {
    docker_env(args, &BTreeMap::new())
}

/// Runs `docker ARGS` with `env` in its environment (for `-e NAME` without a value).
pub fn docker_env(args: &[&str], env: &BTreeMap<String, String>) -> Output {
    Command::new("docker").args(args).envs(env).output().expect("run docker")
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "docker failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `f` every 250 ms until it returns `Some`, or panics with `what` after `limit`.
pub fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A private network and everything a test made on it.
pub struct Net {
    pub name: String,
    containers: Vec<String>,
    volumes: Vec<String>,
}

/// One container to start: name, network aliases, environment, volume, arguments.
#[derive(Clone, Default)]
pub struct Spec {
    pub name: String,
    pub aliases: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// `(volume name, mount path)`; the volume is removed with the network.
    pub volume: Option<(String, String)>,
    pub args: Vec<String>,
    pub user: Option<String>,
    /// Publish 5432 on a free host port (`docker port` tells which).
    pub publish: bool,
    /// Another program of the image to run (`--entrypoint`), e.g. `etcd`.
    pub entrypoint: Option<String>,
    /// More `docker run` options, as given (`--cap-drop`, `ALL`, ...).
    pub flags: Vec<String>,
}

impl Spec {
    pub fn new(name: &str) -> Spec {
        Spec { name: name.into(), ..Spec::default() }
    }
    pub fn env(mut self, k: &str, v: &str) -> Spec {
        self.env.insert(k.into(), v.into());
        self
    }
    pub fn alias(mut self, a: &str) -> Spec {
        self.aliases.push(a.into());
        self
    }
    pub fn arg(mut self, a: &str) -> Spec {
        self.args.push(a.into());
        self
    }
    pub fn volume(mut self, name: &str, path: &str) -> Spec {
        self.volume = Some((name.into(), path.into()));
        self
    }
    pub fn user(mut self, u: &str) -> Spec {
        self.user = Some(u.into());
        self
    }
    pub fn publish(mut self) -> Spec {
        self.publish = true;
        self
    }
    pub fn flags(mut self, flags: &[&str]) -> Spec {
        self.flags.extend(flags.iter().map(|f| f.to_string()));
        self
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Net {
    pub fn new(test: &str) -> Net {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let name = format!("pgrepl-t{}-{n}-{test}", std::process::id());
        ok(&docker(&["network", "create", &name]));
        Net { name, containers: Vec::new(), volumes: Vec::new() }
    }

    /// A container or volume name unique to this network.
    pub fn scoped(&self, short: &str) -> String {
        format!("{}-{short}", self.name)
    }

    /// Starts a container detached; returns its full name.
    pub fn run(&mut self, spec: &Spec) -> String {
        let out = self.start(spec);
        ok(&out);
        self.scoped(&spec.name)
    }

    /// `docker run -d` of `spec`, whatever its outcome.
    pub fn start(&mut self, spec: &Spec) -> Output {
        let name = self.scoped(&spec.name);
        let _ = docker(&["rm", "-f", &name]);
        let mut args: Vec<String> = ["run", "-d", "--name", &name, "--network", &self.name, "--hostname", &spec.name]
            .map(String::from)
            .to_vec();
        for a in &spec.aliases {
            args.extend(["--network-alias".into(), a.clone()]);
        }
        for k in spec.env.keys() {
            args.extend(["-e".into(), k.clone()]);
        }
        if let Some((volume, path)) = &spec.volume {
            let volume = self.scoped(volume);
            if !self.volumes.contains(&volume) {
                self.volumes.push(volume.clone());
            }
            args.extend(["-v".into(), format!("{volume}:{path}")]);
        }
        if let Some(u) = &spec.user {
            args.extend(["--user".into(), u.clone()]);
        }
        if spec.publish {
            args.extend(["-p".into(), "5432".into()]);
        }
        if let Some(e) = &spec.entrypoint {
            args.extend(["--entrypoint".into(), e.clone()]);
        }
        args.extend(spec.flags.iter().cloned());
        args.push(image());
        args.extend(spec.args.iter().cloned());
        if !self.containers.contains(&name) {
            self.containers.push(name.clone());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        docker_env(&refs, &spec.env)
    }

    /// `docker run` in the foreground (for a container expected to exit): status and output.
    pub fn run_to_exit(&mut self, spec: &Spec, limit: Duration) -> (i32, String) {
        let name = self.run(spec);
        let start = Instant::now();
        loop {
            let out = docker(&["inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", &name]);
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if let Some(("false", code)) = text.split_once(' ') {
                return (code.parse::<i32>().unwrap_or(-1), logs(&name));
            }
            assert!(start.elapsed() < limit, "{name} did not exit within {limit:?}; its log:\n{}", logs(&name));
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", "-v", c]);
        }
        for v in &self.volumes {
            let _ = docker(&["volume", "rm", "-f", v]);
        }
        let _ = docker(&["network", "rm", &self.name]);
    }
}

pub fn logs(container: &str) -> String {
    let out = docker(&["logs", container]);
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `docker exec CONTAINER bash -c SCRIPT` with extra environment; stdout, or the failure.
pub fn exec(container: &str, script: &str, env: &[(&str, &str)]) -> Result<String, String> {
    let mut args = vec!["exec".to_string()];
    let mut vars = BTreeMap::new();
    for (k, v) in env {
        args.extend(["-e".into(), k.to_string()]);
        vars.insert(k.to_string(), v.to_string());
    }
    args.extend([container.to_string(), "bash".into(), "-c".into(), script.to_string()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = docker_env(&refs, &vars);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

/// `psql -At` inside `container` over its socket as the admin (the seeds' own way).
pub fn psql(container: &str, db: &str, sql: &str) -> Result<String, String> {
    exec(container, &format!("psql -X -At -v ON_ERROR_STOP=1 -d {db} -c \"{sql}\""), &[]).map(|s| s.trim().to_string())
}

/// `psql -At` from the host (the test's machine) at `127.0.0.1:port`: the query's output, or
/// psql's error.
pub fn psql_from_host(port: u16, user: &str, password: &str, db: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args(["-X", "-At", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", user, "-d", db, "-c", sql])
        .env("PGPASSWORD", password)
        .output()
        .expect("run psql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The seed's replication check: one `state` per row of `pg_stat_replication`.
pub fn replication_states(container: &str) -> Vec<String> {
    exec(container, "psql -X -At -c \"select client_addr, state from pg_stat_replication;\"", &[])
        .map(|s| s.lines().map(|l| l.split('|').nth(1).unwrap_or("").to_string()).collect())
        .unwrap_or_default()
}

/// Waits until `container` shows `n` streaming rows.
pub fn wait_streaming(container: &str, n: usize, limit: Duration) {
    eventually(&format!("{n} streaming replicas on {container}"), limit, || {
        let states = replication_states(container);
        (states.iter().filter(|s| *s == "streaming").count() == n).then_some(())
    });
}

/// Waits until `container`'s readiness probe passes (a replica: running, nothing left to do).
/// A primary's `streaming` rows alone do not tell: a replica's clone streams WAL too.
pub fn wait_ready(container: &str, limit: Duration) {
    eventually(&format!("{container} to be ready"), limit, || {
        docker(&["exec", container, "/usr/libexec/check-container"]).status.success().then_some(())
    });
}

/// The container's address on `net`.
pub fn address(container: &str, net: &str) -> String {
    let format = format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}");
    ok(&docker(&["inspect", "-f", &format, container])).trim().to_string()
}

/// The host port 5432 of `container` is published on.
pub fn published_port(container: &str) -> u16 {
    let text = ok(&docker(&["port", container, "5432/tcp"]));
    text.lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.trim().parse().ok())
        .expect("a published port")
}

/// The gateway of `net`: the host as containers on it reach it.
pub fn gateway(net: &str) -> String {
    ok(&docker(&["network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", net])).trim().to_string()
}

/// Skips nothing: the image tests need the image, so its absence is a failure that says how
/// to build it.
pub fn require_image() {
    let out = docker(&["image", "inspect", &image()]);
    assert!(out.status.success(), "image {} not found: build it with `make image` (make test-image does)", image());
}
