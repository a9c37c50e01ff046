//! Member ports: consecutive from `base_port` when configured, else free loopback ports; and
//! the check that a stopped cluster's ports are free before it starts.

use crate::config::Config;
use anyhow::{bail, Context};
use pgrepl_core::{MemberName, Spec};
use std::net::{SocketAddr, TcpListener};

/// A port for `member` that no other member of `spec` uses.
pub fn for_member(config: &Config, spec: &Spec, member: &MemberName) -> anyhow::Result<u16> {
    let taken = |p: u16| spec.members.iter().any(|(m, s)| m != member && s.port == p);
    if let Some(base) = config.base_port {
        let offset = member.number().unwrap_or(1).saturating_sub(1);
        let port = u16::try_from(u32::from(base) + offset).context("base_port plus the member number passes 65535")?;
        if taken(port) {
            bail!("port {port} for {member} is already used by another member");
        }
        return Ok(port);
    }
    for _ in 0..100 {
        let listener = TcpListener::bind(SocketAddr::new(config.listen, 0))
            .with_context(|| format!("find a free port on {}", config.listen))?;
        let port = listener.local_addr()?.port();
        if !taken(port) {
            return Ok(port);
        }
    }
    bail!("found no free port on {}", config.listen)
}

/// Gives a port (and the listen address) to every member of `spec` that has none yet.
pub fn assign_new(config: &Config, spec: &mut Spec) -> anyhow::Result<()> {
    let fresh: Vec<MemberName> = spec.members.iter().filter(|(_, m)| m.port == 0).map(|(n, _)| n.clone()).collect();
    for name in fresh {
        let port = for_member(config, spec, &name)?;
        if let Some(m) = spec.members.get_mut(&name) {
            m.port = port;
            m.host = config.listen.to_string();
        }
    }
    Ok(())
}

/// The router's two ports must be free unless this cluster's router still holds them.
pub fn check_router_free(config: &Config, router_running: bool) -> anyhow::Result<()> {
    if router_running {
        return Ok(());
    }
    for (what, port) in [("read-write (port, --port)", config.port), ("read-only (ro_port, --ro-port)", config.ro_port)]
    {
        if let Err(e) = TcpListener::bind(SocketAddr::new(config.listen, port)) {
            bail!(
                "the {what} endpoint's port {port} on {} is not free ({e}); choose another with --port/--ro-port",
                config.listen
            );
        }
    }
    Ok(())
}

/// Waits until both router endpoints accept connections.
pub async fn wait_for_router(config: &Config, limit: std::time::Duration) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    for port in [config.port, config.ro_port] {
        let addr = SocketAddr::new(config.listen, port);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if start.elapsed() > limit {
                bail!("the router does not listen on {addr}; see router.log in the cluster directory");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Every member port of a cluster about to start must be free, except those of members still
/// running from before (`still_running`), which the new agents adopt.
pub fn check_free(config: &Config, spec: &Spec, still_running: impl Fn(&MemberName) -> bool) -> anyhow::Result<()> {
    for (member, m) in spec.members.iter().filter(|(n, m)| !m.stopped && !still_running(n)) {
        if let Err(e) = TcpListener::bind(SocketAddr::new(config.listen, m.port)) {
            bail!(
                "port {} of {member} on {} is not free ({e}); stop whatever listens there (a PostgreSQL of this cluster left running is stopped by `pgrepl down`), or choose another --base-port for a new cluster",
                m.port,
                config.listen
            );
        }
    }
    Ok(())
}
