//! `pgrepl endpoints [--rw | --ro]`: the router's endpoints and where each routes now; with
//! --rw the primary's address, with --ro the replicas' addresses that get read-only
//! connections, one a line (what the seed gets from `dig postgresql-slave A`).

use crate::cluster::Cluster;
use crate::topology;
use anyhow::bail;
use std::path::Path;

pub async fn run(dir: &Path, rw: bool, ro: bool) -> anyhow::Result<()> {
    let cluster = Cluster::open(dir).await?;
    let (_, view) = cluster.view().await?;
    let routing = crate::config::cluster_wide::routing(view.spec.as_ref(), &cluster.config);
    let routes = topology::from_view(&view, routing.ro_max_lag);
    let (listen, config) = (cluster.config.listen, &cluster.config);
    if ro {
        for b in &routes.ro {
            println!("{}", b.addr);
        }
        return Ok(());
    }
    if rw {
        match &routes.rw {
            Some(b) => println!("{}", b.addr),
            None => bail!("no primary is running; see `pgrepl status`"),
        }
        return Ok(());
    }
    match &routes.rw {
        Some(b) => println!("rw {listen}:{} -> {} {}", config.port, b.name, b.addr),
        None => println!("rw {listen}:{} -> nobody (no primary is running)", config.port),
    }
    for b in &routes.ro {
        println!("ro {listen}:{} -> {} {}", config.ro_port, b.name, b.addr);
    }
    if routes.ro.is_empty() {
        println!("ro {listen}:{} -> no replica ({})", config.ro_port, fallback(routing.ro_fallback));
    }
    Ok(())
}

pub fn fallback(f: pgrepl_router::RoFallback) -> &'static str {
    match f {
        pgrepl_router::RoFallback::Primary => "reads go to the primary",
        pgrepl_router::RoFallback::Refuse => "reads are refused",
    }
}
