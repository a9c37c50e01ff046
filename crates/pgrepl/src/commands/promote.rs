//! Changing the leader on request: write the `target` key and wait until the target runs as the
//! primary and every running member streams from it.
//!
//! - `pgrepl switchover [--to MEMBER]`: planned. Needs a running primary and a streaming target
//!   (default: the streaming replica with the least lag; in synchronous mode one the sync record
//!   names). The leader checkpoints, stops cleanly (so its last WAL reaches the streaming target)
//!   and hands the lease over; nothing committed is lost.
//! - `pgrepl promote MEMBER`: the same with a named target, also when the primary is down (then
//!   MEMBER takes the free lease).
//! - `pgrepl failover --to MEMBER`: forced. The leader gives way even if MEMBER is not
//!   streaming, and MEMBER takes the lease whatever its lag (writes it had not received are lost).
//!
//! A request that cannot be met (`handover::outlook` blocked for `wait::BLOCKED_FOR`: the
//! target stopped, without an agent, not streaming or forked from the leader's timeline) is
//! withdrawn and the command fails at once rather than after `--wait`.

use crate::cluster::Cluster;
use crate::commands::wait::NotDone;
use crate::commands::{summary, wait};
use crate::handover;
use anyhow::{bail, Context};
use pgrepl_core::{keys, ClusterView, MemberName, SyncMode, TargetRecord};
use pgrepl_store::Condition;
use std::path::Path;
use std::time::Duration;

/// Which request.
#[derive(Clone, Debug)]
pub enum Request {
    Promote(String),
    Switchover(Option<String>),
    Failover(String),
}

pub async fn run(dir: &Path, request: Request, wait_secs: u64) -> anyhow::Result<()> {
    let cluster = Cluster::open(dir).await?;
    let (_, view) = cluster.view().await?;
    let (member, force) = match &request {
        Request::Promote(name) => (Cluster::member(&view, name)?, false),
        Request::Failover(name) => (Cluster::member(&view, name)?, true),
        Request::Switchover(name) => (switchover_target(&view, name.as_deref())?, false),
    };
    refuse_stopped(&view, &member)?;
    if view.ready_leader().is_some_and(|(l, _)| *l == member) {
        println!("{member} is already the primary");
        return Ok(());
    }
    let value = serde_json::to_vec(&TargetRecord { member: member.clone(), force })?;
    let written = cluster.store.put(keys::TARGET, &value, Condition::Any, None).await.context("write the request")?;
    let limit = Duration::from_secs(wait_secs);
    match wait::while_possible(&cluster, limit, |view| handover::outlook(view, &member, force)).await? {
        Ok(()) => {}
        Err(NotDone::TimedOut(why)) => bail!("{why}"),
        Err(NotDone::Blocked(why)) => {
            // Withdrawn, unless someone has written another request since: left in place it
            // would move the leader whenever it became possible, long after this command.
            let withdrawn = cluster.store.delete(keys::TARGET, Condition::Revision(written)).await.is_ok();
            let request = if withdrawn { "the request was withdrawn" } else { "the request was replaced meanwhile" };
            bail!("{member} cannot become the primary: {why}; {request}");
        }
    }
    let (_, view) = cluster.view().await?;
    println!("{member} is the primary");
    summary::print(&cluster, &view);
    Ok(())
}

/// The member a switchover hands over to: the one named, which must stream from a running
/// primary, or the streaming replica with the least lag (in synchronous mode, among those the
/// sync record names).
fn switchover_target(view: &ClusterView, name: Option<&str>) -> anyhow::Result<MemberName> {
    let (leader, _) = view
        .ready_leader()
        .context("no primary is running, so there is nothing to switch over from; use `pgrepl failover --to MEMBER`")?;
    if let Some(name) = name {
        let member = Cluster::member(view, name)?;
        refuse_stopped(view, &member)?;
        if member != *leader && !view.is_streaming(&member) {
            bail!("{member} is not streaming from {leader}; a switchover needs a streaming target (or use `pgrepl failover --to {member}`)");
        }
        return Ok(member);
    }
    let synchronous = view.spec.as_ref().is_some_and(|s| s.failover.synchronous != SyncMode::Off);
    let eligible = |m: &MemberName| !synchronous || view.sync.as_ref().is_some_and(|s| s.members.contains(m));
    view.members
        .keys()
        .filter(|m| *m != leader && view.is_streaming(m) && eligible(m))
        .min_by_key(|m| view.lag_bytes(m).unwrap_or(u64::MAX))
        .cloned()
        .context("no replica streams from the primary, so there is nobody to switch over to")
}

fn refuse_stopped(view: &ClusterView, member: &MemberName) -> anyhow::Result<()> {
    if view.spec.as_ref().and_then(|s| s.members.get(member)).is_some_and(|m| m.stopped) {
        bail!("{member} is stopped; start it first with `pgrepl start {member}`");
    }
    Ok(())
}
