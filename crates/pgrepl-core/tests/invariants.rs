//! The safety invariants of ARCHITECTURE.md, checked against every combination of the scenario
//! fixtures a member may observe: its server and data directory, who leads (ready or not), who
//! led last, a promote request, the synchronous mode and its record, and every flag and clock
//! (first cycle, `destroy_on_restart`, maintenance mode, start overdue, stalled, not streaming,
//! a forced target, an uninitialized cluster). Each decision is checked, and so is the lease
//! renewal the agent makes before carrying it out (`lease::renewal`).

mod scenario;

use pgrepl_core::lease::{self, Renewal};
use pgrepl_core::*;
use scenario::*;
use std::time::Duration;

const FOREIGN: SystemId = SystemId(99);
const LOOP_WAIT: Duration = Duration::from_secs(1);
const TTL: Duration = Duration::from_secs(4);

/// Who holds the lease, as this member (`node-2`) sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Lease {
    Free,
    /// `node-1` leads and runs as primary, holding every slot.
    Ready,
    /// `node-3` holds the lease but does not run as primary (yet).
    NotReady,
    /// This member holds it.
    Mine,
}

/// The synchronous mode and the record the last leader left.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Sync {
    Off,
    /// `on`, the record naming this member.
    OnNamingMe,
    /// `quorum`, the record naming the others (`node-1`, `node-3`).
    QuorumWithoutMe,
}

/// The cluster as the store records it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Init {
    Initialized,
    /// No `initialize` key; `node-1` is the bootstrap member.
    NotYet,
    /// No `initialize` key; this member is the bootstrap member.
    NotYetMine,
}

/// The reason inside maintenance mode's `Paused(..)`.
fn unpaused(r: &Reason) -> &Reason {
    match r {
        Reason::Paused(inner) => inner,
        r => r,
    }
}

/// Checks one decision against the invariants; `Err` says which one broke.
#[allow(clippy::too_many_arguments)]
fn check(
    o: &Observation,
    d: &Decision,
    lease: Lease,
    sync: Sync,
    init: Init,
    server: &Server,
    data: &DataDir,
) -> Result<(), &'static str> {
    let holds = lease == Lease::Mine;
    let ours = |d: &DataDir| d.system_id() == Some(SYSTEM);
    let paused = o.cluster.paused();
    let ok = |rule: bool, what: &'static str| if rule { Ok(()) } else { Err(what) };
    // A member whose data is foreign, or which finds no cluster recorded, touches nothing and
    // leads nothing, whatever it holds (only the bootstrap member bootstraps).
    if init != Init::Initialized {
        let bootstrap = init == Init::NotYetMine && (*data == DataDir::Missing || o.bootstrap_unfinished);
        return ok(d.action == Action::Wait || (d.action == Action::Bootstrap && bootstrap), "uninitialized: wait");
    }
    if data.system_id() == Some(FOREIGN) {
        return ok(d.action == Action::Wait, "foreign data: wait, never touched");
    }
    match &d.action {
        // Invariant 1: never promote, nor start as primary, without holding the lease.
        Action::Promote { claim_sync, .. } => {
            ok(holds, "promote without the lease")?;
            ok(matches!(server, Server::Replica { .. }), "promote a server that is not a replica")?;
            // Invariant 2: a new leader claims the sync record before it acknowledges anything.
            ok(*claim_sync == (sync != Sync::Off), "promote without claiming the sync record")
        }
        Action::StartAsPrimary => {
            ok(holds, "start as primary without the lease")?;
            ok(*server == Server::Stopped && *data == DataDir::Primary { system_id: SYSTEM }, "start as primary")
        }
        // The lease is taken only when free: by the member a promote asks for, by the last
        // leader itself (which holds whatever it acknowledged), or in a race by a running replica,
        // in synchronous mode only one the record names.
        Action::AcquireLease => {
            ok(lease == Lease::Free, "take a lease that is not free")?;
            let me = Some(m(2));
            match unpaused(&d.reason) {
                Reason::PromoteRequested => ok(o.cluster.target == me, "take the lease asked for another"),
                Reason::ResumeLeadership => {
                    ok(o.cluster.last_leader.as_ref().map(|r| r.member.clone()) == me, "resume another's leadership")
                }
                Reason::FailoverRace(_) => {
                    ok(matches!(server, Server::Replica { .. }), "race without running as a replica")?;
                    ok(sync != Sync::QuorumWithoutMe, "race for the lease outside the sync record")
                }
                _ => Err("take the lease for no reason of the three"),
            }
        }
        Action::RenewLease | Action::ReleaseLease => ok(holds, "renew or release a lease not held"),
        Action::Demote { release_lease } => {
            ok(matches!(server, Server::Primary { .. }), "demote a server that is not a primary")?;
            ok(*release_lease == holds, "demote releasing a lease not held, or keeping one held")
        }
        // Invariant 3: the one action that deletes a data directory. Only on the agent's first
        // cycle, with destroy_on_restart, for this cluster's data with standby.signal, by a
        // member that does not lead, unpaused. The rule reads the data directory, not the
        // server: PostgreSQL removes standby.signal when it promotes, so a running primary
        // has none, unless a hand put one there.
        Action::Reinitialize => ok(
            o.first_cycle
                && o.destroy_on_restart
                && !holds
                && !paused
                && *data == DataDir::Standby { system_id: SYSTEM },
            "wipe the data directory",
        ),
        // A rewind rewrites this member's data from a leader that runs as primary; it deletes
        // nothing (a failed one moves the directory aside) and never runs on the leader.
        Action::Rewind { leader } => {
            ok(lease == Lease::Ready && *leader == m(1) && ours(data), "rewind from a leader that does not run")
        }
        Action::CloneFrom { leader } => {
            ok(*data == DataDir::Missing && lease == Lease::Ready && *leader == m(1), "clone over data")
        }
        Action::Bootstrap => Err("bootstrap an initialized cluster"),
        Action::StartAsReplica { .. } => {
            ok(*server == Server::Stopped && *data == DataDir::Standby { system_id: SYSTEM }, "start as replica")
        }
        Action::RestartReplica { .. } | Action::Follow { .. } => {
            ok(matches!(server, Server::Replica { .. }) && !holds, "re-point or restart a replica that leads")
        }
        Action::StopServer { .. } => Err("stop a member not stopped in the spec"),
        Action::ApplySpec(_) | Action::Wait | Action::Nothing => Ok(()),
    }
}

/// The agent's lease renewal before the action: only by the holder, never with an action that
/// gives the lease up, never when renewed within half a `loop_wait`, always once due.
fn check_renewal(o: &Observation, d: &Decision, lease: Lease) -> Result<(), &'static str> {
    let gives_up = matches!(d.action, Action::Demote { .. } | Action::ReleaseLease);
    for left in [None, Some(TTL), Some(TTL - LOOP_WAIT / 2), Some(TTL - LOOP_WAIT), Some(Duration::ZERO)] {
        let r = lease::renewal(o, &d.action, left, LOOP_WAIT, TTL);
        let due = left.is_none_or(|left| left + LOOP_WAIT / 2 <= TTL);
        let expected = match (lease == Lease::Mine, gives_up, due) {
            (false, _, _) => Renewal::NotHeld,
            (true, true, _) => Renewal::GivenUp,
            (true, false, false) => Renewal::NotDue,
            (true, false, true) => Renewal::Due,
        };
        if r != expected {
            return Err("lease renewal");
        }
    }
    Ok(())
}

#[test]
fn no_combination_leads_without_the_lease_or_deletes_what_configuration_does_not_allow() {
    let servers =
        [Server::Stopped, primary(), replica_of(Some(1), true), replica_of(Some(1), false), replica_of(None, false)];
    let datas = [
        DataDir::Primary { system_id: SYSTEM },
        DataDir::Standby { system_id: SYSTEM },
        DataDir::Missing,
        DataDir::Standby { system_id: FOREIGN },
    ];
    let leases = [Lease::Free, Lease::Ready, Lease::NotReady, Lease::Mine];
    let syncs = [Sync::Off, Sync::OnNamingMe, Sync::QuorumWithoutMe];
    let inits = [Init::Initialized, Init::NotYet, Init::NotYetMine];
    let mut combinations = 0;
    let mut wipes = 0;
    let mut seen = std::collections::BTreeSet::new();
    for server in &servers {
        for data in &datas {
            for lease in leases {
                for last in [None, Some(1), Some(2)] {
                    for target in [None, Some(2), Some(3)] {
                        for sync in syncs {
                            for init in inits {
                                for flags in 0..128u8 {
                                    let mut s = Scenario::new().data(data.clone()).server(server.clone()).streaming(3);
                                    s = match lease {
                                        Lease::Free => s,
                                        Lease::Ready => s.ready_leader(1),
                                        Lease::NotReady => s.leader(3),
                                        Lease::Mine => s.leader(2),
                                    };
                                    if let Some(l) = last {
                                        s = s.last_leader(l);
                                    }
                                    if let Some(t) = target {
                                        s = s.target(t);
                                    }
                                    s = match sync {
                                        Sync::Off => s,
                                        Sync::OnNamingMe => s.with(sync_mode(SyncMode::On)).with(sync_record(&[2], 1)),
                                        Sync::QuorumWithoutMe => {
                                            s.with(sync_mode(SyncMode::Quorum)).with(sync_record(&[1, 3], 1))
                                        }
                                    };
                                    s = match init {
                                        Init::Initialized => s,
                                        Init::NotYet => s.uninitialized(),
                                        Init::NotYetMine => s
                                            .uninitialized()
                                            .with(|o| o.cluster.spec.as_mut().unwrap().bootstrap = Some(m(2))),
                                    };
                                    if flags & 1 != 0 {
                                        s = s.paused();
                                    }
                                    s = s.with(|o| {
                                        o.first_cycle = flags & 2 != 0;
                                        o.destroy_on_restart = flags & 4 != 0;
                                        o.start_overdue = flags & 8 != 0;
                                        o.replica_stalled = flags & 16 != 0;
                                        o.replica_not_streaming_long = (flags & 32 != 0).then_some(QUIET);
                                        o.cluster.force_target = flags & 64 != 0;
                                    });
                                    let d = s.decide();
                                    let broken = check(&s.0, &d, lease, sync, init, server, data)
                                        .and_then(|()| check_renewal(&s.0, &d, lease));
                                    if let Err(rule) = broken {
                                        panic!("{rule}: {:?} -> {d:?}", s.0);
                                    }
                                    wipes += usize::from(d.action == Action::Reinitialize);
                                    seen.insert(d.action.name());
                                    combinations += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(combinations, 5 * 4 * 4 * 3 * 3 * 3 * 3 * 128);
    // The walk reaches what it guards: every action but `stop` (a member kept stopped has its own
    // walk in decide_scenarios.rs), and the wipe in each case it is allowed.
    let all = [
        "bootstrap",
        "clone",
        "start_primary",
        "start_replica",
        "follow",
        "acquire_lease",
        "promote",
        "renew_lease",
        "apply_spec",
        "demote",
        "rewind",
        "restart_replica",
        "reinitialize",
        "release_lease",
        "wait",
        "nothing",
    ];
    assert_eq!(seen, all.into_iter().collect(), "actions the walk reached");
    assert!(wipes > 0);
}
