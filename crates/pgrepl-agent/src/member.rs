//! `Agent`: one member's loop. Each cycle reads one store snapshot and the local server, asks
//! `decide()` for one action, carries it out, and publishes the member's status. The cycle's
//! sentence is logged when it changes (and, in maintenance mode, again once per `loop_wait`).
//! Between cycles it takes work asked from outside (`chore`). Runs until told to shut down,
//! then stops PostgreSQL and gives up the lease.

use crate::chore::{Asked, Chores};
use crate::fence::{Fence, FencerPlace};
use crate::fencer::{self, boot_now};
use crate::probe::{Cycle, Probe, Promotion};
use crate::publish;
use crate::settings::Settings;
use crate::stream_clock::StreamClock;
use anyhow::Context;
use pgrepl_core::lease::{self, Renewal};
use pgrepl_core::{
    decide, keys, Action, ClusterView, DataDir, Decision, Observation, PasswordKind, PasswordVersions, Reason, Server,
    Upstream,
};
use pgrepl_pg::{Binaries, Instance, StopMode};
use pgrepl_store::{Condition, Snapshot, Store, StoreError};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, error, info, info_span, warn, Instrument};

/// How long after another member's lease could expire this agent looks again.
const LEASE_EXPIRY_SLACK: Duration = Duration::from_millis(20);

/// How long the agent waits for its fencer before its first cycle.
const FENCER_START_LIMIT: Duration = Duration::from_secs(5);

/// How long a primary that does not hold the lease may run before the fencer stops it, should
/// this agent not demote it first (a clean demotion usually takes under a second; its
/// shutdown checkpoint may take longer on a busy server).
const DEMOTE_BOUND: Duration = Duration::from_secs(10);

pub struct Agent {
    /// Its settings; the cluster-wide ones (`follow`) as the spec last read says.
    pub(crate) s: Settings,
    /// Its own configuration's cluster-wide settings, for a spec without the cluster's.
    pub(crate) own: crate::follow::Own,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) pg: Instance,
    first_cycle: bool,
    /// Role password versions set on this primary since the agent started (`None`: none yet).
    pub(crate) applied: Option<PasswordVersions>,
    /// Replication password version in the password file, once this agent wrote it.
    pub(crate) passfile_version: Option<u64>,
    /// How long this replica has not streamed from the leader (restart and stall bounds).
    stream: StreamClock,
    /// Since when this leader's server has been stopped (for `primary_start_timeout`).
    down_since: Option<Instant>,
    /// Stops PostgreSQL if the lease this member holds is about to expire unrenewed.
    pub(crate) fence: Fence,
    /// The last observation saw maintenance mode: the fence stays disarmed (also when the store
    /// is then lost: no demotion while paused) and renewals do not arm it.
    paused: bool,
    /// `synchronous_standby_names` this agent last set (`None`: from the store's record).
    pub(crate) standby_names: Option<String>,
    /// What this agent last wrote into `pg_hba.conf` (`None`: nothing yet).
    pub(crate) hba: Option<pgrepl_pg::HbaRules>,
    /// The server configuration last written (`configure`), which a change of the cluster's
    /// parameters rewrites with only those changed.
    pub(crate) conf: Option<pgrepl_pg::ServerConf>,
    /// What its running server applies only at its next restart (`pg_settings.pending_restart`).
    pub(crate) pending_restart: Vec<String>,
    /// Which of this host's secrets were found stale, and against what.
    secrets_checked: Option<SecretsChecked>,
    /// The `pgrepl restart` request it last restarted its server for.
    pub(crate) restarted_for: Option<u64>,
    /// The newest `pgrepl reload` carried out.
    pub(crate) reloaded_ms: Option<u64>,
    /// Why an asked restart waits, as last logged.
    pub(crate) restart_wait: Option<String>,
    /// When this member's certificate was last installed or looked at, and the names it was
    /// to have then (`None`: not yet).
    pub(crate) tls_checked: Option<(Instant, Vec<String>)>,
    /// The given certificate files' fingerprint when last installed (`tls::fingerprint`).
    pub(crate) tls_given: Option<u64>,
    /// The installed certificate, as last checked (its end is published and warned of).
    pub(crate) tls_cert: Option<pgrepl_tls::CertInfo>,
    /// When its coming end was last warned of in the log (at most hourly).
    pub(crate) tls_warned: Option<Instant>,
    cycle: u64,
    last_sentence: String,
    /// When the sentence was last logged (paused, an unchanged one is logged again each loop_wait).
    last_said: Option<Instant>,
    /// The store revision of this agent's last write: waking for it would only wake the agent
    /// for its own writes.
    own_revision: u64,
    /// One connection to the local server, kept across cycles (reconnected when it closes).
    client: Option<tokio_postgres::Client>,
    /// What was last published and when, so an unchanged status is not rewritten every wake.
    pub(crate) last_published: Option<(pgrepl_core::MemberStatus, Instant)>,
    /// The last warning sentence (a fork, say), published until this replica streams again.
    pub(crate) warning: Option<String>,
    /// What the HTTP API reads of this loop.
    probe: Probe,
    /// Work asked of the loop from outside (`Chores`), taken between cycles.
    chores: mpsc::Receiver<Asked>,
    chores_tx: mpsc::Sender<Asked>,
}

/// The spec's verifiers and the secrets file's modification time, last checked against each
/// other, and which secrets were stale then.
struct SecretsChecked {
    verifiers: std::collections::BTreeMap<PasswordKind, String>,
    modified: Option<std::time::SystemTime>,
    stale: Vec<PasswordKind>,
}

/// One cycle's reading of the world.
pub(crate) struct Seen {
    pub snapshot: Snapshot,
    pub obs: Observation,
}

impl Seen {
    /// How long the leader lease seen in this snapshot has left, when it has a TTL.
    pub fn lease_left(&self) -> Option<Duration> {
        self.snapshot.get(keys::LEADER)?.expires_in
    }
}

impl Agent {
    pub fn new(s: Settings, store: Arc<dyn Store>) -> anyhow::Result<Agent> {
        let bins = Binaries::find(s.bin_dir.as_deref())?;
        let listen = s.member_cidrs.first().and_then(|c| c.split('/').next()).unwrap_or("127.0.0.1").to_string();
        let pg = Instance {
            bins,
            data_dir: s.data_dir.clone(),
            socket_dir: s.socket_dir.clone(),
            listen_address: listen,
            port: 0,
            log_file: s.log_file.clone(),
            name: s.member.to_string(),
        };
        let fence = Fence::start(FencerPlace {
            data_dir: s.data_dir.clone(),
            socket: fencer::socket_path(&s.socket_dir),
            program: std::env::current_exe().context("find the pgrepl binary (it runs the fencer)")?,
        });
        let (chores_tx, chores) = mpsc::channel(4);
        Ok(Agent {
            chores,
            chores_tx,
            own: crate::follow::Own::of(&s),
            s,
            store,
            fence,
            paused: false,
            down_since: None,
            standby_names: None,
            hba: None,
            conf: None,
            pending_restart: vec![],
            secrets_checked: None,
            restarted_for: None,
            reloaded_ms: None,
            restart_wait: None,
            tls_checked: None,
            tls_given: None,
            tls_cert: None,
            tls_warned: None,
            pg,
            first_cycle: true,
            applied: None,
            passfile_version: None,
            stream: StreamClock::default(),
            cycle: 0,
            last_sentence: String::new(),
            last_said: None,
            last_published: None,
            client: None,
            own_revision: 0,
            warning: None,
            probe: Probe::default(),
        })
    }

    /// A handle on this loop's last cycle, beat and counters, for the HTTP API.
    pub fn probe(&self) -> Probe {
        self.probe.clone()
    }

    /// A handle to ask this loop for work between its cycles (restart, reinitialize).
    pub fn chores(&self) -> Chores {
        Chores(self.chores_tx.clone())
    }

    /// Runs cycles until `shutdown` completes, then stops PostgreSQL and releases the lease.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        info!(member = %self.s.member, "agent started");
        // The fencer runs before this agent starts or promotes anything. Without one the loop
        // still runs (a primary it finds must be demoted if it lost the lease), and the task
        // keeps trying to start one.
        if !self.fence.wait_connected(FENCER_START_LIMIT).await {
            error!("no fencer runs for this member yet: its PostgreSQL is not fenced until one does (see the warnings above)");
        }
        loop {
            self.cycle += 1;
            let span = info_span!("cycle", member = %self.s.member, n = self.cycle);
            let (seen_revision, again_now, lease_left) = self.run_cycle().instrument(span).await;
            // Also after a cycle that could not read the store: the loop runs, the store fails.
            self.probe.beat();
            let revision = seen_revision.max(self.own_revision);
            let store = self.store.clone();
            // Wake when another member's lease could expire, so a lost leader is replaced at once.
            let wait = lease_left.map_or(self.s.loop_wait, |left| self.s.loop_wait.min(left + LEASE_EXPIRY_SLACK));
            let pause = async move {
                if again_now {
                    tokio::task::yield_now().await;
                } else if store.wait_change(revision, wait).await.is_err() {
                    tokio::time::sleep(wait).await;
                }
            };
            let asked = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                asked = self.chores.recv() => asked,
                _ = pause => None,
            };
            if let Some(Asked { chore, reply }) = asked {
                let answer = self.carry_out(chore).await;
                let _ = reply.send(answer);
            }
        }
        self.shut_down().await
    }

    /// One observe -> decide -> act -> publish. Returns the store revision seen, whether
    /// to run again at once (an action was taken, so the world has changed), and the time left
    /// on another member's lease.
    async fn run_cycle(&mut self) -> (u64, bool, Option<Duration>) {
        let began = Instant::now();
        let seen = match self.observe().await {
            Ok(seen) => seen,
            Err(e) => {
                self.say(&format!("cannot observe the cluster: {e:#}"), false);
                // Nothing to wait for a change after: pause a whole cycle instead of spinning.
                tokio::time::sleep(self.s.loop_wait).await;
                return (0, false, None);
            }
        };
        let revision = seen.snapshot.revision;
        let leader = seen.obs.cluster.leader.as_ref();
        let others_lease_left = seen.lease_left().filter(|_| leader.is_some_and(|l| *l != self.s.member));
        let decision = decide(&seen.obs);
        let sentence = self.sentence(&decision);
        self.say(&sentence, decision.reason.is_warning());
        if decision.reason.is_warning() {
            self.warning = Some(sentence);
        } else if matches!(seen.obs.server, Server::Replica { streaming: true, .. } | Server::Primary { .. }) {
            self.warning = None;
        }
        self.first_cycle = false;
        let quiet = matches!(decision.action, Action::Wait | Action::Nothing | Action::RenewLease);
        let renewed = self.renew_lease_if_held(&seen, &decision).await;
        // What this cycle observed is published before its action runs, so that readers (the
        // router first) see, say, a new primary at once rather than after its spec work.
        if let Err(e) = publish::status(self, &seen, &decision, None).await {
            warn!("publish member status: {e:#}");
        }
        self.probe.record(Cycle {
            view: seen.obs.cluster.clone(),
            server: seen.obs.server.clone(),
            holds_lease: seen.obs.cluster.leader.as_ref() == Some(&self.s.member),
            status: publish::build(self, &seen, decision.to_string(), None),
            action: decision.action.name(),
            decision: decision.to_string(),
            lease_left: seen.lease_left(),
            at: began,
            took: began.elapsed(),
        });
        let outcome = match renewed {
            Ok(()) => self.act(&seen, &decision).await,
            Err(e) => Err(e),
        };
        match decision.action {
            // A re-pointed, started or rewound replica gets the whole bounds again.
            Action::Rewind { .. } | Action::Follow { .. } | Action::StartAsReplica { .. } => self.stream.reset(),
            // One restarted for not streaming waits a whole restart bound before the next, but
            // not a whole stall bound: should restarts not help, the rewind still comes.
            Action::RestartReplica { .. } => self.stream.restarted(Instant::now()),
            _ => {}
        }
        // After a quiet cycle `seen` still holds; a busy one runs again at once.
        let mut restarted = false;
        if quiet && outcome.is_ok() {
            if let Err(e) = self.refresh_hba(&seen).await {
                warn!("allow the members' hosts in pg_hba.conf: {e:#}");
            }
            if let Err(e) = self.refresh_tls(&seen).await {
                warn!("renew this member's certificate: {e:#}");
            }
            if let Err(e) = self.refresh_parameters(&seen).await {
                warn!("apply the cluster's parameters: {e:#}");
            }
            match self.refresh_requests(&seen).await {
                Ok(stopped) => restarted = stopped,
                Err(e) => warn!("carry out `pgrepl reload` or `pgrepl restart`: {e:#}"),
            }
        }
        if outcome.is_ok() && matches!(decision.action, Action::Promote { .. }) {
            self.probe.promoted(Promotion::of(&seen.obs.cluster, &self.s.member));
        }
        let failed = outcome.is_err();
        if let Err(e) = outcome {
            self.probe.failed(decision.action.name());
            let sentence = format!("{decision} failed: {e:#}");
            warn!("{sentence}");
            if let Err(e) = publish::status(self, &seen, &decision, Some(&sentence)).await {
                warn!("publish member status: {e:#}");
            }
        }
        // A server stopped to be restarted is started by the next cycle, at once.
        (revision, (!quiet && !failed) || restarted, others_lease_left)
    }

    /// The decision's sentence; for a replica that does not stream, with what its WAL receiver
    /// last said in the server log (a certificate refused, a login refused), which PostgreSQL
    /// tells nowhere else.
    fn sentence(&self, decision: &Decision) -> String {
        let mut sentence = decision.to_string();
        if matches!(decision.reason, Reason::NotStreaming { .. }) {
            if let Some(said) = self.pg.wal_receiver_error() {
                sentence.push_str(&format!("; its WAL receiver last said: {said}"));
            }
        }
        sentence
    }

    /// Logs the cycle's sentence when it changed (as a warning when it reports something gone
    /// wrong); in maintenance mode also an unchanged one, about once per `loop_wait`, so the log
    /// keeps saying that the cluster is paused.
    fn say(&mut self, sentence: &str, warning: bool) {
        let reminder = self.paused && self.last_said.is_none_or(|at| at.elapsed() >= self.s.loop_wait);
        if sentence != self.last_sentence || reminder {
            if warning {
                warn!("{sentence}");
            } else {
                info!("{sentence}");
            }
            self.last_sentence = sentence.to_string();
            self.last_said = Some(Instant::now());
        }
    }

    async fn observe(&mut self) -> anyhow::Result<Seen> {
        let at = boot_now();
        self.record_fences().await;
        let snapshot = self.store.snapshot().await.context("read the store")?;
        let cluster =
            ClusterView::from_entries(snapshot.entries.iter().map(|(k, e)| (k.as_str(), e.value.as_slice())))?;
        self.follow_spec(cluster.spec.as_ref());
        if let Some(port) = cluster.spec.as_ref().and_then(|s| s.members.get(&self.s.member)).map(|m| m.port) {
            self.pg.port = port;
        }
        let data = self.pg.data_dir_state().context("inspect the data directory")?;
        let server = if data == DataDir::Missing { Server::Stopped } else { self.observe_server().await };
        if server == Server::Stopped {
            // A server that stopped applies every pending parameter when it starts again.
            self.pending_restart.clear();
        }
        let (server, history) = self.observe_timelines(server).await;
        let (slots, replication, standby_names) = match (&server, &self.client) {
            (Server::Primary { .. }, Some(client)) => (
                pgrepl_pg::sql::slots(client).await?,
                pgrepl_pg::sql::replication_rows(client).await?,
                Some(pgrepl_pg::sql::standby_names(client).await?),
            ),
            _ => (vec![], vec![], None),
        };
        let holds_lease = cluster.leader.as_ref() == Some(&self.s.member);
        if cluster.paused() != self.paused {
            match cluster.paused() {
                true => warn!("maintenance mode: no automatic failover, no restart of a stopped PostgreSQL, the fence disarmed, until `pgrepl resume`"),
                false => info!("maintenance mode ended: deciding again from this observation, the fence armed while the lease is held"),
            }
        }
        self.paused = cluster.paused();
        if self.paused {
            // Maintenance mode: no fence, also once the store is lost; the next beat re-arms it.
            self.fence.disarm();
        } else {
            self.beat_fence(holds_lease, &server, snapshot.get(keys::LEADER).and_then(|e| e.expires_in), at);
        }
        // The clock runs while this member leads, or led last, with its server down: a leader
        // that gave its lease up for failing to start must not take it straight back.
        let led_last = cluster.last_leader.as_ref().is_some_and(|r| r.member == self.s.member);
        // Paused, the clocks stand still: after `resume` they start afresh.
        let leader_down = (holds_lease || led_last) && server == Server::Stopped && !self.paused;
        self.down_since = if leader_down { Some(self.down_since.unwrap_or_else(Instant::now)) } else { None };
        let start_overdue = self.down_since.is_some_and(|t| t.elapsed() > self.s.primary_start_timeout);
        let leader_endpoint = cluster
            .leader
            .as_ref()
            .and_then(|l| cluster.spec.as_ref()?.members.get(l))
            .map(|m| Upstream { host: m.host.clone(), port: m.port });
        let not_streaming_at = match &server {
            Server::Replica { upstream, streaming: false, replay_lsn, .. }
                if *upstream == leader_endpoint && upstream.is_some() && !self.paused =>
            {
                Some(*replay_lsn)
            }
            _ => None,
        };
        let now = Instant::now();
        self.stream.observe(not_streaming_at, now);
        let replica_stalled = self.stream.stalled(now, self.s.stall_timeout);
        let replica_not_streaming_long = self.stream.restart_due(now, self.s.stream_restart_timeout);
        let obs = Observation {
            me: self.s.member.clone(),
            first_cycle: self.first_cycle,
            destroy_on_restart: self.s.destroy_on_restart,
            data,
            server,
            replica_stalled,
            replica_not_streaming_long,
            applied_passwords: self.applied,
            passfile_password: self.passfile_version,
            stale_secrets: self.stale_secrets(cluster.spec.as_ref()),
            bootstrap_unfinished: self.bootstrap_mark().exists(),
            start_overdue,
            slots,
            replication,
            standby_names,
            history,
            cluster,
        };
        Ok(Seen { snapshot, obs })
    }

    /// Which of this host's secrets it connects to other members with (admin, replication)
    /// are not the passwords the spec's verifiers were made from (the user password only a
    /// primary needs, and it takes the verifier). Checked again only when a verifier or the
    /// secrets file changes (a check costs 4096 HMACs); an unreadable secrets file is left to
    /// the actions that need it to report.
    fn stale_secrets(&mut self, spec: Option<&pgrepl_core::Spec>) -> Vec<PasswordKind> {
        let mut verifiers = spec.map(|s| s.verifiers.clone()).unwrap_or_default();
        verifiers.remove(&PasswordKind::User);
        if verifiers.is_empty() {
            return vec![];
        }
        let modified = std::fs::metadata(&self.s.secrets_file).and_then(|m| m.modified()).ok();
        if let Some(checked) =
            self.secrets_checked.as_ref().filter(|c| c.verifiers == verifiers && c.modified == modified)
        {
            return checked.stale.clone();
        }
        let Ok(secrets) = crate::secrets::Secrets::load(&self.s.secrets_file) else { return vec![] };
        let stale: Vec<PasswordKind> = verifiers
            .iter()
            .filter(|(kind, v)| secrets.get(**kind).is_some_and(|p| !pgrepl_pg::scram::matches(p, v)))
            .map(|(kind, _)| *kind)
            .collect();
        if !stale.is_empty() {
            let kinds: Vec<String> = stale.iter().map(|k| k.to_string()).collect();
            warn!("this host's {} password(s) are not the ones `pgrepl passwd` gave the cluster: put the new ones in this host's secrets and restart its node", kinds.join(", "));
        }
        self.secrets_checked = Some(SecretsChecked { verifiers, modified, stale: stale.clone() });
        stale
    }

    /// Tells the fencer what this cycle saw (`at`: when the store read was sent, on the boot
    /// clock): a lease seen held with time left holds at least that long after the read was
    /// sent; a primary without the lease must have demoted within `DEMOTE_BOUND` (if this agent
    /// hangs before it does, the fencer stops it); anything else has nothing to guard.
    fn beat_fence(&self, holds_lease: bool, server: &Server, lease_left: Option<Duration>, at: Duration) {
        match (holds_lease, server) {
            (true, _) => {
                if let Some(left) = lease_left {
                    self.fence.arm(at + left);
                }
            }
            (false, Server::Primary { .. }) => self.fence.limit(at + DEMOTE_BOUND),
            (false, _) => self.fence.disarm(),
        }
    }

    /// Logs each fence the fencer reports and records the last in the store (`fences/NAME`).
    async fn record_fences(&mut self) {
        for fired in self.fence.take_fired() {
            self.probe.fenced();
            warn!(
                at_unix_ms = fired.at_unix_ms,
                killed = fired.killed,
                "the fencer stopped this member's PostgreSQL: the lease it served under was not renewed in time"
            );
            let key = keys::fence(&self.s.member);
            let value = serde_json::to_vec(&fired).unwrap_or_default();
            if let Err(e) = self.put(&key, &value, Condition::Any, None).await {
                warn!("record the fence in the store: {e:#}");
            }
        }
    }

    /// The file that marks a data directory whose bootstrap has not recorded the cluster yet.
    pub(crate) fn bootstrap_mark(&self) -> std::path::PathBuf {
        self.s.data_dir.join("pgrepl-bootstrap-unfinished")
    }

    /// The local server's state over the kept connection; one fresh connection is tried when
    /// the kept one fails (the server restarted), and `Stopped` when that fails too.
    pub(crate) async fn observe_server(&mut self) -> Server {
        for _ in 0..2 {
            if self.client.as_ref().is_none_or(|c| c.is_closed()) {
                self.client = self.pg.connect(&self.s.admin_user, "postgres").await.ok();
            }
            let Some(client) = &self.client else { return Server::Stopped };
            match pgrepl_pg::server_state(client).await {
                Ok(server) => return server,
                Err(_) => self.client = None,
            }
        }
        Server::Stopped
    }

    /// What SQL does not say: a replica's replayed timeline (read after its replay position,
    /// so a switch in between errs towards "not forked"), and the history of the timeline a
    /// primary is on or a replica has replayed.
    async fn observe_timelines(&self, mut server: Server) -> (Server, Option<Vec<pgrepl_core::TimelineSwitch>>) {
        let history = match &mut server {
            Server::Replica { replay_timeline, .. } => {
                *replay_timeline = self.pg.replay_timeline(&self.s.admin_user).await.map_err(|e| debug!("{e:#}")).ok();
                replay_timeline.and_then(|t| self.pg.timeline_history(t).map_err(|e| debug!("{e:#}")).ok())
            }
            Server::Primary { timeline, .. } => self.pg.timeline_history(*timeline).map_err(|e| debug!("{e:#}")).ok(),
            Server::Stopped => None,
        };
        (server, history)
    }

    /// The leader keeps its lease with every action but those that give it up, about once per
    /// `loop_wait` (`lease::renewal` says when).
    async fn renew_lease_if_held(&mut self, seen: &Seen, decision: &Decision) -> anyhow::Result<()> {
        let renewal = lease::renewal(&seen.obs, &decision.action, seen.lease_left(), self.s.loop_wait, self.s.ttl);
        if renewal != Renewal::Due {
            return Ok(());
        }
        let entry = seen.snapshot.get(keys::LEADER).context("leader key vanished")?;
        let value = entry.value.clone();
        self.renew(&value, Condition::Revision(entry.revision)).await.context("renew the leader lease")
    }

    /// Writes the leader key with the lease's TTL and arms the fence for it.
    pub(crate) async fn renew(&mut self, value: &[u8], cond: Condition) -> Result<(), StoreError> {
        let sent = boot_now();
        self.put(keys::LEADER, value, cond, Some(self.s.ttl)).await?;
        if !self.paused {
            self.fence.arm(sent + self.s.ttl);
        }
        Ok(())
    }

    /// Keeps the lease renewed while `work` runs (a start or promotion that may outlast the
    /// TTL); the work itself is bounded by its own timeout.
    pub(crate) async fn keeping_lease<T>(&mut self, work: impl Future<Output = T>) -> T {
        tokio::pin!(work);
        let mut tick = tokio::time::interval(self.s.loop_wait);
        tick.tick().await;
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tick.tick() => {
                    self.probe.beat();
                    if let Err(e) = self.renew_current().await {
                        warn!("renew the leader lease during a long action: {e:#}");
                    }
                }
            }
        }
    }

    /// Runs a long action that has no bound of its own (a clone, a rewind), beating the loop's
    /// probe while it runs: the loop waits on work in progress, it is not stuck.
    pub(crate) async fn beating<T>(&self, work: impl Future<Output = T>) -> T {
        tokio::pin!(work);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tick.tick() => self.probe.beat(),
            }
        }
    }

    /// Renews the lease from a fresh read of the store, if this member still holds it.
    async fn renew_current(&mut self) -> anyhow::Result<()> {
        let snapshot = self.store.snapshot().await?;
        let Some(entry) = snapshot.get(keys::LEADER) else { return Ok(()) };
        let holder: pgrepl_core::LeaderRecord = serde_json::from_slice(&entry.value)?;
        if holder.member == self.s.member {
            let value = entry.value.clone();
            self.renew(&value, Condition::Revision(entry.revision)).await?;
        }
        Ok(())
    }

    /// Writes to the store, remembering the revision so the agent does not wake for it.
    pub(crate) async fn put(
        &mut self,
        key: &str,
        value: &[u8],
        cond: Condition,
        ttl: Option<Duration>,
    ) -> Result<u64, StoreError> {
        let revision = self.store.put(key, value, cond, ttl).await?;
        self.own_revision = self.own_revision.max(revision);
        Ok(revision)
    }

    /// Deletes from the store, remembering the revision as `put` does.
    pub(crate) async fn delete(&mut self, key: &str, cond: Condition) -> Result<u64, StoreError> {
        let revision = self.store.delete(key, cond).await?;
        self.own_revision = self.own_revision.max(revision);
        Ok(revision)
    }

    /// The connection to this member's server the last observation used, if it had one.
    pub(crate) fn client(&self) -> Option<&tokio_postgres::Client> {
        self.client.as_ref()
    }

    /// Stop PostgreSQL, give up the lease and withdraw the member's status: a primary hands
    /// over as in a switchover (a checkpoint while it still serves, so that the shutdown
    /// checkpoint has little left to do; a fast stop, which sends the replicas every last
    /// byte of WAL; the lease renewed until then and released after), so that a replica takes
    /// over at once instead of when the lease would have expired.
    async fn shut_down(mut self) -> anyhow::Result<()> {
        info!(member = %self.s.member, "agent stopping: stopping PostgreSQL and releasing the lease");
        self.stop_handing_over().await?;
        // The fence is let go only once the server is down and the lease given up: should the
        // stop hang, the fencer still ends PostgreSQL before the lease lapses. A store that does
        // not answer lets the lease lapse by itself.
        if let Ok(snapshot) = self.store.snapshot().await {
            self.release_lease_in(&snapshot).await?;
        }
        self.fence.close().await;
        let _ = self.store.delete(&keys::member(&self.s.member), Condition::Any).await;
        info!(member = %self.s.member, "agent stopped");
        Ok(())
    }

    /// Stops PostgreSQL as a switchover does: a checkpoint while it still serves, so that the
    /// shutdown checkpoint has little left to do; its status then says it stops, so routers
    /// hold new clients for its successor; then a fast stop (which sends the replicas every
    /// last byte of WAL), the lease renewed throughout.
    pub(crate) async fn stop_handing_over(&mut self) -> anyhow::Result<()> {
        if !self.pg.postmaster_running() {
            return Ok(());
        }
        let (pg, admin) = (self.pg.clone(), self.s.admin_user.clone());
        self.keeping_lease(async move {
            if let Ok(client) = pg.connect(&admin, "postgres").await {
                let _ = pgrepl_pg::sql::checkpoint(&client).await;
            }
        })
        .await;
        if let Err(e) = publish::stopping(self).await {
            warn!("publish that PostgreSQL stops: {e:#}");
        }
        let pg = self.pg.clone();
        self.keeping_lease(async move { pg.stop(StopMode::Fast, Duration::from_secs(60)).await })
            .await
            .context("stop PostgreSQL")
    }

    /// Gives up the leader lease, read afresh, if this member holds it (renewals while the
    /// server stopped changed its revision): a replica can take over at once.
    pub(crate) async fn release_held_lease(&mut self) -> anyhow::Result<()> {
        let snapshot = self.store.snapshot().await.context("read the leader lease")?;
        self.release_lease_in(&snapshot).await
    }

    /// Gives up the leader lease as `snapshot` shows it, if this member holds it there.
    pub(crate) async fn release_lease_in(&mut self, snapshot: &Snapshot) -> anyhow::Result<()> {
        let Some(entry) = snapshot.get(keys::LEADER) else { return Ok(()) };
        let holder: Option<pgrepl_core::LeaderRecord> = serde_json::from_slice(&entry.value).ok();
        if holder.is_some_and(|h| h.member == self.s.member) {
            self.delete(keys::LEADER, Condition::Revision(entry.revision)).await.context("release the leader lease")?;
            self.fence.disarm();
            info!("released the leader lease: a replica can take over at once");
        }
        Ok(())
    }
}
