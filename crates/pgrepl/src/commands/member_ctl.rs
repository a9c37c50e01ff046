//! `pgrepl stop MEMBER` and `pgrepl start MEMBER`: mark the member stopped or running in the
//! spec (the supervisor stops or starts its agent) and wait until it is so.

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
        match (stopped, state) {
            (true, None) => Ok(()),
            (false, Some(MemberState::Running | MemberState::Streaming)) => Ok(()),
            (true, Some(_)) => Err(format!("{member} to stop")),
            (false, _) => Err(format!("{member} to run")),
        }
    })
    .await?;
    println!("{member} {}", if stopped { "stopped" } else { "is running" });
    Ok(())
}
