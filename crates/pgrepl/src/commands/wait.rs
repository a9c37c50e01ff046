//! Waiting for the cluster to reach a state, with a bound and a clear account of what it was
//! still waiting for when the bound passed; and, for a requested change of leader, stopping
//! early when its outlook (`handover`) stays blocked.

use crate::cluster::Cluster;
use crate::handover::Outlook;
use anyhow::bail;
use pgrepl_core::{ClusterView, MemberState};
use std::time::{Duration, Instant};

/// The wall clock in milliseconds since the Unix epoch, the agents' own (`MemberStatus::updated_ms`).
pub use pgrepl_agent::wall_clock_ms;

/// Polls the store until `check` returns `Ok`, for at most `limit`.
pub async fn until<T>(
    cluster: &Cluster,
    limit: Duration,
    mut check: impl FnMut(&ClusterView) -> Result<T, String>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        let (_, view) = cluster.view().await?;
        let awaited = match check(&view) {
            Ok(t) => return Ok(t),
            Err(awaited) => awaited,
        };
        if start.elapsed() > limit {
            bail!("{}", gave_up(cluster, limit, &awaited, &view));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long a blocked outlook must last before a command believes it: statuses are
/// republished about once per `loop_wait`, so a moment's report is no proof.
pub const BLOCKED_FOR: Duration = Duration::from_secs(3);

/// Why a wait ended without success.
#[derive(Debug)]
pub enum NotDone {
    /// It cannot happen: the outlook stayed blocked for `BLOCKED_FOR`.
    Blocked(String),
    /// The bound passed; the message says what was still awaited.
    TimedOut(String),
}

/// Polls the store until `outlook` says done, for at most `limit`, or until it says blocked
/// for `BLOCKED_FOR` in a row.
pub async fn while_possible(
    cluster: &Cluster,
    limit: Duration,
    mut outlook: impl FnMut(&ClusterView) -> Outlook,
) -> anyhow::Result<Result<(), NotDone>> {
    let start = Instant::now();
    let mut blocked_since: Option<Instant> = None;
    loop {
        let (_, view) = cluster.view().await?;
        match outlook(&view) {
            Outlook::Done => return Ok(Ok(())),
            Outlook::Blocked(why) => {
                let since = *blocked_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= BLOCKED_FOR {
                    return Ok(Err(NotDone::Blocked(why)));
                }
            }
            Outlook::Waiting(awaited) => {
                blocked_since = None;
                if start.elapsed() > limit {
                    return Ok(Err(NotDone::TimedOut(gave_up(cluster, limit, &awaited, &view))));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What was still awaited when the bound passed, with any member's failure.
fn gave_up(cluster: &Cluster, limit: Duration, awaited: &str, view: &ClusterView) -> String {
    let failing: Vec<String> = view
        .members
        .iter()
        .filter(|(_, s)| s.state == MemberState::Failed)
        .map(|(m, s)| format!("; {m} reports: {}", s.decision))
        .collect();
    format!(
        "gave up after {}s waiting for {awaited}{}; see `pgrepl status` and `pgrepl logs MEMBER` (in {})",
        limit.as_secs(),
        failing.concat(),
        cluster.layout.dir.display()
    )
}
