//! Actions over HTTP: `POST /switchover`, `/failover`, `/restart`, `/reinitialize`, `/pause` and
//! `/resume`, off unless `api_token` is set, and each allowed only with the header
//! `Authorization: Bearer TOKEN` (compared in constant time). They run the CLI commands' own
//! cores (`promote::change_leader`, `pause::set_pause`) or ask this member's loop (`Chores`:
//! restart, reinitialize), so the rules and their sentences are the CLI's. Bodies are Patroni's
//! (`{"leader": ..., "candidate": ...}`); answers are JSON, `{"message": ...}` or
//! `{"error": ...}`: 401 without the right token (nothing changes), 403 while actions are off,
//! 400 for a bad body (naming the field), 412 when a rule refuses, 503 when it did not happen in
//! time or the store failed, 200 once done (202 for a reinitialize: under way). The token is
//! never logged.

use super::{error, json, Api, Reply};
use crate::commands::pause;
use crate::commands::promote::{self, Changed, Request as LeaderRequest};
use crate::commands::refusal::Refused;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use hyper::{Request, StatusCode};
use pgrepl_agent::{Chore, ChoreError};
use pgrepl_core::Server;
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long a switchover or failover may take before the answer says so (the CLI's `--wait`).
const LEADER_WAIT: Duration = Duration::from_secs(120);
/// How long every agent may take to see maintenance mode set or ended (the CLI's `--wait`).
const PAUSE_WAIT: Duration = Duration::from_secs(30);
/// How long a restarted server may take to run again.
const RESTART_WAIT: Duration = Duration::from_secs(120);
/// Most a body may hold.
const BODY_LIMIT: usize = 64 * 1024;

/// The actions, by path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Switchover,
    Failover,
    Restart,
    Reinitialize,
    Pause,
    Resume,
}

impl Action {
    fn parse(path: &str) -> Option<Action> {
        Some(match path {
            "/switchover" => Action::Switchover,
            "/failover" => Action::Failover,
            "/restart" => Action::Restart,
            "/reinitialize" => Action::Reinitialize,
            "/pause" => Action::Pause,
            "/resume" => Action::Resume,
            _ => return None,
        })
    }

    /// The body fields it takes.
    fn fields(self) -> &'static [&'static str] {
        match self {
            Action::Switchover | Action::Failover => &["leader", "candidate"],
            _ => &[],
        }
    }
}

/// Whether `path` names an action (answered by `answer` for a POST).
pub fn is_action(path: &str) -> bool {
    Action::parse(path).is_some()
}

/// The answer to `POST path`, which `is_action`.
pub async fn answer(api: &Api, path: &str, req: Request<Incoming>) -> Reply {
    let Some(action) = Action::parse(path) else {
        return error(StatusCode::NOT_FOUND, &format!("POST {path} is not part of pgrepl's API"));
    };
    if let Some(reply) = refuse_unauthorized(api, path, &req) {
        return reply;
    }
    let body = match read_body(req, action).await {
        Ok(body) => body,
        Err(sentence) => return error(StatusCode::BAD_REQUEST, &sentence),
    };
    info!(action = path, "carrying out an action asked over the HTTP API");
    match action {
        Action::Switchover | Action::Failover => change_leader(api, action, &body).await,
        Action::Pause | Action::Resume => {
            match pause::set_pause(&api.cluster, action == Action::Pause, PAUSE_WAIT).await {
                Ok(done) => done_reply(StatusCode::OK, &done.sentence, &done.warnings),
                Err(refused) => refused_reply(&refused),
            }
        }
        Action::Restart => restart(api).await,
        Action::Reinitialize => match api.chores.ask(Chore::Reinitialize).await {
            Ok(sentence) => done_reply(StatusCode::ACCEPTED, &sentence, &[]),
            Err(e) => chore_error(&e),
        },
    }
}

/// The refusal, unless actions are on and the request carries the token.
fn refuse_unauthorized(api: &Api, path: &str, req: &Request<Incoming>) -> Option<Reply> {
    let Some(token) = &api.cluster.config.api_token else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "actions over HTTP are off: set api_token (PGREPL_API_TOKEN, or PGREPL_API_TOKEN_FILE naming a file \
             that holds it) to allow them, with the header `Authorization: Bearer TOKEN`",
        ));
    };
    let given = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
    let bearer = given.and_then(|g| {
        let (scheme, rest) = g.split_at(g.len().min(7));
        scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
    });
    let sentence = match bearer {
        Some(given) if token.matches(given) => return None,
        Some(_) => "the bearer token is not this cluster's api_token; nothing was changed",
        None => "this action needs the header `Authorization: Bearer TOKEN` with the cluster's api_token; nothing was changed",
    };
    warn!(
        action = path,
        "refused an action over the HTTP API: {}",
        if bearer.is_some() { "wrong token" } else { "no token" }
    );
    let mut reply = error(StatusCode::UNAUTHORIZED, sentence);
    reply.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(reply)
}

/// The body as a JSON object holding only the fields `action` takes (empty: none).
async fn read_body(req: Request<Incoming>, action: Action) -> Result<Map<String, Value>, String> {
    let bytes = Limited::new(req.into_body(), BODY_LIMIT)
        .collect()
        .await
        .map_err(|e| format!("the body could not be read (at most {BODY_LIMIT} bytes): {e}"))?
        .to_bytes();
    parse_body(&bytes, action)
}

fn parse_body(bytes: &[u8], action: Action) -> Result<Map<String, Value>, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Value::Object(body) = value else {
        return Err("the body is not a JSON object; send one such as {\"candidate\": \"node-2\"}".to_string());
    };
    let takes = action.fields();
    for (field, value) in &body {
        if field == "scheduled_at" {
            return Err("scheduled_at: scheduled actions are not supported; ask when it should happen".to_string());
        }
        if !takes.contains(&field.as_str()) {
            let takes = match takes {
                [] => "no fields".to_string(),
                fields => fields.join(" and "),
            };
            return Err(format!("{field}: not a field of this action, which takes {takes}"));
        }
        if !value.is_string() && !value.is_null() {
            return Err(format!("{field}: must be a member's name as a string, such as \"node-2\", not {value}"));
        }
    }
    Ok(body)
}

/// A string field's value; null counts as absent.
fn field<'a>(body: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    body.get(name).and_then(Value::as_str)
}

async fn change_leader(api: &Api, action: Action, body: &Map<String, Value>) -> Reply {
    let candidate = field(body, "candidate").map(str::to_string);
    let request =
        match (action, candidate) {
            (Action::Failover, None) => return error(
                StatusCode::BAD_REQUEST,
                "candidate: missing; a failover needs the member to make the primary, as {\"candidate\": \"node-2\"}",
            ),
            (Action::Failover, Some(c)) => LeaderRequest::Failover(c),
            (_, candidate) => LeaderRequest::Switchover(candidate),
        };
    if let Some(expected) = field(body, "leader") {
        let view = match api.cluster.view().await {
            Ok((_, view)) => view,
            Err(e) => return refused_reply(&Refused::Failed(e)),
        };
        let leader = view.ready_leader().map(|(l, _)| l.to_string());
        if leader.as_deref() != Some(expected) {
            let actual = leader.map_or("no member runs as the primary".to_string(), |l| format!("{l} is"));
            return error(
                StatusCode::PRECONDITION_FAILED,
                &format!("leader: {expected} is not the leader ({actual}); nothing was changed"),
            );
        }
    }
    match promote::change_leader(&api.cluster, &request, LEADER_WAIT).await {
        Ok(Changed::Already(member)) => done_reply(StatusCode::OK, &format!("{member} is already the primary"), &[]),
        Ok(Changed::Done(member)) => {
            let verb = if action == Action::Failover { "failed over" } else { "switched over" };
            done_reply(StatusCode::OK, &format!("Successfully {verb} to \"{member}\""), &[])
        }
        Err(refused) => refused_reply(&refused),
    }
}

/// Asks the loop to stop the server, then waits until one of its cycles since sees it running.
async fn restart(api: &Api) -> Reply {
    if let Err(e) = api.chores.ask(Chore::Restart).await {
        return chore_error(&e);
    }
    let stopped = Instant::now();
    let member = &api.member;
    loop {
        let cycle = api.probe.last();
        if let Some(c) = cycle.as_ref().filter(|c| c.at > stopped) {
            if !matches!(c.server, Server::Stopped) {
                return done_reply(StatusCode::OK, &format!("{member}'s PostgreSQL restarted"), &[]);
            }
        }
        if stopped.elapsed() > RESTART_WAIT {
            let says = cycle.map_or(String::new(), |c| format!("; its agent says: {}", c.decision));
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "{member}'s PostgreSQL was stopped to restart it but does not run again after {}s{says}",
                    RESTART_WAIT.as_secs()
                ),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn done_reply(code: StatusCode, sentence: &str, warnings: &[String]) -> Reply {
    let mut body = json!({ "message": sentence });
    if !warnings.is_empty() {
        body["warnings"] = json!(warnings);
    }
    json(code, &body)
}

fn refused_reply(refused: &Refused) -> Reply {
    let code = match refused {
        Refused::Precondition(_) => StatusCode::PRECONDITION_FAILED,
        Refused::TimedOut(_) | Refused::Failed(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(code, &refused.to_string())
}

fn chore_error(e: &ChoreError) -> Reply {
    match e {
        ChoreError::Refused(sentence) => error(StatusCode::PRECONDITION_FAILED, sentence),
        ChoreError::Failed(sentence) => error(StatusCode::SERVICE_UNAVAILABLE, sentence),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_takes_only_its_action_s_fields_as_names() {
        assert_eq!(parse_body(b"", Action::Switchover), Ok(Map::new()));
        let body = parse_body(br#"{"leader": "node-1", "candidate": "node-2"}"#, Action::Switchover).unwrap();
        assert_eq!(field(&body, "candidate"), Some("node-2"));
        let e = parse_body(br#"{"candidate": 2}"#, Action::Failover).unwrap_err();
        assert!(e.starts_with("candidate: must be a member's name"), "{e}");
        let e = parse_body(br#"{"member": "node-2"}"#, Action::Switchover).unwrap_err();
        assert_eq!(e, "member: not a field of this action, which takes leader and candidate");
        let e = parse_body(br#"{"role": "replica"}"#, Action::Restart).unwrap_err();
        assert_eq!(e, "role: not a field of this action, which takes no fields");
        assert!(parse_body(br#"{"scheduled_at": "2030-01-01T00:00"}"#, Action::Switchover)
            .unwrap_err()
            .starts_with("scheduled_at: "));
        assert!(parse_body(b"[1]", Action::Pause).unwrap_err().contains("not a JSON object"));
        assert!(parse_body(b"{", Action::Pause).unwrap_err().starts_with("the body is not JSON"));
    }
}
