//! The setup of a cluster directory that `up` and `node` share: the configuration of a start
//! (the directory's file, the environment, `up`'s flags), the directory itself (made, or
//! reused, and given to the cluster's OS user), the files a start settles (secrets, CA,
//! `pgrepl.toml`), and whether a member's PostgreSQL still runs from before. A first start that
//! fails takes back what it made (`Fresh::undo`); nothing here ever removes what was there
//! before. Writes no cluster state: the spec is each command's own business.

use crate::cluster::{enter_as, read_dir_config};
use crate::commands::ca;
use crate::config::{self, Config, FromEnv, RawConfig};
use crate::layout::Layout;
use crate::supervisor::is_alive;
use anyhow::{bail, Context};
use pgrepl_agent::Secrets;
use pgrepl_core::{MemberName, PasswordKind};
use rand::distributions::{Alphanumeric, DistString};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

pub(crate) fn generated_password() -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), 32)
}

/// `up`'s command-line settings, applied over the file and the environment.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    pub replicas: Option<i64>,
    pub port: Option<i64>,
    pub ro_port: Option<i64>,
    pub base_port: Option<i64>,
}

/// Where the configuration of a start comes from, besides the directory's own `pgrepl.toml`
/// (hand-written, or written by an earlier start), which comes first when there is one.
pub(crate) struct Given<'a> {
    /// The environment's settings, over the file's.
    pub env: &'a [FromEnv],
    /// A file to start from when the directory has none (`up --config`).
    pub file: Option<&'a Path>,
    /// Applied last; a setting given so is named as such in errors, not after a variable it
    /// overrode.
    pub flags: Flags,
    /// Whether the cluster has started from this directory before, so that its fixed
    /// settings (the store, and on etcd the cluster's name) must not change: for `up` once the
    /// directory has its `pgrepl.toml`, for `node` (whose file may be hand-written) once it has
    /// its secrets.
    pub started: bool,
}

/// The configuration of this start: the directory's file (or the given one), then the
/// environment, then the flags; checked against the earlier start's fixed settings.
pub(crate) fn settle_config(layout: &Layout, given: Given) -> anyhow::Result<(RawConfig, Config)> {
    let before = if layout.config().exists() { Some(read_dir_config(layout)?) } else { None };
    let mut raw = match (&before, given.file) {
        (Some(before), _) => before.clone(),
        (None, Some(file)) => config::read_file(file)?,
        (None, None) => RawConfig::default(),
    };
    config::apply_env(&mut raw, given.env)?;
    let flags = &given.flags;
    raw.replicas = flags.replicas.or(raw.replicas);
    raw.port = flags.port.or(raw.port);
    raw.ro_port = flags.ro_port.or(raw.ro_port);
    raw.base_port = flags.base_port.or(raw.base_port);
    let flagged = [("replicas", flags.replicas), ("port", flags.port), ("ro_port", flags.ro_port)];
    let mut env = given.env.to_vec();
    env.retain(|e| !flagged.iter().any(|(field, set)| *field == e.field && set.is_some()));
    let config = config::validate(&raw, &env)?;
    if given.started {
        config::check_unchanged(&before.unwrap_or_default(), &config, &env)?;
    }
    Ok((raw, config))
}

/// Makes the directory (unless it has a cluster), owned by the cluster's OS user, and becomes
/// that user. A new directory (or one found empty) comes back as `Fresh`, which the start
/// drops (keeps) once its cluster runs or undoes when it fails before.
pub(crate) fn prepare_directory(layout: &Layout, config: &Config, existing: bool) -> anyhow::Result<Option<Fresh>> {
    if layout.longest_socket_path() > 100 {
        bail!("the cluster directory path {} is too long for PostgreSQL's unix sockets (at most about 60 characters); choose a shorter --dir", layout.dir.display());
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let fresh = if existing {
        None
    } else {
        let found = std::fs::metadata(&layout.dir).ok();
        if found.is_some() && std::fs::read_dir(&layout.dir).is_ok_and(|mut entries| entries.next().is_some()) {
            bail!(
                "{} exists, is not empty and is not a pgrepl cluster directory (no pgrepl.toml); refusing to use it: choose another --dir",
                layout.dir.display()
            );
        }
        // Deepest first: the directory, then each parent missing with it.
        let made: Vec<PathBuf> =
            layout.dir.ancestors().take_while(|dir| !dir.exists()).map(Path::to_path_buf).collect();
        let owner = found.filter(|_| root).map(|m| (m.uid(), m.gid()));
        let hand = match root {
            true => Some(RootHand::fork(&made, owner.map(|_| layout.dir.as_path()), owner)?),
            false => None,
        };
        let fresh = Fresh { dir: layout.dir.clone(), made, hand };
        if let Err(e) = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&layout.dir) {
            fresh.undo_or_warn();
            return Err(e).with_context(|| format!("create {}", layout.dir.display()));
        }
        Some(fresh)
    };
    let entered = (|| {
        if root {
            let (uid, gid) = pgrepl_pg::user_ids(&config.run_as)?;
            std::os::unix::fs::chown(&layout.dir, Some(uid), Some(gid))
                .with_context(|| format!("give {} to OS user {}", layout.dir.display(), config.run_as))?;
        }
        enter_as(&config.run_as, &layout.dir)
    })();
    match (entered, fresh) {
        (Err(e), Some(fresh)) => {
            fresh.undo_or_warn();
            Err(e)
        }
        (Err(e), None) => Err(e),
        (Ok(()), fresh) => Ok(fresh),
    }
}

/// The passwords of this start: given ones win, earlier ones are kept, missing ones generated.
/// Returns the kinds that changed from the earlier ones. The API token and the store's password
/// are kept beside them, as `config` has them (given now, or read from this file by
/// `read_dir_config`), so that the agents and the router, which read this file, get them
/// without argv or environment.
fn settle_secrets(layout: &Layout, config: &Config) -> anyhow::Result<Vec<PasswordKind>> {
    let old = if layout.secrets().exists() { Some(Secrets::load(&layout.secrets())?) } else { None };
    let given = &config.passwords;
    let pick = |given: &Option<String>, old: Option<&str>| {
        given.clone().or(old.map(str::to_string)).unwrap_or_else(generated_password)
    };
    let secrets = Secrets {
        user: config.names.app.as_ref().map(|_| pick(&given.user, old.as_ref().and_then(|o| o.user.as_deref()))),
        admin: pick(&given.admin, old.as_ref().map(|o| o.admin.as_str())),
        replication: pick(&given.replication, old.as_ref().map(|o| o.replication.as_str())),
        api_token: config.api_token.as_ref().map(|t| t.expose().to_string()),
        store_password: config.store_access.password.clone(),
    };
    let changed = match &old {
        Some(old) => PasswordKind::ALL.into_iter().filter(|k| old.get(*k) != secrets.get(*k)).collect(),
        None => vec![],
    };
    secrets.save(&layout.secrets())?;
    Ok(changed)
}

/// The files a start settles, in this order: the secrets, the cluster CA, then `pgrepl.toml`
/// (last: a directory without it is no cluster's yet). Returns the password kinds that changed.
/// `by` names the command in the file's first line.
pub(crate) fn settle_files(
    layout: &Layout,
    raw: &RawConfig,
    config: &Config,
    by: &str,
) -> anyhow::Result<Vec<PasswordKind>> {
    let changed = settle_secrets(layout, config)?;
    ca::settle(layout, config)?;
    write_config(layout, raw, config, by)?;
    Ok(changed)
}

/// Writes `pgrepl.toml` without any password or token (those live in the secrets file), with the role
/// names made explicit so the directory's configuration reads the same on every later load.
/// `by` names the command in the file's first line.
pub(crate) fn write_config(layout: &Layout, raw: &RawConfig, config: &Config, by: &str) -> anyhow::Result<()> {
    let mut stored = raw.clone();
    stored.database.user = config.names.app.as_ref().map(|a| a.user.clone());
    stored.database.name = config.names.app.as_ref().map(|a| a.database.clone());
    stored.database.replication_user = Some(config.names.replication_user.clone());
    stored.database.password = None;
    stored.database.admin_password = None;
    stored.database.replication_password = None;
    stored.api_token = None;
    stored.store_password = None;
    // The CA lives in ca.crt and ca.key beside the secrets.
    stored.tls.ca_cert = None;
    stored.tls.ca_key = None;
    let text = format!(
        "# pgrepl cluster configuration, written by `{by}` (passwords live in secrets.json).\n{}",
        toml::to_string_pretty(&stored)?
    );
    let path = layout.config();
    pgrepl_pg::write_atomic(&path, text.as_bytes(), 0o600).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// Whether the PostgreSQL of `member` runs (from its data directory in this cluster directory).
pub(crate) fn postmaster_runs(layout: &Layout, member: &MemberName) -> bool {
    let postmaster = std::fs::read_to_string(layout.data(member).join("postmaster.pid")).unwrap_or_default();
    let postmaster_pid = postmaster.lines().next().and_then(|l| l.trim().parse().ok());
    postmaster_pid.is_some_and(is_alive)
}

/// A cluster directory this start made, or found empty: everything in it is this start's.
/// Dropped once the cluster runs, it is kept; `undo` when the start fails before removes what is in
/// it and the directories this start made, and gives a directory that was there its owner
/// back: a directory that was there stays, and nothing else is touched.
pub(crate) struct Fresh {
    dir: PathBuf,
    /// The directories this start made, deepest first (the cluster directory and each parent
    /// missing with it); none when the directory was there.
    made: Vec<PathBuf>,
    /// A process that stays root does what the cluster's OS user may not: rmdir in a
    /// root-owned parent, and chown back a directory that was there (root gave it to the
    /// cluster's OS user); `None` when this process was not root.
    hand: Option<RootHand>,
}

impl Fresh {
    /// Removes what this start put in the directory, then the directories it made.
    pub fn undo(self) -> anyhow::Result<()> {
        let entries = std::fs::read_dir(&self.dir).with_context(|| format!("read {}", self.dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            removed.with_context(|| format!("remove {}", path.display()))?;
        }
        match self.hand {
            Some(hand) => {
                if !hand.carry_out() {
                    bail!("remove {} (emptied; left in place)", self.dir.display());
                }
            }
            None => {
                for dir in &self.made {
                    std::fs::remove_dir(dir)
                        .with_context(|| format!("remove {} (emptied; left in place)", dir.display()))?;
                }
            }
        }
        Ok(())
    }

    /// `undo`, for a start already failing: a failure to undo is told, not returned.
    pub fn undo_or_warn(self) {
        let dir = self.dir.clone();
        if let Err(e) = self.undo() {
            tracing::warn!("take back what this start made in {}: {e:#}", dir.display());
        }
    }
}

/// A child forked while this process is still root, which waits for one word and then only
/// gives `owner` back and removes `dirs` (each empty by then, deepest first): what the process
/// cannot do once it has become the cluster's OS user, whose directory may sit in a parent only
/// root writes (a root shell's `/tmp/x/c`, say). It does nothing unless told to
/// (`carry_out`); dropped, it ends doing nothing.
pub(crate) struct RootHand {
    pid: libc::pid_t,
    /// The write end of the pipe the child reads its word from (closed on exec).
    tell: Option<OwnedFd>,
}

/// The word that tells the child to carry out its work.
const GO: u8 = b'y';

impl RootHand {
    pub fn fork(dirs: &[PathBuf], owned: Option<&Path>, owner: Option<(u32, u32)>) -> anyhow::Result<RootHand> {
        // Everything the child uses is made before the fork: after it, in a process with other
        // threads, the child may only call async-signal-safe functions.
        let c_path = |p: &Path| CString::new(p.as_os_str().as_bytes()).context("a path with a NUL byte");
        let dirs: Vec<CString> = dirs.iter().map(|d| c_path(d)).collect::<anyhow::Result<_>>()?;
        let owned = owned.map(c_path).transpose()?;
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array it is given; fork's child below
        // calls only async-signal-safe functions (close, read, chown, rmdir, _exit) on memory
        // made before the fork, and never returns.
        unsafe {
            if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
                return Err(std::io::Error::last_os_error()).context("make a pipe");
            }
            let pid = libc::fork();
            if pid < 0 {
                let e = std::io::Error::last_os_error();
                libc::close(fds[0]);
                libc::close(fds[1]);
                return Err(e).context("fork a process that stays root");
            }
            if pid == 0 {
                libc::close(fds[1]);
                let mut word = 0u8;
                let read = loop {
                    let n = libc::read(fds[0], (&mut word as *mut u8).cast(), 1);
                    if n >= 0 || *libc::__errno_location() != libc::EINTR {
                        break n;
                    }
                };
                if read != 1 || word != GO {
                    libc::_exit(0);
                }
                let mut failed = 0;
                if let (Some(path), Some((uid, gid))) = (&owned, owner) {
                    if libc::chown(path.as_ptr(), uid, gid) != 0 {
                        failed = 1;
                    }
                }
                for dir in &dirs {
                    if libc::rmdir(dir.as_ptr()) != 0 && *libc::__errno_location() != libc::ENOENT {
                        libc::_exit(1);
                    }
                }
                libc::_exit(failed);
            }
            libc::close(fds[0]);
            Ok(RootHand { pid, tell: Some(OwnedFd::from_raw_fd(fds[1])) })
        }
    }

    /// Tells the child to do its work and waits for it: true when all of it was done.
    pub fn carry_out(mut self) -> bool {
        self.end(true)
    }

    fn end(&mut self, go: bool) -> bool {
        let Some(tell) = self.tell.take() else { return false };
        if go {
            // SAFETY: writing one byte from a local to the pipe this struct owns.
            let written = unsafe { libc::write(tell.as_raw_fd(), (&GO as *const u8).cast(), 1) };
            if written != 1 {
                return false;
            }
        }
        drop(tell);
        let mut status = 0;
        loop {
            // SAFETY: waiting for the child this struct forked, which nothing else waits for.
            let pid = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if pid == self.pid {
                return go && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
            }
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return false;
            }
        }
    }
}

impl Drop for RootHand {
    fn drop(&mut self) {
        self.end(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_removes_what_a_start_made_and_keeps_a_directory_that_was_there() {
        let tmp = tempfile::tempdir().unwrap();
        let made = tmp.path().join("a/b");
        let fresh = Fresh { dir: made.clone(), made: vec![made.clone(), tmp.path().join("a")], hand: None };
        std::fs::create_dir_all(made.join("store")).unwrap();
        std::fs::write(made.join("secrets.json"), "{}").unwrap();
        fresh.undo().unwrap();
        assert!(!tmp.path().join("a").exists(), "the directory and the parent made with it are gone");
        assert!(tmp.path().exists());

        let there = tmp.path().join("there");
        std::fs::create_dir(&there).unwrap();
        std::fs::write(there.join("pgrepl.toml"), "").unwrap();
        Fresh { dir: there.clone(), made: vec![], hand: None }.undo().unwrap();
        assert!(there.exists(), "a directory that was there stays");
        assert_eq!(std::fs::read_dir(&there).unwrap().count(), 0);
    }

    #[test]
    fn a_root_hand_does_nothing_unless_told() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        drop(RootHand::fork(std::slice::from_ref(&dir), None, None).unwrap());
        assert!(dir.exists(), "dropped, it removed nothing");
        assert!(RootHand::fork(std::slice::from_ref(&dir), None, None).unwrap().carry_out());
        assert!(!dir.exists());
        std::fs::create_dir_all(dir.join("not-empty")).unwrap();
        assert!(
            !RootHand::fork(std::slice::from_ref(&dir), None, None).unwrap().carry_out(),
            "rmdir of a full directory fails"
        );
        assert!(dir.join("not-empty").exists());
    }
}
