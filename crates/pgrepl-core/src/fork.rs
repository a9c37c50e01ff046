//! Timeline forks: whether a replica's replayed WAL still lies on the leader's history. A
//! promotion starts a new timeline at a switch point; a replica that replayed its old timeline
//! past that point holds WAL the new timeline never had, and PostgreSQL will not follow it
//! ("new timeline forked off current database system timeline before current recovery point").
//! The timeline number alone cannot tell (a replica fetches the new timeline's history file
//! while it tries); the switch points of the leader's history can. Pure: parsing and comparing.

use crate::names::{Lsn, Timeline};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One line of a timeline history file: `timeline` ended at `end`, where its child began.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineSwitch {
    pub timeline: Timeline,
    pub end: Lsn,
}

/// A timeline history file (`pg_wal/0000000N.history`) that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("timeline history line {line} is not `<timeline> <switch point> <reason>`: {text:?}")]
pub struct BadHistory {
    pub line: usize,
    pub text: String,
}

/// The switch points of a timeline history file, oldest first: each line is the parent
/// timeline, the position where it ended, and a free-text reason; `#` comments and blank
/// lines are skipped.
pub fn parse_history(text: &str) -> Result<Vec<TimelineSwitch>, BadHistory> {
    let mut switches = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || BadHistory { line: i + 1, text: raw.to_string() };
        let mut fields = line.split_whitespace();
        let timeline = fields.next().and_then(|t| t.parse().ok()).map(Timeline).ok_or_else(bad)?;
        let end = fields.next().and_then(|l| l.parse().ok()).ok_or_else(bad)?;
        switches.push(TimelineSwitch { timeline, end });
    }
    Ok(switches)
}

/// Where a member's replayed WAL lies: the timeline of its last replayed record, how far it
/// got, and the switch points of that timeline's history file when known (its own line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replayed<'a> {
    pub timeline: Timeline,
    pub lsn: Lsn,
    pub history: Option<&'a [TimelineSwitch]>,
}

/// Proof that a replica's replayed WAL has left the leader's line (the leader being on
/// `leader_timeline`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fork {
    /// It replayed `timeline` past `left_at`, where the leader's line left that timeline.
    PastSwitch { timeline: Timeline, replayed: Lsn, leader_timeline: Timeline, left_at: Lsn },
    /// It replayed a timeline the leader's line never had (a sibling branch, or a newer one).
    Outside { timeline: Timeline, replayed: Lsn, leader_timeline: Timeline },
    /// Its own line left `ancestor` at `mine`, the leader's at `theirs` (or never had it): two
    /// branches that share a timeline number (a promotion that had not seen the newer history).
    OtherBranch {
        timeline: Timeline,
        replayed: Lsn,
        leader_timeline: Timeline,
        ancestor: Timeline,
        mine: Lsn,
        theirs: Option<Lsn>,
    },
}

/// Whether `replica`'s replayed WAL is off the line of a leader on `leader_timeline` whose
/// history file lists `history`. Only a proof counts: on the leader's own timeline, or on one of
/// its ancestors up to the point where the leader's line left it, the replica can still follow
/// (it may just be behind). The replica's own history, when given, must agree with the
/// leader's on every ancestor it names.
pub fn fork(replica: Replayed<'_>, leader_timeline: Timeline, history: &[TimelineSwitch]) -> Option<Fork> {
    let Replayed { timeline, lsn: replayed, history: own } = replica;
    for mine in own.unwrap_or_default() {
        let theirs = history.iter().find(|s| s.timeline == mine.timeline).map(|s| s.end);
        if mine.timeline == leader_timeline {
            // Its line went through the leader's timeline and on: newer than the leader.
            return Some(Fork::Outside { timeline, replayed, leader_timeline });
        }
        if theirs != Some(mine.end) {
            let (ancestor, mine) = (mine.timeline, mine.end);
            return Some(Fork::OtherBranch { timeline, replayed, leader_timeline, ancestor, mine, theirs });
        }
    }
    if timeline == leader_timeline {
        return None;
    }
    match history.iter().find(|s| s.timeline == timeline) {
        Some(s) if replayed > s.end => Some(Fork::PastSwitch { timeline, replayed, leader_timeline, left_at: s.end }),
        Some(_) => None,
        None => Some(Fork::Outside { timeline, replayed, leader_timeline }),
    }
}

impl fmt::Display for Fork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Fork::PastSwitch { timeline, replayed, leader_timeline, left_at } => write!(
                f,
                "it replayed timeline {timeline} up to {replayed}, past {left_at} where timeline {leader_timeline} forked from it"
            ),
            Fork::Outside { timeline, replayed, leader_timeline } => write!(
                f,
                "it replayed timeline {timeline} up to {replayed}, and timeline {leader_timeline}'s history never passed through timeline {timeline}"
            ),
            Fork::OtherBranch { timeline, replayed, leader_timeline, ancestor, mine, theirs } => {
                write!(f, "it replayed timeline {timeline} up to {replayed} on a line that left timeline {ancestor} at {mine}, ")?;
                match theirs {
                    Some(theirs) => write!(f, "where timeline {leader_timeline}'s line left it at {theirs}"),
                    None => write!(f, "which timeline {leader_timeline}'s line never passed through"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switch(timeline: u32, end: u64) -> TimelineSwitch {
        TimelineSwitch { timeline: Timeline(timeline), end: Lsn(end) }
    }

    /// Replayed `timeline` to `lsn`, its own history unknown.
    fn at(timeline: u32, lsn: u64) -> Replayed<'static> {
        Replayed { timeline: Timeline(timeline), lsn: Lsn(lsn), history: None }
    }

    #[test]
    fn a_history_file_parses_as_postgresql_writes_it() {
        let text = "1\t0/5020688\tno recovery target specified\n\n# a comment\n2\t0/6000000\tbefore 2026-01-01\n";
        assert_eq!(parse_history(text), Ok(vec![switch(1, 0x5020688), switch(2, 0x6000000)]));
        assert_eq!(parse_history(""), Ok(vec![]));
        let err = parse_history("1\t0/5020688\treason\nnonsense\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(parse_history("1 not-an-lsn").is_err());
    }

    #[test]
    fn a_replica_past_the_switch_point_of_its_timeline_has_forked() {
        let history = [switch(1, 0x5020688)];
        let forked = fork(at(1, 0x50206F8), Timeline(2), &history);
        assert_eq!(
            forked,
            Some(Fork::PastSwitch {
                timeline: Timeline(1),
                replayed: Lsn(0x50206F8),
                leader_timeline: Timeline(2),
                left_at: Lsn(0x5020688)
            })
        );
        assert_eq!(
            forked.unwrap().to_string(),
            "it replayed timeline 1 up to 0/50206F8, past 0/5020688 where timeline 2 forked from it"
        );
    }

    #[test]
    fn a_replica_at_or_before_the_switch_point_can_follow() {
        let history = [switch(1, 0x5020688)];
        assert_eq!(fork(at(1, 0x5020688), Timeline(2), &history), None, "exactly at the switch point");
        assert_eq!(fork(at(1, 0x5000000), Timeline(2), &history), None, "behind it");
        assert_eq!(fork(at(2, 0x9000000), Timeline(2), &history), None, "on the leader's own timeline");
    }

    #[test]
    fn older_ancestors_are_judged_by_their_own_switch_points() {
        let history = [switch(1, 0x3000000), switch(2, 0x5000000)];
        assert_eq!(fork(at(1, 0x2000000), Timeline(3), &history), None);
        assert!(fork(at(1, 0x4000000), Timeline(3), &history).is_some(), "past 1's end though before 2's");
        assert_eq!(fork(at(2, 0x4000000), Timeline(3), &history), None);
        assert!(fork(at(2, 0x5000001), Timeline(3), &history).is_some());
    }

    #[test]
    fn a_timeline_outside_the_leaders_line_has_forked_wherever_it_is() {
        // The leader's timeline 3 branched from 1; a replica on sibling 2 cannot follow it.
        let history = [switch(1, 0x3000000)];
        let sibling = fork(at(2, 0x3000100), Timeline(3), &history).unwrap();
        assert!(matches!(sibling, Fork::Outside { .. }));
        assert!(sibling.to_string().contains("never passed through timeline 2"), "{sibling}");
        assert!(fork(at(4, 0x100), Timeline(3), &history).is_some(), "newer than the leader");
    }

    #[test]
    fn two_branches_sharing_a_timeline_number_are_told_apart_by_their_histories() {
        // A member promoted without having seen the newest history file picks a number already
        // taken: both lines call their timeline 2, but left timeline 1 at different points.
        let leader = [switch(1, 0x3000000)];
        let own = [switch(1, 0x4000000)];
        let replica = Replayed { timeline: Timeline(2), lsn: Lsn(0x4100000), history: Some(&own) };
        let forked = fork(replica, Timeline(2), &leader).unwrap();
        assert_eq!(
            forked.to_string(),
            "it replayed timeline 2 up to 0/4100000 on a line that left timeline 1 at 0/4000000, \
             where timeline 2's line left it at 0/3000000"
        );
        let same = Replayed { timeline: Timeline(2), lsn: Lsn(0x4100000), history: Some(&leader) };
        assert_eq!(fork(same, Timeline(2), &leader), None, "the same line");
        let descendant = [switch(1, 0x3000000), switch(2, 0x3800000)];
        let on_3 = Replayed { timeline: Timeline(3), lsn: Lsn(0x3900000), history: Some(&descendant) };
        assert!(
            matches!(fork(on_3, Timeline(2), &leader), Some(Fork::Outside { .. })),
            "a line through the leader's own timeline and on: newer than the leader"
        );
        let sibling_ancestor = [switch(1, 0x3000000), switch(5, 0x3800000)];
        let on_6 = Replayed { timeline: Timeline(6), lsn: Lsn(0x3900000), history: Some(&sibling_ancestor) };
        let forked = fork(on_6, Timeline(7), &[switch(1, 0x3000000), switch(2, 0x3800000)]).unwrap();
        assert!(matches!(forked, Fork::OtherBranch { theirs: None, .. }), "{forked:?}");
        assert!(forked.to_string().ends_with("which timeline 7's line never passed through"), "{forked}");
        let behind = Replayed { timeline: Timeline(3), lsn: Lsn(0x3900000), history: Some(&descendant) };
        assert!(
            fork(behind, Timeline(4), &[switch(1, 0x3000000), switch(2, 0x3800000), switch(3, 0x5000000)]).is_none()
        );
    }
}
