//! The HA compose sample's benchmark (bench/compose.sh runs it; docs/benchmarks.md, "HA compose
//! cluster"): not a test that passes or fails on figures, but the measuring, which prints one
//! `BENCH\t{json}` line per trial on stdout. For each mode (`BENCH_COMPOSE_MODES`, default
//! `async sync`, the latter `PGREPL_SYNCHRONOUS=on`):
//!
//! - `up`, `BENCH_COMPOSE_UP_TRIALS` times on a fresh project (empty volumes): from `make up` to
//!   the first acknowledged write through the published rw port (TLS, verify-full against the
//!   cluster's CA) and to all three members running or streaming on one timeline;
//! - `kill`, `BENCH_COMPOSE_TRIALS` times: `docker kill` of the primary's container under the
//!   test kit's writer through the rw port; recovery = from the command to the acknowledged write
//!   that ends the longest write gap, the gap itself, and the acknowledged ids missing on the new
//!   primary; then, once the others see it down, `docker start` of the killed container and the
//!   cluster converged again;
//! - `stop`, the same with `docker stop` (its SIGTERM: the primary hands over).
//!
//! The last `up` project of a mode serves its `kill` and `stop` trials. A trial with no new
//! primary within `BENCH_COMPOSE_TIMEOUT` seconds is recorded as such; a cluster that does not
//! converge within `BENCH_COMPOSE_CONVERGE_TIMEOUT` ends the run. Needs the image and
//! docker-compose (`PGREPL_TEST_IMAGE` picks the image).

mod common;
mod docker;

use common::writer::{connect_with, missing_with, Tls, Writer};
use docker::compose::{Project, MEMBERS};
use docker::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// What a primary stopping by SIGTERM logs once it has handed its lease back.
const RELEASED: &str = "released the leader lease: a replica can take over at once";

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|l| l.split(' ').next().unwrap_or("?").to_string()).unwrap_or_default()
}

fn emit(line: Value) {
    println!("BENCH\t{line}");
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// Polls `f` every 100 ms until it returns `Some`, or `None` after `limit`.
fn within<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The cluster CA once some member has it (`pgrepl ca show` in a member container).
fn ca(p: &Project) -> Option<String> {
    MEMBERS.iter().find_map(|m| {
        exec(&p.container(m), "pgrepl --dir /var/lib/pgsql/data/pgrepl ca show 2>/dev/null", &[])
            .ok()
            .filter(|pem| pem.contains("BEGIN CERTIFICATE"))
    })
}

/// One write through the rw port, as a client arriving now would make it.
async fn one_write(p: &Project, admin: &str, tls: &Tls) -> bool {
    let attempt = async {
        let c = connect_with(p.rw(), admin, tls).await.ok()?;
        c.batch_execute(
            "CREATE TABLE IF NOT EXISTS ready (at timestamptz DEFAULT now()); INSERT INTO ready DEFAULT VALUES",
        )
        .await
        .ok()
    };
    tokio::time::timeout(Duration::from_secs(5), attempt).await.ok().flatten().is_some()
}

/// The longest interval between consecutive acknowledged writes from a second before `from`
/// on (the one before `from` included): (its start, its end), or `None` without a write after.
fn longest_gap(writer: &Writer, from: Instant) -> Option<(Instant, Instant)> {
    writer.with_log(|log| {
        let since = from.checked_sub(Duration::from_secs(1)).unwrap_or(from);
        let at: Vec<Instant> = log.acked.iter().map(|(_, at)| *at).filter(|at| *at >= since).collect();
        at.windows(2).filter(|w| w[1] > from).map(|w| (w[0], w[1])).max_by_key(|(a, b)| b.duration_since(*a))
    })
}

/// `make up` on a fresh project, timed to the first write and to the three members streaming.
async fn up_trial(mode: &str, vars: &[(&str, &str)], trial: u64, converge: Duration) -> Project {
    let [rw_port, ro_port] = common::free_ports::<2>();
    let load_at_start = load();
    let t0 = Instant::now();
    let p = Project::up(vars, rw_port, ro_port);
    let make_up = t0.elapsed();
    let admin = p.password("POSTGRESQL_ADMIN_PASSWORD");
    let (mut tls, mut first_write, mut streaming, mut ca_at) = (None, None, None, None);
    // Each step asks a member container (docker exec) and tries a write: its length is the
    // resolution of the figures.
    let mut steps = 0u32;
    while t0.elapsed() < converge && (first_write.is_none() || streaming.is_none()) {
        steps += 1;
        if tls.is_none() {
            if let Some(pem) = ca(&p) {
                tls = Some(Tls::verify_full(&pem));
                ca_at = Some(t0.elapsed());
            }
        }
        if let (None, Some(tls)) = (first_write, &tls) {
            if one_write(&p, &admin, tls).await {
                first_write = Some(t0.elapsed());
            }
        }
        if streaming.is_none() && p.converged(&[]).is_some() {
            streaming = Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    emit(json!({
        "kind": "up", "mode": mode, "trial": trial, "load": load_at_start,
        "make_up_s": secs(make_up), "ca_s": ca_at.map(secs),
        "first_write_s": first_write.map(secs), "streaming_s": streaming.map(secs),
        "step_s": secs((t0.elapsed() - make_up) / steps.max(1)),
    }));
    assert!(first_write.is_some() && streaming.is_some(), "{mode} up trial {trial}: not ready within {converge:?}");
    p
}

/// One `docker kill` or `docker stop` of the primary's container under the writer.
async fn fault_trial(
    p: &Project,
    mode: &str,
    fault: &str,
    trial: u64,
    first_id: i64,
    timeout: Duration,
    converge: Duration,
) -> i64 {
    let (leader, _) = within(converge, || p.converged(&[])).expect("the cluster converged before the trial");
    let tls = Tls::verify_full(&ca(p).expect("the cluster CA"));
    let admin = p.password("POSTGRESQL_ADMIN_PASSWORD");
    let load_at_start = load();
    let writer = Writer::start_with(vec![p.rw()], admin.clone(), first_id, tls.clone()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = writer.acked();
    let container = p.container(&leader);
    // A container's log spans its restarts: count the stopping primary's sentence before and after.
    let released_before = p.logs(&leader).matches(RELEASED).count();
    let t0 = Instant::now();
    let cmd = docker(&[fault, &container]);
    let cmd_s = t0.elapsed();
    let cmd_ok = cmd.status.success();
    // A new leader named by another member, and writes going on after it.
    let new_leader =
        within(timeout, || p.status_except(&[&leader])?["leader"].as_str().filter(|l| *l != leader).map(String::from));
    // Then a write acknowledged after that (on the new primary, the old one being gone).
    let seen = Instant::now();
    let resumed = within(timeout.saturating_sub(t0.elapsed()), || {
        writer.with_log(|log| log.acked.last().is_some_and(|(_, at)| *at > seen).then_some(()))
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let gap = longest_gap(&writer, t0);
    let log = writer.stop_with_log().await;
    let acked: Vec<i64> = log.acked.iter().map(|(id, _)| *id).collect();
    let lost = match &new_leader {
        Some(n) => Some(missing_with(p.pg_addr(n), &admin, &acked, &tls).await),
        None => None,
    };
    let released = fault == "stop" && p.logs(&leader).matches(RELEASED).count() > released_before;
    // The others see the old primary gone before it starts again, so that "converged" below is
    // its fresh status, not one it published before the fault.
    let gone = |s: Value| {
        s["members"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == leader.as_str())
            .map(|m| m["state"].clone())
            .filter(|state| state != "running" && state != "streaming")
    };
    let seen_down = within(converge, || gone(p.status_except(&[&leader])?)).map(|_| secs(t0.elapsed()));
    let restart = Instant::now();
    ok(&docker(&["start", &container]));
    let converged = within(converge, || p.converged(&[]));
    emit(json!({
        "kind": fault, "mode": mode, "trial": trial, "load": load_at_start,
        "old_primary": leader, "new_primary": new_leader, "cmd_s": secs(cmd_s), "cmd_ok": cmd_ok,
        "failed_over": new_leader.is_some() && resumed.is_some(),
        "recovery_s": gap.map(|(_, end)| secs(end.duration_since(t0))),
        "gap_s": gap.map(|(start, end)| secs(end.duration_since(start))),
        "acked": acked.len(), "acked_during_warmup": before,
        "lost": lost.as_ref().map(Vec::len), "lost_ids": lost.map(|l| l.into_iter().take(20).collect::<Vec<_>>()),
        "released_lease": released, "seen_down_s": seen_down,
        "rejoin_s": converged.as_ref().map(|_| secs(restart.elapsed())),
    }));
    assert!(converged.is_some(), "{mode} {fault} trial {trial}: the cluster did not converge within {converge:?}");
    log.sent + 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: bench/compose.sh (needs the pgrepl image and docker-compose)"]
async fn bench_compose() {
    require_image();
    let modes = std::env::var("BENCH_COMPOSE_MODES").unwrap_or_else(|_| "async sync".into());
    let up_trials = knob("BENCH_COMPOSE_UP_TRIALS", 5).max(1);
    let trials = knob("BENCH_COMPOSE_TRIALS", 5);
    let timeout = Duration::from_secs(knob("BENCH_COMPOSE_TIMEOUT", 60));
    let converge = Duration::from_secs(knob("BENCH_COMPOSE_CONVERGE_TIMEOUT", 180));
    for mode in modes.split_whitespace() {
        let vars: &[(&str, &str)] = match mode {
            "async" => &[("PGREPL_SYNCHRONOUS", "off")],
            "sync" => &[("PGREPL_SYNCHRONOUS", "on")],
            other => panic!("unknown mode {other} in BENCH_COMPOSE_MODES (async, sync)"),
        };
        let mut project = None;
        for trial in 1..=up_trials {
            // Down (with its volumes) before the next one comes up.
            drop(project.take());
            project = Some(up_trial(mode, vars, trial, converge).await);
        }
        let p = project.expect("an up trial");
        let mut next = 1;
        for fault in ["kill", "stop"] {
            for trial in 1..=trials {
                next = fault_trial(&p, mode, fault, trial, next, timeout, converge).await;
            }
        }
    }
}
