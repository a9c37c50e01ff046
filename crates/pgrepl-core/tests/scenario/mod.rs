//! The fixtures of the scenario tests of `decide()` (`decide_scenarios.rs`, `invariants.rs`):
//! one observation built from small values, changed by a builder. No mocks.

// Each test binary uses some of these.
#![allow(dead_code, clippy::new_without_default)]

use pgrepl_core::*;

pub const SYSTEM: SystemId = SystemId(7_000_000_000_000_000_001);

pub fn m(n: u32) -> MemberName {
    MemberName::numbered(n)
}

pub fn port(n: u32) -> u16 {
    6000 + n as u16
}

pub fn primary() -> Server {
    Server::Primary { timeline: Timeline(1), lsn: Lsn(0x3000000) }
}

pub fn replica_of(n: Option<u32>, streaming: bool) -> Server {
    Server::Replica {
        timeline: Timeline(1),
        receive_lsn: Lsn(0x3000000),
        replay_lsn: Lsn(0x3000000),
        replay_timeline: Some(Timeline(1)),
        upstream: n.map(|n| Upstream { host: "127.0.0.1".into(), port: port(n) }),
        streaming,
    }
}

pub fn status(n: u32, role: Role, state: MemberState) -> MemberStatus {
    pgrepl_core::testing::status(role, state, port(n), Lsn(0x3000000))
}

/// A three-member cluster, initialized, seen from `node-2`, a stopped standby; nobody leads.
pub struct Scenario(pub Observation);

impl Scenario {
    pub fn new() -> Self {
        let mut spec = Spec { bootstrap: Some(m(1)), ..Spec::default() };
        for n in 1..=3 {
            spec.members.insert(m(n), MemberSpec { host: "127.0.0.1".into(), port: port(n), stopped: false });
        }
        Scenario(Observation {
            me: m(2),
            first_cycle: false,
            destroy_on_restart: false,
            data: DataDir::Standby { system_id: SYSTEM },
            server: Server::Stopped,
            replica_stalled: false,
            replica_not_streaming_long: None,
            applied_passwords: Some(PasswordVersions::default()),
            passfile_password: Some(0),
            stale_secrets: vec![],
            bootstrap_unfinished: false,
            start_overdue: false,
            slots: vec![],
            replication: vec![],
            standby_names: Some(String::new()),
            history: None,
            cluster: ClusterView { system_id: Some(SYSTEM), spec: Some(spec), ..ClusterView::default() },
        })
    }
    pub fn me(mut self, n: u32) -> Self {
        self.0.me = m(n);
        self
    }
    pub fn data(mut self, data: DataDir) -> Self {
        self.0.data = data;
        self
    }
    pub fn server(mut self, server: Server) -> Self {
        self.0.server = server;
        self
    }
    pub fn leader(mut self, n: u32) -> Self {
        self.0.cluster.leader = Some(m(n));
        self
    }
    /// `n` leads and is a running primary holding slots for every other member.
    pub fn ready_leader(mut self, n: u32) -> Self {
        let mut s = status(n, Role::Primary, MemberState::Running);
        s.slots = (1..=3).filter(|k| *k != n).map(|k| m(k).slot_name()).collect();
        self.0.cluster.members.insert(m(n), s);
        self.leader(n)
    }
    pub fn last_leader(mut self, n: u32) -> Self {
        self.0.cluster.last_leader =
            Some(LeaderRecord { member: m(n), timeline: Some(Timeline(1)), history: Some(vec![]) });
        self
    }
    pub fn target(mut self, n: u32) -> Self {
        self.0.cluster.target = Some(m(n));
        self
    }
    /// The cluster is in maintenance mode (`pgrepl pause`).
    pub fn paused(mut self) -> Self {
        self.0.cluster.pause = Some(PauseRecord { since_ms: 1 });
        self
    }
    pub fn streaming(mut self, n: u32) -> Self {
        self.0.cluster.members.insert(m(n), status(n, Role::Replica, MemberState::Streaming));
        self
    }
    pub fn uninitialized(mut self) -> Self {
        self.0.cluster.system_id = None;
        self
    }
    pub fn with(mut self, f: impl FnOnce(&mut Observation)) -> Self {
        f(&mut self.0);
        self
    }
    pub fn decide(&self) -> Decision {
        decide(&self.0)
    }
}

/// Observation of a healthy leader `node-1` with every slot and password in place.
pub fn healthy_leader() -> Scenario {
    Scenario::new()
        .me(1)
        .data(DataDir::Primary { system_id: SYSTEM })
        .server(primary())
        .ready_leader(1)
        .last_leader(1)
        .with(|o| {
            o.slots = vec![Slot { name: "node_2".into(), active: true }, Slot { name: "node_3".into(), active: true }];
            o.history = Some(vec![]);
            o.cluster.sync = Some(SyncRecord { leader: Some(m(1)), ..SyncRecord::default() });
        })
}

/// Long enough without streaming for a restart (the agent's default restart bound).
pub const QUIET: std::time::Duration = std::time::Duration::from_secs(10);

pub fn sync_mode(mode: SyncMode) -> impl FnOnce(&mut Observation) {
    move |o| o.cluster.spec.as_mut().unwrap().failover.synchronous = mode
}

pub fn sync_record(members: &[u32], quorum: usize) -> impl FnOnce(&mut Observation) {
    let members = members.iter().map(|n| m(*n)).collect();
    move |o| o.cluster.sync = Some(SyncRecord { leader: Some(m(1)), members, quorum })
}
