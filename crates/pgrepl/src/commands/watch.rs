//! `pgrepl status --watch [--json]`: the cluster as it moves. It reads the store as `status`
//! does (`status::build` from one view), once a second or sooner when the store changes, and
//! tells what happened by comparing each `StatusJson` with the one before (`events`, pure).
//!
//! On a terminal: a view redrawn in place on the alternate screen (`render`, pure: status,
//! events, size -> lines), left as the terminal was on Ctrl-C, SIGTERM or SIGHUP. Otherwise:
//! the full status once, then one line per event with its time, no escapes. With `--json`:
//! one JSON object a line each time the status changes (`{"at_unix_ms", "events", "status"}`).
//! It only reads; it never writes to the store.

use crate::cluster::Cluster;
use crate::commands::status::{self, MemberJson, StatusJson};
use crate::commands::{progress, term, wait};
use std::collections::VecDeque;
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// Something that happened between two consecutive statuses; its `Display` is the sentence.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Leader {
        from: Option<String>,
        to: Option<String>,
    },
    Promoted {
        member: String,
        timeline: Option<u32>,
    },
    NowReplica(String),
    Streaming(String),
    StoppedStreaming {
        member: String,
        state: String,
    },
    /// Any other change of state (stopped, preparing, failed, down, running, recovering).
    State {
        member: String,
        state: String,
        decision: Option<String>,
    },
    Warning {
        member: String,
        text: String,
    },
    Fenced(String),
    Added(String),
    Removed(String),
    Maintenance(bool),
    Router(bool),
    Rw(Vec<String>),
    /// Not from a diff: the watch could not read the store, or can again.
    StoreUnreadable(String),
    StoreReadable,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Leader { from: Some(from), to: Some(to) } => write!(f, "leader {from} -> {to}"),
            Event::Leader { from: Some(from), to: None } => {
                write!(f, "{from} no longer holds the leader lease; nobody leads")
            }
            Event::Leader { from: None, to: Some(to) } => write!(f, "{to} took the leader lease"),
            Event::Leader { from: None, to: None } => write!(f, "nobody leads"),
            Event::Promoted { member, timeline: Some(tl) } => write!(f, "{member} promoted (timeline {tl})"),
            Event::Promoted { member, timeline: None } => write!(f, "{member} promoted"),
            Event::NowReplica(m) => write!(f, "{m} is now a replica"),
            Event::Streaming(m) => write!(f, "{m} is streaming"),
            Event::StoppedStreaming { member, state } => write!(f, "{member} stopped streaming (now {state})"),
            Event::State { member, state, decision } => match (state.as_str(), decision) {
                ("down", _) => write!(f, "{member} is down (its agent publishes no status)"),
                ("failed" | "preparing", Some(d)) => write!(f, "{member} {state}: {d}"),
                _ => write!(f, "{member} is {state}"),
            },
            Event::Warning { member, text } => write!(f, "WARNING {member}: {text}"),
            Event::Fenced(m) => write!(f, "{m} fenced: its fencer killed PostgreSQL (the lease was not renewed)"),
            Event::Added(m) => write!(f, "{m} added to the cluster"),
            Event::Removed(m) => write!(f, "{m} removed from the cluster"),
            Event::Maintenance(true) => write!(f, "maintenance mode on"),
            Event::Maintenance(false) => write!(f, "maintenance mode off"),
            Event::Router(true) => write!(f, "the router runs"),
            Event::Router(false) => write!(f, "the router stopped"),
            Event::Rw(to) if to.is_empty() => write!(f, "rw endpoint routes to nobody"),
            Event::Rw(to) => write!(f, "rw endpoint routes to {}", to.join(", ")),
            Event::StoreUnreadable(e) => write!(f, "cannot read the store: {e}"),
            Event::StoreReadable => write!(f, "the store answers again"),
        }
    }
}

/// What happened from `before` to `after`, in the order a reader follows it: membership,
/// maintenance, leader, each member's changes, then the endpoints.
pub fn events(before: &StatusJson, after: &StatusJson) -> Vec<Event> {
    let mut out = Vec::new();
    let has = |s: &StatusJson, name: &str| s.members.iter().any(|m| m.name == name);
    for m in &after.members {
        if !has(before, &m.name) {
            out.push(Event::Added(m.name.clone()));
        }
    }
    for m in &before.members {
        if !has(after, &m.name) {
            out.push(Event::Removed(m.name.clone()));
        }
    }
    if before.maintenance_mode != after.maintenance_mode {
        out.push(Event::Maintenance(after.maintenance_mode));
    }
    if before.leader != after.leader {
        out.push(Event::Leader { from: before.leader.clone(), to: after.leader.clone() });
    }
    for new in &after.members {
        if let Some(old) = before.members.iter().find(|m| m.name == new.name) {
            member_events(old, new, &mut out);
        }
    }
    if before.endpoints.router != after.endpoints.router {
        out.push(Event::Router(after.endpoints.router));
    }
    if before.endpoints.rw.routes_to != after.endpoints.rw.routes_to {
        out.push(Event::Rw(after.endpoints.rw.routes_to.clone()));
    }
    out
}

fn member_events(old: &MemberJson, new: &MemberJson, out: &mut Vec<Event>) {
    let name = || new.name.clone();
    let role_changed = match (old.role.as_str(), new.role.as_str()) {
        ("replica", "primary") => {
            out.push(Event::Promoted { member: name(), timeline: new.timeline });
            true
        }
        ("primary", "replica") => {
            out.push(Event::NowReplica(name()));
            true
        }
        _ => false,
    };
    if old.state != new.state {
        let usual_after_role_change = role_changed && matches!(new.state.as_str(), "running" | "recovering");
        if new.state == "streaming" {
            out.push(Event::Streaming(name()));
        } else if old.state == "streaming" && !role_changed && new.state != "down" {
            out.push(Event::StoppedStreaming { member: name(), state: new.state.clone() });
        } else if !usual_after_role_change {
            out.push(Event::State { member: name(), state: new.state.clone(), decision: new.decision.clone() });
        }
    }
    if let Some(text) = new.warning.as_ref().filter(|w| old.warning.as_ref() != Some(*w)) {
        out.push(Event::Warning { member: name(), text: text.clone() });
    }
    if new.last_fenced_unix_ms.is_some() && new.last_fenced_unix_ms != old.last_fenced_unix_ms {
        out.push(Event::Fenced(name()));
    }
}

/// An event with when the watch saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub at_ms: u64,
    pub event: Event,
}

/// A wall clock time as `HH:MM:SS` (UTC).
pub fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", s / 3600 % 24, s / 60 % 60, s % 60)
}

const BAR_CELLS: u32 = 10;

/// A replica's lag as a bar on a logarithmic scale (one cell per factor of 8 from 1 byte;
/// full at 1 GiB, where no replica should ever be), then the amount.
pub fn lag_bar(lag_bytes: Option<u64>) -> String {
    let Some(lag) = lag_bytes else { return String::new() };
    let bits = 64 - lag.leading_zeros(); // 0 for 0 bytes, 31 for 1 GiB
    let filled = bits.div_ceil(3).min(BAR_CELLS) as usize;
    let empty = BAR_CELLS as usize - filled;
    format!("{}{} {}", "█".repeat(filled), "░".repeat(empty), progress::bytes(lag))
}

fn dash<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_string(), T::to_string)
}

/// The view: the cluster, its members, endpoints and fences, then as many of the latest
/// events as fit in `rows`; every line at most `width` characters.
pub fn render(status: &StatusJson, events: &[Seen], width: usize, rows: usize, now_ms: u64) -> Vec<String> {
    let mut lines = vec![format!(
        "cluster {}, leader {}   {} UTC   (Ctrl-C to quit)",
        status.cluster,
        dash(&status.leader),
        clock(now_ms)
    )];
    if status.maintenance_mode {
        let since = status.paused_since_ms.map(|ms| format!(" since {} UTC", clock(ms))).unwrap_or_default();
        lines.push(format!("MAINTENANCE MODE{since}: no automatic failover; `pgrepl resume` ends it"));
    }
    lines.push(String::new());
    lines.push(format!(
        "{:<8} {:<8} {:<10} {:>3} {:<12} {:<22} {:>6}  DECISION",
        "MEMBER", "ROLE", "STATE", "TL", "LSN", "LAG", "LAG_S"
    ));
    for m in &status.members {
        lines.push(format!(
            "{:<8} {:<8} {:<10} {:>3} {:<12} {:<22} {:>6}  {}",
            m.name,
            m.role,
            m.state,
            dash(&m.timeline),
            dash(&m.lsn),
            lag_bar(m.lag_bytes),
            m.lag_seconds.map_or_else(String::new, |s| format!("{s:.1}")),
            dash(&m.decision)
        ));
    }
    for m in &status.members {
        if let Some(w) = &m.warning {
            lines.push(format!("WARNING {}: {w}", m.name));
        }
    }
    let e = &status.endpoints;
    let to = |v: &Vec<String>| if v.is_empty() { "nobody".to_string() } else { v.join(", ") };
    lines.push(String::new());
    lines.push(format!(
        "rw {} -> {}    ro {} -> {}    (router {})",
        e.rw.address,
        to(&e.rw.routes_to),
        e.ro.address,
        to(&e.ro.routes_to),
        if e.router { "running" } else { "not running" }
    ));
    for m in &status.members {
        if let Some(at) = m.last_fenced_unix_ms {
            lines.push(format!("{} last fenced at {} UTC", m.name, clock(at)));
        }
    }
    if !events.is_empty() && rows > lines.len() + 2 {
        lines.push(String::new());
        lines.push("events:".to_string());
        let room = rows - lines.len();
        let shown = &events[events.len().saturating_sub(room)..];
        lines.extend(shown.iter().map(|s| format!("{} {}", clock(s.at_ms), s.event)));
    }
    lines.truncate(rows);
    lines.into_iter().map(|l| term::fit(&l, width)).collect()
}

/// How many events the screen keeps (more than any terminal shows).
const KEPT: usize = 500;

enum Output {
    /// The alternate screen, redrawn in place.
    Screen,
    /// Lines with times, for a pipe or a file.
    Lines,
    Json,
}

/// Leaves the alternate screen when dropped, whatever ended the watch.
struct Screen;

impl Screen {
    fn enter() -> Screen {
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "{}", term::ENTER_SCREEN);
        let _ = out.flush();
        Screen
    }

    fn draw(&self, lines: &[String]) {
        let mut frame = String::from(term::HOME);
        for line in lines {
            frame.push_str(line);
            frame.push_str(term::CLEAR_LINE);
            frame.push_str("\r\n");
        }
        frame.push_str(term::CLEAR_BELOW);
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(frame.as_bytes());
        let _ = out.flush();
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "{}", term::LEAVE_SCREEN);
        let _ = out.flush();
    }
}

async fn read(cluster: &Cluster) -> anyhow::Result<(pgrepl_store::Revision, StatusJson)> {
    let (snapshot, view) = cluster.view().await?;
    let endpoints = status::endpoints(cluster, &view);
    Ok((snapshot.revision, status::build(&cluster.config.cluster, &view, endpoints)))
}

pub async fn run(dir: &Path, json: bool) -> anyhow::Result<()> {
    let cluster = Cluster::open(dir).await?;
    let output = match (json, term::stdout_is_terminal()) {
        (true, _) => Output::Json,
        (false, true) => Output::Screen,
        (false, false) => Output::Lines,
    };
    // The first read shows a cluster that cannot be read at all before any screen is drawn.
    let (mut revision, first) = read(&cluster).await?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let screen = matches!(output, Output::Screen).then(Screen::enter);
    let mut seen: VecDeque<Seen> = VecDeque::new();
    let mut previous: Option<StatusJson> = None;
    let mut latest = Ok(first);
    let mut unreadable = false;
    let mut last_json = None;
    loop {
        let now_ms = wait::wall_clock_ms();
        let mut new = Vec::new();
        let status = match latest {
            Ok(status) => {
                if std::mem::take(&mut unreadable) {
                    new.push(Event::StoreReadable);
                }
                if let Some(before) = &previous {
                    new.extend(events(before, &status));
                }
                Some(status)
            }
            Err(e) => {
                if !std::mem::replace(&mut unreadable, true) {
                    new.push(Event::StoreUnreadable(format!("{e:#}")));
                }
                None
            }
        };
        let new: Vec<Seen> = new.into_iter().map(|event| Seen { at_ms: now_ms, event }).collect();
        match output {
            Output::Json => {
                if let Some(s) = &status {
                    let value = serde_json::to_value(s)?;
                    if last_json.as_ref() != Some(&value) || !new.is_empty() {
                        let events: Vec<String> = new.iter().map(|s| s.event.to_string()).collect();
                        let line = serde_json::json!({"at_unix_ms": now_ms, "events": events, "status": &value});
                        println!("{line}");
                        last_json = Some(value);
                    }
                }
            }
            Output::Lines => {
                if previous.is_none() {
                    if let Some(s) = &status {
                        for line in render(s, &[], usize::MAX, usize::MAX, now_ms) {
                            println!("{line}");
                        }
                    }
                }
                for s in &new {
                    println!("{} {}", clock(s.at_ms), s.event);
                }
            }
            Output::Screen => {
                seen.extend(new);
                while seen.len() > KEPT {
                    seen.pop_front();
                }
                let shown = status.as_ref().or(previous.as_ref());
                if let (Some(screen), Some(s)) = (&screen, shown) {
                    let (width, rows) = term::size(&std::io::stdout()).unwrap_or((80, 24));
                    screen.draw(&render(s, seen.make_contiguous(), width, rows, now_ms));
                }
            }
        }
        if let Some(s) = status {
            previous = Some(s);
        }
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = hangup.recv() => break,
            _ = next_round(&cluster, revision) => {}
        }
        latest = match read(&cluster).await {
            Ok((r, s)) => {
                revision = r;
                Ok(s)
            }
            Err(e) => Err(e),
        };
    }
    drop(screen);
    Ok(())
}

/// Until the store changes or a second passes (at least a tenth of one, so a busy store does
/// not turn the watch into a busy loop).
async fn next_round(cluster: &Cluster, revision: pgrepl_store::Revision) {
    let started = tokio::time::Instant::now();
    if cluster.store.wait_change(revision, Duration::from_secs(1)).await.is_err() {
        tokio::time::sleep_until(started + Duration::from_secs(1)).await;
    }
    tokio::time::sleep_until(started + Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::status::{EndpointJson, EndpointsJson};
    use pgrepl_core::{ClusterView, Lsn, MemberName, MemberSpec, MemberState, MemberStatus, Role, Spec};

    /// A cluster of `members` (name, role, state) led by `leader`, built as `status` builds it.
    fn status_of(leader: Option<u32>, members: &[(u32, Role, MemberState)]) -> StatusJson {
        let mut view = ClusterView { leader: leader.map(MemberName::numbered), ..ClusterView::default() };
        let mut spec = Spec::default();
        for (n, role, state) in members {
            let name = MemberName::numbered(*n);
            spec.members
                .insert(name.clone(), MemberSpec { host: "127.0.0.1".into(), port: 5000 + *n as u16, stopped: false });
            let mut s: MemberStatus = pgrepl_core::testing::status(*role, *state, 5000 + *n as u16, Lsn(0x5000000));
            s.decision = format!("{state:?} as {role:?}").to_lowercase();
            view.members.insert(name, s);
        }
        view.spec = Some(spec);
        let rw = leader.map(|n| MemberName::numbered(n).to_string()).into_iter().collect();
        let endpoints = EndpointsJson {
            router: true,
            rw: EndpointJson { address: "127.0.0.1:5432".into(), routes_to: rw },
            ro: EndpointJson { address: "127.0.0.1:5433".into(), routes_to: vec![] },
            metrics: None,
        };
        status::build("shop", &view, endpoints)
    }

    fn member<'a>(s: &'a mut StatusJson, name: &str) -> &'a mut MemberJson {
        s.members.iter_mut().find(|m| m.name == name).unwrap()
    }

    fn sentences(before: &StatusJson, after: &StatusJson) -> Vec<String> {
        events(before, after).iter().map(Event::to_string).collect()
    }

    use MemberState::{Recovering, Running, Stopped, Streaming};
    use Role::{Primary, Replica};

    #[test]
    fn the_same_status_twice_is_no_event() {
        let s = status_of(Some(1), &[(1, Primary, Running), (2, Replica, Streaming)]);
        assert_eq!(events(&s, &s), vec![]);
    }

    #[test]
    fn a_switchover_reads_as_its_steps() {
        let before = status_of(Some(1), &[(1, Primary, Running), (2, Replica, Streaming), (3, Replica, Streaming)]);
        // The old primary stopped to hand over; the lease is free.
        let stopped = status_of(None, &[(1, Primary, Stopped), (2, Replica, Streaming), (3, Replica, Streaming)]);
        assert_eq!(
            sentences(&before, &stopped),
            [
                "node-1 no longer holds the leader lease; nobody leads",
                "node-1 is stopped",
                "rw endpoint routes to nobody"
            ]
        );
        let mut promoted =
            status_of(Some(2), &[(1, Primary, Stopped), (2, Primary, Running), (3, Replica, Recovering)]);
        member(&mut promoted, "node-2").timeline = Some(2);
        assert_eq!(
            sentences(&stopped, &promoted),
            [
                "node-2 took the leader lease",
                "node-2 promoted (timeline 2)",
                "node-3 stopped streaming (now recovering)",
                "rw endpoint routes to node-2"
            ]
        );
        let mut after = status_of(Some(2), &[(1, Replica, Streaming), (2, Primary, Running), (3, Replica, Streaming)]);
        member(&mut after, "node-2").timeline = Some(2);
        assert_eq!(
            sentences(&promoted, &after),
            ["node-1 is now a replica", "node-1 is streaming", "node-3 is streaming"]
        );
        // Seen in one step, by a watch that read the store only before and after.
        assert_eq!(
            sentences(&before, &after),
            [
                "leader node-1 -> node-2",
                "node-1 is now a replica",
                "node-1 is streaming",
                "node-2 promoted (timeline 2)",
                "rw endpoint routes to node-2"
            ]
        );
    }

    #[test]
    fn membership_maintenance_fences_warnings_and_the_router_are_told() {
        let before = status_of(Some(1), &[(1, Primary, Running), (2, Replica, Streaming)]);
        let mut after = status_of(Some(1), &[(1, Primary, Running), (3, Replica, MemberState::Preparing)]);
        after.maintenance_mode = true;
        after.endpoints.router = false;
        member(&mut after, "node-1").last_fenced_unix_ms = Some(1_000);
        member(&mut after, "node-3").warning = Some("forked".into());
        assert_eq!(
            sentences(&before, &after),
            [
                "node-3 added to the cluster",
                "node-2 removed from the cluster",
                "maintenance mode on",
                "node-1 fenced: its fencer killed PostgreSQL (the lease was not renewed)",
                "the router stopped"
            ],
            "node-3 is new: its warning shows in the view, its state was never seen changing"
        );
        let mut later = status_of(Some(1), &[(1, Primary, Running), (3, Replica, MemberState::Failed)]);
        member(&mut later, "node-1").last_fenced_unix_ms = Some(1_000);
        member(&mut later, "node-3").warning = Some("forked again".into());
        assert_eq!(
            sentences(&after, &later),
            [
                "maintenance mode off",
                "node-3 failed: failed as replica",
                "WARNING node-3: forked again",
                "the router runs"
            ],
            "the same fence is told once"
        );
    }

    #[test]
    fn a_member_whose_agent_stops_publishing_is_down() {
        let before = status_of(Some(1), &[(1, Primary, Running), (2, Replica, Streaming)]);
        let mut after = status_of(Some(1), &[(1, Primary, Running), (2, Replica, Streaming)]);
        let m = member(&mut after, "node-2");
        (m.role, m.state, m.decision) = ("unknown".into(), "down".into(), None);
        assert_eq!(sentences(&before, &after), ["node-2 is down (its agent publishes no status)"]);
        assert_eq!(sentences(&after, &before), ["node-2 is streaming"]);
    }

    #[test]
    fn the_lag_bar_grows_by_orders_of_magnitude() {
        assert_eq!(lag_bar(None), "");
        assert_eq!(lag_bar(Some(0)), "░░░░░░░░░░ 0 B");
        assert_eq!(lag_bar(Some(1)), "█░░░░░░░░░ 1 B");
        assert_eq!(lag_bar(Some(16 << 20)), "█████████░ 16.0 MiB");
        assert_eq!(lag_bar(Some(1 << 30)), "██████████ 1.0 GiB");
        assert_eq!(lag_bar(Some(u64::MAX)).chars().take(10).collect::<String>(), "██████████");
    }

    #[test]
    fn clock_is_utc_hours_minutes_seconds() {
        assert_eq!(clock(0), "00:00:00");
        assert_eq!(clock(1_796_124_885_629), "11:34:45");
    }

    #[test]
    fn the_view_shows_members_endpoints_and_the_latest_events_that_fit() {
        let mut s = status_of(Some(1), &[(1, Primary, Running), (2, Replica, Streaming)]);
        member(&mut s, "node-2").lag_bytes = Some(4096);
        member(&mut s, "node-2").lag_seconds = Some(0.25);
        member(&mut s, "node-1").last_fenced_unix_ms = Some(61_000);
        s.maintenance_mode = true;
        s.paused_since_ms = Some(3_600_000);
        let seen: Vec<Seen> = (0..30)
            .map(|i| Seen { at_ms: i * 1000, event: Event::Promoted { member: format!("node-{i}"), timeline: None } })
            .collect();
        let lines = render(&s, &seen, 200, 20, 7_200_000);
        assert_eq!(lines.len(), 20);
        assert_eq!(lines[0], "cluster shop, leader node-1   02:00:00 UTC   (Ctrl-C to quit)");
        assert_eq!(lines[1], "MAINTENANCE MODE since 01:00:00 UTC: no automatic failover; `pgrepl resume` ends it");
        assert!(lines[3].starts_with("MEMBER   ROLE     STATE       TL LSN          LAG"), "{}", lines[3]);
        assert_eq!(
            lines[4],
            "node-1   primary  running      1 0/5000000                                   running as primary"
        );
        assert_eq!(
            lines[5],
            "node-2   replica  streaming    1 0/5000000    █████░░░░░ 4.0 KiB        0.2  streaming as replica"
        );
        assert_eq!(lines[7], "rw 127.0.0.1:5432 -> node-1    ro 127.0.0.1:5433 -> nobody    (router running)");
        assert_eq!(lines[8], "node-1 last fenced at 00:01:01 UTC");
        assert_eq!(lines[10], "events:");
        assert_eq!(lines[11], "00:00:21 node-21 promoted", "the oldest that fit");
        assert_eq!(lines[19], "00:00:29 node-29 promoted", "the newest last");

        let narrow = render(&s, &seen, 30, 20, 0);
        assert!(narrow.iter().all(|l| l.chars().count() <= 30), "{narrow:#?}");
        let short = render(&s, &seen, 200, 6, 0);
        assert_eq!(short.len(), 6, "no room for events: the status is cut, never the screen");
        assert!(render(&s, &[], 200, 100, 0).iter().all(|l| l != "events:"), "no events, no heading");
    }
}
