//! The two timeline facts SQL does not give: which timeline a standby has replayed (its
//! walsender's `IDENTIFY_SYSTEM` answers with it; `pg_wal`'s newest history file is only the
//! newest timeline the standby knows of, which it may never be able to follow), and the switch
//! points of the current timeline's history file.
//!
//! The replication connection is spoken by hand (startup, one simple query, terminate) over
//! the Unix socket, which `pg_hba.conf` trusts for replication: tokio-postgres cannot open
//! replication connections.

use super::Instance;
use crate::error::PgError;
use crate::wire;
use pgrepl_core::fork::{parse_history, TimelineSwitch};
use pgrepl_core::Timeline;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const LIMIT: Duration = Duration::from_secs(3);

impl Instance {
    /// The timeline of the last record this standby replayed (on a primary: its current
    /// timeline), from `IDENTIFY_SYSTEM` over a replication connection as `user`.
    pub async fn replay_timeline(&self, user: &str) -> Result<Timeline, PgError> {
        let doing =
            format!("ask the server on {} port {} for its replayed timeline", self.socket_dir.display(), self.port);
        let socket = self.socket_dir.join(format!(".s.PGSQL.{}", self.port));
        let row = match tokio::time::timeout(LIMIT, identify_system(&socket, user)).await {
            Ok(Ok(row)) => row,
            Ok(Err(e)) => return Err(PgError::Other(format!("{doing}: {e}"))),
            Err(_) => return Err(PgError::Timeout { doing, after: LIMIT }),
        };
        let text = row.get(1).cloned().flatten().unwrap_or_default();
        text.parse()
            .map(Timeline)
            .map_err(|_| PgError::Other(format!("{doing}: IDENTIFY_SYSTEM gave timeline {text:?}")))
    }

    /// The switch points of `timeline`'s history file in `pg_wal` (none for timeline 1, which
    /// has no history).
    pub fn timeline_history(&self, timeline: Timeline) -> Result<Vec<TimelineSwitch>, PgError> {
        if timeline.0 <= 1 {
            return Ok(vec![]);
        }
        let path = self.data_dir.join("pg_wal").join(format!("{:08X}.history", timeline.0));
        let doing = format!("read the timeline history file {}", path.display());
        let text = std::fs::read_to_string(&path).map_err(|e| PgError::io(&doing, e))?;
        parse_history(&text).map_err(|e| PgError::Other(format!("{doing}: {e}")))
    }
}

/// One row of `IDENTIFY_SYSTEM` (system id, timeline, position, database), as text.
async fn identify_system(socket: &std::path::Path, user: &str) -> Result<Vec<Option<String>>, String> {
    let mut stream = UnixStream::connect(socket).await.map_err(|e| format!("connect: {e}"))?;
    let startup = wire::startup_message(&[("user", user), ("replication", "true"), ("application_name", "pgrepl")]);
    stream.write_all(&startup).await.map_err(|e| format!("send the startup message: {e}"))?;
    until_ready(&mut stream, "log in").await?;
    let query = b"IDENTIFY_SYSTEM\0";
    let mut packet = vec![b'Q'];
    packet.extend_from_slice(&((query.len() + 4) as i32).to_be_bytes());
    packet.extend_from_slice(query);
    stream.write_all(&packet).await.map_err(|e| format!("send IDENTIFY_SYSTEM: {e}"))?;
    let row = until_ready(&mut stream, "IDENTIFY_SYSTEM").await?.ok_or("IDENTIFY_SYSTEM returned no row")?;
    let _ = stream.write_all(&[b'X', 0, 0, 0, 4]).await;
    Ok(row)
}

/// Reads messages up to `ReadyForQuery`; returns the last data row seen. An error response, or
/// an authentication request other than "ok", is an error.
async fn until_ready(stream: &mut UnixStream, doing: &str) -> Result<Option<Vec<Option<String>>>, String> {
    let mut row = None;
    loop {
        let mut header = [0u8; 5];
        stream.read_exact(&mut header).await.map_err(|e| format!("{doing}: read: {e}"))?;
        let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let len = usize::try_from(len)
            .ok()
            .filter(|l| (4..1 << 20).contains(l))
            .ok_or(format!("{doing}: bad message length {len}"))?;
        let mut body = vec![0u8; len - 4];
        stream.read_exact(&mut body).await.map_err(|e| format!("{doing}: read: {e}"))?;
        match header[0] {
            b'Z' => return Ok(row),
            b'E' => return Err(format!("{doing}: the server said: {}", error_message(&body))),
            b'R' if body.get(..4) != Some(&[0, 0, 0, 0]) => {
                return Err(format!(
                    "{doing}: the server asks for a password on its local socket (pg_hba.conf should trust it)"
                ))
            }
            b'D' => row = Some(data_row(&body).ok_or(format!("{doing}: malformed data row"))?),
            _ => {}
        }
    }
}

fn data_row(body: &[u8]) -> Option<Vec<Option<String>>> {
    let count = i16::from_be_bytes([*body.first()?, *body.get(1)?]);
    let mut at = 2;
    let mut values = Vec::new();
    for _ in 0..count {
        let len = i32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        if len < 0 {
            values.push(None);
            continue;
        }
        let end = at + usize::try_from(len).ok()?;
        values.push(Some(String::from_utf8_lossy(body.get(at..end)?).into_owned()));
        at = end;
    }
    Some(values)
}

/// The `M` (message) field of an ErrorResponse.
fn error_message(body: &[u8]) -> String {
    wire::error_field(body, b'M').unwrap_or("an error without a message").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_row_reads_text_and_nulls() {
        let mut body = 3i16.to_be_bytes().to_vec();
        for value in [Some("7312"), Some("2"), None] {
            match value {
                Some(v) => {
                    body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    body.extend_from_slice(v.as_bytes());
                }
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        assert_eq!(data_row(&body), Some(vec![Some("7312".into()), Some("2".into()), None]));
        assert_eq!(data_row(&body[..body.len() - 6]), None, "cut short");
    }

    #[test]
    fn an_error_response_gives_its_message() {
        let body = b"SERROR\0C28000\0Mno pg_hba.conf entry\0\0";
        assert_eq!(error_message(body), "no pg_hba.conf entry");
    }
}
