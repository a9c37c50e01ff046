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
//!
//! `change_leader` is the core, shared with the HTTP API (`POST /switchover`, `/failover`).

use crate::cluster::Cluster;
use crate::commands::refusal::Refused;
use crate::commands::wait::NotDone;
use crate::commands::{summary, wait};
use crate::handover;
use anyhow::Context;
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
    match change_leader(&cluster, &request, Duration::from_secs(wait_secs)).await? {
        Changed::Already(member) => println!("{member} is already the primary"),
        Changed::Done(member) => {
            let (_, view) = cluster.view().await?;
            println!("{member} is the primary");
            summary::print(&cluster, &view);
        }
    }
    Ok(())
}

/// What a request for a new leader came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Changed {
    /// The member asked for already ran as the primary: nothing was requested.
    Already(MemberName),
    /// The member runs as the primary, the others follow it.
    Done(MemberName),
}

/// The core of `promote`, `switchover` and `failover` (also behind the HTTP API's
/// `POST /switchover` and `/failover`): checks the request against the cluster's rules, writes
/// the `target` key and waits up to `limit` until the member leads a ready cluster, withdrawing
/// the request if it cannot happen.
pub async fn change_leader(cluster: &Cluster, request: &Request, limit: Duration) -> Result<Changed, Refused> {
    let (_, view) = cluster.view().await?;
    let (member, force) = match request {
        Request::Promote(name) => (known(&view, name)?, false),
        Request::Failover(name) => (known(&view, name)?, true),
        Request::Switchover(name) => (switchover_target(&view, name.as_deref())?, false),
    };
    refuse_stopped(&view, &member)?;
    if view.ready_leader().is_some_and(|(l, _)| *l == member) {
        return Ok(Changed::Already(member));
    }
    let value = serde_json::to_vec(&TargetRecord { member: member.clone(), force }).context("encode the request")?;
    let written = cluster.store.put(keys::TARGET, &value, Condition::Any, None).await.context("write the request")?;
    match wait::while_possible(cluster, limit, |view| handover::outlook(view, &member, force)).await? {
        Ok(()) => Ok(Changed::Done(member)),
        Err(NotDone::TimedOut(why)) => Err(Refused::TimedOut(why)),
        Err(NotDone::Blocked(why)) => {
            // Withdrawn, unless someone has written another request since: left in place it
            // would move the leader whenever it became possible, long after this command.
            let withdrawn = cluster.store.delete(keys::TARGET, Condition::Revision(written)).await.is_ok();
            let request = if withdrawn { "the request was withdrawn" } else { "the request was replaced meanwhile" };
            Err(Refused::rule(format!("{member} cannot become the primary: {why}; {request}")))
        }
    }
}

/// `name` as a member of the spec, or the sentence listing the members there are.
fn known(view: &ClusterView, name: &str) -> Result<MemberName, Refused> {
    Cluster::member(view, name).map_err(|e| Refused::rule(e.to_string()))
}

/// The member a switchover hands over to: the one named, which must stream from a running
/// primary, or the streaming replica with the least lag (in synchronous mode, among those the
/// sync record names).
fn switchover_target(view: &ClusterView, name: Option<&str>) -> Result<MemberName, Refused> {
    let (leader, _) = view.ready_leader().ok_or_else(|| {
        Refused::rule(
            "no primary is running, so there is nothing to switch over from; use `pgrepl failover --to MEMBER`",
        )
    })?;
    if let Some(name) = name {
        let member = known(view, name)?;
        refuse_stopped(view, &member)?;
        if member != *leader && !view.is_streaming(&member) {
            return Err(Refused::rule(format!(
                "{member} is not streaming from {leader}; a switchover needs a streaming target (or use `pgrepl failover --to {member}`)"
            )));
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
        .ok_or_else(|| Refused::rule("no replica streams from the primary, so there is nobody to switch over to"))
}

fn refuse_stopped(view: &ClusterView, member: &MemberName) -> Result<(), Refused> {
    if view.spec.as_ref().and_then(|s| s.members.get(member)).is_some_and(|m| m.stopped) {
        return Err(Refused::rule(format!("{member} is stopped; start it first with `pgrepl start {member}`")));
    }
    Ok(())
}
