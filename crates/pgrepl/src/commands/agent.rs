//! `pgrepl agent --member NAME` (internal): wires one member's `Settings` from the cluster
//! directory and runs its agent until SIGTERM or SIGINT.

use crate::agent_lock;
use crate::cluster::Cluster;
use crate::config::{Config, ADMIN_USER};
use crate::layout::Layout;
use pgrepl_agent::{Agent, Settings};
use pgrepl_core::MemberName;
use std::path::Path;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

pub fn settings(layout: &Layout, config: &Config, member: &MemberName) -> Settings {
    let host_bits = if config.listen.is_ipv4() { 32 } else { 128 };
    Settings {
        member: member.clone(),
        data_dir: layout.data(member),
        socket_dir: layout.socket_dir(member),
        log_file: layout.log(member),
        passfile: layout.passfile(member),
        secrets_file: layout.secrets(),
        bin_dir: config.bin_dir.clone(),
        admin_user: ADMIN_USER.to_string(),
        replication_user: config.names.replication_user.clone(),
        app: config.names.app.as_ref().map(|a| (a.user.clone(), a.database.clone())),
        allow: config.allow.clone(),
        member_cidrs: vec![format!("{}/{host_bits}", config.listen)],
        parameters: config.parameters.clone(),
        loop_wait: config.loop_wait,
        ttl: config.ttl,
        destroy_on_restart: config.destroy_on_restart,
        primary_start_timeout: config.primary_start_timeout,
        stall_timeout: Duration::from_secs(30),
        stream_restart_timeout: Duration::from_secs(10),
    }
}

pub async fn run(dir: &Path, member: &str) -> anyhow::Result<()> {
    let cluster = Cluster::open(dir).await?;
    let member = MemberName::new(member)?;
    let _lock = agent_lock::acquire(&cluster.layout.agent_lock(&member))?;
    let agent = Agent::new(settings(&cluster.layout, &cluster.config, &member), cluster.store.clone())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    agent.run(shutdown).await
}
