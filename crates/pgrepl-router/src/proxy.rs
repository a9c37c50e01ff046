//! One routed connection: bytes copied both ways until either side closes. An rw connection
//! is also closed the moment the topology's primary is no longer its backend, so no client
//! keeps writing to a demoted server.

use crate::{Backend, Endpoint, Topology};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info};

/// Buffer per direction: large enough that bulk results move in few system calls.
const BUFFER: usize = 64 * 1024;

/// Copies bytes both ways in the router until either side closes or the rw backend is demoted.
pub(crate) async fn copy(
    endpoint: Endpoint,
    mut client: TcpStream,
    mut server: TcpStream,
    backend: Backend,
    topology: watch::Receiver<Topology>,
) {
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut server, BUFFER, BUFFER);
    tokio::select! {
        result = copy => debug!(%endpoint, backend = %backend.name, "connection ended: {result:?}"),
        _ = demoted(endpoint, &backend, topology) => closed_demoted(endpoint, &backend),
    }
}

/// Resolves when `backend` stops being the primary, for an rw connection; never for ro.
pub(crate) async fn demoted(endpoint: Endpoint, backend: &Backend, mut topology: watch::Receiver<Topology>) {
    if endpoint == Endpoint::Ro {
        return std::future::pending().await;
    }
    loop {
        if topology.borrow_and_update().rw.as_ref().map(|b| b.addr) != Some(backend.addr) {
            return;
        }
        if topology.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

pub(crate) fn closed_demoted(endpoint: Endpoint, backend: &Backend) {
    info!(%endpoint, backend = %backend.name, "closed a read-write connection: its server is no longer the primary");
}
