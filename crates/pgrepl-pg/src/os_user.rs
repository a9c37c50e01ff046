//! Dropping root for an unprivileged OS user, since PostgreSQL refuses to run as root. Owns
//! the user lookup and the switch; nothing else here touches process credentials.

use crate::error::PgError;
use std::ffi::{CStr, CString};

struct Account {
    uid: u32,
    gid: u32,
    home: String,
}

/// The locked-memory limit an unprivileged pgrepl process gets from a root parent: room for the
/// fencer (a single-threaded process of about 20 MB) to lock all of its memory.
const MEMLOCK_LIMIT: u64 = 64 << 20;

/// Raises RLIMIT_MEMLOCK (soft and hard) to at least `bytes`; needs root, best effort.
fn raise_memlock_limit(bytes: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid rlimit pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) != 0 {
            return;
        }
        let raised = libc::rlimit { rlim_cur: limit.rlim_cur.max(bytes), rlim_max: limit.rlim_max.max(bytes) };
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) != 0 {
            tracing::debug!("raise the locked-memory limit: {}", last_os_error());
        }
    }
}

/// When the process runs as root, switches it for good to the OS user `name`: supplementary
/// groups, then gid, then uid, and `HOME`, `USER` and `LOGNAME` set to the user's. A no-op
/// returning `Ok(false)` when not running as root; `Ok(true)` when it switched. Call it early,
/// before other threads read the environment.
pub fn become_user(name: &str) -> Result<bool, PgError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(false);
    }
    let account = lookup(name)?;
    let doing = format!("switch to OS user {name}");
    let c_name = c_string(name)?;
    raise_memlock_limit(MEMLOCK_LIMIT);
    // SAFETY: plain libc calls with a valid NUL-terminated name; glibc applies set*id to every
    // thread of the process.
    unsafe {
        if libc::initgroups(c_name.as_ptr(), account.gid) != 0 {
            return Err(PgError::io(format!("{doing}: set supplementary groups"), last_os_error()));
        }
        if libc::setgid(account.gid) != 0 {
            return Err(PgError::io(format!("{doing}: setgid({})", account.gid), last_os_error()));
        }
        if libc::setuid(account.uid) != 0 {
            return Err(PgError::io(format!("{doing}: setuid({})", account.uid), last_os_error()));
        }
        if libc::geteuid() != account.uid || libc::getuid() != account.uid {
            return Err(PgError::Other(format!("{doing}: the uid did not change")));
        }
    }
    std::env::set_var("HOME", &account.home);
    std::env::set_var("USER", name);
    std::env::set_var("LOGNAME", name);
    tracing::info!(user = name, uid = account.uid, gid = account.gid, "switched to unprivileged OS user");
    Ok(true)
}

/// The uid and gid of the OS user `name`, e.g. to chown directories before `become_user`.
pub fn user_ids(name: &str) -> Result<(u32, u32), PgError> {
    let account = lookup(name)?;
    Ok((account.uid, account.gid))
}

fn lookup(name: &str) -> Result<Account, PgError> {
    let c_name = c_string(name)?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: zeroed passwd is a valid out-parameter; buf outlives every use of the strings
        // that getpwnam_r points into it, which are copied before returning.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc =
            unsafe { libc::getpwnam_r(c_name.as_ptr(), &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(PgError::io(format!("look up OS user {name}"), std::io::Error::from_raw_os_error(rc)));
        }
        if result.is_null() {
            return Err(PgError::Other(format!(
                "OS user {name:?} does not exist: PostgreSQL cannot run as root, so pgrepl runs it as \
                 that user; create it (useradd --system {name}) or set `postgres.run_as` to an existing user"
            )));
        }
        let home = if pwd.pw_dir.is_null() {
            "/".to_string()
        } else {
            // SAFETY: getpwnam_r succeeded, so pw_dir points to a NUL-terminated string in buf.
            unsafe { CStr::from_ptr(pwd.pw_dir) }.to_string_lossy().into_owned()
        };
        return Ok(Account { uid: pwd.pw_uid, gid: pwd.pw_gid, home });
    }
}

fn c_string(name: &str) -> Result<CString, PgError> {
    CString::new(name).map_err(|_| PgError::Other(format!("OS user name {name:?} contains a NUL byte")))
}

fn last_os_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_uid_zero_and_missing_users_are_named() {
        assert_eq!(user_ids("root").unwrap(), (0, 0));
        let msg = user_ids("no-such-user-pgrepl").unwrap_err().to_string();
        assert!(msg.contains("no-such-user-pgrepl") && msg.contains("useradd --system"), "{msg}");
    }
}
