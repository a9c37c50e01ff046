//! One PostgreSQL instance of a member: its data directory, socket, port and log. Owns the
//! data directory's life on disk (state, initdb, move aside, removal); the server's start and
//! stop are in `control`, cloning and rewinding in `clone`, configuration files in `conf`,
//! connection strings in `conninfo`, what the running server says in `observe`, and its
//! timelines (the replayed one, the history of the current one) in `timeline`.

mod clone;
mod conf;
mod conninfo;
mod control;
mod log;
mod observe;
mod timeline;

pub use conf::{sets_itself, HbaRules, ServerConf, ServerTls, TLS_FILES, WIRING};
pub use conninfo::{ClientTls, Conninfo};
pub use observe::server_state;

use crate::binaries::Binaries;
use crate::command::{command, run, std_command, TAIL_LINES};
use crate::error::PgError;
use crate::fsx::{create_dir_with_mode, missing_or_empty, tail_lines};
use pgrepl_core::{DataDir, SystemId};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long `initdb` may take before it is considered stuck.
const INITDB_LIMIT: Duration = Duration::from_secs(600);

/// A member's PostgreSQL: where its files are and where it listens.
#[derive(Clone, Debug)]
pub struct Instance {
    pub bins: Binaries,
    pub data_dir: PathBuf,
    /// `unix_socket_directories`; `start()` creates it with mode 0700.
    pub socket_dir: PathBuf,
    /// `listen_addresses`, e.g. `127.0.0.1`.
    pub listen_address: String,
    pub port: u16,
    /// The server log; `pg_ctl -l` appends to it.
    pub log_file: PathBuf,
    /// The member name, used as `cluster_name` (shown by `ps`).
    pub name: String,
}

/// How `stop()` shuts the server down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Disconnect clients, write a shutdown checkpoint: a clean stop.
    Fast,
    /// Exit at once; the next start (or `pg_rewind`) does crash recovery.
    Immediate,
}

impl Instance {
    /// `Missing` if the data directory is absent or empty; otherwise its system identifier
    /// (from `pg_controldata`) and whether `standby.signal` makes it start as a replica.
    pub fn data_dir_state(&self) -> Result<DataDir, PgError> {
        if missing_or_empty(&self.data_dir)? {
            return Ok(DataDir::Missing);
        }
        let doing = format!("read the system identifier of {}", self.data_dir.display());
        let program = self.bins.path("pg_controldata");
        let out = std_command(&program)
            .arg(&self.data_dir)
            .output()
            .map_err(|e| PgError::io(format!("{doing}: run pg_controldata"), e))?;
        if !out.status.success() {
            return Err(crate::command::failed(&doing, "pg_controldata", &out, String::new()));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let system_id = parse_system_id(&text).ok_or_else(|| PgError::Command {
            doing: doing.clone(),
            status: "pg_controldata printed no \"Database system identifier\"".into(),
            output_tail: tail_lines(&text, TAIL_LINES),
        })?;
        if self.data_dir.join("standby.signal").exists() {
            Ok(DataDir::Standby { system_id })
        } else {
            Ok(DataDir::Primary { system_id })
        }
    }

    /// Creates a new cluster with `superuser` as its bootstrap superuser: local connections
    /// trusted, TCP ones by SCRAM, data checksums on, UTF8 with the C locale. Refuses
    /// (`NotEmpty`) if the data directory holds anything.
    pub async fn initdb(&self, superuser: &str) -> Result<(), PgError> {
        if !missing_or_empty(&self.data_dir)? {
            return Err(PgError::NotEmpty { path: self.data_dir.clone() });
        }
        create_dir_with_mode(&self.data_dir, 0o700)?;
        let doing = format!("initdb {}", self.data_dir.display());
        let mut cmd = command(&self.bins.path("initdb"));
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-U", superuser, "--auth-local=trust", "--auth-host=scram-sha-256"])
            .args(["--data-checksums", "-E", "UTF8", "--locale=C"]);
        run(cmd, &doing, Some(INITDB_LIMIT)).await?;
        tracing::info!(data_dir = %self.data_dir.display(), superuser, "initialized a new database cluster");
        Ok(())
    }

    /// Renames the data directory to `<data_dir>.<why>-<unix seconds>` and returns that path.
    /// Never deletes anything.
    pub fn move_aside(&self, why: &str) -> Result<PathBuf, PgError> {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let base = format!("{}.{why}-{secs}", self.data_dir.display());
        let mut target = PathBuf::from(&base);
        let mut n = 1;
        while target.exists() {
            n += 1;
            target = PathBuf::from(format!("{base}-{n}"));
        }
        std::fs::rename(&self.data_dir, &target)
            .map_err(|e| PgError::io(format!("move {} aside to {}", self.data_dir.display(), target.display()), e))?;
        tracing::info!(from = %self.data_dir.display(), to = %target.display(), "moved data directory aside");
        Ok(target)
    }

    /// Deletes the data directory entirely (only when configuration says so). Refuses while a
    /// server runs on it; Ok if it is already gone.
    pub fn remove_data(&self) -> Result<(), PgError> {
        if self.postmaster_running() {
            return Err(PgError::Other(format!(
                "remove {}: postgres is still running on it; stop it first",
                self.data_dir.display()
            )));
        }
        match std::fs::remove_dir_all(&self.data_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(PgError::io(format!("remove {}", self.data_dir.display()), e)),
        }
        tracing::info!(data_dir = %self.data_dir.display(), "removed data directory");
        Ok(())
    }

    /// True if `postmaster.pid` exists and names a live process. Where `/proc` exists, the
    /// process must also have the data directory as its working directory (as a postmaster
    /// does), so a stale pid file whose pid was reused (common after a container restart)
    /// does not count.
    pub fn postmaster_running(&self) -> bool {
        let Ok(text) = std::fs::read_to_string(self.data_dir.join("postmaster.pid")) else {
            return false;
        };
        let Some(pid) = text.lines().next().and_then(|l| l.trim().parse::<libc::pid_t>().ok()) else {
            return false;
        };
        if pid <= 0 {
            return false;
        }
        // SAFETY: signal 0 only checks that the process exists and may be signalled.
        let rc = unsafe { libc::kill(pid, 0) };
        let alive = rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        alive && self.is_our_postmaster(pid)
    }

    /// Removes a `postmaster.pid` that names no live postmaster of this data directory, left by
    /// a server that was killed (a container removed with `docker rm -f`, say). In a new PID
    /// namespace its pid often belongs to another process, even a thread of this one, which
    /// PostgreSQL takes for a running server and refuses to start. Only for callers that know
    /// no other host can run a server on this directory (a container holding its volume's
    /// lock). Returns whether a file was removed.
    pub fn remove_stale_pid(&self) -> Result<bool, PgError> {
        let path = self.data_dir.join("postmaster.pid");
        if !path.exists() || self.postmaster_running() {
            return Ok(false);
        }
        std::fs::remove_file(&path).map_err(|e| PgError::io(format!("remove stale {}", path.display()), e))?;
        tracing::info!(file = %path.display(), "removed the lock file of a server that no longer runs");
        Ok(true)
    }

    fn is_our_postmaster(&self, pid: libc::pid_t) -> bool {
        if !std::path::Path::new("/proc/self/cwd").exists() {
            return true; // no procfs: the pid check is all we have
        }
        let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) else {
            // Gone, or another user's process: not a postmaster we run.
            return false;
        };
        let data_dir = std::fs::canonicalize(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
        cwd == data_dir
    }
}

fn parse_system_id(controldata: &str) -> Option<SystemId> {
    controldata
        .lines()
        .find_map(|l| l.strip_prefix("Database system identifier:"))
        .and_then(|v| v.trim().parse().ok())
        .map(SystemId)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_id_is_read_from_controldata() {
        let text = "pg_control version number:            1300\n\
                    Database system identifier:           7312395133209421981\n\
                    Database cluster state:               in production\n";
        assert_eq!(parse_system_id(text), Some(SystemId(7_312_395_133_209_421_981)));
        assert_eq!(parse_system_id("nothing"), None);
    }
}
