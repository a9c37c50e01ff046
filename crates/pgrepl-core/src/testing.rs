//! Test support: small values for tests of this crate and of the crates above it.

use crate::names::{Lsn, Timeline};
use crate::view::{MemberState, MemberStatus, Role};

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
