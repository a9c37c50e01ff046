//! The image on etcd: with `PGREPL_STORE=etcd://...` the same image runs `pgrepl node` (roles by
//! the leader lease, automatic failover, the router). An etcd container from the image itself,
//! three members; `docker kill` of the primary's container makes a replica primary, reachable
//! through a router's read-write endpoint, and the old primary, started again, rejoins as a
//! replica on the new timeline. Needs the image: `make test-image`.

mod docker;

use docker::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);

/// The cluster CA every member is given (as `pgrepl node` needs), made once for the test.
fn ca() -> &'static pgrepl_tls::Ca {
    static CA: std::sync::OnceLock<pgrepl_tls::Ca> = std::sync::OnceLock::new();
    CA.get_or_init(|| pgrepl_tls::Ca::generate("pgrepl", std::time::SystemTime::now()).unwrap())
}

fn member(n: u32) -> Spec {
    Spec::new(&format!("db-{n}"))
        .env("PGREPL_STORE", "etcd://etcd:2379")
        .env("PGREPL_TLS_CA_CERT", &ca().cert_pem)
        .env("PGREPL_TLS_CA_KEY", &ca().key_pem)
        .env("PGREPL_MEMBER", &format!("db-{n}"))
        .env("PGREPL_ADMIN_PASSWORD", "adm1nPass")
        .env("PGREPL_REPLICATION_PASSWORD", "r3plPass")
        .volume(&format!("db-{n}"), "/var/lib/pgsql/data")
}

/// `pgrepl status --json` inside `container`.
fn status(container: &str) -> Option<serde_json::Value> {
    let text = exec(container, "pgrepl --dir /var/lib/pgsql/data/pgrepl status --json", &[]).ok()?;
    serde_json::from_str(&text).ok()
}

fn leader(container: &str) -> Option<String> {
    status(container)?["leader"].as_str().map(String::from)
}

/// Every member in the status is running (primary) or streaming (replica), on one timeline.
fn converged(container: &str, members: usize) -> Option<serde_json::Value> {
    let s = status(container)?;
    let m = s["members"].as_array()?;
    let ok = m.len() == members
        && m.iter().all(|x| x["state"] == "running" || x["state"] == "streaming")
        && m.iter().all(|x| x["timeline"] == m[0]["timeline"]);
    ok.then_some(s)
}

#[test]
#[ignore = "needs the pgrepl image: make test-image"]
fn on_etcd_the_image_fails_over_and_the_old_primary_rejoins() {
    require_image();
    let mut net = Net::new("node");
    let etcd = Spec {
        name: "etcd".into(),
        args: [
            "--data-dir",
            "/tmp/etcd",
            "--listen-client-urls",
            "http://0.0.0.0:2379",
            "--advertise-client-urls",
            "http://etcd:2379",
        ]
        .map(String::from)
        .to_vec(),
        entrypoint: Some("etcd".into()),
        ..Spec::default()
    };
    net.run(&etcd.alias("etcd"));
    let names: Vec<String> = (1..=3).map(|n| net.run(&member(n))).collect();
    let first = eventually("three members running and streaming", LIMIT, || converged(&names[0], 3));
    let old = first["leader"].as_str().unwrap().to_string();
    let old_container = net.scoped(&old);
    let survivor = names.iter().find(|c| **c != old_container).unwrap().clone();

    ok(&docker(&["kill", &old_container]));
    let new = eventually("another member to lead", LIMIT, || leader(&survivor).filter(|l| *l != old));
    // The router of a surviving member reaches the new primary through its read-write endpoint.
    eventually("a write through the read-write endpoint", LIMIT, || {
        exec(
            &survivor,
            "psql -X -q -At -h $(hostname -i) -p 5432 -U postgres -d postgres -c 'create table if not exists t(x int); insert into t values (1); select pg_is_in_recovery()'",
            &[("PGPASSWORD", "adm1nPass"), ("PGCONNECT_TIMEOUT", "3")],
        )
        .ok()
        .filter(|out| out.trim() == "f")
    });

    ok(&docker(&["start", &old_container]));
    let after = eventually("the old primary to rejoin as a replica", LIMIT, || converged(&survivor, 3));
    let members = after["members"].as_array().unwrap();
    let back = members.iter().find(|m| m["name"] == old.as_str()).unwrap();
    assert_eq!(back["role"], "replica", "{after}");
    assert_eq!(after["leader"], new.as_str());
    assert!(back["timeline"].as_u64().unwrap() >= 2, "{after}");
}
