//! The split-brain probe: every 200 ms, a small write straight at every member's PostgreSQL
//! port, each from inside that member's own host (so a cut-off host is still asked), all three
//! sent at once. A server "accepts" in a round when its insert is acknowledged within 1 s (a
//! synchronous primary that cannot commit, or a stopped server, does not). Every run of rounds
//! in which two or more servers accepted is recorded as a window: there must be none. It also
//! counts the rounds in which exactly one server accepted, so a probe that never manages to
//! write is seen for what it is rather than passing as "no split brain".

use crate::common::netns::Hosts;
use crate::common::three_hosts::{ADMIN_PASSWORD, PG_PORT};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ROUND: Duration = Duration::from_millis(200);
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// The table the probe writes to (created through the rw endpoint before it starts).
pub const PROBE_TABLE: &str = "CREATE TABLE IF NOT EXISTS nemesis_probe (server int, at timestamptz DEFAULT now())";

/// Rounds in which two or more servers accepted a write, back to back.
#[derive(Clone, Debug)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
    /// Hosts (0-based) that accepted in any round of the window.
    pub servers: Vec<usize>,
    pub rounds: usize,
}

#[derive(Default)]
pub struct ProbeLog {
    pub windows: Vec<Window>,
    pub rounds: usize,
    /// Rounds in which exactly one server accepted.
    pub one_writable: usize,
    /// Rounds in which no server accepted.
    pub none_writable: usize,
}

pub struct WriteProbe {
    log: Arc<Mutex<ProbeLog>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl WriteProbe {
    pub fn start(hosts: Arc<Hosts>) -> WriteProbe {
        let log = Arc::new(Mutex::new(ProbeLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(probe(hosts, log.clone(), stop.clone()));
        WriteProbe { log, stop, task }
    }

    /// The windows closed so far, taken out of the log (the self-check's, before the faults).
    pub fn take_windows(&self) -> Vec<Window> {
        std::mem::take(&mut self.log.lock().unwrap().windows)
    }

    pub async fn stop(self) -> ProbeLog {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        Arc::try_unwrap(self.log).ok().unwrap().into_inner().unwrap()
    }
}

/// One server's session, kept between rounds while it answers.
struct Session {
    host: usize,
    client: Option<tokio_postgres::Client>,
}

impl Session {
    /// Whether the server acknowledged one insert within `ANSWER_WITHIN`.
    async fn accepts(&mut self, hosts: &Hosts) -> bool {
        let attempt = async {
            if self.client.is_none() {
                let client = hosts.sql_in(self.host, PG_PORT, "postgres", ADMIN_PASSWORD).await.ok()?;
                // A session given up on while its commit waits for a synchronous standby ends
                // (rather than piling up) once the server sees the client has gone.
                client.batch_execute("SET client_connection_check_interval = '300ms'").await.ok()?;
                self.client = Some(client);
            }
            let client = self.client.as_ref()?;
            let server = self.host as i32;
            match client.execute("INSERT INTO nemesis_probe (server) VALUES ($1)", &[&server]).await {
                Ok(_) => Some(true),
                // A standby: keep the session (it may be promoted).
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION) => Some(false),
                Err(_) => None,
            }
        };
        match tokio::time::timeout(ANSWER_WITHIN, attempt).await {
            Ok(Some(accepted)) => accepted,
            _ => {
                self.client = None;
                false
            }
        }
    }
}

async fn probe(hosts: Arc<Hosts>, log: Arc<Mutex<ProbeLog>>, stop: Arc<AtomicBool>) {
    let mut sessions: Vec<Session> = (0..hosts.len()).map(|host| Session { host, client: None }).collect();
    let mut open: Option<Window> = None;
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let answers = {
            let hosts = &hosts;
            let attempts = sessions.iter_mut().map(|s| s.accepts(hosts));
            futures_join(attempts).await
        };
        let accepted: Vec<usize> = answers.iter().enumerate().filter(|(_, a)| **a).map(|(i, _)| i).collect();
        record(&mut log.lock().unwrap(), &mut open, started, &accepted);
        tokio::time::sleep(ROUND.saturating_sub(started.elapsed())).await;
    }
    if let Some(w) = open.take() {
        log.lock().unwrap().windows.push(w);
    }
}

fn record(log: &mut ProbeLog, open: &mut Option<Window>, started: Instant, accepted: &[usize]) {
    log.rounds += 1;
    match accepted.len() {
        0 => log.none_writable += 1,
        1 => log.one_writable += 1,
        _ => {}
    }
    if accepted.len() >= 2 {
        let w = open.get_or_insert(Window { start: started, end: started, servers: vec![], rounds: 0 });
        w.end = Instant::now();
        w.rounds += 1;
        for s in accepted {
            if !w.servers.contains(s) {
                w.servers.push(*s);
            }
        }
    } else if let Some(w) = open.take() {
        log.windows.push(w);
    }
}

/// Runs the futures concurrently and returns their outputs in order.
async fn futures_join<F: std::future::Future<Output = bool>>(futures: impl Iterator<Item = F>) -> Vec<bool> {
    let mut pinned: Vec<_> = futures.map(Box::pin).collect();
    let mut done: Vec<Option<bool>> = vec![None; pinned.len()];
    std::future::poll_fn(|cx| {
        for (i, f) in pinned.iter_mut().enumerate() {
            if done[i].is_none() {
                if let std::task::Poll::Ready(v) = f.as_mut().poll(cx) {
                    done[i] = Some(v);
                }
            }
        }
        if done.iter().all(Option::is_some) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    done.into_iter().map(|v| v.unwrap_or(false)).collect()
}
