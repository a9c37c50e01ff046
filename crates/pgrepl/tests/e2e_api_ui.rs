//! End-to-end: the status page at `/ui`, rendered in headless Chromium (Debian's `chromium`,
//! installed by scripts/setup.sh) against a real cluster, checked from the DOM its script
//! built; `/history` keeps the replicas' lag in the agent, so a freshly loaded page shows what
//! happened before it. The screenshot is kept as target/artifacts/ui.png.

mod common;

use common::{eventually, http, TestCluster};
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn get_json(addr: &str, path: &str) -> Value {
    let reply = http::get(addr, path);
    assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
    reply.json()
}

/// Where the build keeps test artifacts: target/artifacts, beside the profile's directory.
fn artifacts() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_pgrepl"));
    let dir = bin.parent().and_then(Path::parent).unwrap().join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The page as Chromium's script left it after `budget` of virtual time, and its screenshot.
fn render(url: &str, screenshot: &Path, profile: &Path) -> String {
    let mut child = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--window-size=1280,900", "--virtual-time-budget=3000", "--dump-dom"])
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run chromium (scripts/setup.sh installs Debian's chromium)");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("chromium did not render {url} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut dom = String::new();
    child.stdout.take().unwrap().read_to_string(&mut dom).unwrap();
    dom
}

/// Every start tag in `dom` that carries `attr="value"`.
fn tags<'a>(dom: &'a str, attr: &str, value: &str) -> Vec<&'a str> {
    let needle = format!(" {attr}=\"{value}\"");
    dom.match_indices(&needle)
        .map(|(i, _)| {
            let start = dom[..i].rfind('<').unwrap();
            let end = i + dom[i..].find('>').unwrap();
            &dom[start..=end]
        })
        .collect()
}

/// The value of `attr` in one start tag.
fn attr<'a>(tag: &'a str, attr: &str) -> Option<&'a str> {
    let needle = format!(" {attr}=\"");
    let i = tag.find(&needle)? + needle.len();
    Some(&tag[i..i + tag[i..].find('"')?])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_every_member_the_primary_and_each_replicas_lag() {
    let c = TestCluster::new();
    c.ok(&["up", "--replicas", "2"]);
    let status = c.status();
    let members = status["members"].as_array().unwrap().clone();
    let primary = status["leader"].as_str().unwrap().to_string();
    let api = |name: &str| {
        let m = members.iter().find(|m| m["name"] == name).unwrap();
        m["api"].as_str().unwrap().to_string()
    };
    let replicas: Vec<String> =
        members.iter().filter(|m| m["role"] == "replica").map(|m| m["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(replicas.len(), 2, "{status:#}");
    let addr = api(&primary);

    // The page is one self-contained file that may reach nothing but its own agent.
    let reply = http::get(&addr, "/ui");
    let (code, head, page) = (reply.status, reply.headers.to_ascii_lowercase(), reply.body);
    assert_eq!(code, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(head.contains("content-security-policy: default-src 'none';"), "{head}");
    let lower = page.to_ascii_lowercase();
    for outside in ["http:", "https:", "ws:", "\"//", "'//", "(//", "src=", "href=", "@import"] {
        assert!(!lower.contains(outside), "the page has {outside:?}");
    }
    assert!(lower.match_indices("url(").all(|(i, _)| lower[i + 4..].starts_with('#')), "only local url(#id)");

    // Real lag on one replica: its replay paused while the primary writes, then resumed. The
    // agent's sampler records it in /history.
    let lagging = &replicas[1];
    let since = get_json(&addr, "/history")["now_unix_ms"].as_u64().unwrap();
    let replica = c.admin(c.port_of(lagging)).await;
    replica.batch_execute("SELECT pg_wal_replay_pause()").await.unwrap();
    let writer = c.admin(c.port_of(&primary)).await;
    writer
        .batch_execute(
            "CREATE TABLE filler (x text); INSERT INTO filler SELECT repeat('x', 200) FROM generate_series(1, 40000)",
        )
        .await
        .unwrap();
    let peak = eventually(Duration::from_secs(10), "the paused replica's lag in /history", || async {
        let h = get_json(&addr, &format!("/history?since={since}"));
        h["samples"].as_array()?.iter().filter_map(|s| s["lag_bytes"][lagging.as_str()].as_u64()).find(|&b| b > 1 << 20)
    })
    .await;
    replica.batch_execute("SELECT pg_wal_replay_resume()").await.unwrap();
    eventually(Duration::from_secs(10), "the replica caught up", || async {
        let h = get_json(&addr, "/history?since=0");
        let last = h["samples"].as_array()?.last()?.clone();
        (last["lag_bytes"][lagging.as_str()] == 0).then_some(())
    })
    .await;
    let history = get_json(&addr, "/history");
    assert_eq!(history["interval_ms"], 1000);
    assert_eq!(history["span_ms"], 900_000);
    let samples = history["samples"].as_array().unwrap();
    let times: Vec<u64> = samples.iter().map(|s| s["at_unix_ms"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "oldest first: {times:?}");
    for r in &replicas {
        assert!(samples.iter().any(|s| s["lag_bytes"].get(r).is_some()), "no sample of {r}");
    }

    // Rendered: every member with its role, the primary marked, a line per replica, and the
    // history from before the page was loaded.
    let shot = artifacts().join("ui.png");
    let _ = std::fs::remove_file(&shot);
    let dom = render(&format!("http://{addr}/ui"), &shot, &c.scratch("chromium"));
    assert!(dom.contains("data-polls="), "the page's script never finished a poll:\n{dom}");
    for m in &members {
        let (name, role) = (m["name"].as_str().unwrap(), m["role"].as_str().unwrap());
        let rows = tags(&dom, "data-member", name);
        assert_eq!(rows.len(), 1, "{name} in the members table");
        assert_eq!(attr(rows[0], "data-role"), Some(role), "{}", rows[0]);
        let boxes = tags(&dom, "data-node", name);
        assert_eq!(boxes.len(), 1, "{name} in the topology");
        assert_eq!(attr(boxes[0], "data-role"), Some(role), "{}", boxes[0]);
    }
    assert_eq!(attr(tags(&dom, "id", "topology")[0], "data-primary"), Some(primary.as_str()));
    assert!(dom.contains(&format!("<b id=\"primary-name\">{primary}</b>")), "the header names the primary");
    assert_eq!(attr(tags(&dom, "id", "health")[0], "data-health"), Some("ok"));
    assert_eq!(attr(tags(&dom, "data-route", "rw")[0], "data-route-to"), Some(primary.as_str()));
    for r in &replicas {
        let stream = tags(&dom, "data-stream-to", r);
        assert_eq!(stream.len(), 1, "an arrow from the primary to {r}");
        assert_eq!(attr(stream[0], "data-stream-from"), Some(primary.as_str()));
        let series = tags(&dom, "data-series", r);
        assert_eq!(series.len(), 1, "a line for {r} in the chart");
        assert!(attr(series[0], "d").is_some_and(|d| d.contains('L')), "{}", series[0]);
        assert_eq!(tags(&dom, "data-legend", r).len(), 1, "{r} in the legend");
    }
    assert_eq!(dom.matches(" data-series=\"").count(), replicas.len(), "a line per replica, no more");
    let drawn: usize = attr(tags(&dom, "id", "chart")[0], "data-samples").unwrap().parse().unwrap();
    assert!(
        drawn >= samples.len(),
        "the chart drew {drawn} samples; the agent held {} before the page loaded",
        samples.len()
    );
    assert!(peak > 1 << 20);
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "a screenshot with something on it");
}
