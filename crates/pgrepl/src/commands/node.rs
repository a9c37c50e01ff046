//! `pgrepl node --member NAME`: one member of a cluster whose members run on several hosts and
//! share an etcd store. Settles this host's directory as `up` does (`setup`: configuration,
//! the given passwords), registers the member in the spec (creating the spec, with this member
//! as the bootstrap one, when the cluster is new), then runs the member's agent in the
//! foreground, and with `--router` the endpoints too, until SIGTERM or SIGINT. Starts no
//! supervisor: whatever runs `pgrepl node` (systemd, a container runtime) restarts it.

use crate::agent_lock;
use crate::cli::NodeArgs;
use crate::cluster::{open_store, Cluster};
use crate::commands::setup::{self, Flags, Given};
use crate::commands::{agent, ca, router};
use crate::config::cluster_wide::ClusterWide;
use crate::config::{label, Config, FromEnv, StoreConfig};
use crate::layout::Layout;
use anyhow::{anyhow, bail, Context};
use pgrepl_core::{keys, MemberName, MemberSpec, Spec};
use pgrepl_router::Connections;
use pgrepl_store::{Condition, StoreError};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

/// The HTTP API's port when `api_port` is not set: Patroni's, so its probes and recipes apply.
pub const DEFAULT_API_PORT: u16 = 8008;

/// How long a starting member keeps trying to register while etcd does not answer (the hosts
/// of a new cluster may start before their etcd has a quorum).
const REGISTER_PATIENCE: Duration = Duration::from_secs(60);

/// A member on several hosts needs the shared store, and the same passwords and CA as every
/// other host: they are given (or kept from an earlier start), never generated here.
fn check_for_hosts(layout: &Layout, config: &Config, env: &[FromEnv]) -> anyhow::Result<()> {
    if config.store == StoreConfig::File {
        bail!(
            "{}: \"file\" keeps the cluster's state in one directory, which members on other hosts cannot share; \
             `pgrepl node` needs store = etcd://HOST:PORT[,HOST:PORT...] (or PGREPL_STORE), the etcd cluster every host reaches",
            label(env, "store")
        );
    }
    let given = &config.passwords;
    let mut missing = Vec::new();
    if given.admin.is_none() {
        missing.push("database.admin_password (PGREPL_ADMIN_PASSWORD)");
    }
    if given.replication.is_none() {
        missing.push("database.replication_password (PGREPL_REPLICATION_PASSWORD)");
    }
    if config.names.app.is_some() && given.user.is_none() {
        missing.push("database.password (PGREPL_PASSWORD)");
    }
    if !missing.is_empty() {
        bail!(
            "{} not set: `pgrepl node` never generates a password, since every host of the cluster must use the same ones; \
             give them in pgrepl.toml (mode 0600) or in the environment, the same on every host",
            missing.join(", ")
        );
    }
    ca::check_given(layout, config)
}

/// This member's entry in the spec: the spec is created with it (as the bootstrap member) when
/// the cluster is new; else the entry is added, or brought up to date when it differs.
async fn register(cluster: &Cluster, member: &MemberName, wanted: &MemberSpec) -> anyhow::Result<()> {
    let (_, view) = cluster.view().await?;
    let Some(spec) = &view.spec else {
        let mut spec = Spec {
            members: [(member.clone(), wanted.clone())].into(),
            bootstrap: Some(member.clone()),
            last_member_number: member.number().unwrap_or(0),
            failover: cluster.config.failover,
            parameters: Some(cluster.config.parameters.clone()),
            ..Spec::default()
        };
        ClusterWide::configured(&cluster.config).put_in(&mut spec);
        match cluster.store.put(keys::SPEC, &serde_json::to_vec(&spec)?, Condition::Absent, None).await {
            Ok(_) => {
                info!(%member, host = %wanted.host, port = wanted.port, "created the cluster spec with this member first");
                return Ok(());
            }
            // Another host created it first: join that one.
            Err(StoreError::Conflict { .. }) => return Box::pin(register(cluster, member, wanted)).await,
            Err(e) => return Err(e.into()),
        }
    };
    if let Some(cluster_wide) = spec.parameters.as_ref().filter(|p| **p != cluster.config.parameters) {
        warn!(
            cluster = ?cluster_wide,
            "this host's [parameters] differ from the cluster's, which every member runs with: see `pgrepl config show`, change them with `pgrepl config set`"
        );
    }
    let differing = ClusterWide::configured(&cluster.config).differing(&ClusterWide::of(spec, &cluster.config));
    if !differing.is_empty() {
        warn!(
            settings = ?differing,
            "this host's pgrepl settings differ from the cluster's, which every member and router uses: see `pgrepl config show`, change them with `pgrepl config set`"
        );
    }
    // A member kept down by `pgrepl stop` stays so when its node starts again.
    let placed = |m: &MemberSpec| m.host == wanted.host && m.port == wanted.port;
    if spec.members.get(member).is_some_and(placed) && spec.parameters.is_some() {
        return Ok(());
    }
    cluster
        .update_spec(|_, spec| {
            let clash =
                spec.members.iter().find(|(n, m)| *n != member && m.host == wanted.host && m.port == wanted.port);
            if let Some((other, _)) = clash {
                bail!(
                    "member {other} is already at {}:{}; give this member another --host or --pg-port",
                    wanted.host,
                    wanted.port
                );
            }
            let stopped = spec.members.get(member).is_some_and(|m| m.stopped);
            spec.members.insert(member.clone(), MemberSpec { stopped, ..wanted.clone() });
            spec.last_member_number = spec.last_member_number.max(member.number().unwrap_or(0));
            // A spec from before the cluster kept its parameters takes this host's.
            spec.parameters.get_or_insert_with(|| cluster.config.parameters.clone());
            Ok(())
        })
        .await?;
    info!(%member, host = %wanted.host, port = wanted.port, "registered this member in the cluster spec");
    Ok(())
}

/// Runs `attempt` again while the store does not answer (etcd starting beside this member),
/// for up to `REGISTER_PATIENCE`, saying each time what it is `doing` and why it waits.
async fn patiently<T, Fut>(config: &Config, doing: &str, mut attempt: impl FnMut() -> Fut) -> anyhow::Result<T>
where
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let started = Instant::now();
    loop {
        match attempt().await {
            Err(e) if started.elapsed() < REGISTER_PATIENCE && is_unavailable(&e) => {
                warn!("{doing} {} (retrying): {e:#}", config.store);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            done => return done,
        }
    }
}

fn is_unavailable(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| matches!(cause.downcast_ref::<StoreError>(), Some(StoreError::Unavailable(_))))
}

/// The member's port must not be one of the router's when this node serves the endpoints.
fn check_router_ports(config: &Config, port: u16, with_router: bool) -> anyhow::Result<()> {
    if with_router && (port == config.port || port == config.ro_port) {
        bail!(
            "--pg-port {port} is also the router's {} port on {}; give the member another --pg-port, or the router other \
             ports (port and ro_port, or PGREPL_PORT and PGREPL_RO_PORT)",
            if port == config.port { "read-write" } else { "read-only" },
            config.listen
        );
    }
    Ok(())
}

/// The member's port must be free on `listen`, unless its own PostgreSQL still runs from before
/// (its node was killed), which the agent adopts.
fn check_port_free(layout: &Layout, config: &Config, member: &MemberName, port: u16) -> anyhow::Result<()> {
    if !setup::postmaster_runs(layout, member) {
        if let Err(e) = TcpListener::bind(SocketAddr::new(config.listen, port)) {
            bail!("port {port} on {} is not free ({e}); choose another --pg-port", config.listen);
        }
    }
    Ok(())
}

pub async fn run(dir: &Path, args: NodeArgs, env: Vec<FromEnv>) -> anyhow::Result<()> {
    let layout = Layout::new(dir);
    // Once the member has started here (its secrets file exists), the store and on etcd the
    // cluster name may not change; before, `pgrepl.toml` may be a hand-written one.
    let given = Given { env: &env, file: None, flags: Flags::default(), started: layout.secrets().exists() };
    let (raw, config) = setup::settle_config(&layout, given)?;
    check_for_hosts(&layout, &config, &env)?;
    check_router_ports(&config, args.pg_port, args.router)?;
    let member = MemberName::new(args.member.as_str())?;
    let host = args.host.unwrap_or(config.listen);
    if host.is_loopback() {
        warn!(%host, "this member's address is a loopback one, which members on other hosts cannot reach: set `listen` (PGREPL_LISTEN) or --host");
    }
    let endpoints = (!config.listen.is_unspecified()).then(|| config.listen.to_string());
    ca::check_files(&config, &host.to_string(), &Vec::from_iter(endpoints))?;
    pgrepl_pg::Binaries::find(config.bin_dir.as_deref())?;
    // Loaded while still root: serving the endpoints splices in the kernel where it can.
    let splicer = if args.router { router::load_splicer(config.router_splice)? } else { None };
    // A node that cannot go on is started again by whatever runs it: what it made stays.
    drop(setup::prepare_directory(&layout, &config, layout.config().exists())?);
    let member_dir = layout.member(&member);
    std::fs::create_dir_all(&member_dir).with_context(|| format!("create {}", member_dir.display()))?;
    let _agent_lock = agent_lock::acquire(&layout.agent_lock(&member))?;
    check_port_free(&layout, &config, &member, args.pg_port)?;
    let store = open_store(&layout, &config).await?;
    // Before anything is written here: a node that cannot go on leaves the directory as it was.
    patiently(&config, "take the cluster CA from the store", || {
        ca::settle_from_store(&layout, &config, store.as_ref())
    })
    .await?;
    setup::settle_files(&layout, &raw, &config, "pgrepl node")?;
    let cluster = Cluster { layout, config, store };
    let wanted = MemberSpec { host: host.to_string(), port: args.pg_port, stopped: false };
    patiently(&cluster.config, "register this member in the store", || register(&cluster, &member, &wanted))
        .await
        .with_context(|| format!("register {member} in the store {}", cluster.config.store))?;

    // The router's connection counts show in this member's /metrics.
    let connections = args.router.then(|| Arc::new(Connections::default()));
    let (_router_lock, mut router_task) = if let Some(connections) = connections.clone() {
        let lock = agent_lock::acquire(&cluster.layout.router_lock())?;
        let listeners = router::bind(&cluster.config, router::Ports::Own).await?;
        let serving =
            Cluster { layout: cluster.layout.clone(), config: cluster.config.clone(), store: cluster.store.clone() };
        info!(listen = %cluster.config.listen, port = cluster.config.port, ro_port = cluster.config.ro_port, "serving the endpoints");
        let task = tokio::spawn(async move { router::serve(&serving, listeners, splicer, connections).await });
        (Some(lock), Some(task))
    } else {
        (None, None)
    };

    let settings = agent::settings(&cluster.layout, &cluster.config, &member, &wanted.host);
    let (agent, _api) =
        agent::with_api(&cluster, &member, &wanted.host, settings, DEFAULT_API_PORT, connections).await?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut router_failure = None;
    let shutdown = async {
        let router_ended = async {
            match &mut router_task {
                Some(task) => match task.await {
                    Ok(Ok(())) => anyhow!("the router stopped"),
                    Ok(Err(e)) => e,
                    Err(e) => anyhow!("the router task: {e}"),
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            e = router_ended => {
                error!("the router failed, so this member stops too: {e:#}");
                router_failure = Some(e);
            }
        }
    };
    let ran = agent.run(shutdown).await;
    if let Some(task) = &router_task {
        task.abort();
    }
    ran?;
    match router_failure {
        Some(e) => Err(e.context("serve the endpoints")),
        None => Ok(()),
    }
}
