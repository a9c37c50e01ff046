//! When is a local cluster ready? The primary is writable, every running member of the spec
//! streams from it (in its `pg_stat_replication`), slots match the members, and members
//! removed or stopped are gone. Pure: commands poll the store and ask this.

use pgrepl_core::{ClusterView, MemberName};

/// `Ok` when ready, else the first thing still awaited, as a phrase ("node-2 to stream from node-1").
pub fn check(view: &ClusterView) -> Result<MemberName, String> {
    let spec = view.spec.as_ref().ok_or("the cluster spec to be written")?;
    let Some((leader, status)) = view.ready_leader() else {
        return Err(match &view.leader {
            None => "a member to take the leader lease".to_string(),
            Some(l) => format!("{l} to run as primary"),
        });
    };
    for (member, m) in &spec.members {
        if member == leader {
            continue;
        }
        if m.stopped {
            if view.members.contains_key(member) {
                return Err(format!("{member} to stop"));
            }
            continue;
        }
        let in_pg_stat_replication =
            status.replication.iter().any(|r| r.application_name == member.as_str() && r.state == "streaming");
        if !view.is_streaming(member) || !in_pg_stat_replication {
            return Err(format!("{member} to stream from {leader}"));
        }
    }
    if let Some(removed) = view.members.keys().find(|m| !spec.members.contains_key(*m)) {
        return Err(format!("removed member {removed} to stop"));
    }
    let mut wanted: Vec<String> = spec.members.keys().filter(|m| *m != leader).map(MemberName::slot_name).collect();
    let mut slots = status.slots.clone();
    wanted.sort();
    slots.sort();
    if wanted != slots {
        return Err(format!("{leader}'s replication slots to be {wanted:?} (now {slots:?})"));
    }
    Ok(leader.clone())
}

/// `check`, counting only the statuses published at or after `since_ms` (wall clock, as agents
/// stamp them): a status from before, say from before a power loss and still within its TTL, is
/// no evidence that the member runs now.
pub fn check_since(view: &ClusterView, since_ms: u64) -> Result<MemberName, String> {
    let mut fresh = view.clone();
    fresh.members.retain(|_, s| s.updated_ms >= since_ms);
    check(&fresh)
}

/// In maintenance mode, when nothing stopped is started: `Ok` once every running member of the
/// spec has an agent that published since `since_ms`.
pub fn agents_since(view: &ClusterView, since_ms: u64) -> Result<(), String> {
    let spec = view.spec.as_ref().ok_or("the cluster spec to be written")?;
    let silent = spec
        .members
        .iter()
        .filter(|(_, m)| !m.stopped)
        .find(|(name, _)| view.members.get(*name).is_none_or(|s| s.updated_ms < since_ms));
    match silent {
        Some((name, _)) => Err(format!("{name}'s agent to publish its status")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrepl_core::*;

    fn status(role: Role, state: MemberState) -> MemberStatus {
        pgrepl_core::testing::status(role, state, 1, Lsn(1))
    }

    fn two_member_view() -> ClusterView {
        let (n1, n2) = (MemberName::numbered(1), MemberName::numbered(2));
        let mut spec = Spec::default();
        for n in [&n1, &n2] {
            spec.members.insert(n.clone(), MemberSpec { host: "127.0.0.1".into(), port: 1, stopped: false });
        }
        let mut primary = status(Role::Primary, MemberState::Running);
        primary.slots = vec!["node_2".into()];
        primary.replication = vec![ReplicationRow {
            application_name: "node-2".into(),
            client_addr: Some("127.0.0.1".into()),
            state: "streaming".into(),
            flush_lsn: None,
            replay_lsn: None,
            replay_lag_ms: None,
            sync_state: None,
        }];
        let mut view = ClusterView { leader: Some(n1.clone()), spec: Some(spec), ..ClusterView::default() };
        view.members.insert(n1, primary);
        view.members.insert(n2, status(Role::Replica, MemberState::Streaming));
        view
    }

    #[test]
    fn a_streaming_cluster_is_ready() {
        assert_eq!(check(&two_member_view()), Ok(MemberName::numbered(1)));
    }

    #[test]
    fn a_replica_missing_from_pg_stat_replication_is_awaited() {
        let mut view = two_member_view();
        view.members.get_mut(&MemberName::numbered(1)).unwrap().replication.clear();
        assert_eq!(check(&view), Err("node-2 to stream from node-1".into()));
    }

    #[test]
    fn a_removed_member_and_its_slot_are_awaited() {
        let mut view = two_member_view();
        view.spec.as_mut().unwrap().members.remove(&MemberName::numbered(2));
        assert_eq!(check(&view), Err("removed member node-2 to stop".into()));
        view.members.remove(&MemberName::numbered(2));
        assert!(check(&view).unwrap_err().contains("replication slots"));
    }

    #[test]
    fn statuses_from_before_are_no_evidence() {
        let mut view = two_member_view();
        for s in view.members.values_mut() {
            s.updated_ms = 1_000;
        }
        assert_eq!(check_since(&view, 1_000), Ok(MemberName::numbered(1)));
        assert_eq!(check_since(&view, 1_001), Err("node-1 to run as primary".into()));
        view.members.get_mut(&MemberName::numbered(1)).unwrap().updated_ms = 2_000;
        assert_eq!(check_since(&view, 1_001), Err("node-2 to stream from node-1".into()));
    }

    #[test]
    fn paused_every_running_member_needs_only_a_fresh_status() {
        let mut view = two_member_view();
        for s in view.members.values_mut() {
            s.updated_ms = 1_000;
            s.state = MemberState::Stopped;
        }
        assert_eq!(agents_since(&view, 1_000), Ok(()));
        assert_eq!(agents_since(&view, 1_001), Err("node-1's agent to publish its status".into()));
        view.spec.as_mut().unwrap().members.get_mut(&MemberName::numbered(1)).unwrap().stopped = true;
        view.members.remove(&MemberName::numbered(1));
        assert_eq!(agents_since(&view, 1_001), Err("node-2's agent to publish its status".into()));
        view.members.get_mut(&MemberName::numbered(2)).unwrap().updated_ms = 2_000;
        assert_eq!(agents_since(&view, 1_001), Ok(()));
    }

    #[test]
    fn no_leader_is_awaited() {
        let mut view = two_member_view();
        view.leader = None;
        assert_eq!(check(&view), Err("a member to take the leader lease".into()));
    }
}
