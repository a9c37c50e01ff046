//! The agent's end of the fence (invariant 1). The fence itself is a separate process, the
//! fencer (`fencer.rs`), so that it keeps working while this agent is stopped, hung or starved.
//! `Fence` is the handle the loop beats: `arm` after each renewal (the lease holds until the
//! renewal was sent plus the TTL), `limit` for a primary that holds no lease (it must demote
//! by then), `disarm` when the server is no primary and the member holds no lease. A task
//! keeps one connection to the fencer, starting a new fencer (and re-sending the current
//! deadline) whenever it has none, so a fencer that dies is replaced at once; fences the
//! fencer reports are handed to the loop (`take_fired`) to log and record in the store.

use crate::fencer;
use pgrepl_core::fence::{Beat, FenceState, Fired};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// How long a newly started fencer has to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the fencer runs and how to start one.
#[derive(Clone, Debug)]
pub struct FencerPlace {
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    /// The `pgrepl` binary (`pgrepl fencer ...` starts a fencer).
    pub program: PathBuf,
}

pub struct Fence {
    beats: mpsc::UnboundedSender<Beat>,
    fired: Arc<Mutex<Vec<Fired>>>,
    /// Whether the task is connected to a fencer now.
    connected: tokio::sync::watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Fence {
    /// Starts the task that keeps a fencer for `place`; it ends when the handle is dropped
    /// (the fencer then stays only while it still has a deadline to keep).
    pub fn start(place: FencerPlace) -> Fence {
        let (beats, rx) = mpsc::unbounded_channel();
        let fired = Arc::new(Mutex::new(Vec::new()));
        let (connected_tx, connected) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(keep_fencer(place, rx, fired.clone(), connected_tx));
        Fence { beats, fired, connected, task }
    }

    /// The lease is held until `until` on the boot clock (`fencer::boot_now`).
    pub fn arm(&self, until: Duration) {
        let _ = self.beats.send(Beat::Arm(until));
    }

    /// PostgreSQL must be stopped by `until` at the latest, whatever was armed before.
    pub fn limit(&self, until: Duration) {
        let _ = self.beats.send(Beat::Limit(until));
    }

    pub fn disarm(&self) {
        let _ = self.beats.send(Beat::Disarm);
    }

    /// Waits until a fencer listens, for at most `limit`; false if none did by then.
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        let mut connected = self.connected.clone();
        tokio::time::timeout(limit, connected.wait_for(|c| *c)).await.is_ok_and(|r| r.is_ok())
    }

    /// Disarms and lets the fencer go (it exits, having nothing to guard), waiting briefly for
    /// the fencer to have been told.
    pub async fn close(self) {
        let _ = self.beats.send(Beat::Disarm);
        drop(self.beats);
        let _ = tokio::time::timeout(Duration::from_secs(1), self.task).await;
    }

    /// Fences reported since the last call.
    pub fn take_fired(&self) -> Vec<Fired> {
        std::mem::take(&mut *self.fired.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

async fn keep_fencer(
    place: FencerPlace,
    mut beats: mpsc::UnboundedReceiver<Beat>,
    fired: Arc<Mutex<Vec<Fired>>>,
    connected: tokio::sync::watch::Sender<bool>,
) {
    // What this agent last asked of the fencer, re-sent to a new one; `None` until its first
    // beat, so that a new agent taking over a running fencer does not disarm it before it
    // has looked at the lease itself.
    let mut wanted: Option<FenceState> = None;
    let mut first = true;
    loop {
        let stream = match connect_or_start(&place, first).await {
            Ok(stream) => stream,
            Err(e) => {
                warn!("start the fencer: {e:#}; trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        first = false;
        take_left_fences(&place, &fired);
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        while let Ok(beat) = beats.try_recv() {
            wanted.get_or_insert_with(FenceState::default).apply(beat);
        }
        if let Some(current) = wanted.map(|w| w.lease_until().map_or(Beat::Disarm, Beat::Arm)) {
            if write.write_all(current.to_line().as_bytes()).await.is_err() {
                warn!("the fencer went away before it took the current deadline; starting a new one");
                continue;
            }
        }
        connected.send_replace(true);
        loop {
            tokio::select! {
                beat = beats.recv() => {
                    let Some(beat) = beat else { return };
                    wanted.get_or_insert_with(FenceState::default).apply(beat);
                    if write.write_all(beat.to_line().as_bytes()).await.is_err() {
                        break;
                    }
                }
                line = lines.next_line() => match line {
                    Ok(Some(line)) => match Fired::parse(&line) {
                        Some(f) => fired.lock().unwrap_or_else(|e| e.into_inner()).push(f),
                        None => warn!(%line, "the agent ignores a line from its fencer it does not understand"),
                    },
                    _ => break,
                },
            }
        }
        connected.send_replace(false);
        warn!("the fencer went away; starting a new one and handing it the current deadline");
    }
}

/// Hands over the fences a fencer that ran without an agent left behind (and removes them).
fn take_left_fences(place: &FencerPlace, fired: &Mutex<Vec<Fired>>) {
    let path = fencer::unreported_path(&place.socket);
    let Ok(text) = std::fs::read_to_string(&path) else { return };
    let _ = std::fs::remove_file(&path);
    fired.lock().unwrap_or_else(|e| e.into_inner()).extend(text.lines().filter_map(Fired::parse));
}

/// Connects to the member's fencer, starting one when none listens.
async fn connect_or_start(place: &FencerPlace, first: bool) -> anyhow::Result<UnixStream> {
    if let Ok(stream) = UnixStream::connect(&place.socket).await {
        if first {
            info!(socket = %place.socket.display(), "the agent took over the running fencer");
        }
        return Ok(stream);
    }
    let mut child = tokio::process::Command::new(&place.program)
        .arg("fencer")
        .arg("--data-dir")
        .arg(&place.data_dir)
        .arg("--socket")
        .arg(&place.socket)
        .stdin(Stdio::null())
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| anyhow::anyhow!("run {} fencer: {e}", place.program.display()))?;
    let pid = child.id();
    // Reap it whenever it ends; it outlives this agent when it must.
    tokio::spawn(async move { child.wait().await });
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        match UnixStream::connect(&place.socket).await {
            Ok(stream) => {
                info!(pid, "started the fencer");
                return Ok(stream);
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                anyhow::bail!("the fencer did not listen on {} within {START_TIMEOUT:?}: {e}", place.socket.display())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}
