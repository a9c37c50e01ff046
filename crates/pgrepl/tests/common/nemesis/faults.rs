//! The fault menu: what a fault is (`Kind`, its target host, its parameters), how one is drawn
//! from the seeded generator given who is primary, how it is brought about on the real processes
//! and network of a three-host cluster, and how it is healed. It decides nothing about whether
//! the cluster coped: that is the checker's.

use crate::common::three_hosts::{member, Cluster, HOSTS};
use rand::rngs::StdRng;
use rand::Rng;
use std::process::{Command, Stdio};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// kill -9 of the node (agent and router), its fencer and every PostgreSQL process;
    /// healed by starting the node again.
    KillMember,
    /// kill -9 of every PostgreSQL process of the host; the agent is left to restart it.
    KillPostgres,
    /// kill -9 of the node process alone (in `pgrepl node` the agent and router are one
    /// process); healed by starting it again.
    KillAgent,
    /// kill -9 of the member's fencer process alone.
    KillFencer,
    /// SIGSTOP of the node process, SIGCONT at the heal.
    StopAgent,
    /// SIGSTOP of every PostgreSQL process.
    StopPostgres,
    /// SIGSTOP of the node, its fencer and every PostgreSQL process: the whole member frozen.
    StopMember,
    /// Every process of the host killed at once (node, PostgreSQL, etcd member), then etcd and
    /// the node started again.
    PowerLoss,
    /// The primary's host cut off from every other host (its veth's bridge end down).
    CutPrimary,
    /// The primary's host cannot reach any etcd client port (its own member's included).
    CutPrimaryFromEtcd,
    /// The primary's PostgreSQL port and the replicas' cannot reach each other.
    CutPrimaryFromReplicas,
    /// Only the packets arriving at the primary's host are dropped, or only those leaving it.
    CutPrimaryOneWay,
    /// An etcd member killed (kill -9), started again at the heal.
    KillEtcd,
    /// An etcd member stopped (SIGSTOP).
    StopEtcd,
    /// Two of the three etcd members killed or stopped.
    EtcdMajorityLost,
    /// The primary's link slowed (a token bucket: `tc netem` is not in this kernel).
    SlowPrimary,
    /// A share of the primary's packets dropped both ways (iptables `statistic`).
    LossyPrimary,
}

pub const KINDS: [Kind; 17] = [
    Kind::KillMember,
    Kind::KillPostgres,
    Kind::KillAgent,
    Kind::KillFencer,
    Kind::StopAgent,
    Kind::StopPostgres,
    Kind::StopMember,
    Kind::PowerLoss,
    Kind::CutPrimary,
    Kind::CutPrimaryFromEtcd,
    Kind::CutPrimaryFromReplicas,
    Kind::CutPrimaryOneWay,
    Kind::KillEtcd,
    Kind::StopEtcd,
    Kind::EtcdMajorityLost,
    Kind::SlowPrimary,
    Kind::LossyPrimary,
];

/// What a fault may be paired with: a second, smaller fault on another host.
const SECOND: [Kind; 7] = [
    Kind::KillPostgres,
    Kind::KillAgent,
    Kind::KillFencer,
    Kind::StopAgent,
    Kind::StopPostgres,
    Kind::KillEtcd,
    Kind::StopEtcd,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

#[derive(Clone, Debug)]
pub struct Fault {
    pub kind: Kind,
    pub host: usize,
    pub role: Role,
    /// `EtcdMajorityLost`: the second host; `CutPrimaryOneWay`: 0 in, 1 out.
    pub other: usize,
    /// `EtcdMajorityLost`: stopped rather than killed; `SlowPrimary`: the rate in kbit/s;
    /// `LossyPrimary`: the percentage dropped.
    pub amount: u32,
}

impl Fault {
    /// What the fault is, for the report's rows (its target's role, never its host).
    pub fn label(&self) -> String {
        let role = match self.role {
            Role::Primary => "primary",
            Role::Replica => "replica",
        };
        match self.kind {
            Kind::KillMember => format!("kill -9 member ({role})"),
            Kind::KillPostgres => format!("kill -9 PostgreSQL ({role})"),
            Kind::KillAgent => format!("kill -9 agent ({role})"),
            Kind::KillFencer => format!("kill -9 fencer ({role})"),
            Kind::StopAgent => format!("SIGSTOP agent ({role})"),
            Kind::StopPostgres => format!("SIGSTOP PostgreSQL ({role})"),
            Kind::StopMember => format!("SIGSTOP agent + PostgreSQL ({role})"),
            Kind::PowerLoss => format!("power loss of a host ({role})"),
            Kind::CutPrimary => "primary cut off from everyone".into(),
            Kind::CutPrimaryFromEtcd => "primary cut off from etcd".into(),
            Kind::CutPrimaryFromReplicas => "primary cut off from the replicas".into(),
            Kind::CutPrimaryOneWay => {
                format!("primary cut one way ({})", if self.other == 0 { "in" } else { "out" })
            }
            Kind::KillEtcd => format!("kill -9 etcd member ({role}'s host)"),
            Kind::StopEtcd => format!("SIGSTOP etcd member ({role}'s host)"),
            Kind::EtcdMajorityLost => {
                format!("etcd majority lost ({})", if self.amount == 1 { "stopped" } else { "killed" })
            }
            Kind::SlowPrimary => "slow link on the primary (tbf)".into(),
            Kind::LossyPrimary => "packet loss on the primary".into(),
        }
    }

    /// The parameters that the label leaves out, for the detailed log.
    pub fn detail(&self) -> String {
        match self.kind {
            Kind::EtcdMajorityLost => format!("hosts {} and {}", self.host + 1, self.other + 1),
            Kind::SlowPrimary => format!("host {}, {} kbit/s", self.host + 1, self.amount),
            Kind::LossyPrimary => format!("host {}, {}% dropped", self.host + 1, self.amount),
            _ => format!("host {}", self.host + 1),
        }
    }
}

/// One round of the nemesis: one or two faults, held, optionally with a switchover started
/// during them.
#[derive(Clone, Debug)]
pub struct Plan {
    pub faults: Vec<Fault>,
    pub hold: Duration,
    /// When during the hold a `pgrepl switchover` is started.
    pub switchover: Option<Duration>,
}

impl Plan {
    pub fn label(&self) -> String {
        let names: Vec<String> = self.faults.iter().map(Fault::label).collect();
        let mut label = names.join(" + ");
        if self.switchover.is_some() {
            label.push_str(" + switchover");
        }
        label
    }

    /// The hosts whose network or processes a fault touches.
    pub fn touched(&self) -> Vec<usize> {
        let mut hosts: Vec<usize> = self.faults.iter().map(|f| f.host).collect();
        hosts.extend(self.faults.iter().filter(|f| f.kind == Kind::EtcdMajorityLost).map(|f| f.other));
        hosts
    }
}

/// Draws the next round: the target by role from who is primary now.
pub fn draw(rng: &mut StdRng, primary: usize) -> Plan {
    let kind = KINDS[rng.gen_range(0..KINDS.len())];
    let first = draw_fault(rng, kind, primary, None);
    let mut faults = vec![first];
    let alone = matches!(kind, Kind::EtcdMajorityLost | Kind::PowerLoss | Kind::CutPrimary);
    if !alone && rng.gen_bool(0.2) {
        let kind = SECOND[rng.gen_range(0..SECOND.len())];
        let second = draw_fault(rng, kind, primary, Some(faults[0].host));
        faults.push(second);
    }
    let hold = Duration::from_millis(rng.gen_range(1_000..=15_000));
    let switchover = (faults.len() == 1 && kind != Kind::EtcdMajorityLost && rng.gen_bool(0.12))
        .then(|| hold.mul_f64(rng.gen_range(0.1..0.6)));
    Plan { faults, hold, switchover }
}

fn draw_fault(rng: &mut StdRng, kind: Kind, primary: usize, not_on: Option<usize>) -> Fault {
    let replicas: Vec<usize> = (0..HOSTS).filter(|h| *h != primary && Some(*h) != not_on).collect();
    let on_primary = match kind {
        Kind::CutPrimary
        | Kind::CutPrimaryFromEtcd
        | Kind::CutPrimaryFromReplicas
        | Kind::CutPrimaryOneWay
        | Kind::SlowPrimary
        | Kind::LossyPrimary => true,
        _ => not_on != Some(primary) && rng.gen_bool(0.6),
    };
    let host = if on_primary { primary } else { replicas[rng.gen_range(0..replicas.len())] };
    let role = if host == primary { Role::Primary } else { Role::Replica };
    let (other, amount) = match kind {
        Kind::EtcdMajorityLost => ((host + rng.gen_range(1..HOSTS)) % HOSTS, u32::from(rng.gen_bool(0.5))),
        Kind::CutPrimaryOneWay => (rng.gen_range(0..2), 0),
        Kind::SlowPrimary => (0, [256, 512, 1024][rng.gen_range(0..3)]),
        Kind::LossyPrimary => (0, rng.gen_range(5..=30)),
        _ => (0, 0),
    };
    Fault { kind, host, role, other, amount }
}

/// What must be undone at the heal.
pub struct Applied {
    fault: Fault,
    /// Processes sent SIGSTOP, to be sent SIGCONT.
    stopped: Vec<i32>,
    restart_node: bool,
    restart_etcd: Vec<usize>,
    network: bool,
}

/// Every PostgreSQL process of host `i` (postmaster, backends, WAL senders and receivers...).
fn postgres_pids(c: &Cluster, i: usize) -> Vec<i32> {
    c.hosts
        .pids(i)
        .into_iter()
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "postgres"))
        .collect()
}

/// The fencer process of host `i`'s member (`pgrepl fencer`, started by its agent).
fn fencer_pids(c: &Cluster, i: usize) -> Vec<i32> {
    c.hosts
        .pids(i)
        .into_iter()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.split(|b| *b == 0).any(|arg| arg == b"fencer")
        })
        .collect()
}

fn signal(pids: &[i32], sig: i32) {
    for pid in pids {
        // SAFETY: a signal to a process of a host these tests made.
        unsafe { libc::kill(*pid, sig) };
    }
}

/// Runs `args` inside host `i`; it must succeed.
fn inside(c: &Cluster, i: usize, args: &[&str]) {
    let out = c.hosts.command(i, args[0]).args(&args[1..]).stdout(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{args:?} in host {i}: {}", String::from_utf8_lossy(&out.stderr));
}

fn kill_node(c: &mut Cluster, i: usize) {
    if let Some(pid) = c.nodes[i].take() {
        c.hosts.kill9(pid);
    }
}

/// The node, its fencer and its PostgreSQL, with kill -9.
fn kill_member(c: &mut Cluster, i: usize) {
    let rest: Vec<i32> = fencer_pids(c, i).into_iter().chain(postgres_pids(c, i)).collect();
    kill_node(c, i);
    signal(&rest, libc::SIGKILL);
}

fn kill_etcd(c: &mut Cluster, i: usize) {
    if let Some(pid) = c.etcd[i].take() {
        c.hosts.kill9(pid);
    }
}

pub fn apply(c: &mut Cluster, fault: &Fault) -> Applied {
    let mut applied =
        Applied { fault: fault.clone(), stopped: vec![], restart_node: false, restart_etcd: vec![], network: false };
    let i = fault.host;
    let others: Vec<usize> = (0..HOSTS).filter(|h| *h != i).collect();
    match fault.kind {
        Kind::KillMember => {
            kill_member(c, i);
            applied.restart_node = true;
        }
        Kind::KillFencer => signal(&fencer_pids(c, i), libc::SIGKILL),
        Kind::KillPostgres => signal(&postgres_pids(c, i), libc::SIGKILL),
        Kind::KillAgent => {
            kill_node(c, i);
            applied.restart_node = true;
        }
        Kind::StopAgent => applied.stopped = c.nodes[i].into_iter().collect(),
        Kind::StopPostgres => applied.stopped = postgres_pids(c, i),
        Kind::StopMember => {
            applied.stopped = c.nodes[i].into_iter().chain(fencer_pids(c, i)).chain(postgres_pids(c, i)).collect();
        }
        Kind::PowerLoss => {
            // Every process at once first, then the bookkeeping (which reaps them).
            signal(&c.hosts.pids(i), libc::SIGKILL);
            kill_node(c, i);
            kill_etcd(c, i);
            applied.restart_node = true;
            applied.restart_etcd = vec![i];
        }
        Kind::CutPrimary => {
            c.hosts.cut(i);
            applied.network = true;
        }
        Kind::CutPrimaryFromEtcd => {
            inside(c, i, &["iptables", "-A", "OUTPUT", "-p", "tcp", "--dport", "2379", "-j", "DROP"]);
            applied.network = true;
        }
        Kind::CutPrimaryFromReplicas => {
            for o in &others {
                let addr = c.hosts.addr(*o).to_string();
                inside(c, i, &["iptables", "-A", "INPUT", "-p", "tcp", "-s", &addr, "--dport", "5432", "-j", "DROP"]);
                inside(c, i, &["iptables", "-A", "INPUT", "-p", "tcp", "-s", &addr, "--sport", "5432", "-j", "DROP"]);
                inside(c, i, &["iptables", "-A", "OUTPUT", "-p", "tcp", "-d", &addr, "--dport", "5432", "-j", "DROP"]);
                inside(c, i, &["iptables", "-A", "OUTPUT", "-p", "tcp", "-d", &addr, "--sport", "5432", "-j", "DROP"]);
            }
            applied.network = true;
        }
        Kind::CutPrimaryOneWay => {
            let (chain, dir) = if fault.other == 0 { ("INPUT", "-i") } else { ("OUTPUT", "-o") };
            inside(c, i, &["iptables", "-A", chain, dir, "eth0", "-j", "DROP"]);
            applied.network = true;
        }
        Kind::KillEtcd => {
            kill_etcd(c, i);
            applied.restart_etcd = vec![i];
        }
        Kind::StopEtcd => applied.stopped = c.etcd[i].into_iter().collect(),
        Kind::EtcdMajorityLost => {
            for h in [i, fault.other] {
                if fault.amount == 1 {
                    applied.stopped.extend(c.etcd[h]);
                } else {
                    kill_etcd(c, h);
                    applied.restart_etcd.push(h);
                }
            }
        }
        Kind::SlowPrimary => {
            let rate = format!("{}kbit", fault.amount);
            inside(
                c,
                i,
                &[
                    "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", &rate, "burst", "16kbit", "latency",
                    "400ms",
                ],
            );
            applied.network = true;
        }
        Kind::LossyPrimary => {
            let p = format!("{:.2}", f64::from(fault.amount) / 100.0);
            for (chain, dir) in [("INPUT", "-i"), ("OUTPUT", "-o")] {
                let rule = [
                    "iptables",
                    "-A",
                    chain,
                    dir,
                    "eth0",
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                    "-j",
                    "DROP",
                ];
                inside(c, i, &rule);
            }
            applied.network = true;
        }
    }
    signal(&applied.stopped, libc::SIGSTOP);
    applied
}

pub fn heal(c: &mut Cluster, applied: Applied) {
    let i = applied.fault.host;
    signal(&applied.stopped, libc::SIGCONT);
    if applied.network {
        match applied.fault.kind {
            Kind::CutPrimary => c.hosts.heal(i),
            Kind::SlowPrimary => inside(c, i, &["tc", "qdisc", "del", "dev", "eth0", "root"]),
            _ => inside(c, i, &["iptables", "-F"]),
        }
    }
    for h in applied.restart_etcd {
        c.start_etcd_member(h);
    }
    if applied.restart_node {
        c.start_node(i);
    }
}

/// What an operator does with a replica that will not rejoin: its node and PostgreSQL stopped,
/// its data directory removed, the node started again (which clones it afresh).
pub fn reclone(c: &mut Cluster, i: usize) {
    kill_member(c, i);
    let data = c.dir(i).join(format!("members/{}/data", member(i)));
    std::fs::remove_dir_all(&data).unwrap_or_else(|e| panic!("remove {}: {e}", data.display()));
    c.start_node(i);
}

/// `pgrepl switchover` started from host `from`, in the background.
pub fn start_switchover(c: &Cluster, from: usize) -> std::process::Child {
    let mut cmd: Command = c.pgrepl(from);
    cmd.args(["switchover", "--wait", "30"]).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().unwrap()
}
