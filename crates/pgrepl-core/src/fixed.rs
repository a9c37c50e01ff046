//! Fixed roles: the container image's seed modes (`run-postgresql-master`/`-slave`,
//! `REPLICATE_FROM`), where the environment, not a leader lease, says who is the primary, and
//! there is no store and no automatic failover (as in the seeds). `decide_fixed()` turns one
//! observation of this server and of its upstream into one step. Pure, like `decide()`.
//!
//! What it guarantees: a primary-shaped data directory is never deleted (a former primary
//! started as a replica is rewound); a replica's data is wiped only when configuration says so
//! (`destroy_on_restart`), once per start, and only once its upstream answers, so that a
//! replica is never emptied while its primary is away; data of another cluster is refused,
//! never touched; promotion always goes through `pg_ctl promote`, so a promoted node is on a
//! new timeline that a later rewind can tell apart.

use crate::local::{DataDir, Server, Upstream};
use crate::names::{SystemId, Timeline};
use std::fmt;

/// What the environment makes this member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FixedRole {
    /// A primary (`run-postgresql-master`, or no `REPLICATE_FROM`).
    Primary,
    /// A replica of `upstream` (`run-postgresql-slave`, `REPLICATE_FROM`); with `promote`
    /// (`PROMOTE_MASTER`) it becomes a primary, also while its upstream is down.
    Replica { upstream: Upstream, promote: bool },
}

/// What this member's upstream answered when asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamState {
    /// Not asked this cycle (nothing depends on it).
    Unknown,
    /// The name did not resolve, or nothing answered, or the login was refused: `why` says.
    Unreachable { why: String },
    /// The upstream's name or address is this member itself (at the same port).
    Itself,
    /// It answered: its cluster, timeline, and whether it runs as a primary.
    Answered { system_id: SystemId, timeline: Timeline, primary: bool },
}

/// Everything one cycle of a fixed-role member knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedObservation {
    pub role: FixedRole,
    /// `destroy_on_restart` is set and this start has not yet wiped the replica's data.
    pub destroy_pending: bool,
    pub data: DataDir,
    /// The data directory carries the mark of a bootstrap that did not finish.
    pub bootstrap_unfinished: bool,
    pub server: Server,
    /// Since this process started, the configured passwords have been applied (primary) or
    /// written to the password file (replica).
    pub passwords_applied: bool,
    /// A running replica has not streamed for longer than the stall bound.
    pub stalled: bool,
    pub upstream: UpstreamState,
}

/// The closed set of steps a fixed-role member takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FixedAction {
    /// `initdb` (unless an unfinished bootstrap left a directory), start, create the roles and
    /// the database.
    Bootstrap,
    /// Start a primary-shaped data directory.
    StartPrimary,
    /// Start as a replica of the upstream (it may be down: the replica serves reads and
    /// connects when it returns), or of nobody when it is to be promoted.
    StartReplica,
    /// Reset every configured password on this primary, as the seeds do on every start.
    SetPasswords,
    /// Write the replication password into the password file of a running replica (a
    /// starting one writes it as it starts).
    WritePassfile,
    /// Clone the upstream with `pg_basebackup` (the data directory is empty).
    Clone,
    /// Stop and delete this replica's data directory so the next step clones afresh.
    Reinitialize,
    /// `pg_ctl promote`: end recovery on a new timeline.
    Promote,
    /// Stop a running primary that the environment makes a replica.
    Stop,
    /// Rewind this (former primary's, or diverged) data directory from the upstream, then start
    /// it as a replica.
    Rewind,
    /// Nothing can be done until something changes (say, the upstream answers).
    Wait,
    /// The configuration cannot work with what is on disk: exit with the reason, touching nothing.
    Refuse,
    /// All is as it should be.
    Nothing,
}

/// Why, as one sentence for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FixedReason {
    NewPrimary,
    ResumeBootstrap,
    StartPrimary,
    PromoteStandbyData,
    ResetPasswords,
    PrimaryRunning,
    UpstreamIsItself(Upstream),
    WaitForUpstream { upstream: Upstream, why: String },
    UpstreamNotPrimary(Upstream),
    CloneUpstream(Upstream),
    DestroyOnRestart(Upstream),
    ForeignData { found: SystemId, upstream: Upstream, theirs: SystemId },
    NeverCloned,
    PromoteRequested,
    StartToPromote,
    Promoted,
    StartReplica(Upstream),
    RunningAsPrimary(Upstream),
    FormerPrimary(Upstream),
    Diverged(Upstream),
    WritePassfile,
    Streaming(Upstream),
    CatchingUp(Upstream),
}

/// One step and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedDecision {
    pub action: FixedAction,
    pub reason: FixedReason,
}

fn step(action: FixedAction, reason: FixedReason) -> FixedDecision {
    FixedDecision { action, reason }
}

pub fn decide_fixed(o: &FixedObservation) -> FixedDecision {
    match &o.role {
        FixedRole::Primary => as_primary(o),
        FixedRole::Replica { promote: true, .. } => promoting(o),
        FixedRole::Replica { upstream, promote: false } => as_replica(o, upstream),
    }
}

/// A primary, or a replica being promoted once its data is a primary's.
fn as_primary(o: &FixedObservation) -> FixedDecision {
    use FixedAction as A;
    use FixedReason as R;
    match (&o.data, &o.server) {
        (DataDir::Missing, _) => step(A::Bootstrap, R::NewPrimary),
        (_, _) if o.bootstrap_unfinished => step(A::Bootstrap, R::ResumeBootstrap),
        // A replica's data made the primary: start it as a replica, then promote it, so that
        // it moves to a new timeline (starting it without standby.signal would not).
        (DataDir::Standby { .. }, Server::Stopped) => step(A::StartReplica, R::PromoteStandbyData),
        (DataDir::Primary { .. }, Server::Stopped) => step(A::StartPrimary, R::StartPrimary),
        (_, Server::Replica { .. }) => step(A::Promote, R::PromoteStandbyData),
        (_, Server::Primary { .. }) if !o.passwords_applied => step(A::SetPasswords, R::ResetPasswords),
        (_, Server::Primary { .. }) => step(A::Nothing, R::PrimaryRunning),
    }
}

/// `PROMOTE_MASTER`: become a primary from the replica's own data, whatever the upstream does.
fn promoting(o: &FixedObservation) -> FixedDecision {
    use FixedAction as A;
    use FixedReason as R;
    match (&o.data, &o.server) {
        (DataDir::Missing, _) => step(A::Refuse, R::NeverCloned),
        (DataDir::Standby { .. }, Server::Stopped) => step(A::StartReplica, R::StartToPromote),
        (_, Server::Replica { .. }) => step(A::Promote, R::PromoteRequested),
        (DataDir::Primary { .. }, Server::Stopped) => step(A::StartPrimary, R::Promoted),
        (_, Server::Primary { .. }) if !o.passwords_applied => step(A::SetPasswords, R::ResetPasswords),
        (_, Server::Primary { .. }) => step(A::Nothing, R::Promoted),
    }
}

fn as_replica(o: &FixedObservation, upstream: &Upstream) -> FixedDecision {
    use FixedAction as A;
    use FixedReason as R;
    let up = || upstream.clone();
    let answer = match &o.upstream {
        UpstreamState::Itself => return step(A::Refuse, R::UpstreamIsItself(up())),
        UpstreamState::Answered { system_id, timeline, primary } => Some((*system_id, *timeline, *primary)),
        UpstreamState::Unknown | UpstreamState::Unreachable { .. } => None,
    };
    let wait = || {
        let why = match &o.upstream {
            UpstreamState::Unreachable { why } => why.clone(),
            _ => "not asked yet".to_string(),
        };
        step(A::Wait, R::WaitForUpstream { upstream: up(), why })
    };
    // Another cluster's data is never used, nor (unless configuration says to wipe a replica's)
    // touched.
    if let (Some(found), Some((theirs, _, _))) = (o.data.system_id(), answer) {
        let wipe_allowed = o.destroy_pending && matches!(o.data, DataDir::Standby { .. });
        if found != theirs && !wipe_allowed {
            return step(A::Refuse, R::ForeignData { found, upstream: up(), theirs });
        }
    }
    let upstream_primary = matches!(answer, Some((_, _, true)));
    match (&o.data, &o.server) {
        (DataDir::Missing, _) if upstream_primary => step(A::Clone, R::CloneUpstream(up())),
        (DataDir::Missing, _) if answer.is_some() => step(A::Wait, R::UpstreamNotPrimary(up())),
        (DataDir::Missing, _) => wait(),
        (DataDir::Standby { .. }, _) if o.destroy_pending => match answer {
            Some(_) if upstream_primary => step(A::Reinitialize, R::DestroyOnRestart(up())),
            Some(_) => step(A::Wait, R::UpstreamNotPrimary(up())),
            None => wait(),
        },
        (_, Server::Primary { .. }) => step(A::Stop, R::RunningAsPrimary(up())),
        // A former primary (the old master started as a replica of the promoted node): rewind
        // it onto the upstream's timeline rather than keep a second history.
        (DataDir::Primary { .. }, Server::Stopped) if upstream_primary => step(A::Rewind, R::FormerPrimary(up())),
        (DataDir::Primary { .. }, Server::Stopped) if answer.is_some() => step(A::Wait, R::UpstreamNotPrimary(up())),
        (DataDir::Primary { .. }, Server::Stopped) => wait(),
        (DataDir::Standby { .. }, Server::Stopped) => step(A::StartReplica, R::StartReplica(up())),
        (_, Server::Replica { streaming, timeline, .. }) => {
            let upstream_ahead = matches!(answer, Some((_, theirs, true)) if theirs > *timeline);
            if !o.passwords_applied {
                step(A::WritePassfile, R::WritePassfile)
            } else if *streaming {
                step(A::Nothing, R::Streaming(up()))
            } else if o.stalled && upstream_ahead {
                step(A::Rewind, R::Diverged(up()))
            } else {
                step(A::Nothing, R::CatchingUp(up()))
            }
        }
    }
}

/// Whether this cycle must ask the upstream how it is: a replica asks until it streams (to
/// wait for it, clone it, check its cluster, rewind onto it), and not while it streams.
pub fn wants_upstream(role: &FixedRole, server: &Server) -> bool {
    match role {
        FixedRole::Primary | FixedRole::Replica { promote: true, .. } => false,
        FixedRole::Replica { promote: false, .. } => !matches!(server, Server::Replica { streaming: true, .. }),
    }
}

impl FixedDecision {
    /// Whether the cycle's outcome should make the process exit (non-zero).
    pub fn is_fatal(&self) -> bool {
        self.action == FixedAction::Refuse
    }
}

impl fmt::Display for FixedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |u: &Upstream| format!("{}:{}", u.host, u.port);
        match self {
            FixedReason::NewPrimary => f.write_str("bootstrapping a new primary: the data directory is empty"),
            FixedReason::ResumeBootstrap => f.write_str("resuming a bootstrap that did not finish"),
            FixedReason::StartPrimary => f.write_str("starting the primary with its data"),
            FixedReason::PromoteStandbyData => {
                f.write_str("this primary's data directory is a replica's: starting it and promoting it")
            }
            FixedReason::ResetPasswords => f.write_str("resetting every password to its configured value"),
            FixedReason::PrimaryRunning => f.write_str("primary, running"),
            FixedReason::UpstreamIsItself(u) => write!(
                f,
                "the primary to replicate from, {}, is this container itself; point it at the primary's host \
                 name or address (REPLICATE_FROM, POSTGRESQL_MASTER_SERVICE_NAME or POSTGRESQL_MASTER_IP)",
                at(u)
            ),
            FixedReason::WaitForUpstream { upstream, why } => {
                write!(f, "waiting for the primary at {} to accept connections: {why}", at(upstream))
            }
            FixedReason::UpstreamNotPrimary(u) => {
                write!(f, "waiting for {} to run as a primary: it answers, but is in recovery", at(u))
            }
            FixedReason::CloneUpstream(u) => write!(f, "cloning the primary at {} (pg_basebackup)", at(u)),
            FixedReason::DestroyOnRestart(u) => write!(
                f,
                "removing this replica's data to clone {} afresh (destroy_on_restart / DESTROY_DATABASE_ON_RESTART)",
                at(u)
            ),
            FixedReason::ForeignData { found, upstream, theirs } => write!(
                f,
                "the data directory belongs to another cluster (system identifier {found}) than the primary at {} \
                 ({theirs}); it was left untouched: give this replica an empty volume, or set \
                 DESTROY_DATABASE_ON_RESTART=true to have a replica's data replaced",
                at(upstream)
            ),
            FixedReason::NeverCloned => f.write_str(
                "promotion was asked (PROMOTE_MASTER) but this replica was never cloned: its data directory is \
                 empty, so there is nothing to promote; start it without PROMOTE_MASTER first",
            ),
            FixedReason::PromoteRequested => f.write_str("promoting this replica to primary (PROMOTE_MASTER)"),
            FixedReason::StartToPromote => f.write_str("starting this replica's data in order to promote it"),
            FixedReason::Promoted => f.write_str("primary, promoted (PROMOTE_MASTER)"),
            FixedReason::StartReplica(u) => write!(f, "starting as a replica of {}", at(u)),
            FixedReason::RunningAsPrimary(u) => {
                write!(f, "this server runs as a primary but is configured as a replica of {}: stopping it", at(u))
            }
            FixedReason::FormerPrimary(u) => write!(
                f,
                "this data directory was a primary's: rewinding it onto {} with pg_rewind so it rejoins as a replica",
                at(u)
            ),
            FixedReason::Diverged(u) => {
                write!(f, "this replica cannot stream from {}, which is on a newer timeline: rewinding it", at(u))
            }
            FixedReason::WritePassfile => f.write_str("writing the replication password into the password file"),
            FixedReason::Streaming(u) => write!(f, "replica, streaming from {}", at(u)),
            FixedReason::CatchingUp(u) => write!(f, "replica of {}, not streaming yet", at(u)),
        }
    }
}

/// Whether an upstream at `port` whose name resolved to `resolved` is this member, listening
/// on `own_port` at `own` (its interface addresses) or on loopback.
pub fn points_at_itself(resolved: &[std::net::IpAddr], own: &[std::net::IpAddr], port: u16, own_port: u16) -> bool {
    port == own_port && resolved.iter().any(|ip| ip.is_loopback() || ip.is_unspecified() || own.contains(ip))
}
