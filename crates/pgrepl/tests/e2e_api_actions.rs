//! End-to-end: the HTTP API's actions on a cluster started by `pgrepl up` with `api_token` given
//! in a file (`PGREPL_API_TOKEN_FILE`): refused without the token (401, nothing changes) or with
//! a wrong one, refused by the CLI's rules with their sentence, done with it (a switchover the
//! status shows, pause and resume, restarts of a replica and of the primary, a replica reinitialized with its old directory
//! kept), and the token in no process's arguments and no log. Without a token, actions are off.

mod common;

use common::{eventually, http, member, postmaster_pid, TestCluster};
use serde_json::Value;
use std::time::Duration;

const TOKEN: &str = "e2e-token-3f9c1a7d55b04e21";

/// A POST over a plain socket (the token must not go through a child's argv, as it would with
/// curl): the status code and the JSON body.
fn post(api: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let reply = http::post(api, path, token, body, Duration::from_secs(180));
    (reply.status, serde_json::from_str(&reply.body).unwrap_or(Value::Null))
}

/// Whether the file store holds `key`.
fn store_holds(c: &TestCluster, key: &str) -> bool {
    let state: Value = serde_json::from_slice(&std::fs::read(c.dir.join("store/state.json")).unwrap()).unwrap();
    assert!(state["entries"]["spec"].is_object(), "the store's layout is not what this test reads");
    !state["entries"][key].is_null()
}

fn api_of(status: &Value, name: &str) -> String {
    member(status, name)["api"].as_str().unwrap().to_string()
}

fn message(body: &Value) -> &str {
    body["message"].as_str().or(body["error"].as_str()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_over_http_need_the_token_follow_the_cli_s_rules_and_keep_it_secret() {
    let c = TestCluster::new();
    let token_file = c.scratch("api-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let up = c.run_env(&["up", "--replicas", "2"], &[("PGREPL_API_TOKEN_FILE", token_file.to_str().unwrap())]);
    assert!(up.status.success(), "{}", common::describe(&up));
    std::fs::remove_file(&token_file).unwrap();
    assert_eq!(c.secret("api_token"), TOKEN, "the token is kept in the secrets file");
    assert!(!std::fs::read_to_string(c.dir.join("pgrepl.toml")).unwrap().contains(TOKEN));

    let status = c.status();
    let old = c.leader();
    let replicas: Vec<String> = c.members("replica", "streaming").into_iter().map(|(n, _)| n).collect();
    assert_eq!(replicas.len(), 2);
    let (candidate, other) = (&replicas[0], &replicas[1]);
    // Sent to a replica's API: any member's API acts for the cluster, as Patroni's does.
    let api = api_of(&status, other);

    // Without the token, or with a wrong one: 401, and nothing changes.
    let body = format!(r#"{{"leader": "{old}", "candidate": "{candidate}"}}"#);
    let (code, answer) = post(&api, "/switchover", None, &body);
    assert_eq!(code, 401, "{answer}");
    assert!(message(&answer).contains("Authorization: Bearer"), "{answer}");
    let (code, answer) = post(&api, "/switchover", Some("e2e-token-wrong-wrong-wrong"), &body);
    assert_eq!(code, 401, "{answer}");
    let (code, _) = post(&api, "/pause", Some(&TOKEN[..TOKEN.len() - 1]), "");
    assert_eq!(code, 401, "a prefix of the token is not the token");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = c.status();
    assert_eq!(now["leader"], old.as_str(), "the leader changed after refused requests");
    assert!(!store_holds(&c, "target"), "a refused request left a target");
    assert_eq!(now["maintenance_mode"], false);

    // A bad body: 400 naming the field; a rule: 412 with the CLI's sentence.
    let (code, answer) = post(&api, "/switchover", Some(TOKEN), r#"{"candidate": 2}"#);
    assert_eq!((code, message(&answer).starts_with("candidate: ")), (400, true), "{answer}");
    let (code, answer) = post(&api, "/failover", Some(TOKEN), "{}");
    assert_eq!((code, message(&answer).starts_with("candidate: missing")), (400, true), "{answer}");
    let (code, answer) = post(&api, "/switchover", Some(TOKEN), &format!(r#"{{"leader": "{candidate}"}}"#));
    assert_eq!(code, 412, "{answer}");
    assert_eq!(message(&answer), format!("leader: {candidate} is not the leader ({old} is); nothing was changed"));
    let (code, answer) = post(&api, "/switchover", Some(TOKEN), r#"{"candidate": "node-9"}"#);
    assert_eq!(code, 412, "{answer}");
    assert!(message(&answer).starts_with("unknown member \"node-9\"; the members are node-1"), "{answer}");
    let (code, answer) = post(&api_of(&status, &old), "/reinitialize", Some(TOKEN), "");
    assert_eq!(code, 412, "{answer}");
    assert!(message(&answer).contains("is the primary, which is never reinitialized"), "{answer}");
    assert_eq!(c.leader(), old);

    // With the token: the switchover happens, and the POST answers once it has.
    let (code, answer) = post(&api, "/switchover", Some(TOKEN), &body);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(message(&answer), format!("Successfully switched over to \"{candidate}\""));
    assert_eq!(c.converged().as_deref(), Some(candidate.as_str()), "{:#}", c.status());
    assert_eq!(c.leader(), *candidate);

    // Pause and resume.
    let (code, answer) = post(&api, "/pause", Some(TOKEN), "");
    assert_eq!(code, 200, "{answer}");
    assert!(message(&answer).starts_with("MAINTENANCE MODE"), "{answer}");
    assert_eq!(c.status()["maintenance_mode"], true);
    let (code, answer) = post(&api, "/restart", Some(TOKEN), "");
    assert_eq!(code, 412, "paused, a stopped server would stay stopped: {answer}");
    assert!(message(&answer).contains("maintenance mode"), "{answer}");
    let (code, answer) = post(&api, "/resume", Some(TOKEN), "");
    assert_eq!(code, 200, "{answer}");
    assert!(message(&answer).contains("resumed"), "{answer}");
    assert_eq!(c.status()["maintenance_mode"], false);

    // A restart of the replica `other`: a new postmaster, streaming again.
    let before = postmaster_pid(&c, other);
    let (code, answer) = post(&api, "/restart", Some(TOKEN), "");
    assert_eq!(code, 200, "{answer}");
    assert_eq!(message(&answer), format!("{other}'s PostgreSQL restarted"));
    assert_ne!(postmaster_pid(&c, other), before, "the postmaster is the same process");
    eventually(Duration::from_secs(30), "the restarted replica to stream", || async {
        c.converged().filter(|l| l == candidate)
    })
    .await;

    // A reinitialize of the same replica: accepted (202), its old directory moved aside, and it
    // streams again from a fresh clone.
    let (code, answer) = post(&api, "/reinitialize", Some(TOKEN), "");
    assert_eq!(code, 202, "{answer}");
    assert!(message(&answer).contains("moved aside"), "{answer}");
    let member_dir = c.dir.join(format!("members/{other}"));
    let aside: Vec<_> = std::fs::read_dir(&member_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("data.reinitialize-"))
        .collect();
    assert_eq!(aside.len(), 1, "the old data directory should be kept beside the new one");
    assert!(aside[0].path().join("PG_VERSION").exists());
    eventually(Duration::from_secs(90), "the reinitialized replica to stream", || async {
        c.converged().filter(|l| l == candidate)
    })
    .await;

    // A restart of the primary: it keeps the lease and runs as the primary again.
    let before = postmaster_pid(&c, candidate);
    let (code, answer) = post(&api_of(&status, candidate), "/restart", Some(TOKEN), "");
    assert_eq!(code, 200, "{answer}");
    assert_ne!(postmaster_pid(&c, candidate), before, "the primary's postmaster is the same process");
    eventually(Duration::from_secs(30), "the restarted primary to lead a converged cluster", || async {
        c.converged().filter(|l| l == candidate)
    })
    .await;

    // The token is in no process's arguments and in no log.
    let mut cmdlines = String::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(bytes) = std::fs::read(entry.path().join("cmdline")) {
            cmdlines += &String::from_utf8_lossy(&bytes);
        }
    }
    assert!(cmdlines.contains("agent"), "the agents' command lines should have been read");
    assert!(!cmdlines.contains(TOKEN), "the token appears in a process's arguments");
    let mut logs = std::fs::read_to_string(c.dir.join("supervisor.log")).unwrap();
    for n in 1..=3 {
        logs += &std::fs::read_to_string(c.dir.join(format!("members/node-{n}/member.log"))).unwrap();
    }
    assert!(logs.contains("carrying out an action asked over the HTTP API"), "the actions should be logged");
    assert!(!logs.contains(TOKEN), "the token appears in a log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_actions_over_http_are_off() {
    let c = TestCluster::new();
    c.ok(&["up", "--replicas", "0"]);
    let status = c.status();
    let api = api_of(&status, "node-1");
    for path in ["/pause", "/switchover", "/restart"] {
        let (code, answer) = post(&api, path, Some(TOKEN), "");
        assert_eq!(code, 403, "{path}: {answer}");
        assert!(message(&answer).starts_with("actions over HTTP are off: set api_token"), "{answer}");
    }
    assert_eq!(c.status()["maintenance_mode"], false);
}
