//! The randomized fault test (`make nemesis`; a 10-fault run of a fixed seed is part of `make
//! test`): three hosts (network namespaces), each with one member of a three-member etcd and one
//! `pgrepl node --router`. A writer of unique ids goes through the routers' rw endpoints (the
//! next one after any error) and a probe writes straight at every member's port from inside its
//! host. Rounds of one or two faults, drawn from a seeded generator by the members' roles, are
//! each held 1-15 s and healed; after each, the cluster must converge (one primary, every other
//! member streaming) within 30 s, and the checker compares the writer's acknowledged ids with
//! the primary's table and the table's checksum on every member. At the end: acknowledged writes
//! lost (none allowed in synchronous mode), ids present that were never sent, windows with two
//! writable servers, diverged members, and late convergence all fail the test, after the report
//! (per fault type, markdown) is printed and written to `target/nemesis/`.
//!
//! Replay a run with its seed: `NEMESIS_SEED=... NEMESIS_FAULTS=... NEMESIS_SYNC=on|off make
//! nemesis`.

mod common;
#[path = "common/nemesis/mod.rs"]
mod kit;

use common::three_hosts::{member, Cluster, ADMIN_PASSWORD, HOSTS, PG_PORT, RW_PORT};
use common::writer::Writer;
use kit::check;
use kit::faults;
use kit::probe::{Window, WriteProbe, PROBE_TABLE};
use kit::report::{self, Round, Totals, CONVERGE_WITHIN};
use rand::SeedableRng;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long after a heal the run waits before it re-clones members that have not rejoined.
const REPAIR_AFTER: Duration = Duration::from_secs(60);
/// How long after that it waits before it stops.
const GIVE_UP_AFTER: Duration = Duration::from_secs(90);
/// A wait of the writer longer than this counts as the rw endpoint being unavailable.
const GAP: Duration = Duration::from_millis(500);

struct Params {
    seed: u64,
    faults: usize,
    synchronous: &'static str,
}

fn out_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/nemesis")
}

/// The writer's row, or a shared one: two faults at once, a switchover during a fault.
fn row_of(plan: &faults::Plan) -> String {
    if plan.faults.len() > 1 {
        "two faults at once".into()
    } else if plan.switchover.is_some() {
        "switchover during a fault".into()
    } else {
        plan.faults[0].label()
    }
}

async fn run(p: Params) -> (Vec<Round>, Totals) {
    eprintln!(
        "nemesis: seed {} ({} faults, synchronous = {}); replay with NEMESIS_SEED={} NEMESIS_FAULTS={} NEMESIS_SYNC={}",
        p.seed, p.faults, p.synchronous, p.seed, p.faults, p.synchronous
    );
    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(p.seed);
    let mut c = Cluster::new();
    c.synchronous = Some(p.synchronous);
    c.start_etcd().await;
    c.configure();
    for i in 0..HOSTS {
        c.start_node(i);
    }
    let (mut primary, _) = check::wait_converged(&c, Duration::from_secs(120))
        .await
        .unwrap_or_else(|| panic!("the cluster never converged\n{}", c.logs()));
    let routers: Vec<SocketAddr> = (0..HOSTS).map(|i| SocketAddr::new(c.hosts.addr(i), RW_PORT)).collect();
    let writer = Writer::start_through(routers, ADMIN_PASSWORD.to_string(), 1).await;
    let setup = c.hosts.sql_in(primary, PG_PORT, "postgres", ADMIN_PASSWORD).await.unwrap();
    setup.batch_execute(PROBE_TABLE).await.unwrap();
    let probe = WriteProbe::start(c.hosts.clone());
    eprintln!("nemesis: converged at {:?} ({} primary)", started.elapsed(), member(primary));
    let (self_check, back) = probe_sees_a_rogue_primary(&c, &probe, primary).await;
    primary = back;

    let mut rounds = Vec::new();
    let mut spans = Vec::new();
    let mut lost_before = 0;
    let mut stuck = false;
    for number in 1..=p.faults {
        let plan = faults::draw(&mut rng, primary);
        let began_at = Instant::now();
        let began = report::wall_clock();
        let label = plan.label();
        let detail: Vec<String> = plan.faults.iter().map(faults::Fault::detail).collect();
        eprintln!("nemesis {number}/{}: {began} {label} ({}), held {:?}", p.faults, detail.join(", "), plan.hold);
        let mut notes = Vec::new();
        let mut exited = 0;
        for said in c.restart_exited_nodes() {
            eprintln!("nemesis {number}: before the fault: {said}");
            notes.push(format!("before the fault: {said}"));
            exited += 1;
        }
        let applied: Vec<_> = plan.faults.iter().map(|f| faults::apply(&mut c, f)).collect();
        let mut switchover = None;
        match plan.switchover {
            Some(at) => {
                tokio::time::sleep(at).await;
                let from = (0..HOSTS).find(|h| !plan.touched().contains(h)).unwrap_or(0);
                switchover = Some((Instant::now(), faults::start_switchover(&c, from)));
                tokio::time::sleep(plan.hold - at).await;
            }
            None => tokio::time::sleep(plan.hold).await,
        }
        for a in applied.into_iter().rev() {
            faults::heal(&mut c, a);
        }
        let healed = Instant::now();
        // A switchover started during the fault ends (or gives up) before convergence is judged.
        if let Some((at, mut child)) = switchover {
            let deadline = at + Duration::from_secs(40);
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let out = child.wait_with_output().unwrap();
            let said = String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default().to_string();
            notes.push(format!("switchover: {status:?} after {:.1} s: {said}", at.elapsed().as_secs_f64()));
        }
        let mut converged = None;
        while converged.is_none() && healed.elapsed() < REPAIR_AFTER {
            for said in c.restart_exited_nodes() {
                eprintln!("nemesis {number}: {said}");
                notes.push(said);
                exited += 1;
            }
            converged = check::wait_converged(&c, Duration::from_secs(5)).await.map(|(p, _)| (p, healed.elapsed()));
        }
        if converged.is_none() {
            // Recorded as a failure to converge; the members left behind are cloned afresh, as
            // an operator would, so the run can go on finding other failures.
            match check::not_streaming(&c).await {
                Some((p, behind)) if !behind.is_empty() => {
                    let names: Vec<String> = behind.iter().map(|i| member(*i)).collect();
                    eprintln!("nemesis {number}: not converged after {REPAIR_AFTER:?}: {} not streaming from {}; cloning afresh\n{}", names.join(", "), member(p), c.logs());
                    notes.push(format!(
                        "not converged after {REPAIR_AFTER:?}: {} not streaming from {}, cloned afresh",
                        names.join(", "),
                        member(p)
                    ));
                    for i in behind {
                        faults::reclone(&mut c, i);
                    }
                    converged = check::wait_converged(&c, GIVE_UP_AFTER).await.map(|(p, _)| (p, healed.elapsed()));
                }
                _ => converged = check::wait_converged(&c, GIVE_UP_AFTER).await.map(|(p, _)| (p, healed.elapsed())),
            }
        }
        let converged = converged.map(|(p, took)| {
            primary = p;
            took
        });
        let converged_within = converged.filter(|d| *d <= CONVERGE_WITHIN);
        match converged {
            Some(d) if d > CONVERGE_WITHIN => notes.push(format!("converged only after {:.1} s", d.as_secs_f64())),
            None => {
                notes.push(format!(
                    "not converged {:?} after the heal: the run stops here",
                    REPAIR_AFTER + GIVE_UP_AFTER
                ));
                stuck = true;
            }
            _ => {}
        }
        let (mut lost, mut diverged) = (0, 0);
        if !stuck {
            let mut read = check::writes(&c, primary, &writer).await;
            if read.is_none() {
                // The same second chance as the checksum's below.
                if let Some((p, _)) = check::wait_converged(&c, CONVERGE_WITHIN).await {
                    primary = p;
                }
                read = check::writes(&c, primary, &writer).await;
            }
            match read {
                Some(w) => {
                    lost = w.lost.len().saturating_sub(lost_before);
                    if lost > 0 {
                        notes.push(format!("lost ids {:?}", &w.lost[w.lost.len().saturating_sub(10)..]));
                    }
                    if !w.phantom.is_empty() {
                        notes.push(format!("ids never sent but present: {:?}", w.phantom));
                    }
                    lost_before = w.lost.len();
                }
                None => notes.push("could not read the primary's ids".into()),
            }
            // A server that stops answering between convergence and the checksum (the primary
            // fenced late, say) gets another try once the cluster has converged again.
            for attempt in 1..=3 {
                match check::checksums(&c, primary, None, Duration::from_secs(10)).await {
                    Ok(sums) => {
                        diverged = check::diverged(&sums, primary);
                        if diverged > 0 {
                            notes.push(format!("checksums {sums:?}"));
                        }
                        break;
                    }
                    Err(e) => {
                        notes.push(format!("checksum (try {attempt}): {e}"));
                        if let Some((p, _)) = check::wait_converged(&c, CONVERGE_WITHIN).await {
                            primary = p;
                        }
                    }
                }
            }
        }
        let ended = Instant::now();
        eprintln!(
            "nemesis {number}: healed {:.1} s after it began; converged {converged:?} after the heal; lost {lost}; \
             diverged {diverged}{}",
            healed.duration_since(began_at).as_secs_f64(),
            notes.iter().map(|n| format!("; {n}")).collect::<String>()
        );
        spans.push((began_at, ended));
        rounds.push(Round {
            number,
            row: row_of(&plan),
            label,
            detail: detail.join(", "),
            began,
            hold: plan.hold,
            unavailable: Duration::ZERO,
            lost,
            windows: 0,
            converged: converged_within,
            diverged,
            exited,
            notes,
        });
        if stuck {
            break;
        }
    }

    // The final check, with everything quiet: every acknowledged id on the primary, nothing
    // that was never sent, the same table on every member.
    let probe_log = probe.stop().await;
    let log = writer.stop_with_log().await;
    let acked: Vec<i64> = log.acked.iter().map(|(id, _)| *id).collect();
    let acks: Vec<Instant> = log.acked.iter().map(|(_, t)| *t).collect();
    let mut totals = Totals {
        seed: p.seed,
        synchronous: p.synchronous.to_string(),
        faults: rounds.len(),
        duration: started.elapsed(),
        acked: acked.len(),
        lost: 0,
        unknown: 0,
        phantom: 0,
        windows: probe_log.windows.len(),
        windows_between: 0,
        probe_rounds: probe_log.rounds,
        probe_one_writable: probe_log.one_writable,
        self_check_windows: self_check.len(),
        diverged: 0,
        final_checksums: vec![],
    };
    for (r, (from, to)) in rounds.iter_mut().zip(&spans) {
        r.unavailable = check::unavailable(&acks, *from, *to, GAP);
    }
    for w in &probe_log.windows {
        let servers: Vec<String> = w.servers.iter().map(|s| member(*s)).collect();
        let at = spans.iter().position(|(from, to)| w.start >= *from && w.start <= *to);
        let text = format!(
            "split brain: {} accepted writes in {} probe rounds over {:.1} s",
            servers.join(" and "),
            w.rounds,
            w.end.duration_since(w.start).as_secs_f64()
        );
        eprintln!("nemesis: {text} (round {:?})", at.map(|a| a + 1));
        match at {
            Some(a) => {
                rounds[a].windows += 1;
                rounds[a].notes.push(text);
            }
            None => totals.windows_between += 1,
        }
    }
    if !stuck {
        match check::wait_converged(&c, CONVERGE_WITHIN).await {
            Some((p, _)) => {
                if let Some(w) = check::writes_of(&c, p, &log).await {
                    totals.lost = w.lost.len();
                    totals.unknown = w.unknown;
                    totals.phantom = w.phantom.len();
                }
                match check::checksums(&c, p, None, Duration::from_secs(30)).await {
                    Ok(sums) => {
                        totals.diverged = check::diverged(&sums, p);
                        totals.final_checksums = sums;
                    }
                    Err(e) => eprintln!("nemesis: final checksum: {e}"),
                }
            }
            None => stuck = true,
        }
    }
    totals.duration = started.elapsed();
    let text = report::render(&rounds, &totals);
    eprintln!("{text}");
    let dir = out_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let name = format!("{}-sync-{}", p.seed, p.synchronous);
    std::fs::write(dir.join(format!("{name}.md")), &text).unwrap();
    // The members' and etcd's logs, for whoever must find out what happened in a round.
    let logs = dir.join(&name);
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).unwrap();
    for i in 0..HOSTS {
        let _ = std::fs::copy(c.log(i), logs.join(format!("node-{}.log", i + 1)));
        let postgres = c.dir(i).join(format!("members/{}/member.log", member(i)));
        let _ = std::fs::copy(postgres, logs.join(format!("postgres-{}.log", i + 1)));
        let _ =
            std::fs::copy(c.tmp.path().join(format!("etcd-{}.log", i + 1)), logs.join(format!("etcd-{}.log", i + 1)));
    }
    eprintln!("nemesis: report in {}, logs in {}", dir.join(format!("{name}.md")).display(), logs.display());
    if stuck {
        eprintln!("{}", c.logs());
    }
    assert!(!stuck, "the cluster did not converge within {:?} (see the rounds above)", REPAIR_AFTER + GIVE_UP_AFTER);
    (rounds, totals)
}

/// Proves that the probe can see two writable servers: a replica promoted by hand
/// (`pg_promote()`, behind pgrepl's back) while the primary runs must show up as a window before
/// its agent demotes it again (which can take less than a probe round: up to five tries).
/// Returns the windows seen, and the primary once converged again.
async fn probe_sees_a_rogue_primary(c: &Cluster, probe: &WriteProbe, mut primary: usize) -> (Vec<Window>, usize) {
    for attempt in 1..=5 {
        let rogue = (primary + 1) % HOSTS;
        let client = c.hosts.sql_in(rogue, PG_PORT, "postgres", ADMIN_PASSWORD).await.unwrap();
        let promoted: bool = client.query_one("SELECT pg_promote(true, 10)", &[]).await.unwrap().get(0);
        assert!(promoted, "pg_promote() on {}", member(rogue));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (back, took) = check::wait_converged(c, Duration::from_secs(90)).await.unwrap_or_else(|| {
            panic!("the cluster never converged after {} was promoted by hand\n{}", member(rogue), c.logs())
        });
        primary = back;
        let windows = probe.take_windows();
        eprintln!(
            "nemesis: self-check {attempt}: {} promoted by hand; the probe saw {} window(s) with two writable servers \
             ({:?} rounds); converged again {took:?} later ({} primary)",
            member(rogue),
            windows.len(),
            windows.iter().map(|w| w.rounds).collect::<Vec<_>>(),
            member(back)
        );
        if !windows.is_empty() {
            return (windows, primary);
        }
    }
    (vec![], primary)
}

/// What the run must show, checked after the report is out.
fn assert_held(rounds: &[Round], t: &Totals) {
    assert!(t.acked > 100, "the writer acknowledged only {} writes", t.acked);
    assert!(t.self_check_windows > 0, "the probe did not see a replica promoted by hand as a second writable server");
    assert!(
        t.probe_one_writable * 4 > t.probe_rounds,
        "the probe found a writable server in only {} of {} rounds: it is not probing",
        t.probe_one_writable,
        t.probe_rounds
    );
    let late: Vec<usize> = rounds.iter().filter(|r| r.converged.is_none()).map(|r| r.number).collect();
    let diverged: Vec<usize> = rounds.iter().filter(|r| r.diverged > 0).map(|r| r.number).collect();
    let split: Vec<usize> = rounds.iter().filter(|r| r.windows > 0).map(|r| r.number).collect();
    let mut failures = Vec::new();
    if t.synchronous == "on" && t.lost > 0 {
        failures.push(format!("{} acknowledged writes lost in synchronous mode", t.lost));
    }
    if t.phantom > 0 {
        failures.push(format!("{} ids present that were never sent", t.phantom));
    }
    if t.windows > 0 {
        failures.push(format!("{} windows with two writable servers (rounds {split:?})", t.windows));
    }
    if t.diverged > 0 || !diverged.is_empty() {
        failures.push(format!("members diverged (rounds {diverged:?}, {} at the end)", t.diverged));
    }
    let exited: Vec<usize> = rounds.iter().filter(|r| r.exited > 0).map(|r| r.number).collect();
    if !exited.is_empty() {
        failures.push(format!("a node exited on its own in rounds {exited:?}"));
    }
    if !late.is_empty() {
        failures.push(format!("not converged within {CONVERGE_WITHIN:?} after rounds {late:?}"));
    }
    assert!(failures.is_empty(), "nemesis seed {}: {}", t.seed, failures.join("; "));
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not valid")),
        _ => default,
    }
}

fn synchronous_from_env() -> &'static str {
    match std::env::var("NEMESIS_SYNC").as_deref() {
        Ok("off") => "off",
        Ok("on" | "") | Err(_) => "on",
        Ok(other) => panic!("NEMESIS_SYNC={other:?}: on or off"),
    }
}

/// The short run of `make test`: 10 faults of a fixed seed, synchronous.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_faults_of_a_fixed_seed() {
    let (rounds, totals) = run(Params { seed: 15, faults: 10, synchronous: "on" }).await;
    assert_held(&rounds, &totals);
}

/// The long run of `make nemesis`: `NEMESIS_FAULTS` (100) faults of `NEMESIS_SEED` (random,
/// printed) in `NEMESIS_SYNC` (on) mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "the long run: make nemesis"]
async fn nemesis() {
    let seed = env_or("NEMESIS_SEED", u64::from(rand::random::<u32>()));
    let faults = env_or("NEMESIS_FAULTS", 100);
    let (rounds, totals) = run(Params { seed, faults, synchronous: synchronous_from_env() }).await;
    assert_held(&rounds, &totals);
}

#[test]
fn unavailability_counts_only_the_long_gaps_inside_the_span() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let acks = [at(0), at(100), at(200), at(1_200), at(1_300), at(3_000)];
    // 200..1200 and 1300..2500 (clipped at the span's end) are gaps over 500 ms.
    assert_eq!(check::unavailable(&acks, at(150), at(2_500), GAP), Duration::from_millis(2_200));
    assert_eq!(check::unavailable(&acks, at(0), at(200), GAP), Duration::ZERO);
    // No acknowledgement at all inside the span: all of it.
    assert_eq!(check::unavailable(&acks, at(1_400), at(2_900), GAP), Duration::from_millis(1_500));
}
