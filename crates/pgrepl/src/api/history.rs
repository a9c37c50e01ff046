//! The replicas' lag over the last 15 minutes, kept in the agent process so that the status page
//! (`/ui`) shows it again after a reload: a sampler reads the loop's last cycle about once a
//! second and pushes each replica's lag (bytes and seconds, as `/cluster` shows them) into a
//! bounded ring buffer (`LagHistory`, pure), served at `GET /history[?since=UNIX_MS]`.
//! It only reads the `Probe`; it never waits on the loop or touches the store.

use super::Api;
use crate::commands::{status, wait};
use pgrepl_agent::Probe;
use pgrepl_core::ClusterView;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the sampler reads the loop's last cycle.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// How far back the history reaches.
pub const SPAN: Duration = Duration::from_secs(15 * 60);

/// Each replica's lag at one moment (wall clock). Members without a known lag at that moment
/// (down, not a replica) are absent, which the chart draws as a gap.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sample {
    pub at_unix_ms: u64,
    pub lag_bytes: BTreeMap<String, u64>,
    pub lag_seconds: BTreeMap<String, f64>,
}

/// Samples, oldest first, none older than `span` before the newest and at most `capacity` of
/// them: memory is bounded by `capacity` times the cluster's members.
#[derive(Debug)]
pub struct LagHistory {
    span_ms: u64,
    capacity: usize,
    samples: VecDeque<Sample>,
}

impl LagHistory {
    /// A history of `span` sampled every `interval` (a few samples of slack for a sampler that
    /// runs a little fast).
    pub fn new(span: Duration, interval: Duration) -> LagHistory {
        let interval_ms = interval.as_millis().max(1) as u64;
        let span_ms = span.as_millis() as u64;
        let capacity = (span_ms / interval_ms) as usize + 1 + 16;
        LagHistory { span_ms, capacity, samples: VecDeque::with_capacity(capacity) }
    }

    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Adds the newest sample and forgets what fell out of the span. A wall clock that stepped
    /// back drops the samples now "in the future", so times only ever increase.
    pub fn push(&mut self, sample: Sample) {
        while self.samples.back().is_some_and(|s| s.at_unix_ms >= sample.at_unix_ms) {
            self.samples.pop_back();
        }
        let oldest_kept = sample.at_unix_ms.saturating_sub(self.span_ms);
        self.samples.push_back(sample);
        while self.samples.front().is_some_and(|s| s.at_unix_ms < oldest_kept) || self.samples.len() > self.capacity {
            self.samples.pop_front();
        }
    }

    /// The samples taken after `since_ms` (all of them for 0), oldest first.
    pub fn since(&self, since_ms: u64) -> Vec<Sample> {
        let start = self.samples.partition_point(|s| s.at_unix_ms <= since_ms);
        self.samples.range(start..).cloned().collect()
    }
}

/// The sample `/cluster` would show for this view: its replicas' `lag_bytes` and `lag_seconds`.
pub fn sample(view: &ClusterView, at_unix_ms: u64) -> Sample {
    let no_endpoints = || status::EndpointJson { address: String::new(), routes_to: Vec::new() };
    let endpoints = status::EndpointsJson { router: false, rw: no_endpoints(), ro: no_endpoints(), metrics: None };
    let shown = status::build("", view, endpoints);
    let mut sample = Sample { at_unix_ms, lag_bytes: BTreeMap::new(), lag_seconds: BTreeMap::new() };
    for m in shown.members.into_iter().filter(|m| m.role == "replica") {
        if let Some(b) = m.lag_bytes {
            sample.lag_bytes.insert(m.name.clone(), b);
        }
        if let Some(s) = m.lag_seconds {
            sample.lag_seconds.insert(m.name, s);
        }
    }
    sample
}

/// The history the API serves, shared with its sampler.
pub type Shared = Arc<Mutex<LagHistory>>;

pub fn shared() -> Shared {
    Arc::new(Mutex::new(LagHistory::new(SPAN, INTERVAL)))
}

/// Samples the loop's last cycle every `INTERVAL` until dropped (nothing before its first).
pub async fn run_sampler(probe: Probe, history: Shared) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(cycle) = probe.last() else { continue };
        let s = sample(&cycle.view, wait::wall_clock_ms());
        if let Ok(mut h) = history.lock() {
            h.push(s);
        }
    }
}

#[derive(Serialize)]
struct HistoryJson {
    interval_ms: u64,
    span_ms: u64,
    /// The agent's wall clock, so a page can place samples against it rather than its own.
    now_unix_ms: u64,
    samples: Vec<Sample>,
}

/// The `since` of a query (0 without one).
fn since(query: &str) -> Result<u64, String> {
    match query.split('&').find_map(|kv| kv.strip_prefix("since=")) {
        None => Ok(0),
        Some(v) => v.parse().map_err(|_| format!("since={v} is not a time in milliseconds since the Unix epoch")),
    }
}

/// `GET /history[?since=UNIX_MS]`: the samples after `since` (default: all), oldest first.
pub fn answer(api: &Api, query: &str) -> super::Reply {
    let since = match since(query) {
        Ok(s) => s,
        Err(sentence) => return super::error(hyper::StatusCode::BAD_REQUEST, &sentence),
    };
    let samples = api.history.lock().map(|h| h.since(since)).unwrap_or_default();
    let body = HistoryJson {
        interval_ms: INTERVAL.as_millis() as u64,
        span_ms: SPAN.as_millis() as u64,
        now_unix_ms: wait::wall_clock_ms(),
        samples,
    };
    super::json(hyper::StatusCode::OK, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrepl_core::{Lsn, MemberName, MemberSpec, MemberState, ReplicationRow, Role, Spec};

    fn at(ms: u64, lag: u64) -> Sample {
        Sample {
            at_unix_ms: ms,
            lag_bytes: BTreeMap::from([("node-2".to_string(), lag)]),
            lag_seconds: BTreeMap::from([("node-2".to_string(), lag as f64 / 1000.0)]),
        }
    }

    fn times(h: &LagHistory) -> Vec<u64> {
        h.since(0).iter().map(|s| s.at_unix_ms).collect()
    }

    #[test]
    fn samples_are_kept_oldest_first_and_served_after_a_moment() {
        let mut h = LagHistory::new(SPAN, INTERVAL);
        for t in [1_000, 2_000, 3_000] {
            h.push(at(t, t));
        }
        assert_eq!(times(&h), [1_000, 2_000, 3_000]);
        assert_eq!(h.since(2_000), [at(3_000, 3_000)], "strictly after");
        assert_eq!(h.since(1_500).len(), 2);
        assert!(h.since(3_000).is_empty());
    }

    #[test]
    fn samples_older_than_fifteen_minutes_before_the_newest_are_evicted() {
        let mut h = LagHistory::new(SPAN, INTERVAL);
        let start = 1_700_000_000_000;
        h.push(at(start, 1));
        h.push(at(start + 1_000, 2));
        h.push(at(start + 900_000, 3));
        assert_eq!(times(&h), [start, start + 1_000, start + 900_000], "exactly 15 minutes old: kept");
        h.push(at(start + 900_001, 4));
        assert_eq!(times(&h), [start + 1_000, start + 900_000, start + 900_001]);
        // After a long gap (the agent was stopped) only the new sample is left.
        h.push(at(start + 3_600_000, 5));
        assert_eq!(times(&h), [start + 3_600_000]);
    }

    #[test]
    fn memory_is_bounded_even_when_samples_come_faster_than_the_interval() {
        let mut h = LagHistory::new(SPAN, INTERVAL);
        assert_eq!(h.capacity(), 900 + 1 + 16);
        for t in 0..10_000u64 {
            h.push(at(t * 10, t));
        }
        assert_eq!(h.len(), h.capacity(), "100 samples a second for 100 s: capped");
        assert_eq!(h.since(0).last().map(|s| s.at_unix_ms), Some(99_990), "the newest are kept");
        // At the intended rate a full span fits.
        let mut h = LagHistory::new(SPAN, INTERVAL);
        for t in 0..2_000u64 {
            h.push(at(t * 1_000, t));
        }
        assert_eq!(h.len(), 901, "15 minutes and the sample at its start");
    }

    #[test]
    fn a_wall_clock_that_steps_back_drops_the_samples_ahead_of_it() {
        let mut h = LagHistory::new(SPAN, INTERVAL);
        for t in [1_000, 2_000, 3_000, 4_000] {
            h.push(at(t, t));
        }
        h.push(at(2_500, 9));
        assert_eq!(times(&h), [1_000, 2_000, 2_500]);
        h.push(at(2_500, 10));
        assert_eq!(h.since(2_000), [at(2_500, 10)], "the same moment twice: the newer reading");
    }

    #[test]
    fn since_is_read_from_the_query() {
        assert_eq!(since(""), Ok(0));
        assert_eq!(since("since=1796136201123"), Ok(1796136201123));
        assert_eq!(since("x=1&since=5"), Ok(5));
        assert_eq!(
            since("since=yesterday"),
            Err("since=yesterday is not a time in milliseconds since the Unix epoch".into())
        );
    }

    #[test]
    fn a_sample_holds_each_replicas_lag_as_cluster_shows_it() {
        let mut primary = pgrepl_core::testing::status(Role::Primary, MemberState::Running, 1, Lsn(0x3000));
        primary.replication = vec![ReplicationRow {
            application_name: "node-2".into(),
            client_addr: None,
            state: "streaming".into(),
            flush_lsn: None,
            replay_lsn: Some(Lsn(0x1000)),
            replay_lag_ms: Some(1_500),
            sync_state: None,
        }];
        let replica = pgrepl_core::testing::status(Role::Replica, MemberState::Streaming, 2, Lsn(0x1000));
        let mut down = pgrepl_core::testing::status(Role::Unknown, MemberState::Stopped, 3, Lsn(0x1000));
        down.lsn = None;
        let mut view = ClusterView { leader: Some(MemberName::numbered(1)), ..ClusterView::default() };
        let mut spec = Spec::default();
        for n in 1..=3 {
            let m = MemberSpec { host: "127.0.0.1".into(), port: n, stopped: false };
            spec.members.insert(MemberName::numbered(n as u32), m);
        }
        view.spec = Some(spec);
        view.members.insert(MemberName::numbered(1), primary);
        view.members.insert(MemberName::numbered(2), replica);
        view.members.insert(MemberName::numbered(3), down);
        let s = sample(&view, 42);
        assert_eq!(s.at_unix_ms, 42);
        assert_eq!(s.lag_bytes.get("node-2"), Some(&0x2000));
        assert_eq!(s.lag_seconds.get("node-2"), Some(&1.5));
        assert!(!s.lag_bytes.contains_key("node-1"), "the primary has no lag");
        assert!(!s.lag_bytes.contains_key("node-3") && !s.lag_seconds.contains_key("node-3"), "{s:?}");
    }
}
