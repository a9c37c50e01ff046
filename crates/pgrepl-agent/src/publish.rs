//! Publishes the member's status to the store (a key with the lease's TTL). A status is
//! rewritten when something a reader acts on changes, or once per `loop_wait` to refresh LSNs
//! and the TTL; otherwise agents waking on each other's writes would never settle.

use crate::member::{Agent, Seen};
use pgrepl_core::{
    keys, DataDir, Decision, MemberState, MemberStatus, PasswordVersions, Reason, ReplicationRow, Role, Server,
};
use pgrepl_store::Condition;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// What the agent is doing while a long action runs (`Preparing`), then what it observed.
pub(crate) fn observed(seen: &Seen) -> (Role, MemberState) {
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

/// Builds the status from this cycle's observation.
pub(crate) fn build(agent: &Agent, seen: &Seen, sentence: String, state: Option<MemberState>) -> MemberStatus {
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
        host: agent.pg.listen_address.clone(),
        port: agent.pg.port,
        timeline,
        lsn,
        receive_lsn,
        replay_timeline,
        history: seen.obs.history.clone(),
        warning: warning(agent),
        tls_not_after_unix: agent.tls_cert.as_ref().map(|c| c.not_after_unix()),
        decision: sentence,
        pending_restart: if seen.obs.server == Server::Stopped { vec![] } else { agent.pending_restart.clone() },
        restarted_for: agent.restarted_for,
        reloaded_ms: agent.reloaded_ms,
        replication: seen.obs.replication.clone(),
        slots: seen.obs.slots.iter().map(|s| s.name.clone()).collect(),
        applied_passwords: applied_passwords(agent, role),
        stale_secrets: seen.obs.stale_secrets.clone(),
        leader: seen.obs.cluster.leader.clone(),
        paused: seen.obs.cluster.paused(),
        api: agent.s.api.clone(),
        updated_ms: wall_clock_ms(),
    }
}

/// The agent's warning, and its certificate's coming end (within 30 days), joined.
fn warning(agent: &Agent) -> Option<String> {
    let expiry = agent.tls_cert.as_ref().and_then(|c| c.expiry_warning(SystemTime::now()));
    match (agent.warning.clone(), expiry) {
        (Some(w), Some(e)) => Some(format!("{w}; {e}")),
        (w, e) => w.or(e),
    }
}

/// What the member has applied: the role passwords on a primary; the replication password
/// of its password file on a replica.
fn applied_passwords(agent: &Agent, role: Role) -> Option<PasswordVersions> {
    match role {
        Role::Primary => agent.applied,
        _ => agent.passfile_version.map(|replication| PasswordVersions { replication, ..PasswordVersions::default() }),
    }
}

/// Writes `status` unless the same was written less than `loop_wait` ago.
pub(crate) async fn write(agent: &mut Agent, status: MemberStatus) -> anyhow::Result<()> {
    if let Some((last, at)) = &agent.last_published {
        if what_readers_act_on(last) == what_readers_act_on(&status) && at.elapsed() < agent.s.loop_wait {
            return Ok(());
        }
    }
    let value = serde_json::to_vec(&status)?;
    agent.put(&keys::member(&agent.s.member), &value, Condition::Any, Some(agent.s.ttl)).await?;
    agent.last_published = Some((status, Instant::now()));
    Ok(())
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

/// Publishes the cycle's outcome: the decision's sentence, or the failure's. A member no
/// longer in the spec (`pgrepl remove`) withdraws its status instead, once.
pub(crate) async fn status(
    agent: &mut Agent,
    seen: &Seen,
    decision: &Decision,
    failed: Option<&str>,
) -> anyhow::Result<()> {
    if decision.reason == Reason::NotInSpec {
        if agent.last_published.take().is_some() {
            agent.delete(&keys::member(&agent.s.member), Condition::Any).await?;
        }
        return Ok(());
    }
    let sentence = failed.map_or_else(|| decision.to_string(), str::to_string);
    let state = failed.map(|_| MemberState::Failed);
    let status = build(agent, seen, sentence, state);
    write(agent, status).await
}

/// Announces that this running server is about to stop (a handover, `pgrepl stop`, the agent's
/// own shutdown), so that routers send it no new connection: they wait for its successor
/// instead of passing clients to a server that refuses them while it shuts down.
pub(crate) async fn stopping(agent: &mut Agent) -> anyhow::Result<()> {
    let Some((last, _)) = agent.last_published.clone() else { return Ok(()) };
    if !matches!(last.state, MemberState::Running | MemberState::Streaming | MemberState::Recovering) {
        return Ok(());
    }
    let status = MemberStatus { state: MemberState::Stopping, updated_ms: wall_clock_ms(), ..last };
    agent.last_published = None;
    write(agent, status).await
}

/// Announces a long action (clone, rewind, bootstrap) before it starts.
pub(crate) async fn preparing(agent: &mut Agent, seen: &Seen, decision: &Decision) -> anyhow::Result<()> {
    let status = build(agent, seen, decision.to_string(), Some(MemberState::Preparing));
    agent.last_published = None;
    write(agent, status).await
}
