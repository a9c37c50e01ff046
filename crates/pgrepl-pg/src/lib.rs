//! Everything that touches a PostgreSQL installation: finding its binaries, `initdb`, writing
//! `pgrepl.conf` and `pg_hba.conf`, start/stop/promote/reload through `pg_ctl`, cloning with
//! `pg_basebackup`, `pg_rewind`, and the SQL the agent needs (roles, slots, replication rows).
//!
//! This crate runs, it never decides: every function does one thing it is asked to do and
//! reports what happened. Which of them to call, and when, is `pgrepl-core`'s `decide()`.
//!
//! Errors are `PgError`; like every pgrepl error they are meant to be printed with `{:#}` so
//! that the cause chain (an I/O or SQL error under "what we were doing") shows.

mod binaries;
mod command;
mod error;
mod fsx;
mod instance;
mod os_user;
mod passfile;
pub mod scram;
pub mod sql;
pub mod wire;

pub use binaries::Binaries;
pub use error::PgError;
pub use fsx::write_atomic;
pub use instance::{server_state, ClientTls, Conninfo, HbaRules, Instance, ServerConf, ServerTls, StopMode};
/// The settings `pgrepl.conf` sets itself, which the cluster's parameters must leave alone.
pub mod managed {
    pub use crate::instance::{sets_itself, TLS_FILES, WIRING};
}
pub use os_user::{become_user, user_ids};
pub use passfile::{write_passfile, PassEntry};
