//! `pgrepl remove MEMBER`: take a member out of the cluster for good. It must be down first
//! (`pgrepl stop MEMBER`, or its node stopped): it is then taken out of the spec, its status
//! and restart request are cleared, and the leader drops its replication slot (so the primary
//! no longer keeps WAL for it) and no longer lets its host in. Its data directory, on its own
//! host, is kept; a `pgrepl node` started there again joins the cluster anew. Works from any
//! host that reaches the store.

use crate::cluster::Cluster;
use crate::commands::wait;
use anyhow::bail;
use pgrepl_core::{keys, ClusterView, MemberName, MemberState};
use pgrepl_store::Condition;
use std::path::Path;
use std::time::Duration;

/// Why `member` may not be removed now, if it may not.
pub fn refusal(view: &ClusterView, member: &MemberName) -> Option<String> {
    let spec = view.spec.as_ref()?;
    if spec.members.len() == 1 {
        return Some(format!(
            "{member} is the cluster's only member; `pgrepl down --destroy` removes the whole cluster"
        ));
    }
    if view.leader.as_ref() == Some(member) {
        return Some(format!(
            "{member} holds the leader lease; stop it first with `pgrepl stop {member}` (a replica takes over), then remove it"
        ));
    }
    if let Some(status) = view.members.get(member).filter(|s| s.state != MemberState::Stopped) {
        return Some(format!(
            "{member} is running ({:?}); stop it first with `pgrepl stop {member}` (or stop its node), then remove it",
            status.state
        ));
    }
    if view.sync.as_ref().is_some_and(|s| s.members.contains(member)) {
        return Some(format!(
            "{member} is recorded as a synchronous standby that may hold acknowledged commits no other member holds; \
             the leader moves that role to a streaming replica while {member} is stopped: try again once it has"
        ));
    }
    None
}

pub async fn run(dir: &Path, name: &str) -> anyhow::Result<()> {
    let cluster = Cluster::open(dir).await?;
    let (_, view) = cluster.view().await?;
    let member = Cluster::member(&view, name)?;
    cluster
        .update_spec(|view, spec| {
            if let Some(why) = refusal(view, &member) {
                bail!("cannot remove {member}: {why}; nothing was changed");
            }
            spec.members.remove(&member);
            if spec.bootstrap.as_ref() == Some(&member) {
                spec.bootstrap = None;
            }
            Ok(())
        })
        .await?;
    cluster.store.delete(&keys::member(&member), Condition::Any).await?;
    cluster.store.delete(&keys::restart(&member), Condition::Any).await?;
    let slot = member.slot_name();
    wait::until(&cluster, Duration::from_secs(60), |view| match view.ready_leader() {
        Some((leader, status)) if status.slots.contains(&slot) => Err(format!("{leader} to drop the slot {slot}")),
        _ if view.members.contains_key(&member) => Err(format!("{member}'s status to be withdrawn")),
        _ => Ok(()),
    })
    .await?;
    println!("{member} removed: its replication slot is dropped and its status cleared; its data directory is kept on its host");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrepl_core::testing::{status, three_members};
    use pgrepl_core::{Lsn, Role, SyncRecord};

    fn n(k: u32) -> MemberName {
        MemberName::numbered(k)
    }

    /// Three members; node-1 leads, node-2 streams, node-3 is stopped (no status).
    fn view() -> ClusterView {
        let mut view = three_members();
        view.spec.as_mut().unwrap().members.get_mut(&n(3)).unwrap().stopped = true;
        view.members.remove(&n(3));
        view
    }

    #[test]
    fn a_stopped_member_or_one_without_an_agent_may_go() {
        assert_eq!(refusal(&view(), &n(3)), None);
        let mut parked = view();
        parked.members.insert(n(3), status(Role::Replica, MemberState::Stopped, 5432, Lsn(1)));
        assert_eq!(refusal(&parked, &n(3)), None);
    }

    #[test]
    fn a_running_member_the_leader_or_the_only_one_stays() {
        let running = refusal(&view(), &n(2)).unwrap();
        assert!(
            running.contains("node-2 is running (Streaming); stop it first with `pgrepl stop node-2`"),
            "{running}"
        );
        let leader = refusal(&view(), &n(1)).unwrap();
        assert!(leader.contains("node-1 holds the leader lease"), "{leader}");
        let mut alone = view();
        alone.spec.as_mut().unwrap().members.retain(|m, _| *m == n(3));
        assert!(refusal(&alone, &n(3)).unwrap().contains("only member"));
    }

    #[test]
    fn a_member_that_may_hold_acknowledged_commits_stays() {
        let mut v = view();
        v.sync = Some(SyncRecord { leader: Some(n(1)), members: [n(3)].into(), quorum: 1 });
        assert!(refusal(&v, &n(3)).unwrap().contains("synchronous standby"));
    }
}
