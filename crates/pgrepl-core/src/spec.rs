//! The desired state of the whole cluster (the **spec**), written by commands such as `up`,
//! `scale`, `passwd`, `stop` and `start`, read by every agent and by the supervisor.

use crate::names::MemberName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Desired, cluster-wide.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// Every member the cluster should have, with how it runs. The primary is one of them.
    pub members: BTreeMap<MemberName, MemberSpec>,
    /// The member that runs `initdb` when the cluster is new.
    pub bootstrap: Option<MemberName>,
    /// Bumped by `pgrepl passwd`; each member applies a password whose version it has not yet.
    pub passwords: PasswordVersions,
    /// The highest `node-N` number ever given, so a new member never reuses a removed one's name
    /// (nor its data directory, which removal keeps).
    #[serde(default)]
    pub last_member_number: u32,
    /// How the cluster replaces a lost leader.
    #[serde(default)]
    pub failover: FailoverSpec,
    /// The PostgreSQL parameters every member runs with (`[parameters]`, `pgrepl config set`),
    /// the same on every member; `None` in a spec written before they were kept here, where
    /// each member runs with its own configuration's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BTreeMap<String, String>>,
    /// SCRAM verifiers of the passwords `pgrepl passwd` changed on a cluster whose members run
    /// on their own hosts: a primary gives the role this verifier rather than its own host's
    /// secret (which only the host where `passwd` ran may hold), and every member checks its
    /// host's secret against it (`Observation::stale_secrets`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub verifiers: BTreeMap<PasswordKind, String>,
    /// The agents' clocks (`loop_wait`, `ttl`, `primary_start_timeout`); `None` in a spec
    /// written before they were kept here, where each agent uses its own configuration's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<crate::tuning::Timing>,
    /// How routers serve (`ro_max_lag`, `ro_fallback`, `rw_wait`); `None`: each its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<crate::tuning::Routing>,
    /// The client ranges every member's `pg_hba.conf` lets in (`allow`); `None`: each its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
}

impl Spec {
    /// The parameters a member runs with: the cluster's, else its own configuration's.
    pub fn parameters_or<'a>(&'a self, own: &'a BTreeMap<String, String>) -> &'a BTreeMap<String, String> {
        self.parameters.as_ref().unwrap_or(own)
    }
}

/// How the cluster replaces a lost leader, and what a commit waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverSpec {
    /// When off, only `pgrepl promote`/`switchover`/`failover` choose a new leader.
    pub automatic: bool,
    /// A replica further behind the lost leader's last known position may not take the lease.
    pub maximum_lag_bytes: u64,
    pub synchronous: SyncMode,
}

impl Default for FailoverSpec {
    fn default() -> Self {
        FailoverSpec { automatic: true, maximum_lag_bytes: 1024 * 1024, synchronous: SyncMode::Off }
    }
}

/// What an acknowledged commit waits for (`synchronous_standby_names`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Commits wait for nobody; a failover may lose the last commits (at most the lag bound).
    #[default]
    Off,
    /// Commits wait for one named replica (`FIRST 1`), which alone may take over.
    On,
    /// Commits wait for any one of the streaming replicas (`ANY 1`); the most advanced of
    /// them, once all have reported, may take over.
    Quorum,
}

impl std::fmt::Display for SyncMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SyncMode::Off => "off",
            SyncMode::On => "on",
            SyncMode::Quorum => "quorum",
        })
    }
}

/// Desired state of one member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSpec {
    /// Address the member's PostgreSQL listens on and others reach it at.
    pub host: String,
    pub port: u16,
    /// `pgrepl stop MEMBER` sets this; the supervisor then keeps the member down.
    #[serde(default)]
    pub stopped: bool,
}

/// Versions of the three passwords (`0` is the one set at bootstrap).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordVersions {
    pub user: u64,
    pub admin: u64,
    pub replication: u64,
}

/// Which password.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PasswordKind {
    User,
    Admin,
    Replication,
}

impl PasswordKind {
    pub const ALL: [PasswordKind; 3] = [PasswordKind::User, PasswordKind::Admin, PasswordKind::Replication];
}

impl std::fmt::Display for PasswordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PasswordKind::User => "user",
            PasswordKind::Admin => "admin",
            PasswordKind::Replication => "replication",
        })
    }
}

impl PasswordVersions {
    pub fn get(&self, kind: PasswordKind) -> u64 {
        match kind {
            PasswordKind::User => self.user,
            PasswordKind::Admin => self.admin,
            PasswordKind::Replication => self.replication,
        }
    }

    pub fn bump(&mut self, kind: PasswordKind) {
        match kind {
            PasswordKind::User => self.user += 1,
            PasswordKind::Admin => self.admin += 1,
            PasswordKind::Replication => self.replication += 1,
        }
    }
}

/// Why a scale request cannot be carried out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScaleError {
    #[error("the cluster has no members yet")]
    Empty,
}

impl Spec {
    /// The members after scaling to `replicas` replicas: new members get fresh names
    /// (`node-N` with N past every name used so far, so no old data directory is ever reused),
    /// and removal takes the newest replicas first, never `keep` (the leader).
    pub fn scaled(
        &self,
        replicas: usize,
        keep: Option<&MemberName>,
        mut new_member: impl FnMut(&MemberName) -> MemberSpec,
    ) -> Result<Spec, ScaleError> {
        if self.members.is_empty() {
            return Err(ScaleError::Empty);
        }
        let mut spec = self.clone();
        let target = replicas + 1;
        let mut next =
            self.members.keys().filter_map(MemberName::number).max().unwrap_or(0).max(self.last_member_number) + 1;
        while spec.members.len() < target {
            let name = MemberName::numbered(next);
            spec.last_member_number = next;
            next += 1;
            let member = new_member(&name);
            spec.members.insert(name, member);
        }
        while spec.members.len() > target {
            let newest =
                spec.members.keys().filter(|m| Some(*m) != keep).max_by_key(|m| (m.number(), (*m).clone())).cloned();
            match newest {
                Some(m) => spec.members.remove(&m),
                None => break,
            };
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(n: u32) -> MemberName {
        MemberName::numbered(n)
    }

    fn spec_of(names: &[u32]) -> Spec {
        let mut spec = Spec::default();
        for n in names {
            spec.members.insert(m(*n), MemberSpec { host: "127.0.0.1".into(), port: 6000 + *n as u16, stopped: false });
        }
        spec
    }

    fn new_member(name: &MemberName) -> MemberSpec {
        MemberSpec { host: "127.0.0.1".into(), port: 7000 + name.number().unwrap() as u16, stopped: false }
    }

    #[test]
    fn scaling_up_adds_fresh_names_past_every_used_one() {
        let spec = spec_of(&[1, 3]).scaled(3, Some(&m(1)), new_member).unwrap();
        let names: Vec<_> = spec.members.keys().map(|k| k.to_string()).collect();
        assert_eq!(names, ["node-1", "node-3", "node-4", "node-5"]);
        assert_eq!(spec.members[&m(5)].port, 7005);
        assert_eq!(spec.last_member_number, 5);
    }

    #[test]
    fn names_of_removed_members_are_never_given_again() {
        let down = spec_of(&[1, 2, 3, 4]).scaled(1, Some(&m(1)), new_member).unwrap();
        let down = Spec { last_member_number: 4, ..down };
        let up = down.scaled(2, Some(&m(1)), new_member).unwrap();
        let names: Vec<_> = up.members.keys().map(|k| k.to_string()).collect();
        assert_eq!(names, ["node-1", "node-2", "node-5"]);
    }

    #[test]
    fn scaling_down_removes_newest_replicas_but_never_the_leader() {
        let spec = spec_of(&[1, 2, 3, 10]).scaled(1, Some(&m(10)), new_member).unwrap();
        let names: Vec<_> = spec.members.keys().map(|k| k.to_string()).collect();
        assert_eq!(names, ["node-1", "node-10"]);
        let spec = spec_of(&[1, 2, 3]).scaled(0, Some(&m(2)), new_member).unwrap();
        assert_eq!(spec.members.keys().cloned().collect::<Vec<_>>(), vec![m(2)]);
    }

    #[test]
    fn scaling_an_empty_cluster_is_refused() {
        assert_eq!(Spec::default().scaled(1, None, new_member), Err(ScaleError::Empty));
    }
}
