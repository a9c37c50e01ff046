//! The `sync` record of synchronous mode and how a leader keeps its promise. The record says
//! "every commit this leader acknowledged is on `quorum` of `members`", and a failover
//! candidate relies on it (`failover::race`), so it may never promise more than holds. Three
//! rules keep it so; the agent carries them out (`act.rs`) and decides none of them:
//!
//! 1. Moving from one set of synchronous replicas to another (`SyncMove`), the leader first
//!    records the union of old and new with the smaller quorum, which holds both before and
//!    after `synchronous_standby_names` changes; only then does it change the names.
//! 2. It narrows the record to the new set only once enough of the new members have flushed
//!    past the position at which the new names took effect (`may_narrow`): every commit
//!    acknowledged before that point is then on them too.
//! 3. A leader's server waits for the names its agent last set, else for what the record
//!    promises (`conf_names`): a leader that starts afresh acknowledges no commit the record
//!    does not cover. A server that does not lead waits for nobody.
//!
//! Which replicas the leader wants is `failover::wanted_sync`'s question, not this module's.
//! Pure: records, names and positions in, records and names out.

use crate::local::ReplicationRow;
use crate::names::Lsn;
use crate::view::SyncRecord;

/// A record that holds both before and after switching from `current` to `wanted`: the union
/// of their members with the smaller quorum. An absent record counts as "nobody".
pub fn union(current: Option<&SyncRecord>, wanted: &SyncRecord) -> SyncRecord {
    let nobody = SyncRecord::default();
    let current = current.unwrap_or(&nobody);
    SyncRecord {
        leader: wanted.leader.clone(),
        members: current.members.union(&wanted.members).cloned().collect(),
        quorum: current.quorum.min(wanted.quorum),
    }
}

/// `synchronous_standby_names` for a record: empty for nobody, `FIRST 1 ("node-2")` for one
/// member, `ANY k ("node-2", "node-3")` for several.
pub fn standby_names(record: &SyncRecord) -> String {
    let quoted: Vec<String> = record.members.iter().map(|m| format!("\"{m}\"")).collect();
    match (record.quorum, quoted.len()) {
        (0, _) | (_, 0) => String::new(),
        (_, 1) => format!("FIRST 1 ({})", quoted[0]),
        (k, _) => format!("ANY {k} ({})", quoted.join(", ")),
    }
}

/// The steps of moving the record and `synchronous_standby_names` from `current` to `wanted`,
/// in this order: write `widen` (when the store's record is not already it), set
/// `standby_names`, then, once `may_narrow` says so, write `narrow`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncMove {
    /// The union of the current and the wanted record, to write first; `None` when the
    /// store's record already is that union.
    pub widen: Option<SyncRecord>,
    /// The names the server waits for from now on: the wanted record's.
    pub standby_names: String,
    /// The wanted record, to write last; `None` when the union already is it (nothing to
    /// narrow: the wanted record takes in every member of the current one).
    pub narrow: Option<SyncRecord>,
}

impl SyncMove {
    pub fn new(current: Option<&SyncRecord>, wanted: &SyncRecord) -> SyncMove {
        let union = union(current, wanted);
        SyncMove {
            widen: (current != Some(&union)).then(|| union.clone()),
            standby_names: standby_names(wanted),
            narrow: (union != *wanted).then(|| wanted.clone()),
        }
    }
}

/// Whether the record may narrow to `to` now: at least `to.quorum` of its members (each
/// counted once, however many rows its walsenders have) have flushed at or past `switched_at`,
/// a position read after the server took `to`'s names. Every commit acknowledged before that
/// position is then on `to.quorum` of them, and every later one waits for them. A record of
/// nobody (quorum 0) promises nothing and may always be written.
pub fn may_narrow(to: &SyncRecord, switched_at: Lsn, rows: &[ReplicationRow]) -> bool {
    let caught_up = to
        .members
        .iter()
        .filter(|m| {
            rows.iter().any(|r| r.application_name == m.as_str() && r.flush_lsn.is_some_and(|f| f >= switched_at))
        })
        .count();
    caught_up >= to.quorum
}

/// `synchronous_standby_names` for this member's configuration file (a start reads it, a
/// reload takes it): a member that does not hold the lease waits for nobody (its server is a
/// replica, or a primary about to be demoted); the leader waits for the names it last set
/// (`last_set`), else, when it has set none since its agent started, for what the `record`
/// promises, else (no record) for nobody, which is safe because then no replica may take over
/// in synchronous mode.
pub fn conf_names(leads: bool, last_set: Option<&str>, record: Option<&SyncRecord>) -> String {
    if !leads {
        return String::new();
    }
    match last_set {
        Some(names) => names.to_string(),
        None => record.map(standby_names).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sync_record as rec;

    #[test]
    fn standby_names_render_each_shape() {
        assert_eq!(standby_names(&rec(&[], 0)), "");
        assert_eq!(standby_names(&rec(&[2, 3], 0)), "");
        assert_eq!(standby_names(&rec(&[2], 1)), "FIRST 1 (\"node-2\")");
        assert_eq!(standby_names(&rec(&[2, 3], 1)), "ANY 1 (\"node-2\", \"node-3\")");
    }

    #[test]
    fn the_union_holds_under_both_records() {
        assert_eq!(union(Some(&rec(&[2], 1)), &rec(&[3], 1)), rec(&[2, 3], 1));
        assert_eq!(union(None, &rec(&[3], 1)), rec(&[3], 0), "no record: nobody was known to hold commits");
        assert_eq!(union(Some(&rec(&[2], 1)), &rec(&[], 0)), rec(&[2], 0));
    }
}
