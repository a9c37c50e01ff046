//! `pgrepl down [--destroy]`: stop the supervisor (which stops every agent, which stops its
//! PostgreSQL), then any agent that outlived its supervisor, then any member PostgreSQL still
//! running without an agent, and with
//! `--destroy` delete the cluster directory.

use crate::agent_lock;
use crate::cluster::Cluster;
use crate::supervisor::running_pid;
use anyhow::Context;
use pgrepl_core::MemberName;
use pgrepl_pg::{Binaries, Instance, StopMode};
use std::path::Path;
use std::time::{Duration, Instant};

const STOP_LIMIT: Duration = Duration::from_secs(150);

/// Every member directory on disk, in the spec or not (removed members keep theirs).
fn member_dirs(cluster: &Cluster) -> Vec<MemberName> {
    let Ok(entries) = std::fs::read_dir(cluster.layout.dir.join("members")) else { return vec![] };
    entries.filter_map(|e| MemberName::new(e.ok()?.file_name().to_string_lossy().to_string()).ok()).collect()
}

pub async fn run(dir: &Path, destroy: bool) -> anyhow::Result<()> {
    let cluster = Cluster::open(dir)?;
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
        let entries =
            std::fs::read_dir(&cluster.layout.dir).with_context(|| format!("read {}", cluster.layout.dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            removed.with_context(|| format!("remove {}", path.display()))?;
        }
        // The directory itself may sit in a parent this user cannot write; it is empty now.
        let _ = std::fs::remove_dir(&cluster.layout.dir);
        println!("cluster {:?} stopped and destroyed ({})", cluster.config.cluster, cluster.layout.dir.display());
    } else {
        println!("cluster {:?} stopped; its data is kept in {}", cluster.config.cluster, cluster.layout.dir.display());
    }
    Ok(())
}
