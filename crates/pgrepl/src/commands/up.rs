//! `pgrepl up`: create the cluster directory (or reuse it), settle configuration and
//! passwords (`setup`, shared with `node`), write the spec, start the supervisor, wait until
//! the cluster is ready, and print how to connect. A first `up` that fails before its
//! supervisor starts takes back what it made (the directory's files, and the spec it put in
//! the store).

use crate::agent_lock;
use crate::cli::UpArgs;
use crate::cluster::{etcd_prefix, open_store, read_dir_config, Cluster};
use crate::commands::params::{self, Actor};
use crate::commands::setup::{self, Flags, Given};
use crate::commands::{ca, ports, progress, router, summary, url, wait};
use crate::config::cluster_wide::ClusterWide;
use crate::config::{self, Config, StoreConfig};
use crate::layout::Layout;
use crate::readiness;
use crate::supervisor::{pgrepl_command, running_pid};
use crate::topology;
use anyhow::{bail, Context};
use pgrepl_core::{keys, ClusterView, MemberName, MemberSpec, PasswordKind, Spec};
use pgrepl_router::Splicer;
use pgrepl_store::{Condition, Revision, Store};
use std::path::Path;
use std::time::{Duration, Instant};

// Where other commands have long found them.

/// A new cluster's store must be empty: in etcd, a cluster of the same name (another directory's)
/// may already keep its state under the prefix, and this one must not take it over. Also shows
/// that the store answers before anything is written to the new directory.
async fn check_store_unused(store: &dyn Store, config: &Config) -> anyhow::Result<()> {
    let snapshot = store.snapshot().await.with_context(|| format!("read the store {}", config.store))?;
    if snapshot.entries.is_empty() {
        return Ok(());
    }
    match &config.store {
        StoreConfig::Etcd { .. } => {
            let prefix = etcd_prefix(&config.cluster);
            bail!(
                "the store {} already holds a cluster named {:?} (keys under {prefix}); give this one another name \
                 (`cluster` or PGREPL_CLUSTER), or remove that one with `pgrepl down --destroy` in its directory \
                 (if its directory is gone: `etcdctl del --prefix {prefix}`)",
                config.store,
                config.cluster,
            )
        }
        StoreConfig::File => bail!("the new cluster's store already holds state; choose another --dir"),
    }
}

/// A member of this cluster still running from before: its agent (which outlived a
/// supervisor) or its PostgreSQL (which outlived its agent).
fn still_running(layout: &Layout, member: &MemberName) -> bool {
    agent_lock::holder(&layout.agent_lock(member)).is_some() || setup::postmaster_runs(layout, member)
}

fn new_spec(config: &Config, wide: &ClusterWide) -> anyhow::Result<Spec> {
    let mut spec = Spec {
        bootstrap: Some(MemberName::numbered(1)),
        failover: config.failover,
        parameters: Some(config.parameters.clone()),
        ..Spec::default()
    };
    wide.put_in(&mut spec);
    for n in 1..=(config.replicas as u32 + 1) {
        let name = MemberName::numbered(n);
        let port = ports::for_member(config, &spec, &name)?;
        spec.members.insert(name, MemberSpec { host: config.listen.to_string(), port, stopped: false });
        spec.last_member_number = n;
    }
    Ok(spec)
}

/// The spec of this start: a new cluster's, or the existing one scaled to `--replicas` and with
/// changed passwords' versions bumped (so running agents apply them). Returns the revision of
/// a new cluster's spec, which a failing first start takes back.
async fn settle_spec(
    cluster: &Cluster,
    args: &UpArgs,
    changed: &[PasswordKind],
    actor: &Actor,
) -> anyhow::Result<Option<Revision>> {
    let (_, view) = cluster.view().await?;
    let listen = cluster.config.listen.to_string();
    let elsewhere = view.spec.iter().flat_map(|s| &s.members).find(|(_, m)| !m.host.is_empty() && m.host != listen);
    if let Some((name, m)) = elsewhere {
        bail!(
            "this cluster has members on other hosts ({name} at {}, this host listens on {listen}); `up` would run every member here: run `pgrepl node` on each host instead",
            m.host
        );
    }
    let config = &cluster.config;
    let wide = ClusterWide::configured(config);
    match &view.spec {
        None => {
            let spec = new_spec(config, &wide)?;
            ports::check_free(config, &spec, |_| false)?;
            ports::check_router_free(config, false)?;
            let revision = cluster.store.put(keys::SPEC, &serde_json::to_vec(&spec)?, Condition::Absent, None).await?;
            return Ok(Some(revision));
        }
        Some(spec)
            if args.replicas.is_some()
                || !changed.is_empty()
                || !wide.is_in(spec)
                || spec.parameters.as_ref() != Some(&config.parameters) =>
        {
            let mut before = None;
            if spec.parameters.as_ref() != Some(&config.parameters) {
                // Checked before it reaches a running member: PostgreSQL's own parser decides.
                let bins = pgrepl_pg::Binaries::find(config.bin_dir.as_deref())?;
                bins.check_parameters(&config.parameters)
                    .map_err(|e| anyhow::anyhow!("[parameters]: PostgreSQL refuses them: {e}; nothing was changed"))?;
            }
            let (_, revision) = cluster
                .update_spec_at(|view, spec| {
                    if let Some(n) = args.replicas {
                        let unplaced = |_: &MemberName| MemberSpec { host: String::new(), port: 0, stopped: false };
                        *spec = spec.scaled(n as usize, view.leader.as_ref(), unplaced)?;
                        ports::assign_new(config, spec)?;
                    }
                    for kind in changed {
                        spec.passwords.bump(*kind);
                    }
                    // The attempt that is written is the last one made.
                    let before_wide = ClusterWide::of(spec, config);
                    before = Some(params::all_settings(&spec.parameters.clone().unwrap_or_default(), &before_wide));
                    spec.parameters = Some(config.parameters.clone());
                    wide.put_in(spec);
                    Ok(())
                })
                .await?;
            let before = before.unwrap_or_default();
            let after = params::all_settings(&config.parameters, &wide);
            params::record_or_warn(cluster.store.as_ref(), actor, revision, &before, &after).await;
        }
        Some(_) => {}
    }
    Ok(None)
}

/// Starts the supervisor, detached from this terminal, after checking that the ports of the
/// members and the router are free (or held by this cluster's processes still running).
async fn start_supervisor(cluster: &Cluster, splicer: Option<&Splicer>) -> anyhow::Result<tokio::process::Child> {
    let (_, view) = cluster.view().await?;
    let layout = &cluster.layout;
    ports::check_free(&cluster.config, view.spec.as_ref().context("no spec")?, |m| still_running(layout, m))?;
    ports::check_router_free(&cluster.config, agent_lock::holder(&layout.router_lock()).is_some())?;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(layout.supervisor_log())?;
    let mut cmd = pgrepl_command(&layout.dir)?;
    cmd.arg("supervise").stdout(log.try_clone()?).stderr(log);
    if let Some(splicer) = splicer {
        router::hand_down(&mut cmd, splicer);
    }
    // SAFETY: setsid in the child before exec detaches it from this terminal's session.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn().context("start the supervisor")
}

/// What `up` has set going once its directory is settled: the cluster, whether it is in
/// maintenance mode, and the supervisor it started (none when one already ran).
struct Begun {
    cluster: Cluster,
    paused: bool,
    supervisor: Option<tokio::process::Child>,
}

/// The new spec a first start put in the store, for `run` to take back when the start fails.
type PutSpec = Option<(std::sync::Arc<dyn Store>, Revision)>;

/// From the prepared directory to a running supervisor: the store, the directory's files,
/// the spec, the supervisor.
async fn begin(
    layout: Layout,
    raw: &config::RawConfig,
    config: Config,
    (args, actor, existing): (&UpArgs, &Actor, bool),
    splicer: Option<&Splicer>,
    put_spec: &mut PutSpec,
) -> anyhow::Result<Begun> {
    let store = open_store(&layout, &config).await?;
    if !existing {
        // Before the directory gets its configuration: a store that does not answer, or holds
        // another cluster, ends this start with nothing written.
        check_store_unused(store.as_ref(), &config).await?;
    }
    let changed = setup::settle_files(&layout, raw, &config, "pgrepl up")?;
    let cluster = Cluster { layout, config, store };
    if let Some(revision) = settle_spec(&cluster, args, &changed, actor).await? {
        *put_spec = Some((cluster.store.clone(), revision));
    }
    // In maintenance mode no agent starts a stopped PostgreSQL: `up` then starts the agents and
    // waits only until each publishes, and says the cluster is paused, not ready.
    let paused = cluster.view().await?.1.paused();
    let supervisor = match running_pid(&cluster.layout.supervisor_pid()) {
        Some(_) => None,
        None => Some(start_supervisor(&cluster, splicer).await?),
    };
    Ok(Begun { cluster, paused, supervisor })
}

pub async fn run(dir: &Path, args: UpArgs) -> anyhow::Result<()> {
    // Before `settle_config`, which may switch a process run by root to `run_as`.
    let actor = Actor::now("pgrepl up");
    let started = Instant::now();
    // Only statuses published from now on show the cluster ready: after a power loss (every
    // process killed at once) the store still holds the statuses of before, within their TTL.
    let started_ms = wait::wall_clock_ms();
    let layout = Layout::new(dir);
    let existing = layout.config().exists();
    let before = if existing { read_dir_config(&layout).ok() } else { None };
    let env = config::read_env(|name| std::env::var(name).ok())?;
    let flags = Flags { replicas: args.replicas, port: args.port, ro_port: args.ro_port, base_port: args.base_port };
    let given = Given { env: &env, file: args.config.as_deref(), flags, started: existing };
    let (raw, config) = setup::settle_config(&layout, given)?;
    // Every member of one machine is reached at `listen`.
    ca::check_files(&config, &config.listen.to_string(), &[])?;
    pgrepl_pg::Binaries::find(config.bin_dir.as_deref())?;
    // Loaded while still root, for the router the new supervisor will start.
    let splicer = match running_pid(&layout.supervisor_pid()) {
        None => router::load_splicer(config.router_splice)?,
        Some(_) => None,
    };
    let fresh = setup::prepare_directory(&layout, &config, existing)?;
    let mut put_spec = None;
    let begun = begin(layout, &raw, config, (&args, &actor, existing), splicer.as_ref(), &mut put_spec).await;
    let Begun { cluster, paused, supervisor } = match (begun, fresh) {
        (Ok(begun), fresh) => {
            drop(fresh);
            begun
        }
        (Err(e), Some(fresh)) => {
            // Nothing runs yet: what this first start made goes, so that it can simply be run again.
            if let Some((store, revision)) = put_spec {
                if let Err(undo) = store.delete(keys::SPEC, Condition::Revision(revision)).await {
                    tracing::warn!("take back the new cluster's spec: {undo}");
                }
            }
            fresh.undo_or_warn();
            return Err(e);
        }
        (Err(e), None) => return Err(e),
    };

    let limit = Duration::from_secs(args.wait);
    let ready = |view: &ClusterView| match paused {
        true => readiness::agents_since(view, started_ms),
        false => readiness::check_since(view, started_ms).map(drop),
    };
    match supervisor {
        None => {
            if before.is_some_and(|b| read_dir_config(&cluster.layout).is_ok_and(|now| now != b)) {
                eprintln!(
                    "note: the cluster is running; new passwords, --replicas, [parameters] and the cluster-wide settings (see `pgrepl config show`) apply now (a parameter that needs a restart shows as pending restart in `pgrepl status`), other settings at its next start (`pgrepl down`, then `pgrepl up`)"
                );
            }
            progress::while_waiting(&cluster, wait::until(&cluster, limit, ready)).await?;
        }
        Some(mut supervisor) => {
            tokio::select! {
                ready = progress::while_waiting(&cluster, wait::until(&cluster, limit, ready)) => { ready?; }
                exit = supervisor.wait() => {
                    let log = std::fs::read_to_string(cluster.layout.supervisor_log()).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
                    bail!("the supervisor exited ({}) before the cluster was ready; its log ends:\n{}", exit?, tail.join("\n"));
                }
            }
        }
    }
    let (_, view) = cluster.view().await?;
    if paused {
        println!(
            "cluster {:?} is in maintenance mode: its agents run ({}), but none starts a stopped PostgreSQL, so it \
             is not waited for to be ready; after `pgrepl resume`, `pgrepl up` waits for that",
            cluster.config.cluster,
            cluster.layout.dir.display()
        );
        summary::print(&cluster, &view);
        url::print_hint(&cluster.layout);
        return Ok(());
    }
    let routing = crate::config::cluster_wide::routing(view.spec.as_ref(), &cluster.config);
    let ro_routed = !topology::from_view(&view, routing.ro_max_lag).ro.is_empty();
    ports::wait_for_router(&cluster.config, ro_routed, Duration::from_secs(10)).await?;
    println!(
        "cluster {:?} is ready in {:.1} s ({})",
        cluster.config.cluster,
        started.elapsed().as_secs_f64(),
        cluster.layout.dir.display()
    );
    summary::print(&cluster, &view);
    url::print_hint(&cluster.layout);
    Ok(())
}
