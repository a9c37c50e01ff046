//! What pgrepl writes into a data directory: `pgrepl.conf` (included last from
//! `postgresql.conf`), `pg_hba.conf` and `standby.signal`. Never writes a password.

use super::{Conninfo, Instance};
use crate::error::PgError;
use crate::fsx::write_atomic;
use std::collections::BTreeMap;

/// The file pgrepl owns inside the data directory.
pub(crate) const CONF_FILE: &str = "pgrepl.conf";
const INCLUDE_LINE: &str = "include_if_exists = 'pgrepl.conf'";

/// The settings that vary per member and per cluster; the rest of `pgrepl.conf` is fixed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerConf {
    /// The user's extra settings, written last so that they override pgrepl's defaults.
    pub parameters: BTreeMap<String, String>,
    /// `None` writes `primary_conninfo = ''`.
    pub primary_conninfo: Option<Conninfo>,
    /// `None` writes `primary_slot_name = ''`.
    pub primary_slot_name: Option<String>,
    /// What a commit on this server waits for (empty: nobody).
    pub synchronous_standby_names: String,
    /// The server's TLS files (`ssl = on`, TLS 1.2 at least); `None` leaves `ssl` as
    /// `postgresql.conf` has it (off unless the user turned it on).
    pub tls: Option<ServerTls>,
}

/// The certificate, key and CA a server with TLS on reads; the caller checked them first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTls {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub ca: std::path::PathBuf,
}

/// Who may connect, written into `pg_hba.conf`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HbaRules {
    /// The superuser (`postgres`); allowed from `members` too, for `pg_rewind`.
    pub admin_user: String,
    pub replication_user: String,
    /// CIDRs of the members' addresses: replication and admin connections come from these.
    pub members: Vec<String>,
    /// CIDRs of clients: `host all all CIDR scram-sha-256`.
    pub allow: Vec<String>,
    /// Every range that is not loopback gets `hostssl` rules (so a plain-TCP login from it is
    /// refused); loopback ranges keep `host`.
    pub require_tls: bool,
}

impl Instance {
    /// Writes `<data>/pgrepl.conf` (atomically, mode 0600) and makes sure `postgresql.conf`
    /// ends with exactly one `include_if_exists = 'pgrepl.conf'` line.
    pub fn write_conf(&self, conf: &ServerConf) -> Result<(), PgError> {
        let text = render_conf(self, conf)
            .map_err(|why| PgError::Other(format!("write {}: {why}", self.data_dir.join(CONF_FILE).display())))?;
        write_atomic(&self.data_dir.join(CONF_FILE), text.as_bytes(), 0o600)?;
        let main = self.data_dir.join("postgresql.conf");
        let current = match std::fs::read_to_string(&main) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(PgError::io(format!("read {}", main.display()), e)),
        };
        let wanted = with_include(&current);
        if wanted != current {
            write_atomic(&main, wanted.as_bytes(), 0o600)?;
        }
        Ok(())
    }

    /// Replaces `pg_hba.conf` (atomically, mode 0600). Local socket connections are trusted:
    /// the socket directory is 0700, so only the member's OS user reaches it.
    pub fn write_hba(&self, rules: &HbaRules) -> Result<(), PgError> {
        write_atomic(&self.data_dir.join("pg_hba.conf"), render_hba(rules).as_bytes(), 0o600)
    }

    /// Creates (`on`) or removes `standby.signal`, which makes the server start as a replica.
    pub fn set_standby_signal(&self, on: bool) -> Result<(), PgError> {
        let path = self.data_dir.join("standby.signal");
        if on {
            write_atomic(&path, b"", 0o600)
        } else {
            match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(PgError::io(format!("remove {}", path.display()), e)),
            }
        }
    }
}

/// The settings `pgrepl.conf` always sets from the member and the cluster's state: how members
/// reach and follow each other. The cluster's own parameters may not set them.
pub const WIRING: [&str; 8] = [
    "listen_addresses",
    "port",
    "unix_socket_directories",
    "cluster_name",
    "primary_conninfo",
    "primary_slot_name",
    "synchronous_standby_names",
    "recovery_target_timeline",
];

/// The settings `pgrepl.conf` sets while pgrepl runs TLS: the server's certificate files.
pub const TLS_FILES: [&str; 4] = ["ssl", "ssl_cert_file", "ssl_key_file", "ssl_ca_file"];

/// Whether `pgrepl.conf` sets `name` itself (`WIRING`, or `TLS_FILES`), so that the cluster's
/// parameters must leave it alone.
pub fn sets_itself(name: &str) -> bool {
    WIRING.contains(&name) || TLS_FILES.contains(&name)
}

fn render_conf(inst: &Instance, conf: &ServerConf) -> Result<String, String> {
    let conninfo = conf.primary_conninfo.as_ref().map(Conninfo::to_conninfo_string).unwrap_or_default();
    let fixed: Vec<(&str, String)> = vec![
        ("listen_addresses", inst.listen_address.clone()),
        ("port", inst.port.to_string()),
        ("unix_socket_directories", inst.socket_dir.to_string_lossy().into_owned()),
        ("cluster_name", inst.name.clone()),
        ("wal_level", "replica".into()),
        ("hot_standby", "on".into()),
        ("max_wal_senders", "20".into()),
        ("max_replication_slots", "20".into()),
        ("wal_log_hints", "on".into()),
        ("max_slot_wal_keep_size", "1GB".into()),
        ("password_encryption", "scram-sha-256".into()),
        ("recovery_target_timeline", "latest".into()),
        ("hot_standby_feedback", "on".into()),
        ("wal_sender_timeout", "10s".into()),
        ("wal_receiver_timeout", "10s".into()),
        ("wal_receiver_status_interval", "1s".into()),
        ("wal_retrieve_retry_interval", "1s".into()),
        ("log_line_prefix", "%m [%p] ".into()),
        ("logging_collector", "off".into()),
        ("primary_conninfo", conninfo),
        ("primary_slot_name", conf.primary_slot_name.clone().unwrap_or_default()),
        ("synchronous_standby_names", conf.synchronous_standby_names.clone()),
    ];
    let tls: Vec<(&str, String)> = match &conf.tls {
        None => vec![],
        Some(t) => vec![
            ("ssl", "on".into()),
            ("ssl_min_protocol_version", "TLSv1.2".into()),
            ("ssl_cert_file", t.cert.to_string_lossy().into_owned()),
            ("ssl_key_file", t.key.to_string_lossy().into_owned()),
            ("ssl_ca_file", t.ca.to_string_lossy().into_owned()),
        ],
    };
    let mut text = String::from(
        "# Written by pgrepl and replaced whenever it applies its configuration: do not edit.\n\
         # postgresql.conf includes this file last, so these settings win over it.\n",
    );
    for (key, value) in fixed.iter().chain(&tls) {
        text.push_str(&format!("{key} = {}\n", quote_conf(value)));
    }
    if !conf.parameters.is_empty() {
        text.push_str("# the cluster's own parameters\n");
    }
    for (key, value) in &conf.parameters {
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
            return Err(format!("{key:?} is not a setting name (letters, digits, '_' and '.')"));
        }
        text.push_str(&format!("{key} = {}\n", quote_conf(value)));
    }
    Ok(text)
}

/// A postgresql.conf string value: single quotes, `''` for a quote, and backslash escapes
/// (which the server interprets inside quotes) for backslash and line breaks.
fn quote_conf(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `postgresql.conf` with every include of pgrepl.conf removed and exactly one added at the end.
fn with_include(current: &str) -> String {
    let mut out: String = current
        .lines()
        .filter(|line| {
            let l = line.trim_start();
            !(l.starts_with("include") && l.contains(CONF_FILE))
        })
        .flat_map(|line| [line, "\n"])
        .collect();
    out.push_str(INCLUDE_LINE);
    out.push('\n');
    out
}

fn render_hba(rules: &HbaRules) -> String {
    let mut text = String::from(
        "# Written by pgrepl and replaced whenever it applies its configuration: do not edit.\n\
         # TYPE  DATABASE     USER                  ADDRESS                   METHOD\n",
    );
    let mut line = |kind: &str, db: &str, user: &str, addr: &str, method: &str| {
        text.push_str(&format!("{kind:<7} {db:<12} {user:<21} {addr:<25} {method}\n"));
    };
    line("local", "all", "all", "", "trust");
    line("local", "replication", "all", "", "trust");
    let repl = quote_hba_user(&rules.replication_user);
    let admin = quote_hba_user(&rules.admin_user);
    let kind = |cidr: &str| if rules.require_tls && !is_loopback_range(cidr) { "hostssl" } else { "host" };
    for cidr in &rules.members {
        line(kind(cidr), "replication", &repl, cidr, "scram-sha-256");
        line(kind(cidr), "all", &admin, cidr, "scram-sha-256");
    }
    for cidr in &rules.allow {
        line(kind(cidr), "all", "all", cidr, "scram-sha-256");
    }
    text
}

/// Whether every address of `cidr` is a loopback one (`127.0.0.0/8` or narrower, `::1/128`).
/// Anything that does not parse counts as not loopback, so it gets the stricter rule.
fn is_loopback_range(cidr: &str) -> bool {
    let (addr, bits) = match cidr.split_once('/') {
        Some((a, b)) => (a, b.parse::<u8>().ok()),
        None => (cidr, None),
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => a.is_loopback() && bits.unwrap_or(32) >= 8,
        Ok(std::net::IpAddr::V6(a)) => a.is_loopback() && bits.unwrap_or(128) == 128,
        Err(_) => false,
    }
}

/// Quoted so that a user named like a keyword (`all`) or with odd characters is taken literally.
fn quote_hba_user(user: &str) -> String {
    format!("\"{}\"", user.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Binaries;
    use std::path::PathBuf;

    fn conninfo() -> Conninfo {
        Conninfo {
            host: "10.0.0.1".into(),
            port: 5433,
            user: "rep'l".into(),
            dbname: "postgres".into(),
            application_name: "node-2".into(),
            passfile: PathBuf::from("/var/lib/pgrepl/pg\\pass"),
            tls: super::super::ClientTls::Prefer,
        }
    }

    fn instance() -> Instance {
        Instance {
            bins: Binaries::for_tests(),
            data_dir: "/d/data".into(),
            socket_dir: "/d/sock".into(),
            listen_address: "127.0.0.1".into(),
            port: 5433,
            log_file: "/d/log".into(),
            name: "node-1".into(),
        }
    }

    #[test]
    fn pgrepl_conf_sets_every_setting_it_keeps_from_the_parameters() {
        let tls = ServerTls { cert: "/t/c".into(), key: "/t/k".into(), ca: "/t/ca".into() };
        let text = render_conf(&instance(), &ServerConf { tls: Some(tls), ..Default::default() }).unwrap();
        for name in WIRING.iter().chain(&TLS_FILES) {
            assert!(text.lines().any(|l| l.starts_with(&format!("{name} = "))), "{name} is not set:\n{text}");
            assert!(sets_itself(name));
        }
        assert!(!sets_itself("shared_buffers"));
    }

    #[test]
    fn conf_values_use_postgresql_quoting() {
        assert_eq!(quote_conf("it's"), "'it''s'");
        assert_eq!(quote_conf("a\\b"), "'a\\\\b'");
        assert_eq!(quote_conf("x\ny"), "'x\\ny'");
        assert_eq!(quote_conf(""), "''");
    }

    #[test]
    fn pgrepl_conf_sets_replication_and_lets_parameters_win() {
        let mut conf = ServerConf {
            primary_conninfo: Some(conninfo()),
            primary_slot_name: Some("node_2".into()),
            ..Default::default()
        };
        conf.parameters.insert("max_wal_senders".into(), "30".into());
        let text = render_conf(&instance(), &conf).unwrap();
        assert!(text.contains("port = '5433'\n"));
        assert!(text.contains("unix_socket_directories = '/d/sock'\n"));
        assert!(text.contains("wal_level = 'replica'\n"));
        assert!(text.contains("primary_slot_name = 'node_2'\n"));
        assert!(text.contains("primary_conninfo = 'host=''10.0.0.1'' port=''5433'' user=''rep\\\\''l''"));
        let default_at = text.find("max_wal_senders = '20'").unwrap();
        let override_at = text.find("max_wal_senders = '30'").unwrap();
        assert!(override_at > default_at, "user parameters must come last");

        let empty = render_conf(&instance(), &ServerConf::default()).unwrap();
        assert!(empty.contains("primary_conninfo = ''\n") && empty.contains("primary_slot_name = ''\n"));

        let mut bad = ServerConf::default();
        bad.parameters.insert("work_mem = 1\nfsync".into(), "off".into());
        assert!(render_conf(&instance(), &bad).is_err());
    }

    #[test]
    fn include_line_is_added_once_at_the_end() {
        let once = with_include("shared_buffers = 128MB\n");
        assert_eq!(once, "shared_buffers = 128MB\ninclude_if_exists = 'pgrepl.conf'\n");
        assert_eq!(with_include(&once), once);
        let moved = with_include("include_if_exists = 'pgrepl.conf'\nwork_mem = 4MB");
        assert_eq!(moved, "work_mem = 4MB\ninclude_if_exists = 'pgrepl.conf'\n");
        assert_eq!(with_include(""), "include_if_exists = 'pgrepl.conf'\n");
    }

    #[test]
    fn hba_trusts_the_socket_and_asks_passwords_over_tcp() {
        let text = render_hba(&HbaRules {
            admin_user: "postgres".into(),
            replication_user: "repl".into(),
            members: vec!["10.0.0.0/24".into(), "fd00::/64".into()],
            allow: vec!["0.0.0.0/0".into()],
            require_tls: false,
        });
        let rows: Vec<Vec<&str>> =
            text.lines().filter(|l| !l.starts_with('#')).map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            rows,
            vec![
                vec!["local", "all", "all", "trust"],
                vec!["local", "replication", "all", "trust"],
                vec!["host", "replication", "\"repl\"", "10.0.0.0/24", "scram-sha-256"],
                vec!["host", "all", "\"postgres\"", "10.0.0.0/24", "scram-sha-256"],
                vec!["host", "replication", "\"repl\"", "fd00::/64", "scram-sha-256"],
                vec!["host", "all", "\"postgres\"", "fd00::/64", "scram-sha-256"],
                vec!["host", "all", "all", "0.0.0.0/0", "scram-sha-256"],
            ]
        );
        assert_eq!(quote_hba_user("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn require_tls_makes_every_range_but_loopback_hostssl() {
        let text = render_hba(&HbaRules {
            admin_user: "postgres".into(),
            replication_user: "repl".into(),
            members: vec!["10.0.0.0/24".into(), "127.0.0.1/32".into(), "::1/128".into()],
            allow: vec!["127.0.0.0/8".into(), "0.0.0.0/0".into(), "::/0".into(), "db.example".into()],
            require_tls: true,
        });
        let rows: Vec<(String, String)> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("local"))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[0].to_string(), f[3].to_string())
            })
            .collect();
        let kind_of = |addr: &str| rows.iter().filter(|(_, a)| a == addr).map(|(k, _)| k.as_str()).collect::<Vec<_>>();
        assert_eq!(kind_of("10.0.0.0/24"), ["hostssl", "hostssl"], "replication and admin rules alike");
        assert_eq!(kind_of("127.0.0.1/32"), ["host", "host"]);
        assert_eq!(kind_of("::1/128"), ["host", "host"]);
        assert_eq!(kind_of("127.0.0.0/8"), ["host"]);
        assert_eq!(kind_of("0.0.0.0/0"), ["hostssl"], "a range that holds loopback and more is not loopback");
        assert_eq!(kind_of("::/0"), ["hostssl"]);
        assert_eq!(kind_of("db.example"), ["hostssl"]);
        assert!(!is_loopback_range("127.0.0.0/7") && is_loopback_range("127.1.2.3"));
    }

    #[test]
    fn tls_turns_ssl_on_with_the_given_files_and_at_least_tls_1_2() {
        let conf = ServerConf {
            tls: Some(ServerTls {
                cert: "/d/tls/server.crt".into(),
                key: "/d/tls/server.key".into(),
                ca: "/d/tls/ca.crt".into(),
            }),
            ..Default::default()
        };
        let text = render_conf(&instance(), &conf).unwrap();
        for line in [
            "ssl = 'on'\n",
            "ssl_min_protocol_version = 'TLSv1.2'\n",
            "ssl_cert_file = '/d/tls/server.crt'\n",
            "ssl_key_file = '/d/tls/server.key'\n",
            "ssl_ca_file = '/d/tls/ca.crt'\n",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        let off = render_conf(&instance(), &ServerConf::default()).unwrap();
        assert!(!off.contains("ssl"), "without TLS files pgrepl says nothing of ssl");
    }
}
