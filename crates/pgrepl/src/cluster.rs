//! An existing cluster directory opened for a command: its configuration, its store, the
//! current view, and the few read-modify-write steps commands share (spec updates).
//! Opening switches a root process to the cluster's OS user first. `open_store` is the one
//! place a store backend is chosen.

use crate::config::{self, Config, StoreAccess, StoreConfig};
use crate::layout::Layout;
use anyhow::{bail, Context};
use pgrepl_core::{keys, ClusterView, MemberName, MemberSpec, Spec};
use pgrepl_store::{AccessLabels, Condition, EtcdAccess, EtcdStore, EtcdTls, EtcdUser, FileStore, Snapshot, Store};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct Cluster {
    pub layout: Layout,
    pub config: Config,
    pub store: Arc<dyn Store>,
}

/// How long one call to a networked store (etcd) may take before it fails. Well under the
/// lease TTL (4 s by default): the agent's fence stops a primary that has not renewed its lease
/// within ttl - 0.5 s, so a renewal must fail quickly and be tried again in the next cycle
/// rather than hang until the fence fires (at 1 s a 4 s lease gets three tries).
pub const STORE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a cluster's keys live in etcd: one prefix per cluster name, ending in `/` so that one
/// cluster's prefix never starts another's, and several clusters can share one etcd.
pub fn etcd_prefix(cluster: &str) -> String {
    format!("/pgrepl/{cluster}/")
}

/// The store `config` names: the file store in the cluster directory, or etcd under the
/// cluster's prefix. Opening etcd does not wait for it to answer; each call does, up to
/// `STORE_TIMEOUT`.
pub async fn open_store(layout: &Layout, config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &config.store {
        StoreConfig::File => Arc::new(FileStore::open(&layout.store())?),
        StoreConfig::Etcd { endpoints, .. } => {
            let prefix = etcd_prefix(&config.cluster);
            let access = etcd_access(&config.store_access)?;
            let store = EtcdStore::connect_with(endpoints, &prefix, STORE_TIMEOUT, access)
                .await
                .with_context(|| format!("open the store {}", config.store))?;
            Arc::new(store)
        }
    })
}

/// The store's TLS files read (the key only from a file of mode 0600) and its user, each error
/// naming the setting and the file.
fn etcd_access(given: &StoreAccess) -> anyhow::Result<EtcdAccess> {
    let read = |key: &str, path: &Path| {
        std::fs::read(path).with_context(|| format!("{key}: read {} (as {})", path.display(), whoami()))
    };
    let tls = match &given.tls {
        None => None,
        Some(tls) => {
            let identity = match &tls.identity {
                None => None,
                Some((cert, key)) => {
                    let meta = std::fs::metadata(key)
                        .with_context(|| format!("store_tls_key: read {} (as {})", key.display(), whoami()))?;
                    let mode = meta.permissions().mode() & 0o777;
                    if mode & 0o077 != 0 {
                        bail!(
                            "store_tls_key: {} is readable by others (mode {mode:o}); a private key must be mode 0600: \
                             run `chmod 600 {}`",
                            key.display(),
                            key.display()
                        );
                    }
                    Some((read("store_tls_cert", cert)?, read("store_tls_key", key)?))
                }
            };
            Some(EtcdTls { ca_pem: read("store_tls_ca", &tls.ca)?, identity })
        }
    };
    let user = match (&given.user, &given.password) {
        (Some(name), Some(password)) => Some(EtcdUser { name: name.clone(), password: password.clone() }),
        _ => None,
    };
    let labels = AccessLabels {
        ca: "store_tls_ca",
        identity: "store_tls_cert and store_tls_key",
        user: "store_user and store_password",
    };
    Ok(EtcdAccess { tls, user, labels })
}

/// This process's OS user, for messages about files it cannot read (after `enter_as`, the
/// cluster's `run_as`).
fn whoami() -> String {
    // SAFETY: geteuid has no preconditions.
    format!("uid {}", unsafe { libc::geteuid() })
}

/// When running as root, become `run_as` for good, then check the directory is reachable.
pub fn enter_as(run_as: &str, dir: &Path) -> anyhow::Result<()> {
    pgrepl_pg::become_user(run_as)?;
    if let Err(e) = std::fs::read_dir(dir) {
        bail!(
            "the cluster directory {} is not reachable by OS user {run_as} ({e}); a parent directory may deny access: \
             choose a --dir that user can reach (such as one under /tmp or /var/lib), or set run_as",
            dir.display()
        );
    }
    Ok(())
}

/// The configuration stored in a cluster directory (environment variables are merged by `up`).
/// Its passwords live in the secrets file, so they are read from there for validation.
pub fn load_config(layout: &Layout) -> anyhow::Result<Config> {
    Ok(config::validate(&read_dir_config(layout)?, &[])?)
}

/// The raw configuration of a cluster directory, with its passwords (and the API token and the
/// store's password, when the secrets file holds them) from the secrets file.
pub fn read_dir_config(layout: &Layout) -> anyhow::Result<config::RawConfig> {
    let mut raw = config::read_file(&layout.config())?;
    if layout.secrets().exists() {
        let secrets = pgrepl_agent::Secrets::load(&layout.secrets())?;
        raw.database.password = secrets.user;
        raw.database.admin_password = Some(secrets.admin);
        raw.database.replication_password = Some(secrets.replication);
        if secrets.api_token.is_some() {
            raw.api_token = secrets.api_token;
        }
        if secrets.store_password.is_some() {
            raw.store_password = secrets.store_password;
        }
    }
    Ok(raw)
}

impl Cluster {
    /// Opens the cluster in `dir`; an error when it is not a pgrepl cluster directory.
    pub async fn open(dir: &Path) -> anyhow::Result<Cluster> {
        let layout = Layout::new(dir);
        if !layout.config().exists() {
            bail!(
                "{} is not a pgrepl cluster directory (no pgrepl.toml); create one with `pgrepl up --dir {}` or pass the right --dir",
                layout.dir.display(),
                dir.display()
            );
        }
        let config = load_config(&layout)?;
        enter_as(&config.run_as, &layout.dir)?;
        let store = open_store(&layout, &config).await?;
        Ok(Cluster { layout, config, store })
    }

    pub async fn view(&self) -> anyhow::Result<(Snapshot, ClusterView)> {
        let snapshot = self.store.snapshot().await.context("read the store")?;
        let view = ClusterView::from_entries(snapshot.entries.iter().map(|(k, e)| (k.as_str(), e.value.as_slice())))?;
        Ok((snapshot, view))
    }

    /// `name` as a member of the spec, or an error listing the members there are.
    pub fn member(view: &ClusterView, name: &str) -> anyhow::Result<MemberName> {
        let known: Vec<String> = view.spec.iter().flat_map(|s| s.members.keys()).map(|m| m.to_string()).collect();
        match MemberName::new(name) {
            Ok(m) if view.spec.as_ref().is_some_and(|s| s.members.contains_key(&m)) => Ok(m),
            _ => bail!("unknown member {name:?}; the members are {}", known.join(", ")),
        }
    }

    /// A member that runs on a host of its own (`pgrepl node`), not at this directory's
    /// `listen` address: the cluster spans hosts, and commands that act on this machine alone
    /// (`scale`) or on its secrets file alone (`passwd`) must say so or do otherwise.
    pub fn member_elsewhere<'v>(&self, view: &'v ClusterView) -> Option<(&'v MemberName, &'v MemberSpec)> {
        let listen = self.config.listen.to_string();
        view.spec.iter().flat_map(|s| &s.members).find(|(_, m)| !m.host.is_empty() && m.host != listen)
    }

    /// Read-modify-write of the spec, retried on a concurrent change.
    pub async fn update_spec(
        &self,
        change: impl FnMut(&ClusterView, &mut Spec) -> anyhow::Result<()>,
    ) -> anyhow::Result<Spec> {
        Ok(self.update_spec_at(change).await?.0)
    }

    /// `update_spec`, with the revision of the spec it wrote.
    pub async fn update_spec_at(
        &self,
        mut change: impl FnMut(&ClusterView, &mut Spec) -> anyhow::Result<()>,
    ) -> anyhow::Result<(Spec, pgrepl_store::Revision)> {
        for _ in 0..20 {
            let (snapshot, view) = self.view().await?;
            let entry = snapshot.get(keys::SPEC).context("the store holds no cluster spec")?;
            let mut spec = view.spec.clone().context("the store holds no cluster spec")?;
            change(&view, &mut spec)?;
            let value = serde_json::to_vec(&spec)?;
            match self.store.put(keys::SPEC, &value, Condition::Revision(entry.revision), None).await {
                Ok(revision) => return Ok((spec, revision)),
                Err(pgrepl_store::StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        bail!("the cluster spec kept changing under this command; try again")
    }
}
