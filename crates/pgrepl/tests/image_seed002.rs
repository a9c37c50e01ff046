//! Seed 002 as its compose sample runs the image: no argument, the role by `REPLICATE_FROM`,
//! data under `/var/lib/postgresql`. `DESTROY_DATABASE_ON_RESTART` true re-clones on restart and
//! false keeps the data (a marker file in `$PGDATA` tells), also from an empty volume;
//! `PROMOTE_MASTER` promotes while the master is down, `False` does not; the old master comes
//! back as a replica of the promoted node by pg_rewind; a replica reached by address and
//! published port; a replica cut off the network catches up; an arbitrary uid with group 0;
//! `docker stop` leaves no crash recovery. Needs the image: `make test-image`.

mod docker;

use docker::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);

fn master() -> Spec {
    Spec::new("pg-master")
        .volume("master", "/var/lib/postgresql")
        .env("ALLOW_IP_RANGE", "0.0.0.0/0")
        .env("POSTGRES_USER", "docker")
        .env("POSTGRES_PASS", "d0ckerPass")
        .env("REPLICATION_USER", "replicator")
        .env("REPLICATION_PASS", "r3plicatorPass")
}

fn slave(name: &str, from: &str) -> Spec {
    Spec::new(name)
        .env("ALLOW_IP_RANGE", "0.0.0.0/0")
        .env("REPLICATE_FROM", from)
        .env("REPLICATION_USER", "replicator")
        .env("REPLICATION_PASS", "r3plicatorPass")
}

fn marker(container: &str) -> bool {
    exec(container, "test -f $PGDATA/marker", &[]).is_ok()
}

fn wait_row(container: &str, sql: &str, want: &str) {
    eventually(&format!("{want:?} from {sql:?} on {container}"), LIMIT, || {
        (psql(container, "gis", sql).ok()? == want).then_some(())
    });
}

fn read_only(container: &str) -> bool {
    exec(container, "psql -X -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -d gis -c 'create table nope(x int)'", &[])
        .is_err_and(|e| e.contains("25006"))
}

#[test]
#[ignore = "needs the pgrepl image: make test-image"]
fn destroy_on_restart_reclones_and_false_keeps_the_data_and_resumes() {
    require_image();
    let mut net = Net::new("s002destroy");
    let m = net.run(&master());
    let s = net.run(&slave("pg-slave", "pg-master").volume("slave", "/var/lib/postgresql"));
    wait_streaming(&m, 1, LIMIT);
    assert_eq!(exec(&s, "echo $PGDATA", &[]).unwrap().trim(), "/var/lib/postgresql/15/main");
    psql(&m, "gis", "create table t(x int); insert into t values (1)").unwrap();
    wait_row(&s, "select count(*) from t", "1");
    assert!(read_only(&s));

    // The default (true): a restart wipes and clones afresh.
    exec(&s, "touch $PGDATA/marker", &[]).unwrap();
    ok(&docker(&["restart", &s]));
    wait_streaming(&m, 1, LIMIT);
    wait_row(&s, "select count(*) from t", "1");
    assert!(!marker(&s), "DESTROY_DATABASE_ON_RESTART=true kept the old data directory");

    // False: a restart keeps the data and resumes streaming.
    ok(&docker(&["rm", "-f", &s]));
    let s = net.run(
        &slave("pg-slave", "pg-master")
            .volume("slave", "/var/lib/postgresql")
            .env("DESTROY_DATABASE_ON_RESTART", "False"),
    );
    wait_streaming(&m, 1, LIMIT);
    exec(&s, "touch $PGDATA/marker", &[]).unwrap();
    ok(&docker(&["restart", &s]));
    wait_streaming(&m, 1, LIMIT);
    psql(&m, "gis", "insert into t values (2)").unwrap();
    wait_row(&s, "select count(*) from t", "2");
    assert!(marker(&s), "DESTROY_DATABASE_ON_RESTART=false lost the data directory");

    // False with an empty volume still clones (the seed's replica never started then).
    let fresh = net.run(
        &slave("pg-slave-2", "pg-master")
            .volume("fresh", "/var/lib/postgresql")
            .env("DESTROY_DATABASE_ON_RESTART", "false"),
    );
    wait_row(&fresh, "select count(*) from t", "2");
    wait_streaming(&m, 2, LIMIT);

    // Cut off the network, then back: it catches up.
    ok(&docker(&["network", "disconnect", &net.name, &s]));
    psql(&m, "gis", "insert into t values (3)").unwrap();
    ok(&docker(&["network", "connect", &net.name, &s]));
    wait_row(&s, "select count(*) from t", "3");
}

#[test]
#[ignore = "needs the pgrepl image: make test-image"]
fn promote_master_promotes_while_the_master_is_down_and_the_old_master_rejoins_by_rewind() {
    require_image();
    let mut net = Net::new("s002promote");
    let m = net.run(&master());
    let keep = |name: &str, vol: &str| {
        slave(name, "pg-master").volume(vol, "/var/lib/postgresql").env("DESTROY_DATABASE_ON_RESTART", "False")
    };
    let a = net.run(&keep("pg-slave-a", "a"));
    let b = net.run(&keep("pg-slave-b", "b"));
    wait_streaming(&m, 2, LIMIT);
    psql(&m, "gis", "create table t(x int); insert into t values (1)").unwrap();
    wait_row(&a, "select count(*) from t", "1");
    wait_row(&b, "select count(*) from t", "1");

    ok(&docker(&["stop", &m]));
    // PROMOTE_MASTER=False does not promote.
    ok(&docker(&["rm", "-f", &b]));
    let b = net.run(&keep("pg-slave-b", "b").env("PROMOTE_MASTER", "False"));
    eventually("b to serve reads again", LIMIT, || {
        (psql(&b, "gis", "select count(*) from t").ok()? == "1").then_some(())
    });
    assert!(read_only(&b), "PROMOTE_MASTER=False promoted");
    // PROMOTE_MASTER=True promotes, with the master down.
    ok(&docker(&["rm", "-f", &a]));
    let a = net.run(&keep("pg-slave-a", "a").env("PROMOTE_MASTER", "True"));
    eventually("a to take writes", LIMIT, || psql(&a, "gis", "insert into t values (2)").ok());
    // Restarted, it is still the primary.
    ok(&docker(&["restart", &a]));
    eventually("a to take writes after a restart", LIMIT, || psql(&a, "gis", "insert into t values (3)").ok());

    // The old master, started as a replica of the promoted node, is rewound and streams from it.
    ok(&docker(&["rm", "-f", &m]));
    let old = net.run(
        &slave("pg-master", "pg-slave-a")
            .volume("master", "/var/lib/postgresql")
            .env("DESTROY_DATABASE_ON_RESTART", "False"),
    );
    wait_streaming(&a, 1, LIMIT);
    wait_row(&old, "select count(*) from t", "3");
    assert!(read_only(&old));
    assert!(logs(&old).contains("rewound"), "{}", logs(&old));
}

#[test]
#[ignore = "needs the pgrepl image: make test-image"]
fn a_replica_follows_an_address_and_published_port_and_an_arbitrary_uid_works() {
    require_image();
    let mut net = Net::new("s002addr");
    let m = net.run(&master().user("1000650000:0").publish());
    let port = published_port(&m);
    let via = gateway(&net.name);
    let s = net.run(&slave("pg-slave", &via).env("REPLICATE_PORT", &port.to_string()).user("1000650000:0"));
    wait_streaming(&m, 1, LIMIT);
    psql(&m, "gis", "create table t(x int); insert into t values (7)").unwrap();
    wait_row(&s, "select x from t", "7");
    assert_eq!(exec(&m, "id -u", &[]).unwrap().trim(), "1000650000");
    // The application user logs in from the host at the published port, with its password.
    assert_eq!(psql_from_host(port, "docker", "d0ckerPass", "gis", "select x from t").as_deref(), Ok("7"));
}

#[test]
#[ignore = "needs the pgrepl image: make test-image"]
fn docker_stop_shuts_down_cleanly_so_the_next_start_needs_no_recovery() {
    require_image();
    let mut net = Net::new("s002stop");
    let m = net.run(&master());
    eventually("the master to be ready", LIMIT, || {
        docker(&["exec", &m, "/usr/libexec/check-container"]).status.success().then_some(())
    });
    let stopped_at = std::time::Instant::now();
    ok(&docker(&["stop", &m]));
    assert!(
        stopped_at.elapsed() < Duration::from_secs(9),
        "docker stop waited for its timeout: SIGTERM was not handled"
    );
    let code = ok(&docker(&["inspect", "-f", "{{.State.ExitCode}}", &m]));
    assert_eq!(code.trim(), "0", "{}", logs(&m));
    ok(&docker(&["start", &m]));
    eventually("the master to be ready again", LIMIT, || {
        docker(&["exec", &m, "/usr/libexec/check-container"]).status.success().then_some(())
    });
    let log = logs(&m);
    assert!(!log.contains("not properly shut down"), "{log}");
    assert!(!log.contains("automatic recovery in progress"), "{log}");
}
