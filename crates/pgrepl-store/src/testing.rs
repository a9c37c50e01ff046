//! Test support: a throwaway single-member etcd (Debian's `etcd-server`, which
//! scripts/setup.sh installs), started in a temporary directory on free loopback ports, killed
//! when dropped (or when the thread that started it dies), and able to die and come back on the
//! same data directory and ports. Used by this crate's etcd tests and pgrepl's end-to-end tests;
//! a missing binary fails the test with a message naming the set-up script, never skips it.
//!
//! [`Mode`] chooses how it is reached: plain gRPC, TLS with client-certificate authentication
//! (a CA, etcd's server certificate and a client certificate made with `pgrepl-tls`, as files in
//! its directory, the keys mode 0600), or etcd's user/password authentication (a user `pgrepl`
//! with readwrite on `/pgrepl/`, set up through the etcd API, so no password is in any
//! process's arguments).

use crate::{EtcdAccess, EtcdStore, EtcdTls, EtcdUser, Store};
use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long a fresh etcd may take to answer.
const STARTUP: Duration = Duration::from_secs(20);

/// How a test etcd is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Plain gRPC, no authentication.
    Plain,
    /// TLS (`--cert-file`, `--key-file`), and `--client-cert-auth`: a client without a
    /// certificate signed by the test CA is refused.
    TlsClientCert,
    /// Plain gRPC with etcd's authentication on: user [`USER`] (password [`Etcd::password`]),
    /// whose role may read and write under `/pgrepl/`, and `root`.
    Password,
    /// Both: TLS with client-certificate authentication, and a user and password.
    TlsClientCertAndPassword,
}

impl Mode {
    pub fn tls(self) -> bool {
        matches!(self, Mode::TlsClientCert | Mode::TlsClientCertAndPassword)
    }

    pub fn password(self) -> bool {
        matches!(self, Mode::Password | Mode::TlsClientCertAndPassword)
    }
}

/// The etcd user of the password modes.
pub const USER: &str = "pgrepl";

pub struct Etcd {
    binary: PathBuf,
    dir: TempDir,
    pub client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    pub mode: Mode,
    /// The password of [`USER`] (and `root`) in the password modes.
    password: String,
    /// Whether its authentication is on (from the first start's end on, in password mode).
    auth_on: bool,
}

impl Etcd {
    /// Starts a plain etcd on free ports and waits until it answers.
    pub async fn start() -> Etcd {
        Etcd::start_in(Mode::Plain).await
    }

    /// Starts etcd in `mode` on free ports and waits until it answers (and, in
    /// the password modes, until its authentication is on).
    pub async fn start_in(mode: Mode) -> Etcd {
        let binary = etcd_binary();
        let dir = tempfile::tempdir().expect("create temporary directory");
        // Hold both listeners until both ports are known, so they differ.
        let client = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let peer = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let client_port = client.local_addr().expect("local address").port();
        let peer_port = peer.local_addr().expect("local address").port();
        drop((client, peer));
        let password = format!("pw-{:x}", std::process::id() as u64 * 7919 + u64::from(client_port));
        let mut etcd = Etcd { binary, dir, client_port, peer_port, child: None, mode, password, auth_on: false };
        if mode.tls() {
            etcd.make_certificates();
        }
        etcd.restart().await;
        if mode.password() {
            etcd.enable_auth().await;
        }
        etcd
    }

    /// Its client URL (`http://127.0.0.1:PORT`, or `https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.mode.tls() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// Its client address, `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The password of [`USER`] in the password modes.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The CA that signed etcd's and the client's certificates (TLS mode), in PEM.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A client certificate etcd accepts (TLS mode).
    pub fn client_cert_file(&self) -> PathBuf {
        self.dir.path().join("client.pem")
    }

    /// Its key (mode 0600).
    pub fn client_key_file(&self) -> PathBuf {
        self.dir.path().join("client.key")
    }

    /// Everything a client needs to get in: the CA and the client certificate in TLS mode, the
    /// user in password mode.
    pub fn access(&self) -> EtcdAccess {
        let read = |path: PathBuf| fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        EtcdAccess {
            tls: self.mode.tls().then(|| EtcdTls {
                ca_pem: read(self.ca_file()),
                identity: Some((read(self.client_cert_file()), read(self.client_key_file()))),
            }),
            user: self.mode.password().then(|| EtcdUser { name: USER.to_owned(), password: self.password.clone() }),
            ..EtcdAccess::default()
        }
    }

    /// A store client under `prefix` with [`Etcd::access`].
    pub async fn connect(&self, prefix: &str, timeout: Duration) -> EtcdStore {
        EtcdStore::connect_with(&[self.endpoint()], prefix, timeout, self.access()).await.expect("connect to etcd")
    }

    /// A CA, etcd's server certificate (for 127.0.0.1 and localhost) and a client certificate,
    /// as files; keys mode 0600.
    fn make_certificates(&self) {
        use std::os::unix::fs::OpenOptionsExt;
        let now = std::time::SystemTime::now();
        let lasts = Duration::from_secs(24 * 3600);
        let ca = pgrepl_tls::Ca::generate("etcd-test", now).expect("generate a CA");
        let names = ["127.0.0.1".to_owned(), "localhost".to_owned()];
        let server = ca.issue("etcd", &names, now, lasts).expect("issue etcd's certificate");
        let client = ca.issue("pgrepl", &[], now, lasts).expect("issue a client certificate");
        let write = |name: &str, text: &str, mode: u32| {
            let path = self.dir.path().join(name);
            let mut file = File::options().create_new(true).write(true).mode(mode).open(&path).expect("create a file");
            std::io::Write::write_all(&mut file, text.as_bytes()).expect("write a file");
        };
        write("ca.pem", &ca.cert_pem, 0o644);
        write("server.pem", &server.cert_pem, 0o644);
        write("server.key", &server.key_pem, 0o600);
        write("client.pem", &client.cert_pem, 0o644);
        write("client.key", &client.key_pem, 0o600);
    }

    /// Adds `root` and [`USER`] (its role `pgrepl`: readwrite on `/pgrepl/`) with the password,
    /// and turns authentication on.
    async fn enable_auth(&mut self) {
        use etcd_client::{Certificate, Client, ConnectOptions, Identity, Permission, TlsOptions};
        let mut options = ConnectOptions::new();
        if let Some(tls) = self.access().tls {
            let mut tls_options = TlsOptions::new().ca_certificate(Certificate::from_pem(tls.ca_pem));
            if let Some((cert, key)) = tls.identity {
                tls_options = tls_options.identity(Identity::from_pem(cert, key));
            }
            options = options.with_tls(tls_options);
        }
        let mut client = Client::connect([self.endpoint()], Some(options)).await.expect("connect to etcd");
        client.role_add("root").await.expect("add role root");
        client.user_add("root", self.password.as_str(), None).await.expect("add user root");
        client.user_grant_role("root", "root").await.expect("grant root");
        client.role_add(USER).await.expect("add role pgrepl");
        client
            .role_grant_permission(USER, Permission::read_write("/pgrepl/").with_prefix())
            .await
            .expect("grant readwrite on /pgrepl/");
        client.user_add(USER, self.password.as_str(), None).await.expect("add user pgrepl");
        client.user_grant_role(USER, USER).await.expect("grant role pgrepl");
        client.auth_enable().await.expect("enable authentication");
        self.auth_on = true;
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// Starts etcd (again) on the same data directory and ports, and waits until it answers.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        let client_url = self.endpoint();
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let dir = self.dir.path();
        let log = File::options().create(true).append(true).open(self.log_path()).expect("open etcd.log");
        let mut command = Command::new(&self.binary);
        command
            .args(["--name", "pgrepl-test", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("pgrepl-test={peer_url}"), "--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"]);
        if self.mode.tls() {
            command
                .arg("--cert-file")
                .arg(dir.join("server.pem"))
                .arg("--key-file")
                .arg(dir.join("server.key"))
                .arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(dir.join("ca.pem"));
        }
        command.stdin(Stdio::null()).stdout(log.try_clone().expect("clone etcd.log")).stderr(log);
        // etcd reads ETCD_* variables as flags: keep the environment's out.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(name);
            }
        }
        kill_with_parent(&mut command);
        self.child = Some(command.spawn().unwrap_or_else(|e| panic!("start {}: {e}", self.binary.display())));
        // Before authentication is on, and after it (a restart), the user gets in.
        let mut access = self.access();
        if !self.auth_on {
            access.user = None;
        }
        let probe = EtcdStore::connect_with(&[self.endpoint()], "/pgrepl/", Duration::from_secs(1), access)
            .await
            .expect("connect to etcd");
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
