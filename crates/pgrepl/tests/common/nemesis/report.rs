//! What each round of the nemesis measured, and the report made of them: per fault type the
//! count, the rw endpoint's unavailability (p50/p95/max), acknowledged writes lost, windows with
//! two writable servers, and convergence after the heal (p50/max, and how many went past the
//! bound), as a markdown table, followed by one line per round.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

/// The bound on convergence after a heal.
pub const CONVERGE_WITHIN: Duration = Duration::from_secs(30);

pub struct Round {
    pub number: usize,
    /// The row it counts in: its fault's label, or a shared row for two faults at once and
    /// for a switchover during a fault.
    pub row: String,
    pub label: String,
    pub detail: String,
    /// Wall-clock time (UTC) the fault began, to find it in the members' logs.
    pub began: String,
    pub hold: Duration,
    pub unavailable: Duration,
    pub lost: usize,
    pub windows: usize,
    /// `None`: not converged within `CONVERGE_WITHIN`.
    pub converged: Option<Duration>,
    /// The data of a member that differs from the primary's once it caught up.
    pub diverged: usize,
    /// Nodes that exited on their own during the round (a crash: the kit starts them again).
    pub exited: usize,
    pub notes: Vec<String>,
}

pub struct Totals {
    pub seed: u64,
    pub synchronous: String,
    pub faults: usize,
    pub duration: Duration,
    pub acked: usize,
    pub lost: usize,
    /// Ids on a server that the writer sent but never saw acknowledged.
    pub unknown: usize,
    /// Ids on a server that the writer never sent.
    pub phantom: usize,
    pub windows: usize,
    /// Split-brain windows outside every fault's span.
    pub windows_between: usize,
    pub probe_rounds: usize,
    pub probe_one_writable: usize,
    /// Windows the probe saw when a replica was promoted by hand before the faults.
    pub self_check_windows: usize,
    pub diverged: usize,
    pub final_checksums: Vec<String>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn secs(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

pub fn render(rounds: &[Round], t: &Totals) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "nemesis: seed {}, synchronous = {}, {} faults in {:.0} s; writer: {} acknowledged, {} lost, {} unknown, \
         {} never sent but present; probe: {} rounds, {} with one writable server, {} split-brain windows \
         ({} between faults; and {} in its self-check, a replica promoted by hand before the faults); {} members diverged; final checksums {:?}\n",
        t.seed,
        t.synchronous,
        t.faults,
        t.duration.as_secs_f64(),
        t.acked,
        t.lost,
        t.unknown,
        t.phantom,
        t.probe_rounds,
        t.probe_one_writable,
        t.windows,
        t.windows_between,
        t.self_check_windows,
        t.diverged,
        t.final_checksums,
    );
    out.push_str(
        "| fault | count | unavailable p50 / p95 / max (s) | lost | split-brain windows | diverged | converged p50 / max (s) | > 30 s | nodes exited |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut rows: BTreeMap<&str, Vec<&Round>> = BTreeMap::new();
    for r in rounds {
        rows.entry(&r.row).or_default().push(r);
    }
    for (row, rs) in &rows {
        let mut unavailable: Vec<Duration> = rs.iter().map(|r| r.unavailable).collect();
        unavailable.sort();
        let mut converged: Vec<Duration> = rs.iter().filter_map(|r| r.converged).collect();
        converged.sort();
        let late = rs.iter().filter(|r| r.converged.is_none()).count();
        let _ = writeln!(
            out,
            "| {row} | {} | {} / {} / {} | {} | {} | {} | {} / {} | {late} | {} |",
            rs.len(),
            secs(percentile(&unavailable, 0.5)),
            secs(percentile(&unavailable, 0.95)),
            secs(percentile(&unavailable, 1.0)),
            rs.iter().map(|r| r.lost).sum::<usize>(),
            rs.iter().map(|r| r.windows).sum::<usize>(),
            rs.iter().map(|r| r.diverged).sum::<usize>(),
            secs(percentile(&converged, 0.5)),
            secs(percentile(&converged, 1.0)),
            rs.iter().map(|r| r.exited).sum::<usize>(),
        );
    }
    out.push_str("\nRounds:\n\n");
    for r in rounds {
        let converged = r.converged.map(|d| format!("{} s", secs(d))).unwrap_or_else(|| "> 30 s".into());
        let notes = if r.notes.is_empty() { String::new() } else { format!("; {}", r.notes.join("; ")) };
        let _ = writeln!(
            out,
            "{:>3}. {} {} ({}), held {} s: unavailable {} s, lost {}, split-brain windows {}, diverged {}, converged {converged}{notes}",
            r.number,
            r.began,
            r.label,
            r.detail,
            secs(r.hold),
            secs(r.unavailable),
            r.lost,
            r.windows,
            r.diverged,
        );
    }
    out
}

/// Now as `HH:MM:SS.mmm` UTC (the members' logs' clock).
pub fn wall_clock() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let s = now.as_secs() % 86_400;
    format!("{:02}:{:02}:{:02}.{:03}", s / 3600, s / 60 % 60, s % 60, now.subsec_millis())
}
