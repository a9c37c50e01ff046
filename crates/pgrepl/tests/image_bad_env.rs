//! Bad environments given to the image: each gets one clear line naming the variable, its
//! value and what is allowed, exit code 1, and nothing of an existing data directory touched;
//! an upstream that never answers is waited for, and said so every few seconds. Needs the
//! image: `make test-image`.

mod docker;

use docker::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn seed000_master() -> Spec {
    Spec::new("m")
        .arg("run-postgresql-master")
        .env("POSTGRESQL_MASTER_USER", "master")
        .env("POSTGRESQL_MASTER_PASSWORD", "mpw")
}

fn refused(net: &mut Net, spec: &Spec, wanted: &[&str]) {
    let (code, log) = net.run_to_exit(spec, LIMIT);
    assert_eq!(code, 1, "{}: exit code {code}\n{log}", spec.name);
    let error: Vec<&str> = log.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(error.len(), 1, "{}: one error line wanted:\n{log}", spec.name);
    for w in wanted {
        assert!(error[0].contains(w), "{}: {w:?} not in {:?}", spec.name, error[0]);
    }
}

#[test]
#[ignore = "needs the pgrepl image: make test-image"]
fn seed000_rules_refuse_a_partial_triple_no_credentials_and_long_names() {
    require_image();
    let mut net = Net::new("badenv000");
    refused(
        &mut net,
        &Spec { name: "partial".into(), ..seed000_master().env("POSTGRESQL_USER", "user") },
        &["POSTGRESQL_USER", "POSTGRESQL_PASSWORD", "POSTGRESQL_DATABASE"],
    );
    refused(
        &mut net,
        &Spec { name: "nothing".into(), ..seed000_master() },
        &["POSTGRESQL_ADMIN_PASSWORD", "POSTGRESQL_USER"],
    );
    let long = "u".repeat(64);
    let spec =
        seed000_master().env("POSTGRESQL_USER", &long).env("POSTGRESQL_PASSWORD", "p").env("POSTGRESQL_DATABASE", "db");
    refused(&mut net, &Spec { name: "long".into(), ..spec }, &["POSTGRESQL_USER", "63"]);
    let spec = Spec::new("noreplpw").arg("run-postgresql-master").env("POSTGRESQL_ADMIN_PASSWORD", "a");
    refused(&mut net, &spec, &["POSTGRESQL_MASTER_PASSWORD"]);
    refused(
        &mut net,
        &Spec { name: "arg".into(), ..seed000_master().env("POSTGRESQL_ADMIN_PASSWORD", "a").arg("extra") },
        &["run-postgresql-master extra", "run-postgresql-slave"],
    );
}

#[test]
#[ignore = "needs the pgrepl image: make test-image"]
fn seed002_refuses_unknown_promote_values_and_an_upstream_that_is_itself() {
    require_image();
    let mut net = Net::new("badenv002");
    let replica = |name: &str, from: &str| Spec::new(name).env("REPLICATE_FROM", from).env("REPLICATION_PASS", "rpw");
    refused(
        &mut net,
        &replica("maybe", "pg-master").env("PROMOTE_MASTER", "maybe"),
        &["PROMOTE_MASTER", "\"maybe\"", "true or false"],
    );
    refused(&mut net, &replica("myself", "myself"), &["is this container itself"]);
    refused(&mut net, &replica("port", "pg-master").env("REPLICATE_PORT", "99999"), &["REPLICATE_PORT", "99999"]);
    refused(&mut net, &replica("promote-empty", "pg-master").env("PROMOTE_MASTER", "true"), &["never cloned"]);
}

#[test]
#[ignore = "needs the pgrepl image: make test-image"]
fn an_upstream_that_never_answers_is_waited_for_and_said_so_every_few_seconds() {
    require_image();
    let mut net = Net::new("badenvwait");
    let s = net.run(&Spec::new("lonely").env("REPLICATE_FROM", "nobody-here").env("REPLICATION_PASS", "rpw"));
    let said = eventually("the wait said three times", LIMIT, || {
        let log = logs(&s);
        (log.matches("waiting for the primary at nobody-here:5432").count() >= 3).then_some(log)
    });
    assert!(said.contains("does not resolve"), "{said}");
    let running = ok(&docker(&["inspect", "-f", "{{.State.Running}}", &s]));
    assert_eq!(running.trim(), "true");
}

#[test]
#[ignore = "needs the pgrepl image: make test-image"]
fn a_data_directory_of_another_cluster_is_refused_and_left_untouched() {
    require_image();
    let mut net = Net::new("badenvforeign");
    let master = |name: &str, vol: &str| {
        Spec::new(name).volume(vol, "/var/lib/postgresql").env("POSTGRES_PASS", "pw").env("REPLICATION_PASS", "rpw")
    };
    let a = net.run(&master("pg-a", "a"));
    let b = net.run(&master("pg-b", "b"));
    let replica = |from: &str| {
        Spec::new("r")
            .volume("r", "/var/lib/postgresql")
            .env("REPLICATE_FROM", from)
            .env("REPLICATION_PASS", "rpw")
            .env("DESTROY_DATABASE_ON_RESTART", "false")
    };
    let r = net.run(&replica("pg-a"));
    wait_streaming(&a, 1, LIMIT);
    wait_ready(&r, LIMIT);
    exec(&r, "touch $PGDATA/marker", &[]).unwrap();
    ok(&docker(&["rm", "-f", &r]));
    let _ = &b;
    refused(&mut net, &replica("pg-b"), &["belongs to another cluster", "left untouched"]);
    // The volume still holds pg-a's replica, marker and all.
    let r = net.run(&replica("pg-a"));
    wait_ready(&r, LIMIT);
    wait_streaming(&a, 1, LIMIT);
    assert!(exec(&r, "test -f $PGDATA/marker", &[]).is_ok(), "the refused start touched the data directory");
}
