//! The fence (invariant 1): stops this member's PostgreSQL when the leader lease it holds is
//! about to expire without having been renewed, whatever the agent's loop is doing meanwhile
//! (waiting on an unreachable store, or on a hung server). It runs as its own task, so a stuck
//! cycle cannot keep a primary writable past its lease.

use pgrepl_pg::{Instance, StopMode};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{error, warn};

/// How long before the lease could expire the fence stops PostgreSQL: time for `pg_ctl stop
/// -m fast` to end every session (milliseconds) with room for scheduling delays.
pub const MARGIN: Duration = Duration::from_millis(500);

/// The handle the loop arms after each renewal and disarms when it gives the lease up.
pub struct Fence {
    until: watch::Sender<Option<Instant>>,
}

impl Fence {
    /// Starts the fence task for `pg`; it ends when the handle is dropped.
    pub fn spawn(pg: Instance) -> Fence {
        let (until, rx) = watch::channel(None);
        tokio::spawn(watch_lease(pg, rx));
        Fence { until }
    }

    /// The lease is held at least until `until` (the time the renewal was sent plus the TTL).
    pub fn arm(&self, until: Instant) {
        self.until.send_replace(Some(until));
    }

    /// This member holds no lease (it released it, or never held it).
    pub fn disarm(&self) {
        self.until.send_replace(None);
    }
}

async fn watch_lease(pg: Instance, mut rx: watch::Receiver<Option<Instant>>) {
    loop {
        let until = *rx.borrow_and_update();
        let Some(until) = until else {
            if rx.changed().await.is_err() {
                return;
            }
            continue;
        };
        let fire_at = until.checked_sub(MARGIN).unwrap_or(until);
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep_until(fire_at.into()) => {
                if pg.postmaster_running() {
                    warn!("fencing: the leader lease was not renewed and may expire in {MARGIN:?}, so PostgreSQL is stopped now to keep any write from landing after it");
                    if let Err(e) = pg.stop(StopMode::Fast, Duration::from_secs(60)).await {
                        error!("fencing: stopping PostgreSQL failed: {e:#}");
                    }
                }
                // Fire once per arming: wait for the next renewal or release.
                if rx.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}
