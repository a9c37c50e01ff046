//! Member ports: consecutive from `base_port` when configured, else free loopback ports; and
//! the check that a stopped cluster's ports are free before it starts.

use crate::config::Config;
use anyhow::{bail, Context};
use pgrepl_core::{MemberName, Spec};
use pgrepl_pg::wire;
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

/// Waits until both router endpoints accept connections and route them: rw always, ro when
/// `ro_routed` (the topology has somewhere to send reads). Until the router has followed the
/// store to the state `up` saw, it refuses; a client must not meet that after `up` said ready.
pub async fn wait_for_router(config: &Config, ro_routed: bool, limit: std::time::Duration) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    for (port, routed) in [(config.port, true), (config.ro_port, ro_routed)] {
        let addr = SocketAddr::new(config.listen, port);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if start.elapsed() > limit {
                bail!("the router does not listen on {addr}; see router.log in the cluster directory");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        while routed && !answered_by_a_server(addr).await {
            if start.elapsed() > limit {
                bail!("the router on {addr} does not route to a server yet; see router.log in the cluster directory");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Whether a PostgreSQL server answers a startup message sent to `addr`: an authentication
/// request, or an error other than "cannot connect now" (SQLSTATE 57P03, which the router sends
/// when it has no route, and a server while it starts). The probe leaves before authenticating,
/// as psql does before it prompts for a password, which servers do not log.
async fn answered_by_a_server(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let startup = wire::startup_message(&[("user", crate::config::ADMIN_USER), ("database", "postgres")]);
        stream.write_all(&startup).await?;
        let kind = stream.read_u8().await?;
        if kind != b'E' {
            return Ok(kind == b'R');
        }
        let len = stream.read_u32().await? as usize;
        let mut body = vec![0; len.saturating_sub(4).min(10_000)];
        stream.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>(wire::error_field(&body, b'C') != Some("57P03"))
    };
    matches!(tokio::time::timeout(std::time::Duration::from_secs(2), probe).await, Ok(Ok(true)))
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
