//! From `RawConfig` plus environment to a checked, typed `Config` (the checks, one function per
//! concern, are in `checks`). Every error names the setting (with the variable it came from),
//! the bad value and what is allowed.

use super::checks::{self, bool_or_default, given_or_default, Sources};
use super::raw::{FromEnv, RawConfig};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use super::values::{
    parse_store, ApiToken, GivenPasswords, MaxLag, Names, RouterSplice, StoreAccess, StoreConfig, TlsConfig,
};

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
    /// TLS and the user for an etcd store (empty for `file`).
    pub store_access: StoreAccess,
    pub replicas: usize,
    pub run_as: String,
    pub bin_dir: Option<PathBuf>,
    pub listen: IpAddr,
    pub base_port: Option<u16>,
    pub port: u16,
    pub ro_port: u16,
    /// Where each member's HTTP API listens; `api_port` `None`: the command's default.
    pub api_listen: IpAddr,
    pub api_port: Option<u16>,
    /// Allows actions over the HTTP API; `None`: they are off.
    pub api_token: Option<ApiToken>,
    pub allow: Vec<String>,
    pub tls: TlsConfig,
    pub ro_max_lag: MaxLag,
    pub ro_fallback: pgrepl_router::RoFallback,
    pub rw_wait: Duration,
    pub router_splice: RouterSplice,
    pub destroy_on_restart: bool,
    /// For a fixed-role replica (the container image): the primary it follows.
    pub upstream_host: Option<String>,
    pub upstream_port: u16,
    /// A fixed-role replica becomes a primary.
    pub promote: bool,
    pub loop_wait: Duration,
    pub ttl: Duration,
    pub failover: pgrepl_core::FailoverSpec,
    pub primary_start_timeout: Duration,
    pub names: Names,
    pub passwords: GivenPasswords,
    pub parameters: BTreeMap<String, String>,
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

/// Checks everything and fills in defaults. `env` only serves to name variables in errors.
pub fn validate(raw: &RawConfig, env: &[FromEnv]) -> Result<Config, ConfigError> {
    let src = Sources(env);
    let (names, passwords) = checks::names_and_passwords(&raw.database, &src)?;
    let checks::Cluster { cluster, store, replicas, run_as } = checks::cluster(raw, &src)?;
    let store_access = checks::store_access(raw, &store, &src)?;
    let checks::Network { listen, base_port, port, ro_port, allow, upstream_host, upstream_port, api_listen, api_port } =
        checks::network(raw, &src)?;
    let checks::Router { ro_max_lag, ro_fallback, router_splice, rw_wait } = checks::router(raw, &src)?;
    let checks::Timing { loop_wait, ttl, primary_start_timeout, failover } = checks::timing(raw, &src)?;
    let parameters = checks::parameters(raw, &src)?;
    let api_token = checks::api_token(raw, &src)?;
    let tls = checks::tls(raw, &src, listen)?;
    checks::parameters_leave_tls(&parameters, &tls)?;
    Ok(Config {
        cluster,
        store,
        store_access,
        replicas,
        run_as,
        bin_dir: raw.bin_dir.as_ref().map(PathBuf::from),
        listen,
        base_port,
        port,
        ro_port,
        api_listen,
        api_port,
        api_token,
        allow,
        tls,
        ro_max_lag,
        ro_fallback,
        rw_wait,
        router_splice,
        destroy_on_restart: bool_or_default(raw.destroy_on_restart, "destroy_on_restart"),
        upstream_host,
        upstream_port,
        promote: bool_or_default(raw.promote, "promote"),
        loop_wait,
        ttl,
        failover,
        primary_start_timeout,
        names,
        passwords,
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
    if !parse_store(before_store).is_ok_and(|before| before.same_place(&now.store)) {
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
    use super::super::values::{parse_bytes, parse_cidr, parse_duration, AppNames};
    use super::*;

    fn env_config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = read_env(|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string()))?;
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
    fn a_zero_clock_is_refused_as_zero_and_a_word_as_not_a_duration() {
        let raw = RawConfig { loop_wait: Some("0s".into()), ..RawConfig::default() };
        let err = validate(&raw, &[]).unwrap_err();
        assert_eq!(err.setting, "loop_wait");
        assert!(err.to_string().contains("\"0s\" is not allowed; it must be more than zero"), "{err}");
        let raw = RawConfig { ttl: Some("soon".into()), ..RawConfig::default() };
        assert!(validate(&raw, &[]).unwrap_err().to_string().contains("\"soon\" is not a duration"));
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
        assert_eq!(c.store, StoreConfig::Etcd { endpoints: vec!["127.0.0.1:2379".into()], tls: false });
        let c = env_config(&[("PGREPL_STORE", "etcd://etcd-1.example:2379, 10.0.0.2:2379,[::1]:2379")]).unwrap();
        assert_eq!(
            c.store,
            StoreConfig::Etcd {
                endpoints: vec!["etcd-1.example:2379".into(), "10.0.0.2:2379".into(), "[::1]:2379".into()],
                tls: false,
            }
        );
        assert_eq!(c.store.to_string(), "etcd://etcd-1.example:2379,10.0.0.2:2379,[::1]:2379");
        let raw = RawConfig { store: Some("etcd://h:1".into()), ..RawConfig::default() };
        assert_eq!(validate(&raw, &[]).unwrap().store, StoreConfig::Etcd { endpoints: vec!["h:1".into()], tls: false });
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
        let env = |vars: &[(&str, &str)]| {
            read_env(|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string())).unwrap()
        };
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
