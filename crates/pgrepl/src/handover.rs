//! Whether a requested change of leader (`switchover`, `promote`, `failover --to`) can still
//! happen, judged from one view, so that a command waiting for it stops when it cannot rather
//! than after its whole timeout. Pure: commands poll the store and ask this.

use crate::readiness;
use pgrepl_core::{ClusterView, MemberName, MemberState};

/// What one view says of a request that `target` become the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outlook {
    /// The target runs as the primary, the request is cleared and the cluster is ready.
    Done,
    /// Under way; the phrase says what is awaited ("node-1 to hand over to node-2").
    Waiting(String),
    /// It cannot happen unless something else changes first; the sentence says why.
    Blocked(String),
}

/// The outlook of a request that `target` lead; `force` for `failover --to` (the leader gives
/// way whether or not the target streams).
pub fn outlook(view: &ClusterView, target: &MemberName, force: bool) -> Outlook {
    let ready = readiness::check(view);
    if ready.as_ref().is_ok_and(|l| l == target) && view.target.is_none() {
        return Outlook::Done;
    }
    let awaited = || match &ready {
        Ok(_) => format!("{target} to become the primary"),
        Err(awaited) => awaited.clone(),
    };
    if view.spec.as_ref().and_then(|s| s.members.get(target)).is_some_and(|m| m.stopped) {
        return Outlook::Blocked(format!("{target} is stopped (start it with `pgrepl start {target}`)"));
    }
    let Some(status) = view.members.get(target) else {
        return Outlook::Blocked(format!("{target} publishes no status: its agent is not running"));
    };
    if view.leader.as_ref() == Some(target) || force {
        // It holds the lease (the rest follows it, rewound where need be), or is about to.
        return Outlook::Waiting(awaited());
    }
    let Some((leader, _)) = view.ready_leader() else {
        // Nobody runs as primary: the target takes the lease when it is free.
        return Outlook::Waiting(awaited());
    };
    if let Some(fork) = view.fork_of(target) {
        return Outlook::Blocked(format!(
            "{target}'s WAL forked from {leader}'s timeline ({fork}): it cannot take over before it is rewound and streams again"
        ));
    }
    if status.state != MemberState::Streaming {
        let state =
            serde_json::to_value(status.state).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        return Outlook::Blocked(format!(
            "{target} is not streaming from {leader} (it is {state}: {}), and {leader} hands over only to a streaming replica \
             (or use `pgrepl failover --to {target}`)",
            status.decision
        ));
    }
    Outlook::Waiting(format!("{leader} to hand over to {target}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrepl_core::*;

    fn n(k: u32) -> MemberName {
        MemberName::numbered(k)
    }

    fn status(role: Role, state: MemberState, port: u16) -> MemberStatus {
        pgrepl_core::testing::status(role, state, port, Lsn(0x3000000))
    }

    /// `node-1` runs as primary with `node-2` and `node-3` streaming; `node-2` is asked for.
    fn asked_for_node_2() -> ClusterView {
        let mut spec = Spec::default();
        for k in 1..=3 {
            spec.members.insert(n(k), MemberSpec { host: "127.0.0.1".into(), port: 6000 + k as u16, stopped: false });
        }
        let mut primary = status(Role::Primary, MemberState::Running, 6001);
        primary.slots = vec!["node_2".into(), "node_3".into()];
        primary.replication = [2, 3]
            .map(|k| ReplicationRow {
                application_name: n(k).to_string(),
                client_addr: None,
                state: "streaming".into(),
                flush_lsn: None,
                replay_lsn: None,
                replay_lag_ms: None,
                sync_state: None,
            })
            .to_vec();
        let mut view =
            ClusterView { leader: Some(n(1)), target: Some(n(2)), spec: Some(spec), ..ClusterView::default() };
        view.members.insert(n(1), primary);
        view.members.insert(n(2), status(Role::Replica, MemberState::Streaming, 6002));
        view.members.insert(n(3), status(Role::Replica, MemberState::Streaming, 6003));
        view
    }

    #[test]
    fn a_handover_to_a_streaming_replica_is_under_way() {
        assert_eq!(
            outlook(&asked_for_node_2(), &n(2), false),
            Outlook::Waiting("node-1 to hand over to node-2".into())
        );
    }

    #[test]
    fn a_target_that_does_not_stream_blocks_a_switchover_but_not_a_forced_failover() {
        let mut view = asked_for_node_2();
        let s = view.members.get_mut(&n(2)).unwrap();
        s.state = MemberState::Recovering;
        s.decision = "replica of node-1, not streaming yet".into();
        let Outlook::Blocked(why) = outlook(&view, &n(2), false) else { panic!("expected Blocked") };
        assert!(why.starts_with("node-2 is not streaming from node-1 (it is recovering: replica of node-1"), "{why}");
        assert!(matches!(outlook(&view, &n(2), true), Outlook::Waiting(_)));
    }

    #[test]
    fn a_target_whose_wal_forked_blocks_a_switchover() {
        let mut view = asked_for_node_2();
        let primary = view.members.get_mut(&n(1)).unwrap();
        primary.timeline = Some(Timeline(2));
        primary.history = Some(vec![TimelineSwitch { timeline: Timeline(1), end: Lsn(0x2000000) }]);
        let target = view.members.get_mut(&n(2)).unwrap();
        target.replay_timeline = Some(Timeline(1));
        let Outlook::Blocked(why) = outlook(&view, &n(2), false) else { panic!("expected Blocked") };
        assert!(why.contains("past 0/2000000 where timeline 2 forked"), "{why}");
    }

    #[test]
    fn a_stopped_target_or_one_without_an_agent_blocks_even_a_forced_failover() {
        let mut view = asked_for_node_2();
        view.spec.as_mut().unwrap().members.get_mut(&n(2)).unwrap().stopped = true;
        assert!(matches!(outlook(&view, &n(2), true), Outlook::Blocked(why) if why.contains("is stopped")));
        let mut view = asked_for_node_2();
        view.members.remove(&n(2));
        assert!(matches!(outlook(&view, &n(2), true), Outlook::Blocked(why) if why.contains("agent is not running")));
    }

    #[test]
    fn once_the_target_holds_the_lease_or_nobody_runs_as_primary_it_is_under_way() {
        let mut view = asked_for_node_2();
        view.leader = Some(n(2));
        view.members.get_mut(&n(2)).unwrap().state = MemberState::Recovering;
        assert!(matches!(outlook(&view, &n(2), false), Outlook::Waiting(_)), "promoting");
        let mut view = asked_for_node_2();
        view.leader = None;
        view.members.get_mut(&n(2)).unwrap().state = MemberState::Recovering;
        assert!(matches!(outlook(&view, &n(2), false), Outlook::Waiting(_)), "the old leader gave way");
    }

    #[test]
    fn the_request_is_done_when_the_target_leads_a_ready_cluster_and_the_request_is_cleared() {
        let mut view = asked_for_node_2();
        view.leader = Some(n(2));
        let mut primary = status(Role::Primary, MemberState::Running, 6002);
        primary.slots = vec!["node_1".into(), "node_3".into()];
        primary.replication = view.members[&n(1)].replication.clone();
        primary.replication[0].application_name = "node-1".into();
        view.members.insert(n(2), primary);
        view.members.insert(n(1), status(Role::Replica, MemberState::Streaming, 6001));
        assert!(matches!(outlook(&view, &n(2), false), Outlook::Waiting(_)), "the request is not cleared yet");
        view.target = None;
        assert_eq!(outlook(&view, &n(2), false), Outlook::Done);
    }
}
