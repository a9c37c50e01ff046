//! The health checks of the HTTP API, with Patroni's names and meanings (its `rest_api.rst`),
//! so that a load balancer or a Kubernetes probe written for Patroni reads pgrepl unchanged:
//! which check a request names (`Check::parse`), and whether this member passes it now
//! (`Check::passes`, from `Facts`). Pure: the API serves what these say as 200 or 503.

use crate::local::Server;
use crate::names::Lsn;
use std::time::Duration;

/// One health check, as a request names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// `/`, `/primary`, `/read-write`, `/master`: runs as primary and holds the lease.
    Primary,
    /// `/leader`: holds the lease, whatever its server is doing.
    Leader,
    /// `/replica`: a running replica, within `lag` of the leader, streaming if asked.
    Replica { lag: Option<u64>, streaming: bool },
    /// `/read-only`: `/replica`'s rules, or the primary.
    ReadOnly { lag: Option<u64>, streaming: bool },
    /// `/sync`, `/synchronous`: a replica the primary lists as synchronous (or quorum).
    Sync,
    /// `/read-only-sync`: `/sync`, or the primary.
    ReadOnlySync,
    /// `/quorum`: a replica the primary lists as a quorum standby.
    Quorum,
    /// `/read-only-quorum`: `/quorum`, or the primary.
    ReadOnlyQuorum,
    /// `/async`, `/asynchronous`: a replica the primary lists as asynchronous, within `lag`.
    Async { lag: Option<u64> },
    /// `/health`: PostgreSQL runs.
    Health,
    /// `/liveness`: the agent's loop has run within `ttl`.
    Liveness,
    /// `/readiness`: the leader, or a running replica within `lag` (default
    /// `maximum_lag_on_failover`) of it, counted on replayed WAL (`apply`) or received (`write`).
    Readiness { lag: Option<u64>, mode: LagMode },
}

/// Which position of a replica lag is counted from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LagMode {
    /// What it has replayed (Patroni's default).
    Apply,
    /// What it has received.
    Write,
}

/// What a member knows of itself and its leader when a check comes in.
#[derive(Clone, Debug)]
pub struct Facts {
    /// Its server as the agent last observed it.
    pub server: Server,
    /// It holds the leader lease.
    pub holds_lease: bool,
    /// The leader's WAL position as it last published it (`None`: no running leader).
    pub leader_lsn: Option<Lsn>,
    /// How the leader's `pg_stat_replication` lists this member (`sync`, `quorum`, `async`,
    /// `potential`), when it does.
    pub sync_state: Option<String>,
    /// How long ago the agent's loop last beat.
    pub loop_age: Duration,
    pub ttl: Duration,
    pub maximum_lag_on_failover: u64,
}

/// A request that is not one of the checks' paths, or whose parameters are wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotACheck {
    /// Some other path (the API may serve it otherwise).
    Path,
    /// A check with a bad parameter: the sentence says which and what is allowed.
    Bad(String),
}

impl Check {
    /// The check `path` names, with the parameters of `query` (`lag=16MB&mode=write`).
    pub fn parse(path: &str, query: &str) -> Result<Check, NotACheck> {
        let params: Vec<(&str, &str)> =
            query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, ""))).collect();
        let param = |name: &str| params.iter().rev().find(|(k, _)| *k == name).map(|(_, v)| *v);
        let lag = || -> Result<Option<u64>, NotACheck> {
            param("lag")
                .map(|text| {
                    parse_size(text).ok_or_else(|| {
                        NotACheck::Bad(format!(
                            "lag={text:?} is not a size; give bytes (1048576) or a size such as 1024kB, 16MB, 1GB"
                        ))
                    })
                })
                .transpose()
        };
        let streaming = || -> Result<bool, NotACheck> {
            match param("replication_state") {
                None => Ok(false),
                Some("streaming") => Ok(true),
                Some(other) => Err(NotACheck::Bad(format!(
                    "replication_state={other:?} is not a state pgrepl reports; the one allowed is streaming"
                ))),
            }
        };
        Ok(match path.trim_end_matches('/') {
            "" | "/primary" | "/read-write" | "/master" => Check::Primary,
            "/leader" => Check::Leader,
            "/replica" => Check::Replica { lag: lag()?, streaming: streaming()? },
            "/read-only" => Check::ReadOnly { lag: lag()?, streaming: streaming()? },
            "/sync" | "/synchronous" => Check::Sync,
            "/read-only-sync" => Check::ReadOnlySync,
            "/quorum" => Check::Quorum,
            "/read-only-quorum" => Check::ReadOnlyQuorum,
            "/async" | "/asynchronous" => Check::Async { lag: lag()? },
            "/health" => Check::Health,
            "/liveness" => Check::Liveness,
            "/readiness" => {
                let mode = match param("mode") {
                    None | Some("apply") => LagMode::Apply,
                    Some("write") => LagMode::Write,
                    Some(other) => {
                        return Err(NotACheck::Bad(format!("mode={other:?} is not a lag mode; use apply or write")))
                    }
                };
                Check::Readiness { lag: lag()?, mode }
            }
            _ => return Err(NotACheck::Path),
        })
    }

    /// Whether the member passes this check now.
    pub fn passes(&self, f: &Facts) -> bool {
        let primary = f.holds_lease && matches!(f.server, Server::Primary { .. });
        let within = |max: Option<u64>, mode| max.is_none_or(|max| f.lag(mode).is_some_and(|lag| lag <= max));
        let replica = |max: Option<u64>, streaming: bool| match &f.server {
            Server::Replica { streaming: s, .. } => (*s || !streaming) && within(max, LagMode::Apply),
            _ => false,
        };
        let listed_as = |states: &[&str]| {
            matches!(f.server, Server::Replica { .. }) && f.sync_state.as_deref().is_some_and(|s| states.contains(&s))
        };
        match self {
            Check::Primary => primary,
            Check::Leader => f.holds_lease,
            Check::Replica { lag, streaming } => replica(*lag, *streaming),
            Check::ReadOnly { lag, streaming } => primary || replica(*lag, *streaming),
            Check::Sync => listed_as(&["sync", "quorum"]),
            Check::ReadOnlySync => primary || listed_as(&["sync", "quorum"]),
            Check::Quorum => listed_as(&["quorum"]),
            Check::ReadOnlyQuorum => primary || listed_as(&["quorum"]),
            Check::Async { lag } => listed_as(&["async", "potential"]) && within(*lag, LagMode::Apply),
            Check::Health => f.server.is_running(),
            Check::Liveness => f.loop_age <= f.ttl,
            Check::Readiness { lag, mode } => {
                primary
                    || (matches!(f.server, Server::Replica { .. })
                        && within(Some(lag.unwrap_or(f.maximum_lag_on_failover)), *mode))
            }
        }
    }
}

impl Facts {
    /// How far this replica is behind the leader's published position (`None`: not a
    /// replica, or no running leader to be behind).
    pub fn lag(&self, mode: LagMode) -> Option<u64> {
        let Server::Replica { receive_lsn, replay_lsn, .. } = &self.server else { return None };
        let mine = match mode {
            LagMode::Apply => *replay_lsn,
            LagMode::Write => (*receive_lsn).max(*replay_lsn),
        };
        Some(self.leader_lsn?.bytes_after(mine))
    }
}

/// A size as PostgreSQL and Patroni write one: bytes (`1048576`), or a whole number with a
/// unit of 1024: `B`, `kB`, `MB`, `GB`, `TB` (also `KB`), a space allowed before the unit.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Timeline;

    fn replica(replayed: u64, received: u64, streaming: bool) -> Server {
        Server::Replica {
            timeline: Timeline(1),
            receive_lsn: Lsn(received),
            replay_lsn: Lsn(replayed),
            replay_timeline: Some(Timeline(1)),
            upstream: None,
            streaming,
        }
    }

    fn facts(server: Server) -> Facts {
        Facts {
            server,
            holds_lease: false,
            leader_lsn: Some(Lsn(100 << 20)),
            sync_state: Some("async".into()),
            loop_age: Duration::from_secs(1),
            ttl: Duration::from_secs(30),
            maximum_lag_on_failover: 1 << 20,
        }
    }

    fn primary() -> Facts {
        Facts {
            holds_lease: true,
            sync_state: None,
            ..facts(Server::Primary { timeline: Timeline(1), lsn: Lsn(100 << 20) })
        }
    }

    fn check(path: &str, query: &str) -> Check {
        Check::parse(path, query).unwrap_or_else(|e| panic!("{path}?{query}: {e:?}"))
    }

    #[test]
    fn sizes_are_read_as_patroni_reads_them() {
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("1024kB"), Some(1 << 20));
        assert_eq!(parse_size("10MB"), Some(10 << 20));
        assert_eq!(parse_size("1GB"), Some(1 << 30));
        assert_eq!(parse_size("16 MB"), Some(16 << 20));
        assert_eq!(parse_size("2TB"), Some(2 << 40));
        assert_eq!(parse_size("16mb"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn every_name_of_the_primary_check_names_it() {
        for path in ["/", "", "/primary", "/read-write", "/master", "/primary/"] {
            assert_eq!(check(path, ""), Check::Primary, "{path}");
        }
        assert_eq!(check("/synchronous", ""), Check::Sync);
        assert_eq!(check("/asynchronous", "lag=1kB"), Check::Async { lag: Some(1024) });
        assert_eq!(Check::parse("/cluster", ""), Err(NotACheck::Path));
    }

    #[test]
    fn bad_parameters_name_the_parameter_and_what_is_allowed() {
        let Err(NotACheck::Bad(e)) = Check::parse("/replica", "lag=lots") else { panic!("accepted") };
        assert!(e.contains("lag=\"lots\"") && e.contains("16MB"), "{e}");
        let Err(NotACheck::Bad(e)) = Check::parse("/replica", "replication_state=catchup") else { panic!() };
        assert!(e.contains("streaming"), "{e}");
        let Err(NotACheck::Bad(e)) = Check::parse("/readiness", "mode=flush") else { panic!() };
        assert!(e.contains("apply or write"), "{e}");
    }

    #[test]
    fn the_primary_passes_the_primary_checks_and_not_the_replica_ones() {
        let p = primary();
        for (path, query, passes) in [
            ("/primary", "", true),
            ("/leader", "", true),
            ("/read-only", "", true),
            ("/read-only-sync", "", true),
            ("/health", "", true),
            ("/readiness", "", true),
            ("/replica", "", false),
            ("/sync", "", false),
            ("/async", "", false),
        ] {
            assert_eq!(check(path, query).passes(&p), passes, "{path}?{query}");
        }
    }

    #[test]
    fn a_primary_without_the_lease_is_not_the_primary() {
        let p = Facts { holds_lease: false, ..primary() };
        assert!(!check("/primary", "").passes(&p));
        assert!(!check("/read-only", "").passes(&p));
        assert!(check("/health", "").passes(&p));
        let leader_starting = Facts { server: Server::Stopped, ..primary() };
        assert!(check("/leader", "").passes(&leader_starting));
        assert!(!check("/primary", "").passes(&leader_starting));
    }

    #[test]
    fn a_replica_passes_within_its_lag_bound_only() {
        // 2 MiB behind on replay, 1 MiB on receipt.
        let r = facts(replica(98 << 20, 99 << 20, true));
        assert!(check("/replica", "").passes(&r));
        assert!(check("/replica", "lag=2MB").passes(&r));
        assert!(!check("/replica", "lag=1MB").passes(&r));
        assert!(!check("/readiness", "").passes(&r), "maximum_lag_on_failover is 1 MiB");
        assert!(check("/readiness", "mode=write").passes(&r));
        assert!(check("/readiness", "lag=16MB").passes(&r));
        assert!(check("/async", "lag=2MB").passes(&r));
        assert!(!check("/async", "lag=1kB").passes(&r));
        assert!(!check("/primary", "").passes(&r));
    }

    #[test]
    fn a_lag_bound_fails_when_there_is_no_leader_to_measure_from() {
        let r = Facts { leader_lsn: None, ..facts(replica(100 << 20, 100 << 20, true)) };
        assert!(check("/replica", "").passes(&r));
        assert!(!check("/replica", "lag=16MB").passes(&r));
        assert!(!check("/readiness", "").passes(&r));
    }

    #[test]
    fn replication_state_streaming_requires_streaming() {
        let r = facts(replica(100 << 20, 100 << 20, false));
        assert!(check("/replica", "").passes(&r));
        assert!(!check("/replica", "replication_state=streaming").passes(&r));
        assert!(check("/replica", "replication_state=streaming").passes(&facts(replica(100 << 20, 100 << 20, true))));
    }

    #[test]
    fn sync_and_quorum_follow_the_primarys_listing() {
        let sync = Facts { sync_state: Some("sync".into()), ..facts(replica(1, 1, true)) };
        let quorum = Facts { sync_state: Some("quorum".into()), ..facts(replica(1, 1, true)) };
        let unlisted = Facts { sync_state: None, ..facts(replica(1, 1, true)) };
        assert!(check("/sync", "").passes(&sync) && !check("/quorum", "").passes(&sync));
        assert!(check("/sync", "").passes(&quorum) && check("/quorum", "").passes(&quorum));
        assert!(!check("/async", "").passes(&sync));
        assert!(!check("/sync", "").passes(&unlisted) && !check("/async", "").passes(&unlisted));
    }

    #[test]
    fn a_stopped_server_passes_only_liveness() {
        let s = facts(Server::Stopped);
        for path in ["/primary", "/replica", "/read-only", "/health", "/readiness", "/sync", "/async"] {
            assert!(!check(path, "").passes(&s), "{path}");
        }
        assert!(check("/liveness", "").passes(&s));
    }

    #[test]
    fn liveness_fails_once_the_loop_has_not_beaten_for_a_ttl() {
        let r = facts(replica(1, 1, true));
        assert!(check("/liveness", "").passes(&Facts { loop_age: Duration::from_secs(30), ..r.clone() }));
        assert!(!check("/liveness", "").passes(&Facts { loop_age: Duration::from_millis(30_001), ..r }));
    }
}
