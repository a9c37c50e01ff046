//! Bring your own certificates (`tls.cert_file`, `tls.key_file`, `tls.ca_file`): `up` refuses an
//! expired certificate, naming the file, before it makes anything; given good files, PostgreSQL
//! serves that certificate (read back with `openssl s_client -starttls postgres`, and verified
//! by `psql` with `sslmode=verify-full` against the given CA); files replaced on disk are served
//! within seconds without a restart (same postmaster); one expiring in 10 days is served and
//! warned of in `status` and shown in `/metrics`; an expired replacement is refused with a
//! warning, the one before still served, and the member still restarts with it.

mod common;

use common::{describe, eventually, http, member, postmaster_pid, TestCluster};
use pgrepl_tls::{Ca, MEMBER_VALIDITY};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// The user's files, as a mounted Secret holds them.
struct Given {
    dir: PathBuf,
}

impl Given {
    fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }
    fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }
    fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PGREPL_TLS_CERT_FILE", self.cert().display().to_string()),
            ("PGREPL_TLS_KEY_FILE", self.key().display().to_string()),
            ("PGREPL_TLS_CA_FILE", self.ca().display().to_string()),
        ]
    }

    /// Replaces the three files (each by rename, as a Secret's update lands) with a certificate
    /// of `ca` for 127.0.0.1 valid from `from` for `lasts`; returns its PEM.
    fn write(&self, ca: &Ca, from: SystemTime, lasts: Duration) -> String {
        let m = ca.issue("db", &["127.0.0.1".to_string(), "localhost".to_string()], from, lasts).unwrap();
        for (path, text) in [(self.ca(), &ca.cert_pem), (self.key(), &m.key_pem), (self.cert(), &m.cert_pem)] {
            let tmp = path.with_extension("new");
            std::fs::write(&tmp, text).unwrap();
            // Readable by the cluster's OS user (the agent runs as `run_as`), as a Secret's are.
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        }
        m.cert_pem
    }
}

/// The base64 body of the first PEM certificate in `text`, without line breaks.
fn pem_body(text: &str) -> Option<String> {
    let start = text.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = start + text[start..].find("-----END CERTIFICATE-----")?;
    Some(text[start..end].split_whitespace().collect())
}

/// The certificate the server at `port` serves, as PEM body (`openssl s_client -starttls postgres`).
fn served(port: u16) -> Option<String> {
    let out = Command::new("openssl")
        .args(["s_client", "-starttls", "postgres", "-connect", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    pem_body(&String::from_utf8_lossy(&out.stdout))
}

fn verify_full_psql(port: u16, ca: &Path, password: &str) -> std::process::Output {
    Command::new("psql")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5")
        .arg("-XAtc")
        .arg("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .arg(format!(
            "postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=verify-full&sslrootcert={}",
            ca.display()
        ))
        .stdin(Stdio::null())
        .output()
        .expect("run psql")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_certificate_files_are_served_reloaded_on_change_refused_when_expired_and_warned_of() {
    let c = TestCluster::new();
    let now = SystemTime::now();
    let ca = Ca::generate("byo", now).unwrap();
    let given = Given { dir: c.scratch("secret") };
    std::fs::create_dir_all(&given.dir).unwrap();
    std::fs::set_permissions(&given.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let env = given.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let up = ["up", "--replicas", "0"];

    // Expired at `up`: refused before anything is made, naming the file and why.
    given.write(&ca, now - 40 * DAY, 10 * DAY);
    let out = c.run_env(&up, &env);
    assert!(!out.status.success(), "up with an expired certificate: {}", describe(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&given.cert().display().to_string()) && said.contains("expired"), "{said}");
    assert!(!c.dir.join("members").exists(), "nothing made: {said}");

    // Good files: served as given, verified against the given CA.
    let first = given.write(&ca, now, MEMBER_VALIDITY);
    let out = c.run_env(&up, &env);
    assert!(out.status.success(), "up: {}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("sslrootcert={}", given.ca().display())));
    let port = c.port_of("node-1");
    assert_eq!(served(port), pem_body(&first), "the given certificate is served");
    let psql = verify_full_psql(port, &given.ca(), &c.secret("admin"));
    assert!(psql.status.success(), "verify-full: {}", describe(&psql));
    assert_eq!(String::from_utf8_lossy(&psql.stdout).trim(), "t");
    let status = c.status();
    let published = member(&status, "node-1")["tls_not_after_unix"].as_u64().expect("tls_not_after_unix");
    assert_eq!(published, pgrepl_tls::read_cert(&first).unwrap().not_after_unix());
    assert!(member(&status, "node-1")["warning"].is_null(), "{status}");
    let pid = postmaster_pid(&c, "node-1");

    // Replaced on disk, expiring in 10 days: served without a restart, and warned of.
    let soon = given.write(&ca, now, 10 * DAY);
    eventually(Duration::from_secs(15), "the new certificate to be served", || async {
        (served(port) == pem_body(&soon)).then_some(())
    })
    .await;
    assert_eq!(postmaster_pid(&c, "node-1"), pid, "reloaded, not restarted");
    let not_after = pgrepl_tls::read_cert(&soon).unwrap().not_after_unix();
    let status = eventually(Duration::from_secs(10), "status to warn of the certificate's end", || async {
        let status = c.status();
        member(&status, "node-1")["warning"].as_str().is_some_and(|w| w.contains("expires in")).then_some(status)
    })
    .await;
    let m = member(&status, "node-1");
    assert_eq!(m["tls_not_after_unix"].as_u64(), Some(not_after), "{m}");
    assert!(m["warning"].as_str().unwrap().contains("days"), "{m}");
    let text = c.ok(&["status"]);
    assert!(text.contains("WARNING node-1: this member's certificate expires in"), "{text}");
    let metrics = http::get(m["api"].as_str().unwrap(), "/metrics").body;
    let gauge =
        format!("pgrepl_tls_certificate_expiry_timestamp_seconds{{cluster=\"pgrepl\",member=\"node-1\"}} {not_after}");
    assert!(metrics.lines().any(|l| l == gauge), "no {gauge} in:\n{metrics}");
    let log = c.dir.join("members/node-1/member.log");
    eventually(Duration::from_secs(5), "the agent to log the warning", || async {
        std::fs::read_to_string(&log).unwrap_or_default().contains("this member's certificate expires in").then_some(())
    })
    .await;

    // An expired replacement: refused with a warning, the one before still served.
    given.write(&ca, now - 40 * DAY, 10 * DAY);
    eventually(Duration::from_secs(15), "the agent to refuse the expired certificate", || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().any(|l| l.contains("refused the given certificate files") && l.contains("expired")).then_some(())
    })
    .await;
    assert_eq!(served(port), pem_body(&soon), "the installed certificate stays");
    assert_eq!(postmaster_pid(&c, "node-1"), pid);

    // The member still restarts, with the installed set.
    c.ok(&["stop", "node-1"]);
    c.ok(&["start", "node-1"]);
    let port = c.port_of("node-1");
    assert_ne!(postmaster_pid(&c, "node-1"), pid, "restarted");
    assert_eq!(served(port), pem_body(&soon));
}
