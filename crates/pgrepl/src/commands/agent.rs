//! `pgrepl agent --member NAME` (internal): wires one member's `Settings` from the cluster
//! directory and runs its agent until SIGTERM or SIGINT.

use crate::agent_lock;
use crate::api::{self, Api};
use crate::cluster::Cluster;
use crate::config::{Config, ADMIN_USER};
use crate::layout::Layout;
use pgrepl_agent::{Agent, CertSource, Settings, Tls, TlsOn};
use pgrepl_core::MemberName;
use pgrepl_router::Connections;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;

/// The agent's settings for `member`, reached by the other members at `host`.
pub fn settings(layout: &Layout, config: &Config, member: &MemberName, host: &str) -> Settings {
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
        api: None,
        tls: tls(layout, config, member, host),
        require_tls: config.tls.require,
    }
}

/// The member's TLS: off, or a certificate issued from the cluster CA (`DIR/ca.crt`), or the
/// user's own files (`tls.cert_file`, which must name `host` and should name the rest), that
/// names what clients may verify it by: the member's host, the endpoints' address (`listen`, so
/// `verify-full` works through rw and ro; not when it is `0.0.0.0`), loopback and the
/// machine's name. The agent adds every spec member's host.
fn tls(layout: &Layout, config: &Config, member: &MemberName, host: &str) -> Tls {
    if !config.tls.on {
        return Tls::Off;
    }
    let listen = (!config.listen.is_unspecified()).then(|| config.listen.to_string());
    let mut names: Vec<String> = vec![host.to_string()];
    names.extend(listen);
    names.extend(["localhost".to_string(), "127.0.0.1".to_string()]);
    names.extend(machine_name());
    let mut unique = Vec::new();
    for n in names {
        if !unique.contains(&n) {
            unique.push(n);
        }
    }
    let source = match &config.tls.files {
        Some(given) => CertSource::Files(given.clone()),
        None => {
            CertSource::Issue { common_name: member.to_string(), ca_cert: layout.ca_cert(), ca_key: layout.ca_key() }
        }
    };
    Tls::On(TlsOn { source, dir: layout.tls_dir(member), host: host.to_string(), names: unique })
}

/// This machine's host name, when it has one that can be a DNS name.
pub(crate) fn machine_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?.trim().to_string();
    let dns_like = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    dns_like.then_some(name)
}

/// The agent, with its HTTP API bound (`api_port`, else `default_port`; 0: a free one) and
/// serving from its loop, and the lag history's sampler, until the returned task is dropped;
/// with the connection counts of a router run in the same process in its metrics.
pub async fn with_api(
    cluster: &Cluster,
    member: &MemberName,
    member_host: &str,
    mut settings: Settings,
    default_port: u16,
    router: Option<Arc<Connections>>,
) -> anyhow::Result<(Agent, AbortOnDrop)> {
    let (listener, bound) = api::bind(cluster, default_port).await?;
    settings.api = Some(api::advertised(bound, member_host));
    let agent = Agent::new(settings, cluster.store.clone())?;
    let history = api::history::shared();
    let sampler = api::history::run_sampler(agent.probe(), history.clone());
    let api = Api {
        cluster: cluster.clone(),
        member: member.clone(),
        probe: agent.probe(),
        router,
        history,
        chores: agent.chores(),
    };
    info!(%member, api = %bound, "serving the HTTP API");
    let serve = api::serve(listener, Arc::new(api));
    Ok((
        agent,
        AbortOnDrop(tokio::spawn(async move {
            tokio::join!(serve, sampler);
        })),
    ))
}

/// A task that ends when this is dropped.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub async fn run(dir: &Path, member: &str) -> anyhow::Result<()> {
    let cluster = Cluster::open(dir).await?;
    let member = MemberName::new(member)?;
    let _lock = agent_lock::acquire(&cluster.layout.agent_lock(&member))?;
    let (agent, _api) = with_api(
        &cluster,
        &member,
        &cluster.config.listen.to_string(),
        settings(&cluster.layout, &cluster.config, &member, &cluster.config.listen.to_string()),
        0,
        None,
    )
    .await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{validate, RawConfig};

    #[test]
    fn a_members_certificate_names_its_host_the_endpoints_and_loopback_once_each() {
        let layout = Layout::new(Path::new("/c"));
        let raw = RawConfig { listen: Some("10.0.0.5".into()), ..RawConfig::default() };
        let config = validate(&raw, &[]).unwrap();
        let member = MemberName::numbered(2);
        let Tls::On(on) = tls(&layout, &config, &member, "10.0.0.9") else { panic!("TLS is on by default") };
        assert_eq!(on.names[..4], ["10.0.0.9", "10.0.0.5", "localhost", "127.0.0.1"]);
        assert_eq!(on.dir, Path::new("/c/members/node-2/tls"));
        let same = tls(&layout, &config, &member, "10.0.0.5");
        let Tls::On(same) = same else { unreachable!() };
        assert_eq!(same.names.iter().filter(|n| *n == "10.0.0.5").count(), 1, "{:?}", same.names);
        let CertSource::Issue { common_name, ca_cert, ca_key } = &on.source else { panic!("issued by default") };
        assert_eq!(on.host, "10.0.0.9");
        assert_eq!(
            (common_name.as_str(), ca_cert.as_path(), ca_key.as_path()),
            ("node-2", Path::new("/c/ca.crt"), Path::new("/c/ca.key"))
        );
        let any = validate(&RawConfig { listen: Some("0.0.0.0".into()), ..RawConfig::default() }, &[]).unwrap();
        let Tls::On(any) = tls(&layout, &any, &member, "10.0.0.9") else { unreachable!() };
        assert!(!any.names.contains(&"0.0.0.0".to_string()));
        let mut off = RawConfig::default();
        off.tls.mode = Some("off".into());
        assert_eq!(tls(&layout, &validate(&off, &[]).unwrap(), &member, "10.0.0.9"), Tls::Off);
        let mut own = raw.clone();
        own.tls.cert_file = Some("/s/tls.crt".into());
        own.tls.key_file = Some("/s/tls.key".into());
        own.tls.ca_file = Some("/s/ca.crt".into());
        let Tls::On(own) = tls(&layout, &validate(&own, &[]).unwrap(), &member, "10.0.0.9") else { unreachable!() };
        let given =
            pgrepl_tls::TlsFiles { cert: "/s/tls.crt".into(), key: "/s/tls.key".into(), ca: "/s/ca.crt".into() };
        assert_eq!(own.source, CertSource::Files(given));
        assert_eq!(own.names, on.names, "the same names are wanted of a given certificate (only its host is required)");
    }
}
