//! Kernel splicing through the router's real endpoint, with plain TCP peers standing in for
//! client and server: bytes pass both ways intact and in order, a half-close is passed on
//! after the data before it, a slow reader gets every byte while the router takes the
//! connection over, and a demoted rw backend's connections are closed.
//!
//! Needs root (or CAP_BPF and CAP_NET_ADMIN) and a kernel with CONFIG_BPF_STREAM_PARSER, as
//! `make test` has.

use pgrepl_router::{serve, Backend, Endpoint, Policy, RoFallback, Settings, Splicer, Topology};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The router's log lines, captured.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A router rw endpoint in front of `server`, splicing; returns its address.
async fn router(server: SocketAddr) -> (SocketAddr, watch::Sender<Topology>) {
    let splicer = Splicer::load().expect("load the splice program (needs root and CONFIG_BPF_STREAM_PARSER)");
    let backend = Backend { name: "m1".into(), addr: server };
    let (tx, rx) = watch::channel(Topology { rw: Some(backend), ro: vec![] });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = Settings {
        policy: watch::channel(Policy { rw_wait: Duration::from_secs(1), ro_fallback: RoFallback::Refuse }).1,
        connect_timeout: Duration::from_secs(1),
        splicer: Some(Arc::new(splicer)),
        connections: Default::default(),
    };
    tokio::spawn(serve(Endpoint::Rw, listener, rx, settings));
    (addr, tx)
}

/// A client connected through the router to a server; both ends, and the topology's sender.
async fn connected() -> (TcpStream, TcpStream, watch::Sender<Topology>) {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, topology) = router(server.local_addr().unwrap()).await;
    let client = TcpStream::connect(addr).await.unwrap();
    let (backend, _) = server.accept().await.unwrap();
    (client, backend, topology)
}

fn capture_log() -> (Log, tracing::subscriber::DefaultGuard) {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (log, tracing::subscriber::set_default(subscriber))
}

/// The byte at `i` of a test stream: a pattern that shows any loss or reordering.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

#[tokio::test]
async fn messages_pass_both_ways_in_the_kernel() {
    let (log, _guard) = capture_log();
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, _topology) = router(server.local_addr().unwrap()).await;
    // The client speaks first, before the router has even connected: those bytes were queued
    // before the splice and must still arrive first.
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"hello").await.unwrap();
    let (mut backend, _) = server.accept().await.unwrap();
    let mut greeting = [0u8; 5];
    backend.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"hello");
    for round in 0..2000u32 {
        backend.write_all(&round.to_be_bytes()).await.unwrap();
        let mut answer = [0u8; 4];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(u32::from_be_bytes(answer), round);
        client.write_all(&(round * 3).to_be_bytes()).await.unwrap();
        backend.read_exact(&mut answer).await.unwrap();
        assert_eq!(u32::from_be_bytes(answer), round * 3);
    }
    assert!(!log.text().contains("copies the rest"), "the router took over a connection it need not:\n{}", log.text());
    assert!(!log.text().contains("copying it instead"), "{}", log.text());
}

#[tokio::test]
async fn a_half_close_passes_on_after_the_bytes_before_it() {
    let (log, _guard) = capture_log();
    let (mut client, mut backend, _topology) = connected().await;
    // Let the splice settle, then send a request and half-close, as a cancel request does.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let request: Vec<u8> = (0..100_000).map(pattern).collect();
    client.write_all(&request).await.unwrap();
    client.shutdown().await.unwrap();
    let mut received = Vec::new();
    backend.read_to_end(&mut received).await.unwrap();
    assert!(received == request, "the server got {} of {} bytes, or out of order", received.len(), request.len());
    // The other half still works: the answer reaches the client, then the close.
    backend.write_all(b"answer").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(backend);
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, b"answer", "{}", log.text());
    assert!(log.text().contains("closed its half"), "{}", log.text());
}

#[tokio::test]
async fn a_slow_reader_gets_every_byte_and_the_kernel_holds_a_bounded_amount() {
    let (log, _guard) = capture_log();
    let (mut client, mut backend, _topology) = connected().await;
    const SIZE: usize = 256 << 20;
    let writer = tokio::spawn(async move {
        let chunk: Vec<u8> = (0..251 * 1024).map(pattern).collect();
        let mut sent = 0;
        while sent < SIZE {
            let n = chunk.len().min(SIZE - sent);
            backend.write_all(&chunk[..n]).await.unwrap();
            sent += n;
        }
    });
    // The client reads nothing for a while: without a bound the kernel would take in all
    // 256 MB meanwhile. With it, the server is stopped by TCP flow control.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!writer.is_finished(), "the server could send all 256 MB to a client that reads nothing");
    let mut received = 0usize;
    let mut buffer = vec![0u8; 64 * 1024];
    while received < SIZE {
        let n = client.read(&mut buffer).await.unwrap();
        assert!(n > 0, "the connection ended after {received} bytes");
        for (k, b) in buffer[..n].iter().enumerate() {
            assert_eq!(*b, pattern(received + k), "byte {} is wrong", received + k);
        }
        received += n;
    }
    writer.await.unwrap();
    assert!(log.text().contains("reads its results too slowly"), "{}", log.text());
}

#[tokio::test]
async fn a_demoted_primarys_connections_are_closed() {
    let (_log, _guard) = capture_log();
    let (mut client, mut backend, topology) = connected().await;
    client.write_all(b"ping").await.unwrap();
    let mut ping = [0u8; 4];
    backend.read_exact(&mut ping).await.unwrap();
    topology.send_modify(|t| t.rw = None);
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut rest)).await;
    assert!(matches!(ended, Ok(Ok(0)) | Ok(Err(_))), "the client's connection stayed open: {ended:?}");
}

/// A client that sends one message and hangs up at once, as a cancel request does, may be gone
/// before the splice is in place (the kernel splices only established connections): its bytes
/// and its hang-up still reach the server, whichever way the router passes them on.
#[tokio::test]
async fn a_client_that_hangs_up_at_once_still_delivers_its_message() {
    let (_log, _guard) = capture_log();
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, _topology) = router(server.local_addr().unwrap()).await;
    for round in 0..20u8 {
        let message = [round; 16];
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(&message).await.unwrap();
        drop(client);
        let (mut backend, _) = server.accept().await.unwrap();
        let mut received = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), backend.read_to_end(&mut received)).await.unwrap().unwrap();
        assert_eq!(received, message, "round {round}");
    }
}

/// A router takes over the splicer's descriptors from its parent only when each map is the
/// one it should be: the same kind, key size and value size.
#[test]
fn descriptors_handed_down_out_of_order_are_refused() {
    let splicer = Splicer::load().expect("load the splice program (needs root and CONFIG_BPF_STREAM_PARSER)");
    // SAFETY: dup makes new descriptors, each handed to one from_descriptors below.
    let dup = |fds: &[i32]| fds.iter().map(|&fd| unsafe { libc::dup(fd) }.to_string()).collect::<Vec<_>>().join(",");
    let mut fds = splicer.descriptors().to_vec();
    // SAFETY: fresh duplicates of the splicer's objects, owned by nothing else.
    let taken = unsafe { Splicer::from_descriptors(&dup(&fds)) };
    assert!(taken.is_ok(), "{:?}", taken.err());
    fds.swap(0, 1); // the partners' sockhash and the forwarded counts' hash
                    // SAFETY: as above.
    let refused = unsafe { Splicer::from_descriptors(&dup(&fds)) }.expect_err("a hash taken for the sockhash");
    assert!(refused.to_string().contains("not the SockHash"), "{refused}");
}

/// A reader that keeps up is never taken over, however many bytes pass: the program wakes the
/// router as the bytes move, and the router raises the allowance before it runs out (without
/// that, the connection would be stopped after its first 4 MiB).
#[tokio::test]
async fn a_reader_that_keeps_up_stays_spliced() {
    let (log, _guard) = capture_log();
    let (mut client, mut backend, _topology) = connected().await;
    const SIZE: usize = 64 << 20;
    // The server never has more than 2 MiB out that the client has not read: the client keeps up.
    const AHEAD: usize = 2 << 20;
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let read_so_far = received.clone();
    let writer = tokio::spawn(async move {
        let chunk: Vec<u8> = (0..251 * 64).map(pattern).collect();
        let mut sent = 0;
        while sent < SIZE {
            while sent - read_so_far.load(std::sync::atomic::Ordering::SeqCst) > AHEAD {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let n = chunk.len().min(SIZE - sent);
            backend.write_all(&chunk[..n]).await.unwrap();
            sent += n;
            // The peers share the router's thread here (a real router has its own): let it run.
            tokio::task::yield_now().await;
        }
        backend
    });
    let mut done = 0usize;
    let mut buffer = vec![0u8; 64 * 1024];
    while done < SIZE {
        let n = client.read(&mut buffer).await.unwrap();
        assert!(n > 0, "the connection ended after {done} bytes");
        for (k, b) in buffer[..n].iter().enumerate() {
            assert_eq!(*b, pattern(done + k), "byte {} is wrong", done + k);
        }
        done += n;
        received.store(done, std::sync::atomic::Ordering::SeqCst);
        tokio::task::yield_now().await;
    }
    let _backend = writer.await.unwrap();
    assert!(!log.text().contains("too slowly"), "a reader that kept up was stopped:\n{}", log.text());
    assert!(!log.text().contains("copies the rest"), "{}", log.text());
}

/// The CPU time this thread has used so far: a test's runtime runs on one thread, and the
/// router it serves with it (other tests run on other threads).
fn cpu_time() -> Duration {
    // SAFETY: rusage is plain data; zeroes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is valid for the call.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) }, 0);
    let time = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Idle spliced connections cost nothing: nothing wakes a connection whose bytes do not move.
/// (With a timer per connection, 200 of them took several ms of CPU per second.)
#[tokio::test]
async fn idle_spliced_connections_cost_no_cpu() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, _topology) = router(server.local_addr().unwrap()).await;
    let mut pairs = Vec::new();
    for _ in 0..200 {
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut backend, _) = server.accept().await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut ping = [0u8; 4];
        backend.read_exact(&mut ping).await.unwrap();
        backend.write_all(b"pong").await.unwrap();
        client.read_exact(&mut ping).await.unwrap();
        pairs.push((client, backend));
    }
    // Long enough for any per-connection check that backs off while idle to reach its slowest.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = cpu_time();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let per_second = (cpu_time() - before) / 2;
    assert!(
        per_second < Duration::from_millis(1),
        "200 idle spliced connections took {per_second:?} of CPU per second"
    );
    // And they still work.
    for (client, backend) in &mut pairs {
        backend.write_all(b"late").await.unwrap();
        let mut late = [0u8; 4];
        client.read_exact(&mut late).await.unwrap();
        assert_eq!(&late, b"late");
    }
}
