//! The program's notices: when it pauses a socket (the router's allowance ran out), or when a
//! socket's forwarded count passes the mark the router set (time to raise the allowance), it
//! writes the socket's cookie to a BPF ring buffer. The router reads the cookies and wakes the
//! one connection each names; a connection is woken by nothing else but its own hang-ups (and,
//! for rw, a demotion), so an idle spliced connection costs the router nothing.
//!
//! Should the ring have filled up (the kernel then drops notices, silently), or the watch
//! fail, every connection is woken: nobody's stop goes unseen.

use super::bpf::{Cookie, RingBuf};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;

/// The spliced connections, by the cookies of their sockets, and whether notices were lost.
#[derive(Default)]
pub(super) struct Waiters {
    connections: Mutex<HashMap<Cookie, Arc<Notify>>>,
    lost: AtomicBool,
}

impl Waiters {
    /// Registers a pair's two sockets; what wakes the pair.
    pub(super) fn add(&self, cookies: [Cookie; 2]) -> Arc<Notify> {
        let wake = Arc::new(Notify::new());
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        for cookie in cookies {
            connections.insert(cookie, wake.clone());
        }
        wake
    }

    pub(super) fn remove(&self, cookies: [Cookie; 2]) {
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        for cookie in cookies {
            connections.remove(&cookie);
        }
    }

    /// Wakes the connection of `cookie` (or, should it be waiting on nothing yet, lets its
    /// next wait return at once). A cookie of a pair already gone is passed over.
    fn wake(&self, cookie: Cookie) {
        if let Some(wake) = self.connections.lock().unwrap_or_else(|e| e.into_inner()).get(&cookie) {
            wake.notify_one();
        }
    }

    fn wake_all(&self) {
        for wake in self.connections.lock().unwrap_or_else(|e| e.into_inner()).values() {
            wake.notify_one();
        }
    }

    /// Notices can no longer be read: every connection is woken to take its pair over.
    fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
        self.wake_all();
    }

    /// Whether notices can no longer be read (a pair must then not rely on them).
    pub(super) fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

/// `struct bpf_ringbuf_hdr`'s flags in its `len` (`linux/bpf.h`): a record still being written,
/// and one thrown away.
const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
/// Each record starts with an 8-byte header (`len`, then `pg_off`) and is padded to 8 bytes.
const HEADER: u64 = 8;

/// A ring buffer mapped as the kernel lays it out (`kernel/bpf/ringbuf.c`): at offset 0 a page
/// whose first u64 is the consumer position, the one page a user may write; at one page the
/// producer position's page, then the data pages, mapped twice in a row so that a record that
/// wraps reads as one.
struct Ring {
    consumer: *mut u8,
    /// The producer's page, then the data twice.
    producer: *const u8,
    page: usize,
    /// Bytes of data (a power of two).
    bytes: usize,
}

// SAFETY: the mappings are plain shared memory the kernel updates; access is through atomics.
unsafe impl Send for Ring {}
unsafe impl Sync for Ring {}

impl Ring {
    fn map(ring: RawFd, bytes: u32) -> io::Result<Ring> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let bytes = bytes as usize;
        let map = |offset: usize, len: usize, protection: libc::c_int| {
            // SAFETY: maps pages of the ring buffer as the kernel lays it out; checked below.
            let at =
                unsafe { libc::mmap(std::ptr::null_mut(), len, protection, libc::MAP_SHARED, ring, offset as i64) };
            if at == libc::MAP_FAILED {
                Err(io::Error::last_os_error())
            } else {
                Ok(at as *mut u8)
            }
        };
        let consumer = map(0, page, libc::PROT_READ | libc::PROT_WRITE)?;
        let producer = map(page, page + 2 * bytes, libc::PROT_READ).inspect_err(|_| {
            // SAFETY: unmaps the page mapped just above.
            unsafe { libc::munmap(consumer.cast(), page) };
        })?;
        Ok(Ring { consumer, producer, page, bytes })
    }

    fn consumer(&self) -> &AtomicU64 {
        // SAFETY: the page is mapped for as long as `Ring` lives and begins with an aligned
        // u64 position that the kernel and this process share.
        unsafe { &*(self.consumer as *const AtomicU64) }
    }

    fn producer(&self) -> &AtomicU64 {
        // SAFETY: as for `consumer`, read only.
        unsafe { &*(self.producer as *const AtomicU64) }
    }

    /// The u32 at `position` in the data (records are 8-byte aligned).
    fn u32_at(&self, position: u64) -> &AtomicU32 {
        let offset = self.page + (position as usize & (self.bytes - 1));
        // SAFETY: `offset` + 4 lies within the first copy of the data, mapped while `Ring` lives.
        unsafe { &*(self.producer.add(offset) as *const AtomicU32) }
    }

    /// The u64 at `position` in the data: may run into the second copy, never past it.
    fn u64_at(&self, position: u64) -> u64 {
        let offset = self.page + (position as usize & (self.bytes - 1));
        // SAFETY: `offset` + 8 lies within the two copies of the data, mapped while `Ring` lives;
        // the record was committed (its header read with Acquire) before this read.
        unsafe { std::ptr::read_volatile(self.producer.add(offset) as *const u64) }
    }

    /// Reads every committed record, handing each one's first 8 bytes (a cookie) to `each`,
    /// and marks them read. Returns whether the ring was at least half full when looked at:
    /// only then can the kernel have dropped a notice (it drops one only when the ring has no
    /// room for it, and nobody but this reader makes room), so a caller then wakes everyone.
    fn take(&self, mut each: impl FnMut(Cookie)) -> bool {
        let mut consumed = self.consumer().load(Ordering::Acquire);
        let crowded = self.producer().load(Ordering::Acquire).wrapping_sub(consumed) >= self.bytes as u64 / 2;
        loop {
            let produced = self.producer().load(Ordering::Acquire);
            let mut progressed = false;
            while consumed < produced {
                let len = self.u32_at(consumed).load(Ordering::Acquire);
                if len & BUSY != 0 {
                    // Still being written: its commit wakes the ring's poller again.
                    return crowded;
                }
                let size = (len & !(BUSY | DISCARD)) as u64;
                if len & DISCARD == 0 && size >= 8 {
                    each(self.u64_at(consumed + HEADER));
                }
                consumed += (size + HEADER).next_multiple_of(8);
                self.consumer().store(consumed, Ordering::Release);
                // The kernel, committing a record, reads the consumer position to decide
                // whether to wake the poller: either it sees this store, or the load of the
                // producer position below sees its record.
                fence(Ordering::SeqCst);
                progressed = true;
            }
            if !progressed {
                return crowded;
            }
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped.
        unsafe {
            libc::munmap(self.consumer.cast(), self.page);
            libc::munmap(self.producer.cast_mut().cast(), self.page + 2 * self.bytes);
        }
    }
}

/// The ring buffer's descriptor, borrowed for as long as the splicer that owns it lives.
struct RingFd(RawFd);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Maps `ring` and registers it with tokio; the future then wakes, for ever, the connection
/// each notice names. `ring` must stay open while the future runs. A failure here means no
/// notices: the caller must not splice.
pub(super) fn watch(ring: &RingBuf, waiters: Arc<Waiters>) -> io::Result<impl Future<Output = ()> + Send> {
    let mapped = Ring::map(ring.fd(), ring.bytes())?;
    // SAFETY: the caller keeps the descriptor open while this runs; it is not closed here.
    let fd = unsafe { AsyncFd::register_with_interest(RingFd(ring.fd()), Interest::READABLE) }?;
    Ok(async move {
        loop {
            let mut ready = match fd.readable().await {
                Ok(ready) => ready,
                Err(e) => {
                    tracing::warn!("watch the splice program's notices: {e}; every spliced connection is copied now");
                    return waiters.lose();
                }
            };
            ready.clear_ready();
            if mapped.take(|cookie| waiters.wake(cookie)) {
                waiters.wake_all();
            }
        }
    })
}
