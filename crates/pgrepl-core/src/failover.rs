//! The rules of automatic failover: which replica may race for a free leader lease, and which
//! replicas a primary in synchronous mode waits for (so that only a member holding every
//! acknowledged commit can ever win that race; how the `sync` record moves to them safely is
//! `sync.rs`'s). Pure functions of one `Observation`.

use crate::decide::Observation;
use crate::decision::{Action, Decision, Reason};
use crate::fork::{self, Replayed};
use crate::local::Server;
use crate::names::MemberName;
use crate::spec::{Spec, SyncMode};
use crate::view::{Role, SyncRecord};

/// Whether this member races for the free lease now (`AcquireLease`) or waits, and why. The rules:
/// 1. automatic failover is on and this member runs as a replica;
/// 2. it is on the lost leader's timeline (or later) and within `maximum_lag_bytes` of the
///    leader's last published position;
/// 3. in synchronous mode, it is in the leader's `sync` record;
/// 4. it has not replayed WAL off the lost leader's timeline history (the `last_leader` record
///    keeps its switch points): promoting such a replica would drop the leader's line;
/// 5. every other live replica that counts (all of them; in synchronous mode those in the
///    record) has published its position since the lease fell free, and none is ahead of it;
///    a replica proven off the lost leader's line does not count (it may not take over, and
///    its WAL is not the leader's). Two replicas on the leader's line hold prefixes of the
///    same WAL, so the one further along (received or replayed) is ahead whatever timeline
///    each has reached; without the history to prove that, timeline first, then position;
/// 6. in synchronous mode, enough of the record's members have reported a position that the
///    most advanced of them holds every acknowledged commit.
///
/// Replicas at the same position may all race: the store lets exactly one take the lease.
pub(crate) fn race(o: &Observation, spec: &Spec) -> Decision {
    match may_race(o, spec) {
        Ok(lost) => Decision::new(Action::AcquireLease, Reason::FailoverRace(lost)),
        Err(reason) => Decision::wait(*reason),
    }
}

fn may_race(o: &Observation, spec: &Spec) -> Result<Option<MemberName>, Box<Reason>> {
    let c = &o.cluster;
    let last = c.last_leader.as_ref();
    let lost = last.map(|r| r.member.clone());
    if !spec.failover.automatic {
        return Err(Box::new(Reason::NoLeaderManual(lost)));
    }
    let Server::Replica { timeline, receive_lsn, replay_lsn, .. } = &o.server else {
        return Err(Box::new(Reason::NotACandidate(lost)));
    };
    let mine = (*timeline, (*receive_lsn).max(*replay_lsn));
    if let Some(theirs) = last.and_then(|r| r.timeline).filter(|t| t > timeline) {
        return Err(Box::new(Reason::OlderTimeline { mine: *timeline, theirs }));
    }
    // The lost leader's line: its timeline and that timeline's switch points. A replica on a
    // newer timeline than the record is not proven off it: the record is what is stale (a
    // leader lost before it recorded itself).
    let line = last.and_then(|r| Some((r.timeline?, r.history.as_deref()?)));
    let off_line = |replayed: Replayed<'_>| {
        let (lt, leader_history) = line.filter(|(lt, _)| replayed.timeline <= *lt)?;
        fork::fork(replayed, lt, leader_history)
    };
    let my_replay = o.replayed();
    if let Some(fork) = my_replay.and_then(off_line) {
        return Err(Box::new(Reason::ForkedFromLostLeader { lost, fork }));
    }
    let leader_lsn =
        lost.as_ref().and_then(|l| c.members.get(l)).filter(|s| s.role == Role::Primary).and_then(|s| s.lsn);
    if let Some(lag) = leader_lsn.map(|l| l.bytes_after(mine.1)).filter(|lag| *lag > spec.failover.maximum_lag_bytes) {
        return Err(Box::new(Reason::TooFarBehind { lag, max: spec.failover.maximum_lag_bytes }));
    }
    let sync = match (spec.failover.synchronous, &c.sync) {
        (SyncMode::Off, _) => None,
        (_, Some(record)) if record.members.contains(&o.me) => Some(record),
        (_, _) => return Err(Box::new(Reason::NotSynchronous(lost))),
    };
    let mut reported = 1;
    for (name, status) in &c.members {
        let counts = *name != o.me
            && status.role == Role::Replica
            && spec.members.contains_key(name)
            && sync.is_none_or(|s| s.members.contains(name));
        if !counts {
            continue;
        }
        let their_replay = status.replayed();
        if their_replay.is_some_and(|r| off_line(r).is_some()) {
            continue;
        }
        if status.leader.is_some() {
            return Err(Box::new(Reason::AwaitingPosition(name.clone())));
        }
        if let Some(theirs) = status.position() {
            let both_on_line = line.is_some() && my_replay.is_some() && their_replay.is_some();
            let ahead = if both_on_line { theirs.1 > mine.1 } else { theirs > mine };
            if ahead {
                return Err(Box::new(Reason::PeerAhead(name.clone())));
            }
            reported += 1;
        }
    }
    if let Some(record) = sync {
        if reported < record.reports_needed() {
            return Err(Box::new(Reason::TooFewReports { reported, needed: record.reports_needed() }));
        }
    }
    Ok(lost)
}

/// The synchronous replicas a primary should wait for now, given the mode, the current record
/// and which replicas stream from it (its `pg_stat_replication`). In `on` mode the current
/// synchronous replica is kept while it streams, else the streaming one with the lowest name; in
/// `quorum` mode any one of all streaming replicas. With none (or mode `off`): nobody.
pub fn wanted_sync(o: &Observation, spec: &Spec, replication: &[crate::ReplicationRow]) -> SyncRecord {
    let all: Vec<MemberName> = replication
        .iter()
        .filter(|r| r.state == "streaming")
        .filter_map(|r| MemberName::new(&r.application_name).ok())
        .filter(|m| *m != o.me && spec.members.contains_key(m))
        .collect();
    // A member about to restart (`pgrepl restart`) is passed over while another can serve.
    let owing = crate::restart::owing(&o.cluster);
    let spared: Vec<MemberName> = all.iter().filter(|m| !owing.contains(*m)).cloned().collect();
    let streaming = if spared.is_empty() { all } else { spared };
    let members: std::collections::BTreeSet<MemberName> = match spec.failover.synchronous {
        SyncMode::Off => Default::default(),
        SyncMode::On => {
            let current = o.cluster.sync.as_ref().map(|s| &s.members);
            let kept = streaming.iter().find(|m| current.is_some_and(|c| c.contains(*m)));
            kept.or(streaming.iter().min()).into_iter().cloned().collect()
        }
        SyncMode::Quorum => streaming.into_iter().collect(),
    };
    let quorum = usize::from(!members.is_empty());
    SyncRecord { leader: Some(o.me.clone()), members, quorum }
}

#[cfg(test)]
mod tests {
    use crate::testing::sync_record as rec;

    #[test]
    fn reports_needed_follow_the_pigeonhole() {
        assert_eq!(rec(&[2], 1).reports_needed(), 1);
        assert_eq!(rec(&[2, 3], 1).reports_needed(), 2);
        assert_eq!(rec(&[2, 3, 4], 2).reports_needed(), 2);
        assert_eq!(rec(&[2, 3], 0).reports_needed(), 3, "quorum 0: nobody can be proven");
    }
}
