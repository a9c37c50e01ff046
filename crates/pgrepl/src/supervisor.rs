//! The local supervisor behind `pgrepl up`: one background process per cluster directory that
//! keeps one agent process per running member of the spec and one router, restarts either when
//! it exits, stops agents of removed or stopped members, and on SIGTERM (`pgrepl down`) stops
//! them all. Each round, `plan` (pure) sets what it keeps (`Kept`, one per router or agent)
//! against what the spec wants. It reads the spec; it never writes cluster state.

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

/// A process the supervisor keeps: the one router, or the agent of one member.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kid {
    Router,
    Agent(MemberName),
}

impl std::fmt::Display for Kid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kid::Router => write!(f, "the router"),
            Kid::Agent(member) => write!(f, "the agent of {member}"),
        }
    }
}

/// Where a kept process is, as `plan` sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Running,
    /// Sent SIGTERM, as it is no longer wanted; not started again before it has exited.
    Stopping,
    /// Not running (it exited, or could not start): started again from `not_before`.
    Down {
        not_before: Instant,
    },
}

/// What to do in one round.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    start: Vec<Kid>,
    stop: Vec<Kid>,
    /// Down and no longer wanted: its restart is forgotten.
    forget: Vec<Kid>,
}

/// The processes `wanted` against the phases of those kept: start what is wanted and not
/// kept, or down and due; stop what runs and is no longer wanted (a member removed or
/// stopped); leave a stopping one be until it has exited.
fn plan(wanted: &BTreeSet<Kid>, kept: &BTreeMap<Kid, Phase>, now: Instant) -> Plan {
    let mut plan = Plan::default();
    for (kid, phase) in kept {
        match (wanted.contains(kid), phase) {
            (false, Phase::Running) => plan.stop.push(kid.clone()),
            (false, Phase::Down { .. }) => plan.forget.push(kid.clone()),
            (true, Phase::Down { not_before }) if *not_before <= now => plan.start.push(kid.clone()),
            _ => {}
        }
    }
    plan.start.extend(wanted.iter().filter(|kid| !kept.contains_key(*kid)).cloned());
    plan.start.sort();
    plan
}

/// One kept process: its child while it runs or stops, else when it may start again.
struct Kept {
    child: Option<Child>,
    stopping: bool,
    not_before: Instant,
}

impl Kept {
    fn phase(&self) -> Phase {
        match (&self.child, self.stopping) {
            (Some(_), false) => Phase::Running,
            (Some(_), true) => Phase::Stopping,
            (None, _) => Phase::Down { not_before: self.not_before },
        }
    }

    /// The child's exit status once it has exited (and the child let go of).
    fn reap(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut().and_then(|child| child.try_wait().ok().flatten())?;
        self.child = None;
        Some(status)
    }
}

/// The processes the spec wants: the router, and the agent of every member not stopped. When
/// the spec cannot be read, those kept and not stopping stay wanted.
async fn wanted(cluster: &Cluster, kept: &BTreeMap<Kid, Kept>) -> BTreeSet<Kid> {
    match cluster.view().await {
        Ok((_, view)) => {
            let members = view.spec.iter().flat_map(|s| s.members.iter()).filter(|(_, m)| !m.stopped);
            std::iter::once(Kid::Router).chain(members.map(|(name, _)| Kid::Agent(name.clone()))).collect()
        }
        Err(e) => {
            warn!("read the cluster spec: {e:#}");
            std::iter::once(Kid::Router)
                .chain(kept.iter().filter(|(_, k)| !k.stopping).map(|(kid, _)| kid.clone()))
                .collect()
        }
    }
}

fn spawn(cluster: &Cluster, kid: &Kid, splicer: Option<&Splicer>) -> anyhow::Result<Child> {
    let mut cmd = pgrepl_command(&cluster.layout.dir)?;
    let log = match kid {
        Kid::Router => {
            cmd.arg("router");
            if let Some(splicer) = splicer {
                router::hand_down(&mut cmd, splicer);
            }
            append_to(&cluster.layout.router_log())?
        }
        Kid::Agent(member) => {
            let member_dir = cluster.layout.member(member);
            std::fs::create_dir_all(&member_dir).with_context(|| format!("create {}", member_dir.display()))?;
            cmd.args(["agent", "--member", member.as_str()]);
            append_to(&cluster.layout.log(member))?
        }
    };
    cmd.stdout(log.try_clone()?).stderr(log);
    cmd.spawn().with_context(|| format!("start {kid}"))
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
    // Handed down by `up`, which may load it; each router started gets it.
    let splicer = router::handed_down()?;
    let mut kept: BTreeMap<Kid, Kept> = BTreeMap::new();
    loop {
        let mut ended = Vec::new();
        for (kid, k) in &mut kept {
            if let Some(status) = k.reap() {
                match k.stopping {
                    true => ended.push(kid.clone()),
                    false => {
                        warn!("{kid} exited ({status}); restarting it in {RESTART_DELAY:?}");
                        k.not_before = Instant::now() + RESTART_DELAY;
                    }
                }
            }
        }
        for kid in ended {
            kept.remove(&kid);
        }
        let wanted = wanted(&cluster, &kept).await;
        let phases = kept.iter().map(|(kid, k)| (kid.clone(), k.phase())).collect();
        let plan = plan(&wanted, &phases, Instant::now());
        for kid in &plan.stop {
            if let Some(k) = kept.get_mut(kid) {
                info!("stopping {kid}, of a member that is removed or stopped");
                k.child.iter().for_each(terminate);
                k.stopping = true;
            }
        }
        for kid in &plan.forget {
            kept.remove(kid);
        }
        for kid in plan.start {
            let k = match spawn(&cluster, &kid, splicer.as_ref()) {
                Ok(child) => {
                    info!(pid = child.id(), "started {kid}");
                    Kept { child: Some(child), stopping: false, not_before: Instant::now() }
                }
                Err(e) => {
                    warn!("{e:#}");
                    Kept { child: None, stopping: false, not_before: Instant::now() + RESTART_DELAY }
                }
            };
            kept.insert(kid, k);
        }
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    info!("supervisor stopping every agent");
    let router = kept.remove(&Kid::Router).and_then(|k| k.child);
    let mut agents: Vec<(Kid, Child)> = kept.into_iter().filter_map(|(kid, k)| Some((kid, k.child?))).collect();
    for (_, child) in &agents {
        terminate(child);
    }
    if let Some(mut child) = router {
        terminate(&child);
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    }
    let deadline = Instant::now() + STOP_GRACE;
    for (kid, child) in &mut agents {
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, child.wait()).await.is_err() {
            warn!("{kid} did not stop within {STOP_GRACE:?}; killing it");
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

    fn agent(n: u32) -> Kid {
        Kid::Agent(MemberName::numbered(n))
    }

    #[test]
    fn what_is_wanted_and_not_kept_starts() {
        let now = Instant::now();
        let wanted = BTreeSet::from([Kid::Router, agent(1), agent(2)]);
        let kept = BTreeMap::from([(agent(1), Phase::Running)]);
        assert_eq!(plan(&wanted, &kept, now), Plan { start: vec![Kid::Router, agent(2)], ..Plan::default() });
        let all =
            BTreeMap::from([(Kid::Router, Phase::Running), (agent(1), Phase::Running), (agent(2), Phase::Running)]);
        assert_eq!(plan(&wanted, &all, now), Plan::default(), "all runs: nothing to do");
    }

    #[test]
    fn a_process_that_exited_starts_again_only_once_its_delay_is_over() {
        let now = Instant::now();
        let wanted = BTreeSet::from([Kid::Router, agent(1)]);
        let kept = BTreeMap::from([
            (Kid::Router, Phase::Down { not_before: now + RESTART_DELAY }),
            (agent(1), Phase::Down { not_before: now }),
        ]);
        assert_eq!(plan(&wanted, &kept, now), Plan { start: vec![agent(1)], ..Plan::default() });
        let later = now + RESTART_DELAY;
        assert_eq!(plan(&wanted, &kept, later).start, [Kid::Router, agent(1)]);
    }

    #[test]
    fn the_agent_of_a_member_removed_or_stopped_stops_and_is_not_started_before_it_has_exited() {
        let now = Instant::now();
        let kept = BTreeMap::from([
            (Kid::Router, Phase::Running),
            (agent(1), Phase::Running),
            (agent(2), Phase::Running),
            (agent(3), Phase::Down { not_before: now }),
        ]);
        let wanted = BTreeSet::from([Kid::Router, agent(1)]);
        let plan1 = plan(&wanted, &kept, now);
        assert_eq!(plan1, Plan { stop: vec![agent(2)], forget: vec![agent(3)], ..Plan::default() });
        // Started again (`pgrepl start`) while its agent still stops: it waits for the exit.
        let stopping = BTreeMap::from([(Kid::Router, Phase::Running), (agent(2), Phase::Stopping)]);
        let again = BTreeSet::from([Kid::Router, agent(2)]);
        assert_eq!(plan(&again, &stopping, now), Plan::default());
        assert_eq!(plan(&again, &BTreeMap::from([(Kid::Router, Phase::Running)]), now).start, [agent(2)]);
    }

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
