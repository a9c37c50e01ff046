//! Each agent's HTTP API (`api_listen`:`api_port`): Patroni's health checks under Patroni's
//! names (`checks`), this member's status at `/patroni`, the whole cluster at `/cluster` (what
//! `pgrepl status --json` prints). It answers from the agent loop's last cycle (`Probe`) and
//! never waits on the loop: a loop that is stuck shows as a stale beat at `/liveness`. A
//! stopped agent process (SIGSTOP) answers nothing; probes time out, which they read as down.
//! `actions`: the POSTs that change the cluster, off unless `api_token` is set.

mod actions;
mod checks;
pub mod history;
pub mod metrics;
mod patroni;
mod ui;

use crate::cluster::Cluster;
use crate::commands::status;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use pgrepl_agent::{Chores, Probe};
use pgrepl_core::MemberName;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{debug, warn};

/// What the API serves from: the agent's loop, and the cluster it belongs to.
pub struct Api {
    pub cluster: Cluster,
    pub member: MemberName,
    pub probe: Probe,
    /// The connection counts of a router run in the same process (`pgrepl node --router`).
    pub router: Option<Arc<pgrepl_router::Connections>>,
    /// The replicas' lag over the last 15 minutes (`/history`), filled by `history::run_sampler`.
    pub history: history::Shared,
    /// Work asked of the loop (the actions `/restart` and `/reinitialize`).
    pub chores: Chores,
}

/// The API's listener, bound before the agent starts so that the address it publishes is the
/// one that answers (`api_port` 0: a free port).
pub async fn bind(cluster: &Cluster, default_port: u16) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let config = &cluster.config;
    let addr = SocketAddr::new(config.api_listen, config.api_port.unwrap_or(default_port));
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "the HTTP API cannot listen on {addr}: {e}; set api_port (PGREPL_API_PORT) to a free port, or 0 for any, \
             or api_listen (PGREPL_API_LISTEN) to another address"
        )
    })?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

/// The address others reach the API at: the member's own host when it listens on every address.
pub fn advertised(bound: SocketAddr, member_host: &str) -> String {
    if bound.ip().is_unspecified() {
        match member_host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]:{}", bound.port()),
            _ => format!("{member_host}:{}", bound.port()),
        }
    } else {
        bound.to_string()
    }
}

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, api: Arc<Api>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: try again shortly rather than spin.
                warn!("the HTTP API could not accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let api = api.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(api.handle(req).await) }
            });
            if let Err(e) =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
            {
                debug!("HTTP API connection: {e}");
            }
        });
    }
}

pub type Reply = Response<Full<Bytes>>;

impl Api {
    async fn handle(&self, req: Request<Incoming>) -> Reply {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        if matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
            if let Some(reply) = checks::answer(self, &method, &path, &query) {
                return reply;
            }
        }
        if method == Method::POST && actions::is_action(&path) {
            return actions::answer(self, &path, req).await;
        }
        match (&method, path.as_str()) {
            (&Method::GET, "/patroni") => json(StatusCode::OK, &patroni::current(self)),
            (&Method::GET, "/cluster") => self.cluster_json(),
            (&Method::GET, "/metrics") => metrics::reply(self),
            (&Method::GET, "/history") => history::answer(self, &query),
            (&Method::GET, "/ui") => ui::page(),
            _ => error(StatusCode::NOT_FOUND, &format!("{method} {path} is not part of pgrepl's API")),
        }
    }

    /// `/cluster`: what `pgrepl status --json` prints, from the view of the loop's last cycle.
    fn cluster_json(&self) -> Reply {
        let Some(cycle) = self.probe.last() else {
            return error(StatusCode::SERVICE_UNAVAILABLE, "this agent has not read the cluster yet");
        };
        let endpoints = status::endpoints(&self.cluster, &cycle.view);
        json(StatusCode::OK, &status::build(&self.cluster.config.cluster, &cycle.view, endpoints))
    }
}

pub fn json(code: StatusCode, value: &impl serde::Serialize) -> Reply {
    let body = serde_json::to_vec(value).unwrap_or_default();
    reply(code, "application/json", body)
}

pub fn reply(code: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = code;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// An error as JSON: `{"error": sentence}`.
pub fn error(code: StatusCode, sentence: &str) -> Reply {
    json(code, &serde_json::json!({ "error": sentence }))
}
