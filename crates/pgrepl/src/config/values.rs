//! The typed values a `Config` holds beside plain numbers and strings, and the parsing of their
//! text (durations, sizes, address ranges, the store). Pure: no I/O, no defaults, no labels;
//! a parse error says what is wrong with the text and `validate` names the setting.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

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
    /// An etcd cluster reached at any of these `HOST:PORT` endpoints; `tls`: written `etcds://`
    /// (TLS is also on for `etcd://` with `store_tls_ca`: see `StoreAccess`).
    Etcd { endpoints: Vec<String>, tls: bool },
}

impl StoreConfig {
    /// Whether `other` is the same store, however it is reached: the same endpoints
    /// (`etcd://` and `etcds://` name the same etcd).
    pub fn same_place(&self, other: &StoreConfig) -> bool {
        match (self, other) {
            (StoreConfig::File, StoreConfig::File) => true,
            (StoreConfig::Etcd { endpoints: a, .. }, StoreConfig::Etcd { endpoints: b, .. }) => a == b,
            _ => false,
        }
    }
}

/// How the etcd store is reached beyond its endpoints: TLS and etcd's own user. The password
/// never shows in `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StoreAccess {
    pub tls: Option<StoreTls>,
    pub user: Option<String>,
    pub password: Option<String>,
}

/// TLS to etcd: files, read when the store is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreTls {
    /// The CA that signed etcd's server certificate.
    pub ca: std::path::PathBuf,
    /// A client certificate and its key (mode 0600).
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl fmt::Debug for StoreAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreAccess")
            .field("tls", &self.tls)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<given>"))
            .finish()
    }
}

impl fmt::Display for StoreConfig {
    /// As it is written in the configuration: `file`, `etcd://HOST:PORT[,HOST:PORT...]` or
    /// `etcds://...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreConfig::File => f.write_str("file"),
            StoreConfig::Etcd { endpoints, tls: false } => write!(f, "etcd://{}", endpoints.join(",")),
            StoreConfig::Etcd { endpoints, tls: true } => write!(f, "etcds://{}", endpoints.join(",")),
        }
    }
}

const STORE_FORMS: &str = "use file, etcd://HOST:PORT[,HOST:PORT...] (such as etcd://127.0.0.1:2379) or, over TLS, \
                           etcds://HOST:PORT[,HOST:PORT...]";

/// Parses the `store` setting; the error says what is wrong with it.
pub fn parse_store(text: &str) -> Result<StoreConfig, String> {
    let text = text.trim();
    if text == "file" {
        return Ok(StoreConfig::File);
    }
    let (list, tls) = match (text.strip_prefix("etcd://"), text.strip_prefix("etcds://")) {
        (Some(list), _) => (list, false),
        (_, Some(list)) => (list, true),
        _ => return Err(format!("{text:?} is not allowed; {STORE_FORMS}")),
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
    Ok(StoreConfig::Etcd { endpoints, tls })
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
        None => is_host_name(host),
    };
    if !host_ok {
        return Err(format!("endpoint {endpoint:?} does not start with a host name or address"));
    }
    Ok(())
}

/// A host name as pgrepl takes one: letters, digits, '.', '-' and '_' (an IPv4 address is one).
fn is_host_name(host: &str) -> bool {
    !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
}

/// Parses a host to connect to: a host name, an IPv4 address or a bare IPv6 one, trimmed.
pub fn parse_host(text: &str) -> Option<String> {
    let host = text.trim();
    (is_host_name(host) || host.parse::<std::net::Ipv6Addr>().is_ok()).then(|| host.to_string())
}

/// How far behind a replica may be and still serve reads (kept in the spec, so defined there).
pub use pgrepl_core::MaxLag;

/// Parses a byte size: `16MB`, `512kB`, `1GB`, `1048576` (bytes), as PostgreSQL writes them.
pub fn parse_bytes(text: &str) -> Option<u64> {
    pgrepl_core::health::parse_size(text)
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

/// The bearer token that allows actions over the HTTP API. Never shown: its `Debug` says only
/// that there is one.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

/// A token shorter than this is refused: it would be guessed too easily over the network.
pub const API_TOKEN_MIN_CHARS: usize = 16;

impl ApiToken {
    pub fn new(text: String) -> ApiToken {
        ApiToken(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this token, in time that depends only on `given`'s length, not on
    /// how much of it matches (nor on the token's length).
    pub fn matches(&self, given: &[u8]) -> bool {
        let token = self.0.as_bytes();
        let mut diff = u8::from(given.len() != token.len());
        for (i, b) in given.iter().enumerate() {
            diff |= b ^ token[i % token.len().max(1)];
        }
        std::hint::black_box(diff) == 0 && !token.is_empty()
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<given>)")
    }
}

/// What TLS a cluster runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// TLS on: every member serves it with a certificate from the cluster CA, replicas verify.
    pub on: bool,
    /// Every `pg_hba.conf` range but loopback is `hostssl`.
    pub require: bool,
    /// The cluster CA as given (`tls.ca_cert`, `tls.ca_key`), checked to be a CA and a key.
    pub given_ca: Option<GivenCa>,
    /// `pgrepl node` takes the CA from the store, where the first member put one it made.
    pub ca_in_store: bool,
    /// The user's own certificate, key and CA (`tls.cert_file`, `tls.key_file`,
    /// `tls.ca_file`), absolute paths, instead of a certificate issued from the cluster CA.
    /// Their content is checked at start (`ca::check_files`) and by the agent, not here.
    pub files: Option<pgrepl_tls::TlsFiles>,
}

/// A CA certificate and its key as given, in PEM; the key hides itself in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct GivenCa {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for GivenCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GivenCa { cert_pem, key_pem: <secret> }")
    }
}

#[cfg(test)]
mod api_token_tests {
    use super::*;

    #[test]
    fn only_the_whole_token_matches_and_it_is_never_shown() {
        let token = ApiToken::new("s3cret-s3cret-s3cret".into());
        assert!(token.matches(b"s3cret-s3cret-s3cret"));
        for wrong in ["", "s3cret", "s3cret-s3cret-s3cre", "s3cret-s3cret-s3cretX", "x3cret-s3cret-s3cret"] {
            assert!(!token.matches(wrong.as_bytes()), "{wrong:?}");
        }
        assert!(!format!("{token:?}").contains("s3cret"));
    }
}
