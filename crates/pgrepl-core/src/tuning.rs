//! pgrepl's own cluster-wide settings beside `Spec::failover`: the agents' clocks (`Timing`),
//! how routers serve the endpoints (`Routing`) and the client ranges in `pg_hba.conf`. Kept
//! in the spec, the same for every member, and changed by `pgrepl config set`; a spec written
//! before they were kept there has none, and each agent and router then uses its own
//! configuration's. Pure: what an agent or a router uses, given the spec and its own values,
//! and the sentence that says what changed. Validation is the configuration's (the binary's).

use crate::spec::Spec;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The agents' clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// Pause between two cycles when nothing changes.
    #[serde(rename = "loop_wait_ms", with = "millis")]
    pub loop_wait: Duration,
    /// Lifetime of the leader lease and of member statuses.
    #[serde(rename = "ttl_ms", with = "millis")]
    pub ttl: Duration,
    /// How long a leader tries to start its PostgreSQL before it gives the lease up.
    #[serde(rename = "primary_start_timeout_ms", with = "millis")]
    pub primary_start_timeout: Duration,
}

impl Timing {
    /// What changed from `self` to `next`, as `name old -> new` phrases (empty: nothing).
    pub fn changes(&self, next: &Timing) -> Vec<String> {
        let mut said = vec![];
        for (name, old, new) in [
            ("loop_wait", self.loop_wait, next.loop_wait),
            ("ttl", self.ttl, next.ttl),
            ("primary_start_timeout", self.primary_start_timeout, next.primary_start_timeout),
        ] {
            if old != new {
                said.push(format!("{name} {old:?} -> {new:?}"));
            }
        }
        said
    }
}

/// How far behind a replica may be and still serve reads (`ro_max_lag`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxLag {
    Bytes(u64),
    #[serde(rename = "time_ms", with = "millis")]
    Time(Duration),
}

/// Where read-only connections go when no replica qualifies (`ro_fallback`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoFallback {
    /// To the primary.
    Primary,
    /// Nowhere: the client gets an error.
    Refuse,
}

/// How routers serve the endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routing {
    pub ro_max_lag: MaxLag,
    pub ro_fallback: RoFallback,
    /// How long a new read-write connection waits for a primary.
    #[serde(rename = "rw_wait_ms", with = "millis")]
    pub rw_wait: Duration,
}

impl Spec {
    /// The clocks an agent runs with: the cluster's, else its own configuration's.
    pub fn timing_or(&self, own: Timing) -> Timing {
        self.timing.unwrap_or(own)
    }

    /// How a router serves: the cluster's, else its own configuration's.
    pub fn routing_or(&self, own: Routing) -> Routing {
        self.routing.unwrap_or(own)
    }

    /// The client ranges `pg_hba.conf` lets in: the cluster's, else the member's own.
    pub fn allow_or<'a>(&'a self, own: &'a [String]) -> &'a [String] {
        self.allow.as_deref().unwrap_or(own)
    }
}

/// A `Duration` as whole milliseconds in the store.
mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(loop_wait: u64, ttl: u64) -> Timing {
        Timing {
            loop_wait: Duration::from_millis(loop_wait),
            ttl: Duration::from_millis(ttl),
            primary_start_timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn a_spec_without_the_clusters_own_values_leaves_each_member_its_own() {
        let own = timing(1000, 4000);
        let routing =
            Routing { ro_max_lag: MaxLag::Bytes(16 << 20), ro_fallback: RoFallback::Primary, rw_wait: Duration::ZERO };
        let allow = vec!["10.0.0.0/8".to_string()];
        let old: Spec =
            serde_json::from_str(r#"{"members":{},"bootstrap":null,"passwords":{"user":0,"admin":0,"replication":0}}"#)
                .unwrap();
        assert_eq!(old.timing_or(own), own);
        assert_eq!(old.routing_or(routing), routing);
        assert_eq!(old.allow_or(&allow), allow.as_slice());
        // Nor does writing it back add them.
        let text = serde_json::to_string(&old).unwrap();
        assert!(!text.contains("timing") && !text.contains("routing") && !text.contains("allow"), "{text}");
    }

    #[test]
    fn the_clusters_values_win_over_each_members_own() {
        let cluster = timing(2000, 9000);
        let routing = Routing {
            ro_max_lag: MaxLag::Time(Duration::from_secs(10)),
            ro_fallback: RoFallback::Refuse,
            rw_wait: Duration::from_millis(1500),
        };
        let spec = Spec {
            timing: Some(cluster),
            routing: Some(routing),
            allow: Some(vec!["0.0.0.0/0".into()]),
            ..Spec::default()
        };
        let own_routing =
            Routing { ro_max_lag: MaxLag::Bytes(1), ro_fallback: RoFallback::Primary, rw_wait: Duration::ZERO };
        assert_eq!(spec.timing_or(timing(1000, 4000)), cluster);
        assert_eq!(spec.routing_or(own_routing), routing);
        assert_eq!(spec.allow_or(&["127.0.0.1/32".to_string()]), ["0.0.0.0/0".to_string()]);
        // And they survive the store.
        let back: Spec = serde_json::from_slice(&serde_json::to_vec(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
        let text = serde_json::to_string(&spec).unwrap();
        assert!(text.contains(r#""ttl_ms":9000"#) && text.contains(r#""time_ms":10000"#), "{text}");
    }

    #[test]
    fn changes_name_each_clock_that_changed() {
        assert!(timing(1000, 4000).changes(&timing(1000, 4000)).is_empty());
        assert_eq!(timing(1000, 4000).changes(&timing(500, 6000)), ["loop_wait 1s -> 500ms", "ttl 4s -> 6s"]);
    }
}
