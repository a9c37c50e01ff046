//! `pgrepl config show|set|reset`: the cluster's PostgreSQL parameters, kept in the spec and the
//! same for every member. A change is checked by the server binaries' own parser first (a
//! throwaway `postgres -C`), so no value PostgreSQL refuses ever reaches a member; it is written
//! by one compare-and-swap on the spec as read (a concurrent change makes it fail, and nothing
//! changes); each agent then rewrites its configuration and reloads, and a parameter that
//! needs a restart shows as pending restart in `pgrepl status`. The cluster directory's own
//! `[parameters]` follow, so that a later `pgrepl up` keeps them.

use crate::cluster::{read_dir_config, Cluster};
use crate::commands::up;
use anyhow::{bail, Context};
use pgrepl_core::keys;
use pgrepl_store::{Condition, StoreError};
use std::collections::BTreeMap;
use std::path::Path;

/// Parameters pgrepl sets on every member itself (`pgrepl.conf`): how members reach and follow
/// each other. `[parameters]` and `config set` may not.
pub const MANAGED: [&str; 12] = [
    "listen_addresses",
    "port",
    "unix_socket_directories",
    "cluster_name",
    "primary_conninfo",
    "primary_slot_name",
    "synchronous_standby_names",
    "recovery_target_timeline",
    "ssl",
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_ca_file",
];

/// What `config set` and `config reset` ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Set(Vec<(String, String)>),
    Reset(Vec<String>),
}

/// `NAME=VALUE` pairs: a PostgreSQL setting name (letters, digits, `_`, `.`), not one pgrepl
/// manages, and its value as postgresql.conf takes it (may be empty).
pub fn parse_pairs(pairs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|pair| {
            let Some((name, value)) = pair.split_once('=') else {
                bail!("{pair:?} is not NAME=VALUE (say shared_buffers=256MB)");
            };
            check_name(name.trim())?;
            Ok((name.trim().to_string(), value.trim().to_string()))
        })
        .collect()
}

fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
        bail!("{name:?} is not a PostgreSQL setting name (letters, digits, '_' and '.')");
    }
    if MANAGED.contains(&name) {
        bail!("{name} is set by pgrepl on every member (how members reach and follow each other); it cannot be changed here");
    }
    Ok(())
}

/// The parameters after `change`.
pub fn changed(current: &BTreeMap<String, String>, change: &Change) -> anyhow::Result<BTreeMap<String, String>> {
    let mut next = current.clone();
    match change {
        Change::Set(pairs) => next.extend(pairs.iter().cloned()),
        Change::Reset(names) => {
            for name in names {
                check_name(name)?;
                if next.remove(name).is_none() {
                    bail!(
                        "{name} is not among the cluster's parameters (see `pgrepl config show`); nothing was changed"
                    );
                }
            }
        }
    }
    Ok(next)
}

/// `config show [--json]`: the parameters every member runs with, and the spec's revision
/// (for `config set --if-revision`).
pub async fn show(dir: &Path, json: bool) -> anyhow::Result<()> {
    let cluster = Cluster::open(dir).await?;
    let (snapshot, view) = cluster.view().await?;
    let revision = snapshot.get(keys::SPEC).map(|e| e.revision).context("the store holds no cluster spec")?;
    let spec = view.spec.context("the store holds no cluster spec")?;
    let parameters = spec.parameters_or(&cluster.config.parameters);
    if json {
        let out = serde_json::json!({ "parameters": parameters, "revision": revision });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if parameters.is_empty() {
        println!("# no PostgreSQL parameters of the cluster's own (PostgreSQL's defaults and pgrepl's)");
    }
    for (name, value) in parameters {
        println!("{name} = '{}'", value.replace('\'', "''"));
    }
    Ok(())
}

/// `config set NAME=VALUE ...` and `config reset NAME ...`.
pub async fn run(dir: &Path, change: Change, if_revision: Option<u64>) -> anyhow::Result<()> {
    let cluster = Cluster::open(dir).await?;
    let (snapshot, view) = cluster.view().await?;
    let entry = snapshot.get(keys::SPEC).context("the store holds no cluster spec: is the cluster up?")?;
    let mut spec = view.spec.clone().context("the store holds no cluster spec")?;
    if let Some(wanted) = if_revision.filter(|r| *r != entry.revision) {
        bail!(
            "the cluster's spec is at revision {}, not {wanted}: it changed since it was read; nothing was changed \
             (see `pgrepl config show`)",
            entry.revision
        );
    }
    let next = changed(spec.parameters_or(&cluster.config.parameters), &change)?;
    let bins = pgrepl_pg::Binaries::find(cluster.config.bin_dir.as_deref())?;
    bins.check_parameters(&next)
        .map_err(|e| anyhow::anyhow!("PostgreSQL refuses these parameters: {e}; nothing was changed"))?;
    spec.parameters = Some(next.clone());
    let value = serde_json::to_vec(&spec)?;
    match cluster.store.put(keys::SPEC, &value, Condition::Revision(entry.revision), None).await {
        Ok(_) => {}
        Err(StoreError::Conflict { .. }) => bail!(
            "the cluster's spec changed while this command ran (another `pgrepl config set`, or a member joining); \
             nothing was changed: see `pgrepl config show` and run it again"
        ),
        Err(e) => return Err(e).context("write the cluster's parameters"),
    }
    // A later `pgrepl up` of this directory must not put the old ones back.
    if cluster.layout.config().exists() {
        let mut raw = read_dir_config(&cluster.layout)?;
        raw.parameters = next.iter().map(|(k, v)| (k.clone(), toml::Value::String(v.clone()))).collect();
        up::write_config(&cluster.layout, &raw, &cluster.config, "pgrepl config")?;
    }
    match &change {
        Change::Set(pairs) => {
            let said: Vec<String> = pairs.iter().map(|(k, v)| format!("{k} = '{v}'")).collect();
            println!("set {} for every member", said.join(", "));
        }
        Change::Reset(names) => println!("reset {} for every member (back to the default)", names.join(", ")),
    }
    println!(
        "each member reloads its configuration within a loop; those a parameter needs restarted show \
         \"pending restart\" in `pgrepl status`"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn pairs_are_names_and_values_and_pgrepls_own_settings_are_refused() {
        let pairs = parse_pairs(&["work_mem=8MB".into(), "my.custom = x".into(), "search_path=".into()]).unwrap();
        assert_eq!(
            pairs,
            [("work_mem".into(), "8MB".into()), ("my.custom".into(), "x".into()), ("search_path".into(), "".into())]
        );
        let e = parse_pairs(&["work_mem".into()]).unwrap_err().to_string();
        assert!(e.contains("is not NAME=VALUE"), "{e}");
        let e = parse_pairs(&["port=5999".into()]).unwrap_err().to_string();
        assert!(e.starts_with("port is set by pgrepl on every member"), "{e}");
        let e = parse_pairs(&["work mem=1".into()]).unwrap_err().to_string();
        assert!(e.contains("is not a PostgreSQL setting name"), "{e}");
    }

    #[test]
    fn set_adds_or_replaces_and_reset_removes_only_what_is_there() {
        let current = map(&[("work_mem", "4MB")]);
        let set = Change::Set(vec![("work_mem".into(), "8MB".into()), ("shared_buffers".into(), "256MB".into())]);
        assert_eq!(changed(&current, &set).unwrap(), map(&[("work_mem", "8MB"), ("shared_buffers", "256MB")]));
        assert_eq!(changed(&current, &Change::Reset(vec!["work_mem".into()])).unwrap(), map(&[]));
        let e = changed(&current, &Change::Reset(vec!["shared_buffers".into()])).unwrap_err().to_string();
        assert!(e.contains("is not among the cluster's parameters"), "{e}");
    }
}
