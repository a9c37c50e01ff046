//! The in-process store: the `Store` semantics over a mutex-guarded map, for tests of other
//! crates. Clones are handles on the same store. TTLs run on the monotonic clock (`Instant`).
//! It must not be used where two processes need to see the same state.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::{Condition, Entry, Revision, Snapshot, Store, StoreError};

/// An in-memory store; cloning gives another handle on the same data.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// The store revision, published after every write so `wait_change` can wake.
    revision: watch::Sender<Revision>,
}

#[derive(Debug, Default)]
struct State {
    revision: Revision,
    entries: BTreeMap<String, Stored>,
}

#[derive(Debug)]
struct Stored {
    value: Vec<u8>,
    revision: Revision,
    expires_at: Option<Instant>,
}

impl Stored {
    fn is_live(&self, now: Instant) -> bool {
        match self.expires_at {
            None => true,
            Some(at) => now < at,
        }
    }
}

impl State {
    fn live_revision(&self, key: &str, now: Instant) -> Option<Revision> {
        self.entries.get(key).filter(|e| e.is_live(now)).map(|e| e.revision)
    }

    fn drop_expired(&mut self, now: Instant) {
        self.entries.retain(|_, e| e.is_live(now));
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store at revision 0.
    pub fn new() -> Self {
        let (revision, _) = watch::channel(0);
        MemoryStore { inner: Arc::new(Shared { state: Mutex::new(State::default()), revision }) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-written (every write is
        // one insert or remove after all checks), so a poisoned lock is still usable.
        self.inner.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish(&self, revision: Revision) {
        self.inner.revision.send_replace(revision);
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let now = Instant::now();
        let state = self.state();
        let entries = state
            .entries
            .iter()
            .filter(|(_, e)| e.is_live(now))
            .map(|(key, e)| {
                let entry = Entry {
                    key: key.clone(),
                    value: e.value.clone(),
                    revision: e.revision,
                    expires_in: e.expires_at.map(|at| at.saturating_duration_since(now)),
                };
                (key.clone(), entry)
            })
            .collect();
        Ok(Snapshot { revision: state.revision, entries })
    }

    async fn put(
        &self,
        key: &str,
        value: &[u8],
        cond: Condition,
        ttl: Option<Duration>,
    ) -> Result<Revision, StoreError> {
        let now = Instant::now();
        let revision = {
            let mut state = self.state();
            cond.check(key, state.live_revision(key, now))?;
            state.drop_expired(now);
            state.revision += 1;
            let revision = state.revision;
            state.entries.insert(
                key.to_owned(),
                Stored { value: value.to_vec(), revision, expires_at: ttl.map(|ttl| now + ttl) },
            );
            // Published under the lock so the watched revision never goes backwards.
            self.publish(revision);
            revision
        };
        Ok(revision)
    }

    async fn delete(&self, key: &str, cond: Condition) -> Result<Revision, StoreError> {
        let now = Instant::now();
        let revision = {
            let mut state = self.state();
            let current = state.live_revision(key, now);
            cond.check(key, current)?;
            state.drop_expired(now);
            if current.is_none() {
                return Ok(state.revision);
            }
            state.entries.remove(key);
            state.revision += 1;
            self.publish(state.revision);
            state.revision
        };
        Ok(revision)
    }

    async fn wait_change(&self, after: Revision, timeout: Duration) -> Result<Revision, StoreError> {
        let mut rx = self.inner.revision.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|r| *r > after))
            .await
            .map(|changed| changed.map(|revision| *revision));
        match waited {
            Ok(Ok(revision)) => Ok(revision),
            // The sender lives in `inner`, which `self` keeps alive, so it cannot be closed.
            Ok(Err(_closed)) => Err(StoreError::Unavailable("memory store revision channel closed".to_owned())),
            Err(_elapsed) => Ok(*rx.borrow()),
        }
    }
}
