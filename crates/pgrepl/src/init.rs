//! PID 1 in a container. The kernel hands every orphaned process to PID 1, and PostgreSQL's
//! postmaster is one (`pg_ctl` starts it and exits); a PID 1 that never waits for them leaves
//! zombies that look alive. So when pgrepl is PID 1 it forks: the parent stays PID 1, passes
//! the signals a container runtime sends on to the child, reaps every process that ends, and
//! exits with the child's status; the child goes on to run the command. Called before any
//! thread starts.

use std::sync::atomic::{AtomicI32, Ordering};

static CHILD: AtomicI32 = AtomicI32::new(0);

/// The signals passed on: what `docker stop`, `docker kill -s` and a terminal send.
const FORWARDED: [libc::c_int; 6] =
    [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2];

extern "C" fn forward(signal: libc::c_int) {
    let child = CHILD.load(Ordering::SeqCst);
    if child > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(child, signal) };
    }
}

/// Returns at once unless this process is PID 1; then returns only in the child.
pub fn split_off_init() {
    // SAFETY: getpid and fork are called before any other thread exists; the parent only
    // calls async-signal-safe functions (sigaction, waitpid, kill, _exit) afterwards.
    unsafe {
        if libc::getpid() != 1 {
            return;
        }
        let child = libc::fork();
        if child <= 0 {
            return; // the child (or no fork: run unreaped rather than not at all)
        }
        CHILD.store(child, Ordering::SeqCst);
        for signal in FORWARDED {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
        loop {
            let mut status = 0;
            let pid = libc::waitpid(-1, &mut status, 0);
            if pid == child {
                let code =
                    if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
                libc::_exit(code);
            }
            if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
                libc::_exit(0);
            }
        }
    }
}
