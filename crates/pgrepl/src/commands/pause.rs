//! `pgrepl pause` and `pgrepl resume`: maintenance mode on and off. Each writes (or removes)
//! the store's `pause` key, as `promote` writes `target`, then waits until every agent that
//! publishes a status has taken the change in. While paused the agents make no automatic
//! failover, restart no stopped PostgreSQL, demote no primary that lost the lease, keep the
//! leader's lease and disarm their fence (`pgrepl_core::maintenance`); `promote`, `switchover`
//! and `failover` still work. On resume each agent's next cycle decides from a fresh observation.
//! `set_pause` is the core, shared with the HTTP API (`POST /pause`, `/resume`).

use crate::agent_lock;
use crate::cluster::Cluster;
use crate::commands::refusal::Refused;
use crate::commands::{setup, wait};
use anyhow::Context;
use pgrepl_core::{keys, ClusterView, MemberName, PauseRecord};
use pgrepl_store::{Condition, StoreError};
use std::path::Path;
use std::time::Duration;
use wait::wall_clock_ms as now_ms;

/// What `status` and `pause` print about maintenance mode, or nothing when it is off.
pub fn banner(view: &ClusterView) -> Option<String> {
    let pause = view.pause.as_ref()?;
    Some(format!(
        "MAINTENANCE MODE (paused {} ago): no automatic failover, no restart of a stopped PostgreSQL, no fence; \
         promote, switchover and failover still work; `pgrepl resume` ends it",
        ago(pause.since_ms)
    ))
}

/// `since_ms` to now, as "1h 2m", "3m 4s" or "5s".
fn ago(since_ms: u64) -> String {
    let s = now_ms().saturating_sub(since_ms) / 1000;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

/// Every agent publishing a status has seen maintenance mode as `paused`; else the first that
/// has not, as a phrase for `wait::until`.
fn taken_in(view: &ClusterView, paused: bool) -> Result<(), String> {
    match view.members.iter().find(|(_, s)| s.paused != paused) {
        None => Ok(()),
        Some((member, _)) => Err(format!("{member}'s agent to {}", if paused { "pause" } else { "resume" })),
    }
}

/// Refuses to resume while a PostgreSQL of this directory runs without its agent (stopped
/// while paused): nothing would fence that server if another member took over once resumed,
/// and two primaries would take writes.
fn refuse_unguarded(cluster: &Cluster, view: &ClusterView) -> Result<(), Refused> {
    let layout = &cluster.layout;
    let members = view.spec.iter().flat_map(|s| s.members.keys());
    let unguarded = members
        .filter(|m| setup::postmaster_runs(layout, m) && agent_lock::holder(&layout.agent_lock(m)).is_none())
        .map(MemberName::to_string)
        .collect::<Vec<_>>();
    if !unguarded.is_empty() {
        return Err(Refused::rule(format!(
            "not resuming: the PostgreSQL of {} runs without its agent, and maintenance mode left it unfenced, so \
             a failover after resume could leave two primaries taking writes; start the agents first (`pgrepl up`, \
             or the member's `pgrepl node`; paused, they start no server), then `pgrepl resume`",
            unguarded.join(", ")
        )));
    }
    Ok(())
}

/// A warning when the lease is free and its last holder publishes nothing: its agent is not
/// running (on another host, say), and its PostgreSQL may still run without a fence.
fn unseen_leader(view: &ClusterView) -> Option<String> {
    let last = view.last_leader.as_ref().map(|r| &r.member);
    let last = last.filter(|l| view.leader.is_none() && !view.members.contains_key(*l))?;
    Some(format!(
        "nobody holds the leader lease and its last holder {last} publishes no status; if its PostgreSQL \
         still runs (its agent stopped while paused), it has no fence, and the failover that follows resume could \
         leave two primaries until its agent returns: make sure it is stopped"
    ))
}

pub async fn run(dir: &Path, paused: bool, wait_secs: u64) -> anyhow::Result<()> {
    let cluster = Cluster::open(dir).await?;
    let done = set_pause(&cluster, paused, Duration::from_secs(wait_secs)).await?;
    for warning in &done.warnings {
        eprintln!("warning: {warning}");
    }
    println!("{}", done.sentence);
    Ok(())
}

/// What `set_pause` did: its sentence, and warnings for the operator.
#[derive(Clone, Debug)]
pub struct Done {
    pub sentence: String,
    pub warnings: Vec<String>,
}

/// The core of `pause` and `resume` (also behind the HTTP API's `POST /pause` and `/resume`):
/// sets or removes the `pause` key and waits up to `limit` until every agent publishing a
/// status took the change in.
pub async fn set_pause(cluster: &Cluster, paused: bool, limit: Duration) -> Result<Done, Refused> {
    let (_, view) = cluster.view().await?;
    if view.spec.is_none() {
        return Err(Refused::rule(format!(
            "the store {} holds no cluster yet, so there is nothing to pause or resume",
            cluster.config.store
        )));
    }
    let name = &cluster.config.cluster;
    let mut warnings = Vec::new();
    let mut already = None;
    match (paused, &view.pause) {
        (true, Some(_)) => already = Some(format!("cluster {name:?} is already in maintenance mode")),
        (true, None) => {
            let value = serde_json::to_vec(&PauseRecord { since_ms: now_ms() }).context("encode the pause key")?;
            match cluster.store.put(keys::PAUSE, &value, Condition::Absent, None).await {
                Ok(_) | Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(anyhow::Error::new(e).context("write the pause key").into()),
            }
        }
        (false, None) => already = Some(format!("cluster {name:?} is not in maintenance mode")),
        (false, Some(_)) => {
            refuse_unguarded(cluster, &view)?;
            warnings.extend(unseen_leader(&view));
            cluster.store.delete(keys::PAUSE, Condition::Any).await.context("remove the pause key")?;
        }
    }
    wait::until(cluster, limit, |view| taken_in(view, paused))
        .await
        .map_err(|e| Refused::TimedOut(format!("{e:#}")))?;
    let sentence = if paused {
        let (_, view) = cluster.view().await?;
        banner(&view).unwrap_or_else(|| "maintenance mode was ended meanwhile".to_string())
    } else {
        format!(
            "cluster {name:?} resumed: every agent decides again from what it observes now (a stopped PostgreSQL is \
             started, a lost leader replaced); see `pgrepl status`"
        )
    };
    let sentence = match already {
        Some(already) => format!("{already}\n{sentence}"),
        None => sentence,
    };
    Ok(Done { sentence, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrepl_core::{testing, Lsn, MemberName, MemberState, Role};

    #[test]
    fn pause_waits_for_every_agent_that_publishes() {
        let mut view = ClusterView::default();
        let mut s = testing::status(Role::Replica, MemberState::Streaming, 1, Lsn(1));
        view.members.insert(MemberName::numbered(1), s.clone());
        s.paused = true;
        view.members.insert(MemberName::numbered(2), s);
        assert_eq!(taken_in(&view, true), Err("node-1's agent to pause".to_string()));
        assert_eq!(taken_in(&view, false), Err("node-2's agent to resume".to_string()));
        view.members.remove(&MemberName::numbered(1));
        assert_eq!(taken_in(&view, true), Ok(()));
    }

    #[test]
    fn the_banner_is_shown_only_when_paused() {
        let mut view = ClusterView::default();
        assert_eq!(banner(&view), None);
        view.pause = Some(PauseRecord { since_ms: now_ms() - 125_000 });
        let text = banner(&view).unwrap();
        assert!(text.starts_with("MAINTENANCE MODE (paused 2m 5s ago)"), "{text}");
    }
}
