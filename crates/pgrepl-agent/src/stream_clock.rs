//! `StreamClock`: how long a replica pointed at the leader has not streamed, for the two bounds
//! `decide()` hears of: the restart bound (`stream_restart_timeout`: restart PostgreSQL, its
//! WAL receiver may have given up) and the stall bound (`stall_timeout`: rewind, when the leader
//! is on a newer timeline). A restart starts the restart bound afresh but not the stall bound,
//! so that a restart that does not help is followed by the rewind, not by restarts for ever.
//! Nor does a replica that still replays (WAL of its own `pg_wal`, before its WAL receiver
//! starts) count towards the restart bound: restarting it would only set its recovery back.
//! Owns no I/O: the caller passes the time.

use pgrepl_core::Lsn;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub(crate) struct StreamClock {
    /// Since when the replica has been pointed at the leader without streaming.
    stuck_since: Option<Instant>,
    /// When the agent last restarted it for not streaming, during this stretch.
    restarted_at: Option<Instant>,
    /// The replay position last seen during this stretch, and since when it has stood there.
    replayed: Option<(Lsn, Instant)>,
}

impl StreamClock {
    /// One cycle's reading: the replay position of a replica pointed at the leader and not
    /// streaming, or `None` when it streams (or is not such a replica), which ends the stretch.
    pub fn observe(&mut self, not_streaming_at: Option<Lsn>, now: Instant) {
        let Some(lsn) = not_streaming_at else {
            *self = StreamClock::default();
            return;
        };
        self.stuck_since.get_or_insert(now);
        if self.replayed.is_none_or(|(seen, _)| seen != lsn) {
            self.replayed = Some((lsn, now));
        }
    }

    /// Not streaming for longer than the stall bound (restarts do not count).
    pub fn stalled(&self, now: Instant, bound: Duration) -> bool {
        self.stuck_since.is_some_and(|t| now.duration_since(t) > bound)
    }

    /// How long the replica has not streamed, once that is longer than the restart bound and
    /// neither a restart nor replay progress came within the bound either.
    pub fn restart_due(&self, now: Instant, bound: Duration) -> Option<Duration> {
        let since = self.stuck_since?;
        let quiet =
            [self.restarted_at, self.replayed.map(|(_, at)| at)].into_iter().flatten().fold(since, Instant::max);
        (now.duration_since(quiet) > bound).then(|| now.duration_since(since))
    }

    /// The replica was restarted for not streaming: the next restart waits a whole bound.
    pub fn restarted(&mut self, now: Instant) {
        if self.stuck_since.is_some() {
            self.restarted_at = Some(now);
        }
    }

    /// The replica was re-pointed, started or rewound: every bound starts afresh.
    pub fn reset(&mut self) {
        *self = StreamClock::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESTART: Duration = Duration::from_secs(10);
    const STALL: Duration = Duration::from_secs(30);
    const LSN: Lsn = Lsn(0x3000000);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// A clock that has seen the replica stuck at every second from 0 to `until`, restarting it
    /// whenever a restart was due; returns the seconds at which it restarted and the first at
    /// which it counted as stalled.
    fn run(until: u64) -> (Vec<u64>, Option<u64>) {
        let t0 = Instant::now();
        let mut clock = StreamClock::default();
        let (mut restarts, mut stalled) = (vec![], None);
        for s in 0..=until {
            let now = t0 + secs(s);
            clock.observe(Some(LSN), now);
            if clock.stalled(now, STALL) {
                stalled.get_or_insert(s);
            } else if let Some(quiet) = clock.restart_due(now, RESTART) {
                assert_eq!(quiet, secs(s), "the sentence says how long it has not streamed");
                restarts.push(s);
                clock.restarted(now);
            }
        }
        (restarts, stalled)
    }

    #[test]
    fn restarts_once_per_bound_and_still_stalls_at_the_stall_bound() {
        let (restarts, stalled) = run(40);
        assert_eq!(restarts, vec![11, 22], "past each bound, never more often");
        assert_eq!(stalled, Some(31), "the restarts did not start the stall bound afresh");
    }

    #[test]
    fn nothing_is_due_before_the_bounds() {
        let t0 = Instant::now();
        let mut clock = StreamClock::default();
        clock.observe(Some(LSN), t0);
        assert_eq!(clock.restart_due(t0 + RESTART, RESTART), None);
        assert!(!clock.stalled(t0 + STALL, STALL));
    }

    #[test]
    fn streaming_again_or_a_reset_starts_both_bounds_afresh() {
        let t0 = Instant::now();
        let mut clock = StreamClock::default();
        clock.observe(Some(LSN), t0);
        clock.restarted(t0 + secs(11));
        clock.observe(None, t0 + secs(12));
        clock.observe(Some(LSN), t0 + secs(13));
        assert_eq!(clock.restart_due(t0 + secs(23), RESTART), None);
        assert!(clock.restart_due(t0 + secs(24), RESTART).is_some());
        assert!(!clock.stalled(t0 + secs(40), STALL));
        clock.reset();
        clock.observe(Some(LSN), t0 + secs(41));
        assert_eq!(clock.restart_due(t0 + secs(50), RESTART), None);
    }

    #[test]
    fn a_replica_still_replaying_is_not_restarted_but_stalls_all_the_same() {
        let t0 = Instant::now();
        let mut clock = StreamClock::default();
        for s in 0..=40 {
            clock.observe(Some(Lsn(LSN.0 + s * 0x1000)), t0 + secs(s));
            assert_eq!(clock.restart_due(t0 + secs(s), RESTART), None, "at {s} s");
        }
        assert!(clock.stalled(t0 + secs(40), STALL));
        // Once replay stands still, the restart bound counts from there.
        clock.observe(Some(Lsn(LSN.0 + 40 * 0x1000)), t0 + secs(45));
        assert_eq!(clock.restart_due(t0 + secs(50), RESTART), None);
        assert_eq!(clock.restart_due(t0 + secs(51), RESTART), Some(secs(51)));
    }

    #[test]
    fn a_restart_without_a_stretch_not_streaming_counts_for_nothing() {
        let t0 = Instant::now();
        let mut clock = StreamClock::default();
        clock.restarted(t0);
        clock.observe(Some(LSN), t0 + secs(1));
        assert!(clock.restart_due(t0 + secs(12), RESTART).is_some());
    }
}
