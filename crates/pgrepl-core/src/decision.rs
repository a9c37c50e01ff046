//! What `decide()` returns: one `Action` for the agent to carry out, and the `Reason` for it,
//! whose `Display` is the one sentence the agent logs for the cycle and `pgrepl status` shows.

use crate::names::{MemberName, SystemId, Timeline};
use crate::spec::PasswordKind;
use std::fmt;

/// The closed set of things an agent may do in one cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `initdb` (unless a marked, unfinished bootstrap left a data directory), start, create
    /// roles and database, then claim `initialize` and the lease.
    Bootstrap,
    /// Clone the leader with `pg_basebackup` over this member's slot.
    CloneFrom { leader: MemberName },
    /// Start a primary-shaped data directory (this member holds the lease).
    StartAsPrimary,
    /// Start a standby, streaming from `leader` (or from nobody yet).
    StartAsReplica { leader: Option<MemberName> },
    /// Point a running replica at `leader` (new `primary_conninfo`, reload).
    Follow { leader: MemberName },
    /// Stop this running replica (fast) and start it again as a replica of `leader`: its WAL
    /// receiver gave up, or waits, and PostgreSQL makes no new attempt to stream by itself.
    RestartReplica { leader: MemberName },
    /// Take the free leader lease.
    AcquireLease,
    /// `pg_ctl promote` this replica (it holds the lease), then create the other members'
    /// slots at once so they can follow. With `claim_sync` (synchronous mode) first record in
    /// the store that nobody else is known to hold this leader's commits, before it acks any.
    Promote { create_slots: Vec<String>, claim_sync: bool },
    /// Keep the lease; nothing else to do.
    RenewLease,
    /// Keep the lease (when held) and bring the server in line with the spec.
    ApplySpec(SpecWork),
    /// Stop this primary; release the lease too when held.
    Demote { release_lease: bool },
    /// Rewind this stopped former primary from `leader` with `pg_rewind`, then start it as a
    /// replica; a failed rewind moves the data directory aside so the next cycle clones.
    Rewind { leader: MemberName },
    /// Stop and delete this replica's data directory so the next cycle clones afresh.
    /// Only when configuration says so (`destroy_on_restart`).
    Reinitialize,
    /// Stop this server for `pgrepl stop` (a checkpoint first, the lease renewed until it is
    /// down), then give the lease up when held.
    StopServer { release_lease: bool },
    /// Give the lease up.
    ReleaseLease,
    /// Nothing can be done until something else changes.
    Wait,
    /// All is as it should be.
    Nothing,
}

impl Action {
    /// The action's name in metrics and the API (`clone`, `promote`, ...), one per variant.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Bootstrap => "bootstrap",
            Action::CloneFrom { .. } => "clone",
            Action::StartAsPrimary => "start_primary",
            Action::StartAsReplica { .. } => "start_replica",
            Action::Follow { .. } => "follow",
            Action::AcquireLease => "acquire_lease",
            Action::Promote { .. } => "promote",
            Action::RenewLease => "renew_lease",
            Action::ApplySpec(_) => "apply_spec",
            Action::Demote { .. } => "demote",
            Action::Rewind { .. } => "rewind",
            Action::RestartReplica { .. } => "restart_replica",
            Action::Reinitialize => "reinitialize",
            Action::StopServer { .. } => "stop",
            Action::ReleaseLease => "release_lease",
            Action::Wait => "wait",
            Action::Nothing => "nothing",
        }
    }
}

/// Work that brings a running server in line with the spec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecWork {
    /// Primary: `ALTER ROLE .. PASSWORD`; replica: rewrite the password file (replication only).
    pub passwords: Vec<PasswordKind>,
    pub create_slots: Vec<String>,
    pub drop_slots: Vec<String>,
    /// Record this member and its timeline as `last_leader`.
    pub record_leader: bool,
    /// Remove the `target` request: this member is the leader it asked for.
    pub clear_target: bool,
    /// Bring the `sync` record and `synchronous_standby_names` to this record, safely: through
    /// their union first, the final record only once its members hold what was acknowledged.
    pub sync: Option<crate::view::SyncRecord>,
}

impl SpecWork {
    pub fn is_empty(&self) -> bool {
        *self == SpecWork::default()
    }
}

impl fmt::Display for SpecWork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.passwords.is_empty() {
            let kinds: Vec<_> = self.passwords.iter().map(|k| k.to_string()).collect();
            parts.push(format!("set the {} password(s)", kinds.join(", ")));
        }
        if !self.create_slots.is_empty() {
            parts.push(format!("create slot(s) {}", self.create_slots.join(", ")));
        }
        if !self.drop_slots.is_empty() {
            parts.push(format!("drop slot(s) {}", self.drop_slots.join(", ")));
        }
        if self.record_leader {
            parts.push("record this member as the last leader".to_string());
        }
        if self.clear_target {
            parts.push("clear the fulfilled promote request".to_string());
        }
        if let Some(sync) = &self.sync {
            let names = crate::sync::standby_names(sync);
            parts.push(if names.is_empty() {
                "wait for no synchronous replica".to_string()
            } else {
                format!("wait for synchronous replica(s) {names}")
            });
        }
        f.write_str(&parts.join(", "))
    }
}

/// Why. Each variant renders as one plain sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    NoSpec,
    NotInSpec,
    StopRequested,
    KeptStopped,
    NewCluster,
    ResumeBootstrap,
    WaitingForBootstrap(Option<MemberName>),
    DataWithoutCluster(SystemId),
    ForeignData {
        found: SystemId,
        cluster: SystemId,
    },
    DestroyOnRestart,
    NoLeaderToClone,
    LeaderNotReady(MemberName),
    WaitingForSlot(MemberName),
    CloneLeader(MemberName),
    LeaseWithoutData,
    Healthy,
    SpecChanged(SpecWork),
    HandOver(MemberName),
    TargetNotReady(MemberName),
    HoldsLeaseAsReplica,
    StartLeader,
    GiveWayTo(MemberName),
    AnotherLeader(MemberName),
    FormerPrimary(MemberName),
    StartFollower(MemberName),
    NewUpstream(MemberName),
    Stalled(MemberName),
    /// This replica, pointed at the running leader, has not streamed for `secs` seconds.
    NotStreaming {
        leader: MemberName,
        secs: u64,
    },
    /// This replica replayed WAL off the leader's timeline history.
    Forked {
        leader: MemberName,
        fork: crate::fork::Fork,
    },
    /// This replica replayed WAL off the lost leader's timeline history, so it may not take over.
    ForkedFromLostLeader {
        lost: Option<MemberName>,
        fork: crate::fork::Fork,
    },
    Streaming(MemberName),
    CatchingUp(MemberName),
    /// This host's secret for `kind` is not the password `pgrepl passwd` gave the cluster.
    StaleSecret {
        kind: PasswordKind,
        leader: MemberName,
        streaming: bool,
    },
    PromoteRequested,
    WaitingForTarget(MemberName),
    ResumeLeadership,
    PrimaryWithoutLease(Option<MemberName>),
    NoLeaderManual(Option<MemberName>),
    CannotStart,
    StartWithoutLeader,
    FailoverRace(Option<MemberName>),
    NotACandidate(Option<MemberName>),
    OlderTimeline {
        mine: Timeline,
        theirs: Timeline,
    },
    TooFarBehind {
        lag: u64,
        max: u64,
    },
    NotSynchronous(Option<MemberName>),
    AwaitingPosition(MemberName),
    PeerAhead(MemberName),
    TooFewReports {
        reported: usize,
        needed: usize,
    },
    /// Maintenance mode: every sentence of a paused cluster says so.
    Paused(Box<Reason>),
    NotStartingPaused,
    NoFailoverPaused(Option<MemberName>),
    DemotedByHandPaused,
    NoDemotionPaused,
    NoRewindPaused(MemberName),
    NoRestartPaused(MemberName),
    NoWipePaused,
}

fn or_nobody(m: &Option<MemberName>) -> String {
    m.as_ref().map_or_else(|| "nobody".to_string(), |m| m.to_string())
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Reason::*;
        match self {
            NoSpec => write!(f, "waiting: the store holds no cluster spec yet"),
            NotInSpec => write!(f, "idle: this member is not in the cluster spec (removed by `pgrepl scale` or `pgrepl remove`)"),
            StopRequested => write!(f, "stopping PostgreSQL and giving up any leader lease: `pgrepl stop` asked for this member to be kept down"),
            KeptStopped => write!(f, "stopped, as `pgrepl stop` asked; `pgrepl start` runs it again"),
            NewCluster => write!(f, "bootstrapping a new cluster: the store has none and this member is the bootstrap member"),
            ResumeBootstrap => write!(f, "resuming the bootstrap of a new cluster: this member's data directory was initialized but the cluster is not recorded yet"),
            WaitingForBootstrap(m) => write!(f, "waiting for {} to bootstrap the cluster", or_nobody(m)),
            DataWithoutCluster(id) => write!(f, "refusing to start: the data directory holds system {id} but the store has no cluster; not touching it"),
            ForeignData { found, cluster } => write!(f, "refusing to start: the data directory belongs to another cluster (system {found}, this cluster is {cluster}); not touching it"),
            DestroyOnRestart => write!(f, "wiping this replica to clone afresh: destroy_on_restart is set"),
            NoLeaderToClone => write!(f, "waiting for a leader to clone from"),
            LeaderNotReady(l) => write!(f, "waiting for leader {l} to run as primary"),
            WaitingForSlot(l) => write!(f, "waiting for {l} to create this member's replication slot"),
            CloneLeader(l) => write!(f, "cloning {l}: this member has no data directory"),
            LeaseWithoutData => write!(f, "releasing the leader lease: this member has no data directory"),
            Healthy => write!(f, "primary, holding the leader lease"),
            SpecChanged(work) => write!(f, "applying the spec: {work}"),
            HandOver(t) => write!(f, "demoting to hand over to {t}, as requested"),
            TargetNotReady(t) => write!(f, "primary, holding the leader lease; the requested new leader {t} is not streaming, so not handing over yet"),
            HoldsLeaseAsReplica => write!(f, "promoting: this replica holds the leader lease"),
            StartLeader => write!(f, "starting PostgreSQL: this member holds the leader lease"),
            GiveWayTo(t) => write!(f, "releasing the leader lease: {t} is to be promoted"),
            AnotherLeader(l) => write!(f, "demoting: {l} holds the leader lease"),
            FormerPrimary(l) => write!(f, "rewinding this former primary to rejoin as a replica of {l}"),
            StartFollower(l) => write!(f, "starting as a replica of {l}"),
            NewUpstream(l) => write!(f, "following the new leader {l}"),
            Stalled(l) => write!(f, "rewinding: this replica cannot stream from {l} (diverged timeline)"),
            NotStreaming { leader, secs } => write!(f, "restarting PostgreSQL: this replica has not streamed from {leader} for {secs} s; its WAL receiver may have given up"),
            Forked { leader, fork } => write!(f, "rewinding: this replica's WAL forked from {leader}'s timeline: {fork}, so it can never stream from {leader} as it is"),
            ForkedFromLostLeader { lost, fork } => write!(f, "waiting: this replica's WAL forked from the timeline of the lost leader {}: {fork}, so it may not take over", or_nobody(lost)),
            Streaming(l) => write!(f, "replica, streaming from {l}"),
            CatchingUp(l) => write!(f, "replica of {l}, not streaming yet"),
            StaleSecret { kind, leader, streaming } => {
                let now = if *streaming { format!("it streams from {leader} over the connection it has, but") } else { format!("it does not stream from {leader} and") };
                write!(f, "this host's {kind} password is not the one `pgrepl passwd` gave the cluster: {now} cannot connect again until this host's secret holds the new password and its node is restarted")
            }
            PromoteRequested => write!(f, "taking the leader lease: a promote of this member was requested and the lease is free"),
            WaitingForTarget(t) => write!(f, "waiting for {t} to take the leader lease, as requested"),
            ResumeLeadership => write!(f, "taking the free leader lease: this member was the last leader"),
            PrimaryWithoutLease(l) => write!(f, "demoting: nobody holds the leader lease and the last leader was {}", or_nobody(l)),
            NoLeaderManual(l) => write!(f, "waiting: nobody holds the leader lease; the last leader was {}, automatic failover is off (use `pgrepl promote`)", or_nobody(l)),
            CannotStart => write!(f, "releasing the leader lease: PostgreSQL has not started as primary within primary_start_timeout, so a replica may take over"),
            StartWithoutLeader => write!(f, "starting as a replica: nobody holds the leader lease, and a running replica can take over"),
            FailoverRace(l) => write!(f, "taking the free leader lease: the leader {} is lost and no replica is ahead of this one", or_nobody(l)),
            NotACandidate(l) => write!(f, "waiting: nobody holds the leader lease (the last leader was {}) and this member is not a running replica that could take over", or_nobody(l)),
            OlderTimeline { mine, theirs } => write!(f, "waiting: this replica is on timeline {mine}, behind the lost leader's timeline {theirs}, so it may not take over"),
            TooFarBehind { lag, max } => write!(f, "waiting: this replica is {lag} bytes behind the lost leader, more than maximum_lag_on_failover ({max}), so it may not take over"),
            NotSynchronous(l) => write!(f, "waiting: synchronous mode is on and this replica is not recorded as holding every commit the lost leader {} acknowledged, so it may not take over", or_nobody(l)),
            AwaitingPosition(m) => write!(f, "waiting for {m} to report its position before racing for the free leader lease"),
            PeerAhead(m) => write!(f, "waiting: {m} is further ahead and may take the free leader lease"),
            TooFewReports { reported, needed } => write!(f, "waiting: {reported} of the synchronous replicas reported their position, {needed} are needed to prove who holds every acknowledged commit"),
            Paused(inner) => write!(f, "paused: {inner}"),
            NotStartingPaused => write!(f, "PostgreSQL is stopped and stays so in maintenance mode (no restart until `pgrepl resume`)"),
            NoFailoverPaused(l) => write!(f, "nobody holds the leader lease (the last leader was {}); no automatic failover in maintenance mode (`pgrepl promote MEMBER`, or `pgrepl resume`)", or_nobody(l)),
            DemotedByHandPaused => write!(f, "releasing the leader lease: this member holds it but runs as a replica (demoted by hand), and is not promoted back in maintenance mode"),
            NoDemotionPaused => write!(f, "primary without the leader lease; not demoting it in maintenance mode"),
            NoRewindPaused(l) => write!(f, "this replica cannot stream from {l} (diverged timeline); not rewinding it in maintenance mode"),
            NoRestartPaused(l) => write!(f, "this replica has not streamed from {l} for a while; not restarting it in maintenance mode"),
            NoWipePaused => write!(f, "destroy_on_restart is set, but this replica is not wiped in maintenance mode"),
        }
    }
}

impl Reason {
    /// Whether the sentence reports something gone wrong that an operator should hear of (the
    /// agent logs it as a warning), rather than the ordinary course of things.
    pub fn is_warning(&self) -> bool {
        match self {
            // Paused, a replica that cannot stream is left so: an operator should know.
            // So is one that does not stream from a running leader: restarting it may help, but
            // something (the network, the leader) may be wrong.
            Reason::Forked { .. }
            | Reason::ForkedFromLostLeader { .. }
            | Reason::NotStreaming { .. }
            | Reason::StaleSecret { .. }
            | Reason::NoRewindPaused(_)
            | Reason::NoRestartPaused(_) => true,
            Reason::Paused(inner) => inner.is_warning(),
            _ => false,
        }
    }
}

/// The outcome of one `decide()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub reason: Reason,
}

impl Decision {
    pub fn new(action: Action, reason: Reason) -> Self {
        Decision { action, reason }
    }

    pub fn wait(reason: Reason) -> Self {
        Decision { action: Action::Wait, reason }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.reason.fmt(f)
    }
}
