//! `pgrepl promote MEMBER`: ask for MEMBER to become the leader (the `target` key) and wait
//! until it runs as the primary and every running member streams from it. The current primary, when running, hands over first; when
//! it is down, MEMBER takes the free lease.

use crate::cluster::Cluster;
use crate::commands::{summary, wait};
use crate::readiness;
use anyhow::bail;
use pgrepl_core::{keys, LeaderRecord};
use pgrepl_store::{Condition, Store};
use std::path::Path;
use std::time::Duration;

pub async fn run(dir: &Path, name: &str, wait_secs: u64) -> anyhow::Result<()> {
    let cluster = Cluster::open(dir)?;
    let (_, view) = cluster.view().await?;
    let member = Cluster::member(&view, name)?;
    if view.spec.as_ref().and_then(|s| s.members.get(&member)).is_some_and(|m| m.stopped) {
        bail!("{member} is stopped; start it first with `pgrepl start {member}`");
    }
    if view.ready_leader().is_some_and(|(l, _)| *l == member) {
        println!("{member} is already the primary");
        return Ok(());
    }
    let value = serde_json::to_vec(&LeaderRecord { member: member.clone(), timeline: None })?;
    cluster.store.put(keys::TARGET, &value, Condition::Any, None).await?;
    wait::until(&cluster, Duration::from_secs(wait_secs), |view| match readiness::check(view) {
        Ok(leader) if leader == member && view.target.is_none() => Ok(()),
        Ok(_) => Err(format!("{member} to become the primary")),
        Err(awaited) => Err(awaited),
    })
    .await?;
    let (_, view) = cluster.view().await?;
    println!("{member} is the primary");
    summary::print(&cluster, &view);
    Ok(())
}
