//! `PgError`, the one error type of this crate. Each variant says what was being done; the
//! underlying I/O or SQL error is the `source`, shown by `{:#}`.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// No directory holding the PostgreSQL server programs was found.
    #[error(
        "find postgresql binaries: none of {} holds postgres, initdb, pg_ctl, pg_basebackup, \
         pg_rewind and pg_controldata; install them (apt-get install postgresql-15) or set \
         `bin_dir` (PGREPL_PG_BIN_DIR) to the directory that has them",
        list_paths(.searched)
    )]
    BinariesNotFound { searched: Vec<PathBuf> },

    /// A PostgreSQL program failed; `output_tail` holds the last lines of its output (or of the
    /// server log), one per line.
    #[error("{doing}: {status}{}", tail_suffix(.output_tail))]
    Command { doing: String, status: String, output_tail: String },

    #[error("{doing}")]
    Io {
        doing: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{doing}")]
    Sql {
        doing: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("{doing}: gave up after {after:?}")]
    Timeout { doing: String, after: Duration },

    /// Refusing to `initdb` or clone into a directory that holds something.
    #[error("refusing to create a data directory in {}: it is not empty (move it aside or remove it first)", .path.display())]
    NotEmpty { path: PathBuf },

    #[error("{0}")]
    Other(String),
}

impl PgError {
    pub(crate) fn io(doing: impl Into<String>, source: std::io::Error) -> PgError {
        PgError::Io { doing: doing.into(), source }
    }

    pub(crate) fn sql(doing: impl Into<String>, source: tokio_postgres::Error) -> PgError {
        PgError::Sql { doing: doing.into(), source }
    }

    /// The SQLSTATE of a failed statement, for callers that branch on it.
    pub fn sql_state(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            PgError::Sql { source, .. } => source.code(),
            _ => None,
        }
    }
}

fn list_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "(no candidate directories)".to_string();
    }
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

fn tail_suffix(tail: &str) -> String {
    let lines: Vec<&str> = tail.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        String::new()
    } else {
        format!(": {}", lines.join(" | "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_names_places_and_how_to_install() {
        let e = PgError::BinariesNotFound { searched: vec!["/a/bin".into(), "/b".into()] };
        let msg = e.to_string();
        assert!(msg.contains("/a/bin, /b"), "{msg}");
        assert!(msg.contains("apt-get install postgresql-15"), "{msg}");
        assert!(msg.contains("PGREPL_PG_BIN_DIR"), "{msg}");
    }

    #[test]
    fn command_error_is_one_line() {
        let e = PgError::Command {
            doing: "start postgres in /x/data".into(),
            status: "pg_ctl exited with status 1".into(),
            output_tail: "line one\n\nline two\n".into(),
        };
        assert_eq!(e.to_string(), "start postgres in /x/data: pg_ctl exited with status 1: line one | line two");
    }
}
