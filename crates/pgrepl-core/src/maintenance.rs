//! Maintenance mode (`pgrepl pause`): what a member may still do while the cluster is paused.
//! `restrain` takes the decision `decide()` would make and holds back whatever an operator did
//! not ask for: no automatic failover, no restart of a stopped PostgreSQL nor of a replica that
//! does not stream, no demotion of a primary that lost the lease, no automatic rewind or wipe. What a manual `promote`,
//! `switchover` or `failover` needs (a `target` set, the lease handed over, the former primary
//! rejoining the new one) goes on. The leader keeps renewing its lease. Every sentence says it is
//! paused. Pure, like `decide()`: on `resume` the next cycle simply decides unrestrained from a
//! fresh observation.

use crate::decide::Observation;
use crate::decision::{Action, Decision, Reason};
use crate::local::Server;

/// The decision a paused member carries out instead of `d`.
pub fn restrain(o: &Observation, d: Decision) -> Decision {
    let c = &o.cluster;
    let holds_lease = c.leader.as_ref() == Some(&o.me);
    // This member is the one a manual promote, switchover or failover names.
    let requested = c.target.as_ref() == Some(&o.me);
    // The last leader, still running as primary, may take its lease back.
    let running_last_leader =
        c.last_leader.as_ref().is_some_and(|r| r.member == o.me) && matches!(o.server, Server::Primary { .. });
    let held = match &d.action {
        Action::StartAsPrimary | Action::StartAsReplica { .. } if !requested => Some(Reason::NotStartingPaused),
        Action::ReleaseLease if d.reason == Reason::CannotStart => Some(Reason::NotStartingPaused),
        // The lease is taken only when asked for, or back by the primary that held it last.
        Action::AcquireLease if !requested && !running_last_leader => {
            Some(Reason::NoFailoverPaused(c.last_leader.as_ref().map(|r| r.member.clone())))
        }
        // A leader that runs as a replica was demoted by hand: it gives the lease up rather
        // than promote itself back (a requested promotion goes on).
        Action::Promote { .. } if !requested => {
            return paused(Decision::new(Action::ReleaseLease, Reason::DemotedByHandPaused));
        }
        // Nobody leads and nobody was asked to: a primary without the lease keeps running.
        Action::Demote { release_lease: false } if c.leader.is_none() && c.target.is_none() => {
            Some(Reason::NoDemotionPaused)
        }
        // Only a former primary rejoining the leader put in its place (by a manual change)
        // rewinds; a replica that cannot stream is left as it is.
        Action::Rewind { leader } if !matches!(d.reason, Reason::FormerPrimary(_)) => {
            Some(Reason::NoRewindPaused(leader.clone()))
        }
        // Nor is one restarted for not streaming: servers are stopped and started by hand.
        Action::RestartReplica { leader } => Some(Reason::NoRestartPaused(leader.clone())),
        Action::Reinitialize => Some(Reason::NoWipePaused),
        _ => None,
    };
    match held {
        // The leader keeps its lease whatever else is held back.
        Some(reason) if holds_lease => paused(Decision::new(Action::RenewLease, reason)),
        Some(reason) => paused(Decision::wait(reason)),
        None => paused(d),
    }
}

fn paused(d: Decision) -> Decision {
    Decision { action: d.action, reason: Reason::Paused(Box::new(d.reason)) }
}
