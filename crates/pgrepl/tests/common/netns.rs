//! Hosts for end-to-end tests: network namespaces joined by a bridge, one veth pair each, on a
//! /24 of 10.231.X.0 (X random per run, skipping one in use), with names carrying this
//! process's id and a counter so parallel tests never collide. Runs commands inside a host,
//! opens TCP connections from inside one (for checks that must see a cut-off host), cuts a host
//! off (its veth's bridge end goes down: it keeps its own addresses, loses everyone else) and
//! heals it. Dropping `Hosts` stops the processes it started (SIGTERM first for those asked,
//! then SIGKILL for anything left in the namespaces) and removes the namespaces, the veths,
//! the bridge and the firewall rule it added. Needs root and `ip`: a test fails, never skips,
//! without them.

use std::ffi::OsStr;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How a process started in a host is stopped when the hosts are dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDrop {
    /// SIGTERM, and time to stop cleanly (a pgrepl node stops its PostgreSQL), before SIGKILL.
    Terminate,
    /// SIGKILL with everything else left in the namespaces (etcd, once the nodes are gone).
    Kill,
}

pub struct Hosts {
    /// The first three octets of the subnet, such as `10.231.77`.
    prefix: String,
    bridge: String,
    namespaces: Vec<String>,
    /// The bridge end of each host's veth pair (the host's end is `eth0` in its namespace).
    veths: Vec<String>,
    /// Whether an ACCEPT rule for the bridge was added to the FORWARD chain.
    forward_rule: bool,
    children: Mutex<Vec<(Child, OnDrop)>>,
}

/// Runs a setup command that must succeed.
fn ip(args: &[&str]) {
    run("ip", args);
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn quiet(program: &str, args: &[&str]) {
    let _ = Command::new(program).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// Fails the test (never skips it) when network namespaces cannot be made here.
fn check_can_make_namespaces() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests make network namespaces (`ip netns`), veths and a bridge, which needs root: run them as root"
    );
    let found = Command::new("ip").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "these tests need the `ip` command (iproute2) to make network namespaces: install iproute2"
    );
}

/// A third octet for 10.231.X.0/24 that no interface here uses yet.
fn free_subnet() -> u8 {
    let out = Command::new("ip").args(["-o", "-4", "addr"]).output().expect("run ip -o -4 addr");
    let used = String::from_utf8_lossy(&out.stdout).to_string();
    for _ in 0..100 {
        let x = rand::random::<u8>() % 250 + 1;
        if !used.contains(&format!("10.231.{x}.")) {
            return x;
        }
    }
    panic!("found no free 10.231.X.0/24 subnet");
}

impl Hosts {
    /// Makes `n` hosts on a new bridge; the root namespace gets address `.254` on it, so the
    /// test itself reaches every host that is not cut off.
    pub fn create(n: usize) -> Hosts {
        assert!((1..=200).contains(&n));
        check_can_make_namespaces();
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let tag = format!("{:x}{}", std::process::id(), COUNT.fetch_add(1, Ordering::SeqCst));
        let prefix = format!("10.231.{}", free_subnet());
        let mut hosts = Hosts {
            prefix,
            bridge: format!("pgb{tag}"),
            namespaces: Vec::new(),
            veths: Vec::new(),
            forward_rule: false,
            children: Mutex::new(Vec::new()),
        };
        assert!(hosts.bridge.len() <= 15, "interface name {} is too long", hosts.bridge);
        ip(&["link", "add", &hosts.bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{}.254/24", hosts.prefix), "dev", &hosts.bridge]);
        ip(&["link", "set", &hosts.bridge, "up"]);
        // With br_netfilter loaded, bridged packets cross the FORWARD chain, whose policy may be
        // DROP (Docker sets it so): let this bridge's own traffic through.
        let filtered =
            std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables").is_ok_and(|v| v.trim() == "1");
        if filtered {
            run("iptables", &["-I", "FORWARD", "-i", &hosts.bridge, "-o", &hosts.bridge, "-j", "ACCEPT"]);
            hosts.forward_rule = true;
        }
        for i in 0..n {
            let ns = format!("pgrepl-{tag}-h{}", i + 1);
            let veth = format!("pgv{tag}-{}", i + 1);
            assert!(veth.len() <= 15, "interface name {veth} is too long");
            ip(&["netns", "add", &ns]);
            hosts.namespaces.push(ns.clone());
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
            hosts.veths.push(veth.clone());
            ip(&["link", "set", &veth, "master", &hosts.bridge]);
            ip(&["link", "set", &veth, "up"]);
            let addr = format!("{}/24", hosts.addr(i));
            ip(&["netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", "eth0"]);
            ip(&["netns", "exec", &ns, "ip", "link", "set", "eth0", "up"]);
            ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        }
        hosts
    }

    pub fn len(&self) -> usize {
        self.namespaces.len()
    }

    /// Host `i`'s address (hosts count from 0; addresses from `.1`).
    pub fn addr(&self, i: usize) -> IpAddr {
        format!("{}.{}", self.prefix, i + 1).parse().unwrap()
    }

    /// The root namespace's address on the bridge.
    pub fn gateway(&self) -> IpAddr {
        format!("{}.254", self.prefix).parse().unwrap()
    }

    /// The hosts' subnet in CIDR form.
    pub fn cidr(&self) -> String {
        format!("{}.0/24", self.prefix)
    }

    /// The bridge end of host `i`'s veth (in the test's namespace): every packet to or from
    /// host `i` crosses it (the bridge device itself sees only what is flooded or for the test).
    pub fn veth(&self, i: usize) -> &str {
        &self.veths[i]
    }

    pub fn namespace(&self, i: usize) -> &str {
        &self.namespaces[i]
    }

    /// `program` to be run inside host `i` (`ip netns exec`, which execs it: the child's pid
    /// is the program's). Its environment is the caller's; clear what must not leak.
    pub fn command(&self, i: usize, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.namespaces[i]]).arg(program).stdin(Stdio::null());
        cmd
    }

    /// Starts `cmd` (from `command`) and keeps it, to be stopped as `on_drop` says; returns
    /// its pid. The kernel kills it if the test process dies first (unless it changed user).
    pub fn spawn(&self, mut cmd: Command, on_drop: OnDrop) -> i32 {
        // SAFETY: prctl is async-signal-safe and touches only the child's own attributes.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
        let pid = child.id() as i32;
        self.children.lock().unwrap().push((child, on_drop));
        pid
    }

    /// SIGKILLs a process started by `spawn` and reaps it.
    pub fn kill9(&self, pid: i32) {
        let mut children = self.children.lock().unwrap();
        let at = children.iter().position(|(c, _)| c.id() as i32 == pid).expect("a process started by these hosts");
        let (mut child, _) = children.remove(at);
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGTERMs a process started by `spawn` and waits for it to end (SIGKILL after `limit`).
    pub fn terminate(&self, pid: i32, limit: Duration) -> std::process::ExitStatus {
        let mut children = self.children.lock().unwrap();
        let at = children.iter().position(|(c, _)| c.id() as i32 == pid).expect("a process started by these hosts");
        let (mut child, _) = children.remove(at);
        // SAFETY: SIGTERM to a child this test started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let began = std::time::Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if began.elapsed() > limit {
                let _ = child.kill();
                return child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How a process started by `spawn` ended, if it has (it is then forgotten).
    pub fn exited(&self, pid: i32) -> Option<std::process::ExitStatus> {
        let mut children = self.children.lock().unwrap();
        let at = children.iter().position(|(c, _)| c.id() as i32 == pid)?;
        let status = children[at].0.try_wait().ok().flatten()?;
        children.remove(at);
        Some(status)
    }

    /// Cuts host `i` off from every other host and from the test (the bridge end of its veth
    /// goes down); inside, its own address still works.
    pub fn cut(&self, i: usize) {
        ip(&["link", "set", &self.veths[i], "down"]);
    }

    pub fn heal(&self, i: usize) {
        ip(&["link", "set", &self.veths[i], "up"]);
    }

    /// A TCP connection made from inside host `i` (so it works while the host is cut off when
    /// `to` is one of its own addresses). A blocking-pool thread enters the namespace for the
    /// connect and leaves it again, so no other thread's namespace changes.
    pub async fn tcp_in(&self, i: usize, to: SocketAddr, timeout: Duration) -> std::io::Result<tokio::net::TcpStream> {
        let path = format!("/var/run/netns/{}", self.namespaces[i]);
        let stream = tokio::task::spawn_blocking(move || {
            let target = std::fs::File::open(&path)?;
            let home = std::fs::File::open("/proc/thread-self/ns/net")?;
            // SAFETY: setns on descriptors we own; it changes only this thread's namespace, and
            // the thread goes back to its own before it runs anything else.
            if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let stream = std::net::TcpStream::connect_timeout(&to, timeout);
            // SAFETY: as above.
            let back = unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(back, 0, "return to the test's network namespace: {}", std::io::Error::last_os_error());
            stream
        })
        .await
        .expect("the connecting thread panicked")?;
        stream.set_nonblocking(true)?;
        tokio::net::TcpStream::from_std(stream)
    }

    /// A PostgreSQL client on `port` of host `i`, connected from inside host `i`.
    pub async fn sql_in(
        &self,
        i: usize,
        port: u16,
        user: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, String> {
        let to = SocketAddr::new(self.addr(i), port);
        let stream = self
            .tcp_in(i, to, Duration::from_millis(500))
            .await
            .map_err(|e| format!("connect to {to} inside host {i}: {e}"))?;
        let mut config = tokio_postgres::Config::new();
        config.user(user).password(password).dbname("postgres");
        let (client, connection) =
            config.connect_raw(stream, tokio_postgres::NoTls).await.map_err(|e| format!("log in at {to}: {e}"))?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// The pids of every process in host `i`'s namespace.
    pub fn pids(&self, i: usize) -> Vec<i32> {
        let out = Command::new("ip").args(["netns", "pids", &self.namespaces[i]]).output();
        let text = out.map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
        text.split_whitespace().filter_map(|p| p.parse().ok()).collect()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let mut children = std::mem::take(&mut *self.children.lock().unwrap_or_else(|e| e.into_inner()));
        for (child, on_drop) in &children {
            if *on_drop == OnDrop::Terminate {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for (child, on_drop) in &mut children {
            while *on_drop == OnDrop::Terminate && Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for (child, _) in &mut children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Whatever else still runs in a host (a PostgreSQL whose node was killed, say).
        for i in 0..self.namespaces.len() {
            for pid in self.pids(i) {
                // SAFETY: SIGKILL to a process inside a namespace these tests made.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while (0..self.namespaces.len()).any(|i| !self.pids(i).is_empty()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for ns in &self.namespaces {
            quiet("ip", &["netns", "del", ns]);
        }
        for veth in &self.veths {
            quiet("ip", &["link", "del", veth]);
        }
        quiet("ip", &["link", "del", &self.bridge]);
        if self.forward_rule {
            quiet("iptables", &["-D", "FORWARD", "-i", &self.bridge, "-o", &self.bridge, "-j", "ACCEPT"]);
        }
    }
}
