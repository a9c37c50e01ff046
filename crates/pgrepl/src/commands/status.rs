//! `pgrepl status [--json]`: one row per member of the spec, from the statuses the agents
//! publish, plus the primary's `pg_stat_replication`. The JSON form is stable (README).

use crate::agent_lock;
use crate::cluster::Cluster;
use crate::commands::{pause, wait};
use crate::topology;
use pgrepl_core::{ClusterView, MemberName, MemberState, MemberStatus, Role};
use pgrepl_router::{Backend, RoFallback};
use serde::Serialize;
use std::path::Path;

#[derive(Serialize)]
pub struct StatusJson {
    pub cluster: String,
    pub leader: Option<String>,
    /// `pgrepl pause` is in force.
    pub maintenance_mode: bool,
    /// Since when (wall clock, milliseconds since the Unix epoch), when it is.
    pub paused_since_ms: Option<u64>,
    pub endpoints: EndpointsJson,
    pub members: Vec<MemberJson>,
    pub replication: Vec<ReplicationJson>,
}

#[derive(Serialize)]
pub struct EndpointsJson {
    /// Whether the router process runs.
    pub router: bool,
    /// Where the router process (`pgrepl router`, as `up` runs it) serves its `/metrics`
    /// (`host:port`), while it runs; `null` otherwise (`pgrepl node --router`: in the member's
    /// own `/metrics`, at `members[].api`).
    pub metrics: Option<String>,
    pub rw: EndpointJson,
    pub ro: EndpointJson,
}

#[derive(Serialize)]
pub struct EndpointJson {
    pub address: String,
    /// Members new connections go to now.
    pub routes_to: Vec<String>,
}

#[derive(Serialize)]
pub struct MemberJson {
    pub name: String,
    pub role: String,
    pub state: String,
    pub host: String,
    pub port: u16,
    pub timeline: Option<u32>,
    /// Replica: the timeline its replayed WAL lies on (`timeline` is the newest it knows of).
    pub replay_timeline: Option<u32>,
    pub lsn: Option<String>,
    pub lag_bytes: Option<u64>,
    pub lag_seconds: Option<f64>,
    pub decision: Option<String>,
    /// Something wrong an operator should know of (a replica whose WAL forked from the
    /// leader's timeline, until it streams again), else `null`.
    pub warning: Option<String>,
    /// When the fencer last stopped this member's PostgreSQL (its lease was not renewed).
    pub last_fenced_unix_ms: Option<u64>,
    /// Where its HTTP API answers (`host:port`), as its agent published it.
    pub api: Option<String>,
    /// When its installed TLS certificate ends (Unix seconds; within 30 days, `warning` says
    /// so), `null` with TLS off or while unknown.
    pub tls_not_after_unix: Option<u64>,
    /// Parameters its server applies only once restarted (`pgrepl config set` of, say,
    /// `shared_buffers`); empty when none.
    pub pending_restart: Vec<String>,
    /// The passwords its host holds that are not the cluster's (`pgrepl passwd` on another
    /// host): it cannot connect to other members with them again. Empty when none.
    pub stale_secrets: Vec<String>,
}

#[derive(Serialize)]
pub struct ReplicationJson {
    pub member: String,
    pub client_addr: Option<String>,
    pub state: String,
    /// `sync`, `quorum`, `potential` or `async`, as the primary's `pg_stat_replication` says.
    pub sync_state: Option<String>,
}

fn text<T: Serialize>(value: T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

pub fn endpoints(cluster: &Cluster, view: &ClusterView) -> EndpointsJson {
    let config = &cluster.config;
    let routing = crate::config::cluster_wide::routing(view.spec.as_ref(), config);
    let routes = topology::from_view(view, routing.ro_max_lag);
    let names = |v: Vec<&Backend>| v.into_iter().map(|b| b.name.clone()).collect();
    let ro_fallback = if routes.ro.is_empty() && routing.ro_fallback == RoFallback::Primary {
        routes.rw.iter().collect()
    } else {
        routes.ro.iter().collect()
    };
    EndpointsJson {
        router: agent_lock::holder(&cluster.layout.router_lock()).is_some(),
        metrics: crate::commands::router::metrics_address(&cluster.layout),
        rw: EndpointJson {
            address: format!("{}:{}", config.listen, config.port),
            routes_to: names(routes.rw.iter().collect()),
        },
        ro: EndpointJson { address: format!("{}:{}", config.listen, config.ro_port), routes_to: names(ro_fallback) },
    }
}

pub fn build(cluster_name: &str, view: &ClusterView, endpoints: EndpointsJson) -> StatusJson {
    let primary = view.ready_leader().map(|(_, s)| s);
    let mut members = Vec::new();
    for (name, spec) in view.spec.iter().flat_map(|s| s.members.iter()) {
        let last_fenced_unix_ms = view.fences.get(name).map(|f| f.at_unix_ms);
        let member = match view.members.get(name) {
            Some(s) => {
                let lag_seconds = view.lag_seconds(name);
                MemberJson {
                    name: name.to_string(),
                    role: text(s.role),
                    state: text(s.state),
                    host: s.host.clone(),
                    port: s.port,
                    timeline: s.timeline.map(|t| t.0),
                    replay_timeline: s.replay_timeline.map(|t| t.0),
                    lsn: s.lsn.map(|l| l.to_string()),
                    lag_bytes: (s.role == Role::Replica).then(|| view.lag_bytes(name)).flatten(),
                    lag_seconds: if s.role == Role::Replica { lag_seconds } else { None },
                    decision: Some(s.decision.clone()),
                    warning: warning(view, name, s),
                    last_fenced_unix_ms,
                    api: s.api.clone(),
                    tls_not_after_unix: s.tls_not_after_unix,
                    pending_restart: s.pending_restart.clone(),
                    stale_secrets: s.stale_secrets.iter().map(|k| k.to_string()).collect(),
                }
            }
            None => MemberJson {
                name: name.to_string(),
                role: "unknown".into(),
                state: if spec.stopped { text(MemberState::Stopped) } else { "down".into() },
                host: spec.host.clone(),
                port: spec.port,
                timeline: None,
                replay_timeline: None,
                lsn: None,
                lag_bytes: None,
                lag_seconds: None,
                decision: None,
                warning: None,
                last_fenced_unix_ms,
                api: None,
                tls_not_after_unix: None,
                pending_restart: vec![],
                stale_secrets: vec![],
            },
        };
        members.push(member);
    }
    let replication = primary
        .map(|p| {
            p.replication
                .iter()
                .map(|r| ReplicationJson {
                    member: r.application_name.clone(),
                    client_addr: r.client_addr.clone(),
                    state: r.state.clone(),
                    sync_state: r.sync_state.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    StatusJson {
        cluster: cluster_name.to_string(),
        leader: view.leader.as_ref().map(MemberName::to_string),
        maintenance_mode: view.paused(),
        paused_since_ms: view.pause.as_ref().map(|p| p.since_ms),
        endpoints,
        members,
        replication,
    }
}

/// The member's own warning, or one read from the view: its last report puts its replayed
/// WAL off the running leader's timeline history (say, before its agent has acted on it).
fn warning(view: &ClusterView, name: &MemberName, status: &MemberStatus) -> Option<String> {
    status.warning.clone().or_else(|| {
        let (leader, _) = view.ready_leader()?;
        let fork = view.fork_of(name)?;
        Some(format!("{name}'s WAL forked from {leader}'s timeline: {fork}; it cannot stream until it is rewound"))
    })
}

fn dash<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_string(), T::to_string)
}

pub async fn run(dir: &Path, json: bool) -> anyhow::Result<()> {
    let cluster = Cluster::open(dir).await?;
    let (_, view) = cluster.view().await?;
    let status = build(&cluster.config.cluster, &view, endpoints(&cluster, &view));
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!("cluster {} ({}), leader {}", status.cluster, cluster.layout.dir.display(), dash(&status.leader));
    if let Some(banner) = pause::banner(&view) {
        println!("{banner}");
    }
    println!(
        "{:<8} {:<8} {:<10} {:<22} {:>3} {:<12} {:>10} {:>7}  DECISION",
        "MEMBER", "ROLE", "STATE", "ADDRESS", "TL", "LSN", "LAG_BYTES", "LAG_S"
    );
    for m in &status.members {
        println!(
            "{:<8} {:<8} {:<10} {:<22} {:>3} {:<12} {:>10} {:>7}  {}",
            m.name,
            m.role,
            m.state,
            format!("{}:{}", m.host, m.port),
            dash(&m.timeline),
            dash(&m.lsn),
            dash(&m.lag_bytes),
            m.lag_seconds.map_or_else(|| "-".to_string(), |s| format!("{s:.1}")),
            dash(&m.decision)
        );
    }
    for m in status.members.iter().filter(|m| m.warning.is_some()) {
        println!("\nWARNING {}: {}", m.name, dash(&m.warning));
    }
    for m in status.members.iter().filter(|m| !m.pending_restart.is_empty()) {
        println!("\npending restart {}: {} (applied at its next restart)", m.name, m.pending_restart.join(", "));
    }
    for m in status.members.iter().filter(|m| !m.stale_secrets.is_empty()) {
        println!(
            "\nold password on its host {}: {} (put the new one in its host's secrets, then restart its node)",
            m.name,
            m.stale_secrets.join(", ")
        );
    }
    let e = &status.endpoints;
    let to = |v: &Vec<String>| if v.is_empty() { "nobody".to_string() } else { v.join(", ") };
    println!("\nendpoints (router {}):", if e.router { "running" } else { "not running" });
    println!("  rw {:<22} -> {}", e.rw.address, to(&e.rw.routes_to));
    println!("  ro {:<22} -> {}", e.ro.address, to(&e.ro.routes_to));
    let fenced: Vec<_> = status.members.iter().filter_map(|m| Some((&m.name, m.last_fenced_unix_ms?))).collect();
    if !fenced.is_empty() {
        println!("\nfences (the fencer stopped PostgreSQL when the lease it served under was not renewed):");
        let now_ms = wait::wall_clock_ms();
        for (name, at) in fenced {
            println!("  {name:<10} last fenced {:.1} s ago", now_ms.saturating_sub(at) as f64 / 1000.0);
        }
    }
    if !status.replication.is_empty() {
        println!("\npg_stat_replication on {}:", dash(&status.leader));
        println!("  {:<10} {:<16} STATE", "MEMBER", "CLIENT_ADDR");
        for r in &status.replication {
            println!("  {:<10} {:<16} {}", r.member, dash(&r.client_addr), r.state);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrepl_core::{Lsn, Timeline, TimelineSwitch};

    fn view(replay_timeline: u32, replayed: u64) -> ClusterView {
        let mut leader = pgrepl_core::testing::status(Role::Primary, MemberState::Running, 1, Lsn(0x5030000));
        leader.timeline = Some(Timeline(2));
        leader.history = Some(vec![TimelineSwitch { timeline: Timeline(1), end: Lsn(0x5020688) }]);
        let mut replica = pgrepl_core::testing::status(Role::Replica, MemberState::Recovering, 2, Lsn(replayed));
        replica.timeline = Some(Timeline(2));
        replica.replay_timeline = Some(Timeline(replay_timeline));
        let mut view = ClusterView { leader: Some(MemberName::numbered(1)), ..ClusterView::default() };
        view.members.insert(MemberName::numbered(1), leader);
        view.members.insert(MemberName::numbered(2), replica);
        view
    }

    #[test]
    fn a_replica_reported_past_the_leaders_switch_point_is_warned_of() {
        let n2 = MemberName::numbered(2);
        let v = view(1, 0x50206F8);
        let w = warning(&v, &n2, &v.members[&n2]).expect("a warning");
        assert!(
            w.starts_with("node-2's WAL forked from node-1's timeline: it replayed timeline 1 up to 0/50206F8"),
            "{w}"
        );
        let v = view(1, 0x5020000);
        assert_eq!(warning(&v, &n2, &v.members[&n2]), None, "behind the switch point");
        let mut v = view(2, 0x5030000);
        v.members.get_mut(&n2).unwrap().warning = Some("rewound".into());
        assert_eq!(warning(&v, &n2, &v.members[&n2]).as_deref(), Some("rewound"), "the agent's own comes first");
    }
}
