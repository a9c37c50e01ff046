//! This member's JSON at `/patroni` and in every check's answer, in Patroni's shape (its
//! `rest_api.rst`: `state`, `role`, `xlog`, `timeline`, `replication`, `patroni.scope`...), so
//! tools that read Patroni's read it, with pgrepl's own fields added under `pgrepl`.

use super::checks;
use super::Api;
use pgrepl_agent::probe::Cycle;
use pgrepl_core::health::Facts;
use pgrepl_core::{MemberState, Server};
use serde_json::{json, Value};

/// `/patroni`: this member's JSON from the loop's last cycle.
pub fn current(api: &Api) -> Value {
    let cycle = api.probe.last();
    body(api, cycle.as_deref(), &checks::facts(api, cycle.as_deref()))
}

/// The JSON of `cycle`, whose `facts` the caller read from it.
pub fn body(api: &Api, cycle: Option<&Cycle>, facts: &Facts) -> Value {
    let status = cycle.map(|c| &c.status);
    let state = match status.map(|s| s.state) {
        Some(MemberState::Running | MemberState::Streaming | MemberState::Recovering) => "running",
        Some(MemberState::Preparing) => "creating replica",
        Some(MemberState::Failed) => "start failed",
        Some(MemberState::Stopping) => "stopping",
        Some(MemberState::Stopped) | None => "stopped",
    };
    let (role, xlog) = match &facts.server {
        Server::Primary { lsn, .. } => ("primary", json!({ "location": lsn.0 })),
        Server::Replica { receive_lsn, replay_lsn, .. } => (
            "replica",
            json!({ "received_location": receive_lsn.0.max(replay_lsn.0), "replayed_location": replay_lsn.0,
                    "replayed_timestamp": null, "paused": false }),
        ),
        Server::Stopped => ("uninitialized", Value::Null),
    };
    let timeline = match &facts.server {
        Server::Primary { timeline, .. } | Server::Replica { timeline, .. } => Some(timeline.0),
        Server::Stopped => None,
    };
    let replication: Vec<Value> = status
        .map(|s| {
            s.replication
                .iter()
                .map(|r| {
                    json!({ "application_name": r.application_name, "client_addr": r.client_addr, "state": r.state,
                            "sync_state": r.sync_state })
                })
                .collect()
        })
        .unwrap_or_default();
    let view = cycle.map(|c| &c.view);
    let mut body = json!({
        "state": state,
        "role": role,
        "timeline": timeline,
        "cluster_unlocked": view.is_some_and(|v| v.leader.is_none()),
        "dcs_last_seen": status.map(|s| s.updated_ms / 1000),
        "database_system_identifier": view.and_then(|v| v.system_id).map(|id| id.to_string()),
        "patroni": { "version": env!("CARGO_PKG_VERSION"), "scope": api.cluster.config.cluster, "name": api.member.as_str() },
        "pgrepl": {
            "version": env!("CARGO_PKG_VERSION"),
            "holds_lease": facts.holds_lease,
            "decision": cycle.map(|c| c.decision.clone()),
            "loop_age_ms": facts.loop_age.as_millis() as u64,
            "lag_bytes": facts.lag(pgrepl_core::health::LagMode::Apply),
        },
    });
    if !xlog.is_null() {
        body["xlog"] = xlog;
    }
    if !replication.is_empty() {
        body["replication"] = Value::Array(replication);
    }
    if view.is_some_and(|v| v.paused()) {
        body["pause"] = Value::Bool(true);
    }
    // As Patroni: present only when a restart is pending. (Patroni's `pending_restart_reason`
    // holds old and new values, which pg_settings does not give; `pgrepl.pending_restart`
    // names the parameters.)
    if let Some(names) = status.map(|s| &s.pending_restart).filter(|names| !names.is_empty()) {
        body["pending_restart"] = Value::Bool(true);
        body["pgrepl"]["pending_restart"] = json!(names);
    }
    body
}
