//! Scenario tests of when a cycle renews the leader lease (`pgrepl_core::lease`): only its
//! holder, never with an action that gives it up, about once per `loop_wait`, and always soon
//! enough that a leader whose cycles run never lets it lapse.

mod scenario;

use pgrepl_core::lease::{renewal, Renewal};
use pgrepl_core::*;
use scenario::*;
use std::time::Duration;

const LOOP_WAIT: Duration = Duration::from_secs(1);
/// The shortest TTL the configuration allows for `LOOP_WAIT` (`ttl >= 3 * loop_wait`).
const TTL: Duration = Duration::from_secs(3);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn only_the_holder_renews() {
    let lease = |s: Scenario| renewal(&s.0, &Action::RenewLease, Some(Duration::ZERO), LOOP_WAIT, TTL);
    assert_eq!(lease(healthy_leader()), Renewal::Due);
    assert_eq!(lease(healthy_leader().leader(2)), Renewal::NotHeld, "another member holds it");
    assert_eq!(lease(healthy_leader().with(|o| o.cluster.leader = None)), Renewal::NotHeld, "nobody does");
    // Whatever this member is (a primary, the last leader, the target), and whatever it does.
    let not_mine = healthy_leader().target(1).ready_leader(3);
    for action in [Action::RenewLease, Action::ApplySpec(SpecWork::default()), Action::Wait, Action::StartAsPrimary] {
        assert_eq!(renewal(&not_mine.0, &action, None, LOOP_WAIT, TTL), Renewal::NotHeld, "{action:?}");
    }
}

#[test]
fn an_action_that_gives_the_lease_up_is_not_preceded_by_a_renewal() {
    for action in
        [Action::Demote { release_lease: true }, Action::Demote { release_lease: false }, Action::ReleaseLease]
    {
        assert_eq!(renewal(&healthy_leader().0, &action, Some(Duration::ZERO), LOOP_WAIT, TTL), Renewal::GivenUp);
    }
    // Every other action of the holder keeps it: a start, a promotion, spec work, a stop for
    // `pgrepl stop` (which releases it only once the server is down), waiting.
    for action in [
        Action::StartAsPrimary,
        Action::Promote { create_slots: vec![], claim_sync: true },
        Action::ApplySpec(SpecWork::default()),
        Action::StopServer { release_lease: true },
        Action::Wait,
        Action::Nothing,
    ] {
        assert_eq!(renewal(&healthy_leader().0, &action, Some(Duration::ZERO), LOOP_WAIT, TTL), Renewal::Due);
    }
}

#[test]
fn a_lease_renewed_within_half_a_loop_wait_is_not_renewed_again() {
    let at = |left| renewal(&healthy_leader().0, &Action::RenewLease, left, LOOP_WAIT, TTL);
    assert_eq!(at(Some(TTL)), Renewal::NotDue, "just renewed");
    assert_eq!(at(Some(TTL - LOOP_WAIT / 2 + ms(1))), Renewal::NotDue);
    assert_eq!(at(Some(TTL - LOOP_WAIT / 2)), Renewal::Due, "half a loop_wait ago");
    assert_eq!(at(Some(ms(1))), Renewal::Due);
    assert_eq!(at(None), Renewal::Due, "a lease kept without a time to live says nothing");
}

/// The lease over a minute of cycles `gap` apart (a busy cluster wakes the leader often, a
/// quiet one once per `loop_wait`): the fewest renewals that keep it, and never less than
/// `ttl - 3/2 loop_wait` left when a cycle looks.
fn simulate(gaps: impl Fn(u32) -> Duration) -> (u32, Duration, Duration) {
    let o = healthy_leader().0;
    let (mut now, mut renewed_at, mut renewals) = (Duration::ZERO, Duration::ZERO, 0);
    let (mut least_left, mut least_between) = (TTL, Duration::MAX);
    let mut cycle = 0;
    while now < Duration::from_secs(60) {
        now += gaps(cycle);
        cycle += 1;
        let left = TTL.saturating_sub(now - renewed_at);
        assert!(left > Duration::ZERO, "the lease lapsed at {now:?}");
        least_left = least_left.min(left);
        if renewal(&o, &Action::RenewLease, Some(left), LOOP_WAIT, TTL) == Renewal::Due {
            least_between = least_between.min(now - renewed_at);
            renewed_at = now;
            renewals += 1;
        }
    }
    (renewals, least_left, least_between)
}

#[test]
fn a_leader_renews_about_once_per_loop_wait_however_often_it_wakes_and_never_lets_the_lease_lapse() {
    let floor = TTL - LOOP_WAIT * 3 / 2;
    // Woken every 50 ms by other members' writes: a renewal each half loop_wait, not each cycle.
    let (renewals, least_left, least_between) = simulate(|_| ms(50));
    assert_eq!(renewals, 120, "of 1200 cycles");
    assert!(least_between >= LOOP_WAIT / 2 && least_left >= floor, "{least_between:?} {least_left:?}");
    // A quiet cluster: one cycle per loop_wait, each renewing.
    let (renewals, least_left, _) = simulate(|_| LOOP_WAIT);
    assert_eq!((renewals, least_left), (60, TTL - LOOP_WAIT));
    // The worst case: a cycle just before the renewal is due, the next a whole loop_wait later.
    let (_, least_left, least_between) = simulate(|n| if n % 2 == 0 { LOOP_WAIT / 2 - ms(1) } else { LOOP_WAIT });
    assert!(least_between >= LOOP_WAIT / 2, "{least_between:?}");
    assert!(least_left >= floor, "{least_left:?} left, below {floor:?}");
    assert!(least_left < floor + ms(2), "the bound is reached: {least_left:?}");
}
