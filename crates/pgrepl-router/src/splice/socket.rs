//! What the router asks of a spliced pair's sockets: how many bytes were written to one, and
//! whether one hung up, without being woken by the bytes themselves.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Where `tcpi_bytes_acked` lies in `struct tcp_info` (Linux 4.1 and later).
const BYTES_ACKED_AT: usize = 120;

/// Bytes written to `socket` since it connected: acknowledged by the peer, plus still queued.
/// Linux counts the SYN too for a socket that connected (not one that was accepted), and a FIN
/// once acknowledged: callers count from a value read before they write.
pub(crate) fn written(socket: &impl AsRawFd) -> io::Result<u64> {
    let mut info = [0u8; BYTES_ACKED_AT + 8];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for the call; the kernel writes at most `len` bytes.
    check(unsafe {
        libc::getsockopt(socket.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, info.as_mut_ptr().cast(), &mut len)
    })?;
    if (len as usize) < info.len() {
        return Err(io::Error::other("TCP_INFO has no tcpi_bytes_acked (Linux older than 4.1)"));
    }
    let acked = u64::from_ne_bytes(info[BYTES_ACKED_AT..].try_into().expect("8 bytes"));
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one int.
    check(unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut queued) })?;
    Ok(acked + queued as u64)
}

/// How a side hung up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hangup {
    /// It sent all it will send (FIN); it may still read.
    HalfClosed,
    /// The connection broke (reset, error).
    Broken,
}

/// Watches both sockets of a pair for a hang-up only. A socket registered for readability
/// would wake the router for every message the kernel passes on; so the pair has its own
/// epoll instance that asks for hang-ups alone, and that instance is what tokio polls.
pub(crate) struct Hangups {
    epoll: AsyncFd<OwnedFd>,
}

impl Hangups {
    pub(crate) fn watch(a: &impl AsRawFd, b: &impl AsRawFd) -> io::Result<Hangups> {
        // SAFETY: plain system calls; the new descriptor is owned at once.
        let epoll = unsafe { OwnedFd::from_raw_fd(check(libc::epoll_create1(libc::EPOLL_CLOEXEC))?) };
        for socket in [a.as_raw_fd(), b.as_raw_fd()] {
            let mut event = libc::epoll_event { events: (libc::EPOLLRDHUP | libc::EPOLLET) as u32, u64: 0 };
            // SAFETY: `event` is valid for the call.
            check(unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, socket, &mut event) })?;
        }
        // SAFETY: the descriptor is owned by the `AsyncFd` and closed only when it drops.
        let epoll = unsafe { AsyncFd::register_with_interest(epoll, Interest::READABLE) }.map_err(io::Error::from)?;
        Ok(Hangups { epoll })
    }

    /// Waits for a side to hang up; a broken connection wins over a half-closed one.
    pub(crate) async fn wait(&self) -> io::Result<Hangup> {
        loop {
            let mut ready = self.epoll.readable().await?;
            let mut events = [libc::epoll_event { events: 0, u64: 0 }; 2];
            // SAFETY: `events` holds two entries, as passed.
            let n = check(unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 2, 0) })?;
            if n == 0 {
                ready.clear_ready();
                continue;
            }
            let broken = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
            return Ok(if events[..n as usize].iter().any(|e| e.events & broken != 0) {
                Hangup::Broken
            } else {
                Hangup::HalfClosed
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    /// `written` grows by exactly the bytes written, on the side that connected and on the side
    /// that accepted, whatever it starts from (the SYN, for the side that connected).
    #[test]
    fn written_counts_the_bytes_written_from_where_it_started() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut connected = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        let start = [written(&connected).unwrap(), written(&accepted).unwrap()];
        assert!(start[0] <= 1 && start[1] == 0, "counts before any byte: {start:?}");
        connected.write_all(&[7; 1000]).unwrap();
        accepted.write_all(&[7; 300]).unwrap();
        let mut buffer = [0u8; 1000];
        accepted.read_exact(&mut buffer).unwrap();
        connected.read_exact(&mut buffer[..300]).unwrap();
        assert_eq!([written(&connected).unwrap() - start[0], written(&accepted).unwrap() - start[1]], [1000, 300]);
    }
}
