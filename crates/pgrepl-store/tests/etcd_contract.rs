//! Runs the store contract suite against a real etcd: one single-member etcd per test (Debian's
//! `etcd-server`, which scripts/setup.sh installs), in a temporary directory on free loopback
//! ports, reached through two separate `EtcdStore` clients. Also checks what the agent relies on
//! beyond the contract: the prefix, the lease lengths, no leaked leases, and that a store whose
//! etcd is gone or silent fails with `Unavailable` within its timeout, then works again (the
//! same client) once etcd is back.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgrepl_store::contract::Contract;
use pgrepl_store::testing::Etcd;
use pgrepl_store::{Condition, EtcdStore, Store, StoreError};

/// The store timeout of the clients under test.
const TIMEOUT: Duration = Duration::from_secs(2);
const PREFIX: &str = "/pgrepl/test/";

/// A store client on `etcd` under this file's prefix.
async fn connect(etcd: &Etcd, timeout: Duration) -> EtcdStore {
    EtcdStore::connect(&[etcd.endpoint()], PREFIX, timeout).await.expect("connect to etcd")
}

async fn raw_client(etcd: &Etcd) -> etcd_client::Client {
    etcd_client::Client::connect([etcd.endpoint()], None).await.expect("connect raw etcd client")
}

/// A fresh etcd and the contract bound to two separate clients on it. etcd grants leases in
/// whole seconds, at least 2 s with its default election timeout: the TTL properties use 2 s.
async fn etcd_contract() -> (Contract, Etcd) {
    let etcd = Etcd::start().await;
    let a = connect(&etcd, TIMEOUT).await;
    let b = connect(&etcd, TIMEOUT).await;
    (Contract::new(Arc::new(a), Arc::new(b)).ttl(Duration::from_secs(2)), etcd)
}

mod contract {
    pgrepl_store::contract_tests!(super::etcd_contract().await);
}

/// Keys live under the prefix in etcd, come back without it, and two prefixes (two clusters)
/// do not see each other's keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_live_under_the_prefix() {
    let etcd = Etcd::start().await;
    let one = EtcdStore::connect(&[etcd.endpoint()], "/pgrepl/one/", TIMEOUT).await.expect("connect");
    let two = EtcdStore::connect(&[etcd.endpoint()], "/pgrepl/one-more/", TIMEOUT).await.expect("connect");
    let revision = one.put("leader", b"node-1", Condition::Absent, None).await.expect("put");
    two.put("leader", b"node-7", Condition::Absent, None).await.expect("put in the other prefix");

    let snap = one.snapshot().await.expect("snapshot");
    assert_eq!(snap.entries.keys().collect::<Vec<_>>(), ["leader"]);
    assert_eq!(snap.get("leader").map(|e| (e.value.as_slice(), e.revision)), Some((&b"node-1"[..], revision)));

    let mut raw = raw_client(&etcd).await;
    let stored = raw.get("/pgrepl/one/leader", None).await.expect("raw get");
    assert_eq!(stored.kvs().first().map(|kv| kv.value()), Some(&b"node-1"[..]), "the key is not under its prefix");
}

/// A TTL becomes a lease of whole seconds rounded up (never shorter than asked); `expires_in`
/// is the lease's time left, at most a second short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_leases_round_up_to_whole_seconds() {
    let etcd = Etcd::start().await;
    let store = connect(&etcd, TIMEOUT).await;
    let mut raw = raw_client(&etcd).await;
    for (ttl, seconds) in [(Duration::from_millis(2100), 3), (Duration::from_secs(3), 3), (Duration::from_secs(5), 5)] {
        let asked = Instant::now();
        store.put("leader", b"v", Condition::Any, Some(ttl)).await.expect("put with ttl");
        let stored = raw.get(format!("{PREFIX}leader"), None).await.expect("raw get");
        let lease = stored.kvs().first().map(|kv| kv.lease()).expect("key missing");
        let granted = raw.lease_time_to_live(lease, None).await.expect("lease time to live");
        assert_eq!(granted.granted_ttl(), seconds, "lease for a ttl of {ttl:?}");

        let entry = store.snapshot().await.expect("snapshot").get("leader").cloned().expect("key missing");
        let left = entry.expires_in.expect("a TTL key without expires_in");
        let most = Duration::from_secs(seconds as u64).saturating_sub(asked.elapsed());
        assert!(
            left <= most && left + Duration::from_secs(1) >= most.saturating_sub(Duration::from_millis(200)),
            "expires_in {left:?} for a lease of {seconds} s with at most {most:?} left"
        );
    }
}

/// Each lease holds one key while it lives: a rewrite revokes the key's old lease, a failed
/// conditional put revokes the one it granted, and a put without TTL or a delete leaves none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_do_not_leak() {
    let etcd = Etcd::start().await;
    let store = connect(&etcd, TIMEOUT).await;
    let mut raw = raw_client(&etcd).await;
    let ttl = Some(Duration::from_secs(30));

    let r = store.put("a", b"1", Condition::Absent, ttl).await.expect("put");
    store.put("a", b"2", Condition::Revision(r), ttl).await.expect("renew");
    store.put("b", b"1", Condition::Any, ttl).await.expect("put");
    wait_for_leases(&mut raw, 2, "after a renewal").await;

    let failed = store.put("a", b"3", Condition::Absent, ttl).await;
    assert!(matches!(failed, Err(StoreError::Conflict { .. })), "put absent on a live key: {failed:?}");
    wait_for_leases(&mut raw, 2, "after a failed conditional put").await;

    store.put("a", b"4", Condition::Any, None).await.expect("put without ttl");
    wait_for_leases(&mut raw, 1, "after a put without ttl").await;
    store.delete("b", Condition::Any).await.expect("delete");
    wait_for_leases(&mut raw, 0, "after a delete").await;
    let snap = store.snapshot().await.expect("snapshot");
    assert_eq!(snap.get("a").map(|e| (e.value.as_slice(), e.expires_in)), Some((&b"4"[..], None)));
}

async fn wait_for_leases(raw: &mut etcd_client::Client, want: usize, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let leases = raw.leases().await.expect("list leases").leases().len();
        if leases == want {
            return;
        }
        assert!(Instant::now() < deadline, "{when}: {leases} leases, want {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every call on `store` fails with `Unavailable` within its timeout (plus a margin), even a
/// `wait_change` asked to wait much longer.
async fn assert_every_call_unavailable(store: &EtcdStore, timeout: Duration, why: &str) {
    let ttl = Some(Duration::from_secs(5));
    expect_unavailable(why, "snapshot", timeout, store.snapshot()).await;
    expect_unavailable(why, "put", timeout, store.put("k", b"v", Condition::Any, None)).await;
    expect_unavailable(why, "put with ttl", timeout, store.put("k", b"v", Condition::Any, ttl)).await;
    expect_unavailable(why, "delete", timeout, store.delete("k", Condition::Any)).await;
    expect_unavailable(why, "wait_change", timeout, store.wait_change(0, Duration::from_secs(30))).await;
}

async fn expect_unavailable<T: std::fmt::Debug>(
    why: &str,
    call: &str,
    timeout: Duration,
    future: impl std::future::Future<Output = Result<T, StoreError>>,
) {
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), future).await;
    let took = started.elapsed();
    match result {
        Ok(Err(StoreError::Unavailable(_))) => {}
        Ok(other) => panic!("{why}: {call} gave {other:?}, not Unavailable"),
        Err(_) => panic!("{why}: {call} hung for 10 s"),
    }
    assert!(
        took < timeout + Duration::from_millis(500),
        "{why}: {call} took {took:?} to fail; its timeout is {timeout:?}"
    );
}

/// A `wait_change` under way when etcd dies, and every call after, fail with `Unavailable`
/// within the timeout; once etcd is started again on the same data directory, the same client
/// works again and the data is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_etcd_is_unavailable_promptly_and_the_same_client_recovers() {
    let timeout = Duration::from_secs(1);
    let mut etcd = Etcd::start().await;
    let store = connect(&etcd, timeout).await;
    let written = store.put("kept", b"v", Condition::Absent, None).await.expect("put");

    let waiting = {
        let store = store.clone();
        tokio::spawn(async move { store.wait_change(written, Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "wait_change returned with nothing written");
    etcd.stop();
    let waited = async { waiting.await.expect("wait_change task") };
    expect_unavailable("etcd stopped during the wait", "wait_change", timeout, waited).await;
    assert_every_call_unavailable(&store, timeout, "etcd stopped").await;

    etcd.restart().await;
    let started = Instant::now();
    let snap = loop {
        match store.snapshot().await {
            Ok(snap) => break snap,
            Err(e) => {
                assert!(started.elapsed() < Duration::from_secs(10), "the old client did not recover: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(snap.get("kept").map(|e| (e.value.as_slice(), e.revision)), Some((&b"v"[..], written)));
    let r = store.put("kept", b"w", Condition::Revision(written), None).await.expect("put after restart");
    assert!(r > written);
}

/// An endpoint that accepts connections but never answers (a hung etcd) gives `Unavailable`
/// within the timeout, never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_endpoint_is_unavailable_promptly() {
    let timeout = Duration::from_secs(1);
    // The kernel completes connections into the backlog; nobody ever reads them.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let endpoint = format!("http://{}", silent.local_addr().expect("local address"));
    let started = Instant::now();
    let store = EtcdStore::connect(&[endpoint], PREFIX, timeout).await.expect("connect is lazy");
    assert!(started.elapsed() < timeout, "connect waited for the server");
    assert_every_call_unavailable(&store, timeout, "silent endpoint").await;
    drop(silent);
}
