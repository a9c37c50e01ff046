//! End-to-end across hosts: three network namespaces on a bridge, each running one member of a
//! three-member etcd cluster and one `pgrepl node` (its own directory, `--router`), all in one
//! pgrepl cluster. They converge (one primary, two streaming); the primary's member is lost
//! (kill -9 of its node and its postmaster), another host takes over and the lost one rejoins
//! when its node restarts; the primary's host is cut off from the others and from etcd, its
//! fence stops its PostgreSQL before the lease could expire, the others elect a new primary, and
//! after healing the old one rejoins as a replica. A watcher that samples every host's server
//! from inside its own namespace (so it still sees a cut-off host) proves that no two were ever
//! writable at once.

mod common;

use common::three_hosts::{host_of, tail, Cluster, ADMIN_PASSWORD, HOSTS, PATH};
use common::writer::{missing_at, unix_ms, Writer};
use common::{describe, eventually, pgrepl_bin, signal};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

async fn wait_for_acks(w: &Writer, at_least: usize, what: &str) {
    eventually(Duration::from_secs(60), what, || async { (w.acked() >= at_least).then_some(()) }).await;
}

/// What `pgrepl node` refuses before it touches anything: the file store, a missing password,
/// a missing CA, a member port that is also the router's, a bad member name.
fn node_refuses_what_hosts_cannot_share(c: &Cluster) {
    let dir = c.tmp.path().join("refused");
    let refused_with = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(pgrepl_bin())
            .env_clear()
            .env("PATH", PATH)
            .envs(env.iter().copied())
            .arg("--dir")
            .arg(&dir)
            .arg("node")
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{}", describe(&out));
        assert!(!dir.exists(), "a refused node created its directory");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let refused = |env: &[(&str, &str)]| refused_with(&["--member", "node-9"], env);
    let stderr = refused(&[("PGREPL_ADMIN_PASSWORD", "a"), ("PGREPL_REPLICATION_PASSWORD", "r")]);
    assert!(stderr.contains("error: store: \"file\" keeps the cluster's state in one directory"), "{stderr}");
    assert!(stderr.contains("needs store = etcd://HOST:PORT"), "{stderr}");
    let store = c.store_setting();
    let stderr = refused(&[("PGREPL_STORE", &store), ("PGREPL_ADMIN_PASSWORD", "a")]);
    assert!(stderr.contains("database.replication_password (PGREPL_REPLICATION_PASSWORD) not set"), "{stderr}");
    assert!(stderr.contains("never generates a password"), "{stderr}");
    let no_ca =
        [("PGREPL_STORE", store.as_str()), ("PGREPL_ADMIN_PASSWORD", "a"), ("PGREPL_REPLICATION_PASSWORD", "r")];
    let stderr = refused(&no_ca);
    assert!(
        stderr.contains("tls.ca_cert and tls.ca_key (PGREPL_TLS_CA_CERT_FILE, PGREPL_TLS_CA_KEY_FILE) are not set"),
        "{stderr}"
    );
    assert!(stderr.contains("never makes a CA"), "{stderr}");
    let (ca_cert, ca_key) = (c.ca[0].join("ca.crt"), c.ca[0].join("ca.key"));
    let ca =
        [("PGREPL_TLS_CA_CERT_FILE", ca_cert.to_str().unwrap()), ("PGREPL_TLS_CA_KEY_FILE", ca_key.to_str().unwrap())];
    let given = [&no_ca[..], &ca[..]].concat();
    let stderr = refused_with(&["--member", "node-9", "--router"], &[&given[..], &[("PGREPL_PORT", "5432")]].concat());
    assert!(stderr.contains("--pg-port 5432 is also the router's read-write port"), "{stderr}");
    let stderr = refused_with(&["--member", "node_9"], &given);
    assert!(stderr.contains("member name \"node_9\" is not allowed"), "{stderr}");
}

#[tokio::test]
async fn three_hosts_on_etcd_survive_a_lost_member_and_a_partitioned_primary() {
    let started = Instant::now();
    let mut c = Cluster::new();
    node_refuses_what_hosts_cannot_share(&c);
    c.start_etcd().await;
    c.configure();
    eprintln!("hosts and etcd ready at {:?}", started.elapsed());

    // 1. Three nodes started at once form one cluster: one primary, two streaming replicas.
    for i in 0..HOSTS {
        c.start_node(i);
    }
    let first =
        eventually(Duration::from_secs(90), "one primary and two streaming replicas", || async { c.converged(0) })
            .await;
    let p = host_of(&first);
    let roles = c.in_recovery().await;
    let expected: Vec<Option<bool>> = (0..HOSTS).map(|i| Some(i != p)).collect();
    assert_eq!(roles, expected, "pg_is_in_recovery() on each host");
    // The primary's published pg_stat_replication shows both replicas streaming from their own
    // hosts' addresses, which its pg_hba allows as members.
    let status = eventually(Duration::from_secs(10), "the primary to report two streaming replicas", || async {
        let status = c.status(p)?;
        let rows = status["replication"].as_array()?;
        let from_their_hosts = rows.iter().all(|r| {
            let member = r["member"].as_str().and_then(|m| m.strip_prefix("node-")?.parse::<usize>().ok());
            let host = member.and_then(|n| n.checked_sub(1)).filter(|i| *i < HOSTS);
            r["state"] == "streaming" && host.is_some_and(|i| r["client_addr"] == c.hosts.addr(i).to_string())
        });
        (rows.len() == HOSTS - 1 && from_their_hosts).then_some(status)
    })
    .await;
    assert!(status["endpoints"]["router"].as_bool().unwrap(), "{status:#}");
    // No password reaches a child's environment.
    let postmaster = std::fs::read_to_string(c.dir(p).join(format!("members/{first}/data/postmaster.pid"))).unwrap();
    let environ = std::fs::read(format!("/proc/{}/environ", postmaster.lines().next().unwrap().trim())).unwrap();
    assert!(!String::from_utf8_lossy(&environ).contains("PASSWORD"), "a password variable reached PostgreSQL");
    eprintln!("three hosts converged at {:?} ({first} primary)", started.elapsed());

    // 2. The primary's member is lost: another host takes over, writes through a surviving
    // host's router resume, and the lost member rejoins once its node runs again.
    let watch = c.watch();
    let w = (p + 1) % HOSTS;
    let writer = Writer::start_at(c.rw(w), ADMIN_PASSWORD.to_string()).await;
    wait_for_acks(&writer, 30, "30 rows before the member is lost").await;
    c.lose_member(p);
    let killed = Instant::now();
    let before = writer.acked();
    wait_for_acks(&writer, before + 30, "writes through the router after the member was lost").await;
    let failover = killed.elapsed();
    let acked = writer.stop().await;
    let second = c.leader(w).expect("a leader");
    assert_ne!(second, first, "another member leads");
    let lost = missing_at(c.pg(host_of(&second)), ADMIN_PASSWORD, &acked).await;
    assert!(lost.len() <= 2, "lost {lost:?} (asynchronous: at most the writes in flight)");
    c.start_node(p);
    let rejoin_started = Instant::now();
    let primary = eventually(Duration::from_secs(60), "the lost member to rejoin", || async { c.converged(w) }).await;
    assert_eq!(primary, second, "{}", c.logs());
    let rejoined = rejoin_started.elapsed();
    eprintln!("member lost: writes back {failover:?} after the kill; rejoined {rejoined:?} after its node restarted");

    // 3. The primary's host is cut off from the others and from etcd: its etcd member loses
    // the quorum, its agent cannot renew the lease, and its fence stops PostgreSQL before the
    // lease (ttl 4 s) could expire. The other two elect a new primary; writes through a
    // surviving host's router resume.
    let p = host_of(&second);
    let w = (p + 1) % HOSTS;
    let writer = Writer::start_from(c.rw(w), ADMIN_PASSWORD.to_string(), 1_000_000).await;
    wait_for_acks(&writer, 30, "30 rows before the partition").await;
    c.hosts.cut(p);
    let cut = Instant::now();
    eventually(Duration::from_secs(10), "the partitioned primary to be fenced", || async {
        c.takes_no_connections(p).await.then_some(())
    })
    .await;
    let fenced = cut.elapsed();
    assert!(fenced < Duration::from_secs(4), "fenced only {fenced:?} after the cut\n{}", tail(&c.node_log(p), 60));
    let log = c.node_log(p);
    assert!(log.contains("fencing: the leader lease was not renewed"), "{}", tail(&log, 40));
    let before = writer.acked();
    wait_for_acks(&writer, before + 30, "writes through the router after the partition").await;
    let failover = cut.elapsed();
    let acked = writer.stop().await;
    let third = c.leader(w).expect("a leader");
    assert_ne!(third, second, "a member on the majority side leads");
    let lost = missing_at(c.pg(host_of(&third)), ADMIN_PASSWORD, &acked).await;
    eventually(Duration::from_secs(20), "the partitioned primary's PostgreSQL to exit", || async {
        (!c.postgres_runs(p)).then_some(())
    })
    .await;
    let stopped = cut.elapsed();
    eprintln!(
        "partition: no connection taken {fenced:?} after the cut (postmaster gone after {stopped:?}); writes back \
         {failover:?} after it; {} rows lost",
        lost.len()
    );
    assert!(lost.len() <= 2, "lost {lost:?} (asynchronous: at most the writes in flight)");

    // Healed: the old primary is rewound and rejoins as a replica; all converge, and the new
    // primary is not disturbed.
    let t = host_of(&third);
    let heard_before_heal = c.node_log(t).len();
    c.hosts.heal(p);
    let healed = Instant::now();
    let primary = eventually(Duration::from_secs(60), "all to converge after healing", || async {
        c.converged(p).filter(|_| c.postgres_runs(p))
    })
    .await;
    assert_eq!(primary, third);
    let converged = healed.elapsed();
    let log = c.node_log(p);
    assert!(log.contains("rewound and rejoined as a replica"), "{}", tail(&log, 40));
    let since_heal = c.node_log(t)[heard_before_heal..].to_string();
    assert!(!since_heal.contains("fencing"), "healing disturbed the new primary:\n{since_heal}");
    let roles = c.in_recovery().await;
    let expected: Vec<Option<bool>> = (0..HOSTS).map(|i| Some(i != t)).collect();
    assert_eq!(roles, expected, "pg_is_in_recovery() on each host after healing");
    let kept: Vec<i64> = acked.iter().copied().filter(|id| !lost.contains(id)).collect();
    eventually(Duration::from_secs(10), "the rejoined member to have every row", || async {
        missing_at(c.pg(p), ADMIN_PASSWORD, &kept).await.is_empty().then_some(())
    })
    .await;

    // 4. The primary's whole node (agent and router: one process) is stopped while a client
    // writes through that node's router, over a connection the kernel splices. The fencer, a
    // process of its own, kills PostgreSQL before the lease could expire, so nothing the
    // stopped router still forwards reaches a writable server; another host takes over, and
    // when the node wakes its member rejoins as a replica.
    let p = t;
    let node = c.nodes[p].expect("the primary's node runs");
    let through = common::writer::connect_at(c.rw(p), ADMIN_PASSWORD).await.unwrap();
    through.batch_execute("CREATE TABLE through_router (sent_ms bigint)").await.unwrap();
    let w = (p + 1) % HOSTS;
    let writer = Writer::start_from(c.rw(w), ADMIN_PASSWORD.to_string(), 2_000_000).await;
    wait_for_acks(&writer, 20, "20 rows before the node is stopped").await;
    signal(node, libc::SIGSTOP);
    let stopped_ms = unix_ms();
    let mut acked_through = Vec::new();
    let writing_until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < writing_until {
        let sent_ms = unix_ms();
        let sent = sent_ms as i64;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&sent];
        let insert = through.execute("INSERT INTO through_router VALUES ($1)", &params);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), insert).await {
            acked_through.push(sent_ms);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fourth = eventually(Duration::from_secs(30), "another host taking over from the stopped node", || async {
        c.leader(w).filter(|l| *l != third)
    })
    .await;
    let before = writer.acked();
    wait_for_acks(&writer, before + 20, "writes through another router after the takeover").await;
    let acked = writer.stop().await;
    signal(node, libc::SIGCONT);
    let primary = eventually(Duration::from_secs(60), "all to converge after the node woke", || async {
        c.converged(w).filter(|_| c.postgres_runs(p))
    })
    .await;
    assert_eq!(primary, fourth);
    let status = c.status(w).unwrap();
    let fenced_ms = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == third)
        .and_then(|m| m["last_fenced_unix_ms"].as_u64())
        .unwrap_or_else(|| panic!("the fence of {third} in status: {status:#}"));
    assert!(fenced_ms > stopped_ms, "fenced at {fenced_ms}, before the node was stopped at {stopped_ms}");
    assert!(!acked_through.is_empty(), "the spliced connection took writes while the lease held");
    let last_through = *acked_through.last().unwrap();
    assert!(
        last_through < fenced_ms,
        "a write sent through the stopped router at {last_through} was acknowledged after the fence at {fenced_ms}"
    );
    let closed = tokio::time::timeout(Duration::from_secs(10), through.execute("SELECT 1", &[])).await;
    assert!(!matches!(closed, Ok(Ok(_))), "the spliced connection to the fenced primary still answers");
    assert!(c.node_log(p).contains("fencing: the leader lease was not renewed"), "{}", tail(&c.node_log(p), 40));
    let lost = missing_at(c.pg(host_of(&fourth)), ADMIN_PASSWORD, &acked).await;
    assert!(lost.len() <= 2, "lost {lost:?} (asynchronous: at most the writes in flight)");
    eprintln!(
        "stopped node: {} writes through its router, the last sent +{} ms; fenced +{} ms after the stop",
        acked_through.len(),
        last_through - stopped_ms,
        fenced_ms - stopped_ms
    );
    assert_eq!(watch.stop().await, 1, "never two writable primaries at once");

    // `up` in a node's directory would run every member on this one host: refused.
    let out = c.pgrepl(0).arg("up").stdout(Stdio::piped()).stderr(Stdio::piped()).output().unwrap();
    assert!(!out.status.success(), "up in a node directory must fail");
    assert!(String::from_utf8_lossy(&out.stderr).contains("run `pgrepl node` on each host"), "{out:?}");
    eprintln!("healed: converged {converged:?} after healing; whole test {:?}", started.elapsed());
}
