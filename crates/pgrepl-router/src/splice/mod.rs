//! Kernel splicing: the kernel itself passes a routed connection's bytes from one socket to
//! the other (a BPF sockhash with a stream verdict program), so the router is not woken, and
//! makes no system call, for each message. The router keeps three jobs: set a pair up, notice
//! when one side hangs up, and bound what the kernel holds for a side that reads slowly; for
//! the last two it pauses the pair, waits until the kernel has sent on all it took in, and
//! copies the rest of the connection itself.
//!
//! Needs Linux with `CONFIG_BPF_STREAM_PARSER` and the privilege to load BPF programs (root,
//! or CAP_BPF and CAP_NET_ADMIN).

mod bpf;
mod socket;
mod stops;

pub(crate) use socket::{written, Hangup, Hangups};

use bpf::{Cookie, Kind, Map, RingBuf};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// At most this many connections are spliced at once (two sockets each); further ones are
/// copied.
const MAX_SOCKETS: u32 = 65_536;
/// Size of the ring buffer of stop notices (16 bytes each; the router skips them all).
const STOPS_BYTES: u32 = 64 * 1024;

/// The kernel objects of splicing, made once per router process.
pub struct Splicer {
    /// Socket cookie -> the socket its bytes go out of.
    partners: Map<Cookie, u32>,
    /// Socket cookie -> bytes the kernel has passed on from that socket.
    forwarded: Map<Cookie, u64>,
    /// Socket cookie -> bytes the kernel may pass on from that socket in all.
    allowed: Map<Cookie, u64>,
    /// Socket cookies whose bytes the kernel leaves to the router.
    paused: Map<Cookie, u32>,
    /// Ring buffer: the program's notices of sockets it paused.
    stops: RingBuf,
    _program: OwnedFd,
    /// Bumped whenever the program paused a socket (see `watch_stops`).
    stopped: watch::Sender<u64>,
    watching: AtomicBool,
}

impl Splicer {
    /// Creates the maps and loads the program; fails without the privilege or kernel support.
    pub fn load() -> io::Result<Splicer> {
        let partners = Map::create(Kind::SockHash, MAX_SOCKETS)?;
        let forwarded = Map::create(Kind::Hash, MAX_SOCKETS)?;
        let allowed = Map::create(Kind::Hash, MAX_SOCKETS)?;
        let paused = Map::create(Kind::Hash, MAX_SOCKETS)?;
        let stops = RingBuf::create(STOPS_BYTES)?;
        let maps =
            bpf::Maps { partners: &partners, forwarded: &forwarded, allowed: &allowed, paused: &paused, stops: &stops };
        let program = bpf::attach_verdict(&bpf::verdict_program(&maps), &partners)?;
        Ok(Splicer::from_parts(partners, forwarded, allowed, paused, stops, program))
    }

    fn from_parts(
        partners: Map<Cookie, u32>,
        forwarded: Map<Cookie, u64>,
        allowed: Map<Cookie, u64>,
        paused: Map<Cookie, u32>,
        stops: RingBuf,
        program: OwnedFd,
    ) -> Splicer {
        let (stopped, _) = watch::channel(0);
        let watching = AtomicBool::new(false);
        Splicer { partners, forwarded, allowed, paused, stops, _program: program, stopped, watching }
    }

    /// The descriptors of the maps and the program, for a child process started to use them
    /// (`from_descriptors`): a process that may load the program (root) makes the splicer, an
    /// unprivileged router uses it.
    pub fn descriptors(&self) -> [RawFd; 6] {
        [
            self.partners.fd(),
            self.forwarded.fd(),
            self.allowed.fd(),
            self.paused.fd(),
            self.stops.fd(),
            self._program.as_raw_fd(),
        ]
    }

    /// Text for `from_descriptors`, such as "5,6,7,8,9,10".
    pub fn describe_descriptors(&self) -> String {
        self.descriptors().map(|fd| fd.to_string()).join(",")
    }

    /// Takes over the descriptors a parent handed down (see `descriptors`), in that order; each
    /// map must be of the type, key size and value size this splicer makes it with.
    ///
    /// # Safety
    /// The descriptors must be open, be this splicer's objects, and be owned by nothing else
    /// in this process.
    pub unsafe fn from_descriptors(text: &str) -> io::Result<Splicer> {
        let bad = || io::Error::new(io::ErrorKind::InvalidInput, format!("{text:?} is not six descriptor numbers"));
        let fds: Vec<RawFd> = text.split(',').map(|n| n.trim().parse()).collect::<Result<_, _>>().map_err(|_| bad())?;
        let [partners, forwarded, allowed, paused, stops, program] = fds[..] else {
            return Err(bad());
        };
        for fd in &fds {
            // SAFETY: fcntl on a descriptor number; it fails cleanly when the number is not open.
            if unsafe { libc::fcntl(*fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("descriptor {fd} is not open")));
            }
        }
        // SAFETY: the caller vouches that these are this splicer's objects, owned by nobody else.
        let own = |fd| unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Splicer::from_parts(
            Map::from_fd(own(partners), Kind::SockHash)?,
            Map::from_fd(own(forwarded), Kind::Hash)?,
            Map::from_fd(own(allowed), Kind::Hash)?,
            Map::from_fd(own(paused), Kind::Hash)?,
            RingBuf::from_fd(own(stops))?,
            own(program),
        ))
    }

    /// Starts, once, the task that turns the program's stop notices into `stopped()` changes.
    pub(crate) fn watch_stops(self: &Arc<Self>) {
        if self.watching.swap(true, Ordering::SeqCst) {
            return;
        }
        let splicer = self.clone();
        tokio::spawn(async move {
            if let Err(e) = stops::watch(splicer.stops.fd(), splicer.stopped.clone()).await {
                tracing::warn!(
                    "watch the splice program's stop notices: {e}; stopped connections resume at their next check"
                );
            }
        });
    }

    /// Changes whenever the program paused some socket.
    pub(crate) fn stopped(&self) -> watch::Receiver<u64> {
        self.stopped.subscribe()
    }

    /// Splices `client` and `server`: from now on the kernel passes each one's bytes to the
    /// other, up to `allowance` bytes each until `Spliced::allow` raises it. Bytes that arrived
    /// before stay queued for the router to pass on.
    pub(crate) fn splice(
        self: &Arc<Self>,
        client: &impl AsRawFd,
        server: &impl AsRawFd,
        allowance: u64,
    ) -> io::Result<Spliced> {
        let spliced = Spliced { splicer: self.clone(), cookies: [cookie(client)?, cookie(server)?] };
        for (key, partner) in [(spliced.cookies[0], server.as_raw_fd()), (spliced.cookies[1], client.as_raw_fd())] {
            self.forwarded.insert(key, 0)?;
            self.allowed.insert(key, allowance)?;
            self.partners.insert(key, partner as u32)?;
        }
        Ok(spliced)
    }
}

impl std::fmt::Debug for Splicer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Splicer")
    }
}

/// Which socket of a spliced pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Client = 0,
    Server = 1,
}

/// A spliced pair; dropping it forgets the pair in the kernel's maps.
pub(crate) struct Spliced {
    splicer: Arc<Splicer>,
    cookies: [Cookie; 2],
}

impl Spliced {
    /// Bytes the kernel has passed on from `from` to the other side.
    pub(crate) fn forwarded(&self, from: Side) -> io::Result<u64> {
        Ok(self.splicer.forwarded.get(self.cookies[from as usize])?.unwrap_or(0))
    }

    /// Lets the kernel pass on up to `total` bytes from `from`, counted since the splice.
    pub(crate) fn allow(&self, from: Side, total: u64) -> io::Result<()> {
        self.splicer.allowed.insert(self.cookies[from as usize], total)
    }

    /// Whether `from` is paused: by the program when its allowance ran out, or by `pause`.
    pub(crate) fn is_paused(&self, from: Side) -> io::Result<bool> {
        Ok(self.splicer.paused.get(self.cookies[from as usize])?.is_some())
    }

    /// Stops the kernel passing bytes on, both ways: what arrives from now on is the router's
    /// to read. What the kernel already took in, it still sends.
    pub(crate) fn pause(&self) -> io::Result<()> {
        for key in self.cookies {
            self.splicer.paused.insert(key, 1)?;
        }
        Ok(())
    }
}

impl Drop for Spliced {
    fn drop(&mut self) {
        for key in self.cookies {
            let _ = self.splicer.partners.remove(key);
            let _ = self.splicer.forwarded.remove(key);
            let _ = self.splicer.allowed.remove(key);
            let _ = self.splicer.paused.remove(key);
        }
    }
}

/// The kernel's unique, never reused number for a socket.
fn cookie(socket: &impl AsRawFd) -> io::Result<Cookie> {
    let mut value = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for the duration of the call and sized as SO_COOKIE needs.
    let r = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            &mut value as *mut u64 as *mut libc::c_void,
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}
