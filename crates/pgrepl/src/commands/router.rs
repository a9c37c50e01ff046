//! `pgrepl router`: serve the cluster's read-write and read-only endpoints. Reads the store,
//! turns each view into a `Topology` for the router, and never writes cluster state.
//! `pgrepl node --router` serves them beside its member through `bind` and `serve`.

use crate::agent_lock;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::topology;
use anyhow::Context;
use pgrepl_router::{Endpoint, Settings, Topology};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{info, warn};

/// The two endpoints' listening sockets.
pub struct Listeners {
    rw: TcpListener,
    ro: TcpListener,
}

async fn bind_one(endpoint: Endpoint, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!(
            "listen on {addr} for the {endpoint} endpoint (set `port`/`ro_port`, or --port/--ro-port, to a free port)"
        )
    })
}

/// Listens on `port` and `ro_port` at the `listen` address.
pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
    let rw = bind_one(Endpoint::Rw, SocketAddr::new(config.listen, config.port)).await?;
    let ro = bind_one(Endpoint::Ro, SocketAddr::new(config.listen, config.ro_port)).await?;
    Ok(Listeners { rw, ro })
}

/// Serves both endpoints, following the store, until accepting connections fails.
pub async fn serve(cluster: &Cluster, listeners: Listeners) -> anyhow::Result<()> {
    let config = &cluster.config;
    let settings =
        Settings { rw_wait: config.rw_wait, ro_fallback: config.ro_fallback, connect_timeout: Duration::from_secs(2) };
    let (tx, rx) = watch::channel(Topology::default());
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(pgrepl_router::serve(Endpoint::Rw, listeners.rw, rx.clone(), settings.clone()));
    servers.spawn(pgrepl_router::serve(Endpoint::Ro, listeners.ro, rx, settings));
    let follow = async {
        loop {
            let revision = match cluster.view().await {
                Ok((snapshot, view)) => {
                    let next = topology::from_view(&view, config.ro_max_lag);
                    tx.send_if_modified(|current| {
                        let changed = *current != next;
                        if changed {
                            info!("{}", topology::describe(&next));
                            *current = next;
                        }
                        changed
                    });
                    snapshot.revision
                }
                Err(e) => {
                    warn!("read the cluster: {e:#}");
                    0
                }
            };
            // Member statuses expire without a write: re-read at least every 200 ms.
            if cluster.store.wait_change(revision, Duration::from_millis(200)).await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    tokio::select! {
        _ = follow => Ok(()),
        Some(ended) = servers.join_next() => {
            ended.context("router task")?.context("accept connections")?;
            Ok(())
        }
    }
}

pub async fn run(dir: &Path) -> anyhow::Result<()> {
    let cluster = Cluster::open(dir).await?;
    let _lock = agent_lock::acquire(&cluster.layout.router_lock())?;
    let listeners = bind(&cluster.config).await?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        served = serve(&cluster, listeners) => served?,
        _ = term.recv() => info!("router stopping"),
        _ = int.recv() => info!("router stopping"),
    }
    Ok(())
}
