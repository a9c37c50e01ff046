//! The fencer's rules (invariant 1): when a member's PostgreSQL must be stopped because the
//! leader lease it may be serving under could expire unrenewed. Pure: times are durations on
//! one clock that keeps counting while the machine or a process is suspended (`CLOCK_BOOTTIME`
//! in the fencer), passed in by the caller.
//!
//! The agent sends beats; the fencer keeps only the latest deadline. A beat can extend the
//! deadline (`Arm`: a renewal was sent at t, so the lease holds until t + ttl), only shorten
//! it (`Limit`: a primary that no longer holds the lease gets a bounded time to demote), or
//! clear it (`Disarm`: this member's server is not a primary and holds no lease).

use std::time::Duration;

/// How long before the lease could expire the fencer stops PostgreSQL: room for the kill to
/// reach every process and for scheduling delays, well below any `ttl`.
pub const MARGIN: Duration = Duration::from_millis(500);

/// One message from the agent to its fencer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beat {
    /// The lease is held until this time (on the fencer's clock).
    Arm(Duration),
    /// PostgreSQL must be stopped no later than this time, whatever was armed before.
    Limit(Duration),
    /// Nothing to guard.
    Disarm,
}

impl Beat {
    /// The beat as one line of the agent-fencer protocol (`arm <ns>`, `limit <ns>`, `disarm`).
    pub fn to_line(self) -> String {
        match self {
            Beat::Arm(t) => format!("arm {}\n", t.as_nanos()),
            Beat::Limit(t) => format!("limit {}\n", t.as_nanos()),
            Beat::Disarm => "disarm\n".to_string(),
        }
    }

    /// Parses one line of the protocol; `None` for anything else.
    pub fn parse(line: &str) -> Option<Beat> {
        let mut words = line.split_whitespace();
        let beat = match (words.next()?, words.next()) {
            ("arm", Some(ns)) => Beat::Arm(nanos(ns)?),
            ("limit", Some(ns)) => Beat::Limit(nanos(ns)?),
            ("disarm", None) => Beat::Disarm,
            _ => return None,
        };
        words.next().is_none().then_some(beat)
    }
}

fn nanos(text: &str) -> Option<Duration> {
    text.parse::<u64>().ok().map(Duration::from_nanos)
}

/// One message from the fencer to the agent: it killed `killed` PostgreSQL processes at
/// `at_unix_ms` (wall clock, for the log and the store).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fired {
    pub at_unix_ms: u64,
    pub killed: u64,
}

impl Fired {
    pub fn to_line(self) -> String {
        format!("fired {} {}\n", self.at_unix_ms, self.killed)
    }

    pub fn parse(line: &str) -> Option<Fired> {
        match line.split_whitespace().collect::<Vec<_>>()[..] {
            ["fired", at, killed] => Some(Fired { at_unix_ms: at.parse().ok()?, killed: killed.parse().ok()? }),
            _ => None,
        }
    }
}

/// What the fencer guards: the time the lease it serves under could expire, if any.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FenceState {
    lease_until: Option<Duration>,
}

impl FenceState {
    pub fn apply(&mut self, beat: Beat) {
        self.lease_until = match beat {
            Beat::Arm(until) => Some(until),
            Beat::Limit(until) => Some(self.lease_until.map_or(until, |current| current.min(until))),
            Beat::Disarm => None,
        };
    }

    pub fn armed(&self) -> bool {
        self.lease_until.is_some()
    }

    pub fn lease_until(&self) -> Option<Duration> {
        self.lease_until
    }

    /// When PostgreSQL must be stopped: `MARGIN` before the lease could expire.
    pub fn fire_at(&self) -> Option<Duration> {
        self.lease_until.map(|until| until.saturating_sub(MARGIN))
    }

    /// At `now`, whether to stop PostgreSQL. Firing disarms: the next beat arms again.
    pub fn due(&mut self, now: Duration) -> bool {
        let due = self.fire_at().is_some_and(|at| now >= at);
        if due {
            self.lease_until = None;
        }
        due
    }

    /// Whether the fencer may exit when its agent has gone: only with nothing left to guard
    /// (an armed fencer outlives a killed agent and fires at the deadline).
    pub fn may_exit_without_agent(&self) -> bool {
        !self.armed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn an_armed_fence_fires_margin_before_the_lease_could_expire_and_only_once() {
        let mut f = FenceState::default();
        f.apply(Beat::Arm(s(10)));
        assert!(!f.due(s(9)));
        assert!(!f.due(s(10) - MARGIN - Duration::from_millis(1)));
        assert!(f.due(s(10) - MARGIN));
        assert!(!f.armed());
        assert!(!f.due(s(11)), "fired once: the next beat arms it again");
    }

    #[test]
    fn a_renewal_moves_the_deadline_later() {
        let mut f = FenceState::default();
        f.apply(Beat::Arm(s(10)));
        f.apply(Beat::Arm(s(13)));
        assert!(!f.due(s(12)));
        assert!(f.due(s(13)));
    }

    #[test]
    fn a_limit_only_ever_brings_the_deadline_closer() {
        let mut f = FenceState::default();
        f.apply(Beat::Arm(s(10)));
        f.apply(Beat::Limit(s(20)));
        assert_eq!(f.lease_until(), Some(s(10)));
        f.apply(Beat::Limit(s(5)));
        assert_eq!(f.lease_until(), Some(s(5)));
        let mut unarmed = FenceState::default();
        unarmed.apply(Beat::Limit(s(7)));
        assert_eq!(unarmed.lease_until(), Some(s(7)), "a limit arms an unarmed fence");
    }

    #[test]
    fn a_disarmed_fence_never_fires_and_may_exit_without_its_agent() {
        let mut f = FenceState::default();
        assert!(f.may_exit_without_agent());
        f.apply(Beat::Arm(s(10)));
        assert!(!f.may_exit_without_agent(), "an armed fence outlives its agent");
        f.apply(Beat::Disarm);
        assert!(!f.due(s(1000)));
        assert!(f.may_exit_without_agent());
    }

    #[test]
    fn a_deadline_inside_the_margin_fires_at_once() {
        let mut f = FenceState::default();
        f.apply(Beat::Arm(Duration::from_millis(100)));
        assert_eq!(f.fire_at(), Some(Duration::ZERO));
        assert!(f.due(Duration::ZERO));
    }

    #[test]
    fn beats_round_trip_through_their_lines_and_anything_else_is_refused() {
        for beat in [Beat::Arm(Duration::from_nanos(123_456_789_012)), Beat::Limit(s(3)), Beat::Disarm] {
            assert_eq!(Beat::parse(beat.to_line().trim_end()), Some(beat));
        }
        for bad in ["", "arm", "arm x", "arm 1 2", "disarm now", "fire", "limit -1"] {
            assert_eq!(Beat::parse(bad), None, "{bad:?}");
        }
        let fired = Fired { at_unix_ms: 1_700_000_000_123, killed: 7 };
        assert_eq!(Fired::parse(fired.to_line().trim_end()), Some(fired));
        assert_eq!(Fired::parse("fired 1"), None);
    }
}
