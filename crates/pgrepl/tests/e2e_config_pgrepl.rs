//! pgrepl's own cluster-wide settings (`pgrepl config set` of `synchronous`, `loop_wait`,
//! `ttl`, `ro_max_lag`, `ro_fallback`, `allow`) on a running one-machine cluster of a primary
//! and two replicas, under a writer through rw: each is taken live by every agent or by the
//! router, with no server restarted and no acknowledged row lost; synchronous mode turned on
//! makes the primary wait for a named standby and turned off stops it; a longer lease is
//! written with the new TTL; the router stops sending reads to lagging replicas and refuses
//! them instead of falling back to the primary; `pg_hba.conf` on every member lets the new
//! range in; a bad value is refused in one line naming the setting, and nothing changes. The
//! directory's `pgrepl.toml` follows, so `pgrepl up` again changes nothing; the history has
//! every change. A lease lengthened live fences a primary whose agent stopped by the new TTL,
//! and still before the lease the store holds could expire.

mod common;

use common::writer::{missing, Writer};
use common::{connect, eventually, one_primary_others_streaming, pids, server_processes, signal, TestCluster};
use serde_json::Value;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// When the server at `port` started.
async fn started_at(c: &TestCluster, port: u16) -> String {
    let row = c.admin(port).await.query_one("SELECT pg_postmaster_start_time()::text", &[]).await.unwrap();
    row.get(0)
}

/// A key's entry of the file store: its value (parsed) and expiry.
fn store_entry(c: &TestCluster, key: &str) -> Option<(Value, Option<u64>)> {
    let state: Value = serde_json::from_slice(&std::fs::read(c.dir.join("store/state.json")).ok()?).ok()?;
    let entry = &state["entries"][key];
    let value: Value = match &entry["value"] {
        Value::String(text) => serde_json::from_str(text).ok()?,
        Value::Null => return None,
        other => other.clone(),
    };
    Some((value, entry["expires_at_unix_ms"].as_u64()))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// `config show --json`'s pgrepl settings.
fn shown(c: &TestCluster) -> Value {
    let shown: Value = serde_json::from_str(&c.ok(&["config", "show", "--json"])).unwrap();
    shown["pgrepl"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgrepls_own_settings_are_taken_live_by_every_agent_and_the_router_and_bad_ones_are_refused() {
    let c = TestCluster::new();
    c.ok(&["up", "--replicas", "2"]);
    let members = c.all_members();
    assert_eq!(members.len(), 3);
    let password = c.secret("admin");
    let writer = Writer::start(c.rw_port, password.clone()).await;
    let mut started = Vec::new();
    for (_, port) in &members {
        started.push(started_at(&c, *port).await);
    }
    let pgrepl = shown(&c);
    assert_eq!((pgrepl["synchronous"].as_str(), pgrepl["ttl"].as_str()), (Some("off"), Some("4s")), "{pgrepl}");
    let text = c.ok(&["config", "show"]);
    assert!(text.contains("# pgrepl's cluster-wide settings") && text.contains("\nloop_wait = '1s'\n"), "{text}");

    // Synchronous on: the primary waits for a named standby, the sync record names it.
    let out = c.ok(&["config", "set", "synchronous=on"]);
    assert!(out.contains("set synchronous = 'on' for every member") && out.contains("with no restart"), "{out}");
    let primary = c.primary_port();
    eventually(LIMIT, "a synchronous standby on the primary", || async {
        let names = c.show(primary, "synchronous_standby_names").await?;
        let client = c.admin(primary).await;
        let row =
            client.query_one("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'", &[]).await.ok()?;
        let (record, _) = store_entry(&c, "sync")?;
        let named = record["members"].as_array().is_some_and(|m| m.len() == 1);
        (!names.is_empty() && row.get::<_, i64>(0) == 1 && named).then_some(())
    })
    .await;
    // `status --json` shows it too: one replica sync, the other async.
    eventually(LIMIT, "status to show one synchronous replica", || async {
        let status = c.status();
        let mut states: Vec<String> = status["replication"]
            .as_array()?
            .iter()
            .filter_map(|r| r["sync_state"].as_str().map(String::from))
            .collect();
        states.sort();
        (states == ["async", "sync"]).then_some(())
    })
    .await;
    let before_sync_off = writer.acked();
    // And off again: nobody waited for.
    c.ok(&["config", "set", "synchronous=off"]);
    eventually(LIMIT, "no synchronous standby", || async {
        let names = c.show(primary, "synchronous_standby_names").await;
        let status = c.status();
        let all_async = status["replication"].as_array()?.iter().all(|r| r["sync_state"] == "async");
        (names.as_deref() == Some("") && all_async).then_some(())
    })
    .await;
    eventually(LIMIT, "the writer writing on", || async { (writer.acked() > before_sync_off + 5).then_some(()) }).await;

    // A longer cycle and lease: the lease is written with the new TTL, every agent says so.
    c.ok(&["config", "set", "loop_wait=2s", "ttl=12s"]);
    eventually(LIMIT, "the lease renewed with ttl 12s", || async {
        let (_, expires) = store_entry(&c, "leader")?;
        // Past what the old 4s TTL could give, and within the new one.
        let left = expires?.saturating_sub(now_ms());
        (left > 6_000 && left <= 12_000).then_some(())
    })
    .await;
    for (name, _) in &members {
        eventually(LIMIT, &format!("{name}'s agent to take the new clocks"), || async {
            let log = std::fs::read_to_string(c.dir.join(format!("members/{name}/member.log"))).unwrap_or_default();
            log.contains("took the cluster's settings (loop_wait 1s -> 2s, ttl 4s -> 12s)").then_some(())
        })
        .await;
    }

    // Refused in one line naming the setting, the value and what is allowed; nothing written.
    let at = c.config_revision();
    for (pair, words) in [
        ("ttl=5s", "ttl: 5s is too short for loop_wait 2s: the lease must outlive three cycles"),
        ("synchronous=maybe", "synchronous: \"maybe\" is not allowed; use off, on or quorum"),
        ("allow=10.0.0.0/33", "allow: \"10.0.0.0/33\" is not an address range"),
    ] {
        let out = c.run(&["config", "set", pair]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(words), "{pair}: {err}");
        assert!(err.contains("nothing was changed") && err.trim().lines().count() == 1, "{pair}: {err}");
    }
    let out = c.run(&["config", "set", "loop_wait=1s", "ttl=1s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("ttl: 1s is too short for loop_wait 1s"), "{err}");
    assert_eq!(c.config_revision(), at, "nothing was written");
    assert_eq!(shown(&c)["ttl"], "12s");

    // The router: replicas lagging past ro_max_lag get no reads, and with ro_fallback = refuse
    // nor does the primary. With the defaults (16MB, primary) reads would reach the primary.
    c.ok(&["config", "set", "ro_max_lag=1MB", "ro_fallback=refuse"]);
    let replicas: Vec<(String, u16)> = members.iter().filter(|(_, port)| *port != primary).cloned().collect();
    for (_, port) in &replicas {
        c.admin(*port).await.batch_execute("SELECT pg_wal_replay_pause()").await.unwrap();
    }
    let primary_client = c.admin(primary).await;
    primary_client
        .batch_execute("CREATE TABLE bulk AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 50000) g")
        .await
        .unwrap();
    let refused = eventually(LIMIT, "the router to refuse reads", || async {
        match connect(c.ro_port, "postgres", &password, "postgres").await {
            Ok(_) => None,
            Err(e) => Some(format!("{e:?}")),
        }
    })
    .await;
    assert!(refused.contains("no replica is available for read-only connections"), "{refused}");
    let router_log = std::fs::read_to_string(c.dir.join("router.log")).unwrap_or_default();
    assert!(router_log.contains("took the cluster's routing settings"), "{router_log}");
    assert!(router_log.contains("took the cluster's ro_max_lag"), "{router_log}");
    for (_, port) in &replicas {
        c.admin(*port).await.batch_execute("SELECT pg_wal_replay_resume()").await.unwrap();
    }
    eventually(LIMIT, "reads on a replica again", || async {
        let client = connect(c.ro_port, "postgres", &password, "postgres").await.ok()?;
        let row = client.query_one("SELECT pg_is_in_recovery()", &[]).await.ok()?;
        row.get::<_, bool>(0).then_some(())
    })
    .await;

    // allow: every member's pg_hba.conf lets the new range in.
    c.ok(&["config", "set", "allow=127.0.0.1/32,::1/128,10.11.12.0/24"]);
    for (name, _) in &members {
        eventually(LIMIT, &format!("{name}'s pg_hba.conf to allow 10.11.12.0/24"), || async {
            let hba = std::fs::read_to_string(c.dir.join(format!("members/{name}/data/pg_hba.conf"))).ok()?;
            hba.contains("10.11.12.0/24").then_some(())
        })
        .await;
    }

    // Nothing restarted, the directory's configuration followed, and `up` changes nothing.
    for ((name, port), before) in members.iter().zip(&started) {
        assert_eq!(&started_at(&c, *port).await, before, "{name} was not restarted");
    }
    let toml = std::fs::read_to_string(c.dir.join("pgrepl.toml")).unwrap();
    assert!(toml.contains("ttl = \"12s\"") && toml.contains("10.11.12.0/24"), "{toml}");
    let at = c.config_revision();
    c.ok(&["up"]);
    assert_eq!(c.config_revision(), at, "up changed nothing");

    let history: Value = serde_json::from_str(&c.ok(&["config", "history", "--json"])).unwrap();
    let changed: Vec<(String, Value, Value)> = history
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|change| {
            change["parameters"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(n, v)| (n.clone(), v["old"].clone(), v["new"].clone()))
        })
        .collect();
    let s = |v: &str| Value::String(v.into());
    assert_eq!(
        changed,
        [
            ("synchronous".into(), s("off"), s("on")),
            ("synchronous".into(), s("on"), s("off")),
            ("loop_wait".into(), s("1s"), s("2s")),
            ("ttl".into(), s("4s"), s("12s")),
            ("ro_fallback".into(), s("primary"), s("refuse")),
            ("ro_max_lag".into(), s("16MB"), s("1MB")),
            ("allow".into(), s("127.0.0.1/32,::1/128"), s("127.0.0.1/32,::1/128,10.11.12.0/24")),
        ]
    );

    let acked = writer.stop().await;
    assert!(!acked.is_empty());
    assert_eq!(missing(c.primary_port(), &password, &acked).await, Vec::<i64>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_lengthened_live_fences_a_stopped_agents_primary_by_the_new_ttl_before_it_could_expire() {
    let c = TestCluster::new();
    c.ok(&["up", "--replicas", "1"]);
    c.ok(&["config", "set", "loop_wait=2s", "ttl=10s"]);
    eventually(LIMIT, "the lease renewed with ttl 10s", || async {
        let left = store_entry(&c, "leader")?.1?.saturating_sub(now_ms());
        (left > 6_000).then_some(())
    })
    .await;
    let old = c.leader();
    let agent = pids(&c, &format!("agent --member {old}"));
    assert_eq!(agent.len(), 1, "one agent of {old}: {agent:?}");
    signal(agent[0], libc::SIGSTOP);
    let stopped_ms = now_ms();
    // The last renewal the agent sent is in the store within a moment; its expiry is the deadline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (holder, expires_ms) = store_entry(&c, "leader").expect("the leader key in the store");
    assert_eq!(holder["member"], old.as_str());
    let expires_ms = expires_ms.expect("the lease has an expiry");
    let data = c.dir.join(format!("members/{old}/data"));
    let fenced_ms = eventually(Duration::from_secs(20), "the stopped agent's primary fenced", || async {
        server_processes(&data).is_empty().then(now_ms)
    })
    .await;
    signal(agent[0], libc::SIGCONT);
    eprintln!(
        "agent stopped at {stopped_ms}; fenced +{} ms; lease expiry +{} ms",
        fenced_ms - stopped_ms,
        expires_ms - stopped_ms
    );
    assert!(
        fenced_ms < expires_ms,
        "fenced at {fenced_ms}, after the lease's expiry {expires_ms} (agent stopped at {stopped_ms})"
    );
    // By the new TTL: the old one (4s) would have fenced within 4s of the stop.
    assert!(
        fenced_ms - stopped_ms > 4_000,
        "fenced {} ms after the stop: by the old ttl, not the 10s one in force",
        fenced_ms - stopped_ms
    );
    eventually(LIMIT, "one primary and the other member streaming again", || async {
        one_primary_others_streaming(&c.status())
    })
    .await;
}
