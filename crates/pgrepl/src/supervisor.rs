//! The local supervisor behind `pgrepl up`: one background process per cluster directory that
//! keeps one agent process per running member of the spec and one router, restarts either when
//! it exits, stops agents of removed or stopped members, and on SIGTERM (`pgrepl down`) stops
//! them all.
//! It reads the spec; it never writes cluster state.

use crate::cluster::Cluster;
use crate::commands::router;
use crate::config::env::variables;
use anyhow::{bail, Context};
use pgrepl_core::MemberName;
use pgrepl_router::Splicer;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

const RESTART_DELAY: Duration = Duration::from_secs(1);
const STOP_GRACE: Duration = Duration::from_secs(90);

/// The pid in the supervisor's pid file, when that process is alive and is a pgrepl supervisor:
/// after a power loss the file outlives its process, and its pid may name another one by now.
pub fn running_pid(pid_file: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let supervises = cmdline.split(|b| *b == 0).any(|arg| arg == b"supervise");
    (supervises && is_alive(pid)).then_some(pid)
}

/// True when `pid` runs. A zombie (dead, not yet reaped, as orphans stay where PID 1 does not
/// reap them) counts as dead.
pub fn is_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    if pid <= 0 || unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the parenthesised command name: "PID (comm) S ...".
    stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()).is_none_or(|state| state != 'Z' && state != 'X')
}

/// A pgrepl process of this same binary, with the secret-bearing variables removed from its
/// environment (invariant 4: secrets stay in the 0600 secrets file).
pub fn pgrepl_command(dir: &Path) -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("find the pgrepl binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("--dir").arg(dir).stdin(Stdio::null()).env_remove(router::SPLICER_FDS);
    for name in variables() {
        cmd.env_remove(name);
    }
    Ok(cmd)
}

fn append_to(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open log {}", path.display()))
}

fn spawn_agent(cluster: &Cluster, member: &MemberName) -> anyhow::Result<Child> {
    let member_dir = cluster.layout.member(member);
    std::fs::create_dir_all(&member_dir).with_context(|| format!("create {}", member_dir.display()))?;
    let log = append_to(&cluster.layout.log(member))?;
    let mut cmd = pgrepl_command(&cluster.layout.dir)?;
    cmd.args(["agent", "--member", member.as_str()]).stdout(log.try_clone()?).stderr(log);
    cmd.spawn().with_context(|| format!("start the agent of {member}"))
}

fn spawn_router(cluster: &Cluster, splicer: Option<&Splicer>) -> anyhow::Result<Child> {
    let log = append_to(&cluster.layout.router_log())?;
    let mut cmd = pgrepl_command(&cluster.layout.dir)?;
    cmd.arg("router").stdout(log.try_clone()?).stderr(log);
    if let Some(splicer) = splicer {
        router::hand_down(&mut cmd, splicer);
    }
    cmd.spawn().context("start the router")
}

/// The one router: started when missing, restarted after `RESTART_DELAY` when it exits.
struct RouterProcess {
    child: Option<Child>,
    not_before: Instant,
    /// Handed down by `up`, which may load it; each router started gets it.
    splicer: Option<Splicer>,
}

impl RouterProcess {
    fn keep(&mut self, cluster: &Cluster) {
        if let Some(child) = &mut self.child {
            if let Ok(Some(status)) = child.try_wait() {
                warn!("router exited ({status}); restarting it in {RESTART_DELAY:?}");
                self.child = None;
                self.not_before = Instant::now() + RESTART_DELAY;
            }
        }
        if self.child.is_none() && self.not_before <= Instant::now() {
            match spawn_router(cluster, self.splicer.as_ref()) {
                Ok(child) => {
                    info!(pid = child.id(), "started the router");
                    self.child = Some(child);
                }
                Err(e) => {
                    warn!("{e:#}");
                    self.not_before = Instant::now() + RESTART_DELAY;
                }
            }
        }
    }
}

fn terminate(child: &Child) {
    if let Some(pid) = child.id() {
        // SAFETY: sending SIGTERM to our own child.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
}

pub async fn run(dir: &Path) -> anyhow::Result<()> {
    let cluster = Cluster::open(dir).await?;
    let pid_file = cluster.layout.supervisor_pid();
    if let Some(pid) = running_pid(&pid_file) {
        bail!("a supervisor (pid {pid}) already runs this cluster");
    }
    std::fs::write(&pid_file, std::process::id().to_string()).context("write the supervisor pid file")?;
    info!(dir = %cluster.layout.dir.display(), "supervisor started");
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut agents: BTreeMap<MemberName, Child> = BTreeMap::new();
    let mut stopping: Vec<(MemberName, Child)> = Vec::new();
    let mut not_before: BTreeMap<MemberName, Instant> = BTreeMap::new();
    let mut router = RouterProcess { child: None, not_before: Instant::now(), splicer: router::handed_down()? };
    loop {
        router.keep(&cluster);
        let desired: BTreeSet<MemberName> = match cluster.view().await {
            Ok((_, view)) => view
                .spec
                .iter()
                .flat_map(|s| s.members.iter())
                .filter(|(_, m)| !m.stopped)
                .map(|(n, _)| n.clone())
                .collect(),
            Err(e) => {
                warn!("read the cluster spec: {e:#}");
                agents.keys().cloned().collect()
            }
        };
        let exited: Vec<MemberName> = agents
            .iter_mut()
            .filter_map(|(member, child)| match child.try_wait() {
                Ok(Some(status)) => {
                    warn!(%member, "agent exited ({status}); restarting it in {RESTART_DELAY:?}");
                    Some(member.clone())
                }
                _ => None,
            })
            .collect();
        for member in exited {
            agents.remove(&member);
            not_before.insert(member, Instant::now() + RESTART_DELAY);
        }
        let unwanted: Vec<MemberName> = agents.keys().filter(|m| !desired.contains(*m)).cloned().collect();
        for member in unwanted {
            if let Some(child) = agents.remove(&member) {
                info!(%member, "stopping the agent of a member that is removed or stopped");
                terminate(&child);
                stopping.push((member, child));
            }
        }
        stopping.retain_mut(|(_, child)| !matches!(child.try_wait(), Ok(Some(_))));
        for member in &desired {
            let due = not_before.get(member).is_none_or(|t| *t <= Instant::now());
            let busy = stopping.iter().any(|(m, _)| m == member);
            if !agents.contains_key(member) && due && !busy {
                match spawn_agent(&cluster, member) {
                    Ok(child) => {
                        info!(%member, pid = child.id(), "started agent");
                        not_before.remove(member);
                        agents.insert(member.clone(), child);
                    }
                    Err(e) => {
                        warn!(%member, "{e:#}");
                        not_before.insert(member.clone(), Instant::now() + RESTART_DELAY);
                    }
                }
            }
        }
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    info!("supervisor stopping every agent");
    let mut all: Vec<(MemberName, Child)> = agents.into_iter().chain(stopping).collect();
    for (_, child) in &all {
        terminate(child);
    }
    if let Some(mut child) = router.child.take() {
        terminate(&child);
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    }
    let deadline = Instant::now() + STOP_GRACE;
    for (member, child) in &mut all {
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, child.wait()).await.is_err() {
            warn!(%member, "agent did not stop within {STOP_GRACE:?}; killing it");
            let _ = child.kill().await;
        }
    }
    let _ = std::fs::remove_file(&pid_file);
    info!("supervisor stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_naming_another_live_process_is_no_supervisor() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("supervisor.pid");
        std::fs::write(&file, std::process::id().to_string()).unwrap();
        assert_eq!(running_pid(&file), None, "this test process is alive but supervises nothing");
        std::fs::write(&file, "not a pid").unwrap();
        assert_eq!(running_pid(&file), None);
    }
}
