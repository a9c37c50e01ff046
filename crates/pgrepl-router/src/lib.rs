//! The router: the read-write (`rw`) and read-only (`ro`) endpoints. It reads a `Topology`
//! value from a watch channel and knows nothing of the store; it never changes cluster state.
//! Bytes pass through untouched (the SSL request included, so TLS works end to end); only
//! when there is nowhere to route does it speak PostgreSQL, to answer with an error.

mod counters;
mod pick;
mod proxy;
mod refuse;
mod splice;
mod spliced;

pub use counters::{ConnectionCount, Connections};
pub use pgrepl_core::RoFallback;
pub use pick::pick_ro;
pub use splice::Splicer;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// One server the router may send connections to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// The member's name, for logs and status.
    pub name: String,
    pub addr: SocketAddr,
}

/// Where each endpoint points now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    /// The primary, when the leader runs as one.
    pub rw: Option<Backend>,
    /// Replicas that stream within the lag bound, in a stable order.
    pub ro: Vec<Backend>,
}

/// What a new connection is given: read as each connection arrives, so a change (the
/// cluster's `rw_wait` or `ro_fallback`, say) applies to the next connection on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// How long a new rw connection waits for a primary before it is refused.
    pub rw_wait: Duration,
    /// Where ro connections go when no replica qualifies (the topology's `ro` is empty).
    pub ro_fallback: RoFallback,
}

#[derive(Clone, Debug)]
pub struct Settings {
    /// The policy for new connections, as it is now.
    pub policy: watch::Receiver<Policy>,
    /// Bound on one TCP connect to a backend.
    pub connect_timeout: Duration,
    /// Splice connections in the kernel with this; copy them in the router without.
    pub splicer: Option<Arc<Splicer>>,
    /// Where routed and refused connections are counted (shared by both endpoints).
    pub connections: Arc<Connections>,
}

/// Which endpoint a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    Rw,
    Ro,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Endpoint::Rw => "rw",
            Endpoint::Ro => "ro",
        })
    }
}

/// Serves one endpoint for ever: one task per client connection.
pub async fn serve(
    endpoint: Endpoint,
    listener: TcpListener,
    topology: watch::Receiver<Topology>,
    settings: Settings,
) -> std::io::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut settings = settings;
    if let Some(splicer) = &settings.splicer {
        // Nothing but the program's notices wakes a stopped spliced connection: without them, copy.
        if let Err(e) = splicer.watch_stops() {
            warn!(%endpoint, "watch the splice program's notices: {e}; the router copies this endpoint's connections");
            settings.splicer = None;
        }
    }
    info!(%endpoint, addr = %listener.local_addr()?, "router endpoint listening");
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, say: the listener itself is fine, so wait and go on.
                warn!(%endpoint, "accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = client.set_nodelay(true);
        let topology = topology.clone();
        let settings = settings.clone();
        let next = next.clone();
        tokio::spawn(async move {
            let turn = next.fetch_add(1, Ordering::Relaxed);
            match connect(endpoint, &topology, &settings, turn).await {
                Ok((server, backend)) => {
                    debug!(%endpoint, %peer, backend = %backend.name, "routing connection");
                    let _routed = settings.connections.routed(endpoint, &backend.name);
                    match &settings.splicer {
                        Some(splicer) => spliced::run(endpoint, client, server, backend, topology, splicer).await,
                        None => proxy::copy(endpoint, client, server, backend, topology).await,
                    }
                }
                Err(why) => {
                    debug!(%endpoint, %peer, "refusing connection: {why}");
                    settings.connections.refused(endpoint);
                    refuse::with_error(client, &why).await;
                }
            }
        });
    }
}

/// Connects to a backend for a new client: for rw the primary (waiting up to `rw_wait` for
/// one), for ro the replicas in turn from `turn`, then the fallback.
async fn connect(
    endpoint: Endpoint,
    topology: &watch::Receiver<Topology>,
    settings: &Settings,
    turn: usize,
) -> Result<(TcpStream, Backend), String> {
    let policy = *settings.policy.borrow();
    let deadline = tokio::time::Instant::now() + policy.rw_wait;
    let mut topology = topology.clone();
    loop {
        let candidates = match endpoint {
            Endpoint::Rw => topology.borrow_and_update().rw.iter().cloned().collect(),
            Endpoint::Ro => pick_ro(&topology.borrow_and_update(), policy.ro_fallback, turn),
        };
        for backend in candidates {
            match tokio::time::timeout(settings.connect_timeout, TcpStream::connect(backend.addr)).await {
                Ok(Ok(server)) => {
                    let _ = server.set_nodelay(true);
                    return Ok((server, backend));
                }
                Ok(Err(e)) => debug!(%endpoint, backend = %backend.name, "connect failed: {e}"),
                Err(_) => debug!(%endpoint, backend = %backend.name, "connect timed out"),
            }
        }
        if endpoint == Endpoint::Ro {
            return Err(match policy.ro_fallback {
                RoFallback::Primary => "no replica or primary is available for read-only connections".to_string(),
                RoFallback::Refuse => "no replica is available for read-only connections".to_string(),
            });
        }
        // rw: wait for the topology to change (a new primary), or poll a refusing one.
        let changed = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                r = topology.changed() => r.is_ok(),
                _ = tokio::time::sleep(Duration::from_millis(100)) => true,
            }
        });
        if !matches!(changed.await, Ok(true)) {
            return Err(format!(
                "no primary is available (waited {} ms); a failover or switchover may be under way",
                policy.rw_wait.as_millis()
            ));
        }
    }
}
