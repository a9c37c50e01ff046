//! Starting, stopping, reloading and promoting the server through `pg_ctl`. Each call waits
//! for `pg_ctl` to report the outcome and logs one line when the server's state changed.

use super::{Instance, StopMode};
use crate::command::{command, failed, output, run, TAIL_LINES};
use crate::error::PgError;
use crate::fsx::{create_dir_with_mode, file_len, tail_of_file};
use std::time::Duration;

/// Extra time given to `pg_ctl` itself beyond its own `-t` before we kill it.
const GRACE: Duration = Duration::from_secs(15);

impl Instance {
    /// Starts the server (`pg_ctl start -w`) and waits until it accepts connections. Creates
    /// the socket directory (0700) first. Ok at once if it already runs. On failure the error
    /// carries the tail of the server log; if the server is still starting when `timeout` is
    /// up, it is left running and the error is `Timeout`.
    pub async fn start(&self, timeout: Duration) -> Result<(), PgError> {
        if self.postmaster_running() {
            tracing::debug!(data_dir = %self.data_dir.display(), "postgres already running");
            return Ok(());
        }
        create_dir_with_mode(&self.socket_dir, 0o700)?;
        if let Some(dir) = self.log_file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| PgError::io(format!("create log directory {}", dir.display()), e))?;
        }
        let doing = format!("start postgres in {}", self.data_dir.display());
        let log_start = file_len(&self.log_file);
        let mut cmd = command(&self.bins.path("pg_ctl"));
        cmd.args(["start", "-w", "-s", "-t", &whole_seconds(timeout)])
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_file);
        let out = output(cmd, &doing, Some(timeout + GRACE)).await?;
        if out.status.success() {
            tracing::info!(member = %self.name, port = self.port, data_dir = %self.data_dir.display(), "started postgres");
            return Ok(());
        }
        let log_tail = tail_of_file(&self.log_file, log_start, TAIL_LINES);
        if self.postmaster_running() {
            return Err(PgError::Timeout {
                doing: format!("{doing} (it is still starting; see {})", self.log_file.display()),
                after: timeout,
            });
        }
        let mut err = failed(&doing, "pg_ctl", &out, log_tail.clone());
        if log_tail.contains("Address already in use") {
            if let PgError::Command { status, .. } = &mut err {
                *status = format!("port {} on {} is already in use", self.port, self.listen_address);
            }
        }
        Err(err)
    }

    /// Stops the server (`pg_ctl stop -w`) and waits until it is gone. Ok if it was not running.
    pub async fn stop(&self, mode: StopMode, timeout: Duration) -> Result<(), PgError> {
        if !self.postmaster_running() {
            return Ok(());
        }
        let mode_arg = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        let doing = format!("stop postgres in {} ({mode_arg})", self.data_dir.display());
        let mut cmd = command(&self.bins.path("pg_ctl"));
        cmd.args(["stop", "-w", "-s", "-m", mode_arg, "-t", &whole_seconds(timeout)]).arg("-D").arg(&self.data_dir);
        match run(cmd, &doing, Some(timeout + GRACE)).await {
            Ok(_) => {}
            // It went away on its own between our check and pg_ctl's.
            Err(PgError::Command { .. }) if !self.postmaster_running() => {}
            Err(e) => return Err(e),
        }
        tracing::info!(member = %self.name, mode = mode_arg, "stopped postgres");
        Ok(())
    }

    /// Makes the server re-read its configuration files (`pg_ctl reload`).
    pub async fn reload(&self) -> Result<(), PgError> {
        let doing = format!("reload the configuration of postgres in {}", self.data_dir.display());
        let mut cmd = command(&self.bins.path("pg_ctl"));
        cmd.args(["reload", "-s"]).arg("-D").arg(&self.data_dir);
        run(cmd, &doing, Some(GRACE)).await?;
        tracing::info!(member = %self.name, "reloaded postgres configuration");
        Ok(())
    }

    /// Ends recovery (`pg_ctl promote -w`): the replica becomes a primary on a new timeline.
    /// The new timeline reaches the control file only at the next checkpoint; run
    /// `sql::checkpoint` before pointing `pg_rewind` at this server.
    pub async fn promote(&self, timeout: Duration) -> Result<(), PgError> {
        let doing = format!("promote postgres in {}", self.data_dir.display());
        let mut cmd = command(&self.bins.path("pg_ctl"));
        cmd.args(["promote", "-w", "-s", "-t", &whole_seconds(timeout)]).arg("-D").arg(&self.data_dir);
        run(cmd, &doing, Some(timeout + GRACE)).await?;
        tracing::info!(member = %self.name, "promoted postgres to primary");
        Ok(())
    }
}

/// `pg_ctl -t` takes whole seconds; round up, at least 1.
fn whole_seconds(d: Duration) -> String {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::from_millis(0)), "1");
        assert_eq!(whole_seconds(Duration::from_millis(1500)), "2");
        assert_eq!(whole_seconds(Duration::from_secs(30)), "30");
    }
}
