//! Publishes the member's status to the store (a key with the lease's TTL). A status is
//! rewritten when something a reader acts on changes, or once per `loop_wait` to refresh LSNs
//! and the TTL; otherwise agents waking on each other's writes would never settle. `build`
//! makes a status purely, from the cycle's observation and what the agent knows of itself
//! (`Facts`); the `Publisher` owns what was last written.

use crate::seen::Seen;
use crate::store_writer::StoreWriter;
use pgrepl_core::{
    keys, DataDir, MemberName, MemberState, MemberStatus, PasswordVersions, ReplicationRow, Role, Server,
};
use pgrepl_store::Condition;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the agent knows of itself that a status shows beside the observation.
#[derive(Clone, Debug, Default)]
pub(crate) struct Facts {
    pub host: String,
    pub port: u16,
    /// The agent's warning and its certificate's coming end, joined (`warning`).
    pub warning: Option<String>,
    pub tls_not_after_unix: Option<u64>,
    pub pending_restart: Vec<String>,
    pub restarted_for: Option<u64>,
    pub reloaded_ms: Option<u64>,
    /// Role password versions set on this primary (`None`: none yet).
    pub applied_passwords: Option<PasswordVersions>,
    /// Replication password version in the password file, once written.
    pub passfile_version: Option<u64>,
    pub api: Option<String>,
}

/// What the agent is doing while a long action runs (`Preparing`), then what it observed.
fn observed(seen: &Seen) -> (Role, MemberState) {
    match (&seen.obs.server, &seen.obs.data) {
        (Server::Primary { .. }, _) => (Role::Primary, MemberState::Running),
        (Server::Replica { streaming: true, .. }, _) => (Role::Replica, MemberState::Streaming),
        (Server::Replica { .. }, _) => (Role::Replica, MemberState::Recovering),
        (Server::Stopped, DataDir::Primary { .. }) => (Role::Primary, MemberState::Stopped),
        (Server::Stopped, DataDir::Standby { .. }) => (Role::Replica, MemberState::Stopped),
        (Server::Stopped, DataDir::Missing) => (Role::Unknown, MemberState::Stopped),
    }
}

/// The wall clock in milliseconds since the Unix epoch, as statuses (`updated_ms`) and fences
/// are stamped.
pub fn wall_clock_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The status of this cycle's observation, saying `sentence`; `state` overrides the observed
/// one (preparing, failed).
pub(crate) fn build(facts: &Facts, seen: &Seen, sentence: String, state: Option<MemberState>) -> MemberStatus {
    let (role, observed_state) = observed(seen);
    let (timeline, lsn, receive_lsn, replay_timeline) = match &seen.obs.server {
        Server::Primary { timeline, lsn } => (Some(*timeline), Some(*lsn), None, None),
        Server::Replica { timeline, receive_lsn, replay_lsn, replay_timeline, .. } => {
            (Some(*timeline), Some(*replay_lsn), Some(*receive_lsn), *replay_timeline)
        }
        Server::Stopped => (None, None, None, None),
    };
    MemberStatus {
        role,
        state: state.unwrap_or(observed_state),
        host: facts.host.clone(),
        port: facts.port,
        timeline,
        lsn,
        receive_lsn,
        replay_timeline,
        history: seen.obs.history.clone(),
        warning: facts.warning.clone(),
        tls_not_after_unix: facts.tls_not_after_unix,
        decision: sentence,
        // A stopped server applies every pending parameter when it starts again.
        pending_restart: if seen.obs.server == Server::Stopped { vec![] } else { facts.pending_restart.clone() },
        restarted_for: facts.restarted_for,
        reloaded_ms: facts.reloaded_ms,
        replication: seen.obs.replication.clone(),
        slots: seen.obs.slots.iter().map(|s| s.name.clone()).collect(),
        applied_passwords: applied_passwords(facts, role),
        stale_secrets: seen.obs.stale_secrets.clone(),
        leader: seen.obs.cluster.leader.clone(),
        paused: seen.obs.cluster.paused(),
        api: facts.api.clone(),
        updated_ms: wall_clock_ms(),
    }
}

/// What the member has applied: the role passwords on a primary; the replication password
/// of its password file on a replica.
fn applied_passwords(facts: &Facts, role: Role) -> Option<PasswordVersions> {
    match role {
        Role::Primary => facts.applied_passwords,
        _ => facts.passfile_version.map(|replication| PasswordVersions { replication, ..PasswordVersions::default() }),
    }
}

/// A status without what moves all the time (WAL positions, lags, the clock): a change in
/// what is left is worth a write at once.
fn what_readers_act_on(status: &MemberStatus) -> MemberStatus {
    let replication = status
        .replication
        .iter()
        .map(|r| ReplicationRow { replay_lsn: None, replay_lag_ms: None, ..r.clone() })
        .collect();
    MemberStatus { lsn: None, receive_lsn: None, updated_ms: 0, replication, ..status.clone() }
}

/// Writes this member's status key and remembers what it last wrote and when.
pub(crate) struct Publisher {
    key: String,
    last: Option<(MemberStatus, Instant)>,
}

impl Publisher {
    pub fn new(member: &MemberName) -> Publisher {
        Publisher { key: keys::member(member), last: None }
    }

    /// Writes `status` (with `ttl`) unless the same was written less than `loop_wait` ago.
    pub async fn publish(
        &mut self,
        store: &mut StoreWriter,
        status: MemberStatus,
        loop_wait: Duration,
        ttl: Duration,
    ) -> anyhow::Result<()> {
        if let Some((last, at)) = &self.last {
            if what_readers_act_on(last) == what_readers_act_on(&status) && at.elapsed() < loop_wait {
                return Ok(());
            }
        }
        self.write(store, status, ttl).await
    }

    /// Writes `status` now, however recently the same was written: it announces something
    /// readers must see at once (a long action beginning).
    pub async fn write(&mut self, store: &mut StoreWriter, status: MemberStatus, ttl: Duration) -> anyhow::Result<()> {
        let value = serde_json::to_vec(&status)?;
        self.last = None;
        store.put(&self.key, &value, Condition::Any, Some(ttl)).await?;
        self.last = Some((status, Instant::now()));
        Ok(())
    }

    /// Deletes the status, once, if this publisher wrote one (a member no longer in the spec).
    pub async fn withdraw(&mut self, store: &mut StoreWriter) -> anyhow::Result<()> {
        if self.last.take().is_some() {
            store.delete(&self.key, Condition::Any).await?;
        }
        Ok(())
    }

    /// Announces that this running server is about to stop (a handover, `pgrepl stop`, the
    /// agent's own shutdown), so that routers send it no new connection: they wait for its
    /// successor instead of passing clients to a server that refuses them while it shuts down.
    /// The last status, with its state changed; nothing when none was written or it did not run.
    pub async fn stopping(&mut self, store: &mut StoreWriter, ttl: Duration) -> anyhow::Result<()> {
        let Some((last, _)) = self.last.clone() else { return Ok(()) };
        if !matches!(last.state, MemberState::Running | MemberState::Streaming | MemberState::Recovering) {
            return Ok(());
        }
        let status = MemberStatus { state: MemberState::Stopping, updated_ms: wall_clock_ms(), ..last };
        self.write(store, status, ttl).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrepl_core::{ClusterView, Observation, SystemId};
    use pgrepl_store::Snapshot;

    fn seen(server: Server, data: DataDir) -> Seen {
        let obs = Observation {
            me: MemberName::new("a").unwrap(),
            first_cycle: false,
            destroy_on_restart: false,
            data,
            server,
            replica_stalled: false,
            replica_not_streaming_long: None,
            applied_passwords: None,
            passfile_password: None,
            stale_secrets: vec![],
            bootstrap_unfinished: false,
            start_overdue: false,
            slots: vec![],
            replication: vec![],
            standby_names: None,
            history: None,
            cluster: ClusterView::default(),
        };
        Seen { snapshot: Snapshot::default(), obs }
    }

    #[test]
    fn a_replica_shows_the_replication_password_of_its_file_and_a_primary_its_roles() {
        let facts = Facts {
            applied_passwords: Some(PasswordVersions { admin: 2, replication: 3, user: 4 }),
            passfile_version: Some(5),
            ..Facts::default()
        };
        let replica = Server::Replica {
            timeline: pgrepl_core::Timeline(1),
            upstream: None,
            streaming: true,
            receive_lsn: pgrepl_core::Lsn(0),
            replay_lsn: pgrepl_core::Lsn(0),
            replay_timeline: None,
        };
        let status = build(&facts, &seen(replica, DataDir::Standby { system_id: SystemId(1) }), "s".into(), None);
        assert_eq!(status.applied_passwords, Some(PasswordVersions { replication: 5, ..PasswordVersions::default() }));
        let primary = Server::Primary { timeline: pgrepl_core::Timeline(1), lsn: pgrepl_core::Lsn(0) };
        let status = build(&facts, &seen(primary, DataDir::Primary { system_id: SystemId(1) }), "s".into(), None);
        assert_eq!(status.applied_passwords, facts.applied_passwords);
        assert_eq!(status.state, MemberState::Running);
    }

    #[test]
    fn a_stopped_server_has_no_pending_restart_and_a_given_state_wins() {
        let facts = Facts { pending_restart: vec!["shared_buffers".into()], ..Facts::default() };
        let stopped = seen(Server::Stopped, DataDir::Primary { system_id: SystemId(1) });
        let status = build(&facts, &stopped, "s".into(), Some(MemberState::Failed));
        assert_eq!(status.pending_restart, Vec::<String>::new());
        assert_eq!(status.state, MemberState::Failed);
        assert_eq!(status.decision, "s");
    }
}
