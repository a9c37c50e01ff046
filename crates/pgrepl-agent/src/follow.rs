//! The cluster's own settings an agent takes from the spec each cycle (`loop_wait`, `ttl`,
//! `primary_start_timeout`, `allow`), in place of its configuration's, which it keeps for a
//! spec that has none. A change applies from the cycle that reads it: the lease is written and
//! the fence armed with the TTL of that same write (`Agent::renew`), so a changed TTL never
//! leaves a primary running unfenced past the lease the store holds; `pg_hba.conf` follows a
//! changed `allow` after the next quiet cycle (`refresh_hba`).

use crate::member::Agent;
use pgrepl_core::{Spec, Timing};
use tracing::info;

/// What an agent's own configuration says, for a spec without the cluster's values.
#[derive(Clone, Debug)]
pub(crate) struct Own {
    pub timing: Timing,
    pub allow: Vec<String>,
}

impl Own {
    pub fn of(s: &crate::Settings) -> Own {
        Own {
            timing: Timing { loop_wait: s.loop_wait, ttl: s.ttl, primary_start_timeout: s.primary_start_timeout },
            allow: s.allow.clone(),
        }
    }
}

impl Agent {
    /// Takes this member's port from the spec, and the spec's cluster-wide settings into
    /// `self.s` (its own when it has none, or no spec was read), saying in one sentence what
    /// changed.
    pub(crate) fn follow_spec(&mut self, spec: Option<&Spec>) {
        if let Some(port) = spec.and_then(|s| s.members.get(&self.s.member)).map(|m| m.port) {
            self.pg.port = port;
        }
        let own = self.own.clone();
        let timing = spec.map_or(own.timing, |spec| spec.timing_or(own.timing));
        let allow = spec.map_or(own.allow.as_slice(), |spec| spec.allow_or(&own.allow)).to_vec();
        let now = Timing {
            loop_wait: self.s.loop_wait,
            ttl: self.s.ttl,
            primary_start_timeout: self.s.primary_start_timeout,
        };
        let mut changes = now.changes(&timing);
        if allow != self.s.allow {
            changes.push(format!("allow {} -> {}", self.s.allow.join(","), allow.join(",")));
        }
        if changes.is_empty() {
            return;
        }
        info!(
            "took the cluster's settings ({}): the lease, statuses and pg_hba.conf follow them from this cycle",
            changes.join(", ")
        );
        (self.s.loop_wait, self.s.ttl, self.s.primary_start_timeout) =
            (timing.loop_wait, timing.ttl, timing.primary_start_timeout);
        self.s.allow = allow;
    }
}
