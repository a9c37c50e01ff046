//! The test kit's writer and checker: the writer inserts ids 1, 2, 3, ... one per transaction
//! through a port (the rw endpoint, or the rw endpoints of several routers, moving to the next
//! after any error), reconnecting after any error and retrying the same id until it is
//! acknowledged, and remembers when each id was acknowledged and the highest id it ever sent;
//! the checker proves that every acknowledged id is on a server. A watcher
//! samples every member's port (or any probes) and records the most servers ever writable at once.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the kit's clients reach a server: in plain text, or over TLS, verifying the server's
/// certificate against a CA and the address it was reached at (libpq's `sslmode=verify-full`),
/// as a client beyond loopback must under `require_tls`.
#[derive(Clone)]
pub enum Tls {
    Off,
    VerifyFull(tokio_postgres_rustls::MakeRustlsConnect),
}

impl Tls {
    /// Verifying against the CA certificate `ca_pem` (what `pgrepl ca show` prints).
    pub fn verify_full(ca_pem: &str) -> Tls {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
            roots.add(cert.expect("a PEM certificate")).expect("a CA certificate");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Tls::VerifyFull(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }
}

pub struct Writer {
    log: Arc<Mutex<WriteLog>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// What the writer did so far.
#[derive(Default)]
pub struct WriteLog {
    /// Acknowledged ids, in order, each with when its acknowledgement arrived.
    pub acked: Vec<(i64, Instant)>,
    /// The highest id ever sent (0: none); an id above it was never written by this writer.
    pub sent: i64,
}

impl Writer {
    /// Creates table `acked(id bigint primary key)` through `port` and starts writing.
    pub async fn start(port: u16, password: String) -> Writer {
        Writer::start_at(loopback(port), password).await
    }

    /// As `start`, through `addr`.
    pub async fn start_at(addr: SocketAddr, password: String) -> Writer {
        Writer::start_from(addr, password, 1).await
    }

    /// As `start_at`, writing ids from `first` on (a second writer on the same table).
    pub async fn start_from(addr: SocketAddr, password: String, first: i64) -> Writer {
        Writer::start_through(vec![addr], password, first).await
    }

    /// As `start_from`, through the first of `addrs` that answers, moving on to the next one
    /// after any error (a client given every router's rw endpoint).
    pub async fn start_through(addrs: Vec<SocketAddr>, password: String, first: i64) -> Writer {
        Writer::start_with(addrs, password, first, Tls::Off).await
    }

    /// As `start_through`, connecting as `tls` says.
    pub async fn start_with(addrs: Vec<SocketAddr>, password: String, first: i64, tls: Tls) -> Writer {
        let client = connect_with(addrs[0], &password, &tls).await.unwrap();
        client.batch_execute("CREATE TABLE IF NOT EXISTS acked (id bigint PRIMARY KEY)").await.unwrap();
        let log = Arc::new(Mutex::new(WriteLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(write(addrs, password, first, tls, log.clone(), stop.clone()));
        Writer { log, stop, task }
    }

    pub fn acked(&self) -> usize {
        self.log.lock().unwrap().acked.len()
    }

    /// Runs `f` on what the writer did so far.
    pub fn with_log<T>(&self, f: impl FnOnce(&WriteLog) -> T) -> T {
        f(&self.log.lock().unwrap())
    }

    /// Stops writing; returns every acknowledged id.
    pub async fn stop(self) -> Vec<i64> {
        self.stop_with_log().await.acked.into_iter().map(|(id, _)| id).collect()
    }

    /// Stops writing; returns all it did.
    pub async fn stop_with_log(self) -> WriteLog {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        Arc::try_unwrap(self.log).ok().unwrap().into_inner().unwrap()
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// The admin user at `addr`, as `super::connect` does on loopback.
pub async fn connect_at(addr: SocketAddr, password: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    connect_with(addr, password, &Tls::Off).await
}

/// As `connect_at`, connecting as `tls` says.
pub async fn connect_with(
    addr: SocketAddr,
    password: &str,
    tls: &Tls,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(addr.ip().to_string())
        .port(addr.port())
        .user("postgres")
        .password(password)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(5));
    let client = match tls {
        Tls::Off => {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            client
        }
        Tls::VerifyFull(connector) => {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            let (client, connection) = config.connect(connector.clone()).await?;
            tokio::spawn(connection);
            client
        }
    };
    Ok(client)
}

async fn write(
    addrs: Vec<SocketAddr>,
    password: String,
    first: i64,
    tls: Tls,
    log: Arc<Mutex<WriteLog>>,
    stop: Arc<AtomicBool>,
) {
    let mut next = first;
    let mut client = None;
    let mut at = 0;
    while !stop.load(Ordering::SeqCst) {
        if client.is_none() {
            // A router whose process is stopped takes the TCP connection but never answers.
            let connect = tokio::time::timeout(Duration::from_secs(5), connect_with(addrs[at], &password, &tls)).await;
            client = connect.ok().and_then(Result::ok);
            if client.is_none() {
                at = (at + 1) % addrs.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        let c = client.as_ref().unwrap();
        let id = next;
        {
            let mut log = log.lock().unwrap();
            log.sent = log.sent.max(id);
        }
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
        match tokio::time::timeout(Duration::from_secs(5), c.execute("INSERT INTO acked VALUES ($1)", &params)).await {
            Ok(Ok(_)) => {
                log.lock().unwrap().acked.push((next, Instant::now()));
                next += 1;
            }
            // A retry of an insert that had committed before its answer was lost.
            Ok(Err(e)) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                log.lock().unwrap().acked.push((next, Instant::now()));
                next += 1;
            }
            _ => {
                client = None;
                at = (at + 1) % addrs.len();
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Acknowledged ids missing from the server at `port`.
pub async fn missing(port: u16, password: &str, acked: &[i64]) -> Vec<i64> {
    missing_at(loopback(port), password, acked).await
}

/// Acknowledged ids missing from the server at `addr`.
pub async fn missing_at(addr: SocketAddr, password: &str, acked: &[i64]) -> Vec<i64> {
    missing_with(addr, password, acked, &Tls::Off).await
}

/// As `missing_at`, connecting as `tls` says.
pub async fn missing_with(addr: SocketAddr, password: &str, acked: &[i64], tls: &Tls) -> Vec<i64> {
    let client = connect_with(addr, password, tls).await.unwrap();
    let rows = client.query("SELECT id FROM acked", &[]).await.unwrap();
    let present: std::collections::HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    acked.iter().copied().filter(|id| !present.contains(id)).collect()
}

/// Samples the given ports (or probes) every 50 ms and remembers the most that were writable
/// primaries (answering `pg_is_in_recovery() = false`) in one sample.
pub struct PrimaryWatch {
    most: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl PrimaryWatch {
    pub fn start(ports: Vec<u16>, password: String) -> PrimaryWatch {
        let count = ports.len();
        PrimaryWatch::start_probing(count, move |i| {
            let (port, password) = (ports[i], password.clone());
            async move {
                let c = super::connect(port, "postgres", &password, "postgres").await.ok()?;
                let row = c.query_one("SELECT pg_is_in_recovery()", &[]).await.ok()?;
                Some(!row.get::<_, bool>(0))
            }
        })
    }

    /// Samples servers `0..count` through `probe`, which answers whether server `i` is a
    /// writable primary (`None`: unreachable).
    pub fn start_probing<P, F>(count: usize, probe: P) -> PrimaryWatch
    where
        P: Fn(usize) -> F + Send + 'static,
        F: Future<Output = Option<bool>> + Send,
    {
        let most = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (most.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::SeqCst) {
                let mut writable = 0;
                for i in 0..count {
                    if tokio::time::timeout(Duration::from_millis(500), probe(i)).await.ok().flatten() == Some(true) {
                        writable += 1;
                    }
                }
                m.fetch_max(writable, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        PrimaryWatch { most, stop, task }
    }

    /// Stops watching; returns the most primaries seen writable at once.
    pub async fn stop(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        self.most.load(Ordering::SeqCst)
    }
}

/// Tries one small write straight at every server every 50 ms (each attempt bounded by 500 ms,
/// so a synchronous primary that cannot commit counts as not accepting) and keeps, per
/// server, the wall-clock moments each acknowledged write was sent and acknowledged. Unlike
/// `PrimaryWatch`, which asks whether a server is in recovery, this sees what a client sees:
/// a write accepted.
pub struct WriteProbe {
    acks: Arc<Mutex<Vec<Vec<Ack>>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// One acknowledged probe write: sent and acknowledged, in milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub sent_ms: u64,
    pub acked_ms: u64,
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

impl WriteProbe {
    /// Creates table `probe` through `primary_port` and starts probing `ports`.
    pub async fn start(primary_port: u16, ports: Vec<u16>, password: String) -> WriteProbe {
        let client = connect_at(loopback(primary_port), &password).await.unwrap();
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS probe (port int, at timestamptz DEFAULT clock_timestamp())")
            .await
            .unwrap();
        let acks = Arc::new(Mutex::new(vec![Vec::new(); ports.len()]));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = ports
            .into_iter()
            .enumerate()
            .map(|(i, port)| tokio::spawn(probe(i, port, password.clone(), acks.clone(), stop.clone())))
            .collect();
        WriteProbe { acks, stop, tasks }
    }

    /// Stops probing; returns each server's acknowledged writes, in the order of `ports`.
    pub async fn stop(self) -> Vec<Vec<Ack>> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
        Arc::try_unwrap(self.acks).unwrap().into_inner().unwrap()
    }
}

async fn probe(i: usize, port: u16, password: String, acks: Arc<Mutex<Vec<Vec<Ack>>>>, stop: Arc<AtomicBool>) {
    let bound = Duration::from_millis(500);
    let mut client = None;
    while !stop.load(Ordering::SeqCst) {
        if client.is_none() {
            client = tokio::time::timeout(bound, connect_at(loopback(port), &password)).await.ok().and_then(Result::ok);
        }
        if let Some(c) = &client {
            let sent_ms = unix_ms();
            let port = i32::from(port);
            match tokio::time::timeout(bound, c.execute("INSERT INTO probe (port) VALUES ($1)", &[&port])).await {
                Ok(Ok(_)) => acks.lock().unwrap()[i].push(Ack { sent_ms, acked_ms: unix_ms() }),
                // Refused (a replica is read-only) on a connection that still works.
                Ok(Err(_)) if !c.is_closed() => {}
                _ => client = None,
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
