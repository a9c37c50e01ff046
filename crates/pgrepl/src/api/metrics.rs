//! `GET /metrics`: Prometheus's text exposition format (0.0.4). `gather` reads the values once
//! (the loop's last cycle and counters from `Probe`, a router's connection counts) and `render`,
//! pure, writes them; every sample carries `cluster` and `member` (Patroni's `scope` and
//! `name`). The router run as its own process (`pgrepl router`) serves its counts through
//! `serve_router`, with `member="router"`. Nothing here waits on the loop or writes anything.

use super::{reply as http_reply, Api, Reply};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use pgrepl_agent::probe::{Counters, DURATION_BUCKETS};
use pgrepl_core::{ClusterView, MemberName, Server};
use pgrepl_router::{ConnectionCount, Connections, Endpoint};
use std::convert::Infallible;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{debug, warn};

pub const CONTENT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `member` label of a router that runs as its own process.
pub const ROUTER_MEMBER: &str = "router";

/// Everything `/metrics` shows, as read at one moment.
#[derive(Clone, Debug, Default)]
pub struct Values {
    pub cluster: String,
    pub member: String,
    pub version: String,
    /// The agent's loop; `None` where no agent runs (the router's own process).
    pub agent: Option<AgentValues>,
    /// A router's connection counts, where one runs in this process.
    pub router: Option<RouterValues>,
}

#[derive(Clone, Debug, Default)]
pub struct AgentValues {
    /// How long ago the loop last beat.
    pub loop_age: Duration,
    pub counters: Counters,
    /// The last cycle's, once there was one.
    pub cycle: Option<CycleValues>,
}

#[derive(Clone, Debug)]
pub struct CycleValues {
    pub server: Server,
    /// The store showed this member holding the leader lease.
    pub leader: bool,
    /// Holder only: time left on the lease now (from what the cycle read).
    pub lease_expires_in: Option<Duration>,
    pub cluster_unlocked: bool,
    pub maintenance_mode: bool,
    /// Primary: each replica of its `pg_stat_replication`.
    pub replicas: Vec<Lag>,
    /// Replica: its own lag behind the primary, as `status --json` shows it.
    pub own_lag_bytes: Option<u64>,
    pub own_lag_seconds: Option<f64>,
    /// How long the cycle took to observe and decide.
    pub took: Duration,
    /// This member's last fence, as recorded in the store.
    pub last_fence_unix_ms: Option<u64>,
    /// When its installed TLS certificate ends (Unix seconds), as its status publishes it.
    pub tls_not_after_unix: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Lag {
    pub replica: String,
    pub bytes: Option<u64>,
    pub seconds: Option<f64>,
}

#[derive(Clone, Debug, Default)]
pub struct RouterValues {
    pub connections: Vec<ConnectionCount>,
    pub refused_rw: u64,
    pub refused_ro: u64,
}

impl RouterValues {
    pub fn read(connections: &Connections) -> RouterValues {
        RouterValues {
            connections: connections.counts(),
            refused_rw: connections.refusals(Endpoint::Rw),
            refused_ro: connections.refusals(Endpoint::Ro),
        }
    }
}

/// The answer to `GET /metrics`.
pub fn reply(api: &Api) -> Reply {
    http_reply(StatusCode::OK, CONTENT, render(&gather(api)))
}

/// Reads what the API knows now.
pub fn gather(api: &Api) -> Values {
    let cycle = api.probe.last().map(|c| {
        let me = &api.member;
        let lease_expires_in = c.own_lease_left_now();
        let replicas = match c.server {
            Server::Primary { .. } => replica_lags(&c.status.replication, c.status.lsn),
            _ => Vec::new(),
        };
        let (own_lag_bytes, own_lag_seconds) = match c.server {
            Server::Replica { .. } => own_lag(&c.view, me),
            _ => (None, None),
        };
        CycleValues {
            server: c.server.clone(),
            leader: c.holds_lease,
            lease_expires_in,
            cluster_unlocked: c.view.leader.is_none(),
            maintenance_mode: c.view.paused(),
            replicas,
            own_lag_bytes,
            own_lag_seconds,
            took: c.took,
            last_fence_unix_ms: c.view.fences.get(me).map(|f| f.at_unix_ms),
            tls_not_after_unix: c.status.tls_not_after_unix,
        }
    });
    Values {
        cluster: api.cluster.config.cluster.clone(),
        member: api.member.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        agent: Some(AgentValues { loop_age: api.probe.loop_age(), counters: api.probe.counters(), cycle }),
        router: api.router.as_deref().map(RouterValues::read),
    }
}

/// A primary's lag of each replica, from its own `pg_stat_replication` and WAL position read in
/// the same cycle (how `ClusterView::lag_bytes` and `status --json` count it; seconds as
/// `status --json` shows them: `replay_lag`, 0 when PostgreSQL reports none).
fn replica_lags(rows: &[pgrepl_core::ReplicationRow], lsn: Option<pgrepl_core::Lsn>) -> Vec<Lag> {
    rows.iter()
        .map(|r| Lag {
            replica: r.application_name.clone(),
            bytes: lsn.zip(r.replay_lsn).map(|(at, replayed)| at.bytes_after(replayed)),
            seconds: Some(r.replay_lag_ms.unwrap_or(0) as f64 / 1000.0),
        })
        .collect()
}

/// This replica's lag as `status --json` computes it from the same view.
fn own_lag(view: &ClusterView, me: &MemberName) -> (Option<u64>, Option<f64>) {
    (view.lag_bytes(me), view.lag_seconds(me))
}

/// A sample's value: integers stay exact (WAL positions pass 2^53 only in theory, but counts
/// should never print as floats).
#[derive(Clone, Copy, Debug)]
enum Num {
    Int(u64),
    Float(f64),
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Num::Int(n) => write!(f, "{n}"),
            Num::Float(x) if x.is_nan() => f.write_str("NaN"),
            Num::Float(x) if x.is_infinite() => f.write_str(if x > 0.0 { "+Inf" } else { "-Inf" }),
            Num::Float(x) => write!(f, "{x}"),
        }
    }
}

fn flag(b: bool) -> Num {
    Num::Int(u64::from(b))
}

fn secs(d: Duration) -> Num {
    Num::Float(d.as_secs_f64())
}

/// A label value as the format wants it: backslash, double quote and line feed escaped.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text: backslash and line feed escaped (quotes are fine there).
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// The text being written, with the labels every sample carries.
struct Text {
    out: String,
    common: String,
}

impl Text {
    /// One metric's `# HELP` and `# TYPE` lines.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: Num) {
        let _ = write!(self.out, "{name}{{{}", self.common);
        for (k, v) in labels {
            let _ = write!(self.out, ",{k}=\"{}\"", escape_label(v));
        }
        let _ = writeln!(self.out, "}} {value}");
    }

    /// A metric with one unlabelled sample.
    fn one(&mut self, name: &str, kind: &str, help: &str, value: Num) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// The exposition text of `v`.
pub fn render(v: &Values) -> String {
    let mut t = Text {
        out: String::new(),
        common: format!("cluster=\"{}\",member=\"{}\"", escape_label(&v.cluster), escape_label(&v.member)),
    };
    t.family("pgrepl_info", "gauge", "pgrepl's version; always 1.");
    t.sample("pgrepl_info", &[("version", &v.version)], Num::Int(1));
    if let Some(agent) = &v.agent {
        render_agent(&mut t, agent);
    }
    if let Some(router) = &v.router {
        render_router(&mut t, router);
    }
    t.out
}

fn render_agent(t: &mut Text, a: &AgentValues) {
    if let Some(c) = &a.cycle {
        render_cycle(t, c);
    }
    let c = &a.counters;
    t.one(
        "pgrepl_loop_age_seconds",
        "gauge",
        "Seconds since the agent's loop last beat (finished a cycle, or made progress in a long action).",
        secs(a.loop_age),
    );
    t.one("pgrepl_cycles_total", "counter", "Cycles the agent's loop has run since it started.", Num::Int(c.cycles));
    t.family("pgrepl_cycle_duration_seconds", "histogram", "How long cycles took to observe and decide.");
    let mut cumulative = 0;
    for (bound, n) in DURATION_BUCKETS.iter().zip(c.durations.buckets) {
        cumulative += n;
        t.sample("pgrepl_cycle_duration_seconds_bucket", &[("le", &bound.to_string())], Num::Int(cumulative));
    }
    t.sample("pgrepl_cycle_duration_seconds_bucket", &[("le", "+Inf")], Num::Int(c.durations.count));
    t.sample("pgrepl_cycle_duration_seconds_sum", &[], Num::Float(c.durations.sum_seconds));
    t.sample("pgrepl_cycle_duration_seconds_count", &[], Num::Int(c.durations.count));
    t.family("pgrepl_decisions_total", "counter", "Decisions the agent's loop made, by action.");
    for (action, n) in &c.decisions {
        t.sample("pgrepl_decisions_total", &[("action", action)], Num::Int(*n));
    }
    t.family("pgrepl_action_failures_total", "counter", "Actions that failed, by action.");
    for (action, n) in &c.failures {
        t.sample("pgrepl_action_failures_total", &[("action", action)], Num::Int(*n));
    }
    t.one(
        "pgrepl_fences_total",
        "counter",
        "Fences (this member's PostgreSQL killed by its fencer) reported to this agent since it started.",
        Num::Int(c.fences),
    );
    t.family(
        "pgrepl_promotions_total",
        "counter",
        "Promotions this agent carried out: switchover when requested for this member (promote, switchover, failover --to), else failover.",
    );
    t.sample("pgrepl_promotions_total", &[("kind", "failover")], Num::Int(c.failovers));
    t.sample("pgrepl_promotions_total", &[("kind", "switchover")], Num::Int(c.switchovers));
}

fn render_cycle(t: &mut Text, c: &CycleValues) {
    let (primary, replica, streaming) = match c.server {
        Server::Primary { .. } => (true, false, false),
        Server::Replica { streaming, .. } => (false, true, streaming),
        Server::Stopped => (false, false, false),
    };
    t.one("pgrepl_primary", "gauge", "1 when this member's PostgreSQL runs as a primary.", flag(primary));
    t.one("pgrepl_replica", "gauge", "1 when this member's PostgreSQL runs as a replica.", flag(replica));
    t.one("pgrepl_leader", "gauge", "1 when this member holds the leader lease.", flag(c.leader));
    t.one("pgrepl_postgres_running", "gauge", "1 when this member's PostgreSQL runs.", flag(c.server.is_running()));
    t.one(
        "pgrepl_postgres_streaming",
        "gauge",
        "1 when this member is a replica whose WAL receiver streams.",
        flag(streaming),
    );
    t.one("pgrepl_cluster_unlocked", "gauge", "1 when nobody holds the leader lease.", flag(c.cluster_unlocked));
    t.one(
        "pgrepl_maintenance_mode",
        "gauge",
        "1 while the cluster is paused (pgrepl pause).",
        flag(c.maintenance_mode),
    );
    match &c.server {
        Server::Primary { timeline, lsn } => {
            t.one(
                "pgrepl_timeline",
                "gauge",
                "The timeline this member's PostgreSQL is on.",
                Num::Int(timeline.0.into()),
            );
            t.one(
                "pgrepl_wal_position_bytes",
                "gauge",
                "The primary's current WAL position, in bytes.",
                Num::Int(lsn.0),
            );
        }
        Server::Replica { timeline, receive_lsn, replay_lsn, .. } => {
            t.one(
                "pgrepl_timeline",
                "gauge",
                "The timeline this member's PostgreSQL is on.",
                Num::Int(timeline.0.into()),
            );
            t.one(
                "pgrepl_wal_received_bytes",
                "gauge",
                "The last WAL position this replica received, in bytes.",
                Num::Int(receive_lsn.0.max(replay_lsn.0)),
            );
            t.one(
                "pgrepl_wal_replayed_bytes",
                "gauge",
                "The last WAL position this replica replayed, in bytes.",
                Num::Int(replay_lsn.0),
            );
        }
        Server::Stopped => {}
    }
    if primary {
        t.family(
            "pgrepl_replication_lag_bytes",
            "gauge",
            "Primary: bytes each replica has still to replay, from pg_stat_replication.",
        );
        for lag in &c.replicas {
            if let Some(bytes) = lag.bytes {
                t.sample("pgrepl_replication_lag_bytes", &[("replica", &lag.replica)], Num::Int(bytes));
            }
        }
        t.family(
            "pgrepl_replication_lag_seconds",
            "gauge",
            "Primary: each replica's replay_lag from pg_stat_replication, in seconds (0 when none is reported).",
        );
        for lag in &c.replicas {
            if let Some(seconds) = lag.seconds {
                t.sample("pgrepl_replication_lag_seconds", &[("replica", &lag.replica)], Num::Float(seconds));
            }
        }
    }
    if let Some(bytes) = c.own_lag_bytes {
        t.one(
            "pgrepl_lag_bytes",
            "gauge",
            "Replica: bytes this member has still to replay to reach the primary.",
            Num::Int(bytes),
        );
    }
    if let Some(seconds) = c.own_lag_seconds {
        t.one(
            "pgrepl_lag_seconds",
            "gauge",
            "Replica: this member's replay lag as the primary reports it, in seconds.",
            Num::Float(seconds),
        );
    }
    t.one(
        "pgrepl_loop_duration_seconds",
        "gauge",
        "How long the agent's last cycle took to observe and decide.",
        secs(c.took),
    );
    if let Some(left) = c.lease_expires_in {
        t.one(
            "pgrepl_lease_expires_in_seconds",
            "gauge",
            "Leader only: seconds until the leader lease expires unless renewed.",
            secs(left),
        );
    }
    if let Some(at) = c.last_fence_unix_ms {
        t.one(
            "pgrepl_last_fence_timestamp_seconds",
            "gauge",
            "When this member was last fenced, as recorded in the store (Unix time).",
            Num::Float(at as f64 / 1000.0),
        );
    }
    if let Some(at) = c.tls_not_after_unix {
        t.one(
            "pgrepl_tls_certificate_expiry_timestamp_seconds",
            "gauge",
            "When this member's installed TLS certificate expires (Unix time; warned of within 30 days).",
            Num::Int(at),
        );
    }
}

fn render_router(t: &mut Text, r: &RouterValues) {
    t.family(
        "pgrepl_router_connections_total",
        "counter",
        "Client connections the router routed, by endpoint and backend member, since it started.",
    );
    for c in &r.connections {
        let endpoint = c.endpoint.to_string();
        t.sample(
            "pgrepl_router_connections_total",
            &[("endpoint", &endpoint), ("backend", &c.backend)],
            Num::Int(c.opened),
        );
    }
    t.family("pgrepl_router_connections_open", "gauge", "Client connections open now, by endpoint and backend member.");
    for c in &r.connections {
        let endpoint = c.endpoint.to_string();
        t.sample(
            "pgrepl_router_connections_open",
            &[("endpoint", &endpoint), ("backend", &c.backend)],
            Num::Int(c.open),
        );
    }
    t.family(
        "pgrepl_router_connections_refused_total",
        "counter",
        "Client connections refused with an error (nowhere to route them), by endpoint.",
    );
    t.sample("pgrepl_router_connections_refused_total", &[("endpoint", "rw")], Num::Int(r.refused_rw));
    t.sample("pgrepl_router_connections_refused_total", &[("endpoint", "ro")], Num::Int(r.refused_ro));
}

/// The router's own metrics listener (`pgrepl router`): `GET /metrics` only. Serves until the
/// task is dropped.
pub async fn serve_router(listener: TcpListener, cluster: String, connections: Arc<Connections>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!("the router's metrics listener could not accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let cluster = cluster.clone();
        let connections = connections.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let values = Values {
                    cluster: cluster.clone(),
                    member: ROUTER_MEMBER.to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    agent: None,
                    router: Some(RouterValues::read(&connections)),
                };
                async move {
                    let reply = if req.method() == Method::GET && req.uri().path() == "/metrics" {
                        http_reply(StatusCode::OK, CONTENT, render(&values))
                    } else {
                        let mut r = Response::new(Full::new(Bytes::from_static(b"only GET /metrics is served here\n")));
                        *r.status_mut() = StatusCode::NOT_FOUND;
                        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
                        r
                    };
                    Ok::<_, Infallible>(reply)
                }
            });
            if let Err(e) =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
            {
                debug!("router metrics connection: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrepl_core::{Lsn, Timeline};

    fn primary() -> Values {
        let mut counters = Counters { cycles: 7, fences: 1, switchovers: 1, ..Counters::default() };
        counters.decisions.insert("renew_lease", 6);
        counters.decisions.insert("promote", 1);
        counters.failures.insert("apply_spec", 2);
        counters.durations.observe(Duration::from_millis(2));
        counters.durations.observe(Duration::from_millis(30));
        Values {
            cluster: "pgrepl".into(),
            member: "node-1".into(),
            version: "1.2.3".into(),
            agent: Some(AgentValues {
                loop_age: Duration::from_millis(250),
                counters,
                cycle: Some(CycleValues {
                    server: Server::Primary { timeline: Timeline(3), lsn: Lsn(0x5000100) },
                    leader: true,
                    lease_expires_in: Some(Duration::from_millis(9500)),
                    cluster_unlocked: false,
                    maintenance_mode: false,
                    replicas: vec![Lag { replica: "node-2".into(), bytes: Some(256), seconds: Some(0.25) }],
                    own_lag_bytes: None,
                    own_lag_seconds: None,
                    took: Duration::from_millis(4),
                    last_fence_unix_ms: Some(1_700_000_000_500),
                    tls_not_after_unix: Some(1_800_000_000),
                }),
            }),
            router: Some(RouterValues {
                connections: vec![ConnectionCount {
                    endpoint: Endpoint::Rw,
                    backend: "node-1".into(),
                    opened: 5,
                    open: 2,
                }],
                refused_rw: 0,
                refused_ro: 3,
            }),
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn a_primary_shows_its_role_positions_and_each_replicas_lag() {
        let text = render(&primary());
        let l = lines(&text);
        let c = r#"cluster="pgrepl",member="node-1""#;
        for want in [
            format!(r#"pgrepl_info{{{c},version="1.2.3"}} 1"#),
            format!("pgrepl_primary{{{c}}} 1"),
            format!("pgrepl_replica{{{c}}} 0"),
            format!("pgrepl_leader{{{c}}} 1"),
            format!("pgrepl_timeline{{{c}}} 3"),
            format!("pgrepl_wal_position_bytes{{{c}}} {}", 0x5000100),
            format!(r#"pgrepl_replication_lag_bytes{{{c},replica="node-2"}} 256"#),
            format!(r#"pgrepl_replication_lag_seconds{{{c},replica="node-2"}} 0.25"#),
            format!("pgrepl_lease_expires_in_seconds{{{c}}} 9.5"),
            format!("pgrepl_last_fence_timestamp_seconds{{{c}}} 1700000000.5"),
            format!("pgrepl_tls_certificate_expiry_timestamp_seconds{{{c}}} 1800000000"),
            format!(r#"pgrepl_decisions_total{{{c},action="promote"}} 1"#),
            format!(r#"pgrepl_action_failures_total{{{c},action="apply_spec"}} 2"#),
            format!(r#"pgrepl_promotions_total{{{c},kind="switchover"}} 1"#),
            format!(r#"pgrepl_promotions_total{{{c},kind="failover"}} 0"#),
            format!("pgrepl_cycles_total{{{c}}} 7"),
            format!(r#"pgrepl_router_connections_total{{{c},endpoint="rw",backend="node-1"}} 5"#),
            format!(r#"pgrepl_router_connections_open{{{c},endpoint="rw",backend="node-1"}} 2"#),
            format!(r#"pgrepl_router_connections_refused_total{{{c},endpoint="ro"}} 3"#),
        ] {
            assert!(l.contains(&want.as_str()), "missing {want:?} in:\n{text}");
        }
        assert!(!text.contains("pgrepl_wal_replayed_bytes"), "no replica positions on a primary");
        assert!(!text.contains("pgrepl_lag_bytes"), "a primary has no lag of its own");
    }

    #[test]
    fn every_metric_has_one_help_and_one_type_line_before_its_samples() {
        let text = render(&primary());
        let mut helped = std::collections::BTreeMap::new();
        let mut typed = std::collections::BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                *helped.entry(rest.split(' ').next().unwrap().to_string()).or_insert(0) += 1;
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(helped.contains_key(&name), "TYPE before HELP for {name}");
                // Parsers (prometheus_client's) rename a counter's samples otherwise.
                assert_eq!(rest.ends_with(" counter"), name.ends_with("_total"), "{line}");
                *typed.entry(name).or_insert(0) += 1;
            } else {
                let sample = line.split('{').next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| sample.strip_suffix(s).filter(|f| typed.contains_key(*f)))
                    .unwrap_or(sample);
                assert!(typed.contains_key(family), "sample {line:?} before its TYPE line");
                assert!(line.contains(r#"cluster="pgrepl",member="node-1""#), "{line}");
            }
        }
        assert!(helped.values().all(|n| *n == 1), "{helped:?}");
        assert_eq!(helped.keys().collect::<Vec<_>>(), typed.keys().collect::<Vec<_>>());
        assert!(typed.values().all(|n| *n == 1), "{typed:?}");
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn the_histogram_counts_cumulatively_up_to_inf() {
        let text = render(&primary());
        let c = r#"cluster="pgrepl",member="node-1""#;
        let l = lines(&text);
        for want in [
            format!(r#"pgrepl_cycle_duration_seconds_bucket{{{c},le="0.001"}} 0"#),
            format!(r#"pgrepl_cycle_duration_seconds_bucket{{{c},le="0.0025"}} 1"#),
            format!(r#"pgrepl_cycle_duration_seconds_bucket{{{c},le="0.025"}} 1"#),
            format!(r#"pgrepl_cycle_duration_seconds_bucket{{{c},le="0.05"}} 2"#),
            format!(r#"pgrepl_cycle_duration_seconds_bucket{{{c},le="+Inf"}} 2"#),
            format!("pgrepl_cycle_duration_seconds_count{{{c}}} 2"),
            format!("pgrepl_cycle_duration_seconds_sum{{{c}}} 0.032"),
        ] {
            assert!(l.contains(&want.as_str()), "missing {want:?} in:\n{text}");
        }
    }

    #[test]
    fn a_replica_shows_its_positions_and_its_own_lag() {
        let mut v = primary();
        let agent = v.agent.as_mut().unwrap();
        let cycle = agent.cycle.as_mut().unwrap();
        cycle.server = Server::Replica {
            timeline: Timeline(3),
            receive_lsn: Lsn(2000),
            replay_lsn: Lsn(1500),
            replay_timeline: Some(Timeline(3)),
            upstream: None,
            streaming: true,
        };
        cycle.leader = false;
        cycle.lease_expires_in = None;
        cycle.own_lag_bytes = Some(42);
        cycle.own_lag_seconds = Some(0.0);
        v.router = None;
        let text = render(&v);
        let c = r#"cluster="pgrepl",member="node-1""#;
        let l = lines(&text);
        for want in [
            format!("pgrepl_replica{{{c}}} 1"),
            format!("pgrepl_postgres_streaming{{{c}}} 1"),
            format!("pgrepl_wal_received_bytes{{{c}}} 2000"),
            format!("pgrepl_wal_replayed_bytes{{{c}}} 1500"),
            format!("pgrepl_lag_bytes{{{c}}} 42"),
            format!("pgrepl_lag_seconds{{{c}}} 0"),
        ] {
            assert!(l.contains(&want.as_str()), "missing {want:?} in:\n{text}");
        }
        for absent in ["pgrepl_replication_lag_bytes", "pgrepl_lease_expires_in_seconds", "pgrepl_router_"] {
            assert!(!text.contains(absent), "{absent} on a replica:\n{text}");
        }
    }

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("two\nlines"), r"two\nlines");
        let v = Values {
            cluster: "we\"ird\\name\n".into(),
            member: ROUTER_MEMBER.into(),
            version: "0".into(),
            agent: None,
            router: None,
        };
        assert_eq!(
            render(&v),
            "# HELP pgrepl_info pgrepl's version; always 1.\n# TYPE pgrepl_info gauge\n\
             pgrepl_info{cluster=\"we\\\"ird\\\\name\\n\",member=\"router\",version=\"0\"} 1\n"
        );
    }

    #[test]
    fn before_the_first_cycle_only_the_loop_and_its_counters_show() {
        let mut v = primary();
        v.agent.as_mut().unwrap().cycle = None;
        let text = render(&v);
        assert!(text.contains("pgrepl_loop_age_seconds{"), "{text}");
        assert!(!text.contains("pgrepl_primary"), "{text}");
    }

    #[test]
    fn numbers_print_as_the_format_reads_them() {
        assert_eq!(Num::Float(f64::NAN).to_string(), "NaN");
        assert_eq!(Num::Float(f64::INFINITY).to_string(), "+Inf");
        assert_eq!(Num::Float(1.0e-7).to_string(), "0.0000001");
        assert_eq!(Num::Int(u64::MAX).to_string(), "18446744073709551615");
    }

    #[test]
    fn a_primarys_lag_counts_from_its_own_position() {
        let row = |name: &str, replay: Option<u64>, ms: Option<u64>| pgrepl_core::ReplicationRow {
            application_name: name.into(),
            client_addr: None,
            state: "streaming".into(),
            flush_lsn: None,
            replay_lsn: replay.map(Lsn),
            replay_lag_ms: ms,
            sync_state: None,
        };
        let lags = replica_lags(&[row("node-2", Some(900), Some(1500)), row("node-3", None, None)], Some(Lsn(1000)));
        assert_eq!(
            lags,
            [
                Lag { replica: "node-2".into(), bytes: Some(100), seconds: Some(1.5) },
                Lag { replica: "node-3".into(), bytes: None, seconds: Some(0.0) },
            ]
        );
    }
}
