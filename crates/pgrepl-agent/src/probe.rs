//! What the agent's loop shows the outside (the HTTP API): its last cycle, when the loop last
//! beat, and counts of what it decided (with a fixed-size histogram of cycle durations and the
//! promotions it carried out, by kind). The loop writes; readers take a copy and never wait on
//! the loop, so a loop that is stuck reads as such (an old beat) rather than as no answer.

use pgrepl_core::{ClusterView, MemberName, MemberStatus, Server};
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

impl Cycle {
    /// This member's lease: the time it has left now, counted from what the cycle read (`None`:
    /// it did not hold one; zero: it may have expired since).
    pub fn own_lease_left_now(&self) -> Option<Duration> {
        self.lease_left.filter(|_| self.holds_lease).map(|left| left.saturating_sub(self.at.elapsed()))
    }
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
    /// Promotions this agent carried out, by kind.
    pub failovers: u64,
    pub switchovers: u64,
    /// How long cycles took to observe and decide.
    pub durations: Durations,
}

/// Upper bounds, in seconds, of the buckets of `Durations` (the last one, `+Inf`, is implied).
pub const DURATION_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// A histogram of cycle durations in fixed buckets: its memory does not grow with cycles.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Durations {
    /// Cycles that took at most `DURATION_BUCKETS[i]` (not cumulative: one count per bucket).
    pub buckets: [u64; DURATION_BUCKETS.len()],
    /// All cycles, and their total time in seconds.
    pub count: u64,
    pub sum_seconds: f64,
}

impl Durations {
    pub fn observe(&mut self, took: Duration) {
        let seconds = took.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum_seconds += seconds;
    }
}

/// What a promotion was, for the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Promotion {
    /// The lease was free and this replica took over (the race, or taking back a lease it held).
    Failover,
    /// An operator asked for this member (`pgrepl promote`/`switchover`/`failover --to`): the
    /// `target` request named it.
    Switchover,
}

impl Promotion {
    /// The kind of a promotion `me` carries out while the store shows `view`. `decide()` only
    /// promotes with no request for another member pending, so a `target` means it is this one.
    pub fn of(view: &ClusterView, me: &MemberName) -> Promotion {
        if view.target.as_ref() == Some(me) {
            Promotion::Switchover
        } else {
            Promotion::Failover
        }
    }
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
            c.durations.observe(cycle.took);
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

    /// A promotion succeeded.
    pub(crate) fn promoted(&self, kind: Promotion) {
        if let Ok(mut c) = self.inner.counters.lock() {
            match kind {
                Promotion::Failover => c.failovers += 1,
                Promotion::Switchover => c.switchovers += 1,
            }
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

    #[test]
    fn durations_fall_in_their_bucket_and_past_the_last_only_in_the_count() {
        let mut d = Durations::default();
        d.observe(Duration::from_millis(1));
        d.observe(Duration::from_millis(3));
        d.observe(Duration::from_secs(60));
        assert_eq!(d.buckets[0], 1, "1 ms is within the first bound");
        assert_eq!(d.buckets[2], 1, "3 ms: within 5 ms");
        assert_eq!(d.buckets.iter().sum::<u64>(), 2, "60 s is past every bound");
        assert_eq!(d.count, 3);
        assert!((d.sum_seconds - 60.004).abs() < 1e-9);
    }

    #[test]
    fn a_promotion_is_a_switchover_only_when_the_request_names_this_member() {
        let me = MemberName::numbered(2);
        let mut view = ClusterView::default();
        assert_eq!(Promotion::of(&view, &me), Promotion::Failover);
        view.target = Some(MemberName::numbered(2));
        assert_eq!(Promotion::of(&view, &me), Promotion::Switchover);
        view.target = Some(MemberName::numbered(3));
        assert_eq!(Promotion::of(&view, &me), Promotion::Failover);
    }
}
