//! TLS across hosts (network namespaces on a bridge, etcd, `pgrepl node --router` on each):
//! with TLS on and `require_tls`, the replication traffic between two hosts, captured with
//! `tcpdump` on the bridge while a row with a marker is written, does not hold the marker; a
//! plain-TCP login from an allowed range is refused; `psql` verifying against `pgrepl ca show`'s
//! CA (`sslmode=verify-full`) connects to a member directly and through both endpoints; a
//! replica given another CA does not stream, and its status says why. With `tls.mode = off` the
//! same capture holds the marker, so the capture can fail.

mod common;

use common::three_hosts::{make_ca, member, Cluster, ADMIN_PASSWORD, HOSTS, PG_PORT, RO_PORT, RW_PORT};
use common::{eventually, one_primary_others_streaming};
use serde_json::Value;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `psql` with a connection string (never a password in argv: it is in `PGPASSWORD`).
fn psql(url: &str, sql: &str) -> Output {
    Command::new("psql")
        .env_clear()
        .env("PATH", common::three_hosts::PATH)
        .env("PGPASSWORD", ADMIN_PASSWORD)
        .env("PGCONNECT_TIMEOUT", "5")
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .stdin(Stdio::null())
        .output()
        .expect("run psql")
}

fn psql_ok(url: &str, sql: &str) -> String {
    let out = psql(url, sql);
    assert!(out.status.success(), "psql {url} -c {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn verify_full(addr: IpAddr, port: u16, ca: &Path) -> String {
    format!("postgresql://postgres@{addr}:{port}/postgres?sslmode=verify-full&sslrootcert={}", ca.display())
}

/// `tcpdump` writing every packet between hosts `a` and `b` on PostgreSQL's port to a file,
/// captured on host `b`'s veth.
struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    fn start(c: &Cluster, a: usize, b: usize, file: PathBuf) -> Capture {
        let filter = format!("tcp port {PG_PORT} and host {} and host {}", c.hosts.addr(a), c.hosts.addr(b));
        let child = Command::new("tcpdump")
            // Immediate mode: packets reach tcpdump as they come, not in blocks that a stop
            // would lose.
            .args(["-i", c.hosts.veth(b), "--immediate-mode", "-U", "-s", "0", "-w"])
            .arg(&file)
            .arg(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run tcpdump (scripts/setup.sh installs it)");
        // tcpdump says "listening on" once it captures; give it that moment.
        std::thread::sleep(Duration::from_millis(1500));
        Capture { child, file }
    }

    /// Stops the capture and returns what it holds.
    fn stop(self) -> Vec<u8> {
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: SIGINT to our own child, which then flushes and exits.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let out = self.child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr).to_string();
        let bytes = std::fs::read(&self.file).unwrap_or_default();
        let captured = said.lines().find_map(|l| l.strip_suffix(" packets captured")?.trim().parse::<u64>().ok());
        // At least the row and the replica's answer: a capture that saw no replication proves
        // nothing either way.
        assert!(captured.is_some_and(|n| n >= 2), "tcpdump captured too little: {said}");
        bytes
    }
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The primary's host once `streaming` members stream from it, from host `i`'s status.
async fn streaming_from(c: &Cluster, i: usize, streaming: &[usize]) -> (usize, Value) {
    eventually(Duration::from_secs(120), "the members to stream", || async {
        let status = c.status(i)?;
        let members = status["members"].as_array()?;
        let primary = members.iter().find(|m| m["role"] == "primary" && m["state"] == "running")?;
        let p = common::three_hosts::host_of(primary["name"].as_str()?);
        let all =
            streaming.iter().all(|s| members.iter().any(|m| m["name"] == member(*s) && m["state"] == "streaming"));
        all.then_some((p, status))
    })
    .await
}

/// Writes a row holding `marker` on the primary (through its own host's rw endpoint, so the
/// client's bytes never cross the bridge between the two hosts captured) and waits until the
/// replica on `replica` has it.
fn write_marker_and_wait(rw: &str, replica: &str, marker: &str) {
    psql_ok(rw, "CREATE TABLE IF NOT EXISTS tls_probe (v text)");
    psql_ok(rw, &format!("INSERT INTO tls_probe VALUES ('{marker}')"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = psql(replica, &format!("SELECT count(*) FROM tls_probe WHERE v = '{marker}'"));
        if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "1" {
            return;
        }
        assert!(Instant::now() < deadline, "the replica never had the row: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test]
async fn replication_and_clients_across_hosts_are_encrypted_and_verified_and_a_wrong_ca_is_told() {
    let started = Instant::now();
    let mut c = Cluster::new();
    c.require_tls = true;
    c.start_etcd().await;
    c.configure();
    for i in 0..HOSTS {
        c.start_node(i);
    }
    let (p, _) = streaming_from(&c, 0, &[]).await;
    let others: Vec<usize> = (0..HOSTS).filter(|i| *i != p).collect();
    let (p, _) = streaming_from(&c, 0, &others).await;
    let r = (p + 1) % HOSTS;
    eprintln!("three hosts stream over TLS at {:?} ({} primary)", started.elapsed(), member(p));

    // The CA a client verifies with is what `pgrepl ca show` prints.
    let shown = c.pgrepl(p).args(["ca", "show"]).output().unwrap();
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    let ca_file = c.tmp.path().join("client-ca.crt");
    std::fs::write(&ca_file, &shown.stdout).unwrap();
    assert!(String::from_utf8_lossy(&shown.stdout).starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(!String::from_utf8_lossy(&shown.stdout).contains("PRIVATE"), "ca show prints no key");

    // verify-full directly to a member and through both endpoints (each router on the
    // primary's host: its members' certificates name the endpoints' address).
    let (pa, ra) = (c.hosts.addr(p), c.hosts.addr(r));
    assert_eq!(psql_ok(&verify_full(pa, PG_PORT, &ca_file), "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(psql_ok(&verify_full(ra, PG_PORT, &ca_file), "SELECT pg_is_in_recovery()"), "t");
    assert_eq!(psql_ok(&verify_full(pa, RW_PORT, &ca_file), "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(psql_ok(&verify_full(pa, RO_PORT, &ca_file), "SELECT pg_is_in_recovery()"), "t");
    let ssl = psql_ok(&verify_full(pa, RW_PORT, &ca_file), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
    assert_eq!(ssl, "t");
    // Replication itself runs over TLS: the primary's walsenders' connections are encrypted.
    let senders = psql_ok(
        &verify_full(pa, PG_PORT, &ca_file),
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)",
    );
    assert_eq!(senders, "2|2", "every walsender's connection is TLS");

    // A plain-TCP login from the allowed range is refused under require_tls.
    let plain = psql(&format!("postgresql://postgres@{pa}:{PG_PORT}/postgres?sslmode=disable"), "SELECT 1");
    let said = String::from_utf8_lossy(&plain.stderr);
    assert!(!plain.status.success() && said.contains("no encryption"), "a plain login: {said}");
    // A client verifying against another CA refuses the member.
    let stranger = c.tmp.path().join("stranger");
    make_ca(&stranger, "strangers");
    let refused = psql(&verify_full(pa, PG_PORT, &stranger.join("ca.crt")), "SELECT 1");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains("certificate verify failed"), "{said}");

    // The WAL between primary and replica holds no written byte in clear.
    let marker = format!("tls-marker-{}", rand::random::<u64>());
    let capture = Capture::start(&c, p, r, c.tmp.path().join("tls-on.pcap"));
    write_marker_and_wait(&verify_full(pa, RW_PORT, &ca_file), &verify_full(ra, PG_PORT, &ca_file), &marker);
    let captured = capture.stop();
    assert!(!holds(&captured, &marker), "the marker crossed the bridge in clear with TLS on");
    assert!(!holds(&captured, "tls_probe"), "the table's name crossed in clear");
    eprintln!("replication captured encrypted ({} bytes) at {:?}", captured.len(), started.elapsed());

    // A replica whose host is given another CA: its server gets a certificate from that CA and
    // verifies the primary's against it, which fails; it does not stream, and says why.
    let w = (p + 2) % HOSTS;
    c.lose_member(w);
    c.ca[w] = stranger.clone();
    c.start_node(w);
    let why =
        eventually(Duration::from_secs(60), "the replica given another CA to say why it does not stream", || async {
            let status = c.status(p)?;
            let m = status["members"].as_array()?.iter().find(|m| m["name"] == member(w))?.clone();
            let warning = m["warning"].as_str()?.to_string();
            (m["state"] != "streaming" && warning.contains("certificate verify failed")).then_some(warning)
        })
        .await;
    assert!(why.contains("has not streamed from"), "{why}");
    eprintln!("the replica with another CA says: {why}");
    let status = c.status(p).unwrap();
    assert!(one_primary_others_streaming(&status).is_none(), "it does not stream");
}

#[tokio::test]
async fn with_the_ca_in_the_store_nodes_started_together_share_one_ca_made_by_one_of_them() {
    let mut c = Cluster::new();
    c.ca_in_store = true;
    c.start_etcd().await;
    c.configure();
    for i in 0..HOSTS {
        c.start_node(i);
    }
    let (p, _) = streaming_from(&c, 0, &[]).await;
    let others: Vec<usize> = (0..HOSTS).filter(|i| *i != p).collect();
    // The replicas stream, verifying the primary (verify-full) against the CA they took.
    streaming_from(&c, 0, &others).await;
    let ca: Vec<String> = (0..HOSTS).map(|i| std::fs::read_to_string(c.dir(i).join("ca.crt")).unwrap()).collect();
    assert!(ca.iter().all(|x| *x == ca[0]), "every host has the one CA");
    assert_ne!(ca[0], std::fs::read_to_string(c.ca[0].join("ca.crt")).unwrap(), "not the kit's CA: made by a node");
    for i in 0..HOSTS {
        let mode = std::fs::metadata(c.dir(i).join("ca.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "host {i}'s ca.key");
    }
    let made = (0..HOSTS).filter(|i| c.node_log(*i).contains("put the cluster CA in the store")).count();
    assert_eq!(made, 1, "one node made the CA, the others took it:\n{}", c.logs());
    let key = std::fs::read_to_string(c.dir(0).join("ca.key")).unwrap();
    let body = key.lines().nth(1).unwrap();
    assert!(!c.logs().contains(body), "the CA's key is in no log");
}

#[tokio::test]
async fn with_tls_off_the_same_capture_holds_the_marker() {
    let mut c = Cluster::new();
    c.tls_mode = Some("off");
    c.start_etcd().await;
    c.configure();
    for i in 0..2 {
        c.start_node(i);
    }
    let (p, _) = streaming_from(&c, 0, &[]).await;
    let r = 1 - p;
    let (_, _) = streaming_from(&c, 0, &[r]).await;
    assert!(!c.dir(0).join("ca.crt").exists(), "with TLS off no CA is installed");
    let plain = |addr: IpAddr, port: u16| format!("postgresql://postgres@{addr}:{port}/postgres?sslmode=disable");
    let (pa, ra) = (c.hosts.addr(p), c.hosts.addr(r));
    let marker = format!("tls-marker-{}", rand::random::<u64>());
    let capture = Capture::start(&c, p, r, c.tmp.path().join("tls-off.pcap"));
    write_marker_and_wait(&plain(pa, RW_PORT), &plain(ra, PG_PORT), &marker);
    let captured = capture.stop();
    let summary = Command::new("tcpdump").args(["-nn", "-r"]).arg(c.tmp.path().join("tls-off.pcap")).output().unwrap();
    assert!(
        holds(&captured, &marker),
        "with TLS off the replicated row crosses in clear, so the capture sees it; it holds:\n{}",
        String::from_utf8_lossy(&summary.stdout)
    );
    let ssl = psql_ok(&plain(pa, PG_PORT), "SHOW ssl");
    assert_eq!(ssl, "off");
}
