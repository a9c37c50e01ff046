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

/// Proof that a replica has left the leader's history: it replayed `timeline` up to
/// `replayed`, but the leader's `leader_timeline` left `timeline` at `left_at` (before that
/// point), or never passed through `timeline` at all (`left_at` is `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fork {
    pub timeline: Timeline,
    pub replayed: Lsn,
    pub leader_timeline: Timeline,
    pub left_at: Option<Lsn>,
}

/// Whether WAL replayed on `timeline` up to `replayed` is off the history of a leader on
/// `leader_timeline` whose history file lists `history`. Only a proof counts: on the
/// leader's own timeline, or on one of its ancestors up to the point where the leader's
/// line left it, the replica can still follow (it may just be behind).
pub fn fork(timeline: Timeline, replayed: Lsn, leader_timeline: Timeline, history: &[TimelineSwitch]) -> Option<Fork> {
    if timeline == leader_timeline {
        return None;
    }
    let left_at = history.iter().find(|s| s.timeline == timeline).map(|s| s.end);
    let off = match left_at {
        Some(end) => replayed > end,
        // A timeline the leader's line never had: a sibling branch, or one newer than the leader.
        None => true,
    };
    off.then_some(Fork { timeline, replayed, leader_timeline, left_at })
}

impl fmt::Display for Fork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Fork { timeline, replayed, leader_timeline, left_at } = self;
        match left_at {
            Some(at) => write!(
                f,
                "it replayed timeline {timeline} up to {replayed}, past {at} where timeline {leader_timeline} forked from it"
            ),
            None => write!(
                f,
                "it replayed timeline {timeline} up to {replayed}, and timeline {leader_timeline}'s history never passed through timeline {timeline}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switch(timeline: u32, end: u64) -> TimelineSwitch {
        TimelineSwitch { timeline: Timeline(timeline), end: Lsn(end) }
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
        let forked = fork(Timeline(1), Lsn(0x50206F8), Timeline(2), &history);
        assert_eq!(
            forked,
            Some(Fork {
                timeline: Timeline(1),
                replayed: Lsn(0x50206F8),
                leader_timeline: Timeline(2),
                left_at: Some(Lsn(0x5020688))
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
        assert_eq!(fork(Timeline(1), Lsn(0x5020688), Timeline(2), &history), None, "exactly at the switch point");
        assert_eq!(fork(Timeline(1), Lsn(0x5000000), Timeline(2), &history), None, "behind it");
        assert_eq!(fork(Timeline(2), Lsn(0x9000000), Timeline(2), &history), None, "on the leader's own timeline");
    }

    #[test]
    fn older_ancestors_are_judged_by_their_own_switch_points() {
        let history = [switch(1, 0x3000000), switch(2, 0x5000000)];
        assert_eq!(fork(Timeline(1), Lsn(0x2000000), Timeline(3), &history), None);
        assert!(fork(Timeline(1), Lsn(0x4000000), Timeline(3), &history).is_some(), "past 1's end though before 2's");
        assert_eq!(fork(Timeline(2), Lsn(0x4000000), Timeline(3), &history), None);
        assert!(fork(Timeline(2), Lsn(0x5000001), Timeline(3), &history).is_some());
    }

    #[test]
    fn a_timeline_outside_the_leaders_line_has_forked_wherever_it_is() {
        // The leader's timeline 3 branched from 1; a replica on sibling 2 cannot follow it.
        let history = [switch(1, 0x3000000)];
        let sibling = fork(Timeline(2), Lsn(0x3000100), Timeline(3), &history).unwrap();
        assert_eq!(sibling.left_at, None);
        assert!(sibling.to_string().contains("never passed through timeline 2"), "{sibling}");
        assert!(fork(Timeline(4), Lsn(0x100), Timeline(3), &history).is_some(), "newer than the leader");
    }
}
