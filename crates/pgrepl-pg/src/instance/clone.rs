//! Making this member's data directory a copy of another member's: a fresh clone with
//! `pg_basebackup`, or `pg_rewind` of a diverged one. Neither writes recovery configuration:
//! the caller follows with `write_conf`, `write_hba` and `set_standby_signal`.

use super::{Conninfo, Instance};
use crate::command::{combined_output, command, run};
use crate::error::PgError;
use crate::fsx::{create_dir_with_mode, missing_or_empty};

impl Instance {
    /// Clones `from` into the data directory with `pg_basebackup -X stream -c fast`, streaming
    /// WAL through the replication slot `slot` (which must exist on `from`). The password comes
    /// from `from.passfile`. The data directory must be missing or empty (`NotEmpty`
    /// otherwise); it ends with mode 0700. Waits as long as the copy takes.
    ///
    /// The copy is made in `<data_dir>.cloning` beside it and renamed into place when complete,
    /// so an interrupted clone (a killed process or container) never leaves a half-copied data
    /// directory that looks like a member's; a leftover `.cloning` directory is such an
    /// interrupted copy and is removed first. When the data directory is a mount point (it
    /// cannot be renamed over), the copy goes into it directly.
    pub async fn basebackup(&self, from: &Conninfo, slot: &str) -> Result<(), PgError> {
        if !missing_or_empty(&self.data_dir)? {
            return Err(PgError::NotEmpty { path: self.data_dir.clone() });
        }
        if let Some(parent) = self.data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| PgError::io(format!("create directory {}", parent.display()), e))?;
        }
        let target = if is_mount_point(&self.data_dir) { self.data_dir.clone() } else { self.cloning_dir() };
        if target != self.data_dir && target.exists() {
            std::fs::remove_dir_all(&target)
                .map_err(|e| PgError::io(format!("remove the interrupted clone {}", target.display()), e))?;
            tracing::info!(dir = %target.display(), "removed the copy of an interrupted clone");
        }
        let doing = format!("clone {}:{} into {}", from.host, from.port, self.data_dir.display());
        let mut cmd = command(&self.bins.path("pg_basebackup"));
        cmd.arg("-D")
            .arg(&target)
            .args(["-h", &from.host, "-p", &from.port.to_string(), "-U", &from.user])
            .args(["-X", "stream", "-c", "fast", "-S", slot, "--no-password"])
            .env("PGPASSFILE", &from.passfile)
            .env("PGAPPNAME", &from.application_name)
            .env("PGCONNECT_TIMEOUT", "10")
            .envs(from.tls.env());
        run(cmd, &doing, None).await?;
        if target != self.data_dir {
            std::fs::rename(&target, &self.data_dir).map_err(|e| {
                PgError::io(format!("move the clone {} to {}", target.display(), self.data_dir.display()), e)
            })?;
        }
        create_dir_with_mode(&self.data_dir, 0o700)?;
        tracing::info!(member = %self.name, from = %format!("{}:{}", from.host, from.port), slot, "cloned data directory with pg_basebackup");
        Ok(())
    }

    fn cloning_dir(&self) -> std::path::PathBuf {
        let mut name = self.data_dir.as_os_str().to_owned();
        name.push(".cloning");
        name.into()
    }

    /// Rewinds the (stopped) data directory to where it diverged from `from`, with
    /// `pg_rewind --source-server`; `from.user` must be a superuser whose password is in
    /// `from.passfile`. If the server did not shut down cleanly, `pg_rewind` runs crash
    /// recovery first; since single-user mode cannot run in standby mode, `standby.signal` is
    /// removed beforehand. `pg_rewind` copies `from`'s configuration files too: write this
    /// member's `pgrepl.conf` and `pg_hba.conf` again afterwards.
    pub async fn rewind(&self, from: &Conninfo) -> Result<(), PgError> {
        let source = format!("{}:{}", from.host, from.port);
        let doing = format!("rewind {} from {source}", self.data_dir.display());
        if self.postmaster_running() {
            return Err(PgError::Other(format!("{doing}: postgres is running on it; stop it first")));
        }
        self.set_standby_signal(false)?;
        let mut cmd = command(&self.bins.path("pg_rewind"));
        cmd.arg("--target-pgdata").arg(&self.data_dir).arg("--source-server").arg(from.to_conninfo_string());
        let out = run(cmd, &doing, None).await?;
        let text = combined_output(&out);
        let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let diverged = lines.iter().find(|l| l.contains("diverged")).copied().unwrap_or("");
        let result = lines.last().copied().unwrap_or("");
        tracing::info!(member = %self.name, from = %source, diverged, "rewound data directory with pg_rewind: {result}");
        Ok(())
    }
}

/// Whether `path` is a directory on another file system than its parent (a mount point).
fn is_mount_point(path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(dir), Some(Ok(parent))) = (std::fs::metadata(path), path.parent().map(std::fs::metadata)) else {
        return false;
    };
    dir.dev() != parent.dev()
}
