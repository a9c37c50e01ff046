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
use std::sync::{Arc, Mutex};
use stops::Waiters;
use tokio::sync::Notify;

/// At most this many connections are spliced at once (two sockets each); further ones are
/// copied.
const MAX_SOCKETS: u32 = 65_536;
/// Size of the ring buffer of notices (16 bytes each: 4,096 of them).
const STOPS_BYTES: u32 = 64 * 1024;

/// The kernel objects of splicing, made once per router process.
pub struct Splicer {
    /// Socket cookie -> the socket its bytes go out of.
    partners: Map<Cookie, u32>,
    /// Socket cookie -> bytes the kernel has passed on from that socket.
    forwarded: Map<Cookie, u64>,
    /// Socket cookie -> bytes the kernel may pass on from that socket in all.
    allowed: Map<Cookie, u64>,
    /// Socket cookie -> the forwarded count past which the program writes a notice.
    wake_at: Map<Cookie, u64>,
    /// Socket cookies whose bytes the kernel leaves to the router.
    paused: Map<Cookie, u32>,
    /// Ring buffer: the program's notices (a cookie each), read by `stops::watch`.
    stops: RingBuf,
    _program: OwnedFd,
    /// The spliced connections the notices wake.
    waiters: Arc<Waiters>,
    /// Whether the notices are watched (`watch_stops` ran).
    watching: Mutex<bool>,
}

impl Splicer {
    /// Creates the maps and loads the program; fails without the privilege or kernel support.
    pub fn load() -> io::Result<Splicer> {
        let partners = Map::create(Kind::SockHash, MAX_SOCKETS)?;
        let forwarded = Map::create(Kind::Hash, MAX_SOCKETS)?;
        let allowed = Map::create(Kind::Hash, MAX_SOCKETS)?;
        let wake_at = Map::create(Kind::Hash, MAX_SOCKETS)?;
        let paused = Map::create(Kind::Hash, MAX_SOCKETS)?;
        let stops = RingBuf::create(STOPS_BYTES)?;
        let maps = bpf::Maps {
            partners: &partners,
            forwarded: &forwarded,
            allowed: &allowed,
            wake_at: &wake_at,
            paused: &paused,
            stops: &stops,
        };
        let program = bpf::attach_verdict(&bpf::verdict_program(&maps), &partners)?;
        Ok(Splicer {
            partners,
            forwarded,
            allowed,
            wake_at,
            paused,
            stops,
            _program: program,
            waiters: Default::default(),
            watching: Mutex::new(false),
        })
    }

    /// The descriptors of the maps and the program, for a child process started to use them
    /// (`from_descriptors`): a process that may load the program (root) makes the splicer, an
    /// unprivileged router uses it.
    pub fn descriptors(&self) -> [RawFd; 7] {
        [
            self.partners.fd(),
            self.forwarded.fd(),
            self.allowed.fd(),
            self.wake_at.fd(),
            self.paused.fd(),
            self.stops.fd(),
            self._program.as_raw_fd(),
        ]
    }

    /// Text for `from_descriptors`, such as "5,6,7,8,9,10,11".
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
        let bad = || io::Error::new(io::ErrorKind::InvalidInput, format!("{text:?} is not seven descriptor numbers"));
        let fds: Vec<RawFd> = text.split(',').map(|n| n.trim().parse()).collect::<Result<_, _>>().map_err(|_| bad())?;
        let [partners, forwarded, allowed, wake_at, paused, stops, program] = fds[..] else {
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
        Ok(Splicer {
            partners: Map::from_fd(own(partners), Kind::SockHash)?,
            forwarded: Map::from_fd(own(forwarded), Kind::Hash)?,
            allowed: Map::from_fd(own(allowed), Kind::Hash)?,
            wake_at: Map::from_fd(own(wake_at), Kind::Hash)?,
            paused: Map::from_fd(own(paused), Kind::Hash)?,
            stops: RingBuf::from_fd(own(stops))?,
            _program: own(program),
            waiters: Default::default(),
            watching: Mutex::new(false),
        })
    }

    /// Starts, once, the task that wakes each spliced connection the program's notices name.
    /// Without it nothing would wake a stopped connection: a caller that gets an error must
    /// not splice.
    pub(crate) fn watch_stops(self: &Arc<Self>) -> io::Result<()> {
        let mut watching = self.watching.lock().unwrap_or_else(|e| e.into_inner());
        if *watching {
            return Ok(());
        }
        let watch = stops::watch(&self.stops, self.waiters.clone())?;
        // The task holds the splicer, so the ring's descriptor stays open while it runs.
        let splicer = self.clone();
        tokio::spawn(async move {
            watch.await;
            drop(splicer);
        });
        *watching = true;
        Ok(())
    }

    /// Splices `client` and `server`: from now on the kernel passes each one's bytes to the
    /// other, up to `allowance` bytes each until `Spliced::allow` raises it, and wakes the
    /// pair's `notice` once a side's count passes `wake_at`. Bytes that arrived before stay
    /// queued for the router to pass on.
    pub(crate) fn splice(
        self: &Arc<Self>,
        client: &impl AsRawFd,
        server: &impl AsRawFd,
        allowance: u64,
        wake_at: u64,
    ) -> io::Result<Spliced> {
        if self.waiters.lost() {
            return Err(io::Error::other("the splice program's notices are no longer read"));
        }
        let cookies = [cookie(client)?, cookie(server)?];
        let wake = self.waiters.add(cookies);
        let spliced = Spliced { splicer: self.clone(), cookies, wake };
        for (key, partner) in [(cookies[0], server.as_raw_fd()), (cookies[1], client.as_raw_fd())] {
            self.forwarded.insert(key, 0)?;
            self.allowed.insert(key, allowance)?;
            self.wake_at.insert(key, wake_at)?;
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
    wake: Arc<Notify>,
}

impl Spliced {
    /// Bytes the kernel has passed on from `from` to the other side.
    pub(crate) fn forwarded(&self, from: Side) -> io::Result<u64> {
        Ok(self.splicer.forwarded.get(self.cookies[from as usize])?.unwrap_or(0))
    }

    /// Lets the kernel pass on up to `total` bytes from `from`, counted since the splice, and
    /// wake the pair again once it has passed on `wake_at`.
    pub(crate) fn allow(&self, from: Side, total: u64, wake_at: u64) -> io::Result<()> {
        let key = self.cookies[from as usize];
        self.splicer.allowed.insert(key, total)?;
        self.splicer.wake_at.insert(key, wake_at)
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

    /// Waits for a notice of the program about this pair: a side stopped, or passed its
    /// `wake_at`. Returns at once for a notice that came while nobody waited.
    pub(crate) async fn notice(&self) {
        self.wake.notified().await
    }

    /// Whether the program's notices can no longer be read, so the pair must be taken over.
    pub(crate) fn notices_lost(&self) -> bool {
        self.splicer.waiters.lost()
    }
}

impl Drop for Spliced {
    fn drop(&mut self) {
        for key in self.cookies {
            let _ = self.splicer.partners.remove(key);
            let _ = self.splicer.forwarded.remove(key);
            let _ = self.splicer.allowed.remove(key);
            let _ = self.splicer.wake_at.remove(key);
            let _ = self.splicer.paused.remove(key);
        }
        self.splicer.waiters.remove(self.cookies);
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
