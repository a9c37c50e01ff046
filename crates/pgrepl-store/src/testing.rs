//! Test support: a throwaway single-member etcd (Debian's `etcd-server`, which
//! scripts/setup.sh installs), started in a temporary directory on free loopback ports, killed
//! when dropped (or when the thread that started it dies), and able to die and come back on the
//! same data directory and ports. Used by this crate's etcd tests and pgrepl's end-to-end tests;
//! a missing binary fails the test with a message naming the set-up script, never skips it.

use crate::{EtcdStore, Store};
use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long a fresh etcd may take to answer.
const STARTUP: Duration = Duration::from_secs(20);

pub struct Etcd {
    binary: PathBuf,
    dir: TempDir,
    pub client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl Etcd {
    /// Starts etcd on free ports and waits until it answers.
    pub async fn start() -> Etcd {
        let binary = etcd_binary();
        let dir = tempfile::tempdir().expect("create temporary directory");
        // Hold both listeners until both ports are known, so they differ.
        let client = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let peer = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let client_port = client.local_addr().expect("local address").port();
        let peer_port = peer.local_addr().expect("local address").port();
        drop((client, peer));
        let mut etcd = Etcd { binary, dir, client_port, peer_port, child: None };
        etcd.restart().await;
        etcd
    }

    /// Its client URL (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// Starts etcd (again) on the same data directory and ports, and waits until it answers.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        let client_url = self.endpoint();
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let log = File::options().create(true).append(true).open(self.log_path()).expect("open etcd.log");
        let mut command = Command::new(&self.binary);
        command
            .args(["--name", "pgrepl-test", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("pgrepl-test={peer_url}"), "--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone etcd.log"))
            .stderr(log);
        // etcd reads ETCD_* variables as flags: keep the environment's out.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(name);
            }
        }
        kill_with_parent(&mut command);
        self.child = Some(command.spawn().unwrap_or_else(|e| panic!("start {}: {e}", self.binary.display())));
        let probe =
            EtcdStore::connect(&[self.endpoint()], "/pgrepl/", Duration::from_secs(1)).await.expect("connect to etcd");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("etcd exited with {status} while starting; its log:\n{}", self.log());
            }
            match probe.snapshot().await {
                Ok(_) => return,
                Err(e) if started.elapsed() > STARTUP => {
                    panic!("etcd did not answer within {STARTUP:?} ({e}); its log:\n{}", self.log())
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Kills etcd (SIGKILL: no goodbye to its clients) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What etcd logged (warnings and worse).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_else(|e| format!("(cannot read etcd.log: {e})"))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `etcd` binary on PATH, else Debian's.
fn etcd_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join("etcd")).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path.into_iter().chain([PathBuf::from("/usr/bin/etcd")]).find(|path| is_executable(path)).unwrap_or_else(|| {
        panic!("etcd not found on PATH nor at /usr/bin/etcd: run scripts/setup.sh (it installs etcd-server)")
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Has the kernel kill etcd if the thread that started it dies without dropping its guard (a
/// test binary killed by a timeout), so no etcd outlives its test.
fn kill_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child's own process attributes.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
