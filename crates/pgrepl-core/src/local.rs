//! What a member sees of its own PostgreSQL: the data directory on disk and the running server.
//! Plain values filled in by the agent through `pgrepl-pg`; no I/O here.

use crate::names::{Lsn, SystemId, Timeline};
use serde::{Deserialize, Serialize};

/// The state of a member's data directory on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataDir {
    /// Absent or empty: nothing to lose, ready for `initdb` or a clone.
    Missing,
    /// A data directory without `standby.signal`: it starts as a primary.
    Primary { system_id: SystemId },
    /// A data directory with `standby.signal`: it starts as a replica.
    Standby { system_id: SystemId },
}

impl DataDir {
    pub fn system_id(&self) -> Option<SystemId> {
        match self {
            DataDir::Missing => None,
            DataDir::Primary { system_id } | DataDir::Standby { system_id } => Some(*system_id),
        }
    }
}

/// Where a replica's WAL receiver is pointed (`primary_conninfo`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
}

/// The running server, as its own SQL answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Server {
    /// Not running, or not answering.
    Stopped,
    /// Running and not in recovery.
    Primary { timeline: Timeline, lsn: Lsn },
    /// Running in recovery.
    Replica {
        timeline: Timeline,
        /// Last WAL position received (falls back to replayed when nothing was received).
        receive_lsn: Lsn,
        replay_lsn: Lsn,
        /// The timeline of the last replayed record (what `replay_lsn` lies on; `timeline` is
        /// the newest one recovery knows of), when the server could say.
        replay_timeline: Option<Timeline>,
        /// From `primary_conninfo`; `None` when it is empty.
        upstream: Option<Upstream>,
        /// `pg_stat_wal_receiver.status = 'streaming'`.
        streaming: bool,
    },
}

impl Server {
    pub fn is_running(&self) -> bool {
        !matches!(self, Server::Stopped)
    }
}

/// A row of the primary's `pg_stat_replication`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationRow {
    pub application_name: String,
    pub client_addr: Option<String>,
    pub state: String,
    /// Last position the replica reported flushed to its disk (what a synchronous commit waits for).
    #[serde(default)]
    pub flush_lsn: Option<Lsn>,
    pub replay_lsn: Option<Lsn>,
    /// `replay_lag` in milliseconds, when PostgreSQL reports one.
    pub replay_lag_ms: Option<u64>,
    /// `sync_state`: `sync`, `quorum`, `potential` or `async` (what the health checks read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_state: Option<String>,
}

/// A physical replication slot on the primary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub name: String,
    pub active: bool,
}
