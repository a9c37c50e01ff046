//! The health checks: which one a request names and whether this member passes it, by
//! `pgrepl_core::health`, answered 200 or 503 with this member's `/patroni` body (`HEAD` and
//! `OPTIONS`: the status alone, as Patroni's HAProxy recipe reads it).

use super::{error, json, patroni, reply, Api, Reply};
use hyper::{Method, StatusCode};
use pgrepl_agent::probe::Cycle;
use pgrepl_core::health::{Check, Facts, NotACheck};
use pgrepl_core::Server;
use std::time::Duration;

/// The answer to a check, or `None` when `path` names none.
pub fn answer(api: &Api, method: &Method, path: &str, query: &str) -> Option<Reply> {
    let check = match Check::parse(path, query) {
        Ok(check) => check,
        Err(NotACheck::Path) => return None,
        Err(NotACheck::Bad(sentence)) => return Some(error(StatusCode::BAD_REQUEST, &sentence)),
    };
    // One read of the loop's last cycle, so the code and the body say the same.
    let cycle = api.probe.last();
    let facts = facts(api, cycle.as_deref());
    let code = if check.passes(&facts) { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Some(match *method {
        Method::GET => json(code, &patroni::body(api, cycle.as_deref(), &facts)),
        _ => reply(code, "application/json", ""),
    })
}

/// What the checks read: the loop's last cycle. A lease counts as held only for the time it
/// had left when that cycle read it, so a stuck agent's primary stops passing `/primary` then.
pub fn facts(api: &Api, cycle: Option<&Cycle>) -> Facts {
    let config = &api.cluster.config;
    let loop_age = api.probe.loop_age();
    let Some(c) = cycle else {
        return Facts {
            server: Server::Stopped,
            holds_lease: false,
            leader_lsn: None,
            sync_state: None,
            loop_age,
            ttl: config.ttl,
            maximum_lag_on_failover: config.failover.maximum_lag_bytes,
        };
    };
    let lease_held = c.own_lease_left_now().is_some_and(|left| !left.is_zero());
    let leader = c.view.ready_leader();
    let sync_state = c.view.replication_of(&api.member).and_then(|r| r.sync_state.clone());
    let maximum_lag_on_failover =
        c.view.spec.as_ref().map_or(config.failover.maximum_lag_bytes, |s| s.failover.maximum_lag_bytes);
    // The lease's lifetime the agents run with: the cluster's (`pgrepl config set ttl=...`).
    let ttl = crate::config::cluster_wide::timing(c.view.spec.as_ref(), config).ttl;
    Facts {
        server: c.server.clone(),
        holds_lease: lease_held,
        leader_lsn: leader.and_then(|(_, s)| s.lsn),
        sync_state,
        loop_age,
        ttl: ttl.max(Duration::from_secs(1)),
        maximum_lag_on_failover,
    }
}
