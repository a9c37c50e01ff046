//! End-to-end: what `up` and `down` leave on disk, and `pgrepl url`. A first `up` that fails
//! (a port taken, etcd not answering) leaves no directory behind, and one that was there as it
//! was; an existing cluster's failed `up` changes none of its files; `down --destroy` removes
//! DIR itself; `pgrepl url` prints a connection string that logs in (read-write, and with
//! `--ro` on a replica), which `up` tells how to get without printing the password.

mod common;

use common::{describe, free_ports, TestCluster};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn failed(out: &Output, expected: &str) {
    assert!(!out.status.success(), "expected a failure:\n{}", describe(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(expected), "{expected:?} missing from:\n{}", describe(out));
}

/// Every path under `dir` with its file's bytes (none for a directory), its mode and owner.
fn snapshot(dir: &Path) -> BTreeMap<String, (Option<Vec<u8>>, u32, u32)> {
    let mut all = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let bytes = meta.is_file().then(|| std::fs::read(&path).unwrap());
        if meta.is_dir() {
            todo.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
        all.insert(path.strip_prefix(dir).unwrap().display().to_string(), (bytes, meta.mode(), meta.uid()));
    }
    all
}

/// psql with the connection string `pgrepl url` printed, and nothing else to log in with.
fn psql(url: &str, sql: &str) -> Output {
    Command::new("psql")
        .env_remove("PGPASSWORD")
        .env("PGPASSFILE", "/dev/null")
        .env("PGCONNECT_TIMEOUT", "5")
        .args(["-X", "-w", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .stdin(Stdio::null())
        .output()
        .expect("run psql")
}

#[test]
fn a_failed_first_up_leaves_no_directory_and_one_that_was_there_as_it_was() {
    let c = TestCluster::new();
    // A member's port taken: found after the directory got its files and its store.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    failed(&c.run(&["up", "--base-port", &port]), &format!("port {port} of node-1"));
    assert!(!c.dir.exists(), "the failed up left {}: {:?}", c.dir.display(), snapshot(&c.dir).keys());

    // etcd not answering: found once the directory is made.
    let [nobody] = free_ports();
    let store = format!("etcd://127.0.0.1:{nobody}");
    failed(&c.run_env(&["up"], &[("PGREPL_STORE", &store)]), "read the store");
    assert!(!c.dir.exists(), "the failed up left {}: {:?}", c.dir.display(), snapshot(&c.dir).keys());

    // An empty directory that was there stays, as it was (root's, mode 0755), and empty.
    std::fs::create_dir(&c.dir).unwrap();
    std::fs::set_permissions(&c.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let before = snapshot(&c.dir);
    failed(&c.run(&["up", "--base-port", &port]), &format!("port {port} of node-1"));
    assert_eq!(snapshot(&c.dir), before, "the directory that was there changed");
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_logs_in_a_failed_up_keeps_a_cluster_and_down_destroy_removes_dir() {
    let c = TestCluster::new();
    let out = c.ok(&["up", "--replicas", "1"]);
    let password = c.secret("user");
    assert!(!out.contains(&password), "up printed the password:\n{out}");
    let hint = format!("psql \"$(pgrepl --dir {} url)\"", c.dir.display());
    assert!(out.contains(&hint), "{hint:?} missing from:\n{out}");

    // The strings log in as the application user, with the password in them, over TLS.
    let url = c.run(&["url"]);
    assert!(url.status.success() && url.stderr.is_empty(), "{}", describe(&url));
    let url = String::from_utf8(url.stdout).unwrap().trim().to_string();
    assert!(url.starts_with(&format!("postgresql://app:{password}@127.0.0.1:{}/app?sslmode=verify-full", c.rw_port)));
    let sql = "SELECT current_user, pg_is_in_recovery(), ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let rw = psql(&url, sql);
    assert!(rw.status.success(), "psql \"$(pgrepl url)\":\n{}", describe(&rw));
    assert_eq!(String::from_utf8_lossy(&rw.stdout).trim(), "app|f|t");
    let ro_url = c.ok(&["url", "--ro"]).trim().to_string();
    assert!(ro_url.contains(&format!("@127.0.0.1:{}/", c.ro_port)), "{ro_url}");
    let ro = psql(&ro_url, sql);
    assert!(ro.status.success(), "psql \"$(pgrepl url --ro)\":\n{}", describe(&ro));
    assert_eq!(String::from_utf8_lossy(&ro.stdout).trim(), "app|t|t", "--ro reaches a replica");
    // Without the password, the same string does not log in: the test above can fail.
    let without = psql(&url.replacen(&format!(":{password}@"), "@", 1), "SELECT 1");
    assert!(!without.status.success(), "logged in without a password:\n{}", describe(&without));

    // An existing cluster whose up fails (its read-write port taken meanwhile) keeps every file.
    c.ok(&["down"]);
    let before = snapshot(&c.dir);
    let taken = TcpListener::bind(("127.0.0.1", c.rw_port)).unwrap();
    failed(&c.run(&["up"]), &c.rw_port.to_string());
    assert_eq!(snapshot(&c.dir), before, "the failed up changed the cluster's files");
    drop(taken);

    // down --destroy removes DIR itself (its parent belongs to root, the cluster to postgres).
    let destroyed = c.ok(&["down", "--destroy"]);
    assert!(destroyed.contains("destroyed"), "{destroyed}");
    assert!(!c.dir.exists(), "down --destroy left {}: {:?}", c.dir.display(), snapshot(&c.dir).keys());
}
