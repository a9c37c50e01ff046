//! `decide()`: from one observation of this member and of the cluster to one action.
//! Pure: the observation is the only input, so every rule is a scenario test away.

use crate::decision::{Action, Decision, Reason, SpecWork};
use crate::failover;
use crate::fork::{Replayed, TimelineSwitch};
use crate::local::{DataDir, ReplicationRow, Server, Slot, Upstream};
use crate::maintenance;
use crate::names::MemberName;
use crate::spec::{PasswordKind, PasswordVersions, Spec};
use crate::view::ClusterView;

/// Everything one cycle knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub me: MemberName,
    /// The agent has just started (`destroy_on_restart` acts only then).
    pub first_cycle: bool,
    pub destroy_on_restart: bool,
    pub data: DataDir,
    pub server: Server,
    /// A replica pointed at the leader has not streamed for longer than the stall bound.
    pub replica_stalled: bool,
    /// How long a replica pointed at the leader has not streamed, once that is longer than the
    /// restart bound and the agent has not restarted it within that bound either (`None`
    /// otherwise). Unlike a stall, a restart does not start this afresh.
    pub replica_not_streaming_long: Option<std::time::Duration>,
    /// Role password versions this agent has set on its primary since it started; `None`
    /// before the first time, so that every start resets all passwords to their configured values.
    pub applied_passwords: Option<PasswordVersions>,
    /// Version of the replication password in this member's password file, once written.
    pub passfile_password: Option<u64>,
    /// The admin and replication passwords this host's secrets hold that are not the ones the
    /// spec's verifiers were made from (changed by `pgrepl passwd` elsewhere, not yet here).
    pub stale_secrets: Vec<PasswordKind>,
    /// The data directory carries the mark of a bootstrap that has not yet recorded the
    /// cluster in the store (so it is this cluster's own, to be resumed, not foreign data).
    pub bootstrap_unfinished: bool,
    /// This member leads (or led last) and its PostgreSQL has been down for longer than
    /// `primary_start_timeout`: it gives way to a failover and does not take the lease back.
    pub start_overdue: bool,
    /// Physical slots on this server (primary only).
    pub slots: Vec<Slot>,
    /// This server's `pg_stat_replication` (primary only).
    pub replication: Vec<ReplicationRow>,
    /// This server's `synchronous_standby_names` (primary only).
    pub standby_names: Option<String>,
    /// The switch points of the history of this server's timeline (a primary's current one, a
    /// replica's replayed one); `None` when the history file could not be read.
    pub history: Option<Vec<TimelineSwitch>>,
    pub cluster: ClusterView,
}

impl Observation {
    /// Where this replica's replayed WAL lies, when its server said which timeline it replayed.
    pub fn replayed(&self) -> Option<Replayed<'_>> {
        let Server::Replica { replay_timeline: Some(timeline), replay_lsn, .. } = &self.server else { return None };
        Some(Replayed { timeline: *timeline, lsn: *replay_lsn, history: self.history.as_deref() })
    }
}

pub fn decide(o: &Observation) -> Decision {
    // Maintenance mode holds back what nobody asked for (`maintenance::restrain`).
    if o.cluster.paused() {
        return maintenance::restrain(o, unpaused(o));
    }
    unpaused(o)
}

fn unpaused(o: &Observation) -> Decision {
    let c = &o.cluster;
    let Some(spec) = &c.spec else {
        return Decision::wait(Reason::NoSpec);
    };
    let Some(mine) = spec.members.get(&o.me) else {
        return Decision::new(Action::Nothing, Reason::NotInSpec);
    };
    if mine.stopped {
        return kept_stopped(o);
    }
    let Some(system_id) = c.system_id else {
        return uninitialized(o, spec);
    };
    if let Some(found) = o.data.system_id() {
        if found != system_id {
            return Decision::wait(Reason::ForeignData { found, cluster: system_id });
        }
    }
    let holds_lease = c.leader.as_ref() == Some(&o.me);
    if o.first_cycle && o.destroy_on_restart && matches!(o.data, DataDir::Standby { .. }) && !holds_lease {
        return Decision::new(Action::Reinitialize, Reason::DestroyOnRestart);
    }
    if o.data == DataDir::Missing {
        return without_data(o);
    }
    match &c.leader {
        Some(leader) if *leader == o.me => as_leader(o, spec),
        Some(leader) => as_follower(o, spec, leader),
        None => without_leader(o, spec),
    }
}

/// `pgrepl stop MEMBER`: its server goes down and stays down, and it takes no part in leading
/// (the lease is given up once its server is down, so a replica takes over at once) until
/// `pgrepl start MEMBER`.
fn kept_stopped(o: &Observation) -> Decision {
    let holds_lease = o.cluster.leader.as_ref() == Some(&o.me);
    match o.server {
        Server::Primary { .. } | Server::Replica { .. } => {
            Decision::new(Action::StopServer { release_lease: holds_lease }, Reason::StopRequested)
        }
        Server::Stopped if holds_lease => Decision::new(Action::ReleaseLease, Reason::StopRequested),
        Server::Stopped => Decision::new(Action::Nothing, Reason::KeptStopped),
    }
}

fn uninitialized(o: &Observation, spec: &Spec) -> Decision {
    match (&o.data, &spec.bootstrap) {
        (DataDir::Missing, Some(b)) if *b == o.me => Decision::new(Action::Bootstrap, Reason::NewCluster),
        (_, Some(b)) if *b == o.me && o.bootstrap_unfinished => {
            Decision::new(Action::Bootstrap, Reason::ResumeBootstrap)
        }
        (DataDir::Missing, b) => Decision::wait(Reason::WaitingForBootstrap(b.clone())),
        (data, _) => Decision::wait(Reason::DataWithoutCluster(data.system_id().unwrap_or(crate::SystemId(0)))),
    }
}

fn without_data(o: &Observation) -> Decision {
    let c = &o.cluster;
    match &c.leader {
        Some(l) if *l == o.me => Decision::new(Action::ReleaseLease, Reason::LeaseWithoutData),
        Some(l) => match c.ready_leader() {
            Some((_, status)) if status.slots.contains(&o.me.slot_name()) => {
                Decision::new(Action::CloneFrom { leader: l.clone() }, Reason::CloneLeader(l.clone()))
            }
            Some(_) => Decision::wait(Reason::WaitingForSlot(l.clone())),
            None => Decision::wait(Reason::LeaderNotReady(l.clone())),
        },
        None => Decision::wait(Reason::NoLeaderToClone),
    }
}

fn as_leader(o: &Observation, spec: &Spec) -> Decision {
    let c = &o.cluster;
    let handover = c.target.as_ref().filter(|t| **t != o.me);
    match (&o.server, handover) {
        (Server::Primary { .. }, Some(t)) if c.is_streaming(t) || c.force_target => {
            Decision::new(Action::Demote { release_lease: true }, Reason::HandOver(t.clone()))
        }
        (Server::Primary { .. }, Some(t)) => Decision::new(Action::RenewLease, Reason::TargetNotReady(t.clone())),
        (Server::Primary { .. }, None) => {
            let work = primary_work(o, spec);
            if work.is_empty() {
                Decision::new(Action::RenewLease, Reason::Healthy)
            } else {
                Decision::new(Action::ApplySpec(work.clone()), Reason::SpecChanged(work))
            }
        }
        (_, Some(t)) => Decision::new(Action::ReleaseLease, Reason::GiveWayTo(t.clone())),
        (Server::Replica { .. }, None) => Decision::new(
            Action::Promote {
                create_slots: slots_for_others(o, spec),
                claim_sync: spec.failover.synchronous != crate::SyncMode::Off,
            },
            Reason::HoldsLeaseAsReplica,
        ),
        (Server::Stopped, None) if o.start_overdue => Decision::new(Action::ReleaseLease, Reason::CannotStart),
        (Server::Stopped, None) => match o.data {
            DataDir::Standby { .. } => Decision::new(Action::StartAsReplica { leader: None }, Reason::StartLeader),
            _ => Decision::new(Action::StartAsPrimary, Reason::StartLeader),
        },
    }
}

/// The slot names of every other member of the spec.
fn slots_for_others(o: &Observation, spec: &Spec) -> Vec<String> {
    spec.members.keys().filter(|m| **m != o.me).map(MemberName::slot_name).collect()
}

/// What a primary holding the lease still has to do to match the spec.
fn primary_work(o: &Observation, spec: &Spec) -> SpecWork {
    let c = &o.cluster;
    let wanted = slots_for_others(o, spec);
    let sync = failover::wanted_sync(o, spec, &o.replication);
    let sync_done =
        c.sync.as_ref() == Some(&sync) && o.standby_names.as_deref() == Some(&crate::sync::standby_names(&sync));
    let timeline = match o.server {
        Server::Primary { timeline, .. } => Some(timeline),
        _ => None,
    };
    let recorded =
        c.last_leader.as_ref().is_some_and(|r| r.member == o.me && r.timeline == timeline && r.history == o.history);
    SpecWork {
        passwords: stale_passwords(o.applied_passwords, spec.passwords, &PasswordKind::ALL),
        create_slots: wanted.iter().filter(|w| !o.slots.iter().any(|s| s.name == **w)).cloned().collect(),
        drop_slots: o.slots.iter().filter(|s| !s.active && !wanted.contains(&s.name)).map(|s| s.name.clone()).collect(),
        record_leader: !recorded,
        clear_target: c.target.as_ref() == Some(&o.me),
        sync: (!sync_done).then_some(sync),
    }
}

fn stale_passwords(
    applied: Option<PasswordVersions>,
    wanted: PasswordVersions,
    kinds: &[PasswordKind],
) -> Vec<PasswordKind> {
    kinds.iter().copied().filter(|k| applied.is_none_or(|a| a.get(*k) != wanted.get(*k))).collect()
}

fn as_follower(o: &Observation, spec: &Spec, leader: &MemberName) -> Decision {
    let ready = o.cluster.ready_leader();
    let leader_ready = ready.is_some();
    // A replica that cannot stream from a leader on a newer timeline has diverged from it; one
    // on the same timeline is cut off or refused (network, password), which rewinding won't fix.
    let leader_ahead = match (&o.server, ready.and_then(|(_, s)| s.timeline)) {
        (Server::Replica { timeline, .. }, Some(theirs)) => theirs > *timeline,
        _ => false,
    };
    let l = leader.clone();
    match (&o.server, &o.data) {
        (Server::Primary { .. }, _) => Decision::new(Action::Demote { release_lease: false }, Reason::AnotherLeader(l)),
        (Server::Stopped, DataDir::Primary { .. }) if leader_ready => {
            Decision::new(Action::Rewind { leader: l.clone() }, Reason::FormerPrimary(l))
        }
        (Server::Stopped, DataDir::Primary { .. }) => Decision::wait(Reason::LeaderNotReady(l)),
        (Server::Stopped, _) => {
            Decision::new(Action::StartAsReplica { leader: Some(l.clone()) }, Reason::StartFollower(l))
        }
        (Server::Replica { upstream, streaming, .. }, _) => {
            let wanted = spec.members.get(leader).map(|m| Upstream { host: m.host.clone(), port: m.port });
            if let Some(fork) = forked(o, ready.map(|(_, s)| s)) {
                // Proven from the switch points: no stall to wait out, no upstream to try first.
                Decision::new(Action::Rewind { leader: l.clone() }, Reason::Forked { leader: l, fork })
            } else if *upstream != wanted {
                Decision::new(Action::Follow { leader: l.clone() }, Reason::NewUpstream(l))
            } else if o.replica_stalled && leader_ahead {
                Decision::new(Action::Rewind { leader: l.clone() }, Reason::Stalled(l))
            } else if o.stale_secrets.contains(&PasswordKind::Replication) {
                // Its password file would only get the old password again, and no restart helps.
                Decision::new(
                    Action::Nothing,
                    Reason::StaleSecret { kind: PasswordKind::Replication, leader: l, streaming: *streaming },
                )
            } else if o.passfile_password != Some(spec.passwords.replication) {
                let work = SpecWork { passwords: vec![PasswordKind::Replication], ..SpecWork::default() };
                Decision::new(Action::ApplySpec(work.clone()), Reason::SpecChanged(work))
            } else if let Some(quiet) = o.replica_not_streaming_long.filter(|_| leader_ready && !*streaming) {
                // PostgreSQL may wait long before it tries to stream again, or not at all (a WAL
                // receiver that gave up on a lossy link): a restart starts a new one now. Should
                // it still not stream, the stall bound above comes later.
                Decision::new(
                    Action::RestartReplica { leader: l.clone() },
                    Reason::NotStreaming { leader: l, secs: quiet.as_secs() },
                )
            } else if *streaming {
                Decision::new(Action::Nothing, Reason::Streaming(l))
            } else {
                Decision::new(Action::Nothing, Reason::CatchingUp(l))
            }
        }
    }
}

/// Whether this replica replayed WAL off the history the running leader published.
fn forked(o: &Observation, leader: Option<&crate::view::MemberStatus>) -> Option<crate::fork::Fork> {
    leader?.fork_of_replayed(o.replayed()?)
}

fn without_leader(o: &Observation, spec: &Spec) -> Decision {
    let c = &o.cluster;
    let last = c.last_leader.as_ref().map(|r| r.member.clone());
    let is_primary = matches!(o.server, Server::Primary { .. });
    match &c.target {
        Some(t) if *t == o.me => Decision::new(Action::AcquireLease, Reason::PromoteRequested),
        Some(t) if is_primary => {
            Decision::new(Action::Demote { release_lease: false }, Reason::WaitingForTarget(t.clone()))
        }
        Some(t) => Decision::wait(Reason::WaitingForTarget(t.clone())),
        None if last.as_ref() == Some(&o.me) && !o.start_overdue => {
            Decision::new(Action::AcquireLease, Reason::ResumeLeadership)
        }
        None if is_primary => Decision::new(Action::Demote { release_lease: false }, Reason::PrimaryWithoutLease(last)),
        None if o.server == Server::Stopped && matches!(o.data, DataDir::Standby { .. }) => {
            Decision::new(Action::StartAsReplica { leader: None }, Reason::StartWithoutLeader)
        }
        None => failover::race(o, spec),
    }
}
