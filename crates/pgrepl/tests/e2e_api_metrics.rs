//! End-to-end: every member's `GET /metrics` and the router's own, parsed by Prometheus's own
//! text parser (PyPI's `prometheus_client`, installed by `scripts/setup.sh` in
//! `target/test-python`), agree with `pgrepl status --json`, the router's connection counts
//! move when a client connects through rw, and a switchover is counted as one.

mod common;

use common::{connect, eventually, http, member, TestCluster};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Python with `prometheus_client`: `$PGREPL_TEST_PYTHON`, else setup.sh's virtual environment.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("PGREPL_TEST_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-python/bin/python3");
    assert!(venv.exists(), "{} is missing: run scripts/setup.sh (it installs prometheus-client)", venv.display());
    venv
}

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
families = []
for f in text_string_to_metric_families(sys.stdin.read()):
    families.append({"name": f.name, "type": f.type, "help": f.documentation,
                     "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]})
print(json.dumps(families))
"#;

/// The families `text` holds, as `prometheus_client` parses them (a parse error fails the test).
fn parse(text: &str) -> Vec<Value> {
    let mut child = Command::new(python())
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the text:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `GET /metrics` at `addr`: the content type and the body.
fn fetch(addr: &str) -> (String, String) {
    let reply = http::get(addr, "/metrics");
    assert_eq!(reply.status, 200, "{}", reply.body);
    (reply.header("content-type").unwrap_or_default(), reply.body)
}

/// Parsed metrics: the value of a sample by name and the labels beyond `cluster` and `member`.
struct Metrics(Vec<Value>);

impl Metrics {
    async fn of(addr: &str) -> Metrics {
        let (content_type, text) = fetch(addr);
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        let families = parse(&text);
        for f in &families {
            assert!(!f["help"].as_str().unwrap_or("").is_empty(), "no HELP for {}", f["name"]);
            assert_ne!(f["type"], "unknown", "no TYPE for {}", f["name"]);
        }
        // One HELP line per metric, as the text itself says.
        let helps: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP ")).collect();
        let mut names: Vec<&str> = helps.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), helps.len(), "a metric with two HELP lines:\n{text}");
        Metrics(families)
    }

    fn samples(&self) -> impl Iterator<Item = &Value> {
        self.0.iter().flat_map(|f| f["samples"].as_array().unwrap())
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples()
            .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
            .map(|s| s["value"].as_f64().unwrap())
    }

    fn value(&self, name: &str) -> f64 {
        self.get(name, &[]).unwrap_or_else(|| panic!("no {name}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_match_status_and_the_router_counts_connections() {
    let c = TestCluster::new();
    c.ok(&["up", "--replicas", "1"]);
    // Some WAL to replay, so positions and lag are not all zero.
    let app = connect(c.primary_port(), "app", &c.secret("user"), "app").await.unwrap();
    app.batch_execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g").await.unwrap();
    let status = c.status();
    let cluster = status["cluster"].as_str().unwrap().to_string();
    let leader = status["leader"].as_str().unwrap().to_string();

    for m in status["members"].as_array().unwrap() {
        let name = m["name"].as_str().unwrap();
        let api = m["api"].as_str().unwrap_or_else(|| panic!("{name} published no API address: {m}"));
        // The agent's last cycle may predate the last status: wait until they agree.
        let metrics = eventually(Duration::from_secs(10), &format!("{name}'s /metrics to match status"), || async {
            let metrics = Metrics::of(api).await;
            let now = c.status();
            let m = member(&now, name);
            let role_matches = metrics.get("pgrepl_primary", &[]) == Some(f64::from(m["role"] == "primary"))
                && metrics.get("pgrepl_replica", &[]) == Some(f64::from(m["role"] == "replica"));
            (role_matches && metrics.get("pgrepl_timeline", &[]) == m["timeline"].as_f64()).then_some(metrics)
        })
        .await;
        for s in metrics.samples() {
            assert_eq!(s["labels"]["cluster"], cluster.as_str(), "{s}");
            assert_eq!(s["labels"]["member"], name, "{s}");
        }
        assert_eq!(metrics.get("pgrepl_info", &[("version", env!("CARGO_PKG_VERSION"))]), Some(1.0));
        assert_eq!(metrics.value("pgrepl_leader"), f64::from(name == leader), "{name}");
        assert_eq!(metrics.value("pgrepl_postgres_running"), 1.0);
        assert_eq!(metrics.value("pgrepl_cluster_unlocked"), 0.0);
        assert_eq!(metrics.value("pgrepl_maintenance_mode"), 0.0);
        assert!(metrics.value("pgrepl_cycles_total") >= 1.0);
        assert!(metrics.value("pgrepl_loop_age_seconds") < 10.0);
        assert!(metrics.value("pgrepl_cycle_duration_seconds_count") >= 1.0);
        let decided: f64 = metrics
            .samples()
            .filter(|s| s["name"] == "pgrepl_decisions_total")
            .map(|s| s["value"].as_f64().unwrap())
            .sum();
        assert_eq!(decided, metrics.value("pgrepl_cycles_total"), "one decision per cycle");
        assert_eq!(metrics.get("pgrepl_promotions_total", &[("kind", "failover")]), Some(0.0));
        if name == leader {
            assert!(metrics.value("pgrepl_wal_position_bytes") > 0.0);
            let left = metrics.value("pgrepl_lease_expires_in_seconds");
            assert!(left > 0.0 && left <= 30.0, "{left}");
        } else {
            assert!(metrics.value("pgrepl_wal_replayed_bytes") > 0.0);
            assert_eq!(metrics.value("pgrepl_postgres_streaming"), 1.0);
            assert!(metrics.get("pgrepl_lease_expires_in_seconds", &[]).is_none());
        }
    }

    // Lag: each replica's own and the primary's view of it, beside status --json's (all three
    // read at slightly different moments of a cluster now idle: equal within 1 MiB).
    let leader_api = member(&status, &leader)["api"].as_str().unwrap().to_string();
    for m in status["members"].as_array().unwrap().iter().filter(|m| m["role"] == "replica") {
        let name = m["name"].as_str().unwrap();
        let now = c.status();
        let lag = member(&now, name)["lag_bytes"].as_f64().unwrap();
        let own = Metrics::of(member(&now, name)["api"].as_str().unwrap()).await.value("pgrepl_lag_bytes");
        // The primary lists the replica from its first cycle after the replica's walsender
        // started, which may follow `up`'s return by a loop_wait.
        let seen = eventually(Duration::from_secs(10), &format!("{name} in the primary's metrics"), || async {
            let seen = Metrics::of(&leader_api).await;
            seen.get("pgrepl_replication_lag_bytes", &[("replica", name)]).is_some().then_some(seen)
        })
        .await;
        let from_primary = seen.get("pgrepl_replication_lag_bytes", &[("replica", name)]).unwrap();
        assert!(seen.get("pgrepl_replication_lag_seconds", &[("replica", name)]).is_some());
        for got in [own, from_primary] {
            assert!((got - lag).abs() <= 1048576.0, "{name}: status lag {lag}, metrics {got}");
        }
    }

    // The router process serves its counts on its own listener, named in status --json.
    let router =
        status["endpoints"]["metrics"].as_str().expect("endpoints.metrics names the router's listener").to_string();
    let routed = |m: &Metrics, name: &str| m.get(name, &[("endpoint", "rw"), ("backend", &leader)]).unwrap_or(0.0);
    let before = Metrics::of(&router).await;
    assert_eq!(before.get("pgrepl_info", &[("version", env!("CARGO_PKG_VERSION"))]), Some(1.0));
    assert!(before.samples().all(|s| s["labels"]["member"] == "router" && s["labels"]["cluster"] == cluster.as_str()));
    let client = connect(c.rw_port, "app", &c.secret("user"), "app").await.unwrap();
    client.query_one("SELECT 1", &[]).await.unwrap();
    let during = Metrics::of(&router).await;
    assert_eq!(
        routed(&during, "pgrepl_router_connections_total"),
        routed(&before, "pgrepl_router_connections_total") + 1.0
    );
    assert_eq!(
        routed(&during, "pgrepl_router_connections_open"),
        routed(&before, "pgrepl_router_connections_open") + 1.0
    );
    drop(client);
    eventually(Duration::from_secs(5), "the closed connection to leave the open count", || async {
        let after = Metrics::of(&router).await;
        (routed(&after, "pgrepl_router_connections_open") == routed(&before, "pgrepl_router_connections_open"))
            .then_some(())
    })
    .await;

    // A switchover counts as one on the member promoted, and as nothing on the one that left.
    c.ok(&["switchover"]);
    let now = c.status();
    let new_leader = now["leader"].as_str().unwrap().to_string();
    assert_ne!(new_leader, leader);
    for (name, switchovers) in [(&new_leader, 1.0), (&leader, 0.0)] {
        let api = member(&now, name)["api"].as_str().unwrap();
        let metrics = Metrics::of(api).await;
        assert_eq!(metrics.get("pgrepl_promotions_total", &[("kind", "switchover")]), Some(switchovers), "{name}");
        assert_eq!(metrics.get("pgrepl_promotions_total", &[("kind", "failover")]), Some(0.0), "{name}");
    }
}
