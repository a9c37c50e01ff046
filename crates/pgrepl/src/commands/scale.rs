//! `pgrepl scale N`: write a spec with N replicas (new members get fresh names and ports,
//! removal takes the newest replicas), then wait until the cluster matches it.

use crate::cluster::Cluster;
use crate::commands::{ports, progress, summary, wait};
use crate::config::validate::MAX_REPLICAS;
use crate::readiness;
use anyhow::bail;
use pgrepl_core::MemberSpec;
use std::path::Path;
use std::time::Duration;

pub async fn run(dir: &Path, replicas: i64, wait_secs: u64) -> anyhow::Result<()> {
    if !(0..=MAX_REPLICAS).contains(&replicas) {
        bail!("replicas: {replicas} is not allowed; use a number of replicas from 0 to {MAX_REPLICAS} (the primary is not counted and cannot be scaled)");
    }
    let cluster = Cluster::open(dir).await?;
    let config = cluster.config.clone();
    let (_, view) = cluster.view().await?;
    if let Some((name, m)) = cluster.member_elsewhere(&view) {
        bail!(
            "this cluster's members run on their own hosts ({name} at {}), each started by `pgrepl node`, and `scale` \
             starts no host: add a member by running `pgrepl node` on a new host (it joins and clones), or take one \
             away by stopping its node",
            m.host
        );
    }
    let spec = cluster
        .update_spec(|view, spec| {
            *spec = spec.scaled(replicas as usize, view.leader.as_ref(), |_| MemberSpec {
                host: String::new(),
                port: 0,
                stopped: false,
            })?;
            ports::assign_new(&config, spec)
        })
        .await?;
    let ready = wait::until(&cluster, Duration::from_secs(wait_secs), readiness::check);
    progress::while_waiting(&cluster, ready).await?;
    let (_, view) = cluster.view().await?;
    println!("cluster {:?} has {} replica(s)", cluster.config.cluster, spec.members.len() - 1);
    summary::print(&cluster, &view);
    Ok(())
}
