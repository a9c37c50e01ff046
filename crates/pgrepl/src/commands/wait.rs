//! Waiting for the cluster to reach a state, with a bound and a clear account of what it was
//! still waiting for when the bound passed.

use crate::cluster::Cluster;
use anyhow::bail;
use pgrepl_core::{ClusterView, MemberState};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The wall clock in milliseconds since the Unix epoch, as agents stamp their statuses
/// (`MemberStatus::updated_ms`).
pub fn wall_clock_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

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
            let failing: Vec<String> = view
                .members
                .iter()
                .filter(|(_, s)| s.state == MemberState::Failed)
                .map(|(m, s)| format!("; {m} reports: {}", s.decision))
                .collect();
            bail!(
                "gave up after {}s waiting for {awaited}{}; see `pgrepl status` and `pgrepl logs MEMBER` (in {})",
                limit.as_secs(),
                failing.concat(),
                cluster.layout.dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
