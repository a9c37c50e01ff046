//! libpq connection strings: the `Conninfo` that points a replica or `pg_rewind` at another
//! member (never with a password: libpq reads it from a password file), and reading the
//! upstream back out of a server's `primary_conninfo`.

use pgrepl_core::Upstream;
use std::path::PathBuf;

/// How long a replica's WAL receiver or `pg_rewind` waits for a TCP connection to another member.
const CONNECT_TIMEOUT_SECS: u32 = 5;

/// Where to reach another member, as libpq needs it. The password comes from `passfile`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conninfo {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Ignored by physical replication; `postgres` for `pg_rewind`.
    pub dbname: String,
    pub application_name: String,
    pub passfile: PathBuf,
    /// Whether and how the connection is encrypted and the server verified.
    pub tls: ClientTls,
}

/// How libpq secures a connection to another member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ClientTls {
    /// libpq's default (`sslmode=prefer`: TLS when the server offers it, unverified): what a
    /// fixed-role member without a cluster CA does.
    #[default]
    Prefer,
    /// Never TLS (`sslmode=disable`): the cluster runs with `tls.mode = off`.
    Disable,
    /// TLS, with the server's certificate signed by `root_cert` and naming the host connected
    /// to (`sslmode=verify-full`).
    VerifyFull { root_cert: PathBuf },
}

impl ClientTls {
    /// libpq's `sslmode` and `sslrootcert` for this, as key-value pairs (none for `Prefer`).
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        match self {
            ClientTls::Prefer => vec![],
            ClientTls::Disable => vec![("sslmode", "disable".into())],
            ClientTls::VerifyFull { root_cert } => {
                vec![("sslmode", "verify-full".into()), ("sslrootcert", root_cert.to_string_lossy().into_owned())]
            }
        }
    }

    /// The same as libpq environment variables (`PGSSLMODE`, `PGSSLROOTCERT`), for the tools
    /// that take host and port as flags (`pg_basebackup`).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.pairs().into_iter().map(|(k, v)| (if k == "sslmode" { "PGSSLMODE" } else { "PGSSLROOTCERT" }, v)).collect()
    }
}

impl Conninfo {
    /// A libpq `key='value'` string, values quoted with `\'` and `\\` escapes. Never holds a
    /// password: libpq reads it from `passfile`.
    pub fn to_conninfo_string(&self) -> String {
        let port = self.port.to_string();
        let passfile = self.passfile.to_string_lossy();
        let timeout = CONNECT_TIMEOUT_SECS.to_string();
        let tls = self.tls.pairs();
        let pairs: [(&str, &str); 7] = [
            ("host", &self.host),
            ("port", &port),
            ("user", &self.user),
            ("dbname", &self.dbname),
            ("application_name", &self.application_name),
            ("passfile", &passfile),
            ("connect_timeout", &timeout),
        ];
        pairs
            .iter()
            .copied()
            .chain(tls.iter().map(|(k, v)| (*k, v.as_str())))
            .map(|(k, v)| format!("{k}={}", quote_conninfo(v)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A libpq conninfo value: single quotes with `\'` and `\\` escapes.
fn quote_conninfo(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Host and port of a `primary_conninfo` value, in key=value or URI form; `None` if empty.
pub(crate) fn parse_upstream(conninfo: &str) -> Option<Upstream> {
    let s = conninfo.trim();
    if s.is_empty() {
        return None;
    }
    let (host, port) = if let Some(rest) = s.strip_prefix("postgresql://").or_else(|| s.strip_prefix("postgres://")) {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let first = hostport.split(',').next().unwrap_or("");
        if let Some(v6) = first.strip_prefix('[') {
            let (h, after) = v6.split_once(']')?;
            (h.to_string(), after.strip_prefix(':').map(str::to_string))
        } else {
            match first.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p.to_string())),
                None => (first.to_string(), None),
            }
        }
    } else {
        let pairs = parse_key_values(s)?;
        let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let host = get("host").filter(|h| !h.is_empty()).or_else(|| get("hostaddr"))?;
        (
            host.split(',').next().unwrap_or("").to_string(),
            get("port").map(|p| p.split(',').next().unwrap_or("").to_string()),
        )
    };
    let port = match port.filter(|p| !p.is_empty()) {
        Some(p) => p.parse().ok()?,
        None => 5432,
    };
    if host.is_empty() {
        return None;
    }
    Some(Upstream { host, port })
}

/// libpq's `key = value` syntax: values bare or single-quoted, backslash escapes in both.
fn parse_key_values(s: &str) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(pairs);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return None;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next()? {
                    '\\' => value.push(chars.next()?),
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.push(chars.next()?);
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conninfo() -> Conninfo {
        Conninfo {
            host: "10.0.0.1".into(),
            port: 5433,
            user: "rep'l".into(),
            dbname: "postgres".into(),
            application_name: "node-2".into(),
            passfile: PathBuf::from("/var/lib/pgrepl/pg\\pass"),
            tls: ClientTls::Prefer,
        }
    }

    #[test]
    fn tls_adds_sslmode_and_the_root_certificate() {
        let verify =
            Conninfo { tls: ClientTls::VerifyFull { root_cert: "/c/members/node-2/tls/ca.crt".into() }, ..conninfo() };
        let s = verify.to_conninfo_string();
        assert!(
            s.ends_with("connect_timeout='5' sslmode='verify-full' sslrootcert='/c/members/node-2/tls/ca.crt'"),
            "{s}"
        );
        let parsed = parse_key_values(&s).unwrap();
        assert!(parsed.contains(&("sslmode".into(), "verify-full".into())));
        assert_eq!(parse_upstream(&s).map(|u| u.host), Some("10.0.0.1".into()));
        let off = Conninfo { tls: ClientTls::Disable, ..conninfo() }.to_conninfo_string();
        assert!(off.ends_with("sslmode='disable'"), "{off}");
        assert!(!conninfo().to_conninfo_string().contains("sslmode"), "prefer is libpq's default, left unsaid");
        assert_eq!(
            verify.tls.env(),
            vec![
                ("PGSSLMODE", "verify-full".to_string()),
                ("PGSSLROOTCERT", "/c/members/node-2/tls/ca.crt".to_string())
            ]
        );
        assert!(ClientTls::Prefer.env().is_empty());
    }

    #[test]
    fn conninfo_values_are_quoted_and_escaped() {
        let s = conninfo().to_conninfo_string();
        assert_eq!(
            s,
            "host='10.0.0.1' port='5433' user='rep\\'l' dbname='postgres' application_name='node-2' \
             passfile='/var/lib/pgrepl/pg\\\\pass' connect_timeout='5'"
        );
        assert!(!s.contains("password"));
        let parsed = parse_key_values(&s).unwrap();
        assert!(parsed.contains(&("user".into(), "rep'l".into())));
        assert!(parsed.contains(&("passfile".into(), "/var/lib/pgrepl/pg\\pass".into())));
    }

    #[test]
    fn upstream_is_read_from_either_conninfo_form() {
        let up = |s: &str| parse_upstream(s).map(|u| (u.host, u.port));
        assert_eq!(up(&conninfo().to_conninfo_string()), Some(("10.0.0.1".into(), 5433)));
        assert_eq!(up("host=db1 user=x"), Some(("db1".into(), 5432)));
        assert_eq!(up("hostaddr = 10.1.1.1 port = 6000"), Some(("10.1.1.1".into(), 6000)));
        assert_eq!(up("postgresql://u@db2:5444/postgres"), Some(("db2".into(), 5444)));
        assert_eq!(up("postgres://[fd00::1]:5445"), Some(("fd00::1".into(), 5445)));
        assert_eq!(up(""), None);
        assert_eq!(up("user=x"), None);
        assert_eq!(up("host='unterminated"), None);
    }
}
