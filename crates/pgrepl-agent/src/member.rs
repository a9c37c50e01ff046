//! `Agent`: one member's loop. Each cycle reads one store snapshot and the local server, asks
//! `decide()` for one action, carries it out, and publishes the member's status. The cycle's
//! sentence is logged when it changes (and, in maintenance mode, again once per `loop_wait`).
//! Between cycles it takes work asked from outside (`chore`). Runs until told to shut down,
//! then stops PostgreSQL and gives up the lease.

mod lease;
mod observe;

use crate::act::Applied;
use crate::chore::{Asked, Chores};
use crate::fence::{Fence, FencerPlace};
use crate::fencer::{self, boot_now};
use crate::probe::{Cycle, Probe, Promotion};
use crate::publish::{self, Facts, Publisher};
use crate::seen::Seen;
use crate::settings::Settings;
use crate::store_writer::StoreWriter;
use crate::stream_clock::StreamClock;
use anyhow::Context;
use observe::SecretsChecked;
use pgrepl_core::{
    decide, keys, Action, ClusterView, Decision, MemberState, MemberStatus, Observation, Reason, Server, Upstream,
};
use pgrepl_pg::{Binaries, Instance, StopMode};
use pgrepl_store::{Condition, Store};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{error, info, info_span, warn, Instrument};

/// How long after another member's lease could expire this agent looks again.
const LEASE_EXPIRY_SLACK: Duration = Duration::from_millis(20);

/// How long the agent waits for its fencer before its first cycle.
const FENCER_START_LIMIT: Duration = Duration::from_secs(5);

pub struct Agent {
    /// Its settings; the cluster-wide ones (`follow`) as the spec last read says.
    pub(crate) s: Settings,
    /// Its own configuration's cluster-wide settings, for a spec without the cluster's.
    pub(crate) own: crate::follow::Own,
    /// Its one handle on the store, which knows the revision of its own last write.
    pub(crate) store: StoreWriter,
    pub(crate) pg: Instance,
    first_cycle: bool,
    /// What it has written into its server's configuration and host, and carried out of what
    /// was asked (`act` owns it).
    pub(crate) applied: Applied,
    /// How long this replica has not streamed from the leader (restart and stall bounds).
    stream: StreamClock,
    /// Since when this leader's server has been stopped (for `primary_start_timeout`).
    down_since: Option<Instant>,
    /// Stops PostgreSQL if the lease this member holds is about to expire unrenewed.
    fence: Fence,
    /// The last observation saw maintenance mode: the fence stays disarmed (also when the store
    /// is then lost: no demotion while paused) and renewals do not arm it.
    paused: bool,
    /// Which of this host's secrets were found stale, and against what.
    secrets_checked: Option<SecretsChecked>,
    cycle: u64,
    last_sentence: String,
    /// When the sentence was last logged (paused, an unchanged one is logged again each loop_wait).
    last_said: Option<Instant>,
    /// One connection to the local server, kept across cycles (reconnected when it closes).
    client: Option<tokio_postgres::Client>,
    /// Writes its status, and knows what it last wrote.
    publisher: Publisher,
    /// The last warning sentence (a fork, say), published until this replica streams again.
    warning: Option<String>,
    /// What the HTTP API reads of this loop.
    probe: Probe,
    /// Work asked of the loop from outside (`Chores`), taken between cycles.
    chores: mpsc::Receiver<Asked>,
    chores_tx: mpsc::Sender<Asked>,
}

/// What a cycle leaves for the loop: when to run the next.
struct Next {
    /// The store revision the cycle read (0: it could not read the store).
    revision: u64,
    /// Run again at once: an action was taken, so the world has changed.
    again_now: bool,
    /// The time left on another member's lease, to wake when it could expire.
    others_lease_left: Option<Duration>,
}

impl Next {
    /// After a cycle that could not observe: a whole `loop_wait`, waiting for no change.
    const UNOBSERVED: Next = Next { revision: 0, again_now: false, others_lease_left: None };

    /// How long to wait for a change before the next cycle: `loop_wait`, or until just after
    /// another member's lease could expire, so that a lost leader is replaced at once.
    fn wait(&self, loop_wait: Duration) -> Duration {
        self.others_lease_left.map_or(loop_wait, |left| loop_wait.min(left + LEASE_EXPIRY_SLACK))
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
            publisher: Publisher::new(&s.member),
            s,
            store: StoreWriter::new(store),
            fence,
            paused: false,
            down_since: None,
            applied: Applied::default(),
            secrets_checked: None,
            pg,
            first_cycle: true,
            stream: StreamClock::default(),
            cycle: 0,
            last_sentence: String::new(),
            last_said: None,
            client: None,
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
            let next = self.run_cycle().instrument(span).await;
            // Also after a cycle that could not read the store: the loop runs, the store fails.
            self.probe.beat();
            let change = self.store.next_change(next.revision, next.wait(self.s.loop_wait));
            let pause = async move {
                match next.again_now {
                    true => tokio::task::yield_now().await,
                    false => change.await,
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

    /// One observe -> decide -> act -> publish.
    async fn run_cycle(&mut self) -> Next {
        let began = Instant::now();
        let Some(seen) = self.observe().await else {
            // Nothing to wait for a change after: pause a whole cycle instead of spinning.
            tokio::time::sleep(self.s.loop_wait).await;
            return Next::UNOBSERVED;
        };
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
        let status = publish::build(&self.facts(), &seen, decision.to_string(), None);
        if let Err(e) = self.publish(&decision, status.clone()).await {
            warn!("publish member status: {e:#}");
        }
        self.probe.record(Cycle {
            view: seen.obs.cluster.clone(),
            server: seen.obs.server.clone(),
            holds_lease: seen.obs.cluster.leader.as_ref() == Some(&self.s.member),
            status,
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
            let status = publish::build(&self.facts(), &seen, sentence, Some(MemberState::Failed));
            if let Err(e) = self.publish(&decision, status).await {
                warn!("publish member status: {e:#}");
            }
        }
        // A server stopped to be restarted is started by the next cycle, at once.
        Next { revision: seen.snapshot.revision, again_now: (!quiet && !failed) || restarted, others_lease_left }
    }

    /// This cycle's reading of the world, and the agent's memory brought up to date with it:
    /// the fencer's reports recorded, the cluster's settings taken (`follow_spec`), maintenance
    /// mode and the fence (`guard`), and the clocks that count how long something has lasted.
    /// `None`, said in the cycle's sentence, when the store or the local server cannot be read.
    async fn observe(&mut self) -> Option<Seen> {
        self.record_fences().await;
        let at = boot_now();
        let (snapshot, cluster) = match self.read_store().await {
            Ok(read) => read,
            Err(e) => {
                self.say(&format!("cannot read the store: {e:#}"), false);
                return None;
            }
        };
        self.follow_spec(cluster.spec.as_ref());
        let local = match self.observe_local().await {
            Ok(local) => local,
            Err(e) => {
                self.say(&format!("cannot observe this member's PostgreSQL: {e:#}"), false);
                return None;
            }
        };
        if local.server == Server::Stopped {
            self.applied.server_stopped();
        }
        self.guard(&cluster, &local.server, snapshot.get(keys::LEADER).and_then(|e| e.expires_in), at);
        let clocks = self.tick_clocks(&cluster, &local.server);
        let obs = Observation {
            me: self.s.member.clone(),
            first_cycle: self.first_cycle,
            destroy_on_restart: self.s.destroy_on_restart,
            replica_stalled: clocks.replica_stalled,
            replica_not_streaming_long: clocks.replica_not_streaming_long,
            start_overdue: clocks.start_overdue,
            applied_passwords: self.applied.passwords(),
            passfile_password: self.applied.passfile_version(),
            stale_secrets: self.stale_secrets(cluster.spec.as_ref()),
            bootstrap_unfinished: self.bootstrap_mark().exists(),
            data: local.data,
            server: local.server,
            slots: local.slots,
            replication: local.replication,
            standby_names: local.standby_names,
            history: local.history,
            cluster,
        };
        Some(Seen { snapshot, obs })
    }

    /// Runs the clocks on what this reading saw: how long this leader's server has been down
    /// (`primary_start_timeout`), and how long this replica has not streamed from the leader.
    /// Paused, the clocks stand still: after `resume` they start afresh.
    fn tick_clocks(&mut self, cluster: &ClusterView, server: &Server) -> Clocks {
        // The clock runs while this member leads, or led last, with its server down: a leader
        // that gave its lease up for failing to start must not take it straight back.
        let holds_lease = cluster.leader.as_ref() == Some(&self.s.member);
        let led_last = cluster.last_leader.as_ref().is_some_and(|r| r.member == self.s.member);
        let leader_down = (holds_lease || led_last) && *server == Server::Stopped && !self.paused;
        self.down_since = if leader_down { Some(self.down_since.unwrap_or_else(Instant::now)) } else { None };
        let leader_endpoint = cluster
            .leader
            .as_ref()
            .and_then(|l| cluster.spec.as_ref()?.members.get(l))
            .map(|m| Upstream { host: m.host.clone(), port: m.port });
        let not_streaming_at = match server {
            Server::Replica { upstream, streaming: false, replay_lsn, .. }
                if *upstream == leader_endpoint && upstream.is_some() && !self.paused =>
            {
                Some(*replay_lsn)
            }
            _ => None,
        };
        let now = Instant::now();
        self.stream.observe(not_streaming_at, now);
        Clocks {
            start_overdue: self.down_since.is_some_and(|t| t.elapsed() > self.s.primary_start_timeout),
            replica_stalled: self.stream.stalled(now, self.s.stall_timeout),
            replica_not_streaming_long: self.stream.restart_due(now, self.s.stream_restart_timeout),
        }
    }

    /// What this agent knows of itself that its status shows beside the observation.
    fn facts(&self) -> Facts {
        let expiry = self.applied.tls_cert().and_then(|c| c.expiry_warning(std::time::SystemTime::now()));
        let warning = match (self.warning.clone(), expiry) {
            (Some(w), Some(e)) => Some(format!("{w}; {e}")),
            (w, e) => w.or(e),
        };
        Facts {
            host: self.pg.listen_address.clone(),
            port: self.pg.port,
            warning,
            tls_not_after_unix: self.applied.tls_cert().map(|c| c.not_after_unix()),
            pending_restart: self.applied.pending_restart().to_vec(),
            restarted_for: self.applied.restarted_for(),
            reloaded_ms: self.applied.reloaded_ms(),
            applied_passwords: self.applied.passwords(),
            passfile_version: self.applied.passfile_version(),
            api: self.s.api.clone(),
        }
    }

    /// Publishes the cycle's outcome (`status` says the decision, or its failure). A member no
    /// longer in the spec (`pgrepl remove`) withdraws its status instead, once.
    async fn publish(&mut self, decision: &Decision, status: MemberStatus) -> anyhow::Result<()> {
        if decision.reason == Reason::NotInSpec {
            return self.publisher.withdraw(&mut self.store).await;
        }
        self.publisher.publish(&mut self.store, status, self.s.loop_wait, self.s.ttl).await
    }

    /// Announces a long action (clone, rewind, bootstrap) before it starts.
    pub(crate) async fn publish_preparing(&mut self, seen: &Seen, decision: &Decision) -> anyhow::Result<()> {
        let status = publish::build(&self.facts(), seen, decision.to_string(), Some(MemberState::Preparing));
        self.publisher.write(&mut self.store, status, self.s.ttl).await
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

    /// The file that marks a data directory whose bootstrap has not recorded the cluster yet.
    pub(crate) fn bootstrap_mark(&self) -> std::path::PathBuf {
        self.s.data_dir.join("pgrepl-bootstrap-unfinished")
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
        let _ = self.store.delete(&keys::member(&self.s.member), Condition::Any).await;
        self.fence.close().await;
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
        if let Err(e) = self.publisher.stopping(&mut self.store, self.s.ttl).await {
            warn!("publish that PostgreSQL stops: {e:#}");
        }
        let pg = self.pg.clone();
        self.keeping_lease(async move { pg.stop(StopMode::Fast, Duration::from_secs(60)).await })
            .await
            .context("stop PostgreSQL")
    }
}

/// What the clocks say of one reading (`Agent::tick_clocks`).
struct Clocks {
    start_overdue: bool,
    replica_stalled: bool,
    replica_not_streaming_long: Option<Duration>,
}
