//! The leader lease and the fence that guards it: renewing the lease (each cycle's, and during
//! a long action), giving it up, telling the fencer what each cycle saw, and recording what
//! the fencer did.

use super::Agent;
use crate::fencer::boot_now;
use crate::seen::Seen;
use anyhow::Context;
use pgrepl_core::lease::{self, Renewal};
use pgrepl_core::{keys, ClusterView, Decision, Server};
use pgrepl_store::{Condition, Snapshot, StoreError};
use std::future::Future;
use std::time::Duration;
use tracing::{info, warn};

/// How long a primary that does not hold the lease may run before the fencer stops it, should
/// this agent not demote it first (a clean demotion usually takes under a second; its
/// shutdown checkpoint may take longer on a busy server).
const DEMOTE_BOUND: Duration = Duration::from_secs(10);

impl Agent {
    /// Takes maintenance mode from `cluster` and tells the fencer what this reading saw
    /// (`at`: when the store read was sent, on the boot clock): a lease seen held with time
    /// left holds at least that long after the read was sent; a primary without the lease must
    /// have demoted within `DEMOTE_BOUND` (if this agent hangs before it does, the fencer stops
    /// it); anything else has nothing to guard. Paused, the fence stays disarmed, also when the
    /// store is then lost: no demotion while paused.
    pub(crate) fn guard(&mut self, cluster: &ClusterView, server: &Server, lease_left: Option<Duration>, at: Duration) {
        if cluster.paused() != self.paused {
            match cluster.paused() {
                true => warn!("maintenance mode: no automatic failover, no restart of a stopped PostgreSQL, the fence disarmed, until `pgrepl resume`"),
                false => info!("maintenance mode ended: deciding again from this observation, the fence armed while the lease is held"),
            }
        }
        self.paused = cluster.paused();
        let holds_lease = cluster.leader.as_ref() == Some(&self.s.member);
        match (self.paused, holds_lease, server) {
            // The next beat after `resume` re-arms it.
            (true, _, _) => self.fence.disarm(),
            (false, true, _) => {
                if let Some(left) = lease_left {
                    self.fence.arm(at + left);
                }
            }
            (false, false, Server::Primary { .. }) => self.fence.limit(at + DEMOTE_BOUND),
            (false, false, _) => self.fence.disarm(),
        }
    }

    /// Logs each fence the fencer reports and records the last in the store (`fences/NAME`).
    pub(crate) async fn record_fences(&mut self) {
        for fired in self.fence.take_fired() {
            self.probe.fenced();
            warn!(
                at_unix_ms = fired.at_unix_ms,
                killed = fired.killed,
                "the fencer stopped this member's PostgreSQL: the lease it served under was not renewed in time"
            );
            let key = keys::fence(&self.s.member);
            let value = serde_json::to_vec(&fired).unwrap_or_default();
            if let Err(e) = self.store.put(&key, &value, Condition::Any, None).await {
                warn!("record the fence in the store: {e:#}");
            }
        }
    }

    /// The leader keeps its lease with every action but those that give it up, about once per
    /// `loop_wait` (`lease::renewal` says when).
    pub(crate) async fn renew_lease_if_held(&mut self, seen: &Seen, decision: &Decision) -> anyhow::Result<()> {
        let renewal = lease::renewal(&seen.obs, &decision.action, seen.lease_left(), self.s.loop_wait, self.s.ttl);
        if renewal != Renewal::Due {
            return Ok(());
        }
        let entry = seen.snapshot.get(keys::LEADER).context("leader key vanished")?;
        let value = entry.value.clone();
        self.renew(&value, Condition::Revision(entry.revision)).await.context("renew the leader lease")
    }

    /// Writes the leader key with the lease's TTL and arms the fence for it.
    pub(crate) async fn renew(&mut self, value: &[u8], cond: Condition) -> Result<(), StoreError> {
        let sent = boot_now();
        self.store.put(keys::LEADER, value, cond, Some(self.s.ttl)).await?;
        if !self.paused {
            self.fence.arm(sent + self.s.ttl);
        }
        Ok(())
    }

    /// Keeps the lease renewed while `work` runs (a start or promotion that may outlast the
    /// TTL); the work itself is bounded by its own timeout.
    pub(crate) async fn keeping_lease<T>(&mut self, work: impl Future<Output = T>) -> T {
        tokio::pin!(work);
        let mut tick = tokio::time::interval(self.s.loop_wait);
        tick.tick().await;
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tick.tick() => {
                    self.probe.beat();
                    if let Err(e) = self.renew_current().await {
                        warn!("renew the leader lease during a long action: {e:#}");
                    }
                }
            }
        }
    }

    /// Renews the lease from a fresh read of the store, if this member still holds it.
    async fn renew_current(&mut self) -> anyhow::Result<()> {
        let snapshot = self.store.snapshot().await?;
        let Some(entry) = snapshot.get(keys::LEADER) else { return Ok(()) };
        let holder: pgrepl_core::LeaderRecord = serde_json::from_slice(&entry.value)?;
        if holder.member == self.s.member {
            let value = entry.value.clone();
            self.renew(&value, Condition::Revision(entry.revision)).await?;
        }
        Ok(())
    }

    /// Gives up the leader lease, read afresh, if this member holds it (renewals while the
    /// server stopped changed its revision): a replica can take over at once.
    pub(crate) async fn release_held_lease(&mut self) -> anyhow::Result<()> {
        let snapshot = self.store.snapshot().await.context("read the leader lease")?;
        self.release_lease_in(&snapshot).await
    }

    /// Gives up the leader lease as `snapshot` shows it, if this member holds it there.
    pub(crate) async fn release_lease_in(&mut self, snapshot: &Snapshot) -> anyhow::Result<()> {
        let Some(entry) = snapshot.get(keys::LEADER) else { return Ok(()) };
        let holder: Option<pgrepl_core::LeaderRecord> = serde_json::from_slice(&entry.value).ok();
        if holder.is_some_and(|h| h.member == self.s.member) {
            self.store
                .delete(keys::LEADER, Condition::Revision(entry.revision))
                .await
                .context("release the leader lease")?;
            self.fence.disarm();
            info!("released the leader lease: a replica can take over at once");
        }
        Ok(())
    }
}
