//! `pgrepl status [--json]`: one row per member of the spec, from the statuses the agents
//! publish, plus the primary's `pg_stat_replication`. The JSON form is stable (README).

use crate::cluster::Cluster;
use pgrepl_core::{ClusterView, MemberName, MemberState, Role};
use serde::Serialize;
use std::path::Path;

#[derive(Serialize)]
pub struct StatusJson {
    pub cluster: String,
    pub leader: Option<String>,
    pub members: Vec<MemberJson>,
    pub replication: Vec<ReplicationJson>,
}

#[derive(Serialize)]
pub struct MemberJson {
    pub name: String,
    pub role: String,
    pub state: String,
    pub host: String,
    pub port: u16,
    pub timeline: Option<u32>,
    pub lsn: Option<String>,
    pub lag_bytes: Option<u64>,
    pub lag_seconds: Option<f64>,
    pub decision: Option<String>,
}

#[derive(Serialize)]
pub struct ReplicationJson {
    pub member: String,
    pub client_addr: Option<String>,
    pub state: String,
}

fn text<T: Serialize>(value: T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

pub fn build(cluster_name: &str, view: &ClusterView) -> StatusJson {
    let primary = view.ready_leader().map(|(_, s)| s);
    let mut members = Vec::new();
    for (name, spec) in view.spec.iter().flat_map(|s| s.members.iter()) {
        let member = match view.members.get(name) {
            Some(s) => {
                let lag_seconds = primary
                    .and_then(|p| p.replication.iter().find(|r| r.application_name == name.as_str()))
                    .map(|r| r.replay_lag_ms.unwrap_or(0) as f64 / 1000.0);
                MemberJson {
                    name: name.to_string(),
                    role: text(s.role),
                    state: text(s.state),
                    host: s.host.clone(),
                    port: s.port,
                    timeline: s.timeline.map(|t| t.0),
                    lsn: s.lsn.map(|l| l.to_string()),
                    lag_bytes: (s.role == Role::Replica).then(|| view.lag_bytes(name)).flatten(),
                    lag_seconds: if s.role == Role::Replica { lag_seconds } else { None },
                    decision: Some(s.decision.clone()),
                }
            }
            None => MemberJson {
                name: name.to_string(),
                role: "unknown".into(),
                state: if spec.stopped { text(MemberState::Stopped) } else { "down".into() },
                host: spec.host.clone(),
                port: spec.port,
                timeline: None,
                lsn: None,
                lag_bytes: None,
                lag_seconds: None,
                decision: None,
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
                })
                .collect()
        })
        .unwrap_or_default();
    StatusJson {
        cluster: cluster_name.to_string(),
        leader: view.leader.as_ref().map(MemberName::to_string),
        members,
        replication,
    }
}

fn dash<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_string(), T::to_string)
}

pub async fn run(dir: &Path, json: bool) -> anyhow::Result<()> {
    let cluster = Cluster::open(dir)?;
    let (_, view) = cluster.view().await?;
    let status = build(&cluster.config.cluster, &view);
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!("cluster {} ({}), leader {}", status.cluster, cluster.layout.dir.display(), dash(&status.leader));
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
    if !status.replication.is_empty() {
        println!("\npg_stat_replication on {}:", dash(&status.leader));
        println!("  {:<10} {:<16} STATE", "MEMBER", "CLIENT_ADDR");
        for r in &status.replication {
            println!("  {:<10} {:<16} {}", r.member, dash(&r.client_addr), r.state);
        }
    }
    Ok(())
}
