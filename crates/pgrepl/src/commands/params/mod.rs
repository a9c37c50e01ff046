//! `pgrepl config show|set|reset|edit|history`: the cluster's PostgreSQL parameters and pgrepl's
//! own cluster-wide settings (`config::cluster_wide`, told apart by name), kept in the spec and
//! the same for every member. pgrepl's settings are judged by the configuration's own checks;
//! each agent and router takes them from the spec within a loop. Every change (`set`, `reset`, `edit`: one function,
//! `write`) is checked by the server binaries' own parser first (a throwaway `postgres -C`), so
//! no value PostgreSQL refuses ever reaches a member; it is written by one compare-and-swap on
//! the spec as read (a concurrent change makes it fail, and nothing changes), then recorded in
//! the settings history; each agent then rewrites its configuration and reloads, and a
//! parameter that needs a restart shows as pending restart in `pgrepl status`. The cluster
//! directory's own `[parameters]` (and pgrepl's settings changed) follow, so that a later `pgrepl up` keeps them. This module
//! never touches a member: the agents apply what the spec says.

use crate::cluster::{read_dir_config, Cluster};
use crate::commands::{agent, setup, wait};
mod edit;
mod history;

pub use edit::edit;
pub use history::{history, record_or_warn};

use crate::config::cluster_wide::{is_key, ClusterWide};
use anyhow::{bail, Context};
use pgrepl_core::{keys, parameter_changes, SettingsChange, SettingsHistory, Spec};
use pgrepl_store::{Condition, Revision, Store, StoreError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    if pgrepl_pg::managed::sets_itself(name) {
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

/// Who runs this command, for the settings history. Taken before `Cluster::open`, which may
/// switch a process run by root to the cluster's `run_as` user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub command: &'static str,
    pub host: String,
    pub user: String,
}

impl Actor {
    pub fn now(command: &'static str) -> Actor {
        let host = agent::machine_name().unwrap_or_else(|| "unknown".into());
        Actor { command, host, user: os_user() }
    }
}

/// The name of this process's real user (`uid N` when the system knows no name for it).
fn os_user() -> String {
    // SAFETY: getuid has no preconditions; getpwuid returns null or a pointer into static
    // storage, read here at once (no thread of this command calls it concurrently).
    unsafe {
        let uid = libc::getuid();
        let entry = libc::getpwuid(uid);
        if entry.is_null() || (*entry).pw_name.is_null() {
            return format!("uid {uid}");
        }
        std::ffi::CStr::from_ptr((*entry).pw_name).to_string_lossy().into_owned()
    }
}

/// The spec as one reading of the store found it: what a change is made against.
struct Read {
    revision: Revision,
    spec: Spec,
    /// The parameters every member runs with now.
    parameters: BTreeMap<String, String>,
    /// pgrepl's cluster-wide settings every member and router runs with now.
    wide: ClusterWide,
}

/// What a change makes of the parameters and pgrepl's settings.
struct Next {
    parameters: BTreeMap<String, String>,
    wide: ClusterWide,
}

/// The parameters and pgrepl's settings as one map of name to value, for the history and for
/// saying what changed (their names never clash: PostgreSQL has none of pgrepl's).
pub fn all_settings(parameters: &BTreeMap<String, String>, wide: &ClusterWide) -> BTreeMap<String, String> {
    let mut all = parameters.clone();
    all.extend(wide.texts());
    all
}

/// pgrepl's settings after `change`'s pairs or names of pgrepl's (the others are PostgreSQL's),
/// refused as the configuration file's would be.
pub fn changed_wide(current: &ClusterWide, change: &Change) -> anyhow::Result<ClusterWide> {
    let next = match change {
        Change::Set(pairs) => {
            let ours: Vec<(String, String)> = pairs.iter().filter(|(k, _)| is_key(k)).cloned().collect();
            current.changed(&ours, &[])
        }
        Change::Reset(names) => {
            let ours: Vec<String> = names.iter().filter(|k| is_key(k)).cloned().collect();
            current.changed(&[], &ours)
        }
    };
    next.map_err(|e| anyhow::anyhow!("{e}; nothing was changed"))
}

/// `change` without pgrepl's settings: what it asks of PostgreSQL's parameters.
fn parameters_part(change: &Change) -> Change {
    match change {
        Change::Set(pairs) => Change::Set(pairs.iter().filter(|(k, _)| !is_key(k)).cloned().collect()),
        Change::Reset(names) => Change::Reset(names.iter().filter(|k| !is_key(k)).cloned().collect()),
    }
}

async fn read(cluster: &Cluster) -> anyhow::Result<Read> {
    let (snapshot, view) = cluster.view().await?;
    let entry = snapshot.get(keys::SPEC).context("the store holds no cluster spec: is the cluster up?")?;
    let spec = view.spec.context("the store holds no cluster spec")?;
    let parameters = spec.parameters_or(&cluster.config.parameters).clone();
    let wide = ClusterWide::of(&spec, &cluster.config);
    Ok(Read { revision: entry.revision, spec, parameters, wide })
}

/// What `write` did.
#[derive(Debug, PartialEq, Eq)]
enum Written {
    /// The parameters already were these: nothing was written.
    Unchanged,
    Changed,
}

/// The one write of `set`, `reset` and `edit`: `next` replaces the parameters and pgrepl's
/// settings `read` found (pgrepl's were judged when `next` was made). The parameters, when
/// they change, are checked first (no name pgrepl manages, then PostgreSQL's own parser over
/// the whole set); then all is written by one compare-and-swap against the revision read (a
/// change made since makes it fail, and nothing changes), then recorded in the settings
/// history; the directory's `[parameters]`, and pgrepl's settings that changed, follow.
async fn write(cluster: &Cluster, read: Read, next: Next, actor: &Actor) -> anyhow::Result<Written> {
    let parameters_same = read.spec.parameters.as_ref() == Some(&next.parameters);
    if parameters_same && next.wide.is_in(&read.spec) {
        return Ok(Written::Unchanged);
    }
    if !parameters_same {
        for (name, value) in &next.parameters {
            if read.parameters.get(name) != Some(value) {
                check_name(name).map_err(|e| anyhow::anyhow!("{e}; nothing was changed"))?;
            }
        }
        let bins = pgrepl_pg::Binaries::find(cluster.config.bin_dir.as_deref())?;
        bins.check_parameters(&next.parameters)
            .map_err(|e| anyhow::anyhow!("PostgreSQL refuses these parameters: {e}; nothing was changed"))?;
    }
    let mut spec = read.spec;
    spec.parameters = Some(next.parameters.clone());
    next.wide.put_in(&mut spec);
    let value = serde_json::to_vec(&spec)?;
    let revision = match cluster.store.put(keys::SPEC, &value, Condition::Revision(read.revision), None).await {
        Ok(revision) => revision,
        Err(StoreError::Conflict { .. }) => bail!(
            "the cluster's spec changed while this command ran (another `pgrepl config set`, or a member joining); \
             nothing was changed: see `pgrepl config show` and run it again"
        ),
        Err(e) => return Err(e).context("write the cluster's parameters"),
    };
    let (old, new) = (all_settings(&read.parameters, &read.wide), all_settings(&next.parameters, &next.wide));
    record_or_warn(cluster.store.as_ref(), actor, revision, &old, &new).await;
    // A later `pgrepl up` (or `pgrepl node`) of a directory that runs members must not put the
    // old ones back; a directory that only reaches the store (no secrets: a host holding no
    // member) is left as it is. The cluster's change is made either way.
    if cluster.layout.config().exists() && cluster.layout.secrets().exists() {
        let mut raw = read_dir_config(&cluster.layout)?;
        raw.parameters = next.parameters.iter().map(|(k, v)| (k.clone(), toml::Value::String(v.clone()))).collect();
        let followed = next.wide.write_into(&mut raw, &read.wide.differing(&next.wide)).map_err(anyhow::Error::from);
        if let Err(e) =
            followed.and_then(|()| setup::write_config(&cluster.layout, &raw, &cluster.config, "pgrepl config"))
        {
            eprintln!(
                "note: the cluster's settings changed, but this directory's configuration could not follow ({e:#}); \
                 update {} before the next `pgrepl up` here, which would put the old ones back",
                cluster.layout.config().display()
            );
        }
    }
    Ok(Written::Changed)
}

/// One parameter as `config show` prints it and `config edit` reads it back.
fn line(name: &str, value: &str) -> String {
    format!("{name} = '{}'", value.replace('\'', "''"))
}

/// `config show [--json]`: the parameters every member runs with, and the spec's revision
/// (for `config set --if-revision`).
pub async fn show(dir: &Path, json: bool) -> anyhow::Result<()> {
    let cluster = Cluster::open(dir).await?;
    let read = read(&cluster).await?;
    if json {
        let out = serde_json::json!({
            "parameters": read.parameters,
            "pgrepl": read.wide.texts(),
            "revision": read.revision,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    print!("{}", shown_settings(&read.parameters, &read.wide));
    Ok(())
}

/// `config show`'s text: PostgreSQL's parameters, then pgrepl's settings, each group headed.
pub fn shown_settings(parameters: &BTreeMap<String, String>, wide: &ClusterWide) -> String {
    let mut out = String::from("# PostgreSQL parameters, the same for every member\n");
    if parameters.is_empty() {
        out.push_str("# (none of the cluster's own: PostgreSQL's defaults and pgrepl's)\n");
    }
    push_lines(&mut out, parameters);
    out.push_str("# pgrepl's cluster-wide settings, the same for every member and router\n");
    push_lines(&mut out, wide.texts());
    out
}

/// One `name = 'value'` line a setting.
fn push_lines<K: AsRef<str>, V: AsRef<str>>(out: &mut String, settings: impl IntoIterator<Item = (K, V)>) {
    for (name, value) in settings {
        out.push_str(&line(name.as_ref(), value.as_ref()));
        out.push('\n');
    }
}

/// `config set NAME=VALUE ...` and `config reset NAME ...`.
pub async fn run(dir: &Path, change: Change, if_revision: Option<u64>) -> anyhow::Result<()> {
    let actor = Actor::now(match change {
        Change::Set(_) => "pgrepl config set",
        Change::Reset(_) => "pgrepl config reset",
    });
    let cluster = Cluster::open(dir).await?;
    let read = read(&cluster).await?;
    if let Some(wanted) = if_revision.filter(|r| *r != read.revision) {
        bail!(
            "the cluster's spec is at revision {}, not {wanted}: it changed since it was read; nothing was changed \
             (see `pgrepl config show`)",
            read.revision
        );
    }
    let wide = changed_wide(&read.wide, &change)?;
    let next = Next { parameters: changed(&read.parameters, &parameters_part(&change))?, wide };
    let (old, new) = (all_settings(&read.parameters, &read.wide), all_settings(&next.parameters, &next.wide));
    if write(&cluster, read, next, &actor).await? == Written::Unchanged {
        println!("nothing changed: the cluster's settings already are so (see `pgrepl config show`)");
        return Ok(());
    }
    match &change {
        Change::Set(pairs) => {
            let said: Vec<String> = pairs.iter().map(|(k, v)| format!("{k} = '{}'", new.get(k).unwrap_or(v))).collect();
            println!("set {} for every member", said.join(", "));
        }
        Change::Reset(names) => println!("reset {} for every member (back to the default)", names.join(", ")),
    }
    say_applied(&old, &new);
    Ok(())
}

/// What happens next, for what changed from `old` to `new`.
fn say_applied(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) {
    let changed = parameter_changes(old, new);
    if changed.keys().any(|k| !is_key(k)) {
        println!(
            "each member reloads its configuration within a loop; those a parameter needs restarted show \
             \"pending restart\" in `pgrepl status`"
        );
    }
    if changed.keys().any(|k| is_key(k)) {
        println!("each agent and router takes pgrepl's settings from the spec within a loop, with no restart");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// pgrepl's settings as a default configuration has them.
    pub(super) fn wide() -> ClusterWide {
        ClusterWide::configured(&crate::config::validate(&crate::config::RawConfig::default(), &[]).unwrap())
    }

    #[test]
    fn a_change_splits_into_pgrepls_settings_and_postgresqls_parameters_by_name() {
        let set = Change::Set(vec![("work_mem".into(), "8MB".into()), ("synchronous".into(), "on".into())]);
        let next = changed_wide(&wide(), &set).unwrap();
        assert_eq!(next.failover.synchronous, pgrepl_core::SyncMode::On);
        assert_eq!(parameters_part(&set), Change::Set(vec![("work_mem".into(), "8MB".into())]));
        assert_eq!(changed(&map(&[]), &parameters_part(&set)).unwrap(), map(&[("work_mem", "8MB")]));
        let reset = Change::Reset(vec!["synchronous".into(), "jit".into()]);
        assert_eq!(changed_wide(&next, &reset).unwrap(), wide());
        assert_eq!(parameters_part(&reset), Change::Reset(vec!["jit".into()]));
        for (pairs, words) in [
            (vec![("ttl", "1s")], "ttl: 1s is too short for loop_wait 1s"),
            (vec![("synchronous", "maybe")], "synchronous: \"maybe\" is not allowed; use off, on or quorum"),
        ] {
            let set = Change::Set(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
            let e = changed_wide(&wide(), &set).unwrap_err().to_string();
            assert!(e.starts_with(words) && e.ends_with("; nothing was changed") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn show_prints_both_groups_and_says_when_there_is_no_parameter() {
        let text = shown_settings(&map(&[]), &wide());
        assert!(text.starts_with("# PostgreSQL parameters"), "{text}");
        assert!(text.contains("# (none of the cluster's own"), "{text}");
        assert!(
            text.contains("# pgrepl's cluster-wide settings") && text.contains("\nsynchronous = 'off'\n"),
            "{text}"
        );
        let text = shown_settings(&map(&[("work_mem", "8MB")]), &wide());
        assert!(!text.contains("(none") && text.contains("\nwork_mem = '8MB'\n"), "{text}");
        // What show prints, edit reads back.
        assert_eq!(edit::parse_file(&text).unwrap(), all_settings(&map(&[("work_mem", "8MB")]), &wide()));
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
