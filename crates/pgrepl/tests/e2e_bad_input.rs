//! Bad input: each case gets one clear message naming the setting, the value and what is
//! allowed, a non-zero exit, and nothing destroyed.

mod common;

use common::{describe, TestCluster};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::Output;

/// Asserts the command failed and its message holds every piece of `expected`.
fn refused(out: &Output, expected: &[&str]) -> String {
    assert!(!out.status.success(), "expected a refusal:\n{}", describe(out));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one message, not a trace: {stderr}");
    for piece in expected {
        assert!(stderr.contains(piece), "{piece:?} missing from: {stderr}");
    }
    stderr
}

#[test]
fn a_partial_user_password_database_triple_is_refused_s1() {
    let c = TestCluster::new();
    let out = c.run_env(&["up"], &[("POSTGRESQL_USER", "user"), ("POSTGRESQL_DATABASE", "db")]);
    refused(&out, &["database.user (POSTGRESQL_USER)", "database.password is not set", "POSTGRESQL_ADMIN_PASSWORD"]);
    assert!(!c.dir.exists(), "nothing should be created on bad input");
}

#[test]
fn a_name_over_63_characters_is_refused_s1() {
    let c = TestCluster::new();
    let long = "d".repeat(64);
    let env = [("POSTGRESQL_USER", "user"), ("POSTGRESQL_PASSWORD", "pw"), ("POSTGRESQL_DATABASE", long.as_str())];
    refused(&c.run_env(&["up"], &env), &["database.name (POSTGRESQL_DATABASE)", &long, "64 bytes long", "at most 63"]);
    let long_user = "u".repeat(70);
    refused(
        &c.run_env(&["up"], &[("POSTGRESQL_MASTER_USER", long_user.as_str())]),
        &["database.replication_user (POSTGRESQL_MASTER_USER)", "70 bytes"],
    );
}

#[test]
fn an_unknown_config_key_is_refused() {
    let c = TestCluster::new();
    let file = c.scratch("pgrepl.toml");
    std::fs::write(&file, "replicaz = 2\n").unwrap();
    refused(&c.run(&["up", "--config", file.to_str().unwrap()]), &["unknown field `replicaz`", "pgrepl.toml"]);
    assert!(!c.dir.exists());
}

#[test]
fn a_config_file_with_passwords_readable_by_others_is_refused() {
    let c = TestCluster::new();
    let file = c.scratch("pgrepl.toml");
    std::fs::write(&file, "[database]\nadmin_password = \"s3cret\"\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let msg = refused(
        &c.run(&["up", "--config", file.to_str().unwrap()]),
        &["holds passwords but is readable by others", "chmod 600"],
    );
    assert!(!msg.contains("s3cret"));
}

#[test]
fn bad_values_name_the_setting_the_value_and_what_is_allowed() {
    let c = TestCluster::new();
    refused(
        &c.run_env(&["up"], &[("ALLOW_IP_RANGE", "10.0.0.0/40")]),
        &["allow (ALLOW_IP_RANGE)", "\"10.0.0.0/40\"", "CIDR"],
    );
    refused(
        &c.run_env(&["up"], &[("DESTROY_DATABASE_ON_RESTART", "sometimes")]),
        &["DESTROY_DATABASE_ON_RESTART", "\"sometimes\"", "true or false"],
    );
    refused(&c.run(&["up", "--replicas", "-1"]), &["replicas", "-1", "0 to 16"]);
    refused(&c.run(&["up", "--port", "70000"]), &["port", "70000", "1 to 65535"]);
    assert!(!c.dir.exists());
}

#[test]
fn a_port_in_use_is_refused() {
    let c = TestCluster::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    refused(&c.run(&["up", "--base-port", &port]), &[&format!("port {port} of node-1"), "not free"]);
}

#[test]
fn missing_postgresql_binaries_say_how_to_install_them() {
    let c = TestCluster::new();
    refused(
        &c.run_env(&["up"], &[("PGREPL_PG_BIN_DIR", "/nonexistent/pg/bin")]),
        &["/nonexistent/pg/bin", "apt-get install postgresql-15"],
    );
    assert!(!c.dir.exists());
}

#[test]
fn a_directory_that_is_not_a_cluster_is_left_alone() {
    let c = TestCluster::new();
    std::fs::create_dir_all(&c.dir).unwrap();
    std::fs::write(c.dir.join("precious.txt"), "keep me").unwrap();
    refused(&c.run(&["up"]), &["is not empty and is not a pgrepl cluster directory", "refusing"]);
    assert_eq!(std::fs::read_to_string(c.dir.join("precious.txt")).unwrap(), "keep me");
    // Commands on a directory in the wrong state: no cluster there.
    for args in [&["status"][..], &["scale", "2"], &["promote", "node-2"], &["down", "--destroy"]] {
        refused(&c.run(args), &["is not a pgrepl cluster directory (no pgrepl.toml)"]);
    }
    assert_eq!(std::fs::read_to_string(c.dir.join("precious.txt")).unwrap(), "keep me");
}

#[test]
fn scale_to_a_negative_count_is_refused() {
    let c = TestCluster::new();
    refused(&c.run(&["scale", "-1"]), &["replicas: -1 is not allowed", "0 to 16"]);
    refused(&c.run(&["scale", "17"]), &["replicas: 17 is not allowed", "0 to 16"]);
}

#[test]
fn an_empty_new_password_is_refused() {
    let c = TestCluster::new();
    refused(&c.run_stdin(&["passwd", "--admin"], "\n"), &["the new admin password read from standard input is empty"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_another_cluster_is_never_used() {
    let a = TestCluster::new();
    let b = TestCluster::new();
    a.ok(&["up"]);
    b.ok(&["up"]);
    a.ok(&["down"]);
    b.ok(&["down"]);
    // Put cluster A's replica data where cluster B's replica lives.
    let b_data = b.dir.join("members/node-2/data");
    std::fs::remove_dir_all(&b_data).unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(a.dir.join("members/node-2/data"))
        .arg(&b_data)
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::write(b_data.join("marker"), "A's data").unwrap();
    let out = b.run(&["up", "--wait", "5"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let status = b.status();
    let node2 = status["members"].as_array().unwrap().iter().find(|m| m["name"] == "node-2").unwrap().clone();
    let decision = node2["decision"].as_str().unwrap();
    assert!(decision.contains("belongs to another cluster") && decision.contains("not touching it"), "{decision}");
    assert_eq!(
        std::fs::read_to_string(b_data.join("marker")).unwrap(),
        "A's data",
        "the foreign data directory was touched"
    );
    assert!(b_data.join("global/pg_control").exists());
}
