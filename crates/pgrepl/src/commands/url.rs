//! `pgrepl url [--ro]`: the connection string of the read-write (or with `--ro` the read-only)
//! endpoint with the password in it, for scripts: `psql "$(pgrepl --dir DIR url)"`. Printed on
//! standard output and nowhere else: never in a log line, and `up` prints the command, not the
//! password. The user is the one `up` prints (the application user, else the admin user); the
//! host and ports are this directory's `listen`, `port` and `ro_port`, where its router serves;
//! with TLS on, the string asks for `verify-full` against the CA clients verify the members by.
//! On a host of a `pgrepl node` cluster it names that host's endpoints, which serve while its
//! node runs with `--router`; a directory with only `pgrepl.toml` (for day-two commands) has no
//! password to give.

use crate::cluster::Cluster;
use crate::config::{Config, ADMIN_USER};
use crate::layout::Layout;
use anyhow::Context;
use std::net::IpAddr;
use std::path::Path;

pub async fn run(dir: &Path, ro: bool) -> anyhow::Result<()> {
    let cluster = Cluster::open(dir).await?;
    println!("{}", connection_string(&cluster.layout, &cluster.config, ro)?);
    Ok(())
}

/// The line `up` prints where it would otherwise print a password.
pub fn print_hint(layout: &Layout) {
    println!(
        "connect:    psql \"$(pgrepl --dir {} url)\"  (`pgrepl url [--ro]` prints the connection string, password included)",
        shell_word(&layout.dir.to_string_lossy())
    );
}

/// Whom the endpoints' connection strings log in as, into which database, with which password:
/// the application user into its database, else the admin user into `postgres`.
pub(crate) fn login(config: &Config) -> (&str, &str, &Option<String>) {
    match &config.names.app {
        Some(app) => (app.user.as_str(), app.database.as_str(), &config.passwords.user),
        None => (ADMIN_USER, "postgres", &config.passwords.admin),
    }
}

fn connection_string(layout: &Layout, config: &Config, ro: bool) -> anyhow::Result<String> {
    let (user, database, password) = login(config);
    let password = password.as_deref().with_context(|| {
        format!(
            "{} holds no password for {user} (no {}): `pgrepl url` needs the directory `up` or `node` runs the cluster from",
            layout.dir.display(),
            layout.secrets().display()
        )
    })?;
    let host = match config.listen {
        // The endpoints listen on every address: loopback is one, and the members' certificates name it.
        IpAddr::V4(a) if a.is_unspecified() => "127.0.0.1".to_string(),
        IpAddr::V6(a) if a.is_unspecified() => "localhost".to_string(),
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let port = if ro { config.ro_port } else { config.port };
    let tls = match config.tls.on {
        true => format!(
            "?sslmode=verify-full&sslrootcert={}",
            encode(&crate::commands::ca::client_root(layout, config).to_string_lossy(), "/")
        ),
        false => String::new(),
    };
    Ok(format!(
        "postgresql://{}:{}@{host}:{port}/{}{tls}",
        encode(user, ""),
        encode(password, ""),
        encode(database, "")
    ))
}

/// `text` with every byte but RFC 3986's unreserved characters (and those in `keep`)
/// percent-encoded, as libpq decodes a connection URI's parts.
fn encode(text: &str, keep: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.as_bytes().contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `word` as one word for a POSIX shell: as it is when it is plain, else single-quoted.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~/+:,@%=".contains(&b));
    match plain {
        true => word.to_string(),
        false => format!("'{}'", word.replace('\'', r"'\''")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reserved_or_non_ascii_byte_is_percent_encoded() {
        assert_eq!(encode("Ab9-._~", ""), "Ab9-._~");
        assert_eq!(encode("p@ss:w/rd?#&= %", ""), "p%40ss%3Aw%2Frd%3F%23%26%3D%20%25");
        assert_eq!(encode("é", ""), "%C3%A9");
        assert_eq!(encode("/tmp/my dir/ca.crt", "/"), "/tmp/my%20dir/ca.crt");
    }

    #[test]
    fn a_directory_with_spaces_or_quotes_is_quoted_for_the_shell() {
        assert_eq!(shell_word("/tmp/c"), "/tmp/c");
        assert_eq!(shell_word("/tmp/my dir"), "'/tmp/my dir'");
        assert_eq!(shell_word("/tmp/it's"), r"'/tmp/it'\''s'");
    }
}
