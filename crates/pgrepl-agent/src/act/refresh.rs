//! What the agent does after a quiet cycle, with the world as that cycle saw it: the cluster's
//! parameters applied and what waits for a restart read, `pgrepl reload` and `pgrepl restart`
//! carried out, the certificate renewed when due, `pg_hba.conf` rewritten when the members'
//! hosts change.

use super::with_member_hosts;
use crate::member::Agent;
use crate::seen::Seen;
use anyhow::Context;
use pgrepl_core::{DataDir, Server};
use pgrepl_pg::{sql, ServerConf};
use std::time::Duration;
use tracing::{info, warn};

/// How often a running member looks whether its certificate is due for renewal.
const TLS_CHECK_EVERY: Duration = Duration::from_secs(3600);

impl Agent {
    /// After a quiet cycle, with the server running: when the cluster's parameters changed,
    /// rewrites the configuration with them (the rest as last written) and reloads, so that
    /// what can change at once does; then reads what the server holds back for its next
    /// restart (`pending_restart`), which its status shows. Nothing restarts by itself.
    pub(crate) async fn refresh_parameters(&mut self, seen: &Seen) -> anyhow::Result<()> {
        if self.client().is_none() {
            return Ok(());
        }
        let wanted = self.parameters(seen).clone();
        if let Some(conf) = self.applied.conf.as_ref().filter(|c| c.parameters != wanted) {
            let changed: Vec<String> = pgrepl_core::parameter_changes(&conf.parameters, &wanted).into_keys().collect();
            let changed = changed.join(", ");
            let conf = ServerConf { parameters: wanted, ..conf.clone() };
            self.pg.write_conf(&conf)?;
            self.applied.conf = Some(conf);
            self.pg.reload().await?;
            info!(changed = %changed, "applied the cluster's new parameters and reloaded the configuration");
        }
        let client = self.client().context("no connection to the server")?;
        let pending = sql::pending_restart(client).await?;
        if pending != self.applied.pending_restart && !pending.is_empty() {
            info!(pending = %pending.join(", "), "PostgreSQL applies these parameters only at its next restart (`pgrepl restart --pending`)");
        }
        self.applied.pending_restart = pending;
        Ok(())
    }

    /// After a quiet cycle: carries out a `pgrepl reload` it has not yet, and a `pgrepl restart`
    /// asked of this member once `restart::outlook` says now (a synchronous standby first
    /// lets the leader give its role to another replica). The restart is the API's chore: a
    /// fast stop (the leader keeps its lease meanwhile), and the next cycle starts the server;
    /// true when it stopped the server so.
    pub(crate) async fn refresh_requests(&mut self, seen: &Seen) -> anyhow::Result<bool> {
        let view = &seen.obs.cluster;
        if let Some(asked) = view.reload.filter(|r| self.applied.reloaded_ms.is_none_or(|done| done < r.requested_ms)) {
            if self.pg.postmaster_running() {
                self.pg.reload().await?;
                info!("reloaded the configuration, as `pgrepl reload` asked");
            }
            self.applied.reloaded_ms = Some(asked.requested_ms);
        }
        let asked = view.restarts.get(&self.s.member).map(|r| r.id);
        match pgrepl_core::restart::outlook(view, &self.s.member, self.applied.restarted_for) {
            pgrepl_core::restart::Outlook::Nothing => self.applied.restart_wait = None,
            pgrepl_core::restart::Outlook::Wait(why) => self.tell_once(why),
            pgrepl_core::restart::Outlook::Now => match self.carry_out(crate::chore::Chore::Restart).await {
                Ok(_) => {
                    info!("restarting PostgreSQL, as `pgrepl restart` asked");
                    self.applied.restart_wait = None;
                    self.applied.restarted_for = asked;
                    return Ok(true);
                }
                Err(crate::chore::ChoreError::Refused(why) | crate::chore::ChoreError::Failed(why)) => {
                    self.tell_once(format!("cannot restart as `pgrepl restart` asked: {why}"))
                }
            },
        }
        Ok(false)
    }

    /// Logs why an asked restart waits or fails, once each time that changes.
    fn tell_once(&mut self, why: String) {
        if self.applied.restart_wait.as_ref() != Some(&why) {
            warn!("{why}");
            self.applied.restart_wait = Some(why);
        }
    }

    /// When the members' hosts changed (a router on any of them may route here) or the given
    /// certificate files changed (checked each quiet cycle by their fingerprint), else once an
    /// hour: renews or replaces this member's certificate when it is due, no longer names what
    /// it must or was given anew, and has a running server reload it (PostgreSQL reads its
    /// certificate files again on reload). Warns, at most hourly, of an end within 30 days.
    pub(crate) async fn refresh_tls(&mut self, seen: &Seen) -> anyhow::Result<()> {
        let crate::tls::Tls::On(on) = &self.s.tls else { return Ok(()) };
        let on = with_member_hosts(on, seen.obs.cluster.spec.as_ref());
        self.warn_of_expiry();
        let given = crate::tls::fingerprint(&on.source);
        let fresh = self.applied.tls_given == given
            && self
                .applied
                .tls_checked
                .as_ref()
                .is_some_and(|(at, names)| at.elapsed() < TLS_CHECK_EVERY && *names == on.names);
        if seen.obs.data == DataDir::Missing || fresh {
            return Ok(());
        }
        self.applied.tls_checked = Some((std::time::Instant::now(), on.names.clone()));
        self.applied.tls_given = given;
        let installed = crate::tls::install(&on, std::time::SystemTime::now())?;
        self.applied.tls_cert = Some(installed.info);
        if installed.replaced && seen.obs.server != Server::Stopped {
            self.pg.reload().await?;
            info!("reloaded PostgreSQL for this member's new certificate");
        }
        Ok(())
    }

    /// Logs the installed certificate's coming end (within 30 days), at most once an hour.
    fn warn_of_expiry(&mut self) {
        let Some(warning) = self.applied.tls_cert.as_ref().and_then(|c| c.expiry_warning(std::time::SystemTime::now()))
        else {
            return;
        };
        if self.applied.tls_warned.is_some_and(|at| at.elapsed() < TLS_CHECK_EVERY) {
            return;
        }
        self.applied.tls_warned = Some(std::time::Instant::now());
        warn!("{warning}");
    }

    /// Rewrites `pg_hba.conf` (and reloads a running server) when the spec's member hosts
    /// changed since it was last written, say a member joined from another host.
    pub(crate) async fn refresh_hba(&mut self, seen: &Seen) -> anyhow::Result<()> {
        let rules = self.hba_rules(seen);
        if seen.obs.data == DataDir::Missing || self.applied.hba.as_ref() == Some(&rules) {
            return Ok(());
        }
        self.pg.write_hba(&rules)?;
        self.applied.hba = Some(rules);
        if seen.obs.server != Server::Stopped {
            self.pg.reload().await?;
            info!("rewrote pg_hba.conf for the members' hosts and the allowed client ranges");
        }
        Ok(())
    }
}
