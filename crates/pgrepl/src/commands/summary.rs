//! What `up`, `scale` and `promote` print when the cluster is ready: the members and how to
//! connect. Never prints a password; says where the passwords are.

use crate::cluster::Cluster;
use pgrepl_core::{ClusterView, MemberState, Role};

pub fn print(cluster: &Cluster, view: &ClusterView) {
    for (name, status) in &view.members {
        let role = match status.role {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::Unknown => "unknown",
        };
        let state =
            serde_json::to_value(status.state).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        println!("  {name:<8} {role:<8} {:<22} {state}", format!("{}:{}", status.host, status.port));
    }
    let (user, db) = match &cluster.config.names.app {
        Some(app) => (app.user.as_str(), app.database.as_str()),
        None => (crate::config::ADMIN_USER, "postgres"),
    };
    let url = |host: &str, port: u16| format!("postgresql://{user}@{host}:{port}/{db}");
    if let Some((_, primary)) = view.ready_leader() {
        println!("read-write: {}", url(&primary.host, primary.port));
    }
    for (_, status) in view.members.iter().filter(|(_, s)| s.state == MemberState::Streaming) {
        println!("read-only:  {}", url(&status.host, status.port));
    }
    println!("passwords:  {} (mode 0600; `pgrepl passwd` changes them)", cluster.layout.secrets().display());
    println!("shell:      pgrepl --dir {} psql", cluster.layout.dir.display());
}
