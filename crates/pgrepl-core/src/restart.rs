//! Restarts and reloads asked of members (`pgrepl restart`, `pgrepl reload`): what is asked,
//! whether a member's restart is still owed, and when its agent may carry it out. A synchronous
//! standby waits until the leader has given that role to another streaming replica, so that no
//! commit ever waits on a server that is restarting while another could have acknowledged it;
//! the leader, for its part, does not choose a member owed a restart as its synchronous standby
//! while another streaming replica can be (`failover::wanted_sync`). Pure: agents and the
//! command ask these with the view they read.

use crate::names::MemberName;
use crate::spec::SyncMode;
use crate::view::{ClusterView, MemberState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A restart asked of one member. Its agent, once it has restarted its server for it,
/// publishes the request's `id` (`MemberStatus::restarted_for`): no clock is compared, so
/// hosts whose clocks differ agree on whether it is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartRequest {
    /// Unique to the request (when it was asked, in Unix ms, on the asking host).
    pub id: u64,
}

/// A reload of every member's configuration, asked at this moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadRequest {
    pub requested_ms: u64,
}

/// Whether `member` still owes the restart asked of it: asked, and not yet reported done.
pub fn owed(view: &ClusterView, member: &MemberName) -> bool {
    owed_given(view, member, view.members.get(member).and_then(|s| s.restarted_for))
}

/// As `owed`, with the request its agent last restarted for (which it knows before its
/// status says so).
fn owed_given(view: &ClusterView, member: &MemberName, restarted_for: Option<u64>) -> bool {
    view.restarts.get(member).is_some_and(|asked| restarted_for != Some(asked.id))
}

/// The members that owe a restart.
pub fn owing(view: &ClusterView) -> BTreeSet<MemberName> {
    view.restarts.keys().filter(|m| owed(view, m)).cloned().collect()
}

/// What a member's agent does about a restart asked of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outlook {
    /// Nothing is owed.
    Nothing,
    /// Not yet; the sentence says what it waits for.
    Wait(String),
    /// Restart its server now.
    Now,
}

/// Whether `me`, whose agent last restarted for `restarted_for`, restarts now: when owed,
/// unless it is a synchronous standby of the leader and another replica streams that is owed
/// nothing, which the leader gives the role to first.
pub fn outlook(view: &ClusterView, me: &MemberName, restarted_for: Option<u64>) -> Outlook {
    if !owed_given(view, me, restarted_for) {
        return Outlook::Nothing;
    }
    let synchronous = view.spec.as_ref().is_some_and(|s| s.failover.synchronous != SyncMode::Off);
    let standby = view.sync.as_ref().is_some_and(|s| s.members.contains(me));
    if !synchronous || !standby || view.leader.as_ref() == Some(me) {
        return Outlook::Now;
    }
    let other = view
        .members
        .iter()
        .filter(|(m, s)| *m != me && s.state == MemberState::Streaming && !owed(view, m))
        .map(|(m, _)| m)
        .next();
    match other {
        Some(other) => Outlook::Wait(format!(
            "{me} restarts once the leader has made another streaming replica ({other}) synchronous instead"
        )),
        None => Outlook::Now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Lsn;
    use crate::spec::Spec;
    use crate::testing::status;
    use crate::view::{Role, SyncRecord};

    fn name(n: u32) -> MemberName {
        MemberName::numbered(n)
    }

    /// node-1 the leader, node-2 and node-3 streaming, each started at 1000 ms, in `mode`.
    fn cluster(mode: SyncMode, sync: &[u32]) -> ClusterView {
        let mut view = ClusterView { leader: Some(name(1)), ..ClusterView::default() };
        let mut spec = Spec::default();
        spec.failover.synchronous = mode;
        view.spec = Some(spec);
        for n in 1..=3 {
            let (role, state) =
                if n == 1 { (Role::Primary, MemberState::Running) } else { (Role::Replica, MemberState::Streaming) };
            view.members.insert(name(n), status(role, state, 5000 + n as u16, Lsn(0)));
        }
        view.sync = Some(SyncRecord {
            leader: Some(name(1)),
            members: sync.iter().map(|n| name(*n)).collect(),
            quorum: usize::from(!sync.is_empty()),
        });
        view
    }

    fn done(view: &ClusterView, n: u32) -> Option<u64> {
        view.members[&name(n)].restarted_for
    }

    fn ask(view: &mut ClusterView, n: u32, at: u64) {
        view.restarts.insert(name(n), RestartRequest { id: at });
    }

    #[test]
    fn a_restart_is_owed_until_its_agent_reports_it_done() {
        let mut view = cluster(SyncMode::Off, &[]);
        assert!(!owed(&view, &name(2)), "nothing asked");
        ask(&mut view, 2, 2000);
        assert!(owed(&view, &name(2)));
        assert_eq!(outlook(&view, &name(2), done(&view, 2)), Outlook::Now);
        assert_eq!(outlook(&view, &name(2), Some(2000)), Outlook::Nothing, "its agent restarted for it already");
        assert_eq!(outlook(&view, &name(2), Some(1000)), Outlook::Now, "for an earlier request only");
        view.members.get_mut(&name(2)).unwrap().restarted_for = Some(2000);
        assert!(!owed(&view, &name(2)), "reported done");
        ask(&mut view, 3, 2000);
        assert_eq!(owing(&view), [name(3)].into());
    }

    #[test]
    fn a_synchronous_standby_waits_while_another_replica_could_take_its_role() {
        let mut view = cluster(SyncMode::On, &[2]);
        ask(&mut view, 2, 2000);
        assert!(matches!(outlook(&view, &name(2), done(&view, 2)), Outlook::Wait(w) if w.contains("node-3")));
        // Once the leader moved the role (node-3 now synchronous), it restarts.
        view.sync.as_mut().unwrap().members = [name(3)].into();
        assert_eq!(outlook(&view, &name(2), done(&view, 2)), Outlook::Now);
    }

    #[test]
    fn a_synchronous_standby_with_nobody_to_take_its_role_restarts_at_once() {
        let mut view = cluster(SyncMode::On, &[2]);
        view.members.get_mut(&name(3)).unwrap().state = MemberState::Recovering;
        ask(&mut view, 2, 2000);
        assert_eq!(outlook(&view, &name(2), done(&view, 2)), Outlook::Now, "node-3 does not stream");
        let mut view = cluster(SyncMode::Quorum, &[2, 3]);
        ask(&mut view, 2, 2000);
        ask(&mut view, 3, 2000);
        assert_eq!(outlook(&view, &name(2), done(&view, 2)), Outlook::Now, "the other one owes a restart too");
    }

    #[test]
    fn outside_synchronous_mode_and_for_the_leader_a_restart_is_now() {
        let mut view = cluster(SyncMode::Off, &[]);
        ask(&mut view, 3, 2000);
        assert_eq!(outlook(&view, &name(3), done(&view, 3)), Outlook::Now);
        let mut view = cluster(SyncMode::On, &[2]);
        ask(&mut view, 1, 2000);
        assert_eq!(outlook(&view, &name(1), done(&view, 1)), Outlook::Now, "the leader restarts keeping its lease");
    }
}
