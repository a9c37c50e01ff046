//! libpq password files (`.pgpass` format): the only place where replication and rewind
//! passwords are written, so that they never appear in arguments, conninfo strings or logs.

use crate::error::PgError;
use crate::fsx::write_atomic;
use std::path::Path;

/// One line of a password file. `database` is `*` or `replication` (which matches physical
/// replication connections); `host` is what the connection names (`*` matches any).
#[derive(Clone, PartialEq, Eq)]
pub struct PassEntry {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for PassEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassEntry")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Writes a libpq password file atomically with mode 0600 (the temporary file has that mode
/// from its creation on), escaping `:` and `\` as libpq requires.
pub fn write_passfile(path: &Path, entries: &[PassEntry]) -> Result<(), PgError> {
    let text =
        render(entries).map_err(|why| PgError::Other(format!("write password file {}: {why}", path.display())))?;
    write_atomic(path, text.as_bytes(), 0o600)
}

fn render(entries: &[PassEntry]) -> Result<String, String> {
    let mut text = String::new();
    for e in entries {
        for (what, value) in [("host", &e.host), ("database", &e.database), ("user", &e.user)] {
            if value.contains(['\n', '\r']) {
                return Err(format!("the {what} {value:?} contains a line break"));
            }
        }
        if e.password.contains(['\n', '\r']) {
            return Err(format!(
                "the password of user {:?} contains a line break, which a password file cannot hold",
                e.user
            ));
        }
        let port = e.port.to_string();
        let fields = [escape(&e.host), port, escape(&e.database), escape(&e.user), escape(&e.password)];
        text.push_str(&fields.join(":"));
        text.push('\n');
    }
    Ok(text)
}

fn escape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    for c in field.chars() {
        if c == ':' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn entry(password: &str) -> PassEntry {
        PassEntry {
            host: "10.0.0.1".into(),
            port: 5432,
            database: "replication".into(),
            user: "repl".into(),
            password: password.into(),
        }
    }

    #[test]
    fn escapes_colons_and_backslashes() {
        let text =
            render(&[entry(r"a:b\c"), PassEntry { host: "*".into(), database: "*".into(), ..entry("x") }]).unwrap();
        assert_eq!(text, "10.0.0.1:5432:replication:repl:a\\:b\\\\c\n*:5432:*:repl:x\n");
    }

    #[test]
    fn refuses_line_breaks_without_showing_the_password() {
        let err = render(&[entry("sec\nret")]).unwrap_err();
        assert!(err.contains("repl") && !err.contains("sec"), "{err}");
    }

    #[test]
    fn file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pgpass");
        write_passfile(&p, &[entry("pw")]).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "10.0.0.1:5432:replication:repl:pw\n");
        assert!(!format!("{:?}", entry("pw")).contains("pw\""));
    }
}
