//! Carries out one `Action`: PostgreSQL through `pgrepl-pg`, cluster state through the store.
//! Decides nothing: every branch here is dictated by the action (the exceptions: a failed
//! rewind falls back to moving the data directory aside so that the next cycle clones, and so
//! does a rewind whose reason is a replica on another branch, which pg_rewind cannot handle).

mod refresh;

use crate::member::Agent;
use crate::secrets::Secrets;
use crate::seen::Seen;
use anyhow::{bail, Context};
use pgrepl_core::{
    keys, sync, Action, DataDir, Decision, Initialized, LeaderRecord, MemberName, PasswordKind, PasswordVersions,
    Reason, Server, Spec, SpecWork, SyncRecord,
};
use pgrepl_pg::sql::{self, RoleKind};
use pgrepl_pg::{Conninfo, HbaRules, PassEntry, ServerConf, StopMode};
use pgrepl_store::Condition;
use std::time::Duration;
use tracing::{info, warn};

const START_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// What this agent has written into its server's configuration and host, and carried out of
/// what was asked of it; the actions here own it, the rest of the agent reads it.
#[derive(Default)]
pub(crate) struct Applied {
    /// Role password versions set on this primary since the agent started (`None`: none yet).
    passwords: Option<PasswordVersions>,
    /// Replication password version in the password file, once this agent wrote it.
    passfile_version: Option<u64>,
    /// `synchronous_standby_names` this agent last set (`None`: from the store's record).
    standby_names: Option<String>,
    /// What this agent last wrote into `pg_hba.conf` (`None`: nothing yet).
    hba: Option<HbaRules>,
    /// The server configuration last written (`configure`), which a change of the cluster's
    /// parameters rewrites with only those changed.
    conf: Option<ServerConf>,
    /// What its running server applies only at its next restart (`pg_settings.pending_restart`).
    pending_restart: Vec<String>,
    /// The `pgrepl restart` request it last restarted its server for.
    restarted_for: Option<u64>,
    /// The newest `pgrepl reload` carried out.
    reloaded_ms: Option<u64>,
    /// Why an asked restart waits, as last logged.
    restart_wait: Option<String>,
    /// When this member's certificate was last installed or looked at, and the names it was
    /// to have then (`None`: not yet).
    tls_checked: Option<(std::time::Instant, Vec<String>)>,
    /// The given certificate files' fingerprint when last installed (`tls::fingerprint`).
    tls_given: Option<u64>,
    /// The installed certificate, as last checked (its end is published and warned of).
    tls_cert: Option<pgrepl_tls::CertInfo>,
    /// When its coming end was last warned of in the log (at most hourly).
    tls_warned: Option<std::time::Instant>,
}

impl Applied {
    pub fn passwords(&self) -> Option<PasswordVersions> {
        self.passwords
    }

    pub fn passfile_version(&self) -> Option<u64> {
        self.passfile_version
    }

    pub fn pending_restart(&self) -> &[String] {
        &self.pending_restart
    }

    pub fn restarted_for(&self) -> Option<u64> {
        self.restarted_for
    }

    pub fn reloaded_ms(&self) -> Option<u64> {
        self.reloaded_ms
    }

    pub fn tls_cert(&self) -> Option<&pgrepl_tls::CertInfo> {
        self.tls_cert.as_ref()
    }

    /// A server that stopped applies every pending parameter when it starts again.
    pub fn server_stopped(&mut self) {
        self.pending_restart.clear();
    }
}

impl Agent {
    pub(crate) async fn act(&mut self, seen: &Seen, decision: &Decision) -> anyhow::Result<()> {
        match &decision.action {
            Action::Wait | Action::Nothing | Action::RenewLease => Ok(()),
            Action::Bootstrap => {
                self.publish_preparing(seen, decision).await?;
                self.bootstrap(seen).await
            }
            Action::CloneFrom { leader } => {
                self.publish_preparing(seen, decision).await?;
                self.clone_from(seen, leader).await
            }
            Action::StartAsPrimary => {
                self.configure(seen, None)?;
                self.pg.set_standby_signal(false)?;
                let (pg, timeout) = (self.pg.clone(), self.s.primary_start_timeout);
                self.keeping_lease(async move { pg.start(timeout).await }).await?;
                Ok(())
            }
            Action::StartAsReplica { leader } => self.start_replica(seen, leader.as_ref()).await,
            Action::RestartReplica { leader } => {
                self.pg.stop(StopMode::Fast, STOP_TIMEOUT).await.context("stop the replica to restart it")?;
                info!("stopped this replica to restart it: it did not stream from {leader}");
                self.start_replica(seen, Some(leader)).await.context("start the replica again")
            }
            Action::Follow { leader } => {
                self.configure(seen, Some(leader))?;
                self.pg.reload().await?;
                Ok(())
            }
            Action::AcquireLease => {
                let value =
                    serde_json::to_vec(&LeaderRecord { member: self.s.member.clone(), timeline: None, history: None })?;
                match self.renew(&value, Condition::Absent).await {
                    Ok(()) => info!("took the leader lease"),
                    // Another replica won the race: no failure; the next cycle follows it.
                    Err(e) if e.is_conflict() => info!("another member took the free leader lease first"),
                    Err(e) => return Err(anyhow::Error::new(e).context("take the leader lease")),
                }
                Ok(())
            }
            Action::Promote { create_slots, claim_sync } => self.promote(create_slots, *claim_sync).await,
            Action::ApplySpec(work) => self.apply_spec(seen, work).await,
            // A planned handover stops as `pgrepl stop` does (`stop_handing_over`), then lets
            // the lease go to the target.
            Action::Demote { release_lease: true } => {
                self.stop_handing_over().await?;
                self.release_held_lease().await
            }
            Action::Demote { release_lease: false } => Ok(self.pg.stop(StopMode::Fast, STOP_TIMEOUT).await?),
            Action::Rewind { leader } => {
                self.publish_preparing(seen, decision).await?;
                // pg_rewind takes control files of one timeline number for one timeline and
                // rewinds nothing, so a replica on another branch (which may share the leader's
                // number) is cloned afresh instead.
                let other_branch =
                    matches!(decision.reason, Reason::Forked { fork: pgrepl_core::Fork::OtherBranch { .. }, .. });
                self.rewind(seen, leader, other_branch).await
            }
            Action::Reinitialize => {
                if self.pg.postmaster_running() {
                    self.pg.stop(StopMode::Fast, STOP_TIMEOUT).await?;
                }
                self.pg.remove_data()?;
                warn!(data_dir = %self.s.data_dir.display(), "removed this replica's data directory (destroy_on_restart)");
                Ok(())
            }
            Action::StopServer { release_lease } => {
                self.stop_handing_over().await?;
                info!("stopped PostgreSQL, as `pgrepl stop` asked");
                if *release_lease {
                    self.release_held_lease().await?;
                }
                Ok(())
            }
            Action::ReleaseLease => self.release_lease_in(&seen.snapshot).await,
        }
    }

    /// Starts this standby, streaming from `leader` (or from nobody yet).
    async fn start_replica(&mut self, seen: &Seen, leader: Option<&MemberName>) -> anyhow::Result<()> {
        self.configure(seen, leader)?;
        self.pg.set_standby_signal(true)?;
        self.pg.start(START_TIMEOUT).await?;
        Ok(())
    }

    /// Promotes this replica, which holds the lease: claims the sync record first (synchronous
    /// mode), creates the other members' slots so they can follow at once, promotes while
    /// keeping the lease, and checkpoints in the background (pg_rewind of the former primary
    /// reads the new timeline from the control file, which a checkpoint updates).
    async fn promote(&mut self, create_slots: &[String], claim_sync: bool) -> anyhow::Result<()> {
        if claim_sync {
            let nobody = SyncRecord { leader: Some(self.s.member.clone()), ..SyncRecord::default() };
            self.store
                .put(keys::SYNC, &serde_json::to_vec(&nobody)?, Condition::Any, None)
                .await
                .context("record that no other member holds this leader's commits yet")?;
        }
        let client = self.pg.connect(&self.s.admin_user, "postgres").await?;
        for slot in create_slots {
            sql::create_slot(&client, slot).await?;
        }
        let pg = self.pg.clone();
        self.keeping_lease(async move { pg.promote(START_TIMEOUT).await }).await?;
        self.applied.standby_names = Some(String::new());
        info!("promoted to primary");
        tokio::spawn(async move {
            if let Err(e) = sql::checkpoint(&client).await {
                warn!("checkpoint after promotion: {e:#}");
            }
        });
        Ok(())
    }

    /// Moves the `sync` record and `synchronous_standby_names` to `wanted` without a moment in
    /// which the record promises more than holds: the record becomes the union of old and new
    /// first, then the server waits for the new set, and the record narrows to `wanted` only
    /// once enough of its members have flushed past the switch (else a later cycle retries).
    async fn apply_sync(
        &mut self,
        seen: &Seen,
        client: &tokio_postgres::Client,
        wanted: &SyncRecord,
    ) -> anyhow::Result<()> {
        let steps = sync::SyncMove::new(seen.obs.cluster.sync.as_ref(), wanted);
        // Compare-and-swap on the record as this cycle read it: a leader deposed meanwhile (whose
        // successor has claimed the record) must not overwrite it.
        let mut expect = seen.snapshot.get(keys::SYNC).map_or(Condition::Absent, |e| Condition::Revision(e.revision));
        if let Some(union) = &steps.widen {
            let revision = self.store.put(keys::SYNC, &serde_json::to_vec(union)?, expect, None).await?;
            expect = Condition::Revision(revision);
        }
        let names = steps.standby_names;
        if seen.obs.standby_names.as_deref() != Some(names.as_str()) {
            self.applied.standby_names = Some(names.clone());
            self.configure(seen, None)?;
            self.pg.reload().await?;
            info!(synchronous_standby_names = %names, "changed the synchronous replicas");
        }
        if let Some(narrowed) = &steps.narrow {
            let switched_at = sql::current_lsn(client).await?;
            let deadline = std::time::Instant::now() + self.s.loop_wait;
            loop {
                let rows = sql::replication_rows(client).await?;
                if sync::may_narrow(narrowed, switched_at, &rows) {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.store.put(keys::SYNC, &serde_json::to_vec(narrowed)?, expect, None).await?;
        }
        Ok(())
    }

    fn secrets(&self) -> anyhow::Result<Secrets> {
        Secrets::load(&self.s.secrets_file)
    }

    /// The connection to `leader` as `user`, through this member's password file.
    fn conninfo(&self, seen: &Seen, leader: &MemberName, user: &str) -> anyhow::Result<Conninfo> {
        let spec = seen.obs.cluster.spec.as_ref().context("no cluster spec")?;
        let m = spec.members.get(leader).with_context(|| format!("leader {leader} is not in the cluster spec"))?;
        Ok(Conninfo {
            host: m.host.clone(),
            port: m.port,
            user: user.to_string(),
            dbname: "postgres".to_string(),
            application_name: self.s.member.to_string(),
            passfile: self.s.passfile.clone(),
            tls: self.s.tls.client(),
        })
    }

    /// Rewrites the password file: replication and admin passwords for every member.
    fn write_passfile(&mut self, seen: &Seen) -> anyhow::Result<()> {
        let secrets = self.secrets()?;
        let spec = seen.obs.cluster.spec.as_ref().context("no cluster spec")?;
        let mut entries = Vec::new();
        for m in spec.members.values() {
            entries.push(PassEntry {
                host: m.host.clone(),
                port: m.port,
                database: "replication".into(),
                user: self.s.replication_user.clone(),
                password: secrets.replication.clone(),
            });
            entries.push(PassEntry {
                host: m.host.clone(),
                port: m.port,
                database: "*".into(),
                user: self.s.admin_user.clone(),
                password: secrets.admin.clone(),
            });
        }
        pgrepl_pg::write_passfile(&self.s.passfile, &entries)?;
        self.applied.passfile_version = Some(spec.passwords.replication);
        Ok(())
    }

    /// Writes the server configuration and `pg_hba.conf`, following `leader` when given.
    fn configure(&mut self, seen: &Seen, leader: Option<&MemberName>) -> anyhow::Result<()> {
        self.write_passfile(seen)?;
        let primary_conninfo = match leader {
            Some(l) if *l != self.s.member => Some(self.conninfo(seen, l, &self.s.replication_user)?),
            _ => None,
        };
        let primary_slot_name = primary_conninfo.as_ref().map(|_| self.s.member.slot_name());
        let leads = seen.obs.cluster.leader.as_ref() == Some(&self.s.member);
        let synchronous_standby_names =
            sync::conf_names(leads, self.applied.standby_names.as_deref(), seen.obs.cluster.sync.as_ref());
        let tls = self.install_tls(seen)?;
        let conf = ServerConf {
            parameters: self.parameters(seen).clone(),
            primary_conninfo,
            primary_slot_name,
            synchronous_standby_names,
            tls,
        };
        self.pg.write_conf(&conf)?;
        self.applied.conf = Some(conf);
        let rules = self.hba_rules(seen);
        self.pg.write_hba(&rules)?;
        self.applied.hba = Some(rules);
        Ok(())
    }

    /// The PostgreSQL parameters this member runs with: the cluster's (in the spec), else its
    /// own configuration's.
    fn parameters<'a>(&'a self, seen: &'a Seen) -> &'a std::collections::BTreeMap<String, String> {
        match seen.obs.cluster.spec.as_ref() {
            Some(spec) => spec.parameters_or(&self.s.parameters),
            None => &self.s.parameters,
        }
    }

    /// Who may connect: the configured member ranges and every spec member's host (members on
    /// other hosts replicate and rewind from this one), then the clients.
    fn hba_rules(&self, seen: &Seen) -> HbaRules {
        HbaRules {
            admin_user: self.s.admin_user.clone(),
            replication_user: self.s.replication_user.clone(),
            members: member_cidrs(&self.s.member_cidrs, seen.obs.cluster.spec.as_ref()),
            allow: self.s.allow.clone(),
            require_tls: self.s.require_tls,
        }
    }

    /// Installs this member's certificate from its source when it is missing or due (see
    /// `tls::install`), and returns the files PostgreSQL is to read; `None` with TLS off.
    fn install_tls(&mut self, seen: &Seen) -> anyhow::Result<Option<pgrepl_pg::ServerTls>> {
        let crate::tls::Tls::On(on) = &self.s.tls else { return Ok(None) };
        let on = with_member_hosts(on, seen.obs.cluster.spec.as_ref());
        self.applied.tls_given = crate::tls::fingerprint(&on.source);
        self.applied.tls_cert = Some(crate::tls::install(&on, std::time::SystemTime::now())?.info);
        self.applied.tls_checked = Some((std::time::Instant::now(), on.names.clone()));
        Ok(Some(on.server()))
    }

    async fn bootstrap(&mut self, seen: &Seen) -> anyhow::Result<()> {
        let secrets = self.secrets()?;
        if seen.obs.data == DataDir::Missing {
            self.pg.initdb(&self.s.admin_user).await?;
            std::fs::write(self.bootstrap_mark(), b"").context("mark the bootstrap as unfinished")?;
        }
        self.configure(seen, None)?;
        self.pg.start(START_TIMEOUT).await?;
        let client = self.pg.connect(&self.s.admin_user, "postgres").await?;
        sql::ensure_role(&client, &self.s.admin_user, RoleKind::Superuser, &secrets.admin).await?;
        sql::ensure_role(&client, &self.s.replication_user, RoleKind::Replication, &secrets.replication).await?;
        if let Some((user, database)) = &self.s.app {
            let password = secrets.user.as_deref().context("the secrets file has no application user password")?;
            sql::ensure_role(&client, user, RoleKind::Login, password).await?;
            sql::ensure_database(&client, database, user).await?;
        }
        let system_id = self.pg.data_dir_state()?.system_id().context("no system identifier after initdb")?;
        let value = serde_json::to_vec(&Initialized { system_id })?;
        self.store
            .put(keys::INITIALIZE, &value, Condition::Absent, None)
            .await
            .context("record the new cluster in the store")?;
        std::fs::remove_file(self.bootstrap_mark()).context("clear the unfinished-bootstrap mark")?;
        let leader =
            serde_json::to_vec(&LeaderRecord { member: self.s.member.clone(), timeline: None, history: None })?;
        self.renew(&leader, Condition::Absent).await.context("take the leader lease")?;
        self.applied.passwords = seen.obs.cluster.spec.as_ref().map(|s| s.passwords);
        info!(%system_id, "bootstrapped a new cluster and took the leader lease");
        Ok(())
    }

    async fn clone_from(&mut self, seen: &Seen, leader: &MemberName) -> anyhow::Result<()> {
        self.write_passfile(seen)?;
        // pg_basebackup verifies the leader against the installed CA.
        self.install_tls(seen)?;
        let from = self.conninfo(seen, leader, &self.s.replication_user)?;
        self.beating(self.pg.basebackup(&from, &self.s.member.slot_name())).await?;
        self.configure(seen, Some(leader))?;
        self.pg.set_standby_signal(true)?;
        // Started at once, as after a rewind: joining is one action, so it also completes in
        // maintenance mode, where no stopped server is started.
        self.pg.start(START_TIMEOUT).await?;
        info!(%leader, "cloned the leader and started as its replica");
        Ok(())
    }

    /// Rewinds from `leader` (or, with `clone_instead`, moves the data aside for a fresh clone)
    /// and starts as its replica.
    async fn rewind(&mut self, seen: &Seen, leader: &MemberName, clone_instead: bool) -> anyhow::Result<()> {
        let from = self.conninfo(seen, leader, &self.s.admin_user)?;
        // A leader that cannot be reached (its status is stale, or the network has only just
        // healed) is no reason to move this data aside: rewind in a later cycle instead.
        let reach = tokio::net::TcpStream::connect((from.host.as_str(), from.port));
        match tokio::time::timeout(Duration::from_secs(2), reach).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("{leader} at {}:{} is not reachable ({e}); rewinding later", from.host, from.port),
            Err(_) => bail!("{leader} at {}:{} did not answer within 2s; rewinding later", from.host, from.port),
        }
        if self.pg.postmaster_running() {
            self.pg.stop(StopMode::Fast, STOP_TIMEOUT).await?;
        }
        self.write_passfile(seen)?;
        // pg_rewind verifies the leader against the installed CA.
        self.install_tls(seen)?;
        if clone_instead {
            let aside = self.pg.move_aside("other-branch")?;
            warn!(
                moved_to = %aside.display(),
                "this member's WAL is on another branch than {leader}'s, which pg_rewind cannot tell from its own timeline, so it will be cloned afresh; its old data directory was moved aside, not deleted"
            );
            return Ok(());
        }
        if let Err(e) = self.beating(self.pg.rewind(&from)).await {
            let aside = self.pg.move_aside("rewind-failed")?;
            warn!(
                moved_to = %aside.display(),
                "pg_rewind from {leader} failed, so this member will be cloned afresh; its old data directory was moved aside, not deleted: {e:#}"
            );
            return Ok(());
        }
        self.configure(seen, Some(leader))?;
        self.pg.set_standby_signal(true)?;
        self.pg.start(START_TIMEOUT).await?;
        info!(%leader, "rewound and rejoined as a replica");
        Ok(())
    }

    async fn apply_spec(&mut self, seen: &Seen, work: &SpecWork) -> anyhow::Result<()> {
        let spec = seen.obs.cluster.spec.as_ref().context("no cluster spec")?;
        let Server::Primary { timeline, .. } = seen.obs.server else {
            // A replica's only spec work is its password file.
            return self.write_passfile(seen);
        };
        let client = self.pg.connect(&self.s.admin_user, "postgres").await?;
        if !work.passwords.is_empty() {
            let secrets = self.secrets()?;
            for kind in &work.passwords {
                let (role, role_kind) = match kind {
                    PasswordKind::Admin => (self.s.admin_user.clone(), RoleKind::Superuser),
                    PasswordKind::Replication => (self.s.replication_user.clone(), RoleKind::Replication),
                    PasswordKind::User => match &self.s.app {
                        Some((user, _)) => (user.clone(), RoleKind::Login),
                        None if spec.verifiers.contains_key(kind) => {
                            warn!("`pgrepl passwd --user` changed the user password, but this member has no application user (database.user): nothing to set");
                            continue;
                        }
                        None => continue,
                    },
                };
                // Changed on another host (`pgrepl passwd`): the verifier it made, the same for
                // whichever member leads.
                if let Some(verifier) = spec.verifiers.get(kind) {
                    sql::ensure_role_verifier(&client, &role, role_kind, verifier).await?;
                } else {
                    let Some(password) = secrets.get(*kind) else { bail!("the secrets file has no {kind} password") };
                    sql::ensure_role(&client, &role, role_kind, password).await?;
                }
                info!(role = %role, "set the {kind} password");
            }
            self.applied.passwords = Some(spec.passwords);
        }
        for slot in &work.create_slots {
            sql::create_slot(&client, slot).await?;
            info!(slot, "created replication slot");
        }
        for slot in &work.drop_slots {
            sql::drop_slot(&client, slot).await?;
            info!(slot, "dropped the replication slot of a removed member");
        }
        if work.record_leader {
            let record = LeaderRecord {
                member: self.s.member.clone(),
                timeline: Some(timeline),
                history: seen.obs.history.clone(),
            };
            let value = serde_json::to_vec(&record)?;
            self.store.put(keys::LAST_LEADER, &value, Condition::Any, None).await?;
        }
        if work.clear_target {
            self.store.delete(keys::TARGET, Condition::Any).await?;
        }
        if let Some(wanted) = &work.sync {
            self.apply_sync(seen, &client, wanted).await?;
        }
        Ok(())
    }
}

/// `on` with every spec member's host among the names its certificate must have: the router
/// on any member's host may route a client here, and the client verifies the name it dialled.
fn with_member_hosts(on: &crate::tls::TlsOn, spec: Option<&Spec>) -> crate::tls::TlsOn {
    let mut on = on.clone();
    for host in spec.iter().flat_map(|s| s.members.values()).map(|m| &m.host) {
        if !host.is_empty() && !on.names.contains(host) {
            on.names.push(host.clone());
        }
    }
    on
}

/// The member ranges of `pg_hba.conf`: the configured ones first, then each spec member's host
/// that is an IP address as a single-host range, without repeats.
fn member_cidrs(configured: &[String], spec: Option<&Spec>) -> Vec<String> {
    let hosts = spec.iter().flat_map(|s| s.members.values()).filter_map(|m| m.host.parse::<std::net::IpAddr>().ok());
    let mut cidrs = configured.to_vec();
    for ip in hosts {
        let cidr = format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 });
        if !cidrs.contains(&cidr) {
            cidrs.push(cidr);
        }
    }
    cidrs
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrepl_core::MemberSpec;

    #[test]
    fn every_spec_members_host_may_replicate_after_the_configured_ranges() {
        let mut spec = Spec::default();
        for (n, host) in [(1, "10.0.0.1"), (2, "10.0.0.2"), (3, "10.0.0.1"), (4, "fd00::4"), (5, "")] {
            spec.members.insert(MemberName::numbered(n), MemberSpec { host: host.into(), port: 5432, stopped: false });
        }
        let configured = vec!["10.0.0.1/32".to_string()];
        assert_eq!(member_cidrs(&configured, Some(&spec)), ["10.0.0.1/32", "10.0.0.2/32", "fd00::4/128"]);
        assert_eq!(member_cidrs(&configured, None), ["10.0.0.1/32"]);
    }

    #[test]
    fn a_certificate_names_every_spec_members_host_after_its_own_names_once() {
        let mut spec = Spec::default();
        for (n, host) in [(1, "10.0.0.1"), (2, "10.0.0.2"), (3, ""), (4, "10.0.0.1")] {
            spec.members.insert(MemberName::numbered(n), MemberSpec { host: host.into(), port: 5432, stopped: false });
        }
        let on = crate::tls::TlsOn {
            source: crate::tls::CertSource::Issue {
                common_name: "node-2".into(),
                ca_cert: "/c/ca.crt".into(),
                ca_key: "/c/ca.key".into(),
            },
            dir: "/c/members/node-2/tls".into(),
            host: "10.0.0.2".into(),
            names: vec!["10.0.0.2".into(), "localhost".into()],
        };
        assert_eq!(with_member_hosts(&on, Some(&spec)).names, ["10.0.0.2", "localhost", "10.0.0.1"]);
        assert_eq!(with_member_hosts(&on, None).names, on.names);
    }
}
