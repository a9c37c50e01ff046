//! The cluster as one store snapshot shows it: the key layout of the store, the values stored
//! under each key, and `ClusterView`, the parsed whole that `decide()` and the CLI read.

use crate::fork::{Fork, Replayed, TimelineSwitch};
use crate::local::ReplicationRow;
use crate::names::{Lsn, MemberName, SystemId, Timeline};
use crate::spec::Spec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Key names inside one cluster's store (a backend adds its own prefix).
pub mod keys {
    use crate::names::MemberName;

    /// Set once by the member that ran `initdb`: `Initialized`.
    pub const INITIALIZE: &str = "initialize";
    /// The leader lease (a TTL key): `LeaderRecord`.
    pub const LEADER: &str = "leader";
    /// The last member that held the lease and its timeline (no TTL): `LeaderRecord`.
    pub const LAST_LEADER: &str = "last_leader";
    /// A request from `pgrepl promote`/`switchover`/`failover`: `TargetRecord`.
    pub const TARGET: &str = "target";
    /// The desired state: `Spec`.
    pub const SPEC: &str = "spec";
    /// Who may take over without losing an acknowledged commit, in synchronous mode: `SyncRecord`.
    pub const SYNC: &str = "sync";
    /// Maintenance mode, set by `pgrepl pause` and removed by `pgrepl resume`: `PauseRecord`.
    pub const PAUSE: &str = "pause";
    /// The cluster CA, when `tls.ca_in_store` keeps it there (no TTL): its certificate and key.
    pub const CA: &str = "ca";
    /// The last changes of the cluster's PostgreSQL parameters, who made them and when (no
    /// TTL): `SettingsHistory`. Written by `pgrepl config set|reset|edit` and by `pgrepl up`
    /// right after each change of the spec's `parameters`; read by `pgrepl config history`.
    pub const SETTINGS_HISTORY: &str = "settings_history";
    /// Prefix of the members' published statuses (TTL keys): `MemberStatus`.
    pub const MEMBERS: &str = "members/";

    /// Prefix of the last fence of each member (no TTL): `pgrepl_core::fence::Fired`.
    pub const FENCES: &str = "fences/";

    /// Prefix of the restarts asked of each member by `pgrepl restart` (no TTL):
    /// `crate::restart::RestartRequest`; the command removes one once it is done.
    pub const RESTARTS: &str = "restarts/";

    /// The last `pgrepl reload` (no TTL): `crate::restart::ReloadRequest`.
    pub const RELOAD: &str = "reload";

    pub fn restart(name: &MemberName) -> String {
        format!("{RESTARTS}{name}")
    }

    pub fn member(name: &MemberName) -> String {
        format!("{MEMBERS}{name}")
    }

    pub fn fence(name: &MemberName) -> String {
        format!("{FENCES}{name}")
    }
}

/// Value of `initialize`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Initialized {
    pub system_id: SystemId,
}

/// Value of `leader`, `last_leader` and `target`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    pub member: MemberName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
    /// `last_leader` only: the switch points of that timeline's history, so that after the
    /// leader is lost the race can still tell a replica on its line from one off it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<TimelineSwitch>>,
}

/// Value of `sync`, written by the leader in synchronous mode: every commit it has acknowledged
/// is on at least `quorum` of `members` (WAL is one line, so a member holding a commit holds all
/// before it). Hence among any `members.len() - quorum + 1` of them, the most advanced holds every
/// acknowledged commit. `quorum` 0 with no members: nobody is known to, so nobody may take over.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRecord {
    pub leader: Option<MemberName>,
    pub members: std::collections::BTreeSet<MemberName>,
    pub quorum: usize,
}

impl SyncRecord {
    /// How many of `members` must report their position before the most advanced of them is
    /// known to hold every acknowledged commit (more than there are: nobody can be).
    pub fn reports_needed(&self) -> usize {
        if self.quorum == 0 {
            self.members.len() + 1
        } else {
            self.members.len() + 1 - self.quorum.min(self.members.len())
        }
    }
}

/// Value of `target`: the member asked to become the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRecord {
    pub member: MemberName,
    /// `pgrepl failover --to`: the leader gives way even if the target is not streaming.
    #[serde(default)]
    pub force: bool,
}

/// Value of `pause`: the cluster is in maintenance mode (no automatic failover, no restart of a
/// stopped server, no fence) since `since_ms` (wall clock, milliseconds since the Unix epoch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseRecord {
    pub since_ms: u64,
}

/// Value of `settings_history`: the last `SettingsHistory::KEPT` changes of the spec's
/// `parameters`, in the order the spec took them (by `revision`), oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsHistory {
    pub changes: Vec<SettingsChange>,
}

/// One change of the cluster's parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsChange {
    /// The spec's revision this change wrote: it orders changes recorded out of order.
    pub revision: u64,
    /// When it was written (wall clock, milliseconds since the Unix epoch).
    pub at_ms: u64,
    /// The command that made it (`pgrepl config set`).
    pub command: String,
    /// The host and the OS user that ran it.
    pub host: String,
    pub user: String,
    /// Each parameter it changed, by name: its value before and after (`None`: not set).
    pub parameters: BTreeMap<String, ValueChange>,
}

/// A parameter's value before and after a change (`None`: not among the cluster's parameters).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueChange {
    pub old: Option<String>,
    pub new: Option<String>,
}

impl SettingsHistory {
    /// How many changes are kept: the oldest go first.
    pub const KEPT: usize = 100;

    /// Adds `change` in the order of spec revisions, then drops the oldest beyond `KEPT`.
    pub fn record(&mut self, change: SettingsChange) {
        let at = self.changes.partition_point(|c| c.revision <= change.revision);
        self.changes.insert(at, change);
        let excess = self.changes.len().saturating_sub(Self::KEPT);
        self.changes.drain(..excess);
    }
}

/// What changes from the parameters `old` to `new`, by name (empty: nothing).
pub fn parameter_changes(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> BTreeMap<String, ValueChange> {
    let names: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    names
        .into_iter()
        .filter(|name| old.get(*name) != new.get(*name))
        .map(|name| (name.clone(), ValueChange { old: old.get(name).cloned(), new: new.get(name).cloned() }))
        .collect()
}

/// The role a member's PostgreSQL has now (observed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Replica,
    Unknown,
}

/// What a member is doing now, as `pgrepl status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Primary, accepting writes.
    Running,
    /// Replica whose WAL receiver streams from the primary.
    Streaming,
    /// Replica running but not streaming (starting, catching up or cut off).
    Recovering,
    /// Initializing, cloning or rewinding its data directory.
    Preparing,
    /// PostgreSQL is about to stop (a handover, `pgrepl stop`, its agent stopping): routers
    /// send it no new connection.
    Stopping,
    /// PostgreSQL is not running.
    Stopped,
    /// The last action failed; `decision` says which.
    Failed,
}

/// What one agent publishes about its member every cycle (a TTL key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub role: Role,
    pub state: MemberState,
    pub host: String,
    pub port: u16,
    pub timeline: Option<Timeline>,
    /// Primary: current WAL position. Replica: last replayed position.
    pub lsn: Option<Lsn>,
    /// Replica: last received position.
    #[serde(default)]
    pub receive_lsn: Option<Lsn>,
    /// Replica: the timeline of the last replayed record (`timeline` is the newest one it
    /// knows of, which it may never reach), when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_timeline: Option<Timeline>,
    /// The switch points of the history of its timeline (a primary's current one, a replica's
    /// replayed one; empty on timeline 1), when read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<TimelineSwitch>>,
    /// Something an operator should know that the decision alone does not keep saying (this
    /// replica had forked from the leader's timeline and was rewound); kept until it streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// The sentence of the agent's last decision.
    pub decision: String,
    /// The `pgrepl restart` request (`RestartRequest::id`) its agent last restarted its
    /// server for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_for: Option<u64>,
    /// The newest `pgrepl reload` its agent has carried out (`ReloadRequest::requested_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reloaded_ms: Option<u64>,
    /// Parameters its running server has changed but applies only at its next restart
    /// (`pg_settings.pending_restart`), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_restart: Vec<String>,
    /// Primary only: its `pg_stat_replication`.
    #[serde(default)]
    pub replication: Vec<ReplicationRow>,
    /// Primary only: the physical replication slots it holds.
    #[serde(default)]
    pub slots: Vec<String>,
    /// Password versions this member's agent has applied since it started.
    #[serde(default)]
    pub applied_passwords: Option<crate::spec::PasswordVersions>,
    /// The passwords this member's host holds that are not the cluster's
    /// (`Observation::stale_secrets`): it cannot connect with them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale_secrets: Vec<crate::spec::PasswordKind>,
    /// The leader this member saw when it published (`None`: the lease was free), so others
    /// know whether its position was reported after the leader was lost.
    #[serde(default)]
    pub leader: Option<MemberName>,
    /// The agent saw the cluster in maintenance mode when it published (so `pause` and
    /// `resume` can tell when every agent has taken the change in).
    #[serde(default)]
    pub paused: bool,
    /// Where the member's HTTP API answers (`host:port`), when it serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// When the member's installed TLS certificate ends (Unix seconds), with TLS on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_not_after_unix: Option<u64>,
    /// Wall-clock time of publication, in milliseconds since the Unix epoch.
    pub updated_ms: u64,
}

impl MemberStatus {
    /// The furthest WAL position this member holds (received or replayed), with its timeline.
    pub fn position(&self) -> Option<(Timeline, Lsn)> {
        let lsn = match (self.receive_lsn, self.lsn) {
            (Some(r), Some(l)) => r.max(l),
            (r, l) => r.or(l)?,
        };
        Some((self.timeline?, lsn))
    }

    /// Where this replica's replayed WAL lies, as it published it (when it could say).
    pub fn replayed(&self) -> Option<Replayed<'_>> {
        Some(Replayed { timeline: self.replay_timeline?, lsn: self.lsn?, history: self.history.as_deref() })
    }

    /// Whether `replayed` is off the line of this leader, as it published its timeline and
    /// history (`None` also when it published too little to tell).
    pub fn fork_of_replayed(&self, replayed: Replayed<'_>) -> Option<Fork> {
        crate::fork::fork(replayed, self.timeline?, self.history.as_deref()?)
    }
}

/// The whole cluster from one store snapshot. Absent keys are `None` (unknown), not errors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub system_id: Option<SystemId>,
    pub leader: Option<MemberName>,
    pub last_leader: Option<LeaderRecord>,
    pub target: Option<MemberName>,
    /// The target was forced (`pgrepl failover --to`).
    pub force_target: bool,
    pub sync: Option<SyncRecord>,
    /// Maintenance mode (`pgrepl pause`), when set.
    pub pause: Option<PauseRecord>,
    pub spec: Option<Spec>,
    pub members: BTreeMap<MemberName, MemberStatus>,
    /// The last fence of each member that was ever fenced.
    pub fences: BTreeMap<MemberName, crate::fence::Fired>,
    /// Restarts asked of members (`pgrepl restart`), by member.
    pub restarts: BTreeMap<MemberName, crate::restart::RestartRequest>,
    /// The last reload asked of every member (`pgrepl reload`).
    pub reload: Option<crate::restart::ReloadRequest>,
}

/// A stored value that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("store key {key:?} holds a value pgrepl cannot read: {detail}")]
pub struct BadValue {
    pub key: String,
    pub detail: String,
}

fn parse<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, BadValue> {
    serde_json::from_slice(value).map_err(|e| BadValue { key: key.to_string(), detail: e.to_string() })
}

fn member_name(key: &str, name: &str) -> Result<MemberName, BadValue> {
    MemberName::new(name).map_err(|e| BadValue { key: key.to_string(), detail: e.to_string() })
}

impl ClusterView {
    /// Builds the view from `(key, value)` pairs; unknown keys are ignored.
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Result<Self, BadValue> {
        let mut view = ClusterView::default();
        for (key, value) in entries {
            match key {
                keys::INITIALIZE => view.system_id = Some(parse::<Initialized>(key, value)?.system_id),
                keys::LEADER => view.leader = Some(parse::<LeaderRecord>(key, value)?.member),
                keys::LAST_LEADER => view.last_leader = Some(parse(key, value)?),
                keys::TARGET => {
                    let target: TargetRecord = parse(key, value)?;
                    view.target = Some(target.member);
                    view.force_target = target.force;
                }
                keys::SPEC => view.spec = Some(parse(key, value)?),
                keys::SYNC => view.sync = Some(parse(key, value)?),
                keys::PAUSE => view.pause = Some(parse(key, value)?),
                keys::RELOAD => view.reload = Some(parse(key, value)?),
                _ => {
                    if let Some(name) = key.strip_prefix(keys::MEMBERS) {
                        view.members.insert(member_name(key, name)?, parse(key, value)?);
                    } else if let Some(name) = key.strip_prefix(keys::FENCES) {
                        view.fences.insert(member_name(key, name)?, parse(key, value)?);
                    } else if let Some(name) = key.strip_prefix(keys::RESTARTS) {
                        view.restarts.insert(member_name(key, name)?, parse(key, value)?);
                    }
                }
            }
        }
        Ok(view)
    }

    /// True in maintenance mode (`pgrepl pause`).
    pub fn paused(&self) -> bool {
        self.pause.is_some()
    }

    /// The leader's status, when it is a running primary.
    pub fn ready_leader(&self) -> Option<(&MemberName, &MemberStatus)> {
        let leader = self.leader.as_ref()?;
        let status = self.members.get(leader)?;
        (status.role == Role::Primary && status.state == MemberState::Running).then_some((leader, status))
    }

    /// True when `member` is a replica streaming from the current primary.
    pub fn is_streaming(&self, member: &MemberName) -> bool {
        self.members.get(member).is_some_and(|s| s.state == MemberState::Streaming)
    }

    /// Whether `member`, as it last reported, replayed WAL off the running leader's history.
    /// `None` also when either side did not publish what it takes to know.
    pub fn fork_of(&self, member: &MemberName) -> Option<Fork> {
        let (_, leader) = self.ready_leader()?;
        let s = self.members.get(member).filter(|s| s.role == Role::Replica)?;
        leader.fork_of_replayed(s.replayed()?)
    }

    /// Bytes `member` has still to replay to reach the primary's position, when known. Both
    /// positions come from the primary's own status (its WAL position and the member's
    /// `replay_lsn` in its `pg_stat_replication`, read in the same cycle); the member's own,
    /// separately published position is the fallback.
    pub fn lag_bytes(&self, member: &MemberName) -> Option<u64> {
        let (_, primary) = self.ready_leader()?;
        let replayed =
            self.replication_of(member).and_then(|r| r.replay_lsn).or_else(|| self.members.get(member)?.lsn)?;
        Some(primary.lsn?.bytes_after(replayed))
    }

    /// `member`'s `replay_lag` in seconds as the running primary reports it (0 when it reports
    /// none), when the primary lists the member.
    pub fn lag_seconds(&self, member: &MemberName) -> Option<f64> {
        self.replication_of(member).map(|r| r.replay_lag_ms.unwrap_or(0) as f64 / 1000.0)
    }

    /// The running primary's `pg_stat_replication` row of `member`, when it lists one.
    pub fn replication_of(&self, member: &MemberName) -> Option<&ReplicationRow> {
        let (_, primary) = self.ready_leader()?;
        primary.replication.iter().find(|r| r.application_name == member.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(revision: u64) -> SettingsChange {
        SettingsChange {
            revision,
            at_ms: revision * 10,
            command: "pgrepl config set".into(),
            host: "h".into(),
            user: "u".into(),
            parameters: BTreeMap::new(),
        }
    }

    #[test]
    fn the_history_keeps_the_last_hundred_changes_in_the_specs_order() {
        let mut h = SettingsHistory::default();
        for revision in 1..=150 {
            h.record(change(revision * 2));
        }
        assert_eq!(h.changes.len(), SettingsHistory::KEPT);
        assert_eq!(h.changes.first().map(|c| c.revision), Some(102));
        // One recorded late (its writer was slower to record than a later change's) goes in
        // its place, and the oldest goes.
        h.record(change(297));
        let revisions: Vec<u64> = h.changes.iter().rev().take(3).map(|c| c.revision).collect();
        assert_eq!(revisions, [300, 298, 297]);
        assert_eq!(h.changes.len(), SettingsHistory::KEPT);
        assert_eq!(h.changes.first().map(|c| c.revision), Some(104));
        let json = serde_json::to_vec(&h).unwrap();
        assert_eq!(serde_json::from_slice::<SettingsHistory>(&json).unwrap(), h);
    }

    #[test]
    fn parameter_changes_name_what_was_added_changed_and_removed() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let old = map(&[("work_mem", "4MB"), ("shared_buffers", "128MB"), ("jit", "off")]);
        let new = map(&[("work_mem", "8MB"), ("jit", "off"), ("search_path", "")]);
        let v = |old: Option<&str>, new: Option<&str>| ValueChange {
            old: old.map(String::from),
            new: new.map(String::from),
        };
        assert_eq!(
            parameter_changes(&old, &new),
            BTreeMap::from([
                ("search_path".to_string(), v(None, Some(""))),
                ("shared_buffers".to_string(), v(Some("128MB"), None)),
                ("work_mem".to_string(), v(Some("4MB"), Some("8MB"))),
            ])
        );
        assert!(parameter_changes(&old, &old).is_empty());
    }

    #[test]
    fn view_reads_every_key_and_ignores_unknown_ones() {
        let leader = br#"{"member":"node-1"}"#;
        let init = br#"{"system_id":"7312395133209421981"}"#;
        let status = br#"{"role":"replica","state":"streaming","host":"127.0.0.1","port":6001,
            "timeline":1,"lsn":"0/3000060","decision":"streaming","updated_ms":1}"#;
        let view = ClusterView::from_entries([
            ("leader", &leader[..]),
            ("initialize", &init[..]),
            ("members/node-2", &status[..]),
            ("pause", &br#"{"since_ms":5}"#[..]),
            ("something-else", &b"?"[..]),
        ])
        .unwrap();
        assert_eq!(view.leader, Some(MemberName::numbered(1)));
        assert_eq!(view.system_id, Some(SystemId(7_312_395_133_209_421_981)));
        assert!(view.is_streaming(&MemberName::numbered(2)));
        assert!(view.ready_leader().is_none(), "the leader published no status");
        assert_eq!(view.pause, Some(PauseRecord { since_ms: 5 }));
        assert!(view.paused());
    }

    #[test]
    fn lag_is_measured_from_the_primarys_own_view_when_it_has_one() {
        let status = |role: &str, lsn: &str, replication: &str| {
            format!(
                r#"{{"role":"{role}","state":"running","host":"h","port":1,"timeline":1,"lsn":"{lsn}",
                "decision":"","updated_ms":1,"replication":[{replication}]}}"#
            )
        };
        let row = r#"{"application_name":"node-2","client_addr":null,"state":"streaming","replay_lsn":"0/2FFFF00","replay_lag_ms":null}"#;
        let primary = status("primary", "0/3000000", row);
        let stale_replica = status("replica", "0/1000000", "");
        let lonely = status("replica", "0/2000000", "");
        let view = ClusterView::from_entries([
            ("leader", &br#"{"member":"node-1"}"#[..]),
            ("members/node-1", primary.as_bytes()),
            ("members/node-2", stale_replica.as_bytes()),
            ("members/node-3", lonely.as_bytes()),
        ])
        .unwrap();
        assert_eq!(
            view.lag_bytes(&MemberName::numbered(2)),
            Some(0x100),
            "from pg_stat_replication, not the stale status"
        );
        assert_eq!(view.lag_bytes(&MemberName::numbered(3)), Some(0x1000000), "fallback: the member's own position");
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let err = ClusterView::from_entries([("spec", &b"{not json"[..])]).unwrap_err();
        assert_eq!(err.key, "spec");
    }
}
