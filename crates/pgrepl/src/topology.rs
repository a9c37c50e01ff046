//! From the cluster view to the router's `Topology`: the primary when the leader runs as one,
//! and the replicas that stream within `ro_max_lag`. Pure, so the router, `status` and
//! `endpoints` all show the same routes for the same view.

use crate::config::validate::MaxLag;
use pgrepl_core::{ClusterView, MemberName, MemberState, MemberStatus, Role};
use pgrepl_router::{Backend, Topology};
use std::net::{IpAddr, SocketAddr};

fn backend(name: &MemberName, status: &MemberStatus) -> Option<Backend> {
    let ip: IpAddr = status.host.parse().ok()?;
    Some(Backend { name: name.to_string(), addr: SocketAddr::new(ip, status.port) })
}

/// True when `member` is within the lag bound; an unknown lag (no primary to compare with)
/// does not exclude a streaming replica.
fn within(view: &ClusterView, member: &MemberName, max: MaxLag) -> bool {
    match max {
        MaxLag::Bytes(max) => view.lag_bytes(member).is_none_or(|lag| lag <= max),
        MaxLag::Time(max) => {
            view.replication_of(member).and_then(|r| r.replay_lag_ms).is_none_or(|ms| u128::from(ms) <= max.as_millis())
        }
    }
}

pub fn from_view(view: &ClusterView, max_lag: MaxLag) -> Topology {
    let rw = view.ready_leader().and_then(|(name, status)| backend(name, status));
    let ro = view
        .members
        .iter()
        .filter(|(_, s)| s.role == Role::Replica && s.state == MemberState::Streaming)
        .filter(|(name, _)| within(view, name, max_lag))
        .filter_map(|(name, status)| backend(name, status))
        .collect();
    Topology { rw, ro }
}

/// One line for logs: where each endpoint routes.
pub fn describe(t: &Topology) -> String {
    let rw = t.rw.as_ref().map_or_else(|| "nobody".to_string(), |b| format!("{} ({})", b.name, b.addr));
    let ro: Vec<String> = t.ro.iter().map(|b| format!("{} ({})", b.name, b.addr)).collect();
    let ro = if ro.is_empty() { "no replica".to_string() } else { ro.join(", ") };
    format!("rw routes to {rw}; ro routes to {ro}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrepl_core::{Lsn, ReplicationRow};
    use std::time::Duration;

    fn status(role: Role, state: MemberState, port: u16, lsn: u64) -> MemberStatus {
        pgrepl_core::testing::status(role, state, port, Lsn(lsn))
    }

    fn view() -> ClusterView {
        let mut v = ClusterView { leader: Some(MemberName::numbered(1)), ..ClusterView::default() };
        let mut primary = status(Role::Primary, MemberState::Running, 5001, 1_000_000);
        primary.replication = vec![ReplicationRow {
            application_name: "node-3".into(),
            client_addr: None,
            state: "streaming".into(),
            flush_lsn: None,
            replay_lsn: None,
            replay_lag_ms: Some(20_000),
            sync_state: None,
        }];
        v.members.insert(MemberName::numbered(1), primary);
        v.members.insert(MemberName::numbered(2), status(Role::Replica, MemberState::Streaming, 5002, 1_000_000));
        v.members.insert(MemberName::numbered(3), status(Role::Replica, MemberState::Streaming, 5003, 1_000));
        v.members.insert(MemberName::numbered(4), status(Role::Replica, MemberState::Recovering, 5004, 1_000_000));
        v
    }

    fn ro_names(t: &Topology) -> Vec<&str> {
        t.ro.iter().map(|b| b.name.as_str()).collect()
    }

    #[test]
    fn rw_is_the_running_leader_and_ro_the_streaming_replicas_within_lag() {
        let t = from_view(&view(), MaxLag::Bytes(16 << 20));
        assert_eq!(t.rw.as_ref().unwrap().addr, "127.0.0.1:5001".parse().unwrap());
        assert_eq!(ro_names(&t), ["node-2", "node-3"]);
        let t = from_view(&view(), MaxLag::Bytes(1000));
        assert_eq!(ro_names(&t), ["node-2"], "node-3 is 999000 bytes behind");
        let t = from_view(&view(), MaxLag::Time(Duration::from_secs(10)));
        assert_eq!(ro_names(&t), ["node-2"], "node-3 replays 20 s behind");
    }

    #[test]
    fn without_a_running_leader_there_is_no_rw_but_replicas_still_serve_reads() {
        let mut v = view();
        v.leader = None;
        let t = from_view(&v, MaxLag::Bytes(1000));
        assert_eq!(t.rw, None);
        assert_eq!(ro_names(&t), ["node-2", "node-3"], "lag is unknown without a primary");
        assert_eq!(describe(&t), "rw routes to nobody; ro routes to node-2 (127.0.0.1:5002), node-3 (127.0.0.1:5003)");
    }

    #[test]
    fn a_server_that_is_about_to_stop_gets_no_new_connection() {
        let mut v = view();
        v.members.get_mut(&MemberName::numbered(1)).unwrap().state = MemberState::Stopping;
        v.members.get_mut(&MemberName::numbered(2)).unwrap().state = MemberState::Stopping;
        let t = from_view(&v, MaxLag::Bytes(16 << 20));
        assert_eq!(t.rw, None, "the leader handing over: new clients wait for its successor");
        assert_eq!(ro_names(&t), ["node-3"]);
    }
}
