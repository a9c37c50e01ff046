//! Reading the server log for what the server said of its own troubles: the WAL receiver's
//! last failure to connect to its primary (a refused certificate, a refused login), which
//! PostgreSQL reports nowhere else (`pg_stat_wal_receiver` is empty while it fails).

use super::Instance;
use std::io::{Read, Seek, SeekFrom};

/// How much of the log's end is read.
const TAIL_BYTES: u64 = 64 * 1024;
const MARK: &str = "FATAL:  could not connect to the primary server: ";

impl Instance {
    /// The WAL receiver's last "could not connect to the primary server" error in the server
    /// log, if its last 64 KiB hold one.
    pub fn wal_receiver_error(&self) -> Option<String> {
        let mut file = std::fs::File::open(&self.log_file).ok()?;
        let len = file.metadata().ok()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES))).ok()?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).ok()?;
        wal_receiver_error_in(&String::from_utf8_lossy(&bytes))
    }
}

/// The last such error in `log`: the server's words after `FATAL:`, one line.
fn wal_receiver_error_in(log: &str) -> Option<String> {
    let line = log.lines().rev().find(|l| l.contains(MARK))?;
    let (_, said) = line.split_once("FATAL:  ")?;
    Some(said.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_connection_failure_of_the_wal_receiver_is_found() {
        let log = "2026-12-01 10:00:00.000 UTC [7] FATAL:  could not connect to the primary server: connection to server at \"10.0.0.1\", port 5432 failed: Connection refused\n\
                   2026-12-01 10:00:01.000 UTC [8] LOG:  waiting for WAL to become available at 0/3000000\n\
                   2026-12-01 10:00:02.000 UTC [9] FATAL:  could not connect to the primary server: connection to server at \"10.0.0.1\", port 5432 failed: SSL error: certificate verify failed\n\
                   2026-12-01T10:00:03Z WARN restarting PostgreSQL: its WAL receiver said: could not connect to the primary server: ...\n";
        assert_eq!(
            wal_receiver_error_in(log).as_deref(),
            Some("could not connect to the primary server: connection to server at \"10.0.0.1\", port 5432 failed: SSL error: certificate verify failed")
        );
        assert_eq!(wal_receiver_error_in("LOG:  started streaming WAL\n"), None);
    }
}
