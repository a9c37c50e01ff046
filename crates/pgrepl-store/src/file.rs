//! The file store: the `Store` semantics in one directory shared by several processes on one
//! machine (agents and CLI commands).
//!
//! Layout of the directory (mode 0700 when this code creates it):
//! - `lock`: empty; every operation holds `flock` on it, shared for reads, exclusive for writes.
//! - `state.json` (mode 0600): the whole store, replaced atomically on every write (temporary
//!   file `state.json.tmp`, fsync, rename, fsync of the directory; Neon's control_file pattern).
//!   A missing file is an empty store at revision 0.
//!
//! `state.json` looks like:
//! ```json
//! { "revision": 7,
//!   "entries": { "leader": { "value": "{\"member\":\"a\"}", "revision": 7,
//!                            "expires_at_unix_ms": 1700000000000 } } }
//! ```
//! A value that is valid UTF-8 (values are JSON documents in practice) is stored as a JSON
//! string, so the file stays readable; any other value as a JSON array of bytes. Both read back
//! as the exact bytes written. TTLs are absolute wall-clock times (`SystemTime`) because several
//! processes share them; expired entries are dropped on the next write.
//!
//! A file that cannot be understood is `StoreError::Corrupt`: this module never resets or
//! repairs it. It must not keep state in memory between operations: the file is the truth.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{Condition, Entry, Revision, Snapshot, Store, StoreError};

const STATE_FILE: &str = "state.json";
const TEMP_FILE: &str = "state.json.tmp";
const LOCK_FILE: &str = "lock";
/// How long an operation waits for the lock before it fails as unavailable (a write holds it
/// for milliseconds; a process stopped while holding it must not hang every other one).
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(5);
/// How often `wait_change` reads the revision.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A store in a directory. Cheap to clone; every operation reads the file afresh, so any number
/// of handles (in this or other processes) may share the directory.
#[derive(Clone, Debug)]
pub struct FileStore {
    paths: Arc<Paths>,
}

#[derive(Debug)]
struct Paths {
    dir: PathBuf,
    state: PathBuf,
    temp: PathBuf,
    lock: PathBuf,
}

impl FileStore {
    /// Open the store in `dir`, creating the directory (mode 0700) and its lock file if
    /// missing. Reads `state.json` once, so a corrupt store fails here rather than later.
    pub fn open(dir: &Path) -> Result<FileStore, StoreError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| io_error(format!("create store directory {}", dir.display()), source))?;
        let store = FileStore {
            paths: Arc::new(Paths {
                dir: dir.to_owned(),
                state: dir.join(STATE_FILE),
                temp: dir.join(TEMP_FILE),
                lock: dir.join(LOCK_FILE),
            }),
        };
        let lock = store.paths.lock(LockMode::Shared)?;
        store.paths.read()?;
        drop(lock);
        Ok(store)
    }

    /// The directory holding the store.
    pub fn dir(&self) -> &Path {
        &self.paths.dir
    }

    /// Run `op` on a blocking thread with the lock held in `mode`.
    async fn locked<T, F>(&self, mode: LockMode, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Paths) -> Result<T, StoreError> + Send + 'static,
    {
        let paths = Arc::clone(&self.paths);
        tokio::task::spawn_blocking(move || {
            let _lock = paths.lock(mode)?;
            op(&paths)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("file store operation did not finish: {e}")))?
    }
}

#[async_trait::async_trait]
impl Store for FileStore {
    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.locked(LockMode::Shared, |paths| {
            let state = paths.read()?;
            Ok(state.snapshot(now_unix_ms()))
        })
        .await
    }

    async fn put(
        &self,
        key: &str,
        value: &[u8],
        cond: Condition,
        ttl: Option<Duration>,
    ) -> Result<Revision, StoreError> {
        let key = key.to_owned();
        let value = StoredValue::from_bytes(value);
        self.locked(LockMode::Exclusive, move |paths| {
            let now = now_unix_ms();
            let mut state = paths.read()?;
            cond.check(&key, state.live_revision(&key, now))?;
            state.drop_expired(now);
            state.revision += 1;
            let revision = state.revision;
            let expires_at_unix_ms = ttl.map(|ttl| now.saturating_add(duration_ms(ttl)));
            state.entries.insert(key, StoredEntry { value, revision, expires_at_unix_ms });
            paths.write(&state)?;
            Ok(revision)
        })
        .await
    }

    async fn delete(&self, key: &str, cond: Condition) -> Result<Revision, StoreError> {
        let key = key.to_owned();
        self.locked(LockMode::Exclusive, move |paths| {
            let now = now_unix_ms();
            let mut state = paths.read()?;
            let current = state.live_revision(&key, now);
            cond.check(&key, current)?;
            if current.is_none() {
                return Ok(state.revision);
            }
            state.drop_expired(now);
            state.entries.remove(&key);
            state.revision += 1;
            paths.write(&state)?;
            Ok(state.revision)
        })
        .await
    }

    async fn wait_change(&self, after: Revision, timeout: Duration) -> Result<Revision, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Every write replaces state.json by rename, so an unchanged identity means an unchanged
        // store: only a changed one is worth the lock and a parse.
        let mut known: Option<(FileIdentity, Revision)> = None;
        loop {
            let identity = FileIdentity::of(&self.paths.state);
            let revision = match &known {
                Some((seen, revision)) if identity.as_ref() == Some(seen) => *revision,
                _ => {
                    let revision = self.locked(LockMode::Shared, |paths| Ok(paths.read()?.revision)).await?;
                    known = identity.map(|i| (i, revision));
                    revision
                }
            };
            let now = tokio::time::Instant::now();
            if revision > after || now >= deadline {
                return Ok(revision);
            }
            tokio::time::sleep_until(deadline.min(now + POLL_INTERVAL)).await;
        }
    }
}

/// What tells one version of state.json from another without reading it: a rename gives a
/// new inode and change time.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileIdentity {
    inode: u64,
    len: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
}

impl FileIdentity {
    fn of(path: &Path) -> Option<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(path).ok()?;
        Some(FileIdentity {
            inode: m.ino(),
            len: m.len(),
            ctime: (m.ctime(), m.ctime_nsec()),
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    }
}

#[derive(Clone, Copy, Debug)]
enum LockMode {
    Shared,
    Exclusive,
}

/// The lock file opened and locked; dropping it closes the descriptor, which releases the lock.
struct LockGuard {
    _file: File,
}

impl Paths {
    /// Take the store lock, waiting for it at most `LOCK_PATIENCE`. Each call opens its own descriptor:
    /// `flock` locks belong to the open file description, so sharing one descriptor between
    /// operations would not exclude them from each other.
    fn lock(&self, mode: LockMode) -> Result<LockGuard, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&self.lock)
            .map_err(|e| io_error(format!("open store lock {}", self.lock.display()), e))?;
        let operation = match mode {
            LockMode::Shared => libc::LOCK_SH,
            LockMode::Exclusive => libc::LOCK_EX,
        };
        let deadline = std::time::Instant::now() + LOCK_PATIENCE;
        loop {
            // SAFETY: `file` owns a valid open descriptor for the duration of the call.
            let rc = unsafe { libc::flock(file.as_raw_fd(), operation | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(LockGuard { _file: file });
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(LOCK_RETRY);
                }
                Some(libc::EWOULDBLOCK) => {
                    return Err(StoreError::Unavailable(format!(
                        "the store's lock {} has been held by another process for over {} s (a pgrepl process \
                         stopped or hung in the middle of a write?); nothing was read or written",
                        self.lock.display(),
                        LOCK_PATIENCE.as_secs()
                    )))
                }
                _ => return Err(io_error(format!("lock {}", self.lock.display()), err)),
            }
        }
    }

    /// Read and validate `state.json`; missing means empty. Caller holds the lock.
    fn read(&self) -> Result<FileState, StoreError> {
        let bytes = match fs::read(&self.state) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(FileState::default()),
            Err(e) => return Err(io_error(format!("read {}", self.state.display()), e)),
        };
        let state: FileState = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Corrupt { path: self.state.clone(), detail: e.to_string() })?;
        state.validate().map_err(|detail| StoreError::Corrupt { path: self.state.clone(), detail })?;
        Ok(state)
    }

    /// Replace `state.json` atomically and durably. Caller holds the exclusive lock.
    fn write(&self, state: &FileState) -> Result<(), StoreError> {
        let mut bytes = serde_json::to_vec_pretty(state).map_err(|e| StoreError::Io {
            doing: "encode store state".to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })?;
        bytes.push(b'\n');
        let temp = self.temp.display();
        // A temporary file left by a crash is stale: only the lock holder writes it.
        match fs::remove_file(&self.temp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(format!("remove stale {temp}"), e)),
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.temp)
            .map_err(|e| io_error(format!("create {temp}"), e))?;
        file.write_all(&bytes).map_err(|e| io_error(format!("write {temp}"), e))?;
        file.sync_all().map_err(|e| io_error(format!("fsync {temp}"), e))?;
        drop(file);
        fs::rename(&self.temp, &self.state)
            .map_err(|e| io_error(format!("rename {temp} to {}", self.state.display()), e))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io_error(format!("fsync store directory {}", self.dir.display()), e))?;
        Ok(())
    }
}

/// The contents of `state.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileState {
    revision: Revision,
    entries: BTreeMap<String, StoredEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredEntry {
    value: StoredValue,
    revision: Revision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at_unix_ms: Option<u64>,
}

/// A value as written in `state.json`: a string when the bytes are UTF-8, else the bytes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum StoredValue {
    Text(String),
    Bytes(Vec<u8>),
}

impl StoredValue {
    fn from_bytes(bytes: &[u8]) -> StoredValue {
        match std::str::from_utf8(bytes) {
            Ok(text) => StoredValue::Text(text.to_owned()),
            Err(_) => StoredValue::Bytes(bytes.to_vec()),
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        match self {
            StoredValue::Text(text) => text.as_bytes().to_vec(),
            StoredValue::Bytes(bytes) => bytes.clone(),
        }
    }
}

impl StoredEntry {
    fn is_live(&self, now_ms: u64) -> bool {
        match self.expires_at_unix_ms {
            None => true,
            Some(at) => now_ms < at,
        }
    }
}

impl FileState {
    /// Invariants that serde cannot check.
    fn validate(&self) -> Result<(), String> {
        for (key, entry) in &self.entries {
            if entry.revision == 0 || entry.revision > self.revision {
                return Err(format!(
                    "entry {key:?} has revision {} but the store is at revision {}",
                    entry.revision, self.revision
                ));
            }
        }
        Ok(())
    }

    fn live_revision(&self, key: &str, now_ms: u64) -> Option<Revision> {
        self.entries.get(key).filter(|e| e.is_live(now_ms)).map(|e| e.revision)
    }

    fn drop_expired(&mut self, now_ms: u64) {
        self.entries.retain(|_, e| e.is_live(now_ms));
    }

    fn snapshot(&self, now_ms: u64) -> Snapshot {
        let entries = self
            .entries
            .iter()
            .filter(|(_, e)| e.is_live(now_ms))
            .map(|(key, e)| {
                let entry = Entry {
                    key: key.clone(),
                    value: e.value.to_bytes(),
                    revision: e.revision,
                    expires_in: e.expires_at_unix_ms.map(|at| Duration::from_millis(at.saturating_sub(now_ms))),
                };
                (key.clone(), entry)
            })
            .collect();
        Snapshot { revision: self.revision, entries }
    }
}

/// Milliseconds since the Unix epoch by the wall clock (0 if the clock is before 1970).
fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, duration_ms)
}

/// A duration in whole milliseconds, rounded up so a TTL never shortens, saturating.
fn duration_ms(d: Duration) -> u64 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

fn io_error(doing: String, source: io::Error) -> StoreError {
    StoreError::Io { doing, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_whether_utf8_or_not() {
        for bytes in [&b"{\"a\":1}"[..], &[0xff, 0x00, 0x80][..], &b""[..]] {
            let json = serde_json::to_string(&StoredValue::from_bytes(bytes)).unwrap();
            let back: StoredValue = serde_json::from_str(&json).unwrap();
            assert_eq!(back.to_bytes(), bytes, "through {json}");
        }
        assert_eq!(serde_json::to_string(&StoredValue::from_bytes(b"hi")).unwrap(), "\"hi\"");
    }

    #[test]
    fn durations_round_up_to_milliseconds() {
        assert_eq!(duration_ms(Duration::from_micros(1)), 1);
        assert_eq!(duration_ms(Duration::from_millis(300)), 300);
        assert_eq!(duration_ms(Duration::MAX), u64::MAX);
    }
}
