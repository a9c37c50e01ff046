//! The loop of one fixed-role member (the container image's seed modes): observe this server
//! and, when it matters, the upstream; `pgrepl_core::decide_fixed`; carry the step out. No
//! store and no lease: the environment says who is the primary, as in the seeds, so there is
//! no automatic failover here (`pgrepl node` on etcd gives that). Publishes its state to a
//! small file for the container's probes (`pgrepl container check`).

use anyhow::Context;
use pgrepl_core::fixed::{points_at_itself, wants_upstream};
use pgrepl_core::{
    decide_fixed, DataDir, FixedAction, FixedDecision, FixedObservation, FixedRole, Server, Upstream, UpstreamState,
};
use pgrepl_pg::sql::{self, RoleKind};
use pgrepl_pg::{Binaries, Conninfo, HbaRules, Instance, PassEntry, ServerConf, StopMode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tracing::{info, warn};

const START_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a member that waits (for its upstream, say) looks again.
const WAIT_POLL: Duration = Duration::from_millis(250);
/// How often a step that keeps waiting says so again.
const REPEAT_WAIT: Duration = Duration::from_secs(5);
/// How long a connection to the upstream may take before it counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the server log is copied to the container's log.
const LOG_POLL: Duration = Duration::from_millis(200);

/// The passwords a fixed-role member is given (nothing is generated here: every container of
/// the cluster must agree on them).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FixedPasswords {
    pub user: Option<String>,
    pub admin: Option<String>,
    pub replication: String,
}

impl fmt::Debug for FixedPasswords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FixedPasswords { .. }")
    }
}

/// The application user and its database, created by the primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppRole {
    pub user: String,
    pub database: String,
    /// `Login` (seed 000's user) or `Superuser` (seed 002's `POSTGRES_USER` is one).
    pub kind: RoleKind,
}

/// What one fixed-role member needs to know. Built by the binary from the configuration.
#[derive(Clone, Debug)]
pub struct FixedSettings {
    pub role: FixedRole,
    /// `cluster_name`, `application_name` on the upstream, and the basis of the slot's name.
    pub name: String,
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub log_file: PathBuf,
    pub passfile: PathBuf,
    /// Where the state file for the container's probes is written.
    pub state_file: PathBuf,
    pub bin_dir: Option<PathBuf>,
    pub listen: String,
    pub port: u16,
    pub admin_user: String,
    pub replication_user: String,
    pub app: Option<AppRole>,
    pub passwords: FixedPasswords,
    /// Client ranges (`pg_hba.conf`); replicas replicate from these too.
    pub allow: Vec<String>,
    pub parameters: BTreeMap<String, String>,
    pub destroy_on_restart: bool,
    pub loop_wait: Duration,
    /// How long a running replica may fail to stream before a rewind is considered.
    pub stall_timeout: Duration,
}

/// What the probes read: written whenever it changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedState {
    pub pid: u32,
    /// `primary` or `replica` as configured.
    pub role: String,
    /// The server runs and nothing is left to do (a replica may still be catching up).
    pub ready: bool,
    /// The last cycle's sentence.
    pub decision: String,
}

pub struct FixedMember {
    s: FixedSettings,
    pg: Instance,
    destroy_pending: bool,
    passwords_applied: bool,
    /// Whether `pg_hba.conf` lets anyone in over TCP yet (see `hba_rules`).
    tcp_open: bool,
    /// When this replica last streamed (or started to try).
    streamed_at: Instant,
    /// The last sentence logged, and when, so a wait is repeated only every few seconds.
    said: Option<(String, Instant)>,
    state: Option<FixedState>,
}

impl FixedMember {
    pub fn new(s: FixedSettings) -> anyhow::Result<FixedMember> {
        let bins = Binaries::find(s.bin_dir.as_deref())?;
        let pg = Instance {
            bins,
            data_dir: s.data_dir.clone(),
            socket_dir: s.socket_dir.clone(),
            listen_address: s.listen.clone(),
            port: s.port,
            log_file: s.log_file.clone(),
            name: s.name.clone(),
        };
        let destroy_pending = s.destroy_on_restart && matches!(s.role, FixedRole::Replica { promote: false, .. });
        let tcp_open = !matches!(s.role, FixedRole::Primary);
        Ok(FixedMember {
            s,
            pg,
            destroy_pending,
            passwords_applied: false,
            tcp_open,
            streamed_at: Instant::now(),
            said: None,
            state: None,
        })
    }

    /// Runs until `shutdown` completes (then stops PostgreSQL with a fast shutdown: a clean stop,
    /// no crash recovery at the next start) or the configuration proves unworkable (an error).
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let log = tokio::spawn(copy_log(self.s.log_file.clone()));
        let result = loop {
            let cycle = async {
                let decision = self.cycle().await?;
                match decision.action {
                    // Waiting for the upstream: ask again soon, so a replica starts cloning as
                    // soon as its primary is up (a container's start matters).
                    FixedAction::Wait => tokio::time::sleep(self.s.loop_wait.min(WAIT_POLL)).await,
                    FixedAction::Nothing => tokio::time::sleep(self.s.loop_wait).await,
                    _ => {}
                }
                anyhow::Ok(decision)
            };
            tokio::select! {
                _ = &mut shutdown => break Ok(()),
                done = cycle => match done {
                    Ok(d) if d.is_fatal() => break Err(anyhow::anyhow!("{}", d.reason)),
                    Ok(_) => {}
                    Err(e) => {
                        warn!("{e:#}");
                        tokio::time::sleep(self.s.loop_wait).await;
                    }
                },
            }
        };
        if self.pg.postmaster_running() {
            info!("stopping postgres (fast shutdown)");
            self.pg.stop(StopMode::Fast, STOP_TIMEOUT).await.context("stop postgres")?;
        }
        // Let the server's last lines (its shutdown) reach the container's log.
        tokio::time::sleep(LOG_POLL * 2).await;
        log.abort();
        result
    }

    async fn cycle(&mut self) -> anyhow::Result<FixedDecision> {
        let o = self.observe().await?;
        let d = decide_fixed(&o);
        self.say(&d);
        self.publish(&o, &d)?;
        if !d.is_fatal() {
            self.act(&o, &d).await.with_context(|| format!("{:?} failed", d.action))?;
        }
        Ok(d)
    }

    async fn observe(&mut self) -> anyhow::Result<FixedObservation> {
        let data = self.pg.data_dir_state()?;
        let server = if data == DataDir::Missing { Server::Stopped } else { self.pg.observe(&self.s.admin_user).await };
        if !matches!(server, Server::Replica { streaming: false, .. }) {
            self.streamed_at = Instant::now();
        }
        let upstream = match &self.s.role {
            FixedRole::Replica { upstream, .. } if wants_upstream(&self.s.role, &server) => self.probe(upstream).await,
            _ => UpstreamState::Unknown,
        };
        Ok(FixedObservation {
            role: self.s.role.clone(),
            destroy_pending: self.destroy_pending,
            data,
            bootstrap_unfinished: self.bootstrap_mark().exists(),
            server,
            passwords_applied: self.passwords_applied,
            stalled: self.streamed_at.elapsed() > self.s.stall_timeout,
            upstream,
        })
    }

    /// Asks the upstream who it is: its name is resolved again each time (a Service name
    /// follows the primary wherever it moves), and a name that leads back here is refused.
    async fn probe(&self, upstream: &Upstream) -> UpstreamState {
        let resolved: Vec<IpAddr> = match tokio::net::lookup_host((upstream.host.as_str(), upstream.port)).await {
            Ok(addrs) => addrs.map(|a| a.ip()).collect(),
            Err(e) => {
                return UpstreamState::Unreachable { why: format!("the name {} does not resolve ({e})", upstream.host) }
            }
        };
        if points_at_itself(&resolved, &own_addresses(), upstream.port, self.s.port) {
            return UpstreamState::Itself;
        }
        let asked = async {
            let client = self.connect_upstream(upstream).await?;
            anyhow::Ok(sql::identity(&client).await?)
        };
        match tokio::time::timeout(PROBE_TIMEOUT * 2, asked).await {
            Ok(Ok((system_id, timeline, in_recovery))) => {
                UpstreamState::Answered { system_id, timeline, primary: !in_recovery }
            }
            Ok(Err(e)) => UpstreamState::Unreachable { why: format!("{e:#}") },
            Err(_) => UpstreamState::Unreachable { why: format!("no answer within {:?}", PROBE_TIMEOUT * 2) },
        }
    }

    /// Logs the cycle's sentence when it changed, and a wait again every few seconds.
    fn say(&mut self, d: &FixedDecision) {
        let sentence = d.reason.to_string();
        let repeat = match &self.said {
            Some((said, at)) => *said != sentence || (d.action == FixedAction::Wait && at.elapsed() >= REPEAT_WAIT),
            None => true,
        };
        if repeat {
            match d.action {
                FixedAction::Refuse => {}
                FixedAction::Wait => warn!("{sentence}"),
                _ => info!("{sentence}"),
            }
            self.said = Some((sentence, Instant::now()));
        }
    }

    fn publish(&mut self, o: &FixedObservation, d: &FixedDecision) -> anyhow::Result<()> {
        let role = match self.s.role {
            FixedRole::Primary | FixedRole::Replica { promote: true, .. } => "primary",
            FixedRole::Replica { promote: false, .. } => "replica",
        };
        let state = FixedState {
            pid: std::process::id(),
            role: role.to_string(),
            ready: o.server.is_running() && d.action == FixedAction::Nothing,
            decision: d.reason.to_string(),
        };
        if self.state.as_ref() != Some(&state) {
            pgrepl_pg::write_atomic(&self.s.state_file, &serde_json::to_vec(&state)?, 0o644)?;
            self.state = Some(state);
        }
        Ok(())
    }

    async fn act(&mut self, o: &FixedObservation, d: &FixedDecision) -> anyhow::Result<()> {
        let upstream = match &self.s.role {
            FixedRole::Replica { upstream, .. } => Some(upstream.clone()),
            FixedRole::Primary => None,
        };
        match d.action {
            FixedAction::Nothing | FixedAction::Wait | FixedAction::Refuse => Ok(()),
            FixedAction::Bootstrap => self.bootstrap(&o.data).await,
            FixedAction::StartPrimary => {
                self.configure(None)?;
                self.pg.set_standby_signal(false)?;
                self.start().await?;
                Ok(())
            }
            FixedAction::StartReplica => {
                // A replica to be promoted starts pointed at nobody: its old primary may be down,
                // and must not feed it once it diverges.
                let follow = upstream.filter(|_| matches!(self.s.role, FixedRole::Replica { promote: false, .. }));
                self.write_passfile()?;
                self.configure(follow.as_ref())?;
                self.pg.set_standby_signal(true)?;
                self.start().await?;
                self.streamed_at = Instant::now();
                Ok(())
            }
            FixedAction::SetPasswords => {
                let client = self.pg.connect(&self.s.admin_user, "postgres").await?;
                self.ensure_roles(&client).await
            }
            FixedAction::WritePassfile => self.write_passfile(),
            FixedAction::Clone => {
                let upstream = upstream.context("a primary has no upstream to clone")?;
                self.clone_from(&upstream).await
            }
            FixedAction::Reinitialize => {
                if self.pg.postmaster_running() {
                    self.pg.stop(StopMode::Fast, STOP_TIMEOUT).await?;
                }
                self.pg.remove_data()?;
                self.destroy_pending = false;
                warn!(data_dir = %self.s.data_dir.display(), "removed this replica's data directory (destroy_on_restart)");
                Ok(())
            }
            FixedAction::Promote => {
                self.pg.promote(START_TIMEOUT).await?;
                info!("promoted to primary");
                let client = self.pg.connect(&self.s.admin_user, "postgres").await?;
                // The new timeline reaches the control file, which pg_rewind of the old primary reads.
                sql::checkpoint(&client).await?;
                self.passwords_applied = false;
                Ok(())
            }
            FixedAction::Stop => {
                self.pg.stop(StopMode::Fast, STOP_TIMEOUT).await?;
                Ok(())
            }
            FixedAction::Rewind => {
                let upstream = upstream.context("a primary has no upstream to rewind from")?;
                self.rewind(&upstream).await
            }
        }
    }

    /// Starts the server. This container holds its volume's lock, so a `postmaster.pid` naming
    /// no live postmaster here was left by a killed container and is removed first.
    async fn start(&self) -> anyhow::Result<()> {
        self.pg.remove_stale_pid()?;
        self.pg.start(START_TIMEOUT).await?;
        Ok(())
    }

    fn bootstrap_mark(&self) -> PathBuf {
        self.s.data_dir.join("pgrepl.bootstrap-unfinished")
    }

    async fn bootstrap(&mut self, data: &DataDir) -> anyhow::Result<()> {
        if *data == DataDir::Missing {
            self.pg.initdb(&self.s.admin_user).await?;
            std::fs::write(self.bootstrap_mark(), b"").context("mark the bootstrap as unfinished")?;
        }
        self.configure(None)?;
        self.start().await?;
        let client = self.pg.connect(&self.s.admin_user, "postgres").await?;
        self.ensure_roles(&client).await?;
        std::fs::remove_file(self.bootstrap_mark()).context("clear the unfinished-bootstrap mark")?;
        let system_id = self.pg.data_dir_state()?.system_id().context("no system identifier after initdb")?;
        info!(%system_id, "bootstrapped a new primary");
        Ok(())
    }

    /// Creates the roles and the database when missing and sets every configured password
    /// (an admin password that is not configured is left as it is). The replication role may
    /// also run `pg_rewind` against this server, so that replicas rewind without a superuser.
    async fn ensure_roles(&mut self, client: &tokio_postgres::Client) -> anyhow::Result<()> {
        let p = &self.s.passwords;
        if let Some(admin) = &p.admin {
            sql::ensure_role(client, &self.s.admin_user, RoleKind::Superuser, admin).await?;
        }
        sql::ensure_role(client, &self.s.replication_user, RoleKind::Replication, &p.replication).await?;
        sql::grant_rewind(client, &self.s.replication_user).await?;
        if let Some(app) = &self.s.app {
            let password = p.user.as_deref().context("the application user has no password")?;
            sql::ensure_role(client, &app.user, app.kind, password).await?;
            sql::ensure_database(client, &app.database, &app.user).await?;
        }
        self.passwords_applied = true;
        info!("set every configured password");
        if !self.tcp_open {
            self.tcp_open = true;
            self.pg.write_hba(&self.hba_rules())?;
            self.pg.reload().await?;
            info!("opened pg_hba.conf to clients and replicas");
        }
        Ok(())
    }

    async fn clone_from(&mut self, upstream: &Upstream) -> anyhow::Result<()> {
        self.write_passfile()?;
        self.ensure_slot_on(upstream).await?;
        self.pg.basebackup(&self.conninfo(upstream), &self.slot_name()).await?;
        self.configure(Some(upstream))?;
        self.pg.set_standby_signal(true)?;
        info!(from = %format!("{}:{}", upstream.host, upstream.port), "cloned the primary");
        Ok(())
    }

    /// This replica's slot on the upstream, so WAL it has not received yet is kept for it
    /// (within `max_slot_wal_keep_size`), created over an ordinary connection as the
    /// replication role.
    async fn ensure_slot_on(&self, upstream: &Upstream) -> anyhow::Result<()> {
        let client = self
            .connect_upstream(upstream)
            .await
            .with_context(|| format!("connect to {}:{} to create this replica's slot", upstream.host, upstream.port))?;
        sql::create_slot(&client, &self.slot_name()).await?;
        Ok(())
    }

    /// An ordinary connection to the upstream's `postgres` database as the replication role
    /// (with the password from memory: no file, no argument).
    async fn connect_upstream(&self, upstream: &Upstream) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&upstream.host)
            .port(upstream.port)
            .user(&self.s.replication_user)
            .password(self.s.passwords.replication.as_bytes())
            .dbname("postgres")
            .application_name(format!("pgrepl {}", self.s.name))
            .connect_timeout(PROBE_TIMEOUT);
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    async fn rewind(&mut self, upstream: &Upstream) -> anyhow::Result<()> {
        if self.pg.postmaster_running() {
            self.pg.stop(StopMode::Fast, STOP_TIMEOUT).await?;
        }
        self.write_passfile()?;
        let from = Conninfo { dbname: "postgres".into(), ..self.conninfo(upstream) };
        if let Err(e) = self.pg.rewind(&from).await {
            let aside = self.pg.move_aside("rewind-failed")?;
            warn!(
                moved_to = %aside.display(),
                "pg_rewind from {}:{} failed, so this replica will be cloned afresh; its old data directory was moved aside, not deleted: {e:#}",
                upstream.host, upstream.port
            );
            return Ok(());
        }
        self.ensure_slot_on(upstream).await?;
        self.configure(Some(upstream))?;
        self.pg.set_standby_signal(true)?;
        self.start().await?;
        self.streamed_at = Instant::now();
        info!("rewound and rejoined as a replica");
        Ok(())
    }

    /// The slot name: `pgrepl_` and this member's name, in the characters slots allow.
    fn slot_name(&self) -> String {
        let cleaned: String =
            self.s.name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
        format!("pgrepl_{cleaned}").chars().take(63).collect()
    }

    fn conninfo(&self, upstream: &Upstream) -> Conninfo {
        Conninfo {
            host: upstream.host.clone(),
            port: upstream.port,
            user: self.s.replication_user.clone(),
            dbname: "replication".into(),
            application_name: self.s.name.clone(),
            passfile: self.s.passfile.clone(),
            // The seeds' image users bring no certificates and give no cluster CA: libpq's
            // default (TLS if the upstream offers it, unverified), as before.
            tls: pgrepl_pg::ClientTls::Prefer,
        }
    }

    /// The replication password for the upstream, whatever database a connection names (the
    /// WAL stream, or `postgres` for `pg_rewind`). Written at every start: a changed password
    /// reaches this replica when its container is recreated.
    fn write_passfile(&mut self) -> anyhow::Result<()> {
        let entries: Vec<PassEntry> = match &self.s.role {
            FixedRole::Replica { upstream, .. } => vec![PassEntry {
                host: upstream.host.clone(),
                port: upstream.port,
                database: "*".into(),
                user: self.s.replication_user.clone(),
                password: self.s.passwords.replication.clone(),
            }],
            FixedRole::Primary => Vec::new(),
        };
        pgrepl_pg::write_passfile(&self.s.passfile, &entries)?;
        self.passwords_applied = true;
        Ok(())
    }

    fn configure(&mut self, upstream: Option<&Upstream>) -> anyhow::Result<()> {
        let primary_conninfo = upstream.map(|u| self.conninfo(u));
        self.pg.write_conf(&ServerConf {
            parameters: self.s.parameters.clone(),
            primary_slot_name: primary_conninfo.as_ref().map(|_| self.slot_name()),
            primary_conninfo,
            synchronous_standby_names: String::new(),
            tls: None,
        })?;
        self.pg.write_hba(&self.hba_rules())?;
        Ok(())
    }

    /// Who may connect. Over TCP nobody until a primary has set every password (as the seed's
    /// master is not reachable while it sets up, so an old password never works); then the
    /// configured ranges, for replication and clients alike.
    fn hba_rules(&self) -> HbaRules {
        let open = if self.tcp_open { self.s.allow.clone() } else { Vec::new() };
        HbaRules {
            admin_user: self.s.admin_user.clone(),
            replication_user: self.s.replication_user.clone(),
            members: open.clone(),
            allow: open,
            require_tls: false,
        }
    }
}

/// Copies what PostgreSQL appends to its log onto this process's standard error, so that the
/// container's log (`docker logs`) shows the server's own lines beside the agent's.
async fn copy_log(path: PathBuf) {
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
    let mut offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let mut buf = vec![0u8; 64 * 1024];
    let mut err = tokio::io::stderr();
    loop {
        tokio::time::sleep(LOG_POLL).await;
        let Ok(mut file) = tokio::fs::File::open(&path).await else { continue };
        let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        if len < offset {
            offset = 0; // replaced or truncated
        }
        if file.seek(std::io::SeekFrom::Start(offset)).await.is_err() {
            continue;
        }
        while let Ok(n) = file.read(&mut buf).await {
            if n == 0 {
                break;
            }
            offset += n as u64;
            let _ = err.write_all(&buf[..n]).await;
        }
    }
}

/// The addresses of this host's interfaces (a container's own), to tell an upstream that is
/// this member itself.
pub fn own_addresses() -> Vec<IpAddr> {
    let mut found = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that we walk read-only and free once.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return found;
        }
        let mut cur = list;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(addr as *const libc::sockaddr_in);
                        found.push(IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes()));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(addr as *const libc::sockaddr_in6);
                        found.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found
}
