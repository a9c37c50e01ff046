//! `pgrepl stop MEMBER` and `pgrepl start MEMBER`: mark the member stopped or running in the
//! spec and wait until it is so. Its agent stops its server (a leader hands over first, as at a
//! switchover) and keeps it down, or starts it again; on `pgrepl up`'s machine the supervisor
//! also stops or starts the agent itself. Works from any host that reaches the store.

use crate::cluster::Cluster;
use crate::commands::wait;
use anyhow::bail;
use pgrepl_core::MemberState;
use std::path::Path;
use std::time::Duration;

pub async fn run(dir: &Path, name: &str, stopped: bool) -> anyhow::Result<()> {
    let cluster = Cluster::open(dir).await?;
    let (_, view) = cluster.view().await?;
    let member = Cluster::member(&view, name)?;
    if !stopped && view.paused() {
        bail!(
            "the cluster is in maintenance mode (`pgrepl pause`), in which no agent starts a stopped PostgreSQL, so {member} \
             would not run; end it with `pgrepl resume` first"
        );
    }
    cluster
        .update_spec(|_, spec| {
            if let Some(m) = spec.members.get_mut(&member) {
                m.stopped = stopped;
            }
            Ok(())
        })
        .await?;
    wait::until(&cluster, Duration::from_secs(120), |view| {
        let state = view.members.get(&member).map(|s| s.state);
        let leads = view.leader.as_ref() == Some(&member);
        match (stopped, state) {
            // Its agent gone (`pgrepl up`'s supervisor stopped it), or kept running with the
            // server down and the lease given up (`pgrepl node`).
            (true, None) => Ok(()),
            (true, Some(MemberState::Stopped)) if !leads => Ok(()),
            (false, Some(MemberState::Running | MemberState::Streaming)) => Ok(()),
            (true, Some(_)) => Err(format!("{member} to stop")),
            (false, _) => Err(format!("{member} to run")),
        }
    })
    .await?;
    println!("{member} {}", if stopped { "stopped" } else { "is running" });
    Ok(())
}
