//! `pgrepl router`: serve the cluster's read-write and read-only endpoints. Reads the store,
//! turns each view into a `Topology` for the router (and the spec's `ro_max_lag`, `ro_fallback`
//! and `rw_wait` into its `Policy`, when they change), and never writes cluster state.
//! `pgrepl node --router` serves them beside its member through `bind` and `serve` (its
//! connection counts then show in the member's `/metrics`); on its own, the router serves them
//! at its own `/metrics` (`api_listen`, a free port, written to `router.api`).

use crate::agent_lock;
use crate::api::metrics;
use crate::cluster::load_config;
use crate::cluster::Cluster;
use crate::commands::agent::AbortOnDrop;
use crate::config::cluster_wide::{self, ClusterWide};
use crate::config::{Config, RouterSplice};
use crate::layout::Layout;
use crate::topology;
use anyhow::Context;
use pgrepl_router::{Connections, Endpoint, Policy, Settings, Splicer, Topology};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{info, warn};

/// The two endpoints' listening sockets.
pub struct Listeners {
    rw: TcpListener,
    ro: TcpListener,
}

/// Whether a router's listening sockets may share their ports with other routers' (as
/// `SO_REUSEPORT` lets processes of one user do: the kernel spreads new connections over the
/// live ones, so one router can stop or die while the others keep the endpoints up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ports {
    /// This router's alone: a port in use is an error (two clusters must not share one).
    Own,
    /// Shared with the other routers of the cluster on this host (the image's `router` mode).
    Shared,
}

async fn bind_one(endpoint: Endpoint, addr: SocketAddr, ports: Ports) -> anyhow::Result<TcpListener> {
    let bound = (|| {
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(ports == Ports::Shared)?;
        socket.bind(addr)?;
        socket.listen(1024)
    })();
    bound.with_context(|| {
        format!(
            "listen on {addr} for the {endpoint} endpoint (set `port`/`ro_port`, or --port/--ro-port, to a free port)"
        )
    })
}

/// Listens on `port` and `ro_port` at the `listen` address.
pub async fn bind(config: &Config, ports: Ports) -> anyhow::Result<Listeners> {
    let rw = bind_one(Endpoint::Rw, SocketAddr::new(config.listen, config.port), ports).await?;
    let ro = bind_one(Endpoint::Ro, SocketAddr::new(config.listen, config.ro_port), ports).await?;
    Ok(Listeners { rw, ro })
}

/// Serves both endpoints, following the store, until accepting connections fails; splices
/// connections in the kernel with `splicer`, copies them without; counts them in `connections`.
pub async fn serve(
    cluster: &Cluster,
    listeners: Listeners,
    splicer: Option<Splicer>,
    connections: Arc<Connections>,
) -> anyhow::Result<()> {
    let config = &cluster.config;
    let own = ClusterWide::configured(config).routing;
    let (policy_tx, policy) = watch::channel(Policy { rw_wait: own.rw_wait, ro_fallback: own.ro_fallback });
    let settings =
        Settings { policy, connect_timeout: Duration::from_secs(2), splicer: splicer.map(Arc::new), connections };
    match &settings.splicer {
        Some(_) => info!("the kernel splices connections' bytes"),
        None => info!("the router copies connections' bytes (router_splice = {:?})", config.router_splice),
    }
    let (tx, rx) = watch::channel(Topology::default());
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(pgrepl_router::serve(Endpoint::Rw, listeners.rw, rx.clone(), settings.clone()));
    servers.spawn(pgrepl_router::serve(Endpoint::Ro, listeners.ro, rx, settings));
    let mut ro_max_lag = own.ro_max_lag;
    let follow = async {
        loop {
            let revision = match cluster.view().await {
                Ok((snapshot, view)) => {
                    // The cluster's routing settings, else (a spec without them) this router's own.
                    let routing = cluster_wide::routing(view.spec.as_ref(), config);
                    let next_policy = Policy { rw_wait: routing.rw_wait, ro_fallback: routing.ro_fallback };
                    policy_tx.send_if_modified(|current| {
                        let changed = *current != next_policy;
                        if changed {
                            info!(
                                rw_wait = ?routing.rw_wait,
                                ro_fallback = ?routing.ro_fallback,
                                "took the cluster's routing settings: new connections get them"
                            );
                            *current = next_policy;
                        }
                        changed
                    });
                    if routing.ro_max_lag != ro_max_lag {
                        info!(from = ?ro_max_lag, to = ?routing.ro_max_lag, "took the cluster's ro_max_lag: replicas are judged by it from now");
                        ro_max_lag = routing.ro_max_lag;
                    }
                    let next = topology::from_view(&view, ro_max_lag);
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

/// The environment variable that hands a splicer's descriptors down to the router process.
pub const SPLICER_FDS: &str = "PGREPL_SPLICER_FDS";

/// The kernel splicer, as `router_splice` asks: none for copy, nor for auto where the kernel
/// or the process's privilege does not allow it (said in a warning). Loading needs root (or
/// CAP_BPF and CAP_NET_ADMIN), so it happens before a command becomes the cluster's OS user.
pub fn load_splicer(mode: RouterSplice) -> anyhow::Result<Option<Splicer>> {
    if mode == RouterSplice::Copy {
        return Ok(None);
    }
    match Splicer::load() {
        Ok(splicer) => Ok(Some(splicer)),
        Err(e) if mode == RouterSplice::Auto => {
            warn!("the router will copy connections' bytes itself: kernel splicing is not available ({e})");
            Ok(None)
        }
        Err(e) => Err(anyhow::anyhow!(e)).context(
            "router_splice = kernel, but kernel splicing is not available (it needs root, or CAP_BPF and CAP_NET_ADMIN, and a kernel with CONFIG_BPF_STREAM_PARSER)",
        ),
    }
}

/// Lets the process `cmd` starts use `splicer`: its descriptors stay open across exec, and
/// their numbers go in `SPLICER_FDS`.
pub fn hand_down(cmd: &mut Command, splicer: &Splicer) {
    cmd.env(SPLICER_FDS, splicer.describe_descriptors());
    let fds = splicer.descriptors();
    // SAFETY: only fcntl, which is async-signal-safe, runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for fd in fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// The splicer a parent handed down (`hand_down`), if it did.
pub fn handed_down() -> anyhow::Result<Option<Splicer>> {
    let Ok(text) = std::env::var(SPLICER_FDS) else {
        return Ok(None);
    };
    // SAFETY: `hand_down` put this splicer's descriptors here, and nothing else in this
    // process took them.
    let splicer = unsafe { Splicer::from_descriptors(&text) }.with_context(|| format!("take over {SPLICER_FDS}"))?;
    Ok(Some(splicer))
}

/// The router's own `/metrics`, on `api_listen` at a free port, which it writes to
/// `router.api` (with its pid, so a reader can tell this router's from a former one's).
async fn serve_metrics(cluster: &Cluster, connections: Arc<Connections>) -> anyhow::Result<AbortOnDrop> {
    let addr = SocketAddr::new(cluster.config.api_listen, 0);
    let listener =
        TcpListener::bind(addr).await.with_context(|| format!("listen on {addr} for the router's metrics"))?;
    let bound = listener.local_addr()?;
    let path = cluster.layout.router_api();
    std::fs::write(&path, format!("{} {bound}\n", std::process::id()))
        .with_context(|| format!("write {}", path.display()))?;
    info!(%bound, "serving the router's metrics at /metrics");
    let cluster_name = cluster.config.cluster.clone();
    Ok(AbortOnDrop(tokio::spawn(metrics::serve_router(listener, cluster_name, connections))))
}

/// Where the running router serves its metrics, as it wrote in `router.api`: only when the
/// router holding `router.lock` wrote it.
pub fn metrics_address(layout: &Layout) -> Option<String> {
    let pid = agent_lock::holder(&layout.router_lock())?;
    let text = std::fs::read_to_string(layout.router_api()).ok()?;
    let (written_by, addr) = text.trim().split_once(' ')?;
    (written_by.parse::<i32>().ok()? == pid).then(|| addr.to_string())
}

pub async fn run(dir: &Path) -> anyhow::Result<()> {
    let splicer = match handed_down()? {
        Some(splicer) => Some(splicer),
        None => load_splicer(load_config(&Layout::new(dir))?.router_splice)?,
    };
    let cluster = Cluster::open(dir).await?;
    serve_until_stopped(&cluster, splicer, Ports::Own).await
}

/// Serves the endpoints of `cluster` (one router per cluster directory) until SIGTERM or
/// SIGINT.
pub async fn serve_until_stopped(cluster: &Cluster, splicer: Option<Splicer>, ports: Ports) -> anyhow::Result<()> {
    let _lock = agent_lock::acquire(&cluster.layout.router_lock())?;
    let listeners = bind(&cluster.config, ports).await?;
    let connections = Arc::new(Connections::default());
    let _metrics = serve_metrics(cluster, connections.clone()).await?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        served = serve(cluster, listeners, splicer, connections) => served?,
        _ = term.recv() => info!("router stopping"),
        _ = int.recv() => info!("router stopping"),
    }
    Ok(())
}
