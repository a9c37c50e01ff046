//! The HA compose sample (`examples/compose/ha/`) under faults, in synchronous mode, with a
//! writer on the host writing through the published read-write port over TLS (verify-full
//! against the cluster's CA): `docker kill` of the primary's container, `docker stop` of it,
//! the loss of an etcd container and of a router container. After each, writes go on (on
//! another member where the primary went), the old primary rejoins as a replica, no server is
//! ever a second writable primary, and no acknowledged row is lost. Needs the image and
//! docker-compose: `make test-image`.

mod common;
mod docker;

use common::writer::{connect_with, try_missing_with, PrimaryWatch, Tls, Writer};
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

/// Every member's server has every acknowledged row (asked again while it lacks some, or
/// cannot answer yet: a replica restarted moments ago may still be starting up).
async fn every_member_has(p: &Project, admin: &str, acked: &[i64], tls: &Tls) {
    for m in MEMBERS {
        let deadline = Instant::now() + LIMIT;
        loop {
            let missing = try_missing_with(p.pg_addr(m), admin, acked, tls).await;
            if missing.as_ref().is_ok_and(|m| m.is_empty()) {
                break;
            }
            assert!(Instant::now() < deadline, "{m} lacks acknowledged rows: {missing:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
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
    assert_eq!(p.member_sh("primary").trim(), first, "master-shell and master-log go to the primary");
    let replica = p.member_sh("replica");
    let replicas: Vec<&str> = MEMBERS.iter().copied().filter(|m| *m != first).collect();
    assert!(replicas.contains(&replica.trim()), "slave-shell and slave-log go to a replica: {replica:?}");
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
    assert!(
        log.contains("released the leader lease: a replica can take over at once"),
        "the stopped primary released its lease:\n{log}"
    );
    ok(&docker(&["start", &p.container(&second)]));
    let (leader, s) = eventually("the stopped primary to rejoin as a replica", LIMIT, || p.converged(&[]));
    assert_eq!(leader, third, "{s}");

    let log = writer.stop_with_log().await;
    let acked: Vec<i64> = log.acked.iter().map(|(id, _)| *id).collect();
    assert!(acked.len() > 200, "the writer wrote ({} rows)", acked.len());
    every_member_has(&p, &admin, &acked, &tls).await;
    assert_eq!(watch.stop().await, 1, "never two writable primaries");
    eprintln!("{} acknowledged rows, every one on all three members; replicas at start: {replicas:?}", acked.len());
}

/// Whether the member in `container` answers as a writable primary over its own socket.
fn writable(container: &str) -> bool {
    exec(container, "psql -X -At -c 'SELECT pg_is_in_recovery()'", &[("PGCONNECT_TIMEOUT", "1")])
        .is_ok_and(|out| out.trim() == "f")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the pgrepl image and docker-compose: make test-image"]
async fn the_ha_compose_cluster_fences_a_cut_off_primary_and_members_come_back_with_or_without_their_data() {
    require_image();
    let [rw_port, ro_port] = common::free_ports::<2>();
    let p = Project::up(&[("PGREPL_SYNCHRONOUS", "on")], rw_port, ro_port);
    let (first, _) = eventually("three members running and streaming", LIMIT, || p.converged(&[]));
    let tls = Tls::verify_full(&p.ca());
    let admin = p.password("POSTGRESQL_ADMIN_PASSWORD");
    let writer = Writer::start_with(vec![p.rw()], admin.clone(), 1, tls.clone()).await;
    writes_go_on(&writer, 20, "writes through the host's rw port");

    // 1. The primary's container cut off its network: it stops taking writes before its lease
    // could have expired (ttl 4 s after the last renewal, itself before the cut), the others
    // elect a new primary, and once connected again it rejoins as their replica.
    let network = format!("{}_pgrepl", p.name);
    let ip = p.pg_addr(&first).ip().to_string();
    let container = p.container(&first);
    assert!(writable(&container), "{first} answers as a writable primary before the cut");
    let cut_at = Instant::now();
    ok(&docker(&["network", "disconnect", &network, &container]));
    let mut last_writable = None;
    while cut_at.elapsed() < Duration::from_secs(8) {
        // When the probe was sent: the answer tells of a moment after it.
        let asked = cut_at.elapsed();
        if writable(&container) {
            last_writable = Some(asked);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("cut off {first}: last seen writable {last_writable:?} after the cut");
    assert!(
        last_writable.is_none_or(|at| at < Duration::from_secs(4)),
        "the cut-off primary was still writable {last_writable:?} after the cut, when its lease could have expired"
    );
    let second = eventually("another member to lead", LIMIT, || {
        p.status_except(&[&first])?["leader"].as_str().filter(|l| *l != first).map(String::from)
    });
    writes_go_on(&writer, 20, "writes on the new primary while the old one is cut off");
    ok(&docker(&["network", "connect", "--ip", &ip, &network, &container]));
    let (leader, s) = eventually("the cut-off primary to rejoin as a replica", LIMIT, || p.converged(&[]));
    assert_eq!(leader, second, "{s}");
    let back = s["members"].as_array().unwrap().iter().find(|m| m["name"] == first.as_str()).unwrap().clone();
    assert_eq!(back["role"], "replica", "{s}");
    let rewound = p.logs(&first).contains("rewound and rejoined as a replica");
    eprintln!(
        "{first} rejoined on timeline {} ({})",
        back["timeline"],
        if rewound { "rewound" } else { "no rewind needed" }
    );

    // 2. A replica's container recreated with an empty volume clones afresh.
    let replica = MEMBERS.iter().copied().find(|m| *m != second).unwrap();
    ok(&p.compose(&["rm", "-s", "-f", replica]));
    ok(&docker(&["volume", "rm", &format!("{}_{replica}", p.name)]));
    ok(&p.compose(&["up", "-d", replica]));
    eventually("the recreated replica to clone and stream", LIMIT, || p.converged(&[]));
    let log = p.logs(replica);
    assert!(log.contains("cloned the leader and started as its replica"), "{replica} cloned afresh:\n{log}");
    writes_go_on(&writer, 20, "writes after the replica was recreated");

    // 3. A member whose container dies (its PID 1 killed) is restarted by Docker's restart
    // policy and resumes with its data: no clone this time.
    let other = MEMBERS.iter().copied().find(|m| *m != second && *m != replica).unwrap();
    let container = p.container(other);
    let pid = ok(&docker(&["inspect", "-f", "{{.State.Pid}}", &container])).trim().to_string();
    let started = ok(&docker(&["inspect", "-f", "{{.State.StartedAt}}", &container]));
    // `docker logs` spans the container's runs: a member that joined as a replica cloned once.
    let clones = |log: &str| log.matches("cloned the leader and started as its replica").count();
    let cloned_before = clones(&p.logs(other));
    assert!(std::process::Command::new("kill").args(["-9", &pid]).status().unwrap().success());
    eventually("Docker to restart the container", LIMIT, || {
        let now = ok(&docker(&["inspect", "-f", "{{.State.StartedAt}} {{.State.Running}}", &container]));
        (now.split_whitespace().next() != started.split_whitespace().next() && now.trim().ends_with("true"))
            .then_some(())
    });
    let count = ok(&docker(&["inspect", "-f", "{{.RestartCount}}", &container]));
    assert_eq!(count.trim(), "1", "restarted by its restart policy");
    eventually("the restarted member to stream again", LIMIT, || p.converged(&[]));
    let log = p.logs(other);
    assert_eq!(clones(&log), cloned_before, "{other} resumed with its data, no clone:\n{log}");

    let log = writer.stop_with_log().await;
    let acked: Vec<i64> = log.acked.iter().map(|(id, _)| *id).collect();
    every_member_has(&p, &admin, &acked, &tls).await;
    eprintln!("{} acknowledged rows, every one on all three members", acked.len());
}

/// Both compose samples are valid for docker-compose (`config -q` checks the file against the
/// Compose schema and fills in every variable); the HA one names a missing password.
#[test]
#[ignore = "needs docker-compose: make test-image"]
fn the_compose_samples_pass_docker_compose_config() {
    let samples = docker::compose::sample().join("..");
    let config = |dir: &str, vars: &[(&str, &str)]| {
        std::process::Command::new("docker-compose")
            .args(["config", "-q"])
            .current_dir(samples.join(dir))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .envs(vars.iter().copied())
            .output()
            .expect("run docker-compose")
    };
    ok(&config("seed", &[]));
    let passwords =
        [("POSTGRESQL_ADMIN_PASSWORD", "a"), ("POSTGRESQL_MASTER_PASSWORD", "b"), ("POSTGRESQL_PASSWORD", "c")];
    ok(&config("ha", &passwords));
    let without = config("ha", &passwords[1..]);
    let said = String::from_utf8_lossy(&without.stderr);
    assert!(!without.status.success() && said.contains("POSTGRESQL_ADMIN_PASSWORD"), "{said}");
}
