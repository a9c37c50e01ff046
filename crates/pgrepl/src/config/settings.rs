//! Every setting pgrepl knows, defined once in `SETTINGS`: its key in `pgrepl.toml`, the
//! environment variables that set it, its default, its meaning, and how a value from the
//! environment goes into `RawConfig`. Reading the environment (`env`), the names in error
//! messages, the defaults validation starts from, the README's configuration table and the test
//! kit's list of variables all come from this table. It checks text only as far as putting it
//! into `RawConfig` needs; `validate` judges the values.

use super::raw::RawConfig;
use DefaultValue::{Described, Value};

/// One setting.
pub struct Setting {
    /// Its key in `pgrepl.toml` (`database.user`), which is also its name in messages.
    pub key: &'static str,
    /// The variables that set it: pgrepl's own name first, then the seeds' aliases. The first
    /// one set wins.
    pub env: &'static [&'static str],
    /// What applies when it is not given, as the README shows it.
    pub default: DefaultValue,
    /// What it means: the README's line for it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub doc: &'static str,
    /// A password: each variable `NAME` also has a twin `NAME_FILE`, the path of a file that
    /// holds the value (as container secrets are given); `NAME` wins over `NAME_FILE`.
    pub secret: bool,
    /// An empty variable counts as not set (compose files write `NAME=`), so the next variable
    /// or the file's value applies; otherwise the empty text goes to `set`.
    pub empty_is_unset: bool,
    /// Puts a variable's value into the raw configuration; the error says what is wrong with
    /// the text (the caller names the setting and the variable).
    pub set: fn(&mut RawConfig, &str) -> Result<(), String>,
}

/// What a setting is when it is not given.
pub enum DefaultValue {
    /// A value, written as the file writes it (`1s`); validation starts from it.
    Value(&'static str),
    /// Something that is not one value (`generated`), in the README's words; validation decides.
    #[cfg_attr(not(test), allow(dead_code))]
    Described(&'static str),
}

/// Every setting, in the README's order.
pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "cluster",
        env: &["PGREPL_CLUSTER"],
        default: Value("pgrepl"),
        doc: "cluster name",
        secret: false,
        empty_is_unset: false,
        set: |r, v| text(&mut r.cluster, v),
    },
    Setting {
        key: "replicas",
        env: &["PGREPL_REPLICAS"],
        default: Value("1"),
        doc: "replicas of a new cluster (0–16)",
        secret: false,
        empty_is_unset: false,
        set: |r, v| whole_number(&mut r.replicas, v),
    },
    Setting {
        key: "run_as",
        env: &["PGREPL_RUN_AS"],
        default: Value("postgres"),
        doc: "OS user PostgreSQL (and pgrepl) run as when started as root",
        secret: false,
        empty_is_unset: false,
        set: |r, v| text(&mut r.run_as, v),
    },
    Setting {
        key: "bin_dir",
        env: &["PGREPL_PG_BIN_DIR"],
        default: Described("found"),
        doc: "PostgreSQL binaries (`pg_config --bindir`, `/usr/lib/postgresql/*/bin`, `/usr/local/pgsql/bin`)",
        secret: false,
        empty_is_unset: false,
        set: |r, v| text(&mut r.bin_dir, v),
    },
    Setting {
        key: "listen",
        env: &["PGREPL_LISTEN"],
        default: Value("127.0.0.1"),
        doc: "address the members listen on",
        secret: false,
        empty_is_unset: false,
        set: |r, v| text(&mut r.listen, v),
    },
    Setting {
        key: "base_port",
        env: &[],
        default: Described("free ports"),
        doc: "first member port; members use consecutive ports (also `--base-port`)",
        secret: false,
        empty_is_unset: false,
        set: |r, v| whole_number(&mut r.base_port, v),
    },
    Setting {
        key: "port",
        env: &["PGREPL_PORT"],
        default: Value("5432"),
        doc: "the read-write endpoint (also `--port`)",
        secret: false,
        empty_is_unset: false,
        set: |r, v| whole_number(&mut r.port, v),
    },
    Setting {
        key: "ro_port",
        env: &["PGREPL_RO_PORT"],
        default: Value("5433"),
        doc: "the read-only endpoint (also `--ro-port`)",
        secret: false,
        empty_is_unset: false,
        set: |r, v| whole_number(&mut r.ro_port, v),
    },
    Setting {
        key: "api_listen",
        env: &["PGREPL_API_LISTEN"],
        default: Described("the `listen` address"),
        doc: "address of each member's HTTP API (health checks, `/metrics`, `/cluster`)",
        secret: false,
        empty_is_unset: true,
        set: |r, v| text(&mut r.api_listen, v),
    },
    Setting {
        key: "api_port",
        env: &["PGREPL_API_PORT"],
        default: Described("8008 for `pgrepl node`; a free port per member for `pgrepl up`"),
        doc: "port of each member's HTTP API (`0`: a free port)",
        secret: false,
        empty_is_unset: true,
        set: |r, v| whole_number(&mut r.api_port, v),
    },
    Setting {
        key: "api_token",
        env: &["PGREPL_API_TOKEN"],
        default: Described("none: actions over HTTP are off"),
        doc: "bearer token for the HTTP API's actions (`POST /switchover`, `/pause`...; see docs/api.md), at least 16 characters; kept in the secrets file",
        secret: true,
        empty_is_unset: true,
        set: |r, v| text(&mut r.api_token, v),
    },
    Setting {
        key: "rw_wait",
        env: &["PGREPL_RW_WAIT"],
        default: Value("5s"),
        doc: "how long a new read-write connection waits for a primary (`0s`: refuse at once)",
        secret: false,
        empty_is_unset: false,
        set: |r, v| text(&mut r.rw_wait, v),
    },
    Setting {
        key: "ro_max_lag",
        env: &["PGREPL_RO_MAX_LAG"],
        default: Value("16MB"),
        doc: "most a replica may lag and still get reads: bytes (`16MB`) or time (`10s`)",
        secret: false,
        empty_is_unset: false,
        set: |r, v| text(&mut r.ro_max_lag, v),
    },
    Setting {
        key: "ro_fallback",
        env: &["PGREPL_RO_FALLBACK"],
        default: Value("primary"),
        doc: "where reads go when no replica qualifies: `primary` or `refuse`",
        secret: false,
        empty_is_unset: false,
        set: |r, v| text(&mut r.ro_fallback, v),
    },
    Setting {
        key: "router_splice",
        env: &["PGREPL_ROUTER_SPLICE"],
        default: Value("auto"),
        doc: "how the router moves bytes: `auto` (in the kernel where it may load its BPF program, else copied), \
              `kernel` (an error where it cannot), `copy`",
        secret: false,
        empty_is_unset: false,
        set: |r, v| text(&mut r.router_splice, v),
    },
    Setting {
        key: "allow",
        env: &["PGREPL_ALLOW", "ALLOW_IP_RANGE"],
        default: Described("loopback"),
        doc: "client CIDRs written into `pg_hba.conf` (`scram-sha-256`); comma-separated in the environment",
        secret: false,
        empty_is_unset: false,
        set: |r, v| {
            r.allow = Some(v.split([',', ' ']).filter(|s| !s.is_empty()).map(String::from).collect());
            Ok(())
        },
    },
    Setting {
        key: "tls.mode",
        env: &["PGREPL_TLS"],
        default: Value("on"),
        doc: "`on`: every member serves TLS (TLS 1.2 at least) with a certificate from the cluster CA, and replicas, `pg_basebackup` and `pg_rewind` verify it (`sslmode=verify-full`); `off`: no TLS at all (where it is terminated elsewhere)",
        secret: false,
        empty_is_unset: true,
        set: |r, v| text(&mut r.tls.mode, v),
    },
    Setting {
        key: "require_tls",
        env: &["PGREPL_REQUIRE_TLS"],
        default: Described("true when `listen` is not loopback (and TLS is on)"),
        doc: "`pg_hba.conf` lets every range but loopback in only over TLS (`hostssl`): a plain-TCP login is refused",
        secret: false,
        empty_is_unset: true,
        set: |r, v| boolean(&mut r.require_tls, v),
    },
    Setting {
        key: "tls.ca_cert",
        env: &["PGREPL_TLS_CA_CERT"],
        default: Described("`up`: made in `DIR/ca.crt`; `node`: required"),
        doc: "the cluster CA's certificate (PEM), the same on every host (`pgrepl ca init` makes one); kept in `DIR/ca.crt`",
        secret: true,
        empty_is_unset: true,
        set: |r, v| text(&mut r.tls.ca_cert, v),
    },
    Setting {
        key: "tls.ca_key",
        env: &["PGREPL_TLS_CA_KEY"],
        default: Described("`up`: made in `DIR/ca.key`; `node`: required"),
        doc: "its private key (PEM), from which each host issues its member's certificate; kept in `DIR/ca.key` (mode 0600)",
        secret: true,
        empty_is_unset: true,
        set: |r, v| text(&mut r.tls.ca_key, v),
    },
    Setting {
        key: "tls.ca_in_store",
        env: &["PGREPL_TLS_CA_IN_STORE"],
        default: Value("false"),
        doc: "`pgrepl node` with no CA given: the first member to start makes the cluster CA and keeps it in the store \
              (key `ca`), where every other member reads it, so no CA needs to be handed to each host (say Kubernetes \
              pods); the CA's key is then as secret as the store is (give etcd users or TLS)",
        secret: false,
        empty_is_unset: true,
        set: |r, v| boolean(&mut r.tls.ca_in_store, v),
    },
    Setting {
        key: "tls.cert_file",
        env: &["PGREPL_TLS_CERT_FILE"],
        default: Described("none: issued from the cluster CA"),
        doc: "absolute path of this member's own server certificate (PEM, signed by `tls.ca_file` itself), which replaces \
              the one issued from the cluster CA (say a Kubernetes Secret mounted as files); with `tls.key_file` and \
              `tls.ca_file`, all three or none; it must name the member's host; read again when it changes, and \
              PostgreSQL reloaded",
        secret: false,
        empty_is_unset: true,
        set: |r, v| text(&mut r.tls.cert_file, v),
    },
    Setting {
        key: "tls.key_file",
        env: &["PGREPL_TLS_KEY_FILE"],
        default: Described("none"),
        doc: "absolute path of its private key (PEM), readable by `run_as`",
        secret: false,
        empty_is_unset: true,
        set: |r, v| text(&mut r.tls.key_file, v),
    },
    Setting {
        key: "tls.ca_file",
        env: &["PGREPL_TLS_CA_FILE"],
        default: Described("none"),
        doc: "absolute path of the CA certificate (PEM) that signed `tls.cert_file`, the same on every member: \
              replicas and clients verify the members against it",
        secret: false,
        empty_is_unset: true,
        set: |r, v| text(&mut r.tls.ca_file, v),
    },
    Setting {
        key: "destroy_on_restart",
        env: &["PGREPL_DESTROY_ON_RESTART", "DESTROY_DATABASE_ON_RESTART"],
        default: Value("false"),
        doc: "a replica wipes its data and clones afresh each time its agent starts (never the primary)",
        secret: false,
        empty_is_unset: true,
        set: |r, v| boolean(&mut r.destroy_on_restart, v),
    },
    Setting {
        key: "upstream_host",
        env: &["PGREPL_UPSTREAM_HOST", "REPLICATE_FROM", "POSTGRESQL_MASTER_IP", "POSTGRESQL_MASTER_SERVICE_NAME"],
        default: Described("none"),
        doc: "for a fixed-role replica (container image): the primary it follows, a host name (resolved again at \
              each connection) or an address",
        secret: false,
        empty_is_unset: true,
        set: |r, v| text(&mut r.upstream_host, v),
    },
    Setting {
        key: "upstream_port",
        env: &["PGREPL_UPSTREAM_PORT", "REPLICATE_PORT"],
        default: Value("5432"),
        doc: "the port of `upstream_host`",
        secret: false,
        empty_is_unset: true,
        set: |r, v| whole_number(&mut r.upstream_port, v),
    },
    Setting {
        key: "promote",
        env: &["PGREPL_PROMOTE", "PROMOTE_MASTER"],
        default: Value("false"),
        doc: "a fixed-role replica (container image) becomes a primary, also while its upstream is down; \
              an empty variable means false",
        secret: false,
        empty_is_unset: false,
        set: |r, v| boolean_empty_false(&mut r.promote, v),
    },
    Setting {
        key: "store",
        env: &["PGREPL_STORE"],
        default: Value("file"),
        doc: "where cluster state lives: `file` (`DIR/store`), `etcd://HOST:PORT[,HOST:PORT...]` or, over TLS, \
              `etcds://HOST:PORT[,...]` (keys under `/pgrepl/<cluster>/`); fixed once the cluster exists (`etcd://` may \
              become `etcds://`), and `down --destroy` removes the keys",
        secret: false,
        empty_is_unset: false,
        set: |r, v| text(&mut r.store, v),
    },
    Setting {
        key: "store_tls_ca",
        env: &["PGREPL_STORE_TLS_CA"],
        default: Described("none: plain gRPC for `etcd://`; required for `etcds://`"),
        doc: "absolute path of the CA certificate (PEM) that signed etcd's server certificate; given, TLS is on \
              (also for `etcd://`); the system's roots are not used",
        secret: false,
        empty_is_unset: true,
        set: |r, v| text(&mut r.store_tls_ca, v),
    },
    Setting {
        key: "store_tls_cert",
        env: &["PGREPL_STORE_TLS_CERT"],
        default: Described("none"),
        doc: "absolute path of a client certificate (PEM) for an etcd started with `--client-cert-auth`; with \
              `store_tls_key`",
        secret: false,
        empty_is_unset: true,
        set: |r, v| text(&mut r.store_tls_cert, v),
    },
    Setting {
        key: "store_tls_key",
        env: &["PGREPL_STORE_TLS_KEY"],
        default: Described("none"),
        doc: "absolute path of its private key (PEM); the file must be mode 0600 and readable by `run_as`",
        secret: false,
        empty_is_unset: true,
        set: |r, v| text(&mut r.store_tls_key, v),
    },
    Setting {
        key: "store_user",
        env: &["PGREPL_STORE_USER"],
        default: Described("none: etcd without authentication"),
        doc: "etcd user, for an etcd with authentication on (`etcdctl auth enable`); its role needs readwrite on \
              `/pgrepl/<cluster>/`",
        secret: false,
        empty_is_unset: true,
        set: |r, v| text(&mut r.store_user, v),
    },
    Setting {
        key: "store_password",
        env: &["PGREPL_STORE_PASSWORD"],
        default: Described("none"),
        doc: "its password; kept in the secrets file",
        secret: true,
        empty_is_unset: true,
        set: |r, v| text(&mut r.store_password, v),
    },
    Setting {
        key: "loop_wait",
        env: &["PGREPL_LOOP_WAIT"],
        default: Value("1s"),
        doc: "agent cycle when nothing changes",
        secret: false,
        empty_is_unset: false,
        set: |r, v| text(&mut r.loop_wait, v),
    },
    Setting {
        key: "ttl",
        env: &["PGREPL_TTL"],
        default: Value("4s"),
        doc: "leader lease and member status lifetime (at least 3 × `loop_wait`); an unplanned failover takes \
              about this long",
        secret: false,
        empty_is_unset: false,
        set: |r, v| text(&mut r.ttl, v),
    },
    Setting {
        key: "automatic_failover",
        env: &["PGREPL_AUTOMATIC_FAILOVER"],
        default: Value("true"),
        doc: "replace a lost leader by the most advanced healthy replica",
        secret: false,
        empty_is_unset: false,
        set: |r, v| boolean(&mut r.automatic_failover, v),
    },
    Setting {
        key: "maximum_lag_on_failover",
        env: &["PGREPL_MAXIMUM_LAG_ON_FAILOVER"],
        default: Value("1MB"),
        doc: "a replica further behind the lost leader may not replace it",
        secret: false,
        empty_is_unset: false,
        set: |r, v| text(&mut r.maximum_lag_on_failover, v),
    },
    Setting {
        key: "synchronous",
        env: &["PGREPL_SYNCHRONOUS"],
        default: Value("off"),
        doc: "`off`, `on` (one synchronous replica) or `quorum` (any one of the streaming replicas)",
        secret: false,
        empty_is_unset: false,
        set: |r, v| text(&mut r.synchronous, v),
    },
    Setting {
        key: "primary_start_timeout",
        env: &["PGREPL_PRIMARY_START_TIMEOUT"],
        default: Value("30s"),
        doc: "how long a leader tries to restart its crashed PostgreSQL in place before a replica takes over",
        secret: false,
        empty_is_unset: false,
        set: |r, v| text(&mut r.primary_start_timeout, v),
    },
    Setting {
        key: "database.user",
        env: &["PGREPL_USER", "POSTGRESQL_USER", "POSTGRES_USER"],
        default: Described("`app`*"),
        doc: "application user",
        secret: false,
        empty_is_unset: false,
        set: |r, v| text(&mut r.database.user, v),
    },
    Setting {
        key: "database.password",
        env: &["PGREPL_PASSWORD", "POSTGRESQL_PASSWORD", "POSTGRES_PASS"],
        default: Described("generated"),
        doc: "its password",
        secret: true,
        empty_is_unset: false,
        set: |r, v| text(&mut r.database.password, v),
    },
    Setting {
        key: "database.name",
        env: &["PGREPL_DATABASE", "POSTGRESQL_DATABASE", "POSTGRES_DBNAME"],
        default: Described("`app`*"),
        doc: "its database, owned by it",
        secret: false,
        empty_is_unset: false,
        set: |r, v| text(&mut r.database.name, v),
    },
    Setting {
        key: "database.admin_password",
        env: &["PGREPL_ADMIN_PASSWORD", "POSTGRESQL_ADMIN_PASSWORD"],
        default: Described("generated"),
        doc: "password of `postgres`",
        secret: true,
        empty_is_unset: false,
        set: |r, v| text(&mut r.database.admin_password, v),
    },
    Setting {
        key: "database.replication_user",
        env: &["PGREPL_REPLICATION_USER", "POSTGRESQL_MASTER_USER", "REPLICATION_USER"],
        default: Value("replicator"),
        doc: "replication role",
        secret: false,
        empty_is_unset: false,
        set: |r, v| text(&mut r.database.replication_user, v),
    },
    Setting {
        key: "database.replication_password",
        env: &["PGREPL_REPLICATION_PASSWORD", "POSTGRESQL_MASTER_PASSWORD", "REPLICATION_PASS"],
        default: Described("generated"),
        doc: "its password",
        secret: true,
        empty_is_unset: false,
        set: |r, v| text(&mut r.database.replication_password, v),
    },
    Setting {
        key: "parameters.max_connections",
        env: &["POSTGRESQL_MAX_CONNECTIONS"],
        default: Described("PostgreSQL's"),
        doc: "the PostgreSQL setting, a whole number (as if given under `[parameters]`)",
        secret: false,
        empty_is_unset: true,
        set: |r, v| count_parameter(r, "max_connections", v),
    },
    Setting {
        key: "parameters.max_prepared_transactions",
        env: &["POSTGRESQL_MAX_PREPARED_TRANSACTIONS"],
        default: Described("PostgreSQL's"),
        doc: "the PostgreSQL setting, a whole number (as if given under `[parameters]`)",
        secret: false,
        empty_is_unset: true,
        set: |r, v| count_parameter(r, "max_prepared_transactions", v),
    },
    Setting {
        key: "parameters.shared_buffers",
        env: &["POSTGRESQL_SHARED_BUFFERS"],
        default: Described("PostgreSQL's"),
        doc: "the PostgreSQL setting, a size such as `128MB` (as if given under `[parameters]`)",
        secret: false,
        empty_is_unset: true,
        set: |r, v| size_parameter(r, "shared_buffers", v),
    },
    Setting {
        key: "parameters.effective_cache_size",
        env: &["POSTGRESQL_EFFECTIVE_CACHE_SIZE"],
        default: Described("PostgreSQL's"),
        doc: "the PostgreSQL setting, a size such as `4GB` (as if given under `[parameters]`)",
        secret: false,
        empty_is_unset: true,
        set: |r, v| size_parameter(r, "effective_cache_size", v),
    },
];

/// The setting with this key.
pub fn setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// The default value of `key`, as the file writes it.
///
/// # Panics
/// When `key` has no `Value` default: a mistake in this table, which every test of a default
/// configuration finds.
pub fn default_value(key: &str) -> &'static str {
    match setting(key).map(|s| &s.default) {
        Some(Value(v)) => v,
        _ => panic!("setting {key} has no default value in SETTINGS"),
    }
}

fn text(field: &mut Option<String>, value: &str) -> Result<(), String> {
    *field = Some(value.to_string());
    Ok(())
}

fn whole_number(field: &mut Option<i64>, value: &str) -> Result<(), String> {
    *field = Some(value.trim().parse().map_err(|_| format!("{value:?} is not a whole number"))?);
    Ok(())
}

/// `true`/`false`, also `yes`/`no`, `on`/`off` and `1`/`0`, in any case.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn boolean(field: &mut Option<bool>, value: &str) -> Result<(), String> {
    *field = Some(parse_bool(value).ok_or_else(|| format!("{value:?} is not a boolean; use true or false"))?);
    Ok(())
}

/// A boolean whose empty value means false (`PROMOTE_MASTER=`, as compose files write it).
fn boolean_empty_false(field: &mut Option<bool>, value: &str) -> Result<(), String> {
    let b = if value.trim().is_empty() { Some(false) } else { parse_bool(value) };
    *field = Some(b.ok_or_else(|| {
        format!("{value:?} is not allowed; use true or false (also yes/no, on/off, 1/0; empty means false)")
    })?);
    Ok(())
}

/// An entry of `[parameters]` that PostgreSQL takes as a whole number.
fn count_parameter(raw: &mut RawConfig, name: &str, value: &str) -> Result<(), String> {
    let n: i64 = value.trim().parse().map_err(|_| format!("{value:?} is not a whole number"))?;
    raw.parameters.insert(name.to_string(), toml::Value::Integer(n));
    Ok(())
}

/// An entry of `[parameters]` that PostgreSQL takes as an amount of memory: a number with `B`,
/// `kB`, `MB`, `GB` or `TB`, or a bare number of 8kB pages.
fn size_parameter(raw: &mut RawConfig, name: &str, value: &str) -> Result<(), String> {
    let text = value.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() || !["", "B", "kB", "MB", "GB", "TB"].contains(&unit.trim_start()) {
        return Err(format!(
            "{value:?} is not a size; use a number with B, kB, MB, GB or TB, such as 128MB (a bare number counts 8kB pages)"
        ));
    }
    raw.parameters.insert(name.to_string(), toml::Value::String(text.to_string()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's configuration table, one row per setting (and one for `[parameters]`).
    pub fn readme_table() -> String {
        let code = |names: &[&str]| names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
        let mut out = String::from(
            "| file key | environment (pgrepl, then the seeds' names) | default | meaning |\n|---|---|---|---|\n",
        );
        for s in SETTINGS {
            let mut env = if s.env.is_empty() { "—".to_string() } else { code(s.env) };
            if s.secret {
                env.push_str(" (each `NAME` also as `NAME_FILE`)");
            }
            let empty = if s.empty_is_unset { "; an empty variable counts as not set" } else { "" };
            let default = match s.default {
                Value(v) => format!("`{v}`"),
                Described(text) => text.to_string(),
            };
            out.push_str(&format!("| `{}` | {env} | {default} | {}{empty} |\n", s.key, s.doc));
        }
        out.push_str("| `[parameters]` | — | — | extra PostgreSQL settings for every member |\n");
        out
    }

    const README: &str = include_str!("../../../../README.md");
    const BEGIN: &str = "<!-- settings:begin: generated from SETTINGS in crates/pgrepl/src/config/settings.rs -->\n\n";
    const END: &str = "\n<!-- settings:end -->";

    #[test]
    fn the_readme_table_is_the_settings_table() {
        let expected = readme_table();
        let found = README.split_once(BEGIN).and_then(|(_, rest)| rest.split_once(END)).map(|(table, _)| table);
        assert!(
            found == Some(expected.as_str()),
            "README.md's configuration table is not SETTINGS'; put this between the settings markers:\n\n{BEGIN}{expected}{END}\n"
        );
    }

    #[test]
    fn keys_and_variables_are_each_used_once() {
        let mut keys: Vec<_> = SETTINGS.iter().map(|s| s.key).collect();
        keys.sort_unstable();
        let count = keys.len();
        keys.dedup();
        assert_eq!(keys.len(), count, "a key appears twice in SETTINGS");
        let mut names: Vec<_> = SETTINGS.iter().flat_map(|s| s.env.iter()).collect();
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count, "a variable appears twice in SETTINGS");
        assert!(SETTINGS.iter().all(|s| !s.doc.contains('|')), "a doc would break the README's table");
    }

    #[test]
    fn every_value_default_goes_into_the_raw_configuration() {
        for s in SETTINGS {
            if let Value(v) = s.default {
                let mut raw = RawConfig::default();
                (s.set)(&mut raw, v).unwrap_or_else(|e| panic!("{}: default {v:?}: {e}", s.key));
                assert_ne!(raw, RawConfig::default(), "{} sets nothing", s.key);
            }
        }
    }
}
