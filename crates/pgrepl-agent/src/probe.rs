//! What the agent's loop shows the outside (the HTTP API): its last cycle, when the loop last
//! beat, and counts of what it decided. The loop writes; readers take a copy and never wait on
//! the loop, so a loop that is stuck reads as such (an old beat) rather than as no answer.

use pgrepl_core::{ClusterView, MemberStatus, Server};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One cycle as the loop saw and decided it.
#[derive(Clone, Debug)]
pub struct Cycle {
    /// The store snapshot it read.
    pub view: ClusterView,
    /// Its own server.
    pub server: Server,
    pub holds_lease: bool,
    /// The status it published (or would have: a failed write still shows here).
    pub status: MemberStatus,
    /// The decision's action (`Action::name`) and sentence.
    pub action: &'static str,
    pub decision: String,
    /// Time left on the leader lease in the snapshot, when it had a TTL.
    pub lease_left: Option<Duration>,
    /// When the cycle began, and how long it took to observe and decide (before acting).
    pub at: Instant,
    pub took: Duration,
}

/// What the loop has done since the agent started.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Cycles run.
    pub cycles: u64,
    /// Decisions by action name.
    pub decisions: BTreeMap<&'static str, u64>,
    /// Actions that failed, by action name.
    pub failures: BTreeMap<&'static str, u64>,
    /// Fences the fencer reported.
    pub fences: u64,
}

/// A cheap handle on the loop's shared state; clones share it.
#[derive(Clone)]
pub struct Probe {
    inner: Arc<Inner>,
}

struct Inner {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last beat.
    beat_ms: AtomicU64,
    last: Mutex<Option<Arc<Cycle>>>,
    counters: Mutex<Counters>,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            inner: Arc::new(Inner {
                epoch: Instant::now(),
                beat_ms: AtomicU64::new(0),
                last: Mutex::new(None),
                counters: Mutex::new(Counters::default()),
            }),
        }
    }
}

impl Probe {
    /// The loop is alive: it finished a cycle, or a long action it waits on is still running.
    pub fn beat(&self) {
        let ms = self.inner.epoch.elapsed().as_millis() as u64;
        self.inner.beat_ms.store(ms, Ordering::Relaxed);
    }

    /// How long ago the loop last beat (since the agent started, before its first beat).
    pub fn loop_age(&self) -> Duration {
        let beat = Duration::from_millis(self.inner.beat_ms.load(Ordering::Relaxed));
        self.inner.epoch.elapsed().saturating_sub(beat)
    }

    /// The last cycle, once there was one.
    pub fn last(&self) -> Option<Arc<Cycle>> {
        self.inner.last.lock().map(|l| l.clone()).unwrap_or(None)
    }

    pub fn counters(&self) -> Counters {
        self.inner.counters.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub(crate) fn record(&self, cycle: Cycle) {
        if let Ok(mut c) = self.inner.counters.lock() {
            c.cycles += 1;
            *c.decisions.entry(cycle.action).or_default() += 1;
        }
        if let Ok(mut last) = self.inner.last.lock() {
            *last = Some(Arc::new(cycle));
        }
        self.beat();
    }

    pub(crate) fn failed(&self, action: &'static str) {
        if let Ok(mut c) = self.inner.counters.lock() {
            *c.failures.entry(action).or_default() += 1;
        }
    }

    pub(crate) fn fenced(&self) {
        if let Ok(mut c) = self.inner.counters.lock() {
            c.fences += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_age_counts_from_the_last_beat() {
        let probe = Probe::default();
        std::thread::sleep(Duration::from_millis(30));
        assert!(probe.loop_age() >= Duration::from_millis(30), "no beat yet: counted from the start");
        probe.beat();
        assert!(probe.loop_age() < Duration::from_millis(30));
        assert!(probe.last().is_none());
    }
}
