//! What `up`, `scale` and `promote` print when the cluster is ready: the endpoints and where they
//! route, the members, and how to connect. Never prints a password; says where they are.

use crate::cluster::Cluster;
use crate::topology;
use pgrepl_core::{ClusterView, Role};

pub fn print(cluster: &Cluster, view: &ClusterView) {
    let config = &cluster.config;
    let (user, db, _) = crate::commands::url::login(config);
    let routing = crate::config::cluster_wide::routing(view.spec.as_ref(), config);
    let routes = topology::from_view(view, routing.ro_max_lag);
    let rw_to = routes.rw.as_ref().map_or_else(|| "nobody yet".to_string(), |b| b.name.clone());
    let ro_to: Vec<&str> = routes.ro.iter().map(|b| b.name.as_str()).collect();
    let ro_to = if ro_to.is_empty() { "no replica yet".to_string() } else { ro_to.join(", ") };
    // Verified against the cluster CA: every member's certificate names the endpoints' address.
    let tls = match config.tls.on {
        true => format!(
            "?sslmode=verify-full&sslrootcert={}",
            crate::commands::ca::client_root(&cluster.layout, config).display()
        ),
        false => String::new(),
    };
    println!("read-write: postgresql://{user}@{}:{}/{db}{tls}  (routes to {rw_to})", config.listen, config.port);
    println!("read-only:  postgresql://{user}@{}:{}/{db}{tls}  (routes to {ro_to})", config.listen, config.ro_port);
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
    if let Some(banner) = crate::commands::pause::banner(view) {
        println!("{banner}");
    }
    println!("passwords:  {} (mode 0600; `pgrepl passwd` changes them)", cluster.layout.secrets().display());
    if config.tls.on {
        let root = crate::commands::ca::client_root(&cluster.layout, config);
        println!("TLS:        the cluster CA is {} (`pgrepl ca show` prints it)", root.display());
    }
    println!("shell:      pgrepl --dir {} psql", cluster.layout.dir.display());
    // Every member's API serves the page; the leader's is the one most likely to stay up.
    let api = view.leader.as_ref().and_then(|l| view.members.get(l)).or_else(|| view.members.values().next());
    if let Some(api) = api.and_then(|s| s.api.as_deref()) {
        println!("status:     http://{api}/ui  (also `pgrepl status --watch`)");
    }
}
