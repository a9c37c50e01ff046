//! The checks behind `validate`, one function per concern: names and passwords, the cluster
//! (name, store, size, OS user), network and ports, the router, timing and failover, and
//! PostgreSQL parameters. Each turns its part of `RawConfig` into typed values, starting from
//! the defaults in `SETTINGS`, and fails on the first setting it cannot accept, naming it (with
//! the variable it came from), its value and what is allowed.

use super::env::label;
use super::raw::{FromEnv, RawConfig, RawDatabase};
use super::settings::{default_value, parse_bool};
use super::validate::{bad, ConfigError, ADMIN_USER, MAX_NAME_BYTES, MAX_REPLICAS};
use super::values::{
    parse_bytes, parse_cidr, parse_duration, parse_host, parse_store, ApiToken, AppNames, GivenCa, GivenPasswords,
    MaxLag, Names, RouterSplice, StoreAccess, StoreConfig, StoreTls, TlsConfig, API_TOKEN_MIN_CHARS,
};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// The name a setting goes by in messages: its key, plus the variable when it came from one.
pub(super) struct Sources<'a>(pub &'a [FromEnv]);

impl Sources<'_> {
    pub fn label(&self, key: &str) -> String {
        label(self.0, key)
    }
}

/// The value given, else the setting's default in `SETTINGS`.
pub(super) fn given_or_default<'a>(value: &'a Option<String>, key: &str) -> &'a str {
    value.as_deref().unwrap_or_else(|| default_value(key))
}

fn number_or_default(value: Option<i64>, key: &str) -> i64 {
    value.unwrap_or_else(|| default_value(key).parse().expect("a number's default in SETTINGS is a number"))
}

pub(super) fn bool_or_default(value: Option<bool>, key: &str) -> bool {
    value.or_else(|| parse_bool(default_value(key))).expect("a boolean's default in SETTINGS is true or false")
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

/// `tls.mode`, `require_tls` (default: TLS on and `listen` not loopback; refused with TLS off)
/// and the given CA (`tls.ca_cert` with `tls.ca_key`, or neither): a CA certificate, and a key
/// that is the certificate's.
pub(super) fn tls(raw: &RawConfig, src: &Sources, listen: IpAddr) -> Result<TlsConfig, ConfigError> {
    let mode = given_or_default(&raw.tls.mode, "tls.mode");
    let on = match mode.trim().to_ascii_lowercase().as_str() {
        "on" => true,
        "off" => false,
        _ => return Err(bad(src.label("tls.mode"), format!("{mode:?} is not allowed; use on or off"))),
    };
    let require = match raw.require_tls {
        Some(true) if !on => {
            return Err(bad(
                src.label("require_tls"),
                "is true while tls.mode is off: nobody could connect from beyond loopback; turn TLS on or leave require_tls unset",
            ))
        }
        Some(given) => given,
        None => on && !listen.is_loopback(),
    };
    let given_ca = match (&raw.tls.ca_cert, &raw.tls.ca_key) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(bad(src.label("tls.ca_key"), "is not set, but tls.ca_cert is; give both or neither"))
        }
        (None, Some(_)) => {
            return Err(bad(src.label("tls.ca_cert"), "is not set, but tls.ca_key is; give both or neither"))
        }
        (Some(cert), Some(key)) => {
            let ca = pgrepl_tls::Ca { cert_pem: cert.clone(), key_pem: key.clone() };
            match ca.check(std::time::SystemTime::now()) {
                Ok(()) => {}
                Err(pgrepl_tls::CaProblem::Unreadable(e)) => return Err(bad(src.label("tls.ca_cert"), e.to_string())),
                Err(pgrepl_tls::CaProblem::NotCa(subject)) => {
                    return Err(bad(
                        src.label("tls.ca_cert"),
                        format!("{subject} is not a CA certificate (give the CA's, as `pgrepl ca init` makes)"),
                    ))
                }
                Err(pgrepl_tls::CaProblem::NotItsKey) => {
                    return Err(bad(
                        src.label("tls.ca_key"),
                        "is not the private key of tls.ca_cert (or not a key in PEM)",
                    ))
                }
            }
            // A `_FILE` variable's text comes without its last line break; PEM files end with one.
            let pem = |t: &str| format!("{}\n", t.trim_end());
            Some(GivenCa { cert_pem: pem(cert), key_pem: pem(key) })
        }
    };
    let files = given_files(raw, src, on)?;
    if let (Some(_), Some(_)) = (&files, &given_ca) {
        return Err(bad(
            src.label("tls.ca_cert"),
            "is set, but tls.cert_file replaces the certificate issued from it; give tls.ca_cert and tls.ca_key, or \
             tls.cert_file, tls.key_file and tls.ca_file",
        ));
    }
    let ca_in_store = raw.tls.ca_in_store.unwrap_or(false);
    if ca_in_store {
        let conflict = if !on {
            Some("is true while tls.mode is off: there is no CA to keep")
        } else if given_ca.is_some() {
            Some("is true, but tls.ca_cert and tls.ca_key give the CA; give one or the other")
        } else if files.is_some() {
            Some("is true, but tls.cert_file replaces the certificate issued from a CA; give one or the other")
        } else {
            None
        };
        if let Some(why) = conflict {
            return Err(bad(src.label("tls.ca_in_store"), why));
        }
    }
    Ok(TlsConfig { on, require, given_ca, ca_in_store, files })
}

/// `tls.cert_file`, `tls.key_file` and `tls.ca_file`: all three or none, absolute paths, and
/// only with TLS on.
fn given_files(raw: &RawConfig, src: &Sources, on: bool) -> Result<Option<pgrepl_tls::TlsFiles>, ConfigError> {
    let given =
        [("tls.cert_file", &raw.tls.cert_file), ("tls.key_file", &raw.tls.key_file), ("tls.ca_file", &raw.tls.ca_file)];
    let set: Vec<&str> = given.iter().filter(|(_, v)| v.is_some()).map(|(k, _)| *k).collect();
    if set.is_empty() {
        return Ok(None);
    }
    if !on {
        return Err(bad(src.label(set[0]), "is set while tls.mode is off; turn TLS on or leave it unset"));
    }
    if let Some((missing, _)) = given.iter().find(|(_, v)| v.is_none()) {
        return Err(bad(
            src.label(missing),
            format!(
                "is not set, but {} {}; give tls.cert_file, tls.key_file and tls.ca_file (certificate, key, CA), all three or none",
                set.join(" and "),
                if set.len() == 1 { "is" } else { "are" }
            ),
        ));
    }
    let path = |key: &str, value: &Option<String>| {
        let text = value.as_deref().unwrap_or_default();
        match std::path::Path::new(text).is_absolute() {
            true => Ok(std::path::PathBuf::from(text)),
            false => Err(bad(
                src.label(key),
                format!("{text:?} is not an absolute path; give the file's absolute path (pgrepl's processes read it from another working directory)"),
            )),
        }
    };
    Ok(Some(pgrepl_tls::TlsFiles {
        cert: path("tls.cert_file", &raw.tls.cert_file)?,
        key: path("tls.key_file", &raw.tls.key_file)?,
        ca: path("tls.ca_file", &raw.tls.ca_file)?,
    }))
}

/// With TLS on, pgrepl sets the server's certificate files and `ssl`: `[parameters]` must not,
/// or replicas verifying the member against the cluster CA would refuse it.
pub(super) fn parameters_leave_tls(parameters: &BTreeMap<String, String>, tls: &TlsConfig) -> Result<(), ConfigError> {
    match parameters.keys().find(|k| tls.on && pgrepl_pg::managed::TLS_FILES.contains(&k.as_str())) {
        Some(key) => Err(bad(
            format!("parameters.{key}"),
            "is set by pgrepl while tls.mode is on (each member's certificate from the cluster CA, which replicas \
             verify); leave it out, or set tls.mode = off to run TLS yourself",
        )),
        None => Ok(()),
    }
}

/// `api_token`: unset (actions over HTTP are off), or at least `API_TOKEN_MIN_CHARS` characters
/// that fit in an `Authorization` header.
pub(super) fn api_token(raw: &RawConfig, src: &Sources) -> Result<Option<ApiToken>, ConfigError> {
    let Some(text) = &raw.api_token else { return Ok(None) };
    if text.chars().count() < API_TOKEN_MIN_CHARS {
        return Err(bad(
            src.label("api_token"),
            format!(
                "is {} characters long, too short to be hard to guess; use at least {API_TOKEN_MIN_CHARS} \
                 (such as the output of `openssl rand -hex 32`)",
                text.chars().count()
            ),
        ));
    }
    if !text.chars().all(|c| c.is_ascii_graphic()) {
        return Err(bad(
            src.label("api_token"),
            "holds a space, control or non-ASCII character, which an Authorization header cannot carry; use letters, digits and punctuation",
        ));
    }
    Ok(Some(ApiToken::new(text.clone())))
}

/// `[database]`: the roles' names and the passwords given. S1: the application user, its
/// password and its database are all or nothing.
pub(super) fn names_and_passwords(d: &RawDatabase, src: &Sources) -> Result<(Names, GivenPasswords), ConfigError> {
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
    let passwords = GivenPasswords {
        user: d.password.clone(),
        admin: d.admin_password.clone(),
        replication: d.replication_password.clone(),
    };
    Ok((Names { app, replication_user }, passwords))
}

/// The cluster: its name, its store, its size and the OS user its servers run as.
pub(super) struct Cluster {
    pub cluster: String,
    pub store: StoreConfig,
    pub replicas: usize,
    pub run_as: String,
}

pub(super) fn cluster(raw: &RawConfig, src: &Sources) -> Result<Cluster, ConfigError> {
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
    Ok(Cluster { cluster, store, replicas, run_as })
}

/// How the etcd store is reached: TLS (`etcds://` or `store_tls_ca`, with an optional client
/// certificate) and etcd's user. Paths must be absolute (agents and the router read them from
/// another working directory); the files themselves are read when the store is opened.
pub(super) fn store_access(raw: &RawConfig, store: &StoreConfig, src: &Sources) -> Result<StoreAccess, ConfigError> {
    let given = [
        ("store_tls_ca", &raw.store_tls_ca),
        ("store_tls_cert", &raw.store_tls_cert),
        ("store_tls_key", &raw.store_tls_key),
        ("store_user", &raw.store_user),
        ("store_password", &raw.store_password),
    ];
    let StoreConfig::Etcd { tls: etcds, .. } = store else {
        return match given.iter().find(|(_, v)| v.is_some()) {
            Some((key, _)) => Err(bad(
                src.label(key),
                "applies to an etcd store only, and the store is \"file\": set store to etcd:// or etcds://, or leave \
                 this unset",
            )),
            None => Ok(StoreAccess::default()),
        };
    };
    let path = |key: &str, value: &Option<String>| -> Result<Option<std::path::PathBuf>, ConfigError> {
        match value {
            None => Ok(None),
            Some(text) if std::path::Path::new(text).is_absolute() => Ok(Some(text.into())),
            Some(text) => Err(bad(
                src.label(key),
                format!("{text:?} is not an absolute path; give the file's absolute path (pgrepl's processes read it from another working directory)"),
            )),
        }
    };
    let ca = path("store_tls_ca", &raw.store_tls_ca)?;
    let cert = path("store_tls_cert", &raw.store_tls_cert)?;
    let key = path("store_tls_key", &raw.store_tls_key)?;
    let identity = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(bad(
                src.label("store_tls_key"),
                "is not set, but store_tls_cert is: a client certificate needs its key; set both or neither",
            ))
        }
        (None, Some(_)) => {
            return Err(bad(
                src.label("store_tls_cert"),
                "is not set, but store_tls_key is: a key needs its client certificate; set both or neither",
            ))
        }
    };
    let tls =
        match ca {
            Some(ca) => Some(StoreTls { ca, identity }),
            None if *etcds => {
                return Err(bad(
                    src.label("store_tls_ca"),
                    format!(
                    "is not set, and the store {store} is reached over TLS: give the CA certificate (PEM) that signed \
                     etcd's server certificate (the system's roots are not used)"
                ),
                ))
            }
            None if identity.is_some() => return Err(bad(
                src.label("store_tls_ca"),
                "is not set, but store_tls_cert is: a client certificate is for TLS; give the CA certificate (PEM) \
                 that signed etcd's server certificate",
            )),
            None => None,
        };
    match (&raw.store_user, &raw.store_password) {
        (Some(_), None) => {
            return Err(bad(
                src.label("store_password"),
                "is not set, but store_user is: give the etcd user's password (PGREPL_STORE_PASSWORD or \
                 PGREPL_STORE_PASSWORD_FILE)",
            ))
        }
        (None, Some(_)) => {
            return Err(bad(src.label("store_user"), "is not set, but store_password is: give the etcd user's name"))
        }
        (Some(user), Some(password)) => {
            if user.is_empty() || user.chars().any(char::is_control) {
                return Err(bad(
                    src.label("store_user"),
                    format!("{user:?} is not allowed; give the etcd user's name"),
                ));
            }
            if password.is_empty() {
                return Err(bad(src.label("store_password"), "is empty; give the etcd user's password"));
            }
        }
        (None, None) => {}
    }
    Ok(StoreAccess { tls, user: raw.store_user.clone(), password: raw.store_password.clone() })
}

/// Where the members listen, who may connect, and the upstream of a fixed-role replica.
pub(super) struct Network {
    pub listen: IpAddr,
    pub base_port: Option<u16>,
    pub port: u16,
    pub ro_port: u16,
    pub allow: Vec<String>,
    pub upstream_host: Option<String>,
    pub upstream_port: u16,
    pub api_listen: IpAddr,
    /// `None`: the command's default (`Config::api_port`).
    pub api_port: Option<u16>,
}

pub(super) fn network(raw: &RawConfig, src: &Sources) -> Result<Network, ConfigError> {
    let listen_text = given_or_default(&raw.listen, "listen");
    let listen: IpAddr =
        listen_text.parse().map_err(|_| bad(src.label("listen"), format!("{listen_text:?} is not an IP address")))?;
    let base_port = raw.base_port.map(|p| port(&src.label("base_port"), p)).transpose()?;
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
    let upstream_host = match &raw.upstream_host {
        None => None,
        Some(text) => Some(parse_host(text).ok_or_else(|| {
            bad(
                src.label("upstream_host"),
                format!("{text:?} is not allowed; use a host name (letters, digits, '.', '-', '_') or an IP address"),
            )
        })?),
    };
    let upstream_port = port(&src.label("upstream_port"), number_or_default(raw.upstream_port, "upstream_port"))?;
    let api_listen = match &raw.api_listen {
        None => listen,
        Some(text) => text.parse().map_err(|_| {
            bad(src.label("api_listen"), format!("{text:?} is not an IP address; use one such as 0.0.0.0 or 10.0.0.5"))
        })?,
    };
    let api_port = match raw.api_port {
        None => None,
        Some(0) => Some(0),
        Some(p) => Some(
            port(&src.label("api_port"), p)
                .map_err(|e| bad(e.setting, format!("{}, or 0 for a free port", e.problem)))?,
        ),
    };
    Ok(Network { listen, base_port, port: rw_port, ro_port, allow, upstream_host, upstream_port, api_listen, api_port })
}

/// How the router serves the endpoints.
pub(super) struct Router {
    pub ro_max_lag: MaxLag,
    pub ro_fallback: pgrepl_router::RoFallback,
    pub router_splice: RouterSplice,
    pub rw_wait: Duration,
}

pub(super) fn router(raw: &RawConfig, src: &Sources) -> Result<Router, ConfigError> {
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
    Ok(Router { ro_max_lag, ro_fallback, router_splice, rw_wait })
}

/// The agents' clocks and who may replace a lost leader.
pub(super) struct Timing {
    pub loop_wait: Duration,
    pub ttl: Duration,
    pub primary_start_timeout: Duration,
    pub failover: pgrepl_core::FailoverSpec,
}

pub(super) fn timing(raw: &RawConfig, src: &Sources) -> Result<Timing, ConfigError> {
    let duration = |key: &str, value: &Option<String>| -> Result<Duration, ConfigError> {
        let text = given_or_default(value, key);
        match parse_duration(text) {
            Some(d) if d.is_zero() => {
                Err(bad(src.label(key), format!("{text:?} is not allowed; it must be more than zero, such as 1s")))
            }
            Some(d) => Ok(d),
            None => Err(bad(
                src.label(key),
                format!("{text:?} is not a duration; use a number with ms, s, m or h, such as 1s"),
            )),
        }
    };
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
    Ok(Timing { loop_wait, ttl, primary_start_timeout, failover })
}

/// `[parameters]`, as the text PostgreSQL's configuration takes.
pub(super) fn parameters(raw: &RawConfig, src: &Sources) -> Result<BTreeMap<String, String>, ConfigError> {
    raw.parameters
        .iter()
        .map(|(k, v)| {
            let key = format!("parameters.{k}");
            let text = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => v.to_string(),
                _ => return Err(bad(src.label(&key), "must be a string, number or boolean")),
            };
            if !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') || k.is_empty() {
                return Err(bad(src.label(&key), "is not a PostgreSQL setting name"));
            }
            Ok((k.clone(), text))
        })
        .collect()
}
