//! Test support: small values for tests of this crate and of the crates above it.

use crate::names::{Lsn, MemberName, Timeline};
use crate::spec::{MemberSpec, Spec};
use crate::view::{ClusterView, MemberState, MemberStatus, Role, SyncRecord};

/// A member's status on 127.0.0.1:`port`, timeline 1, at `lsn`, with nothing else set.
pub fn status(role: Role, state: MemberState, port: u16, lsn: Lsn) -> MemberStatus {
    MemberStatus {
        role,
        state,
        host: "127.0.0.1".into(),
        port,
        timeline: Some(Timeline(1)),
        lsn: Some(lsn),
        receive_lsn: None,
        replay_timeline: None,
        history: None,
        warning: None,
        decision: String::new(),
        pending_restart: vec![],
        restarted_for: None,
        reloaded_ms: None,
        replication: vec![],
        slots: vec![],
        applied_passwords: None,
        stale_secrets: vec![],
        leader: None,
        paused: false,
        api: None,
        tls_not_after_unix: None,
        updated_ms: 0,
    }
}

/// Three members on hosts `10.0.0.1` to `10.0.0.3` (port 5432): `node-1` leads as a running
/// primary, `node-2` and `node-3` stream; nothing else set.
pub fn three_members() -> ClusterView {
    let mut spec = Spec::default();
    let mut view = ClusterView { leader: Some(MemberName::numbered(1)), ..ClusterView::default() };
    for k in 1..=3 {
        let name = MemberName::numbered(k);
        spec.members.insert(name.clone(), MemberSpec { host: format!("10.0.0.{k}"), port: 5432, stopped: false });
        let (role, state) =
            if k == 1 { (Role::Primary, MemberState::Running) } else { (Role::Replica, MemberState::Streaming) };
        view.members.insert(name, status(role, state, 5432, Lsn(1)));
    }
    view.spec = Some(spec);
    view
}

/// A sync record of no leader with members `node-N` for each N in `members`, and `quorum`.
pub fn sync_record(members: &[u32], quorum: usize) -> SyncRecord {
    SyncRecord { leader: None, members: members.iter().map(|n| MemberName::numbered(*n)).collect(), quorum }
}
