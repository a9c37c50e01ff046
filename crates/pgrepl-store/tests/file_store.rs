//! What the file backend promises beyond the contract: its files, their modes, corruption
//! reported rather than reset, and the lock shared with other processes.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use pgrepl_store::{Condition, FileStore, Store, StoreError};

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).permissions().mode() & 0o7777
}

fn assert_corrupt<T: std::fmt::Debug>(result: Result<T, StoreError>, doing: &str) {
    match result {
        Err(StoreError::Corrupt { path, detail }) => {
            assert!(path.ends_with("state.json"), "{doing}: corrupt path {}", path.display());
            assert!(!detail.is_empty());
        }
        other => panic!("{doing}: expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn files_are_private_to_the_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested").join("store");
    let store = FileStore::open(&dir).unwrap();
    store.put("k", b"v", Condition::Any, Some(Duration::from_secs(60))).await.unwrap();
    assert_eq!(mode(&dir), 0o700, "store directory");
    assert_eq!(mode(&dir.join("state.json")), 0o600, "state.json");
    assert_eq!(mode(&dir.join("lock")), 0o600, "lock");
    let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "temporary file left: {names:?}");
}

#[tokio::test]
async fn missing_state_is_an_empty_store_and_writes_persist() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path()).unwrap();
    let snap = store.snapshot().await.unwrap();
    assert_eq!((snap.revision, snap.entries.len()), (0, 0));
    assert!(!tmp.path().join("state.json").exists(), "a read must not create state.json");

    let r = store.put("k", &[0xff, 0x01], Condition::Absent, None).await.unwrap();
    store.put("doc", br#"{"a":1}"#, Condition::Absent, None).await.unwrap();
    let reopened = FileStore::open(tmp.path()).unwrap();
    let snap = reopened.snapshot().await.unwrap();
    assert_eq!(snap.get("k").map(|e| (e.value.clone(), e.revision)), Some((vec![0xff, 0x01], r)));
    assert_eq!(snap.get("doc").map(|e| e.value.clone()), Some(br#"{"a":1}"#.to_vec()));

    let text = fs::read_to_string(tmp.path().join("state.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["entries"]["doc"]["value"], r#"{"a":1}"#, "UTF-8 values are stored as strings");
    assert_eq!(json["entries"]["k"]["value"], serde_json::json!([255, 1]), "other values as bytes");
}

#[tokio::test]
async fn a_corrupt_state_file_is_reported_never_reset() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.json");
    fs::write(&state, b"{\"revision\": 3, \"entries\": {").unwrap();
    assert_corrupt(FileStore::open(tmp.path()), "open");

    fs::remove_file(&state).unwrap();
    let store = FileStore::open(tmp.path()).unwrap();
    store.put("k", b"v", Condition::Any, None).await.unwrap();
    for garbage in [
        &b"not json"[..],
        br#"{"revision": 1, "entries": {"k": {"value": "v", "revision": 2}}}"#,
        br#"{"revision": 1, "entries": {}, "surprise": true}"#,
        br#"{"revision": 1, "entries": {"k": {"value": {"x": 1}, "revision": 1}}}"#,
    ] {
        fs::write(&state, garbage).unwrap();
        assert_corrupt(store.snapshot().await, "snapshot");
        assert_corrupt(store.put("k", b"new", Condition::Any, None).await, "put");
        assert_corrupt(store.delete("k", Condition::Any).await, "delete");
        assert_corrupt(store.wait_change(0, Duration::from_millis(10)).await, "wait_change");
        assert_eq!(fs::read(&state).unwrap(), garbage, "a corrupt file was rewritten");
    }
}

#[tokio::test]
async fn writes_drop_expired_entries_from_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path()).unwrap();
    store.put("short", b"v", Condition::Any, Some(Duration::from_millis(30))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    store.put("other", b"v", Condition::Any, None).await.unwrap();
    let text = fs::read_to_string(tmp.path().join("state.json")).unwrap();
    assert!(!text.contains("short"), "expired entry still in state.json:\n{text}");
}

/// Another process holding the lock exclusively (as during its write) holds off this one's
/// writes until it lets go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_wait_for_the_lock_held_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path()).unwrap();
    let lock = fs::File::open(tmp.path().join("lock")).unwrap();
    // SAFETY: `lock` is an open descriptor for the whole call.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);

    let writer = {
        let store = store.clone();
        tokio::spawn(async move { store.put("k", b"v", Condition::Absent, None).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!writer.is_finished(), "a write went ahead while another process held the lock");
    drop(lock);
    let revision = tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .expect("write still blocked after the lock was released")
        .unwrap()
        .unwrap();
    assert_eq!(revision, 1);
}

/// A process stopped while it holds the lock (SIGSTOP in the middle of a write) must not hang
/// every other one: after a bounded wait, reads and writes fail as unavailable, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_for_long_fails_operations_instead_of_hanging_them() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::open(tmp.path()).unwrap();
    let lock = fs::File::open(tmp.path().join("lock")).unwrap();
    // SAFETY: `lock` is an open descriptor for the whole call.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let started = std::time::Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(10), store.snapshot()).await.expect("a read hung");
    let waited = started.elapsed();
    match read {
        Err(StoreError::Unavailable(why)) => assert!(why.contains("held by another process"), "{why}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(waited >= Duration::from_millis(1500), "gave up after {waited:?}, sooner than its patience");
    let write = tokio::time::timeout(Duration::from_secs(10), store.put("k", b"v", Condition::Any, None)).await;
    assert!(matches!(write, Ok(Err(StoreError::Unavailable(_)))), "{write:?}");
    drop(lock);
    store.put("k", b"v", Condition::Any, None).await.unwrap();
}
