//! The program's stop notices: when it pauses a socket (the router's allowance ran out), it
//! writes the socket's cookie to a BPF ring buffer. The router does not read the records; it
//! only needs to know that some socket stopped, so it moves the ring's consumer position to
//! the producer's and bumps a counter that every spliced connection watches.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::watch;

/// A ring buffer's two position pages, mapped (`linux/bpf.h`: consumer position first, read
/// and write; producer position next, read only).
struct Positions {
    consumer: *mut u8,
    producer: *mut u8,
    page: usize,
}

// SAFETY: the mappings are plain shared memory the kernel updates; access is through atomics.
unsafe impl Send for Positions {}
unsafe impl Sync for Positions {}

impl Positions {
    fn map(ring: RawFd) -> io::Result<Positions> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let map = |offset: usize, protection: libc::c_int| {
            // SAFETY: maps one page of the ring buffer as the kernel lays it out; checked below.
            let at =
                unsafe { libc::mmap(std::ptr::null_mut(), page, protection, libc::MAP_SHARED, ring, offset as i64) };
            if at == libc::MAP_FAILED {
                Err(io::Error::last_os_error())
            } else {
                Ok(at as *mut u8)
            }
        };
        let consumer = map(0, libc::PROT_READ | libc::PROT_WRITE)?;
        let producer = map(page, libc::PROT_READ).inspect_err(|_| {
            // SAFETY: unmaps the page mapped just above.
            unsafe { libc::munmap(consumer.cast(), page) };
        })?;
        Ok(Positions { consumer, producer, page })
    }

    fn position(at: *mut u8) -> &'static AtomicU64 {
        // SAFETY: the page is mapped for as long as `Positions` lives and begins with an
        // aligned u64 position that the kernel and this process share.
        unsafe { &*(at as *const AtomicU64) }
    }

    /// Marks every record read; whether there were any.
    fn skip_all(&self) -> bool {
        let produced = Self::position(self.producer).load(Ordering::Acquire);
        let consumer = Self::position(self.consumer);
        let any = consumer.load(Ordering::Relaxed) != produced;
        consumer.store(produced, Ordering::Release);
        any
    }
}

impl Drop for Positions {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the two pages `map` mapped.
        unsafe {
            libc::munmap(self.consumer.cast(), self.page);
            libc::munmap(self.producer.cast(), self.page);
        }
    }
}

/// The ring buffer's descriptor, borrowed for as long as the splicer that owns it lives.
struct Ring(RawFd);

impl AsRawFd for Ring {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Watches the ring buffer `ring` for ever, bumping `stopped` whenever the program stopped
/// a socket. `ring` must stay open while this runs.
pub(super) async fn watch(ring: RawFd, stopped: watch::Sender<u64>) -> io::Result<()> {
    let positions = Positions::map(ring)?;
    // SAFETY: the caller keeps the descriptor open while this runs; it is not closed here.
    let ring = unsafe { AsyncFd::register_with_interest(Ring(ring), Interest::READABLE) }.map_err(io::Error::from)?;
    loop {
        let mut ready = ring.readable().await?;
        ready.clear_ready();
        if positions.skip_all() {
            stopped.send_modify(|n| *n += 1);
        }
    }
}
