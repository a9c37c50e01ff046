//! From `RawConfig` plus environment to a checked, typed `Config`. Every error names the
//! setting (with the variable it came from), the bad value and what is allowed.

use super::env::label;
use super::raw::{FromEnv, RawConfig};
use super::settings::{default_value, parse_bool};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// PostgreSQL's limit on identifiers (NAMEDATALEN - 1).
pub const MAX_NAME_BYTES: usize = 63;
/// Most replicas a cluster may have: each takes a WAL sender and a slot on the primary, whose
/// limits pgrepl sets to 20, leaving room for the two WAL senders of a clone under way.
pub const MAX_REPLICAS: i64 = 16;
/// The superuser pgrepl bootstraps; `POSTGRESQL_ADMIN_PASSWORD` is its password.
pub const ADMIN_USER: &str = "postgres";

/// A configuration that passed every check.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub cluster: String,
    pub store: StoreConfig,
    pub replicas: usize,
    pub run_as: String,
    pub bin_dir: Option<PathBuf>,
    pub listen: IpAddr,
    pub base_port: Option<u16>,
    pub port: u16,
    pub ro_port: u16,
    pub allow: Vec<String>,
    pub ro_max_lag: MaxLag,
    pub ro_fallback: pgrepl_router::RoFallback,
    pub rw_wait: Duration,
    pub router_splice: RouterSplice,
    pub destroy_on_restart: bool,
    pub loop_wait: Duration,
    pub ttl: Duration,
    pub failover: pgrepl_core::FailoverSpec,
    pub primary_start_timeout: Duration,
    pub names: Names,
    pub passwords: GivenPasswords,
    pub parameters: BTreeMap<String, String>,
}

/// How the router moves a connection's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouterSplice {
    /// In the kernel where the router may load the splice program, else copied.
    Auto,
    /// In the kernel; the router fails to start where it cannot.
    Kernel,
    /// Copied by the router.
    Copy,
}

/// Where the cluster's state lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreConfig {
    /// `DIR/store`: members on this one machine.
    File,
    /// An etcd cluster reached at any of these `HOST:PORT` endpoints.
    Etcd { endpoints: Vec<String> },
}

impl fmt::Display for StoreConfig {
    /// As it is written in the configuration: `file` or `etcd://HOST:PORT[,HOST:PORT...]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreConfig::File => f.write_str("file"),
            StoreConfig::Etcd { endpoints } => write!(f, "etcd://{}", endpoints.join(",")),
        }
    }
}

const STORE_FORMS: &str = "use file or etcd://HOST:PORT[,HOST:PORT...], such as etcd://127.0.0.1:2379";

/// Parses the `store` setting; the error says what is wrong with it.
pub fn parse_store(text: &str) -> Result<StoreConfig, String> {
    let text = text.trim();
    if text == "file" {
        return Ok(StoreConfig::File);
    }
    let Some(list) = text.strip_prefix("etcd://") else {
        return Err(format!("{text:?} is not allowed; {STORE_FORMS}"));
    };
    let endpoints = list
        .split(',')
        .map(|endpoint| {
            let endpoint = endpoint.trim();
            check_endpoint(endpoint)
                .map(|()| endpoint.to_string())
                .map_err(|why| format!("{text:?} is not allowed: {why}; {STORE_FORMS}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(StoreConfig::Etcd { endpoints })
}

/// One etcd endpoint: `HOST:PORT`, the host a name, an IPv4 address or a bracketed IPv6 one.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return Err(if endpoint.is_empty() {
            "an endpoint is empty".to_string()
        } else {
            format!("endpoint {endpoint:?} has no port")
        });
    };
    if !port.parse::<u16>().is_ok_and(|p| p >= 1) {
        return Err(format!("endpoint {endpoint:?} has no port from 1 to 65535"));
    }
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'),
    };
    if !host_ok {
        return Err(format!("endpoint {endpoint:?} does not start with a host name or address"));
    }
    Ok(())
}

/// How far behind a replica may be and still serve reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxLag {
    Bytes(u64),
    Time(Duration),
}

/// Parses a byte size: `16MB`, `512kB`, `1GB`, `1048576` (bytes), as PostgreSQL writes them.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// Role and database names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// The application user and its database, when the cluster has one.
    pub app: Option<AppNames>,
    pub replication_user: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppNames {
    pub user: String,
    pub database: String,
}

/// Passwords the configuration gives; the rest are generated (and kept) by `up`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GivenPasswords {
    pub user: Option<String>,
    pub admin: Option<String>,
    pub replication: Option<String>,
}

impl fmt::Debug for GivenPasswords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |p: &Option<String>| if p.is_some() { "<given>" } else { "<none>" };
        f.debug_struct("GivenPasswords")
            .field("user", &shown(&self.user))
            .field("admin", &shown(&self.admin))
            .field("replication", &shown(&self.replication))
            .finish()
    }
}

/// A setting that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    /// e.g. `database.user (POSTGRESQL_USER)`.
    pub setting: String,
    /// What is wrong and what is allowed instead.
    pub problem: String,
}

pub(super) fn bad(setting: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError { setting: setting.into(), problem: problem.into() }
}

/// Parses `1s`, `500ms`, `2m`, `1h`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n * 60)),
        "h" => Some(Duration::from_secs(n * 3600)),
        _ => None,
    }
}

/// Checks a CIDR range such as `10.0.0.0/8` or `::1/128`; a bare address means one host.
pub fn parse_cidr(text: &str) -> Option<String> {
    let text = text.trim();
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = match prefix {
        Some(p) => p.parse().ok().filter(|p| *p <= max)?,
        None => max,
    };
    Some(format!("{ip}/{prefix}"))
}

fn check_name(setting: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(bad(setting, "is empty; give a name of 1 to 63 bytes"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(bad(
            setting,
            format!("{name:?} is {} bytes long; PostgreSQL names are at most {MAX_NAME_BYTES} bytes", name.len()),
        ));
    }
    if name.contains('\0') || name.chars().any(char::is_control) {
        return Err(bad(setting, format!("{name:?} holds control characters, which names may not")));
    }
    Ok(())
}

fn check_password(setting: &str, password: &str) -> Result<(), ConfigError> {
    if password.is_empty() {
        return Err(bad(setting, "is empty; give a non-empty password or leave it unset to have one generated"));
    }
    if password.contains(['\n', '\r', '\0']) {
        return Err(bad(setting, "holds a line break or NUL, which passwords may not"));
    }
    Ok(())
}

fn port(setting: &str, value: i64) -> Result<u16, ConfigError> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| bad(setting, format!("{value} is not a port; use 1 to 65535")))
}

/// The value given, else the setting's default in `SETTINGS`.
fn given_or_default<'a>(value: &'a Option<String>, key: &str) -> &'a str {
    value.as_deref().unwrap_or_else(|| default_value(key))
}

fn number_or_default(value: Option<i64>, key: &str) -> i64 {
    value.unwrap_or_else(|| default_value(key).parse().expect("a number's default in SETTINGS is a number"))
}

fn bool_or_default(value: Option<bool>, key: &str) -> bool {
    value.or_else(|| parse_bool(default_value(key))).expect("a boolean's default in SETTINGS is true or false")
}

/// The name a field goes by in messages: its config key, plus the variable when it came from one.
struct Sources<'a>(&'a [FromEnv]);

impl Sources<'_> {
    fn label(&self, field: &str) -> String {
        label(self.0, field)
    }
}

/// Checks everything and fills in defaults. `env` only serves to name variables in errors.
pub fn validate(raw: &RawConfig, env: &[FromEnv]) -> Result<Config, ConfigError> {
    let src = Sources(env);
    let d = &raw.database;

    // S1: the application triple is all or nothing.
    let triple = [("database.user", &d.user), ("database.password", &d.password), ("database.name", &d.name)];
    let given: Vec<_> = triple.iter().filter(|(_, v)| v.is_some()).map(|(k, _)| src.label(k)).collect();
    if !given.is_empty() && given.len() < 3 {
        let missing: Vec<_> = triple.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| src.label(k)).collect();
        return Err(bad(
            given.join(", "),
            format!(
                "the application user, its password and its database go together, but {} {} not set; \
                 give all three (PGREPL_USER, PGREPL_PASSWORD, PGREPL_DATABASE or the seeds' POSTGRESQL_USER, \
                 POSTGRESQL_PASSWORD, POSTGRESQL_DATABASE), or none of them and POSTGRESQL_ADMIN_PASSWORD",
                missing.join(" and "),
                if missing.len() == 1 { "is" } else { "are" }
            ),
        ));
    }
    let replication_user = given_or_default(&d.replication_user, "database.replication_user").to_string();
    check_name(&src.label("database.replication_user"), &replication_user)?;
    let app = match (&d.user, &d.name) {
        (Some(user), Some(database)) => {
            check_name(&src.label("database.user"), user)?;
            check_name(&src.label("database.name"), database)?;
            for (other, what) in [(ADMIN_USER, "the admin user"), (replication_user.as_str(), "the replication user")] {
                if user == other {
                    return Err(bad(src.label("database.user"), format!("{user:?} is {what}; choose another name")));
                }
            }
            Some(AppNames { user: user.clone(), database: database.clone() })
        }
        // No triple and no admin password: a ready-to-use application user and database.
        _ if d.admin_password.is_none() => Some(AppNames { user: "app".into(), database: "app".into() }),
        _ => None,
    };
    if replication_user == ADMIN_USER {
        return Err(bad(src.label("database.replication_user"), "\"postgres\" is the admin user; choose another name"));
    }
    for (field, value) in [
        ("database.password", &d.password),
        ("database.admin_password", &d.admin_password),
        ("database.replication_password", &d.replication_password),
    ] {
        if let Some(v) = value {
            check_password(&src.label(field), v)?;
        }
    }

    let cluster = given_or_default(&raw.cluster, "cluster").to_string();
    if cluster.is_empty()
        || cluster.len() > 63
        || !cluster.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(bad(
            src.label("cluster"),
            format!("{cluster:?} is not allowed; use 1 to 63 letters, digits, '-' or '_'"),
        ));
    }
    let store =
        parse_store(given_or_default(&raw.store, "store")).map_err(|problem| bad(src.label("store"), problem))?;
    let replicas = match number_or_default(raw.replicas, "replicas") {
        n if (0..=MAX_REPLICAS).contains(&n) => n as usize,
        n => return Err(bad(src.label("replicas"), format!("{n} is not allowed; use 0 to {MAX_REPLICAS}"))),
    };
    let run_as = given_or_default(&raw.run_as, "run_as").to_string();
    if run_as.is_empty() || run_as == "root" {
        return Err(bad(
            src.label("run_as"),
            format!("{run_as:?} is not allowed; PostgreSQL must run as an unprivileged OS user such as postgres"),
        ));
    }
    let listen_text = given_or_default(&raw.listen, "listen");
    let listen: IpAddr =
        listen_text.parse().map_err(|_| bad(src.label("listen"), format!("{listen_text:?} is not an IP address")))?;
    let base_port = raw.base_port.map(|p| port("base_port", p)).transpose()?;
    let rw_port = port(&src.label("port"), number_or_default(raw.port, "port"))?;
    let ro_port = port(&src.label("ro_port"), number_or_default(raw.ro_port, "ro_port"))?;
    if rw_port == ro_port {
        return Err(bad("ro_port", format!("{ro_port} is also the read-write port; use two different ports")));
    }
    let allow = match &raw.allow {
        None => vec!["127.0.0.1/32".to_string(), "::1/128".to_string()],
        Some(ranges) => ranges
            .iter()
            .map(|r| {
                parse_cidr(r).ok_or_else(|| {
                    bad(
                        src.label("allow"),
                        format!("{r:?} is not an address range; use CIDR form such as 10.0.0.0/8 or 0.0.0.0/0"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let duration = |field: &str, value: &Option<String>| -> Result<Duration, ConfigError> {
        let text = given_or_default(value, field);
        parse_duration(text).filter(|d| !d.is_zero()).ok_or_else(|| {
            bad(src.label(field), format!("{text:?} is not a duration; use a number with ms, s, m or h, such as 1s"))
        })
    };
    let ro_max_lag_text = given_or_default(&raw.ro_max_lag, "ro_max_lag");
    let ro_max_lag = match (parse_bytes(ro_max_lag_text), parse_duration(ro_max_lag_text)) {
        (Some(bytes), _) => MaxLag::Bytes(bytes),
        (None, Some(time)) => MaxLag::Time(time),
        (None, None) => {
            return Err(bad(
                src.label("ro_max_lag"),
                format!(
                "{ro_max_lag_text:?} is neither a size nor a duration; use bytes such as 16MB or a time such as 10s"
            ),
            ))
        }
    };
    let ro_fallback = match given_or_default(&raw.ro_fallback, "ro_fallback") {
        "primary" => pgrepl_router::RoFallback::Primary,
        "refuse" => pgrepl_router::RoFallback::Refuse,
        other => return Err(bad(src.label("ro_fallback"), format!("{other:?} is not allowed; use primary or refuse"))),
    };
    let router_splice = match given_or_default(&raw.router_splice, "router_splice") {
        "auto" => RouterSplice::Auto,
        "kernel" => RouterSplice::Kernel,
        "copy" => RouterSplice::Copy,
        other => {
            return Err(bad(src.label("router_splice"), format!("{other:?} is not allowed; use auto, kernel or copy")))
        }
    };
    let rw_wait_text = given_or_default(&raw.rw_wait, "rw_wait");
    let rw_wait = parse_duration(rw_wait_text).filter(|d| *d <= Duration::from_secs(600)).ok_or_else(|| {
        bad(src.label("rw_wait"), format!("{rw_wait_text:?} is not allowed; use a duration from 0s to 10m, such as 5s"))
    })?;
    let loop_wait = duration("loop_wait", &raw.loop_wait)?;
    let ttl = duration("ttl", &raw.ttl)?;
    if loop_wait * 3 > ttl {
        return Err(bad(
            src.label("ttl"),
            format!("{ttl:?} is too short for loop_wait {loop_wait:?}: the lease must outlive three cycles (ttl >= 3 * loop_wait)"),
        ));
    }
    let primary_start_timeout = duration("primary_start_timeout", &raw.primary_start_timeout)?;
    let lag_text = given_or_default(&raw.maximum_lag_on_failover, "maximum_lag_on_failover");
    let maximum_lag_bytes = parse_bytes(lag_text).ok_or_else(|| {
        bad(
            src.label("maximum_lag_on_failover"),
            format!("{lag_text:?} is not a size; use bytes such as 1MB or 1048576"),
        )
    })?;
    let synchronous = match given_or_default(&raw.synchronous, "synchronous") {
        "off" => pgrepl_core::SyncMode::Off,
        "on" => pgrepl_core::SyncMode::On,
        "quorum" => pgrepl_core::SyncMode::Quorum,
        other => return Err(bad(src.label("synchronous"), format!("{other:?} is not allowed; use off, on or quorum"))),
    };
    let failover = pgrepl_core::FailoverSpec {
        automatic: bool_or_default(raw.automatic_failover, "automatic_failover"),
        maximum_lag_bytes,
        synchronous,
    };
    let parameters = raw
        .parameters
        .iter()
        .map(|(k, v)| {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => v.to_string(),
                _ => return Err(bad(format!("parameters.{k}"), "must be a string, number or boolean")),
            };
            if !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') || k.is_empty() {
                return Err(bad(format!("parameters.{k}"), "is not a PostgreSQL setting name"));
            }
            Ok((k.clone(), text))
        })
        .collect::<Result<_, _>>()?;

    Ok(Config {
        cluster,
        store,
        replicas,
        run_as,
        bin_dir: raw.bin_dir.as_ref().map(PathBuf::from),
        listen,
        base_port,
        port: rw_port,
        ro_port,
        allow,
        ro_max_lag,
        ro_fallback,
        rw_wait,
        router_splice,
        destroy_on_restart: bool_or_default(raw.destroy_on_restart, "destroy_on_restart"),
        loop_wait,
        ttl,
        failover,
        primary_start_timeout,
        names: Names { app, replication_user },
        passwords: GivenPasswords {
            user: d.password.clone(),
            admin: d.admin_password.clone(),
            replication: d.replication_password.clone(),
        },
        parameters,
    })
}

/// Refuses a change to a setting that cannot change once the cluster exists: `store` (the
/// cluster's state lives there; another store would hold a second, empty cluster) and, on etcd,
/// `cluster` (the name places the keys, `/pgrepl/<cluster>/`). `before` is the cluster
/// directory's configuration as written, `now` this start's.
pub fn check_unchanged(before: &RawConfig, now: &Config, env: &[FromEnv]) -> Result<(), ConfigError> {
    let src = Sources(env);
    let before_store = given_or_default(&before.store, "store");
    if parse_store(before_store).as_ref() != Ok(&now.store) {
        return Err(bad(
            src.label("store"),
            format!(
                "\"{}\" is not this cluster's store {before_store:?}; the store is chosen when a cluster is created and \
                 cannot change (its state lives there): leave store as it was, or create a new cluster in another --dir",
                now.store
            ),
        ));
    }
    let before_cluster = given_or_default(&before.cluster, "cluster");
    if matches!(now.store, StoreConfig::Etcd { .. }) && before_cluster != now.cluster {
        return Err(bad(
            src.label("cluster"),
            format!(
                "{:?} is not this cluster's name {before_cluster:?}; on etcd the name places the cluster's keys \
                 (/pgrepl/{before_cluster}/) and cannot change: leave cluster as it was, or create a new cluster in another --dir",
                now.cluster
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::env::{apply_env, read_env};
    use super::*;

    fn env_config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = read_env(|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string()));
        let mut raw = RawConfig::default();
        apply_env(&mut raw, &env)?;
        validate(&raw, &env)
    }

    #[test]
    fn nothing_given_means_an_app_user_and_generated_passwords() {
        let c = env_config(&[]).unwrap();
        assert_eq!(c.names.app, Some(AppNames { user: "app".into(), database: "app".into() }));
        assert_eq!(c.passwords, GivenPasswords::default());
        assert_eq!(c.replicas, 1);
        assert_eq!(c.allow, ["127.0.0.1/32", "::1/128"]);
    }

    #[test]
    fn the_seeds_variables_are_accepted() {
        let c = env_config(&[
            ("POSTGRESQL_USER", "user"),
            ("POSTGRESQL_PASSWORD", "pw"),
            ("POSTGRESQL_DATABASE", "userdb"),
            ("POSTGRESQL_ADMIN_PASSWORD", "admin"),
            ("POSTGRESQL_MASTER_USER", "master"),
            ("POSTGRESQL_MASTER_PASSWORD", "mpw"),
            ("ALLOW_IP_RANGE", "10.0.0.0/8"),
            ("DESTROY_DATABASE_ON_RESTART", "True"),
        ])
        .unwrap();
        assert_eq!(c.names.app, Some(AppNames { user: "user".into(), database: "userdb".into() }));
        assert_eq!(c.names.replication_user, "master");
        assert_eq!(c.passwords.admin.as_deref(), Some("admin"));
        assert_eq!(c.allow, ["10.0.0.0/8"]);
        assert!(c.destroy_on_restart);
    }

    #[test]
    fn pgrepl_names_win_over_the_seeds_names() {
        let c = env_config(&[("PGREPL_ADMIN_PASSWORD", "mine"), ("POSTGRESQL_ADMIN_PASSWORD", "seed")]).unwrap();
        assert_eq!(c.passwords.admin.as_deref(), Some("mine"));
    }

    #[test]
    fn only_the_admin_password_means_no_application_user() {
        let c = env_config(&[("POSTGRESQL_ADMIN_PASSWORD", "secret")]).unwrap();
        assert_eq!(c.names.app, None);
    }

    #[test]
    fn a_partial_triple_is_refused_and_says_what_is_missing() {
        let err = env_config(&[("POSTGRESQL_USER", "user")]).unwrap_err();
        assert_eq!(err.setting, "database.user (POSTGRESQL_USER)");
        assert!(err.problem.contains("database.password and database.name are not set"), "{err}");
        assert!(err.problem.contains("POSTGRESQL_ADMIN_PASSWORD"), "{err}");
    }

    #[test]
    fn names_over_63_bytes_are_refused() {
        let long = "u".repeat(64);
        let err = env_config(&[("POSTGRESQL_USER", &long), ("POSTGRESQL_PASSWORD", "p"), ("POSTGRESQL_DATABASE", "d")])
            .unwrap_err();
        assert_eq!(err.setting, "database.user (POSTGRESQL_USER)");
        assert!(err.problem.contains("64 bytes long"), "{err}");
        assert!(err.to_string().contains("at most 63"), "{err}");
        let ok = "u".repeat(63);
        env_config(&[("POSTGRESQL_USER", &ok), ("POSTGRESQL_PASSWORD", "p"), ("POSTGRESQL_DATABASE", "d")]).unwrap();
    }

    #[test]
    fn bad_values_name_the_setting_and_the_value() {
        let err = env_config(&[("ALLOW_IP_RANGE", "10.0.0.0/33")]).unwrap_err();
        assert_eq!(err.setting, "allow (ALLOW_IP_RANGE)");
        assert!(err.problem.contains("\"10.0.0.0/33\""), "{err}");
        let err = env_config(&[("DESTROY_DATABASE_ON_RESTART", "maybe")]).unwrap_err();
        assert!(err.to_string().contains("\"maybe\" is not a boolean"), "{err}");
        let err = env_config(&[("PGREPL_REPLICAS", "-1")]).unwrap_err();
        assert!(err.to_string().contains("-1 is not allowed; use 0 to 16"), "{err}");
        let err = env_config(&[("PGREPL_RUN_AS", "root")]).unwrap_err();
        assert!(err.to_string().starts_with("run_as (PGREPL_RUN_AS)"), "{err}");
    }

    #[test]
    fn durations_and_cidrs_parse() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("2"), None);
        assert_eq!(parse_cidr("10.1.2.3"), Some("10.1.2.3/32".into()));
        assert_eq!(parse_cidr("::1/128"), Some("::1/128".into()));
        assert_eq!(parse_cidr("example.com/8"), None);
    }

    #[test]
    fn router_settings_parse_and_bad_ones_are_named() {
        let c = env_config(&[]).unwrap();
        assert_eq!(c.ro_max_lag, MaxLag::Bytes(16 << 20));
        assert_eq!(c.rw_wait, Duration::from_secs(5));
        let c = env_config(&[("PGREPL_RO_MAX_LAG", "10s"), ("PGREPL_RO_FALLBACK", "refuse"), ("PGREPL_RW_WAIT", "0s")])
            .unwrap();
        assert_eq!(c.ro_max_lag, MaxLag::Time(Duration::from_secs(10)));
        assert_eq!(c.ro_fallback, pgrepl_router::RoFallback::Refuse);
        assert_eq!(c.rw_wait, Duration::ZERO);
        assert_eq!(c.router_splice, RouterSplice::Auto);
        assert_eq!(env_config(&[("PGREPL_ROUTER_SPLICE", "copy")]).unwrap().router_splice, RouterSplice::Copy);
        let err = env_config(&[("PGREPL_ROUTER_SPLICE", "fast")]).unwrap_err();
        assert_eq!(err.setting, "router_splice (PGREPL_ROUTER_SPLICE)");
        assert!(err.problem.contains("\"fast\" is not allowed; use auto, kernel or copy"), "{}", err.problem);
        let err = env_config(&[("PGREPL_RO_MAX_LAG", "lots")]).unwrap_err();
        assert_eq!(err.setting, "ro_max_lag (PGREPL_RO_MAX_LAG)");
        let err = env_config(&[("PGREPL_RO_FALLBACK", "random")]).unwrap_err();
        assert!(err.to_string().contains("use primary or refuse"), "{err}");
        assert_eq!(parse_bytes("512kB"), Some(512 << 10));
        assert_eq!(parse_bytes("7"), Some(7));
        assert_eq!(parse_bytes("7 parsecs"), None);
    }

    #[test]
    fn a_ttl_shorter_than_three_cycles_is_refused() {
        let raw = RawConfig { loop_wait: Some("5s".into()), ttl: Some("10s".into()), ..RawConfig::default() };
        let err = validate(&raw, &[]).unwrap_err();
        assert_eq!(err.setting, "ttl");
    }

    #[test]
    fn the_store_is_the_file_by_default_or_one_or_more_etcd_endpoints() {
        assert_eq!(env_config(&[]).unwrap().store, StoreConfig::File);
        assert_eq!(env_config(&[("PGREPL_STORE", "file")]).unwrap().store, StoreConfig::File);
        let c = env_config(&[("PGREPL_STORE", "etcd://127.0.0.1:2379")]).unwrap();
        assert_eq!(c.store, StoreConfig::Etcd { endpoints: vec!["127.0.0.1:2379".into()] });
        let c = env_config(&[("PGREPL_STORE", "etcd://etcd-1.example:2379, 10.0.0.2:2379,[::1]:2379")]).unwrap();
        assert_eq!(
            c.store,
            StoreConfig::Etcd {
                endpoints: vec!["etcd-1.example:2379".into(), "10.0.0.2:2379".into(), "[::1]:2379".into()]
            }
        );
        assert_eq!(c.store.to_string(), "etcd://etcd-1.example:2379,10.0.0.2:2379,[::1]:2379");
        let raw = RawConfig { store: Some("etcd://h:1".into()), ..RawConfig::default() };
        assert_eq!(validate(&raw, &[]).unwrap().store, StoreConfig::Etcd { endpoints: vec!["h:1".into()] });
    }

    #[test]
    fn a_bad_store_names_the_setting_the_value_and_the_forms_allowed() {
        for (value, why) in [
            ("consul://127.0.0.1:8500", "is not allowed; use file"),
            ("etcd://", "an endpoint is empty"),
            ("etcd://127.0.0.1", "endpoint \"127.0.0.1\" has no port"),
            ("etcd://127.0.0.1:0", "no port from 1 to 65535"),
            ("etcd://127.0.0.1:2379,", "an endpoint is empty"),
            ("etcd://http://127.0.0.1:2379", "does not start with a host name"),
            ("etcd://[::1:2379", "does not start with a host name"),
        ] {
            let err = env_config(&[("PGREPL_STORE", value)]).unwrap_err();
            assert_eq!(err.setting, "store (PGREPL_STORE)", "{value}");
            assert!(err.problem.contains(&format!("{value:?}")), "{err}");
            assert!(err.problem.contains(why), "{value}: {err}");
            assert!(err.problem.contains("etcd://HOST:PORT[,HOST:PORT...]"), "{err}");
        }
        let raw = RawConfig { store: Some("etcd".into()), ..RawConfig::default() };
        assert_eq!(validate(&raw, &[]).unwrap_err().setting, "store");
    }

    #[test]
    fn the_store_cannot_change_once_the_cluster_exists_nor_on_etcd_its_name() {
        let etcd = RawConfig { store: Some("etcd://127.0.0.1:2379".into()), ..RawConfig::default() };
        let file = RawConfig::default();
        let env = |vars: &[(&str, &str)]| read_env(|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string()));
        let now = |before: &RawConfig, vars: &[(&str, &str)]| {
            let env = env(vars);
            let mut raw = before.clone();
            apply_env(&mut raw, &env).unwrap();
            let config = validate(&raw, &env).unwrap();
            check_unchanged(before, &config, &env)
        };
        now(&file, &[]).unwrap();
        now(&file, &[("PGREPL_STORE", "file")]).unwrap();
        now(&etcd, &[]).unwrap();
        now(&etcd, &[("PGREPL_STORE", " etcd://127.0.0.1:2379 ")]).unwrap();
        // A file cluster may be renamed: the name only labels it.
        now(&file, &[("PGREPL_CLUSTER", "other")]).unwrap();

        let err = now(&file, &[("PGREPL_STORE", "etcd://127.0.0.1:2379")]).unwrap_err();
        assert_eq!(err.setting, "store (PGREPL_STORE)");
        assert!(err.problem.starts_with("\"etcd://127.0.0.1:2379\" is not this cluster's store \"file\""), "{err}");
        assert!(err.problem.contains("cannot change"), "{err}");
        let err = now(&etcd, &[("PGREPL_STORE", "file")]).unwrap_err();
        assert!(err.to_string().contains("\"file\" is not this cluster's store \"etcd://127.0.0.1:2379\""), "{err}");
        let err = now(&etcd, &[("PGREPL_STORE", "etcd://127.0.0.1:2380")]).unwrap_err();
        assert_eq!(err.setting, "store (PGREPL_STORE)");
        let err = now(&etcd, &[("PGREPL_CLUSTER", "other")]).unwrap_err();
        assert_eq!(err.setting, "cluster (PGREPL_CLUSTER)");
        assert!(err.problem.contains("\"other\" is not this cluster's name \"pgrepl\""), "{err}");
        assert!(err.problem.contains("/pgrepl/pgrepl/"), "{err}");
    }

    #[test]
    fn passwords_never_show_in_debug_output() {
        let c = env_config(&[("POSTGRESQL_ADMIN_PASSWORD", "hunter2")]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
