//! Seed 000 as its OpenShift template runs the image: a master and slaves on a private
//! network, the slaves behind the alias `postgresql-slave`, the template's variables and
//! arguments, the seed's own checks (`pg_stat_replication` through `docker exec`, the login
//! check through `-h postgresql-master` and `-h postgresql-slave`), passwords changed by
//! recreating the containers, and scaling. Needs the image: `make test-image`.

mod docker;

use docker::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);

struct Passwords {
    user: &'static str,
    admin: &'static str,
    master: &'static str,
}

const FIRST: Passwords = Passwords { user: "Us3rPassw0rd", admin: "Adm1nPassw0rd", master: "Mast3rPassw0rd" };
const SECOND: Passwords = Passwords { user: "N3wUserPass", admin: "N3wAdminPass", master: "N3wMasterPass" };

/// The variables both of the template's containers get.
fn credentials(spec: Spec, p: &Passwords) -> Spec {
    spec.env("POSTGRESQL_MASTER_USER", "master")
        .env("POSTGRESQL_MASTER_PASSWORD", p.master)
        .env("POSTGRESQL_USER", "user")
        .env("POSTGRESQL_PASSWORD", p.user)
        .env("POSTGRESQL_DATABASE", "userdb")
}

fn master(p: &Passwords) -> Spec {
    let spec = Spec::new("postgresql-master")
        .alias("postgresql-master")
        .arg("run-postgresql-master")
        .volume("master-data", "/var/lib/pgsql/data")
        .env("POSTGRESQL_ADMIN_PASSWORD", p.admin);
    credentials(spec, p)
}

fn slave(n: u32, p: &Passwords) -> Spec {
    let spec = Spec::new(&format!("postgresql-slave-{n}"))
        .alias("postgresql-slave")
        .arg("run-postgresql-slave")
        .env("POSTGRESQL_MASTER_SERVICE_NAME", "postgresql-master");
    credentials(spec, p)
}

/// The seed's login check, run in `from` against `host`: `inet_server_addr`, database, user.
fn login(from: &str, host: &str, user: Option<&str>, password: &str) -> Result<String, String> {
    let who = user.map(|u| format!(" {u}")).unwrap_or_default();
    let script = format!(
        "psql -X -At -h {host} userdb{who} -c \"select * from (select inet_server_addr()) ra cross join \
         (select current_database()) cdb cross join (select current_user) cu\""
    );
    exec(from, &script, &[("PGPASSWORD", password), ("PGCONNECT_TIMEOUT", "5")]).map(|s| s.trim().to_string())
}

#[test]
#[ignore = "needs the pgrepl image: make test-image"]
fn the_template_replicates_serves_reads_resets_passwords_and_scales() {
    require_image();
    let mut net = Net::new("s000");
    let m = net.run(&master(&FIRST));
    let s1 = net.run(&slave(1, &FIRST));
    let s2 = net.run(&slave(2, &FIRST));
    wait_streaming(&m, 2, LIMIT);

    // PGDATA names the data directory in use, in a `docker exec` shell too.
    assert_eq!(exec(&m, "echo $PGDATA", &[]).unwrap().trim(), "/var/lib/pgsql/data/userdata");
    assert_eq!(exec(&m, "test -f $PGDATA/PG_VERSION && id -u", &[]).unwrap().trim(), "26");
    ok(&docker(&["exec", &m, "/usr/libexec/check-container"]));
    ok(&docker(&["exec", &s1, "/usr/libexec/check-container", "--live"]));

    // S3: a table made on the master is read on both slaves; a write there fails (25006).
    psql(&m, "userdb", "create table seed(x int); insert into seed values (42)").unwrap();
    for s in [&s1, &s2] {
        eventually("the row on a slave", LIMIT, || {
            (psql(s, "userdb", "select x from seed").ok()? == "42").then_some(())
        });
        let err =
            exec(s, "psql -X -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -d userdb -c 'insert into seed values (1)'", &[])
                .unwrap_err();
        assert!(err.contains("25006"), "{err}");
    }

    // The seed's login check through both names, with the user's and the admin's password.
    for host in ["postgresql-master", "postgresql-slave"] {
        let row = login(&m, host, Some("user"), FIRST.user).unwrap();
        assert!(row.ends_with("|userdb|user"), "{host}: {row}");
        let row = login(&m, host, None, FIRST.admin).unwrap();
        assert!(row.ends_with("|userdb|postgres"), "{host}: {row}");
    }
    let master_ip = address(&m, &net.name);
    assert!(login(&m, "postgresql-master", Some("user"), FIRST.user).unwrap().starts_with(&master_ip));

    // S6: new passwords by recreating the containers (the master keeps its volume).
    for c in [&s1, &s2, &m] {
        ok(&docker(&["rm", "-f", c]));
    }
    let m = net.run(&master(&SECOND));
    let s1 = net.run(&slave(1, &SECOND));
    let s2 = net.run(&slave(2, &SECOND));
    wait_streaming(&m, 2, LIMIT);
    for s in [&s1, &s2] {
        eventually("the old row on a recreated slave", LIMIT, || {
            (psql(s, "userdb", "select x from seed").ok()? == "42").then_some(())
        });
    }
    for host in ["postgresql-master", "postgresql-slave"] {
        let row = login(&m, host, Some("user"), SECOND.user).unwrap();
        assert!(row.ends_with("|userdb|user"), "{host}: {row}");
        assert!(login(&m, host, None, SECOND.admin).unwrap().ends_with("|userdb|postgres"));
        let refused = login(&m, host, Some("user"), FIRST.user).unwrap_err();
        assert!(refused.contains("password authentication failed"), "{host}: {refused}");
        assert!(login(&m, host, None, FIRST.admin).is_err(), "{host}: the old admin password still works");
    }

    // S5: a third slave gives three streaming rows.
    net.run(&slave(3, &SECOND));
    wait_streaming(&m, 3, LIMIT);

    // Nobody logs in over TCP before every password is set: pg_hba.conf opens after that.
    let log = logs(&m);
    let set = log.rfind("set every configured password").expect("passwords set");
    let opened = log.rfind("opened pg_hba.conf to clients and replicas").expect("pg_hba.conf opened");
    assert!(set < opened, "pg_hba.conf opened before the passwords were set:\n{log}");

    // No password in the containers' logs.
    for c in [&m, &s1, &s2] {
        let log = logs(c);
        for p in [FIRST.user, FIRST.admin, FIRST.master, SECOND.user, SECOND.admin, SECOND.master] {
            assert!(!log.contains(p), "{c}'s log holds a password");
        }
    }
}

#[test]
#[ignore = "needs the pgrepl image: make test-image"]
fn a_slave_waits_for_its_master_and_says_so() {
    require_image();
    let mut net = Net::new("s000wait");
    let s = net.run(&slave(1, &FIRST));
    eventually("the slave to say it waits, more than once", LIMIT, || {
        (logs(&s).matches("waiting for the primary at postgresql-master:5432").count() >= 2).then_some(())
    });
    assert!(docker(&["exec", &s, "/usr/libexec/check-container"]).status.code() != Some(0), "ready while waiting");
    let m = net.run(&master(&FIRST));
    wait_streaming(&m, 1, LIMIT);
    wait_ready(&s, LIMIT);
}
