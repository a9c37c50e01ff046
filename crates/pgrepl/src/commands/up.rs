//! `pgrepl up`: create the cluster directory (or reuse it), settle configuration and
//! passwords, write the spec, start the supervisor, wait until the cluster is ready, and print
//! how to connect.

use crate::agent_lock;
use crate::cli::UpArgs;
use crate::cluster::{enter_as, etcd_prefix, open_store, read_dir_config, Cluster};
use crate::commands::params::{self, Actor};
use crate::commands::{ca, ports, progress, router, summary, wait};
use crate::config::cluster_wide::ClusterWide;
use crate::config::{self, Config, RawConfig, StoreConfig};
use crate::layout::Layout;
use crate::readiness;
use crate::supervisor::{is_alive, pgrepl_command, running_pid};
use crate::topology;
use anyhow::{bail, Context};
use pgrepl_agent::Secrets;
use pgrepl_core::{keys, ClusterView, MemberName, MemberSpec, PasswordKind, Spec};
use pgrepl_router::Splicer;
use pgrepl_store::{Condition, Store};
use rand::distributions::{Alphanumeric, DistString};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::{Duration, Instant};

pub(crate) fn generated_password() -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), 32)
}

/// Configuration of this `up`: the directory's file (or `--config` for a new cluster), then
/// the environment, then the flags. An existing cluster's fixed settings (its store) must not
/// change.
fn settle_config(layout: &Layout, args: &UpArgs, existing: bool) -> anyhow::Result<(RawConfig, Config)> {
    let mut env = config::read_env(|name| std::env::var(name).ok())?;
    let before = if existing { Some(read_dir_config(layout)?) } else { None };
    let mut raw = match (&args.config, &before) {
        (_, Some(before)) => before.clone(),
        (Some(file), None) => config::read_file(file)?,
        (None, None) => RawConfig::default(),
    };
    config::apply_env(&mut raw, &env)?;
    raw.replicas = args.replicas.or(raw.replicas);
    raw.port = args.port.or(raw.port);
    raw.ro_port = args.ro_port.or(raw.ro_port);
    raw.base_port = args.base_port.or(raw.base_port);
    // A setting given by a flag is named as such in errors, not after a variable it overrode.
    let flagged = [("replicas", args.replicas), ("port", args.port), ("ro_port", args.ro_port)];
    env.retain(|e| !flagged.iter().any(|(field, given)| *field == e.field && given.is_some()));
    let config = config::validate(&raw, &env)?;
    if let Some(before) = &before {
        config::check_unchanged(before, &config, &env)?;
    }
    Ok((raw, config))
}

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

/// Creates the directory, owned by the cluster's OS user, and becomes that user.
pub(crate) fn prepare_directory(layout: &Layout, config: &Config, existing: bool) -> anyhow::Result<()> {
    if !existing {
        if let Ok(mut entries) = std::fs::read_dir(&layout.dir) {
            if entries.next().is_some() {
                bail!(
                    "{} exists, is not empty and is not a pgrepl cluster directory (no pgrepl.toml); refusing to use it: choose another --dir",
                    layout.dir.display()
                );
            }
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&layout.dir)
            .with_context(|| format!("create {}", layout.dir.display()))?;
    }
    if layout.longest_socket_path() > 100 {
        bail!("the cluster directory path {} is too long for PostgreSQL's unix sockets (at most about 60 characters); choose a shorter --dir", layout.dir.display());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let (uid, gid) = pgrepl_pg::user_ids(&config.run_as)?;
        std::os::unix::fs::chown(&layout.dir, Some(uid), Some(gid))
            .with_context(|| format!("give {} to OS user {}", layout.dir.display(), config.run_as))?;
    }
    enter_as(&config.run_as, &layout.dir)
}

/// The passwords of this start: given ones win, earlier ones are kept, missing ones generated.
/// Returns the kinds that changed from the earlier ones. The API token and the store's password
/// are kept beside them, as `config` has them (given now, or read from this file by
/// `read_dir_config`), so that the agents and the router, which read this file, get them
/// without argv or environment.
pub(crate) fn settle_secrets(layout: &Layout, config: &Config) -> anyhow::Result<Vec<PasswordKind>> {
    let old = if layout.secrets().exists() { Some(Secrets::load(&layout.secrets())?) } else { None };
    let given = &config.passwords;
    let pick = |given: &Option<String>, old: Option<&str>| {
        given.clone().or(old.map(str::to_string)).unwrap_or_else(generated_password)
    };
    let secrets = Secrets {
        user: config.names.app.as_ref().map(|_| pick(&given.user, old.as_ref().and_then(|o| o.user.as_deref()))),
        admin: pick(&given.admin, old.as_ref().map(|o| o.admin.as_str())),
        replication: pick(&given.replication, old.as_ref().map(|o| o.replication.as_str())),
        api_token: config.api_token.as_ref().map(|t| t.expose().to_string()),
        store_password: config.store_access.password.clone(),
    };
    let changed = match &old {
        Some(old) => PasswordKind::ALL.into_iter().filter(|k| old.get(*k) != secrets.get(*k)).collect(),
        None => vec![],
    };
    secrets.save(&layout.secrets())?;
    Ok(changed)
}

/// Writes `pgrepl.toml` without any password or token (those live in the secrets file), with the role
/// names made explicit so the directory's configuration reads the same on every later load.
/// `by` names the command in the file's first line.
pub(crate) fn write_config(layout: &Layout, raw: &RawConfig, config: &Config, by: &str) -> anyhow::Result<()> {
    let mut stored = raw.clone();
    stored.database.user = config.names.app.as_ref().map(|a| a.user.clone());
    stored.database.name = config.names.app.as_ref().map(|a| a.database.clone());
    stored.database.replication_user = Some(config.names.replication_user.clone());
    stored.database.password = None;
    stored.database.admin_password = None;
    stored.database.replication_password = None;
    stored.api_token = None;
    stored.store_password = None;
    // The CA lives in ca.crt and ca.key beside the secrets.
    stored.tls.ca_cert = None;
    stored.tls.ca_key = None;
    let text = format!(
        "# pgrepl cluster configuration, written by `{by}` (passwords live in secrets.json).\n{}",
        toml::to_string_pretty(&stored)?
    );
    let path = layout.config();
    pgrepl_pg::write_atomic(&path, text.as_bytes(), 0o600).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// A member of this cluster still running from before: its agent (which outlived a
/// supervisor) or its PostgreSQL (which outlived its agent).
fn still_running(layout: &Layout, member: &MemberName) -> bool {
    agent_lock::holder(&layout.agent_lock(member)).is_some() || postmaster_runs(layout, member)
}

/// Whether the PostgreSQL of `member` runs (from its data directory in this cluster directory).
pub(crate) fn postmaster_runs(layout: &Layout, member: &MemberName) -> bool {
    let postmaster = std::fs::read_to_string(layout.data(member).join("postmaster.pid")).unwrap_or_default();
    let postmaster_pid = postmaster.lines().next().and_then(|l| l.trim().parse().ok());
    postmaster_pid.is_some_and(is_alive)
}

fn new_spec(config: &Config) -> anyhow::Result<Spec> {
    let mut spec = Spec {
        bootstrap: Some(MemberName::numbered(1)),
        failover: config.failover,
        parameters: Some(config.parameters.clone()),
        ..Spec::default()
    };
    ClusterWide::configured(config).put_in(&mut spec);
    for n in 1..=(config.replicas as u32 + 1) {
        let name = MemberName::numbered(n);
        let port = ports::for_member(config, &spec, &name)?;
        spec.members.insert(name, MemberSpec { host: config.listen.to_string(), port, stopped: false });
        spec.last_member_number = n;
    }
    Ok(spec)
}

/// The spec of this start: a new cluster's, or the existing one scaled to `--replicas` and with
/// changed passwords' versions bumped (so running agents apply them).
async fn settle_spec(cluster: &Cluster, args: &UpArgs, changed: &[PasswordKind], actor: &Actor) -> anyhow::Result<()> {
    let (_, view) = cluster.view().await?;
    let listen = cluster.config.listen.to_string();
    let elsewhere = view.spec.iter().flat_map(|s| &s.members).find(|(_, m)| !m.host.is_empty() && m.host != listen);
    if let Some((name, m)) = elsewhere {
        bail!(
            "this cluster has members on other hosts ({name} at {}, this host listens on {listen}); `up` would run every member here: run `pgrepl node` on each host instead",
            m.host
        );
    }
    match &view.spec {
        None => {
            let spec = new_spec(&cluster.config)?;
            ports::check_free(&cluster.config, &spec, |_| false)?;
            ports::check_router_free(&cluster.config, false)?;
            cluster.store.put(keys::SPEC, &serde_json::to_vec(&spec)?, Condition::Absent, None).await?;
        }
        Some(spec)
            if args.replicas.is_some()
                || !changed.is_empty()
                || !ClusterWide::configured(&cluster.config).is_in(spec)
                || spec.parameters.as_ref() != Some(&cluster.config.parameters) =>
        {
            let config = cluster.config.clone();
            let wide = ClusterWide::configured(&config);
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
                        ports::assign_new(&config, spec)?;
                    }
                    for kind in changed {
                        spec.passwords.bump(*kind);
                    }
                    // The attempt that is written is the last one made.
                    let before_wide = ClusterWide::of(spec, &config);
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
    Ok(())
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
    let (raw, config) = settle_config(&layout, &args, existing)?;
    // Every member of one machine is reached at `listen`.
    ca::check_files(&config, &config.listen.to_string(), &[])?;
    pgrepl_pg::Binaries::find(config.bin_dir.as_deref())?;
    // Loaded while still root, for the router the new supervisor will start.
    let splicer = match running_pid(&layout.supervisor_pid()) {
        None => router::load_splicer(config.router_splice)?,
        Some(_) => None,
    };
    prepare_directory(&layout, &config, existing)?;
    let store = open_store(&layout, &config).await?;
    if !existing {
        // Before the directory gets its configuration: a failed first `up` leaves it new.
        check_store_unused(store.as_ref(), &config).await?;
    }
    let changed = settle_secrets(&layout, &config)?;
    ca::settle(&layout, &config)?;
    write_config(&layout, &raw, &config, "pgrepl up")?;
    let cluster = Cluster { layout, config, store };
    settle_spec(&cluster, &args, &changed, &actor).await?;

    let limit = Duration::from_secs(args.wait);
    // In maintenance mode no agent starts a stopped PostgreSQL: `up` then starts the agents and
    // waits only until each publishes, and says the cluster is paused, not ready.
    let paused = cluster.view().await?.1.paused();
    let ready = |view: &ClusterView| match paused {
        true => readiness::agents_since(view, started_ms),
        false => readiness::check_since(view, started_ms).map(drop),
    };
    if running_pid(&cluster.layout.supervisor_pid()).is_some() {
        if before.is_some_and(|b| read_dir_config(&cluster.layout).is_ok_and(|now| now != b)) {
            eprintln!(
                "note: the cluster is running; new passwords, --replicas, [parameters] and the cluster-wide settings (see `pgrepl config show`) apply now (a parameter that needs a restart shows as pending restart in `pgrepl status`), other settings at its next start (`pgrepl down`, then `pgrepl up`)"
            );
        }
        progress::while_waiting(&cluster, wait::until(&cluster, limit, ready)).await?;
    } else {
        let mut supervisor = start_supervisor(&cluster, splicer.as_ref()).await?;
        tokio::select! {
            ready = progress::while_waiting(&cluster, wait::until(&cluster, limit, ready)) => { ready?; }
            exit = supervisor.wait() => {
                let log = std::fs::read_to_string(cluster.layout.supervisor_log()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
                bail!("the supervisor exited ({}) before the cluster was ready; its log ends:\n{}", exit?, tail.join("\n"));
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
    Ok(())
}
