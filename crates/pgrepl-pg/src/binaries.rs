//! Finding the PostgreSQL server programs and their major version. Owns the search order;
//! runs nothing but `pg_config --bindir` and `postgres --version`.

use crate::command::std_command;
use crate::error::PgError;
use std::path::{Path, PathBuf};

/// The programs a directory must hold to count as a PostgreSQL bin directory.
const REQUIRED: &[&str] = &["postgres", "initdb", "pg_ctl", "pg_basebackup", "pg_rewind", "pg_controldata"];

/// The oldest major version with `standby.signal` and recovery settings in postgresql.conf.
const OLDEST_MAJOR: u32 = 12;

/// A directory holding the PostgreSQL server programs, and their major version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binaries {
    dir: PathBuf,
    major: u32,
}

impl Binaries {
    /// Search order: `configured` (an error if given but it lacks the programs), then
    /// `pg_config --bindir` from PATH, then `/usr/lib/postgresql/<highest version>/bin`, then
    /// `/usr/local/pgsql/bin`. A directory counts if it holds `postgres`, `initdb`, `pg_ctl`,
    /// `pg_basebackup`, `pg_rewind` and `pg_controldata`. The major version comes from
    /// `postgres --version`.
    pub fn find(configured: Option<&Path>) -> Result<Binaries, PgError> {
        let candidates = match configured {
            Some(dir) => vec![dir.to_path_buf()],
            None => default_candidates(),
        };
        let mut searched = Vec::new();
        for dir in candidates {
            if !searched.contains(&dir) {
                if has_programs(&dir) {
                    let major = major_version(&dir)?;
                    return Ok(Binaries { dir, major });
                }
                searched.push(dir);
            }
        }
        Err(PgError::BinariesNotFound { searched })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn major(&self) -> u32 {
        self.major
    }

    /// The full path of one program of this installation, e.g. `path("pg_ctl")`.
    pub fn path(&self, program: &str) -> PathBuf {
        self.dir.join(program)
    }

    /// Whether this installation's server accepts `parameters` (names and values), asked of a
    /// throwaway `postgres -C` over an empty configuration: nothing runs and nothing is
    /// written but a scratch directory, removed after. The error is the server's own sentence
    /// ("invalid value for parameter ...", "... is outside the valid range ...",
    /// "unrecognized configuration parameter ..."). Must not run as root (PostgreSQL refuses).
    pub fn check_parameters(&self, parameters: &std::collections::BTreeMap<String, String>) -> Result<(), PgError> {
        let Some(first) = parameters.keys().next() else { return Ok(()) };
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let scratch = std::env::temp_dir().join(format!("pgrepl-check-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&scratch).map_err(|e| PgError::io(format!("create {}", scratch.display()), e))?;
        let checked = (|| {
            std::fs::write(scratch.join("postgresql.conf"), "")
                .map_err(|e| PgError::io(format!("write {}/postgresql.conf", scratch.display()), e))?;
            let mut cmd = std_command(&self.path("postgres"));
            cmd.arg("-D").arg(&scratch).arg("-C").arg(first);
            for (name, value) in parameters {
                cmd.arg("-c").arg(format!("{name}={value}"));
            }
            let out = cmd.output().map_err(|e| PgError::io(format!("run {}", self.path("postgres").display()), e))?;
            if out.status.success() {
                return Ok(());
            }
            let said = String::from_utf8_lossy(&out.stderr);
            let why: Vec<&str> = said
                .lines()
                .filter_map(|l| l.split_once("FATAL:  ").or_else(|| l.split_once("HINT:  ")).map(|(_, w)| w.trim()))
                .collect();
            Err(PgError::Other(if why.is_empty() { said.trim().to_string() } else { why.join(" ") }))
        })();
        let _ = std::fs::remove_dir_all(&scratch);
        checked
    }

    #[cfg(test)]
    pub(crate) fn for_tests() -> Binaries {
        Binaries { dir: PathBuf::from("/usr/lib/postgresql/15/bin"), major: 15 }
    }
}

fn default_candidates() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(out) = std_command(Path::new("pg_config")).arg("--bindir").output() {
        let text = String::from_utf8_lossy(&out.stdout);
        let dir = text.trim();
        if out.status.success() && !dir.is_empty() {
            dirs.push(PathBuf::from(dir));
        }
    }
    // Debian and Ubuntu install each major version side by side; try the newest first.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    dirs.extend(versions.into_iter().map(|(_, dir)| dir));
    dirs.push(PathBuf::from("/usr/local/pgsql/bin"));
    dirs
}

fn has_programs(dir: &Path) -> bool {
    REQUIRED.iter().all(|p| dir.join(p).is_file())
}

fn major_version(dir: &Path) -> Result<u32, PgError> {
    let postgres = dir.join("postgres");
    let doing = format!("read the version of {}", postgres.display());
    let out = std_command(&postgres).arg("--version").output().map_err(|e| PgError::io(doing.clone(), e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let major =
        parse_major(&text).ok_or_else(|| PgError::Other(format!("{doing}: cannot understand {:?}", text.trim())))?;
    if major < OLDEST_MAJOR {
        return Err(PgError::Other(format!(
            "postgresql {major} in {} is too old: pgrepl needs {OLDEST_MAJOR} or newer",
            dir.display()
        )));
    }
    Ok(major)
}

/// `postgres (PostgreSQL) 15.14 (Debian 15.14-1.pgdg120+1)` -> 15; `... 9.6.24` -> 9.
fn parse_major(version_output: &str) -> Option<u32> {
    let rest = version_output.split("(PostgreSQL)").nth(1)?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_major_versions() {
        assert_eq!(parse_major("postgres (PostgreSQL) 15.14 (Debian 15.14-1.pgdg120+1)\n"), Some(15));
        assert_eq!(parse_major("postgres (PostgreSQL) 17beta1"), Some(17));
        assert_eq!(parse_major("postgres (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major("something else"), None);
    }

    #[test]
    fn a_configured_dir_without_programs_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = Binaries::find(Some(dir.path())).unwrap_err();
        assert!(matches!(&err, PgError::BinariesNotFound { searched } if searched == &vec![dir.path().to_path_buf()]));
        assert!(err.to_string().contains(&dir.path().display().to_string()));
    }
}
