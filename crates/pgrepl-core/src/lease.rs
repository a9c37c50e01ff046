//! When a cycle renews the leader lease, before its action runs. Only the member the store
//! names as holder renews it, never with an action that hands it over or gives it up, and about
//! once per `loop_wait` rather than every cycle: every store write wakes every agent, and a
//! leader's cycles also run when others write. A cycle that finds less than half a `loop_wait`
//! gone since the last renewal skips it, and the next cycle comes at most one `loop_wait`
//! later, so the lease never has less than `ttl - 3/2 loop_wait` left when a cycle reads it
//! (plus what the cycles themselves take); the configuration keeps `ttl >= 3 * loop_wait`, so
//! that is at least one and a half `loop_wait`. The fence, armed by each renewal, is the
//! agent's; long actions renew on their own from a fresh read (`Agent::keeping_lease`).
//! Pure: the observation, the action and the lease's time left in, a `Renewal` out.

use crate::decide::Observation;
use crate::decision::Action;
use std::time::Duration;

/// What a cycle does with the leader lease before its action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Another member holds the lease, or nobody does: only its holder renews it.
    NotHeld,
    /// The action hands the lease over or gives it up (`Demote`, `ReleaseLease`): a renewal
    /// would only keep a successor waiting longer should the action fail (a handover's stop
    /// keeps it renewed while the server stops, then releases it).
    GivenUp,
    /// More than `ttl - loop_wait / 2` is left: renewed within the last half `loop_wait`.
    NotDue,
    /// Renew now (also a lease the store keeps without a time to live, which says none).
    Due,
}

/// Whether this cycle renews the lease: `left` is the time the store said the lease had left
/// when this cycle read it.
pub fn renewal(
    o: &Observation,
    action: &Action,
    left: Option<Duration>,
    loop_wait: Duration,
    ttl: Duration,
) -> Renewal {
    if o.cluster.leader.as_ref() != Some(&o.me) {
        return Renewal::NotHeld;
    }
    if matches!(action, Action::Demote { .. } | Action::ReleaseLease) {
        return Renewal::GivenUp;
    }
    if left.is_some_and(|left| left + loop_wait / 2 > ttl) {
        return Renewal::NotDue;
    }
    Renewal::Due
}
