//! The contract every `Store` backend must pass: one test suite, written once, run against each
//! backend from its tests (`tests/contract.rs` for memory and file, `tests/etcd_contract.rs`).
//!
//! Entry points: [`run_all`] for the whole suite, or [`Contract`] to set options and run one
//! property per test ([`contract_tests!`](crate::contract_tests) writes those tests). Each property panics (with a message saying which promise broke) when the
//! backend fails it, like any test assertion.
//!
//! A suite needs two handles on the same store (`a` and `b`): for the file backend, two
//! `FileStore::open` on one directory; for memory, two clones; for etcd, two clients. Properties
//! write only keys under the prefix (default `contract/`), but they compare store revisions, so
//! nothing else may write to the store while one runs. A fresh store per property is simplest.
//! This module must not depend on any backend.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Barrier;

use crate::{Condition, Revision, Snapshot, Store, StoreError};

/// One `#[tokio::test]` per property of the contract, each on the `(Contract, keep-alive)` pair
/// the expression makes (evaluated inside the test, so it may `.await`). Invoke it once per
/// backend, in a module of its own: `mod file { pgrepl_store::contract_tests!(super::file_contract()); }`.
/// The list of properties here must match [`Contract::run_all`], just below.
#[macro_export]
macro_rules! contract_tests {
    ($make:expr) => {
        $crate::contract_tests!(@each $make;
            put_get_round_trip,
            revisions_strictly_increase,
            absent_condition,
            revision_condition,
            delete_conditions,
            ttl_expires_and_renews,
            snapshot_is_consistent,
            wait_change_wakes_on_write_from_other_handle,
            wait_change_times_out,
            concurrent_absent_puts_have_one_winner,
            concurrent_updates_are_not_lost,
        );
    };
    (@each $make:expr; $($property:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $property() {
                let (contract, _keep) = $make;
                contract.$property().await;
            }
        )*
    };
}

/// Run every property against a store reached through two handles `a` and `b`, with the
/// default options (TTL 300 ms, prefix `contract/`).
pub async fn run_all(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    Contract::new(a, b).run_all().await;
}

/// The contract suite bound to two handles on one store, with its options.
#[derive(Clone)]
pub struct Contract {
    a: Arc<dyn Store>,
    b: Arc<dyn Store>,
    ttl: Duration,
    prefix: String,
}

impl Contract {
    /// `a` and `b` must be two handles on the same store (they may be the same handle, but then
    /// the cross-handle properties prove less).
    pub fn new(a: Arc<dyn Store>, b: Arc<dyn Store>) -> Contract {
        Contract { a, b, ttl: Duration::from_millis(300), prefix: "contract/".to_owned() }
    }

    /// The TTL the TTL properties use (default 300 ms). Backends with coarse leases (etcd
    /// grants whole seconds) need a longer one. The suite waits up to about 4 × ttl + 2 s for
    /// an expiry to show.
    pub fn ttl(mut self, ttl: Duration) -> Contract {
        self.ttl = ttl;
        self
    }

    /// The prefix of every key the properties write (default `contract/`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Contract {
        self.prefix = prefix.into();
        self
    }

    /// Every property, one after the other.
    pub async fn run_all(&self) {
        self.put_get_round_trip().await;
        self.revisions_strictly_increase().await;
        self.absent_condition().await;
        self.revision_condition().await;
        self.delete_conditions().await;
        self.ttl_expires_and_renews().await;
        self.snapshot_is_consistent().await;
        self.wait_change_wakes_on_write_from_other_handle().await;
        self.wait_change_times_out().await;
        self.concurrent_absent_puts_have_one_winner().await;
        self.concurrent_updates_are_not_lost().await;
    }

    fn key(&self, property: &str, name: &str) -> String {
        format!("{}{property}/{name}", self.prefix)
    }

    /// How long an expiry may take to show, past its deadline.
    fn expiry_grace(&self) -> Duration {
        self.ttl * 3 + Duration::from_secs(2)
    }

    /// A value written through one handle reads back, byte for byte, through both; an
    /// overwrite replaces it.
    pub async fn put_get_round_trip(&self) {
        let (a, b) = (&*self.a, &*self.b);
        let json = self.key("round-trip", "json");
        let binary = self.key("round-trip", "binary");
        let empty = self.key("round-trip", "empty");
        let doc = br#"{"member":"a","lsn":"0/3000060","tags":["x"]}"#;
        let bytes = [0xff, 0x00, 0x80, b'"', b'\\', 0xc3];

        let r1 = put(a, &json, doc, Condition::Any, None).await;
        let r2 = put(a, &binary, &bytes, Condition::Any, None).await;
        let r3 = put(b, &empty, b"", Condition::Any, None).await;
        for store in [a, b] {
            let snap = snapshot(store).await;
            assert!(snap.revision >= r3, "snapshot revision {} < last write {r3}", snap.revision);
            for (key, value, revision) in [(&json, &doc[..], r1), (&binary, &bytes[..], r2), (&empty, &b""[..], r3)] {
                let entry = snap.get(key).unwrap_or_else(|| panic!("{key} missing after put"));
                assert_eq!(entry.key, *key);
                assert_eq!(entry.value, value, "value of {key}");
                assert_eq!(entry.revision, revision, "revision of {key}");
                assert_eq!(entry.expires_in, None, "{key} was written without a TTL");
            }
        }

        let r4 = put(b, &json, b"second", Condition::Any, None).await;
        let snap = snapshot(a).await;
        let entry = snap.get(&json).expect("overwritten key missing");
        assert_eq!(entry.value, b"second");
        assert_eq!(entry.revision, r4);
    }

    /// Every successful write returns a revision above all before it, whichever handle made it;
    /// failed conditions and deletes of absent keys change nothing.
    pub async fn revisions_strictly_increase(&self) {
        let (a, b) = (&*self.a, &*self.b);
        let x = self.key("revisions", "x");
        let y = self.key("revisions", "y");
        let start = snapshot(a).await.revision;

        let mut last = start;
        let mut written = Vec::new();
        for (i, store) in [a, b, a, b].into_iter().enumerate() {
            let value = i.to_string();
            let key = if i % 2 == 0 { &x } else { &y };
            let r = put(store, key, value.as_bytes(), Condition::Any, None).await;
            written.push(r);
            assert!(r > last, "write {i} returned revision {r}, not above {last}");
            last = r;
        }
        let x_rev = snapshot(b).await.get(&x).expect("x missing").revision;
        let r = put(b, &x, b"cas", Condition::Revision(x_rev), None).await;
        assert!(r > last, "conditional put returned {r}, not above {last}");
        last = r;
        let r = delete(a, &y, Condition::Any).await;
        assert!(r > last, "delete returned {r}, not above {last}");
        last = r;
        assert_eq!(snapshot(b).await.revision, last, "store revision after the last write");

        expect_conflict(a.put(&x, b"no", Condition::Absent, None).await, "put absent on existing key");
        expect_conflict(a.delete(&x, Condition::Revision(x_rev)).await, "delete at a stale revision");
        assert_eq!(snapshot(a).await.revision, last, "a failed condition changed the revision");

        let r = delete(b, &y, Condition::Any).await;
        assert_eq!(r, last, "deleting an absent key must return the unchanged revision");
        assert_eq!(snapshot(a).await.revision, last, "deleting an absent key changed the revision");
    }

    /// `Absent` fails on an existing key and holds on a missing or expired one.
    pub async fn absent_condition(&self) {
        let (a, b) = (&*self.a, &*self.b);
        let key = self.key("absent", "k");
        let ttl_key = self.key("absent", "ttl");

        let r = put(a, &key, b"first", Condition::Absent, None).await;
        expect_conflict(b.put(&key, b"second", Condition::Absent, None).await, "put absent on existing key");
        let snap = snapshot(a).await;
        let entry = snap.get(&key).expect("key missing");
        assert_eq!((entry.value.as_slice(), entry.revision), (&b"first"[..], r), "a failed put wrote");

        delete(b, &key, Condition::Any).await;
        put(a, &key, b"third", Condition::Absent, None).await;

        put(a, &ttl_key, b"short", Condition::Absent, Some(self.ttl)).await;
        expect_conflict(b.put(&ttl_key, b"no", Condition::Absent, None).await, "put absent on a live TTL key");
        self.wait_until_absent(b, &ttl_key, Instant::now() + self.ttl + self.expiry_grace()).await;
        put(b, &ttl_key, b"after expiry", Condition::Absent, None).await;
    }

    /// `Revision(r)` holds only when the key exists and its entry revision is exactly `r`.
    pub async fn revision_condition(&self) {
        let (a, b) = (&*self.a, &*self.b);
        let key = self.key("revision", "k");
        let other = self.key("revision", "other");
        let missing = self.key("revision", "missing");
        let ttl_key = self.key("revision", "ttl");

        let r1 = put(a, &key, b"1", Condition::Any, None).await;
        let r2 = put(b, &key, b"2", Condition::Revision(r1), None).await;
        expect_conflict(a.put(&key, b"x", Condition::Revision(r1), None).await, "put at a stale revision");
        expect_conflict(a.put(&key, b"x", Condition::Revision(r2 + 1000), None).await, "put at a future revision");

        // The entry revision counts, not the store revision.
        let store_rev = put(a, &other, b"o", Condition::Any, None).await;
        expect_conflict(b.put(&key, b"x", Condition::Revision(store_rev), None).await, "put at the store revision");
        let r3 = put(b, &key, b"3", Condition::Revision(r2), None).await;
        assert_eq!(snapshot(a).await.get(&key).map(|e| (e.value.clone(), e.revision)), Some((b"3".to_vec(), r3)));

        expect_conflict(
            a.put(&missing, b"x", Condition::Revision(r1), None).await,
            "put at a revision on a missing key",
        );
        assert!(snapshot(a).await.get(&missing).is_none(), "a failed put created the key");

        let rt = put(a, &ttl_key, b"t", Condition::Any, Some(self.ttl)).await;
        self.wait_until_absent(b, &ttl_key, Instant::now() + self.ttl + self.expiry_grace()).await;
        expect_conflict(
            b.put(&ttl_key, b"x", Condition::Revision(rt), None).await,
            "put at the revision of an expired key",
        );
    }

    /// `delete` obeys its condition; `Any` and `Absent` on an absent key are no-ops.
    pub async fn delete_conditions(&self) {
        let (a, b) = (&*self.a, &*self.b);
        let key = self.key("delete", "k");
        let ttl_key = self.key("delete", "ttl");

        let before = snapshot(a).await.revision;
        assert_eq!(delete(a, &key, Condition::Any).await, before, "delete any of an absent key");
        assert_eq!(delete(b, &key, Condition::Absent).await, before, "delete absent of an absent key");
        expect_conflict(
            a.delete(&key, Condition::Revision(before.max(1))).await,
            "delete at a revision of an absent key",
        );

        let r = put(a, &key, b"v", Condition::Any, None).await;
        expect_conflict(b.delete(&key, Condition::Absent).await, "delete absent of an existing key");
        expect_conflict(b.delete(&key, Condition::Revision(r + 1)).await, "delete at a wrong revision");
        assert!(snapshot(a).await.get(&key).is_some(), "a failed delete removed the key");
        let rd = delete(b, &key, Condition::Revision(r)).await;
        assert!(rd > r, "delete returned {rd}, not above {r}");
        let snap = snapshot(a).await;
        assert!(snap.get(&key).is_none(), "deleted key still there");
        assert_eq!(snap.revision, rd);

        put(a, &key, b"v", Condition::Any, None).await;
        delete(b, &key, Condition::Any).await;
        assert!(snapshot(a).await.get(&key).is_none(), "deleted key still there");

        let rt = put(a, &ttl_key, b"t", Condition::Any, Some(self.ttl)).await;
        self.wait_until_absent(b, &ttl_key, Instant::now() + self.ttl + self.expiry_grace()).await;
        expect_conflict(b.delete(&ttl_key, Condition::Revision(rt)).await, "delete at the revision of an expired key");
        delete(b, &ttl_key, Condition::Any).await;
    }

    /// A TTL key vanishes `ttl` after its last write; a re-put renews it; a put without TTL
    /// makes it permanent.
    pub async fn ttl_expires_and_renews(&self) {
        let (a, b) = (&*self.a, &*self.b);
        let ttl = self.ttl;
        let renewed = self.key("ttl", "renewed");
        let lapsed = self.key("ttl", "lapsed");
        let permanent = self.key("ttl", "permanent");

        put(a, &renewed, b"1", Condition::Any, Some(ttl)).await;
        put(a, &lapsed, b"1", Condition::Any, Some(ttl)).await;
        put(a, &permanent, b"1", Condition::Any, Some(ttl)).await;
        // Every first write happened before `t0`, so each first expiry is before `t0 + ttl`.
        let t0 = Instant::now();
        let snap = snapshot(b).await;
        for key in [&renewed, &lapsed, &permanent] {
            let left = snap.get(key).and_then(|e| e.expires_in);
            assert!(
                matches!(left, Some(d) if !d.is_zero() && d <= ttl),
                "{key}: expires_in {left:?} should be in (0, {ttl:?}]"
            );
        }

        // Renewals happen after `t0 + ttl/2`, so they expire after `t0 + 3/2 ttl`.
        tokio::time::sleep(ttl / 2).await;
        put(b, &renewed, b"2", Condition::Any, Some(ttl)).await;
        put(b, &permanent, b"2", Condition::Any, None).await;
        let snap = snapshot(a).await;
        assert_eq!(snap.get(&permanent).map(|e| e.expires_in), Some(None), "a put without TTL must clear the TTL");

        // Past every first expiry, before any renewed one.
        tokio::time::sleep((t0 + ttl * 5 / 4).saturating_duration_since(Instant::now())).await;
        let snap = snapshot(a).await;
        assert!(
            Instant::now() < t0 + ttl * 3 / 2,
            "too slow to check a renewal within the ttl {ttl:?}; use a longer one"
        );
        let entry = snap.get(&renewed).expect("a renewed key expired at its first TTL");
        assert_eq!(entry.value, b"2");

        self.wait_until_absent(a, &lapsed, t0 + ttl + self.expiry_grace()).await;
        self.wait_until_absent(b, &renewed, t0 + ttl * 3 / 2 + self.expiry_grace()).await;
        let snap = snapshot(a).await;
        assert!(snap.get(&lapsed).is_none() && snap.get(&renewed).is_none(), "an expired key came back");
        assert_eq!(snap.get(&permanent).map(|e| e.value.as_slice()), Some(&b"2"[..]), "a permanent key expired");
    }

    /// A snapshot is one view: its entries never show a later write without an earlier one,
    /// and no entry is newer than the snapshot's revision.
    pub async fn snapshot_is_consistent(&self) {
        const ROUNDS: u64 = 15;
        let first = self.key("snapshot", "first");
        let second = self.key("snapshot", "second");
        let writer = {
            let (b, first, second) = (Arc::clone(&self.b), first.clone(), second.clone());
            tokio::spawn(async move {
                for n in 1..=ROUNDS {
                    put(&*b, &first, n.to_string().as_bytes(), Condition::Any, None).await;
                    put(&*b, &second, n.to_string().as_bytes(), Condition::Any, None).await;
                }
            })
        };
        let mut last_revision = 0;
        let mut seen_second = 0;
        loop {
            let done = writer.is_finished();
            let snap = snapshot(&*self.a).await;
            check_snapshot_shape(&snap);
            assert!(
                snap.revision >= last_revision,
                "snapshot revision went back from {last_revision} to {}",
                snap.revision
            );
            last_revision = snap.revision;
            let f = number(&snap, &first);
            let s = number(&snap, &second);
            assert!(f >= s, "snapshot shows second = {s} but first = {f}: writes seen out of order");
            assert!(f <= s + 1, "snapshot shows first = {f} but second = {s}: a write in between is missing");
            assert!(s >= seen_second, "second went back from {seen_second} to {s}");
            seen_second = s;
            if done {
                break;
            }
            // Let the writer run even on a single-threaded runtime.
            tokio::task::yield_now().await;
        }
        writer.await.expect("snapshot writer task");
        assert_eq!(seen_second, ROUNDS, "the last snapshot missed the final writes");
    }

    /// `wait_change` returns as soon as another handle writes, and at once when the revision
    /// is already past `after`.
    pub async fn wait_change_wakes_on_write_from_other_handle(&self) {
        let key = self.key("wait", "wake");
        let before = snapshot(&*self.a).await.revision;
        let writer = {
            let (b, key) = (Arc::clone(&self.b), key.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                put(&*b, &key, b"v", Condition::Any, None).await
            })
        };
        let started = Instant::now();
        let woke = self.a.wait_change(before, Duration::from_secs(5)).await.expect("wait_change");
        let waited = started.elapsed();
        let written = writer.await.expect("wait_change writer task");
        assert!(woke > before, "wait_change returned {woke}, not above {before}");
        assert!(woke <= written, "wait_change returned {woke}, beyond the only write {written}");
        assert!(waited < Duration::from_secs(2), "wait_change took {waited:?} to see a write");

        let started = Instant::now();
        let now = self.a.wait_change(before, Duration::from_secs(5)).await.expect("wait_change");
        assert_eq!(now, written);
        assert!(started.elapsed() < Duration::from_secs(1), "wait_change waited although the revision had moved");
    }

    /// Without writes, `wait_change` returns the unchanged revision once its timeout passes.
    pub async fn wait_change_times_out(&self) {
        let timeout = Duration::from_millis(200);
        let before = snapshot(&*self.a).await.revision;
        let started = Instant::now();
        let after = self.a.wait_change(before, timeout).await.expect("wait_change");
        let waited = started.elapsed();
        assert_eq!(after, before, "wait_change reported a change nobody made");
        assert!(
            waited >= timeout - Duration::from_millis(10),
            "wait_change returned after {waited:?}, before its {timeout:?} timeout"
        );
        assert!(waited < timeout + Duration::from_secs(1), "wait_change overran its timeout: {waited:?}");
    }

    /// Tasks racing `put(key, Absent)` through both handles: exactly one wins, the others get
    /// a conflict, and the winner's value is what stays.
    pub async fn concurrent_absent_puts_have_one_winner(&self) {
        const RACERS: usize = 8;
        let key = self.key("race", "absent");
        let start = Arc::new(Barrier::new(RACERS));
        let mut tasks = Vec::new();
        for i in 0..RACERS {
            let store = Arc::clone(if i % 2 == 0 { &self.a } else { &self.b });
            let (key, start) = (key.clone(), Arc::clone(&start));
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                store.put(&key, i.to_string().as_bytes(), Condition::Absent, None).await
            }));
        }
        let mut winners = Vec::new();
        for (i, task) in tasks.into_iter().enumerate() {
            match task.await.expect("racing task") {
                Ok(revision) => winners.push((i, revision)),
                Err(e) => assert!(e.is_conflict(), "racer {i} failed with {e}, not a conflict"),
            }
        }
        assert_eq!(winners.len(), 1, "winners of put-if-absent: {winners:?}");
        let (winner, revision) = winners[0];
        let snap = snapshot(&*self.b).await;
        let entry = snap.get(&key).expect("raced key missing");
        assert_eq!(entry.value, winner.to_string().as_bytes(), "the stored value is not the winner's");
        assert_eq!(entry.revision, revision);
    }

    /// Tasks incrementing one counter by read, then `put` at the read revision, retrying on
    /// conflict: no increment is lost and every success gets its own revision.
    pub async fn concurrent_updates_are_not_lost(&self) {
        const TASKS: usize = 4;
        const INCREMENTS: usize = 5;
        let key = self.key("race", "counter");
        put(&*self.a, &key, b"0", Condition::Absent, None).await;
        let mut tasks = Vec::new();
        for i in 0..TASKS {
            let store = Arc::clone(if i % 2 == 0 { &self.a } else { &self.b });
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                let mut revisions = Vec::new();
                while revisions.len() < INCREMENTS {
                    let snap = snapshot(&*store).await;
                    let entry = snap.get(&key).expect("counter missing");
                    let next = (number(&snap, &key) + 1).to_string();
                    match store.put(&key, next.as_bytes(), Condition::Revision(entry.revision), None).await {
                        Ok(revision) => revisions.push(revision),
                        Err(e) if e.is_conflict() => tokio::task::yield_now().await,
                        Err(e) => panic!("increment failed: {e}"),
                    }
                }
                revisions
            }));
        }
        let mut revisions = Vec::new();
        for task in tasks {
            revisions.extend(task.await.expect("counter task"));
        }
        let total = TASKS * INCREMENTS;
        revisions.sort_unstable();
        revisions.dedup();
        assert_eq!(revisions.len(), total, "two successful writes shared a revision");
        let snap = snapshot(&*self.b).await;
        assert_eq!(number(&snap, &key), total as u64, "increments were lost");
        assert_eq!(snap.get(&key).map(|e| e.revision), revisions.last().copied());
    }

    /// Poll until `key` is gone; panic if it is still there at `deadline`.
    async fn wait_until_absent(&self, store: &dyn Store, key: &str, deadline: Instant) {
        loop {
            if snapshot(store).await.get(key).is_none() {
                return;
            }
            assert!(Instant::now() < deadline, "{key} did not expire (ttl {:?})", self.ttl);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn snapshot(store: &dyn Store) -> Snapshot {
    store.snapshot().await.unwrap_or_else(|e| panic!("snapshot: {e}"))
}

async fn put(store: &dyn Store, key: &str, value: &[u8], cond: Condition, ttl: Option<Duration>) -> Revision {
    store.put(key, value, cond, ttl).await.unwrap_or_else(|e| panic!("put {key} ({cond}): {e}"))
}

async fn delete(store: &dyn Store, key: &str, cond: Condition) -> Revision {
    store.delete(key, cond).await.unwrap_or_else(|e| panic!("delete {key} ({cond}): {e}"))
}

fn expect_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>, doing: &str) {
    match result {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("{doing}: expected a conflict, got {other:?}"),
    }
}

/// The decimal number stored under `key`, 0 if absent.
fn number(snap: &Snapshot, key: &str) -> u64 {
    snap.get(key).map_or(0, |e| {
        std::str::from_utf8(&e.value)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{key} holds {:?}, not a number", e.value))
    })
}

fn check_snapshot_shape(snap: &Snapshot) {
    for (key, entry) in &snap.entries {
        assert_eq!(&entry.key, key, "entry filed under another key");
        assert!(
            entry.revision <= snap.revision,
            "{key} has revision {} above the snapshot's {}",
            entry.revision,
            snap.revision
        );
    }
}
