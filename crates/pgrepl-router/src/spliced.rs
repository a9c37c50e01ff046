//! One routed connection spliced in the kernel (see `splice`). The router sets the pair up,
//! then only waits: for a demoted rw backend (close at once), for a side hanging up, and for
//! the program's notices about the pair. The kernel may pass on at most `BACKLOG_LIMIT` bytes
//! beyond what the partner's socket has taken; each time a side has passed on another
//! `WAKE_EVERY` bytes the program wakes the pair, which raises that allowance; a side that
//! would pass it is stopped by the program, which wakes the pair too. So a pair whose bytes do
//! not move is never woken. On a hang-up or a stop the router pauses the pair, waits until the
//! kernel has sent on everything it took in, and copies the rest of the connection itself,
//! which passes a half-close on in order and holds at most its own buffers for a slow reader.

use crate::proxy;
use crate::splice::{written, Hangup, Hangups, Side, Spliced, Splicer};
use crate::{Backend, Endpoint, Topology};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Bytes the kernel may hold for one side, on top of that socket's own send buffer, before
/// the router takes the connection over.
const BACKLOG_LIMIT: u64 = 4 << 20;
/// A side's bytes passed on between two raises of its allowance: well under `BACKLOG_LIMIT`,
/// so a reader that keeps up is never stopped, and few wakes for bulk transfers.
const WAKE_EVERY: u64 = BACKLOG_LIMIT / 4;
const _: () = assert!(WAKE_EVERY > 0 && 2 * WAKE_EVERY <= BACKLOG_LIMIT);
/// How often a pausing pair is checked for the kernel having sent everything on.
const DRAIN_POLL: Duration = Duration::from_millis(1);

/// How the splice of a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Handover {
    /// The router copies the rest of the connection itself.
    Copy(Why),
    /// The rw backend is no longer the primary: the connection is closed.
    Demoted,
}

/// Why the router takes a spliced connection over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    /// A side sent its FIN, which the kernel does not pass on.
    HalfClosed,
    /// The program stopped this side: its partner reads too slowly.
    Stopped(Side),
    /// The program's notices can no longer be read.
    NoticesLost,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Why::HalfClosed => "a side closed its half of the connection",
            Why::Stopped(Side::Server) => "a client reads its results too slowly for the kernel to hold them",
            Why::Stopped(Side::Client) => "a server reads too slowly for the kernel to hold what its client sends",
            Why::NoticesLost => "the splice program's notices are no longer read",
        })
    }
}

pub(crate) async fn run(
    endpoint: Endpoint,
    client: TcpStream,
    server: TcpStream,
    backend: Backend,
    topology: watch::Receiver<Topology>,
    splicer: &Arc<Splicer>,
) {
    // What each socket counts as written before the router wrote anything: not nothing, since
    // Linux counts the SYN of the connection the router opened in its `tcpi_bytes_acked` (1 for
    // the side that connects, 0 for the side that accepts). Bytes passed on are counted from here.
    let before = match (written(&client), written(&server)) {
        (Ok(client), Ok(server)) => [client, server],
        (Err(e), _) | (_, Err(e)) => {
            warn!(%endpoint, backend = %backend.name, "read a socket's TCP_INFO: {e}; copying the connection instead");
            return proxy::copy(endpoint, client, server, backend, topology).await;
        }
    };
    let spliced = match splicer.splice(&client, &server, BACKLOG_LIMIT, WAKE_EVERY) {
        Ok(spliced) => spliced,
        // The kernel splices only established connections; one side already hung up.
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            debug!(%endpoint, backend = %backend.name, "a side hung up before the splice: the router copies the connection");
            return proxy::copy(endpoint, client, server, backend, topology).await;
        }
        Err(e) => {
            warn!(%endpoint, backend = %backend.name, "splice a connection in the kernel: {e}; copying it instead");
            return proxy::copy(endpoint, client, server, backend, topology).await;
        }
    };
    let (client, server, early) = match set_up(client, server, before).await {
        Ok(set_up) => set_up,
        Err(e) => return debug!(%endpoint, backend = %backend.name, "connection ended while splicing: {e}"),
    };
    let pair = Pair { spliced, client, server, early };
    let demoted = proxy::demoted(endpoint, &backend, topology.clone());
    tokio::pin!(demoted);
    let handover = async {
        let hangups = Hangups::watch(&pair.client, &pair.server)?;
        let why = tokio::select! {
            why = watch(&pair, &hangups) => why?,
            _ = &mut demoted => return Ok(Handover::Demoted),
        };
        pair.spliced.pause()?;
        tokio::select! {
            drained = pair.drain(&hangups) => drained?,
            _ = &mut demoted => return Ok(Handover::Demoted),
        }
        Ok::<_, io::Error>(Handover::Copy(why))
    };
    match handover.await {
        Ok(Handover::Copy(why)) => {
            debug!(%endpoint, backend = %backend.name, "the router copies the rest of the connection: {why}");
            let Pair { spliced, client, server, .. } = pair;
            match (TcpStream::from_std(client), TcpStream::from_std(server)) {
                (Ok(client), Ok(server)) => proxy::copy(endpoint, client, server, backend.clone(), topology).await,
                (Err(e), _) | (_, Err(e)) => debug!(%endpoint, "register a connection: {e}"),
            }
            drop(spliced);
        }
        Ok(Handover::Demoted) => proxy::closed_demoted(endpoint, &backend),
        Err(e) => debug!(%endpoint, backend = %backend.name, "connection ended: {e}"),
    }
}

/// A spliced pair, off tokio's poller (which the kernel would wake for every message).
struct Pair {
    spliced: Spliced,
    client: std::net::TcpStream,
    server: std::net::TcpStream,
    /// Bytes counted in each side's `written` that the kernel did not pass on (indexed by
    /// `Side`): its count before the splice, and what the router itself wrote to it.
    early: [u64; 2],
}

/// Passes on what each side sent before the splice was in place (the client's first message,
/// at most: it waits for an answer before it sends more, so nothing can overtake these bytes),
/// then takes both sockets off tokio's poller.
async fn set_up(
    mut client: TcpStream,
    mut server: TcpStream,
    before: [u64; 2],
) -> io::Result<(std::net::TcpStream, std::net::TcpStream, [u64; 2])> {
    let mut early = before;
    early[Side::Server as usize] += pass_queued(&client, &mut server).await?;
    early[Side::Client as usize] += pass_queued(&server, &mut client).await?;
    Ok((client.into_std()?, server.into_std()?, early))
}

/// Reads what is queued on `from` without waiting, writes it to `to`; returns its length.
async fn pass_queued(from: &TcpStream, to: &mut TcpStream) -> io::Result<u64> {
    let mut queued = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        // SAFETY: `buffer` is valid for its length; MSG_DONTWAIT never blocks.
        let n = unsafe { libc::recv(from.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), libc::MSG_DONTWAIT) };
        match n {
            0 => break,
            n if n > 0 => queued.extend_from_slice(&buffer[..n as usize]),
            _ => match io::Error::last_os_error() {
                e if e.kind() == io::ErrorKind::WouldBlock => break,
                e => return Err(e),
            },
        }
    }
    to.write_all(&queued).await?;
    Ok(queued.len() as u64)
}

impl Pair {
    /// Bytes written to each side (indexed by `Side`) that the kernel passed on: all bytes
    /// written to it but those the router wrote itself.
    fn delivered(&self) -> io::Result<[u64; 2]> {
        Ok([
            written(&self.client)?.saturating_sub(self.early[Side::Client as usize]),
            written(&self.server)?.saturating_sub(self.early[Side::Server as usize]),
        ])
    }

    /// Bytes the kernel took in from each side and has not yet written to the other, indexed
    /// by the side they go to, and the counts of bytes forwarded they were computed from.
    fn backlog(&self) -> io::Result<([u64; 2], [u64; 2])> {
        let forwarded = [self.spliced.forwarded(Side::Client)?, self.spliced.forwarded(Side::Server)?];
        let [to_client, to_server] = self.delivered()?;
        let backlog = [
            forwarded[Side::Server as usize].saturating_sub(to_client),
            forwarded[Side::Client as usize].saturating_sub(to_server),
        ];
        Ok((backlog, forwarded))
    }

    /// Waits (the pair paused) until the kernel has written everything it took in: nothing
    /// held, twice in a row with the same counts, so a segment the kernel was passing on at
    /// the moment of the pause is counted too.
    /// A broken connection ends the wait with an error.
    async fn drain(&self, hangups: &Hangups) -> io::Result<()> {
        let mut last = None;
        loop {
            let (backlog, forwarded) = self.backlog()?;
            if backlog == [0, 0] && last == Some(forwarded) {
                return Ok(());
            }
            last = (backlog == [0, 0]).then_some(forwarded);
            tokio::select! {
                hangup = hangups.wait() => if hangup? == Hangup::Broken {
                    return Err(io::Error::other("connection broken"));
                },
                _ = tokio::time::sleep(DRAIN_POLL) => {}
            }
        }
    }
}

/// Watches a spliced pair until the router must take it over; says why. Woken only by a
/// hang-up or a notice of the program about this pair; on a notice, raises each side's
/// allowance to what its partner's socket has taken plus `BACKLOG_LIMIT`, and its next wake to
/// `WAKE_EVERY` bytes on from what it has passed on.
async fn watch(pair: &Pair, hangups: &Hangups) -> io::Result<Why> {
    loop {
        for from in [Side::Client, Side::Server] {
            if pair.spliced.is_paused(from)? {
                let why = Why::Stopped(from);
                info!("{why}: the router copies this connection from now on, holding at most its buffers");
                return Ok(why);
            }
        }
        if pair.spliced.notices_lost() {
            return Ok(Why::NoticesLost);
        }
        let delivered = pair.delivered()?;
        for (from, to) in [(Side::Client, Side::Server), (Side::Server, Side::Client)] {
            let forwarded = pair.spliced.forwarded(from)?;
            pair.spliced.allow(from, delivered[to as usize] + BACKLOG_LIMIT, forwarded + WAKE_EVERY)?;
        }
        tokio::select! {
            hangup = hangups.wait() => return match hangup? {
                Hangup::HalfClosed => Ok(Why::HalfClosed),
                Hangup::Broken => Err(io::Error::other("connection broken")),
            },
            _ = pair.spliced.notice() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_side_is_named_by_who_reads_slowly() {
        assert!(Why::Stopped(Side::Server).to_string().contains("client reads"));
        assert!(Why::Stopped(Side::Client).to_string().contains("server reads"));
    }
}
