//! `pgrepl down [--destroy]`: stop the supervisor (which stops every agent, which stops its
//! PostgreSQL), then any agent that outlived its supervisor, then any member PostgreSQL still
//! running without an agent, and with
//! `--destroy` delete the cluster's keys in etcd (those under its prefix only, when its store
//! is etcd) and the cluster directory, the directory itself too (a root `down` forks a process
//! that stays root for that, as the cluster's OS user may not write the directory's parent).

use crate::agent_lock;
use crate::cluster::{etcd_prefix, Cluster};
use crate::commands::setup::RootHand;
use crate::config::StoreConfig;
use crate::layout::Layout;
use crate::supervisor::running_pid;
use anyhow::{bail, Context};
use pgrepl_core::MemberName;
use pgrepl_pg::{Binaries, Instance, StopMode};
use pgrepl_store::Condition;
use std::path::Path;
use std::time::{Duration, Instant};

const STOP_LIMIT: Duration = Duration::from_secs(150);

/// Every member directory on disk, in the spec or not (removed members keep theirs).
fn member_dirs(cluster: &Cluster) -> Vec<MemberName> {
    let Ok(entries) = std::fs::read_dir(cluster.layout.dir.join("members")) else { return vec![] };
    entries.filter_map(|e| MemberName::new(e.ok()?.file_name().to_string_lossy().to_string()).ok()).collect()
}

/// Deletes every key of an etcd cluster: those its store shows, which are exactly the keys under
/// its prefix (other clusters sharing the etcd are not touched). Its processes are stopped, so
/// nothing writes meanwhile; a few rounds cover a key that was being written as they stopped.
/// The file store goes with the directory.
async fn remove_etcd_keys(cluster: &Cluster) -> anyhow::Result<()> {
    if cluster.config.store == StoreConfig::File {
        return Ok(());
    }
    for _ in 0..3 {
        let snapshot = cluster.store.snapshot().await.context("read the cluster's keys")?;
        if snapshot.entries.is_empty() {
            return Ok(());
        }
        for key in snapshot.entries.keys() {
            cluster.store.delete(key, Condition::Any).await.with_context(|| format!("delete {key}"))?;
        }
    }
    bail!("keys kept appearing under {} while they were deleted", etcd_prefix(&cluster.config.cluster))
}

pub async fn run(dir: &Path, destroy: bool) -> anyhow::Result<()> {
    // Forked while still root: the directory may sit in a parent that only root may change.
    // SAFETY: geteuid has no preconditions.
    let hand = match destroy && unsafe { libc::geteuid() } == 0 {
        true => Some(RootHand::fork(&[Layout::new(dir).dir], None, None)?),
        false => None,
    };
    let cluster = Cluster::open(dir).await?;
    if let Some(pid) = running_pid(&cluster.layout.supervisor_pid()) {
        // SAFETY: signalling the supervisor whose pid file this cluster holds.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let start = Instant::now();
        while running_pid(&cluster.layout.supervisor_pid()).is_some() {
            anyhow::ensure!(
                start.elapsed() < STOP_LIMIT,
                "the supervisor (pid {pid}) did not stop within {}s",
                STOP_LIMIT.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Agents and a router that outlived their supervisor (killed with -9, say) are stopped too.
    let mut orphans: Vec<(String, std::path::PathBuf)> =
        member_dirs(&cluster).iter().map(|m| (format!("the agent of {m}"), cluster.layout.agent_lock(m))).collect();
    orphans.push(("the router".to_string(), cluster.layout.router_lock()));
    for (what, lock) in orphans {
        if let Some(pid) = agent_lock::holder(&lock) {
            eprintln!("stopping {what} (pid {pid}), which ran without a supervisor");
            // SAFETY: signalling the process that holds this lock.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let start = Instant::now();
            while agent_lock::holder(&lock).is_some() {
                anyhow::ensure!(start.elapsed() < STOP_LIMIT, "{what} (pid {pid}) did not stop");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let bins = Binaries::find(cluster.config.bin_dir.as_deref())?;
    for member in member_dirs(&cluster) {
        let pg = Instance {
            bins: bins.clone(),
            data_dir: cluster.layout.data(&member),
            socket_dir: cluster.layout.socket_dir(&member),
            listen_address: cluster.config.listen.to_string(),
            port: 0,
            log_file: cluster.layout.log(&member),
            name: member.to_string(),
        };
        if pg.postmaster_running() {
            eprintln!("stopping PostgreSQL of {member}, which ran without its agent");
            pg.stop(StopMode::Fast, Duration::from_secs(60)).await?;
        }
    }
    if destroy {
        // First, while the directory still says where the keys are: a failure leaves all to retry.
        remove_etcd_keys(&cluster).await.with_context(|| {
            format!(
                "remove the cluster's keys under {} from the store {} (the cluster is stopped and its directory kept: \
                 run `pgrepl down --destroy` again once etcd answers)",
                etcd_prefix(&cluster.config.cluster),
                cluster.config.store
            )
        })?;
        let entries =
            std::fs::read_dir(&cluster.layout.dir).with_context(|| format!("read {}", cluster.layout.dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            removed.with_context(|| format!("remove {}", path.display()))?;
        }
        // The directory itself, empty now, may sit in a parent only root writes.
        let removed = std::fs::remove_dir(&cluster.layout.dir);
        if removed.is_err() && !hand.is_some_and(RootHand::carry_out) {
            let e = removed.err().map(|e| e.to_string()).unwrap_or_default();
            eprintln!("note: the empty directory {} is left: remove it ({e})", cluster.layout.dir.display());
        }
        println!("cluster {:?} stopped and destroyed ({})", cluster.config.cluster, cluster.layout.dir.display());
    } else {
        println!("cluster {:?} stopped; its data is kept in {}", cluster.config.cluster, cluster.layout.dir.display());
    }
    Ok(())
}
