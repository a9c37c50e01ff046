//! The HA compose sample (`examples/compose/ha/`) under faults, in synchronous mode, with a
//! writer on the host writing through the published read-write port over TLS (verify-full
//! against the cluster's CA): `docker kill` of the primary's container, `docker stop` of it,
//! the loss of an etcd container and of a router container. After each, writes go on (on
//! another member where the primary went), the old primary rejoins as a replica, no server is
//! ever a second writable primary, and no acknowledged row is lost. Needs the image and
//! docker-compose: `make test-image`.

mod common;
mod docker;

use common::writer::{connect_with, missing_with, PrimaryWatch, Tls, Writer};
use docker::compose::{Project, MEMBERS};
use docker::*;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);

/// The longest time between two acknowledged writes acknowledged after `from`.
fn longest_gap(writer: &Writer, from: Instant) -> Duration {
    writer.with_log(|log| {
        let after: Vec<Instant> = log.acked.iter().map(|(_, at)| *at).filter(|at| *at >= from).collect();
        let first = after.first().map_or(Duration::ZERO, |at| at.duration_since(from));
        after.windows(2).map(|w| w[1].duration_since(w[0])).fold(first, Duration::max)
    })
}

/// Waits until the writer has `more` acknowledged writes beyond what it has now.
fn writes_go_on(writer: &Writer, more: usize, what: &str) {
    let now = writer.acked();
    eventually(what, LIMIT, || (writer.acked() >= now + more).then_some(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the pgrepl image and docker-compose: make test-image"]
async fn the_ha_compose_cluster_keeps_every_acknowledged_row_through_kill_stop_and_lost_etcd_and_router() {
    require_image();
    let [rw_port, ro_port] = common::free_ports::<2>();
    let p = Project::up(&[("PGREPL_SYNCHRONOUS", "on")], rw_port, ro_port);
    let (first, _) = eventually("three members running and streaming", LIMIT, || p.converged(&[]));
    let tls = Tls::verify_full(&p.ca());
    let admin = p.password("POSTGRESQL_ADMIN_PASSWORD");

    // `make status` and the helper the master-*/slave-* targets use agree with the cluster.
    let status = p.make("status");
    assert!(status.contains(&format!("leader {first}")), "{status}");
    let replicas: Vec<&str> = MEMBERS.iter().copied().filter(|m| *m != first).collect();
    // The read-only endpoint on the host reaches a replica.
    let ro = connect_with(p.ro(), &admin, &tls).await.expect("the ro endpoint over TLS");
    let row = ro.query_one("SELECT pg_is_in_recovery()", &[]).await.unwrap();
    assert!(row.get::<_, bool>(0), "ro reaches a replica");

    let watch = {
        let (p_addrs, tls, admin) = (MEMBERS.map(|m| p.pg_addr(m)), tls.clone(), admin.clone());
        PrimaryWatch::start_probing(MEMBERS.len(), move |i| {
            let (addr, tls, admin) = (p_addrs[i], tls.clone(), admin.clone());
            async move {
                let c = connect_with(addr, &admin, &tls).await.ok()?;
                let row = c.query_one("SELECT pg_is_in_recovery()", &[]).await.ok()?;
                Some(!row.get::<_, bool>(0))
            }
        })
    };
    let writer = Writer::start_with(vec![p.rw()], admin.clone(), 1, tls.clone()).await;
    writes_go_on(&writer, 20, "writes through the host's rw port");

    // 1. `docker kill` of the primary: another member takes over after the lease's ttl.
    let killed_at = Instant::now();
    ok(&docker(&["kill", &p.container(&first)]));
    let second = eventually("another member to lead", LIMIT, || {
        p.status_except(&[&first])?["leader"].as_str().filter(|l| *l != first).map(String::from)
    });
    writes_go_on(&writer, 20, "writes on the new primary after docker kill");
    eprintln!("docker kill {first}: {second} leads; the longest write gap was {:?}", longest_gap(&writer, killed_at));
    ok(&docker(&["start", &p.container(&first)]));
    let (leader, s) = eventually("the killed primary to rejoin as a replica", LIMIT, || p.converged(&[]));
    assert_eq!(leader, second, "{s}");

    // 2. An etcd container lost: nothing changes; the cluster goes on with two of three.
    ok(&docker(&["kill", &p.container("etcd-1")]));
    writes_go_on(&writer, 50, "writes with one etcd member down");
    let (leader, _) = eventually("the cluster as it was, with etcd-1 down", LIMIT, || p.converged(&[]));
    assert_eq!(leader, second, "losing an etcd member moves nobody");
    ok(&docker(&["start", &p.container("etcd-1")]));

    // 3. A router container lost: the other one serves the host's ports.
    ok(&docker(&["kill", &p.container("router-a")]));
    writes_go_on(&writer, 50, "writes through the remaining router");
    let fresh = connect_with(p.rw(), &admin, &tls).await.expect("a new connection with router-a down");
    fresh.batch_execute("SELECT 1").await.unwrap();
    ok(&docker(&["start", &p.container("router-a")]));

    // 4. `docker stop` of the primary: it hands over (its lease released, not expired).
    let stopped_at = Instant::now();
    ok(&docker(&["stop", &p.container(&second)]));
    let third = eventually("another member to lead after docker stop", LIMIT, || {
        p.status_except(&[&second])?["leader"].as_str().filter(|l| *l != second).map(String::from)
    });
    writes_go_on(&writer, 20, "writes on the new primary after docker stop");
    let gap = longest_gap(&writer, stopped_at);
    eprintln!("docker stop {second}: {third} leads; the longest write gap was {gap:?}");
    let log = p.logs(&second);
    assert!(log.contains("released the leader lease"), "the stopped primary released its lease:\n{log}");
    ok(&docker(&["start", &p.container(&second)]));
    let (leader, s) = eventually("the stopped primary to rejoin as a replica", LIMIT, || p.converged(&[]));
    assert_eq!(leader, third, "{s}");

    let log = writer.stop_with_log().await;
    let acked: Vec<i64> = log.acked.iter().map(|(id, _)| *id).collect();
    assert!(acked.len() > 200, "the writer wrote ({} rows)", acked.len());
    for m in MEMBERS {
        let deadline = Instant::now() + LIMIT;
        loop {
            let missing = missing_with(p.pg_addr(m), &admin, &acked, &tls).await;
            if missing.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "{m} lacks acknowledged rows: {missing:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    assert_eq!(watch.stop().await, 1, "never two writable primaries");
    eprintln!("{} acknowledged rows, every one on all three members; replicas at start: {replicas:?}", acked.len());
}
