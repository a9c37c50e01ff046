//! One process per role: an agent holds an exclusive `flock` on its member's `agent.lock`, the
//! router on `router.lock` (each holding its pid), for as long as it runs, so a second one
//! refuses to start, and `down` can find one that outlived its supervisor.

use anyhow::{bail, Context};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

fn try_lock(file: &File) -> bool {
    // SAFETY: flock on a descriptor we own; LOCK_NB makes it return at once.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

fn open(path: &Path) -> anyhow::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("open {}", path.display()))
}

/// Takes the lock for this process; keep the returned file open for the agent's lifetime.
pub fn acquire(path: &Path) -> anyhow::Result<File> {
    let mut file = open(path)?;
    if !try_lock(&file) {
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        bail!("another process (pid {}) already holds {}; not starting a second one", pid.trim(), path.display());
    }
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}

/// The pid of the agent holding the lock, if one does.
pub fn holder(path: &Path) -> Option<i32> {
    let mut file = open(path).ok()?;
    if try_lock(&file) {
        return None; // Released again when `file` closes.
    }
    let mut pid = String::new();
    file.read_to_string(&mut pid).ok()?;
    pid.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_the_first_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.lock");
        assert_eq!(holder(&path), None);
        let held = acquire(&path).unwrap();
        // flock locks belong to open file descriptions, so a second open in this process conflicts.
        let err = acquire(&path).unwrap_err().to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())) && err.contains("agent.lock"), "{err}");
        assert_eq!(holder(&path), Some(std::process::id() as i32));
        drop(held);
        assert_eq!(holder(&path), None);
    }
}
