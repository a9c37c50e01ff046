//! `StoreWriter`: the agent's one handle on the store. Every write goes through it, so it alone
//! knows the revision of this agent's last write, and the loop can wait for the next change
//! that is not its own.

use pgrepl_store::{Condition, Snapshot, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;

pub(crate) struct StoreWriter {
    store: Arc<dyn Store>,
    /// The store revision of this agent's last write: waking for it would only wake the agent
    /// for its own writes.
    own_revision: u64,
}

impl StoreWriter {
    pub fn new(store: Arc<dyn Store>) -> StoreWriter {
        StoreWriter { store, own_revision: 0 }
    }

    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.store.snapshot().await
    }

    /// Writes `value` at `key`, remembering the revision so the agent does not wake for it.
    pub async fn put(
        &mut self,
        key: &str,
        value: &[u8],
        cond: Condition,
        ttl: Option<Duration>,
    ) -> Result<u64, StoreError> {
        let revision = self.store.put(key, value, cond, ttl).await?;
        self.own_revision = self.own_revision.max(revision);
        Ok(revision)
    }

    /// Deletes `key`, remembering the revision as `put` does.
    pub async fn delete(&mut self, key: &str, cond: Condition) -> Result<u64, StoreError> {
        let revision = self.store.delete(key, cond).await?;
        self.own_revision = self.own_revision.max(revision);
        Ok(revision)
    }

    /// Waits up to `wait` for a change after both `seen` (the revision the last cycle read)
    /// and this agent's own last write; sleeps the whole `wait` when the store cannot tell.
    /// Owns what it needs, so that the loop can race it against a shutdown or a chore.
    pub fn next_change(&self, seen: u64, wait: Duration) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (store, after) = (self.store.clone(), seen.max(self.own_revision));
        async move {
            if store.wait_change(after, wait).await.is_err() {
                tokio::time::sleep(wait).await;
            }
        }
    }
}
