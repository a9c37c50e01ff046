//! Work asked of one member's loop from outside it (the HTTP API's `POST /restart` and
//! `POST /reinitialize`): handed over a channel and carried out by the loop between two
//! cycles, so it never runs beside one of the loop's own actions. The loop checks what only it
//! knows well (its server, the lease, maintenance mode), does the one step that starts the
//! work (stop the server; move the data directory aside), and answers with a sentence; its
//! next cycles finish it as `decide()` would anyway (start the stopped server; clone into the
//! missing directory). Nothing here deletes a data directory.

use crate::member::Agent;
use pgrepl_core::Server;
use pgrepl_pg::StopMode;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// How long a fast stop may take (a primary writes its shutdown checkpoint).
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// What may be asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chore {
    /// Stop this member's PostgreSQL, which the loop then starts again.
    Restart,
    /// This member, a replica, clones its leader afresh; its data directory is moved aside.
    Reinitialize,
}

/// Why a chore was not done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChoreError {
    /// Not now or not here; the sentence says why and what to do.
    Refused(String),
    /// It was tried and failed, or the loop is gone.
    Failed(String),
}

pub(crate) struct Asked {
    pub chore: Chore,
    pub reply: oneshot::Sender<Result<String, ChoreError>>,
}

/// The API's end of the channel; clones share it.
#[derive(Clone)]
pub struct Chores(pub(crate) mpsc::Sender<Asked>);

impl Chores {
    /// Asks the loop for `chore` and waits for its answer (the loop takes it after the cycle
    /// under way, which may be a long one: a clone, say; the caller bounds the wait).
    pub async fn ask(&self, chore: Chore) -> Result<String, ChoreError> {
        let gone = || ChoreError::Failed("this member's agent loop is not running (shutting down?)".to_string());
        let (reply, answer) = oneshot::channel();
        self.0.send(Asked { chore, reply }).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// The sentence for a server that maintenance mode would leave stopped.
fn paused_sentence(member: &str) -> String {
    format!(
        "the cluster is in maintenance mode (`pgrepl pause`), in which no agent starts a stopped PostgreSQL, so \
         {member} would stay stopped; end it with `pgrepl resume` first"
    )
}

impl Agent {
    pub(crate) async fn carry_out(&mut self, chore: Chore) -> Result<String, ChoreError> {
        let (_, view) = self.read_store().await.map_err(|e| ChoreError::Failed(format!("read the store: {e:#}")))?;
        let member = self.s.member.clone();
        if view.paused() {
            return Err(ChoreError::Refused(paused_sentence(member.as_str())));
        }
        if view.spec.as_ref().and_then(|s| s.members.get(&member)).is_some_and(|m| m.stopped) {
            return Err(ChoreError::Refused(format!(
                "{member} is stopped (`pgrepl stop`); start it with `pgrepl start {member}`"
            )));
        }
        let holds_lease = view.leader.as_ref() == Some(&member);
        match chore {
            Chore::Restart => {
                if !self.pg.postmaster_running() {
                    return Err(ChoreError::Refused(format!(
                        "{member}'s PostgreSQL is not running, so there is nothing to restart; its agent starts it \
                         when it can (see `pgrepl status` for why it has not)"
                    )));
                }
                self.stop_server(holds_lease).await?;
                info!("stopped PostgreSQL to restart it, as asked");
                Ok(format!("{member}'s PostgreSQL was stopped and is being started again"))
            }
            Chore::Reinitialize => {
                let server = self.observe_server().await;
                if holds_lease || matches!(server, Server::Primary { .. }) {
                    return Err(ChoreError::Refused(format!(
                        "{member} is the primary, which is never reinitialized (it is what replicas clone); hand \
                         over first with `pgrepl switchover`, then reinitialize {member} as a replica"
                    )));
                }
                let Some((leader, _)) = view.ready_leader() else {
                    return Err(ChoreError::Refused(format!(
                        "no primary runs, so {member} would have nothing to clone; reinitialize it once one does"
                    )));
                };
                if !self.pg.data_dir.join("PG_VERSION").exists() {
                    return Err(ChoreError::Refused(format!(
                        "{member} has no data directory yet: it is being cloned already (see `pgrepl status`)"
                    )));
                }
                let leader = leader.clone();
                self.stop_server(false).await?;
                let aside = self
                    .pg
                    .move_aside("reinitialize")
                    .map_err(|e| ChoreError::Failed(format!("move the data directory aside: {e}")))?;
                warn!(
                    moved_to = %aside.display(),
                    "reinitializing as asked over the HTTP API: the old data directory was moved aside, not deleted; cloning {leader} afresh"
                );
                Ok(format!(
                    "{member}'s data directory was moved aside to {} (not deleted); {member} clones {leader} afresh \
                     and rejoins as its replica",
                    aside.display()
                ))
            }
        }
    }

    /// A fast stop; the leader keeps its lease renewed meanwhile (a shutdown checkpoint can
    /// outlast the TTL).
    async fn stop_server(&mut self, holds_lease: bool) -> Result<(), ChoreError> {
        let pg = self.pg.clone();
        let stop = async move { pg.stop(StopMode::Fast, STOP_TIMEOUT).await };
        let stopped = if holds_lease { self.keeping_lease(stop).await } else { stop.await };
        stopped.map_err(|e| ChoreError::Failed(format!("stop PostgreSQL: {e}")))
    }
}
