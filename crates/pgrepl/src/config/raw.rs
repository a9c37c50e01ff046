//! The configuration as written: a TOML file (`pgrepl.toml`) parsed with unknown keys refused,
//! then overridden by environment variables (`env`, through `settings::SETTINGS`).
//! Nothing is checked here beyond syntax; `validate` turns this into a `Config`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `pgrepl.toml`. Every field is optional; defaults are applied in validation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Name of the cluster, shown by `pgrepl status`; in etcd its keys live under
    /// `/pgrepl/<cluster>/`. Fixed once the cluster exists when its store is etcd.
    pub cluster: Option<String>,
    /// Where the cluster's state lives: `file` (default; `DIR/store`, members on this machine)
    /// or `etcd://HOST:PORT[,HOST:PORT...]` (an etcd cluster). Fixed once the cluster exists.
    pub store: Option<String>,
    /// The CA certificate (PEM) that signed etcd's server certificate; given, the store is
    /// reached over TLS. Required for `etcds://`.
    pub store_tls_ca: Option<String>,
    /// A client certificate (PEM) for an etcd that requires one (`--client-cert-auth`).
    pub store_tls_cert: Option<String>,
    /// Its private key (PEM), a file of mode 0600.
    pub store_tls_key: Option<String>,
    /// The etcd user, for an etcd with authentication on.
    pub store_user: Option<String>,
    /// Its password. A secret: `up` and `node` keep it in the secrets file, not here.
    pub store_password: Option<String>,
    /// Number of replicas `up` creates for a new cluster (default 1).
    pub replicas: Option<i64>,
    /// OS user PostgreSQL runs as when pgrepl is started as root (default `postgres`).
    pub run_as: Option<String>,
    /// Directory of the PostgreSQL binaries (default: found with `pg_config` or under
    /// `/usr/lib/postgresql/*/bin`).
    pub bin_dir: Option<String>,
    /// Address the members listen on and reach each other at (default `127.0.0.1`).
    pub listen: Option<String>,
    /// First member port; members use consecutive ports from here (default: free ports).
    pub base_port: Option<i64>,
    /// Read-write endpoint port (default 5432), served by the router.
    pub port: Option<i64>,
    /// Read-only endpoint port (default 5433), served by the router.
    pub ro_port: Option<i64>,
    /// Address each member's HTTP API (health checks, metrics, `/cluster`) listens on
    /// (default: `listen`).
    pub api_listen: Option<String>,
    /// Port of each member's HTTP API: `0` picks a free one (default: 8008 for `pgrepl node`,
    /// a free port per member for `pgrepl up`).
    pub api_port: Option<i64>,
    /// The bearer token that allows actions over the HTTP API (`POST /switchover`...); unset,
    /// they are off. A secret: `up` and `node` keep it in the secrets file, not here.
    pub api_token: Option<String>,
    /// Most a replica may lag and still get read-only connections: bytes (`16MB`) or time
    /// (`10s`) (default `16MB`).
    pub ro_max_lag: Option<String>,
    /// Where read-only connections go when no replica qualifies: `primary` or `refuse`
    /// (default `primary`).
    pub ro_fallback: Option<String>,
    /// How long a new read-write connection waits for a primary before it gets an error
    /// (default `5s`; `0s` refuses at once).
    pub rw_wait: Option<String>,
    /// How the router moves a connection's bytes: `auto` (in the kernel where it may load its
    /// splice program, else copied), `kernel` or `copy` (default `auto`).
    pub router_splice: Option<String>,
    /// Client address ranges allowed to connect, in CIDR form (default loopback only).
    pub allow: Option<Vec<String>>,
    /// Wipe and re-clone a replica's data each time its agent starts (default false).
    pub destroy_on_restart: Option<bool>,
    /// For a fixed-role replica (the container image): the primary it follows, a host name
    /// (resolved again at each connection) or an address (default: none, a primary).
    pub upstream_host: Option<String>,
    /// The port of `upstream_host` (default 5432).
    pub upstream_port: Option<i64>,
    /// A fixed-role replica (the container image) becomes a primary, also while its upstream is
    /// down (default false).
    pub promote: Option<bool>,
    /// Pause between two agent cycles when nothing changes (default `1s`).
    pub loop_wait: Option<String>,
    /// Lifetime of the leader lease and of member status keys (default `4s`). A lost leader
    /// is replaced about this long after it was last heard from.
    pub ttl: Option<String>,
    /// Replace a lost leader by the most advanced healthy replica (default true); when false
    /// only `pgrepl promote`/`switchover`/`failover` change the leader.
    pub automatic_failover: Option<bool>,
    /// A replica further behind the lost leader than this may not replace it (default `1MB`).
    pub maximum_lag_on_failover: Option<String>,
    /// What a commit waits for: `off`, `on` (one synchronous replica) or `quorum` (any one of
    /// the streaming replicas) (default `off`).
    pub synchronous: Option<String>,
    /// How long a leader may try to restart its crashed PostgreSQL before a replica takes
    /// over (default `30s`).
    pub primary_start_timeout: Option<String>,
    /// `pg_hba.conf` lets in every range but loopback only over TLS (`hostssl`), so a plain-TCP
    /// login from an allowed range is refused (default: true when `listen` is not loopback and
    /// TLS is on).
    pub require_tls: Option<bool>,
    /// TLS: whether it is on, and the cluster CA `pgrepl node` is given.
    #[serde(default, skip_serializing_if = "RawTls::is_empty")]
    pub tls: RawTls,
    /// Names and passwords of the roles pgrepl creates.
    #[serde(default)]
    pub database: RawDatabase,
    /// Extra PostgreSQL settings, written last into every member's configuration.
    #[serde(default)]
    pub parameters: BTreeMap<String, toml::Value>,
}

/// `[database]`: the roles and database created at bootstrap.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    /// Application user (`POSTGRESQL_USER`).
    pub user: Option<String>,
    /// Application user's password (`POSTGRESQL_PASSWORD`).
    pub password: Option<String>,
    /// Application database, owned by `user` (`POSTGRESQL_DATABASE`).
    pub name: Option<String>,
    /// Password of the `postgres` superuser (`POSTGRESQL_ADMIN_PASSWORD`).
    pub admin_password: Option<String>,
    /// Replication role (`POSTGRESQL_MASTER_USER`, default `replicator`).
    pub replication_user: Option<String>,
    /// Replication role's password (`POSTGRESQL_MASTER_PASSWORD`).
    pub replication_password: Option<String>,
}

/// `[tls]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// `on` (default: every member serves TLS with a certificate from the cluster CA, and
    /// replicas verify it) or `off` (no TLS at all, say where it is terminated elsewhere).
    pub mode: Option<String>,
    /// The cluster CA's certificate, PEM (for `pgrepl node`; `up` makes its own).
    pub ca_cert: Option<String>,
    /// The cluster CA's private key, PEM. A secret: kept in `ca.key` (0600), not here.
    pub ca_key: Option<String>,
    /// `pgrepl node` with no CA given: the first member makes one and keeps it in the store.
    pub ca_in_store: Option<bool>,
    /// This member's own certificate (absolute path, PEM), replacing the issued one.
    pub cert_file: Option<String>,
    /// Its private key (absolute path, PEM).
    pub key_file: Option<String>,
    /// The CA that signed it (absolute path, PEM).
    pub ca_file: Option<String>,
}

impl RawTls {
    pub fn is_empty(&self) -> bool {
        *self == RawTls::default()
    }
}

impl RawConfig {
    /// Whether the file holds a secret: a password (also the store's) or the API token.
    pub fn has_passwords(&self) -> bool {
        let d = &self.database;
        d.password.is_some()
            || d.admin_password.is_some()
            || d.replication_password.is_some()
            || self.api_token.is_some()
            || self.store_password.is_some()
            || self.tls.ca_key.is_some()
    }
}

/// A value that came from the environment, remembered with the variable's name so that an
/// error can name it.
#[derive(Clone, Debug, PartialEq)]
pub struct FromEnv {
    pub variable: String,
    /// The key of the setting it sets.
    pub field: &'static str,
    pub value: String,
}
