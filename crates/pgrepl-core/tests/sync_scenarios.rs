//! Scenario tests of the `sync` record's rules (`pgrepl_core::sync`): the record a leader
//! writes must hold at every moment ("every acknowledged commit is on `quorum` of `members`"),
//! or a failover could lose an acknowledged commit. A small model of a primary and its
//! replicas' flushed positions checks it through every step of a move, under every order in
//! which the replicas may catch up. The model's one assumption, as in PostgreSQL: once the
//! server has taken new `synchronous_standby_names`, a commit is acknowledged only when the
//! standbys those names list have flushed it.

use pgrepl_core::sync::{self, SyncMove};
use pgrepl_core::{Lsn, MemberName, ReplicationRow, SyncRecord};
use std::collections::{BTreeMap, BTreeSet};

fn m(n: u32) -> MemberName {
    MemberName::numbered(n)
}

fn rec(members: &[u32], quorum: usize) -> SyncRecord {
    SyncRecord { leader: Some(m(1)), members: members.iter().map(|n| m(*n)).collect(), quorum }
}

fn row(n: u32, flush: Option<u64>) -> ReplicationRow {
    ReplicationRow {
        application_name: m(n).to_string(),
        client_addr: None,
        state: "streaming".into(),
        flush_lsn: flush.map(Lsn),
        replay_lsn: None,
        replay_lag_ms: None,
        sync_state: None,
    }
}

/// What `synchronous_standby_names` makes a commit wait for: `k` of the names (`0`: nothing).
/// Reads the three shapes `sync::standby_names` writes.
fn waits_for(names: &str) -> (usize, BTreeSet<String>) {
    if names.is_empty() {
        return (0, BTreeSet::new());
    }
    let (head, list) = names.split_once(" (").expect("a list");
    let k = head.rsplit(' ').next().unwrap().parse().unwrap();
    let members = list.trim_end_matches(')').split(", ").map(|q| q.trim_matches('"').to_string()).collect();
    (k, members)
}

/// A primary, its replicas' flushed positions and the commits it acknowledged.
struct Primary {
    lsn: u64,
    flushed: BTreeMap<String, u64>,
    names: String,
    acked: Vec<u64>,
    record: Option<SyncRecord>,
}

impl Primary {
    fn new(record: Option<SyncRecord>) -> Primary {
        let names = record.as_ref().map(sync::standby_names).unwrap_or_default();
        let flushed = (2..=4).map(|n| (m(n).to_string(), 0)).collect();
        Primary { lsn: 0, flushed, names, acked: vec![], record }
    }

    /// One commit, with the replicas in `catching_up` (a bit per member 2..=4) flushing all
    /// WAL so far; acknowledged when the names are satisfied.
    fn commit(&mut self, catching_up: u8) {
        self.lsn += 1;
        for (i, n) in (2..=4).enumerate() {
            if catching_up & (1 << i) != 0 {
                self.flushed.insert(m(n).to_string(), self.lsn);
            }
        }
        let (k, members) = waits_for(&self.names);
        let on = members.iter().filter(|s| self.flushed.get(*s).is_some_and(|f| *f >= self.lsn)).count();
        if on >= k {
            self.acked.push(self.lsn);
        }
    }

    fn rows(&self) -> Vec<ReplicationRow> {
        (2..=4).map(|n| row(n, Some(self.flushed[&m(n).to_string()]))).collect()
    }

    /// Whether the store's record holds: every acknowledged commit is on `quorum` of its members.
    fn record_holds(&self) -> bool {
        let Some(record) = &self.record else { return true };
        record.quorum == 0
            || self.acked.iter().all(|lsn| {
                record.members.iter().filter(|m| self.flushed.get(m.as_str()).is_some_and(|f| f >= lsn)).count()
                    >= record.quorum
            })
    }
}

/// Moves a primary from the record `current` to `wanted` as the agent does, a commit (with the
/// replicas in the next element of `rounds` catching up) after each step, checking the record
/// after each.
fn walk(current: Option<SyncRecord>, wanted: &SyncRecord, rounds: [u8; 4]) -> Result<(), String> {
    let mut p = Primary::new(current.clone());
    let check = |p: &Primary, at: &str| match p.record_holds() {
        true => Ok(()),
        false => Err(format!("{current:?} -> {wanted:?}, rounds {rounds:?}: the record broke {at}: {:?}", p.record)),
    };
    p.commit(rounds[0]);
    check(&p, "before the move")?;
    let steps = SyncMove::new(p.record.as_ref(), wanted);
    if let Some(union) = steps.widen {
        p.record = Some(union);
    }
    p.commit(rounds[1]);
    check(&p, "once widened")?;
    p.names = steps.standby_names;
    let switched_at = Lsn(p.lsn);
    p.commit(rounds[2]);
    check(&p, "once the names changed")?;
    // The agent tries to narrow, and a later cycle tries again.
    let narrow = |p: &mut Primary| {
        if let Some(narrow) = steps.narrow.as_ref().filter(|n| sync::may_narrow(n, switched_at, &p.rows())) {
            p.record = Some(narrow.clone());
        }
    };
    narrow(&mut p);
    p.commit(rounds[3]);
    check(&p, "after narrowing")?;
    narrow(&mut p);
    check(&p, "after narrowing in a later cycle")
}

/// The records a leader moves between: nobody, one synchronous replica (mode `on`), any one
/// of several (mode `quorum`), and, beyond what `wanted_sync` asks today, two of three.
fn records() -> Vec<SyncRecord> {
    vec![
        rec(&[], 0),
        rec(&[2], 1),
        rec(&[3], 1),
        rec(&[2, 3], 1),
        rec(&[3, 4], 1),
        rec(&[2, 3, 4], 1),
        rec(&[2, 3, 4], 2),
        rec(&[2, 3], 0),
    ]
}

#[test]
fn every_move_between_records_keeps_the_record_true_whatever_order_replicas_catch_up_in() {
    let mut walks = 0;
    let currents = std::iter::once(None).chain(records().into_iter().map(Some));
    for current in currents {
        for wanted in records() {
            for r in 0..8u32.pow(4) {
                let rounds = [0, 1, 2, 3].map(|i| ((r >> (3 * i)) & 7) as u8);
                walk(current.clone(), &wanted, rounds).unwrap_or_else(|e| panic!("{e}"));
                walks += 1;
            }
        }
    }
    assert_eq!(walks, 9 * 8 * 8usize.pow(4));
}

#[test]
fn a_move_widens_first_and_narrows_only_when_there_is_something_to_drop() {
    let steps = SyncMove::new(Some(&rec(&[2], 1)), &rec(&[3], 1));
    assert_eq!(steps.widen, Some(rec(&[2, 3], 1)), "old and new both listed while the names change");
    assert_eq!(steps.standby_names, "FIRST 1 (\"node-3\")");
    assert_eq!(steps.narrow, Some(rec(&[3], 1)));
    // Already widened by an earlier cycle that could not narrow yet: no write, only the narrowing.
    let again = SyncMove::new(Some(&rec(&[2, 3], 1)), &rec(&[3], 1));
    assert_eq!((again.widen, again.narrow), (None, Some(rec(&[3], 1))));
    // Growing the set drops nobody: one write, no narrowing.
    let grow = SyncMove::new(Some(&rec(&[2], 1)), &rec(&[2, 3], 1));
    assert_eq!((grow.widen, grow.narrow), (Some(rec(&[2, 3], 1)), None));
    // Nothing to do.
    let same = SyncMove::new(Some(&rec(&[2], 1)), &rec(&[2], 1));
    assert_eq!((same.widen, same.narrow), (None, None));
}

#[test]
fn without_a_record_the_first_one_written_promises_nothing_until_narrowed() {
    // A leader that finds no record (the store lost it, or synchronous mode was just turned on)
    // cannot know who holds what it acknowledged so far: the union says nobody (quorum 0).
    let steps = SyncMove::new(None, &rec(&[2], 1));
    assert_eq!(steps.widen, Some(rec(&[2], 0)));
    assert_eq!(steps.widen.unwrap().reports_needed(), 2, "one member can never prove itself: nobody races");
    assert_eq!(steps.narrow, Some(rec(&[2], 1)));
}

#[test]
fn a_record_narrows_only_once_a_new_member_flushed_past_the_switch() {
    let to = rec(&[3], 1);
    let at = Lsn(100);
    assert!(!sync::may_narrow(&to, at, &[]), "nobody streams");
    assert!(!sync::may_narrow(&to, at, &[row(3, Some(99))]), "behind the switch");
    assert!(!sync::may_narrow(&to, at, &[row(3, None)]), "no flush reported");
    assert!(!sync::may_narrow(&to, at, &[row(2, Some(500))]), "only a member being dropped is past it");
    assert!(!sync::may_narrow(&to, at, &[row(4, Some(500))]), "nor one outside the record");
    assert!(sync::may_narrow(&to, at, &[row(2, Some(50)), row(3, Some(100))]), "at the switch");
    assert!(sync::may_narrow(&to, at, &[row(3, Some(101))]));
}

#[test]
fn a_member_with_two_walsenders_counts_once_towards_a_quorum() {
    // A replica that reconnected may show twice in pg_stat_replication while its old
    // walsender ends: it holds the commits once, not twice.
    let to = rec(&[2, 3, 4], 2);
    let at = Lsn(100);
    assert!(!sync::may_narrow(&to, at, &[row(2, Some(120)), row(2, Some(110)), row(3, Some(90))]));
    assert!(sync::may_narrow(&to, at, &[row(2, Some(120)), row(3, Some(100))]));
}

#[test]
fn a_record_of_nobody_may_always_be_written() {
    // It promises nothing: no replica may take over under it (`reports_needed` exceeds them).
    assert!(sync::may_narrow(&rec(&[], 0), Lsn(100), &[]));
    assert_eq!(rec(&[], 0).reports_needed(), 1, "and nobody is in it to report");
}

#[test]
fn a_member_that_does_not_lead_waits_for_nobody() {
    for record in records() {
        assert_eq!(sync::conf_names(false, Some("FIRST 1 (\"node-3\")"), Some(&record)), "");
        assert_eq!(sync::conf_names(false, None, Some(&record)), "");
    }
}

#[test]
fn a_leader_keeps_the_names_it_last_set() {
    // Say it set node-3 while the record is still the union of node-2 and node-3 (it could not
    // narrow yet): a restarted server waits for node-3 again, which the union covers.
    let names = sync::conf_names(true, Some("FIRST 1 (\"node-3\")"), Some(&rec(&[2, 3], 1)));
    assert_eq!(names, "FIRST 1 (\"node-3\")");
    // Just promoted: it claimed the record (nobody) and set no names.
    assert_eq!(sync::conf_names(true, Some(""), Some(&rec(&[], 0))), "");
}

/// A leader whose agent has just started (it set no names yet) starts its server waiting for
/// what the record promises: every commit it acknowledges is then on `quorum` of the record's
/// members. A record that names members with a quorum blocks every commit until one of them
/// has flushed it; a record of nobody, or none at all, blocks nothing, and then no replica may
/// take over in synchronous mode (`in_synchronous_mode_only_a_recorded_replica_may_take_over`).
#[test]
fn a_leader_starting_afresh_waits_for_what_its_record_promises() {
    for record in records() {
        let (k, names) = waits_for(&sync::conf_names(true, None, Some(&record)));
        let listed: BTreeSet<String> = record.members.iter().map(|m| m.to_string()).collect();
        if record.quorum == 0 || record.members.is_empty() {
            assert_eq!(k, 0, "{record:?}");
        } else {
            assert!(k >= record.quorum && k > 0, "{record:?} waits for {k}");
            assert!(names.is_subset(&listed) && names.len() >= record.quorum, "{record:?} waits for {names:?}");
        }
    }
    assert_eq!(sync::conf_names(true, None, None), "", "no record: nothing promised, nothing waited for");
}
