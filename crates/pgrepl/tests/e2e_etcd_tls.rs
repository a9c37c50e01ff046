//! End-to-end: a cluster on an etcd that lets in only who belongs, over TLS with
//! `--client-cert-auth` and with etcd's user/password authentication on. `pgrepl up` with
//! `store = etcds://...`: its agents and router (separate processes) reach etcd the same way,
//! the password read from the secrets file, never from arguments or the environment; a primary
//! and a streaming replica. And `pgrepl node` without a client certificate fails, saying which
//! settings to give.

mod common;

use common::etcd::{Etcd, EtcdExt};
use common::{pgrepl_bin, TestCluster};
use pgrepl_store::testing::Mode;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PREFIX: &str = "/pgrepl/pgrepl/";

/// A copy of `from` in `dir` with `mode`, owned by the cluster's OS user (`postgres`) when the
/// test runs as root (pgrepl then reads it as that user).
fn copy_for_cluster(from: &Path, dir: &Path, mode: u32) -> PathBuf {
    let to = dir.join(from.file_name().unwrap());
    std::fs::copy(from, &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let id = |flag: &str| {
            let out = Command::new("id").args([flag, "postgres"]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().expect("the postgres OS user")
        };
        std::os::unix::fs::chown(&to, Some(id("-u")), Some(id("-g"))).unwrap();
    }
    to
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_runs_on_an_etcd_with_tls_client_certificates_and_a_password_it_never_shows() {
    let etcd = Etcd::start_in(Mode::TlsClientCertAndPassword).await;
    let c = TestCluster::new();
    let files = c.scratch("etcd-client");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::set_permissions(&files, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ca = copy_for_cluster(&etcd.ca_file(), &files, 0o644);
    let cert = copy_for_cluster(&etcd.client_cert_file(), &files, 0o644);
    let key = copy_for_cluster(&etcd.client_key_file(), &files, 0o600);
    let password_file = files.join("store-password");
    std::fs::write(&password_file, format!("{}\n", etcd.password())).unwrap();
    let store = etcd.store_setting();
    assert!(store.starts_with("etcds://"), "{store}");
    let (ca, cert, key, password_file) =
        (ca.to_str().unwrap(), cert.to_str().unwrap(), key.to_str().unwrap(), password_file.to_str().unwrap());
    let env = [
        ("PGREPL_STORE", store.as_str()),
        ("PGREPL_STORE_TLS_CA", ca),
        ("PGREPL_STORE_TLS_CERT", cert),
        ("PGREPL_STORE_TLS_KEY", key),
        ("PGREPL_STORE_USER", "pgrepl"),
        ("PGREPL_STORE_PASSWORD_FILE", password_file),
    ];

    // A key others may read is refused before anything starts.
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = c.run_env(&["up", "--replicas", "1"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", common::describe(&out));
    assert!(stderr.contains(&format!("store_tls_key: {key} is readable by others (mode 644)")), "{stderr}");
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let _ = std::fs::remove_dir_all(&c.dir);

    let out = c.run_env(&["up", "--replicas", "1"], &env);
    assert!(out.status.success(), "{}", common::describe(&out));
    let keys = etcd.keys(PREFIX).await;
    for wanted in ["initialize", "leader", "spec", "members/node-1", "members/node-2"] {
        assert!(keys.iter().any(|k| k == wanted), "{wanted} is not under {PREFIX} in etcd: {keys:?}");
    }
    // `status` from the directory alone: the password comes from the secrets file.
    let primary = c.converged().unwrap_or_else(|| panic!("no primary with a streaming replica: {:#}", c.status()));
    let status = c.status();
    assert_eq!(status["members"].as_array().unwrap().len(), 2, "{status:#}");
    assert_eq!(common::member(&status, &primary)["role"], "primary", "{status:#}");

    // The store's password: in the 0600 secrets file, nowhere else.
    let password = etcd.password();
    assert_eq!(c.secrets()["store_password"], password);
    let config = std::fs::read_to_string(c.dir.join("pgrepl.toml")).unwrap();
    assert!(config.contains(&format!("store_tls_key = \"{key}\"")), "{config}");
    assert!(!config.contains(password), "the store password is in pgrepl.toml");
    let mut logs = std::fs::read_to_string(c.dir.join("supervisor.log")).unwrap();
    logs += &std::fs::read_to_string(c.dir.join("router.log")).unwrap_or_default();
    for n in 1..=2 {
        logs += &std::fs::read_to_string(c.dir.join(format!("members/node-{n}/member.log"))).unwrap();
    }
    assert!(!logs.contains(password), "the store password is in a log");
    let dir = c.dir.to_str().unwrap();
    let mut agents = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = String::from_utf8_lossy(&std::fs::read(entry.path().join("cmdline")).unwrap_or_default())
            .replace('\0', " ");
        assert!(!cmdline.contains(password), "the store password is in the arguments of {cmdline}");
        if cmdline.contains(dir) && (cmdline.contains(" agent ") || cmdline.ends_with(" router ")) {
            agents += 1;
            let environ =
                String::from_utf8_lossy(&std::fs::read(entry.path().join("environ")).unwrap_or_default()).to_string();
            assert!(!environ.contains("PGREPL_STORE_PASSWORD"), "{cmdline} got the password's variable");
        }
    }
    assert!(agents >= 2, "the agents' command lines should have been read ({agents} found under {dir})");

    // A wrong password: `status` fails at once, in one line naming the settings to check.
    let secrets_path = c.dir.join("secrets.json");
    let kept = std::fs::read_to_string(&secrets_path).unwrap();
    std::fs::write(&secrets_path, kept.replace(password, "not-the-password")).unwrap();
    let out = c.run(&["status"]);
    std::fs::write(&secrets_path, &kept).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", common::describe(&out));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("etcd refused user \"pgrepl\" with this password: check store_user and store_password"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-password") && !stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_client_certificate_fails_and_says_which_settings_to_give() {
    let etcd = Etcd::start_in(Mode::TlsClientCert).await;
    let c = TestCluster::new();
    let files = c.scratch("etcd-client");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::set_permissions(&files, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ca = copy_for_cluster(&etcd.ca_file(), &files, 0o644);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = Instant::now();
    let out = Command::new(pgrepl_bin())
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .arg("--dir")
        .arg(&c.dir)
        .args(["node", "--member", "node-1", "--pg-port", &port.to_string()])
        .envs([
            ("PGREPL_STORE", etcd.store_setting().as_str()),
            ("PGREPL_STORE_TLS_CA", ca.to_str().unwrap()),
            ("PGREPL_ADMIN_PASSWORD", "admin-of-a-refused-node"),
            ("PGREPL_REPLICATION_PASSWORD", "replication-of-a-refused-node"),
            ("PGREPL_API_PORT", "0"),
            // PostgreSQL's own TLS (which `pgrepl node` is given a CA for) is not this test's
            // subject: the store's is.
            ("PGREPL_TLS", "off"),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", common::describe(&out));
    assert!(!stderr.contains("panicked"), "{stderr}");
    let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or_default();
    assert!(last.contains("register node-1 in the store etcds://"), "{stderr}");
    assert!(last.contains("set store_tls_cert and store_tls_key"), "{stderr}");
    // etcd's alert arrives within a few tries; a connection only closed is retried (it might be
    // an etcd restarting) for at most the registration's patience.
    assert!(started.elapsed() < Duration::from_secs(75), "took {:?}", started.elapsed());
    eprintln!("refused after {:?}: {last}", started.elapsed());
}
