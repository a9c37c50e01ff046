//! Small file-system helpers: atomic writes with a fixed mode, "missing or empty" checks and
//! reading the tail of a log. No PostgreSQL knowledge here.

use crate::error::PgError;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes `contents` to `path` through a temporary file in the same directory that has `mode`
/// from its creation on, fsyncs it, renames it over `path` and fsyncs the directory.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PgError> {
    let doing = || format!("write {}", path.display());
    let dir = parent_of(path);
    let file_name =
        path.file_name().ok_or_else(|| PgError::Other(format!("write {}: not a file path", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        // The umask may have narrowed the mode; never widened it, but make it exact.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| PgError::io(doing(), e))
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// True if `path` does not exist or is an empty directory.
pub(crate) fn missing_or_empty(path: &Path) -> Result<bool, PgError> {
    match fs::read_dir(path) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(PgError::io(format!("read directory {}", path.display()), e)),
    }
}

/// Creates `path` (and missing parents) and gives `path` itself exactly `mode`.
pub(crate) fn create_dir_with_mode(path: &Path, mode: u32) -> Result<(), PgError> {
    let doing = || format!("create directory {}", path.display());
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            fs::create_dir_all(parent).map_err(|e| PgError::io(doing(), e))?;
        }
    }
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {}
        Err(e) => return Err(PgError::io(doing(), e)),
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| PgError::io(doing(), e))
}

/// Length of a file, 0 if it does not exist.
pub(crate) fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The last `n` lines of what was appended to `path` after byte `from` (at most the last
/// 64 KiB of it). Empty if the file cannot be read: this only decorates error messages.
pub(crate) fn tail_of_file(path: &Path, from: u64, n: usize) -> String {
    let Ok(mut f) = fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = from.max(len.saturating_sub(64 * 1024)).min(len);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    tail_lines(&String::from_utf8_lossy(&buf), n)
}

/// The last `n` non-empty lines of `text`, joined by newlines.
pub(crate) fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_sets_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.conf");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "two");
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left behind");
    }

    #[test]
    fn tails_keep_last_non_empty_lines() {
        assert_eq!(tail_lines("a\nb\n\nc\n", 2), "b\nc");
        assert_eq!(tail_lines("", 3), "");
    }

    #[test]
    fn missing_and_empty_dirs() {
        let dir = tempfile::tempdir().unwrap();
        assert!(missing_or_empty(&dir.path().join("nope")).unwrap());
        assert!(missing_or_empty(dir.path()).unwrap());
        fs::write(dir.path().join("x"), "").unwrap();
        assert!(!missing_or_empty(dir.path()).unwrap());
    }
}
