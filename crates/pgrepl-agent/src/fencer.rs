//! The fencer process (`pgrepl fencer`, started by the agent): one per member, apart from the
//! agent so that a stopped, hung or starved agent cannot keep its PostgreSQL writable past the
//! lease. It does nothing but wait for beats on a unix socket and for a timer on the boot
//! clock (`CLOCK_BOOTTIME`, which keeps counting while the machine or the process is
//! suspended), with its memory locked where the limits allow. When the deadline passes
//! unrenewed it kills every process of the member's PostgreSQL with SIGKILL: the effect of
//! `pg_ctl stop -m immediate`, but one the kernel carries out even on a server that is itself
//! stopped or hung. The rules are `pgrepl_core::fence`; this file is only the I/O around them.
//!
//! Protocol (lines): agent -> fencer `arm <ns>` | `limit <ns>` | `disarm` (see `Beat`);
//! fencer -> agent `fired <unix ms> <processes killed>`, once per fence, sent to the agent
//! connected then or, if none was, to the next one that connects.

use anyhow::Context;
use pgrepl_core::fence::{Beat, FenceState, Fired, MARGIN};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{error, info, warn};

/// The fencer socket's file name inside the member's socket directory (short: unix socket
/// paths are limited to 107 bytes).
pub const SOCKET_NAME: &str = ".pgrepl-fence";

/// The time on the boot clock, which also counts time suspended.
pub fn boot_now() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Where a fencer that exits without an agent leaves the fences it could not report (`fired`
/// lines), which the next agent reads and removes.
pub fn unreported_path(socket: &Path) -> PathBuf {
    socket.with_extension("fired")
}

/// Where a member's fencer listens.
pub fn socket_path(socket_dir: &Path) -> PathBuf {
    socket_dir.join(SOCKET_NAME)
}

/// Runs the fencer of the PostgreSQL in `data_dir` until it has nothing left to guard and no
/// agent. Returns at once if another fencer already serves `socket` (it holds the lock).
pub fn run(data_dir: &Path, socket: &Path) -> anyhow::Result<()> {
    // Its own session: a terminal's Ctrl-C to the agent's process group does not reach it.
    // SAFETY: setsid has no preconditions; it fails harmlessly for a group leader.
    unsafe { libc::setsid() };
    let Some(_lock) = take_lock(socket)? else {
        info!(socket = %socket.display(), "another fencer already guards this member");
        return Ok(());
    };
    lock_memory();
    let listener = listen(socket)?;
    let timer = Timer::new()?;
    let socket_dir = socket.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut fencer =
        Fencer { data_dir: data_dir.to_path_buf(), socket_dir, state: FenceState::default(), unreported: vec![] };
    let mut agent: Option<Agent> = None;
    info!(data_dir = %data_dir.display(), "fencer started: it stops PostgreSQL if the lease it serves under is not renewed");
    loop {
        timer.set(fencer.state.fire_at())?;
        let mut fds = vec![poll_fd(listener.as_raw_fd()), poll_fd(timer.fd.as_raw_fd())];
        if let Some(a) = &agent {
            fds.push(poll_fd(a.stream.as_raw_fd()));
        }
        // SAFETY: `fds` is a valid array of pollfd for its length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("wait for beats");
        }
        if fds[1].revents != 0 {
            timer.clear();
        }
        if fencer.state.due(boot_now()) {
            fencer.fire();
        }
        if fds.get(2).is_some_and(|f| f.revents != 0) {
            let gone = agent.as_mut().is_some_and(|a| !a.read_beats(&mut fencer.state));
            if gone {
                agent = None;
                if fencer.state.may_exit_without_agent() {
                    info!("fencer stopping: its agent has gone and it has nothing to guard");
                    return fencer.leave_unreported(socket);
                }
                warn!(
                    "the agent went away while this member may be serving under a lease: the fencer stays and stops PostgreSQL at the deadline unless a new agent renews it"
                );
            }
        }
        if fds[0].revents != 0 {
            if let Ok((stream, _)) = listener.accept() {
                stream.set_nonblocking(true).context("make the agent's connection non-blocking")?;
                agent = Some(Agent { stream, pending: Vec::new() });
            }
        }
        if let Some(a) = &mut agent {
            fencer.unreported.retain(|line| a.stream.write_all(line.as_bytes()).is_err());
        }
        if agent.is_none() && fencer.state.may_exit_without_agent() {
            info!("fencer stopping: no agent and nothing to guard");
            return fencer.leave_unreported(socket);
        }
    }
}

struct Fencer {
    data_dir: PathBuf,
    /// Where PostgreSQL's socket (and this fencer's) lives.
    socket_dir: PathBuf,
    state: FenceState,
    /// `fired` lines not yet handed to an agent.
    unreported: Vec<String>,
}

impl Fencer {
    /// Leaves fences no agent has heard of in `unreported_path`, for the next agent.
    fn leave_unreported(&self, socket: &Path) -> anyhow::Result<()> {
        if self.unreported.is_empty() {
            return Ok(());
        }
        let path = unreported_path(socket);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("keep the unreported fences in {}", path.display()))?;
        file.write_all(self.unreported.concat().as_bytes())
            .with_context(|| format!("keep the unreported fences in {}", path.display()))
    }

    fn fire(&mut self) {
        let data_dir = std::fs::canonicalize(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
        if postgres_processes(&data_dir).is_empty() {
            info!("the lease deadline passed unrenewed; PostgreSQL was not running, so there was nothing to fence");
            return;
        }
        warn!(
            "fencing: the leader lease was not renewed and could expire in {MARGIN:?}, so every PostgreSQL process is killed now to keep any write from landing after it"
        );
        let killed = kill_postgres(&data_dir, &self.socket_dir);
        let at_unix_ms = crate::publish::wall_clock_ms();
        info!(killed, "fencing: PostgreSQL's processes were killed");
        self.unreported.push(Fired { at_unix_ms, killed: killed as u64 }.to_line());
    }
}

/// The connected agent and the part of a line read so far.
struct Agent {
    stream: UnixStream,
    pending: Vec<u8>,
}

impl Agent {
    /// Applies every complete beat that has arrived (also those sent just before the agent
    /// hung up); false once the agent has gone.
    fn read_beats(&mut self, state: &mut FenceState) -> bool {
        let mut buf = [0u8; 512];
        let mut open = true;
        while open {
            match self.stream.read(&mut buf) {
                Ok(0) => open = false,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => open = false,
            }
        }
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            match Beat::parse(text.trim_end()) {
                Some(beat) => state.apply(beat),
                None => warn!(line = %text.trim_end(), "the fencer ignores a line it does not understand"),
            }
        }
        open
    }
}

/// Kills every process whose program is `postgres` and whose working directory is `data_dir`
/// (canonical; the postmaster and all its children chdir there), repeating until none is left, so that a
/// child forked during the first round goes too. Then removes the lock files that name a killed
/// process (`postmaster.pid`, and `.s.PGSQL.<port>.lock` in `socket_dir`): until its parent
/// reaps it, a killed postmaster still answers `kill(pid, 0)`, and the next server (or
/// pg_rewind's recovery) would take it for a running one. Returns how many processes were killed.
fn kill_postgres(data_dir: &Path, socket_dir: &Path) -> usize {
    let mut killed = Vec::new();
    for _ in 0..50 {
        let pids = postgres_processes(data_dir);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            // SAFETY: sending a signal has no memory-safety preconditions.
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                killed.push(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let socket_locks = std::fs::read_dir(socket_dir).into_iter().flatten().filter_map(Result::ok).map(|e| e.path());
    let socket_locks = socket_locks.filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(is_socket_lock));
    for lock in std::iter::once(data_dir.join("postmaster.pid")).chain(socket_locks) {
        let locked_by = std::fs::read_to_string(&lock).ok().and_then(|t| t.lines().next()?.trim().parse().ok());
        if locked_by.is_some_and(|pid| killed.contains(&pid)) {
            match std::fs::remove_file(&lock) {
                Ok(()) => info!(file = %lock.display(), "removed a lock file of the killed server"),
                Err(e) => warn!(file = %lock.display(), "remove a lock file of the killed server: {e}"),
            }
        }
    }
    killed.len()
}

/// PostgreSQL's socket lock files: `.s.PGSQL.<port>.lock`.
fn is_socket_lock(name: &str) -> bool {
    name.strip_prefix(".s.PGSQL.")
        .and_then(|rest| rest.strip_suffix(".lock"))
        .is_some_and(|port| port.parse::<u16>().is_ok())
}

fn postgres_processes(data_dir: &Path) -> Vec<libc::pid_t> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        error!("fencing: /proc cannot be read, so PostgreSQL's processes cannot be found");
        return vec![];
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| {
            let proc = PathBuf::from(format!("/proc/{pid}"));
            let is_postgres =
                std::fs::read_link(proc.join("exe")).is_ok_and(|exe| exe.file_name().is_some_and(|n| n == "postgres"));
            is_postgres && std::fs::read_link(proc.join("cwd")).is_ok_and(|cwd| cwd == data_dir)
        })
        .collect()
}

/// An exclusive lock beside the socket, held for the fencer's life: one fencer per member.
fn take_lock(socket: &Path) -> anyhow::Result<Option<std::fs::File>> {
    let path = socket.with_extension("lock");
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open the fencer lock {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).ok();
    // SAFETY: flock on a descriptor this function owns.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    Ok((rc == 0).then_some(file))
}

fn listen(socket: &Path) -> anyhow::Result<UnixListener> {
    // Only this fencer (holding the lock) may own the socket: an old file is a dead fencer's.
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).with_context(|| format!("listen on {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restrict {}", socket.display()))?;
    Ok(listener)
}

/// Keeps the fencer's pages in memory, so that memory pressure cannot stall it on a page fault:
/// all of them (as they are touched) where RLIMIT_MEMLOCK allows, raised first to its hard limit;
/// else its data and stack (the anonymous writable mappings), which would otherwise go to swap,
/// and its code stays reclaimable. Says once what it could not lock.
fn lock_memory() {
    // SAFETY: getrlimit/setrlimit with a valid pointer; mlockall has no memory-safety preconditions.
    let (all, limit) = unsafe {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit);
        }
        (libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) == 0, limit.rlim_cur)
    };
    if all {
        return;
    }
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut locked = 0usize;
    for (start, end) in anonymous_writable(&maps) {
        // SAFETY: locking a range this process has mapped; no memory is read or written.
        if unsafe { libc::mlock2(start as *const libc::c_void, end - start, libc::MLOCK_ONFAULT) } == 0 {
            locked += end - start;
        }
    }
    warn!(
        "the fencer could lock only its data and stack ({} kB) in memory, not its code (RLIMIT_MEMLOCK is {} kB): under memory pressure it may wait on the disk",
        locked / 1024,
        limit / 1024
    );
}

/// The `(start, end)` of every private, writable mapping without a file (heap, stack, data).
fn anonymous_writable(maps: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (range, perms) = (fields.next()?, fields.next()?);
            let path = fields.nth(3).unwrap_or("");
            let anonymous = path.is_empty() || path == "[heap]" || path == "[stack]";
            if !(anonymous && perms.starts_with("rw") && perms.ends_with('p')) {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some((usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?))
        })
        .collect()
}

fn poll_fd(fd: RawFd) -> libc::pollfd {
    libc::pollfd { fd, events: libc::POLLIN, revents: 0 }
}

/// A timerfd on the boot clock, set to an absolute time.
struct Timer {
    fd: OwnedFd,
}

impl Timer {
    fn new() -> anyhow::Result<Timer> {
        // SAFETY: timerfd_create returns a new descriptor or -1.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_BOOTTIME, libc::TFD_CLOEXEC | libc::TFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("create a timer on the boot clock");
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        Ok(Timer { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Fires at `at` on the boot clock, or never (`None`).
    fn set(&self, at: Option<Duration>) -> anyhow::Result<()> {
        // A zero value disarms a timerfd, so a deadline already due is set to 1 ns.
        let at = at.map_or(Duration::ZERO, |t| t.max(Duration::from_nanos(1)));
        let value = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: at.as_secs() as libc::time_t,
                tv_nsec: at.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: valid descriptor and pointers; the old value is not asked for.
        let rc = unsafe {
            libc::timerfd_settime(self.fd.as_raw_fd(), libc::TFD_TIMER_ABSTIME, &value, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("set the fence timer");
        }
        Ok(())
    }

    fn clear(&self) {
        let mut expirations = [0u8; 8];
        // SAFETY: reading 8 bytes into an 8-byte buffer from a non-blocking timerfd.
        unsafe { libc::read(self.fd.as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_lock_files_are_told_by_name() {
        assert!(is_socket_lock(".s.PGSQL.5432.lock"));
        for other in [".s.PGSQL.5432", ".s.PGSQL.x.lock", ".pgrepl-fence.lock", "postmaster.pid"] {
            assert!(!is_socket_lock(other), "{other}");
        }
    }

    #[test]
    fn only_private_writable_mappings_without_a_file_are_locked_when_all_cannot_be() {
        let maps = "\
55d0c0000000-55d0c0a00000 r-xp 00000000 fd:01 123 /usr/bin/pgrepl
55d0c0b00000-55d0c0b10000 rw-p 00b00000 fd:01 123 /usr/bin/pgrepl
55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000004000 rw-p 00000000 00:00 0
7f0000010000-7f0000011000 rw-s 00000000 00:05 9 /dev/zero (deleted)
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
7ffd00100000-7ffd00102000 r--p 00000000 00:00 0 [vvar]";
        assert_eq!(
            anonymous_writable(maps),
            vec![(0x55d0c1000000, 0x55d0c1021000), (0x7f0000000000, 0x7f0000004000), (0x7ffd00000000, 0x7ffd00021000)]
        );
    }
}
