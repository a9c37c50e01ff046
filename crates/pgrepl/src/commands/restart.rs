//! `pgrepl restart [MEMBER] [--pending] [--rolling]` and `pgrepl reload`. A restart is asked
//! through the store (`restarts/NAME`), so it works wherever the store is reachable; the
//! member's agent carries it out between its cycles (a synchronous standby once the leader has
//! given its role to another replica: `pgrepl_core::restart`), and the command waits until
//! the member reports it done and serves again, then removes the request. `--rolling` restarts
//! the whole cluster one member at a time: each replica, waiting until it streams again, then
//! a switchover to a replica already restarted, which restarts the old primary as a replica
//! (it stops and starts again to follow the new one), so that writes pause only for the
//! switchover.

use crate::cluster::Cluster;
use crate::commands::promote::{change_leader, Request};
use crate::commands::wait;
use anyhow::{bail, Context};
use pgrepl_core::restart::{ReloadRequest, RestartRequest};
use pgrepl_core::{keys, ClusterView, MemberName, MemberState};
use pgrepl_store::Condition;
use std::path::Path;
use std::time::{Duration, Instant};

/// The order a rolling restart takes, from one view: the replicas first (those not
/// synchronous before those that are, so that the synchronous role has somewhere to go), each
/// once; then the leader, after a switchover. `only`: the members to restart (say those pending
/// a restart); the others are left alone.
pub fn rolling_order(view: &ClusterView, only: &[MemberName]) -> (Vec<MemberName>, Option<MemberName>) {
    let sync = view.sync.as_ref().map(|s| s.members.clone()).unwrap_or_default();
    let mut replicas: Vec<MemberName> = only.iter().filter(|m| view.leader.as_ref() != Some(*m)).cloned().collect();
    replicas.sort_by_key(|m| (sync.contains(m), m.clone()));
    let leader = view.leader.clone().filter(|l| only.contains(l));
    (replicas, leader)
}

pub async fn run(dir: &Path, member: Option<String>, pending: bool, rolling: bool, wait: u64) -> anyhow::Result<()> {
    let cluster = Cluster::open(dir).await?;
    let limit = Duration::from_secs(wait);
    let (_, view) = cluster.view().await?;
    if view.paused() {
        bail!("the cluster is in maintenance mode (`pgrepl pause`), in which no agent starts a stopped PostgreSQL: end it with `pgrepl resume` first");
    }
    let spec = view.spec.as_ref().context("the store holds no cluster spec: is the cluster up?")?;
    let running: Vec<MemberName> = spec.members.iter().filter(|(_, m)| !m.stopped).map(|(n, _)| n.clone()).collect();
    let wanted = |m: &MemberName| !pending || view.members.get(m).is_some_and(|s| !s.pending_restart.is_empty());
    match (member, rolling) {
        (Some(name), false) => {
            let name = MemberName::new(name.as_str())?;
            if !spec.members.contains_key(&name) {
                bail!("{name} is not a member of this cluster (see `pgrepl status`)");
            }
            if !wanted(&name) {
                println!("{name} has no parameter pending a restart: nothing to do");
                return Ok(());
            }
            restart_one(&cluster, &name, limit).await
        }
        (None, true) => {
            let only: Vec<MemberName> = running.iter().filter(|m| wanted(m)).cloned().collect();
            if only.is_empty() {
                println!("no member has a parameter pending a restart: nothing to do");
                return Ok(());
            }
            let (replicas, leader) = rolling_order(&view, &only);
            let started = Instant::now();
            for replica in &replicas {
                restart_one(&cluster, replica, limit).await?;
            }
            if let Some(leader) = leader {
                // Every replica has run since its restart: hand over to the one a switchover
                // picks (in synchronous mode, one that holds every commit). The handover stops
                // the old primary and starts it again as a replica: that is its restart.
                let handed = Instant::now();
                change_leader(&cluster, &Request::Switchover(None), limit).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                println!("switched over from {leader}");
                wait::until(&cluster, limit, |view| match view.members.get(&leader).map(|s| s.state) {
                    Some(MemberState::Streaming) => Ok(()),
                    _ => Err(format!("{leader} to stream from the new primary")),
                })
                .await?;
                println!("restarted {leader} by its handover ({:.1} s)", handed.elapsed().as_secs_f64());
            }
            println!("rolling restart done in {:.1} s", started.elapsed().as_secs_f64());
            Ok(())
        }
        (Some(_), true) => bail!("--rolling restarts every member one at a time: give no MEMBER with it"),
        (None, false) => bail!(
            "name a MEMBER to restart, or give --rolling to restart them all one at a time (--pending: only those with a parameter pending a restart)"
        ),
    }
}

/// Asks `member` to restart and waits until it has and serves again (a replica streaming, the
/// primary running); the request is removed after, done or not.
async fn restart_one(cluster: &Cluster, member: &MemberName, limit: Duration) -> anyhow::Result<()> {
    let id = wait::wall_clock_ms();
    let key = keys::restart(member);
    cluster
        .store
        .put(&key, &serde_json::to_vec(&RestartRequest { id })?, Condition::Any, None)
        .await
        .context("ask for the restart")?;
    let started = Instant::now();
    let done = wait::until(cluster, limit, |view| {
        let status = view.members.get(member);
        let restarted = status.is_some_and(|s| s.restarted_for == Some(id));
        let serving = status.is_some_and(|s| match view.leader.as_ref() == Some(member) {
            true => s.state == MemberState::Running,
            false => s.state == MemberState::Streaming,
        });
        if restarted && serving {
            Ok(())
        } else {
            Err(format!("{member} to restart and serve again"))
        }
    })
    .await;
    let _ = cluster.store.delete(&key, Condition::Any).await;
    done?;
    println!("restarted {member} ({:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}

/// `pgrepl reload`: every member's agent has its server reload its configuration files; waits
/// until every running member reports it done.
pub async fn reload(dir: &Path, wait_secs: u64) -> anyhow::Result<()> {
    let cluster = Cluster::open(dir).await?;
    let requested_ms = wait::wall_clock_ms();
    let value = serde_json::to_vec(&ReloadRequest { requested_ms })?;
    cluster.store.put(keys::RELOAD, &value, Condition::Any, None).await.context("ask for the reload")?;
    wait::until(&cluster, Duration::from_secs(wait_secs), |view| {
        let behind: Vec<String> = view
            .members
            .iter()
            .filter(|(_, s)| matches!(s.state, MemberState::Running | MemberState::Streaming | MemberState::Recovering))
            .filter(|(_, s)| s.reloaded_ms.is_none_or(|r| r < requested_ms))
            .map(|(m, _)| m.to_string())
            .collect();
        if behind.is_empty() {
            Ok(())
        } else {
            Err(format!("{} to reload", behind.join(", ")))
        }
    })
    .await?;
    println!("every running member reloaded its configuration");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrepl_core::SyncRecord;

    fn m(n: u32) -> MemberName {
        MemberName::numbered(n)
    }

    #[test]
    fn replicas_go_first_the_synchronous_one_last_and_the_leader_after_a_switchover() {
        let mut view = ClusterView { leader: Some(m(1)), ..ClusterView::default() };
        view.sync = Some(SyncRecord { leader: Some(m(1)), members: [m(2)].into(), quorum: 1 });
        let all = [m(1), m(2), m(3)];
        assert_eq!(rolling_order(&view, &all), (vec![m(3), m(2)], Some(m(1))));
        assert_eq!(rolling_order(&view, &[m(2)]), (vec![m(2)], None), "only those asked");
        view.sync = None;
        assert_eq!(rolling_order(&view, &all), (vec![m(2), m(3)], Some(m(1))));
    }
}
