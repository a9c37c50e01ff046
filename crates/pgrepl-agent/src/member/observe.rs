//! What an agent reads each cycle, and nothing else: the store's snapshot as a cluster view,
//! and the local data directory and server. Reading changes nothing but the kept connection
//! (`Agent::client`); what the agent makes of a reading is the cycle's (`member`).

use super::Agent;
use anyhow::Context;
use pgrepl_core::{ClusterView, DataDir, PasswordKind, ReplicationRow, Server, Slot, TimelineSwitch};
use pgrepl_store::Snapshot;
use tracing::{debug, warn};

/// The local half of a reading: the data directory and the server, with what only a primary
/// has (slots, replication, `synchronous_standby_names`).
pub(super) struct Local {
    pub data: DataDir,
    pub server: Server,
    pub history: Option<Vec<TimelineSwitch>>,
    pub slots: Vec<Slot>,
    pub replication: Vec<ReplicationRow>,
    pub standby_names: Option<String>,
}

/// The spec's verifiers and the secrets file's modification time, last checked against each
/// other, and which secrets were stale then.
pub(super) struct SecretsChecked {
    verifiers: std::collections::BTreeMap<PasswordKind, String>,
    modified: Option<std::time::SystemTime>,
    stale: Vec<PasswordKind>,
}

impl Agent {
    /// One snapshot of the store, and the cluster it describes.
    pub(crate) async fn read_store(&self) -> anyhow::Result<(Snapshot, ClusterView)> {
        let snapshot = self.store.snapshot().await?;
        let cluster = ClusterView::from_entries(snapshot.entries.iter().map(|(k, e)| (k.as_str(), e.value.as_slice())))
            .context("read the cluster's records")?;
        Ok((snapshot, cluster))
    }

    /// The data directory and the server on this member's port.
    pub(super) async fn observe_local(&mut self) -> anyhow::Result<Local> {
        let data = self.pg.data_dir_state().context("inspect the data directory")?;
        let server = if data == DataDir::Missing { Server::Stopped } else { self.observe_server().await };
        let (server, history) = self.observe_timelines(server).await;
        let (slots, replication, standby_names) = match (&server, &self.client) {
            (Server::Primary { .. }, Some(client)) => (
                pgrepl_pg::sql::slots(client).await.context("read the replication slots")?,
                pgrepl_pg::sql::replication_rows(client).await.context("read pg_stat_replication")?,
                Some(pgrepl_pg::sql::standby_names(client).await.context("read synchronous_standby_names")?),
            ),
            _ => (vec![], vec![], None),
        };
        Ok(Local { data, server, history, slots, replication, standby_names })
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
    async fn observe_timelines(&self, mut server: Server) -> (Server, Option<Vec<TimelineSwitch>>) {
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

    /// Which of this host's secrets it connects to other members with (admin, replication)
    /// are not the passwords the spec's verifiers were made from (the user password only a
    /// primary needs, and it takes the verifier). Checked again only when a verifier or the
    /// secrets file changes (a check costs 4096 HMACs); an unreadable secrets file is left to
    /// the actions that need it to report.
    pub(super) fn stale_secrets(&mut self, spec: Option<&pgrepl_core::Spec>) -> Vec<PasswordKind> {
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
}
