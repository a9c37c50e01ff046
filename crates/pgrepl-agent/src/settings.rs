//! What one agent needs to know to run its member: paths, names, timings. Built by the binary
//! from the validated configuration; the agent never reads configuration files itself.

use pgrepl_core::MemberName;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Settings {
    pub member: MemberName,
    /// The member's data directory, socket directory, port and server log.
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub log_file: PathBuf,
    /// libpq password file this agent writes for replication and `pg_rewind` connections.
    pub passfile: PathBuf,
    /// The cluster's secrets file (read whenever a password must be applied).
    pub secrets_file: PathBuf,
    pub bin_dir: Option<PathBuf>,
    pub admin_user: String,
    pub replication_user: String,
    /// Application user and database, created at bootstrap when set.
    pub app: Option<(String, String)>,
    /// Client CIDRs for `pg_hba.conf`.
    pub allow: Vec<String>,
    /// CIDRs of the members (replication and rewind connections).
    pub member_cidrs: Vec<String>,
    pub parameters: BTreeMap<String, String>,
    pub loop_wait: Duration,
    pub ttl: Duration,
    pub destroy_on_restart: bool,
    /// How long a leader whose PostgreSQL is down may try to start it before giving way.
    pub primary_start_timeout: Duration,
    /// How long a replica may fail to stream from the running leader before it rewinds (when
    /// the leader is on a newer timeline).
    pub stall_timeout: Duration,
    /// How long a replica may fail to stream from the running leader before its PostgreSQL is
    /// restarted (again at most once per this bound; shorter than `stall_timeout`).
    pub stream_restart_timeout: Duration,
    /// Whether its PostgreSQL runs with TLS (its certificate's source and installed files).
    pub tls: crate::tls::Tls,
    /// `pg_hba.conf` rules for every range but loopback are `hostssl`.
    pub require_tls: bool,
    /// Where this member's HTTP API answers (`host:port`), published in its status.
    pub api: Option<String>,
}
