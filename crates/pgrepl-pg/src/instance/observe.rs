//! Talking to the local server over its Unix socket: `connect`, and `observe`, which turns
//! what the server says about itself into a `pgrepl_core::Server`.

use super::conninfo::parse_upstream;
use super::Instance;
use crate::error::PgError;
use pgrepl_core::{Lsn, Server, Timeline};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

impl Instance {
    /// A client connected over the Unix socket in `socket_dir` as `user` to `dbname` (trusted
    /// by `pg_hba.conf`, so no password). The connection runs on a spawned tokio task.
    pub async fn connect(&self, user: &str, dbname: &str) -> Result<tokio_postgres::Client, PgError> {
        let doing = format!("connect to postgres on {} port {} as {user}", self.socket_dir.display(), self.port);
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(user)
            .dbname(dbname)
            .application_name("pgrepl")
            .connect_timeout(CONNECT_TIMEOUT);
        let connecting = config.connect(tokio_postgres::NoTls);
        let (client, connection) = match tokio::time::timeout(CONNECT_TIMEOUT * 2, connecting).await {
            Ok(result) => result.map_err(|e| PgError::sql(doing.clone(), e))?,
            Err(_) => return Err(PgError::Timeout { doing, after: CONNECT_TIMEOUT * 2 }),
        };
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "local postgres connection ended");
            }
        });
        Ok(client)
    }

    /// What the running server says about itself, connecting as `superuser` to `postgres`.
    /// `Server::Stopped` if it cannot be reached or does not answer.
    pub async fn observe(&self, superuser: &str) -> Server {
        let client = match self.connect(superuser, "postgres").await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(member = %self.name, error = %anyhow_like(&e), "postgres not reachable");
                return Server::Stopped;
            }
        };
        match server_state(&client).await {
            Ok(server) => server,
            Err(e) => {
                tracing::warn!(member = %self.name, error = %anyhow_like(&e), "postgres answered the connection but not the state query");
                Server::Stopped
            }
        }
    }
}

/// What the server behind `c` says about itself (the queries behind `Instance::observe`), for
/// callers that keep one connection open.
pub async fn server_state(c: &tokio_postgres::Client) -> Result<Server, PgError> {
    let doing = "read the server's role";
    let row = c.query_one("SELECT pg_is_in_recovery()", &[]).await.map_err(|e| PgError::sql(doing, e))?;
    let in_recovery: bool = row.try_get(0).map_err(|e| PgError::sql(doing, e))?;
    if !in_recovery {
        let doing = "read the primary's timeline and WAL position";
        let row = c
            .query_one("SELECT pg_current_wal_lsn()::text, substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)", &[])
            .await
            .map_err(|e| PgError::sql(doing, e))?;
        let lsn = parse_lsn(row.try_get(0).map_err(|e| PgError::sql(doing, e))?, doing)?;
        let tli_hex: String = row.try_get(1).map_err(|e| PgError::sql(doing, e))?;
        let timeline = u32::from_str_radix(&tli_hex, 16)
            .map_err(|_| PgError::Other(format!("{doing}: bad WAL file timeline {tli_hex:?}")))?;
        return Ok(Server::Primary { timeline: Timeline(timeline), lsn });
    }
    let doing = "read the replica's WAL positions";
    let row = c
        .query_one(
            "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, \
                    (SELECT status FROM pg_stat_wal_receiver), \
                    (SELECT received_tli FROM pg_stat_wal_receiver), \
                    (SELECT timeline_id FROM pg_control_checkpoint()), \
                    current_setting('primary_conninfo'), \
                    (SELECT max(('x' || substr(name, 1, 8))::bit(32)::int) FROM pg_ls_waldir() \
                      WHERE name ~ '^[0-9A-F]{8}\\.history$')",
            &[],
        )
        .await
        .map_err(|e| PgError::sql(doing, e))?;
    let get_lsn = |i: usize| -> Result<Option<Lsn>, PgError> {
        let text: Option<String> = row.try_get(i).map_err(|e| PgError::sql(doing, e))?;
        text.map(|t| parse_lsn(t, doing)).transpose()
    };
    let replay_lsn = get_lsn(1)?.unwrap_or_default();
    let receive_lsn = get_lsn(0)?.unwrap_or(replay_lsn);
    let status: Option<String> = row.try_get(2).map_err(|e| PgError::sql(doing, e))?;
    let received_tli: Option<i32> = row.try_get(3).map_err(|e| PgError::sql(doing, e))?;
    let checkpoint_tli: Option<i32> = row.try_get(4).map_err(|e| PgError::sql(doing, e))?;
    let conninfo: String = row.try_get(5).map_err(|e| PgError::sql(doing, e))?;
    let history_tli: Option<i32> = row.try_get(6).map_err(|e| PgError::sql(doing, e))?;
    // The control file's timeline moves only at a restartpoint, and the WAL receiver's only
    // while it streams; the newest timeline history file in pg_wal is the timeline recovery
    // follows (`recovery_target_timeline = latest`), also after the upstream is gone.
    let timeline = [received_tli, checkpoint_tli, history_tli]
        .into_iter()
        .flatten()
        .max()
        .and_then(|t| u32::try_from(t).ok())
        .unwrap_or(0);
    Ok(Server::Replica {
        timeline: Timeline(timeline),
        receive_lsn,
        replay_lsn,
        // Not in SQL; `Instance::replay_timeline` asks the server's walsender.
        replay_timeline: None,
        upstream: parse_upstream(&conninfo),
        streaming: status.as_deref() == Some("streaming"),
    })
}

fn parse_lsn(text: String, doing: &str) -> Result<Lsn, PgError> {
    text.parse().map_err(|e| PgError::Other(format!("{doing}: {e}")))
}

/// `{:#}`-style rendering of an error and its causes, for log fields.
fn anyhow_like(e: &PgError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
