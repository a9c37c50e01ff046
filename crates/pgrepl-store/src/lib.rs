//! The `Store` trait: where cluster state lives. A small key-value API with compare-and-swap on
//! revisions and keys with a TTL (the shape of etcd), its error type, and its backends:
//!
//! - [`FileStore`]: one machine; several processes share one directory (`file` module).
//! - [`EtcdStore`]: several hosts; the keys live under one prefix in etcd (`etcd` module).
//! - [`MemoryStore`]: in-process, for tests elsewhere (`memory` module).
//! - [`contract`]: the one test suite every backend must pass.
//!
//! This crate knows nothing of what the keys mean (leader lease, members, spec): that belongs to
//! `pgrepl-core`. It must not log, retry or interpret values; callers decide what a conflict or an
//! unavailable store means.
//!
//! Semantics shared by every backend:
//! - The store has one revision. Every successful write (a `put`, or a `delete` that removed a
//!   key) increases it by at least one; a `delete` of an absent key changes nothing and returns
//!   the current revision (as etcd does).
//! - An entry's revision is the store revision of its last write.
//! - A key written with a TTL vanishes that long after its last write unless written again; a
//!   write without a TTL makes it permanent. Expired keys behave as absent everywhere. Expiry
//!   itself is not a write: it does not increase the revision nor wake `wait_change` (etcd does
//!   both; callers must not rely on either).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub mod contract;
pub mod etcd;
pub mod file;
pub mod memory;
pub mod testing;

pub use etcd::{AccessLabels, EtcdAccess, EtcdStore, EtcdTls, EtcdUser};
pub use file::FileStore;
pub use memory::MemoryStore;

/// A store revision: 0 for an empty store that was never written.
pub type Revision = u64;

/// One live key as read from the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
    /// The store revision of this key's last write.
    pub revision: Revision,
    /// For TTL keys: the time left when read.
    pub expires_in: Option<Duration>,
}

/// Every live key, read in one consistent view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The store revision at the time of the read.
    pub revision: Revision,
    pub entries: BTreeMap<String, Entry>,
}

impl Snapshot {
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }
}

/// What must hold for a `put` or `delete` to happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Always holds.
    Any,
    /// The key does not exist (or has expired).
    Absent,
    /// The key exists and its entry revision is exactly this one.
    Revision(Revision),
}

impl Condition {
    /// Whether the condition holds for a key whose live entry has revision `current` (`None`:
    /// absent or expired).
    pub(crate) fn holds(self, current: Option<Revision>) -> bool {
        match self {
            Condition::Any => true,
            Condition::Absent => current.is_none(),
            Condition::Revision(r) => current == Some(r),
        }
    }

    /// `Ok(())` if the condition holds, else the `Conflict` error for `key`.
    pub(crate) fn check(self, key: &str, current: Option<Revision>) -> Result<(), StoreError> {
        if self.holds(current) {
            Ok(())
        } else {
            Err(StoreError::Conflict { key: key.to_owned(), expected: self.to_string() })
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Any => f.write_str("any"),
            Condition::Absent => f.write_str("absent"),
            Condition::Revision(r) => write!(f, "revision = {r}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The condition of a `put` or `delete` did not hold; nothing was written.
    #[error("store conflict on key {key:?}: the condition {expected} did not hold")]
    Conflict { key: String, expected: String },
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store answered, and refused this client (a CA that did not sign its certificate, no
    /// or a wrong client certificate, a wrong password, no permission): trying again will not
    /// help until its configuration changes.
    #[error("store refused this client: {0}")]
    Refused(String),
    #[error("{doing}: {source}")]
    Io {
        doing: String,
        #[source]
        source: std::io::Error,
    },
    /// The backing file cannot be understood; it is never reset silently.
    #[error("store file {path} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
}

impl StoreError {
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }
}

#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Every live (not expired) key, with the store's current revision. One consistent view.
    async fn snapshot(&self) -> Result<Snapshot, StoreError>;

    /// Write `value` under `key` if `cond` holds; with `ttl` the key vanishes that long after
    /// this write unless written again. Returns the new revision (store revisions strictly
    /// increase with every successful write/delete).
    async fn put(
        &self,
        key: &str,
        value: &[u8],
        cond: Condition,
        ttl: Option<Duration>,
    ) -> Result<Revision, StoreError>;

    /// Delete `key` if `cond` holds (Condition::Any on an absent key is Ok). Returns the new
    /// revision (the current one, unchanged, when there was nothing to delete).
    async fn delete(&self, key: &str, cond: Condition) -> Result<Revision, StoreError>;

    /// Wait until the store revision exceeds `after`, or `timeout` passes; returns the revision
    /// then.
    async fn wait_change(&self, after: Revision, timeout: Duration) -> Result<Revision, StoreError>;
}
