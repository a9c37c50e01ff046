//! The SQL pgrepl runs on a server: replication status, physical slots, roles with their
//! passwords, databases, checkpoints. Every function takes a connected client and does one
//! idempotent thing; none decides anything. Passwords reach the server only as SCRAM verifiers.

use crate::error::PgError;
use pgrepl_core::{Lsn, ReplicationRow, Slot, SystemId, Timeline};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// The rows of `pg_stat_replication`: one per connected replica (or `pg_basebackup`).
/// `client_addr` is the bare address (`host(client_addr)`, no `/32`), `None` over a socket.
pub async fn replication_rows(c: &Client) -> Result<Vec<ReplicationRow>, PgError> {
    let doing = "read pg_stat_replication";
    let rows = c
        .query(
            "SELECT application_name, host(client_addr), state, replay_lsn::text, \
                    (extract(epoch FROM replay_lag) * 1000)::float8, flush_lsn::text, sync_state \
             FROM pg_stat_replication ORDER BY application_name",
            &[],
        )
        .await
        .map_err(|e| PgError::sql(doing, e))?;
    rows.iter()
        .map(|r| {
            let replay_lsn: Option<String> = r.try_get(3).map_err(|e| PgError::sql(doing, e))?;
            let lag: Option<f64> = r.try_get(4).map_err(|e| PgError::sql(doing, e))?;
            let flush_lsn: Option<String> = r.try_get(5).map_err(|e| PgError::sql(doing, e))?;
            Ok(ReplicationRow {
                application_name: r
                    .try_get::<_, Option<String>>(0)
                    .map_err(|e| PgError::sql(doing, e))?
                    .unwrap_or_default(),
                client_addr: r.try_get(1).map_err(|e| PgError::sql(doing, e))?,
                state: r.try_get::<_, Option<String>>(2).map_err(|e| PgError::sql(doing, e))?.unwrap_or_default(),
                flush_lsn: flush_lsn.and_then(|t| t.parse::<Lsn>().ok()),
                replay_lsn: replay_lsn.and_then(|t| t.parse::<Lsn>().ok()),
                replay_lag_ms: lag.filter(|ms| ms.is_finite() && *ms >= 0.0).map(|ms| ms.round() as u64),
                sync_state: r.try_get(6).map_err(|e| PgError::sql(doing, e))?,
            })
        })
        .collect()
}

/// The physical replication slots of the server.
pub async fn slots(c: &Client) -> Result<Vec<Slot>, PgError> {
    let doing = "list replication slots";
    let rows = c
        .query(
            "SELECT slot_name::text, active FROM pg_replication_slots \
             WHERE slot_type = 'physical' ORDER BY slot_name",
            &[],
        )
        .await
        .map_err(|e| PgError::sql(doing, e))?;
    rows.iter()
        .map(|r| {
            Ok(Slot {
                name: r.try_get(0).map_err(|e| PgError::sql(doing, e))?,
                active: r.try_get(1).map_err(|e| PgError::sql(doing, e))?,
            })
        })
        .collect()
}

/// Creates the physical slot `name`, reserving WAL at once; Ok if it exists already.
pub async fn create_slot(c: &Client, name: &str) -> Result<(), PgError> {
    let doing = format!("create replication slot {name}");
    let exists = c
        .query_opt("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", &[&name])
        .await
        .map_err(|e| PgError::sql(doing.clone(), e))?
        .is_some();
    if exists {
        return Ok(());
    }
    match c.execute("SELECT pg_create_physical_replication_slot($1, true)", &[&name]).await {
        Ok(_) => {
            tracing::info!(slot = name, "created replication slot");
            Ok(())
        }
        Err(e) if e.code() == Some(&SqlState::DUPLICATE_OBJECT) => Ok(()),
        Err(e) => Err(PgError::sql(doing, e)),
    }
}

/// Drops the slot `name`; Ok if there is none. Fails while a replica streams through it.
pub async fn drop_slot(c: &Client, name: &str) -> Result<(), PgError> {
    let doing = format!("drop replication slot {name}");
    let dropped = c
        .execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", &[&name])
        .await;
    match dropped {
        Ok(0) => Ok(()),
        Ok(_) => {
            tracing::info!(slot = name, "dropped replication slot");
            Ok(())
        }
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_OBJECT) => Ok(()),
        Err(e) => Err(PgError::sql(doing, e)),
    }
}

/// What a role is for; `ensure_role` adds the matching attributes and never removes any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleKind {
    /// An application user: `LOGIN`.
    Login,
    /// The replication role: `LOGIN REPLICATION`.
    Replication,
    /// The admin: `LOGIN SUPERUSER`.
    Superuser,
}

/// Creates the role `name` if absent, else alters it, with the attributes of `kind` and
/// `password`. The password is sent as a SCRAM-SHA-256 verifier computed here, so the
/// plaintext never reaches the server, its log or `pg_stat_activity`.
pub async fn ensure_role(c: &Client, name: &str, kind: RoleKind, password: &str) -> Result<(), PgError> {
    ensure_role_verifier(c, name, kind, &crate::scram::verifier(password)).await
}

/// As `ensure_role`, with the password's SCRAM verifier (which PostgreSQL stores as it is).
pub async fn ensure_role_verifier(c: &Client, name: &str, kind: RoleKind, verifier: &str) -> Result<(), PgError> {
    let doing = format!("set up role {name}");
    let exists = c
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
        .await
        .map_err(|e| PgError::sql(doing.clone(), e))?
        .is_some();
    let statement = role_statement(name, exists, kind, verifier);
    c.batch_execute(&statement).await.map_err(|e| PgError::sql(doing, e))
}

fn role_statement(name: &str, exists: bool, kind: RoleKind, verifier: &str) -> String {
    let verb = if exists { "ALTER" } else { "CREATE" };
    let attributes = match kind {
        RoleKind::Login => "LOGIN",
        RoleKind::Replication => "LOGIN REPLICATION",
        RoleKind::Superuser => "LOGIN SUPERUSER",
    };
    format!("{verb} ROLE {} WITH {attributes} PASSWORD {}", quote_ident(name), quote_literal(verifier))
}

/// Creates the database `name` owned by `owner` if there is none of that name.
pub async fn ensure_database(c: &Client, name: &str, owner: &str) -> Result<(), PgError> {
    let doing = format!("create database {name}");
    let exists = c
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(|e| PgError::sql(doing.clone(), e))?
        .is_some();
    if exists {
        return Ok(());
    }
    let statement = format!("CREATE DATABASE {} OWNER {}", quote_ident(name), quote_ident(owner));
    match c.batch_execute(&statement).await {
        Ok(()) => {
            tracing::info!(database = name, owner, "created database");
            Ok(())
        }
        Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => Ok(()),
        Err(e) => Err(PgError::sql(doing, e)),
    }
}

/// Lets role `name` read what `pg_rewind --source-server` reads (the four file functions its
/// documentation lists), so that a replica can rewind from this server with its replication
/// role rather than a superuser.
pub async fn grant_rewind(c: &Client, name: &str) -> Result<(), PgError> {
    let doing = format!("let role {name} run pg_rewind against this server");
    let statement = format!(
        "GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean), \
         pg_catalog.pg_stat_file(text, boolean), pg_catalog.pg_read_binary_file(text), \
         pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO {}",
        quote_ident(name)
    );
    c.batch_execute(&statement).await.map_err(|e| PgError::sql(doing, e))
}

/// What another server says of itself, asked over an ordinary connection (any login role):
/// its system identifier, its timeline, and whether it is in recovery.
pub async fn identity(c: &Client) -> Result<(SystemId, Timeline, bool), PgError> {
    let doing = "read the server's system identifier and timeline";
    let row = c
        .query_one(
            "SELECT pg_is_in_recovery(), (SELECT system_identifier FROM pg_control_system())::text, \
                    CASE WHEN pg_is_in_recovery() THEN (SELECT timeline_id FROM pg_control_checkpoint()) \
                         ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END",
            &[],
        )
        .await
        .map_err(|e| PgError::sql(doing, e))?;
    let in_recovery: bool = row.try_get(0).map_err(|e| PgError::sql(doing, e))?;
    let system_id: String = row.try_get(1).map_err(|e| PgError::sql(doing, e))?;
    let timeline: i32 = row.try_get(2).map_err(|e| PgError::sql(doing, e))?;
    let system_id = system_id
        .parse()
        .map(SystemId)
        .map_err(|_| PgError::Other(format!("{doing}: bad system identifier {system_id:?}")))?;
    Ok((system_id, Timeline(u32::try_from(timeline).unwrap_or(0)), in_recovery))
}

/// Forces a checkpoint. After a promotion this writes the new timeline into the control file,
/// which `pg_rewind` reads from its source.
pub async fn checkpoint(c: &Client) -> Result<(), PgError> {
    c.batch_execute("CHECKPOINT").await.map_err(|e| PgError::sql("run a checkpoint", e))
}

/// An SQL identifier, always double-quoted (so case and odd characters are kept as given).
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// An SQL string literal; uses the `E''` form when `s` holds a backslash, so it reads the same
/// whatever `standard_conforming_strings` says.
pub fn quote_literal(s: &str) -> String {
    let doubled = s.replace('\'', "''");
    if s.contains('\\') {
        format!("E'{}'", doubled.replace('\\', "\\\\"))
    } else {
        format!("'{doubled}'")
    }
}

/// The server's `synchronous_standby_names`.
pub async fn standby_names(c: &Client) -> Result<String, PgError> {
    let row = c
        .query_one("SHOW synchronous_standby_names", &[])
        .await
        .map_err(|e| PgError::sql("show synchronous_standby_names", e))?;
    row.try_get(0).map_err(|e| PgError::sql("show synchronous_standby_names", e))
}

/// The primary's current WAL write position.
pub async fn current_lsn(c: &Client) -> Result<Lsn, PgError> {
    let doing = "read pg_current_wal_lsn()";
    let row = c.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.map_err(|e| PgError::sql(doing, e))?;
    let text: String = row.try_get(0).map_err(|e| PgError::sql(doing, e))?;
    text.parse().map_err(|_| PgError::Other(format!("{doing}: bad LSN {text:?}")))
}

/// The parameters the server has read a new value of but applies only at its next restart.
pub async fn pending_restart(client: &Client) -> Result<Vec<String>, PgError> {
    let doing = "read pg_settings.pending_restart";
    let rows = client
        .query("SELECT name FROM pg_settings WHERE pending_restart ORDER BY name", &[])
        .await
        .map_err(|e| PgError::sql(doing, e))?;
    rows.iter().map(|r| r.try_get(0).map_err(|e| PgError::sql(doing, e))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("app"), "\"app\"");
        assert_eq!(quote_ident("My\"App"), "\"My\"\"App\"");
    }

    #[test]
    fn literals_are_quoted() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"a\b'c"), r"E'a\\b''c'");
    }

    #[test]
    fn role_statements_carry_only_the_verifier() {
        let verifier = postgres_protocol::password::scram_sha_256(b"s3cret");
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:"));
        let create = role_statement("repl", false, RoleKind::Replication, &verifier);
        assert_eq!(create, format!("CREATE ROLE \"repl\" WITH LOGIN REPLICATION PASSWORD '{verifier}'"));
        assert!(!create.contains("s3cret"));
        let alter = role_statement("postgres", true, RoleKind::Superuser, &verifier);
        assert!(alter.starts_with("ALTER ROLE \"postgres\" WITH LOGIN SUPERUSER PASSWORD 'SCRAM-SHA-256$"));
    }
}
