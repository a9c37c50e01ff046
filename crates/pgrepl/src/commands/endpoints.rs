//! `pgrepl endpoints [--ro]`: the primary's address, or the streaming replicas' addresses, one
//! a line (what the seed gets from `dig postgresql-slave A`).

use crate::cluster::Cluster;
use anyhow::bail;
use pgrepl_core::MemberState;
use std::path::Path;

pub async fn run(dir: &Path, ro: bool) -> anyhow::Result<()> {
    let cluster = Cluster::open(dir)?;
    let (_, view) = cluster.view().await?;
    if ro {
        for status in view.members.values().filter(|s| s.state == MemberState::Streaming) {
            println!("{}:{}", status.host, status.port);
        }
        return Ok(());
    }
    match view.ready_leader() {
        Some((_, status)) => println!("{}:{}", status.host, status.port),
        None => bail!("no primary is running; see `pgrepl status`"),
    }
    Ok(())
}
