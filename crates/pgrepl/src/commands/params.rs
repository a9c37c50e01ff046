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
use crate::commands::{agent, up, wait};
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
            followed.and_then(|()| up::write_config(&cluster.layout, &raw, &cluster.config, "pgrepl config"))
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

/// Records the change of the spec's parameters from `old` to `new` that the spec write at
/// `revision` made, in the settings history.
///
/// The store writes one key per compare-and-swap, so this is a second write, made only after
/// the spec's succeeded: a crash (or a store lost) in between leaves a change unrecorded, never
/// a recorded change that did not happen. History entries are appends, so a conflict (another
/// change recorded meanwhile) is retried on the history as it is then; entries are kept in the
/// order of the spec revisions they name, whichever of two writers records first.
pub async fn record(
    store: &dyn Store,
    actor: &Actor,
    revision: Revision,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let parameters = parameter_changes(old, new);
    if parameters.is_empty() {
        return Ok(());
    }
    let change = SettingsChange {
        revision,
        at_ms: wait::wall_clock_ms(),
        command: actor.command.to_string(),
        host: actor.host.clone(),
        user: actor.user.clone(),
        parameters,
    };
    for _ in 0..20 {
        let snapshot = store.snapshot().await.context("read the store")?;
        let (mut history, condition) = match snapshot.get(keys::SETTINGS_HISTORY) {
            None => (SettingsHistory::default(), Condition::Absent),
            Some(entry) => (
                serde_json::from_slice(&entry.value)
                    .with_context(|| format!("the store's {:?} is not a settings history", keys::SETTINGS_HISTORY))?,
                Condition::Revision(entry.revision),
            ),
        };
        history.record(change.clone());
        match store.put(keys::SETTINGS_HISTORY, &serde_json::to_vec(&history)?, condition, None).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e).context("write the settings history"),
        }
    }
    bail!("the settings history kept changing under this command")
}

/// `record`, its failure said on standard error: the change itself is made, and stays made.
pub async fn record_or_warn(
    store: &dyn Store,
    actor: &Actor,
    revision: Revision,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) {
    if let Err(e) = record(store, actor, revision, old, new).await {
        eprintln!("warning: the change is made, but could not be recorded in the settings history: {e:#}");
    }
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

/// The file `config edit` opens: a header saying what it is, then one parameter a line.
pub fn render(cluster: &str, parameters: &BTreeMap<String, String>, wide: &ClusterWide) -> String {
    let mut text = format!(
        "# The PostgreSQL parameters of cluster {cluster}, the same for every member (`pgrepl config edit`).\n\
         # One `name = 'value'` a line (a ' in a value doubled); lines starting with # are comments.\n\
         # Saved, the parameters become these for every member: checked by PostgreSQL first, and\n\
         # refused if the cluster's spec changed meanwhile. Saved unchanged, or with no\n\
         # parameter left, it changes nothing (`pgrepl config reset NAME` removes one).\n\
         # Parameters pgrepl sets itself (port, listen_addresses, primary_conninfo, ...) are refused.\n\
         # pgrepl's own settings below are checked as pgrepl.toml's; one removed goes back to its default.\n\n"
    );
    push_lines(&mut text, parameters);
    text.push_str("\n# pgrepl's cluster-wide settings, the same for every member and router\n");
    push_lines(&mut text, wide.texts());
    text
}

/// The parameters of a file `config edit` opened, once saved: each line a comment (`#`), blank,
/// or `name = value`, the value quoted as `config show` prints it (`'...'`, a `'` doubled) or a
/// bare word, and a comment may follow it. Any other line is refused, by its number.
pub fn parse_file(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut parameters = BTreeMap::new();
    let mut lines_of: BTreeMap<String, usize> = BTreeMap::new();
    for (n, raw) in text.lines().enumerate().map(|(i, l)| (i + 1, l)) {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((name, value)) = trimmed.split_once('=') else {
            bail!("line {n}: {trimmed:?} is not `name = 'value'` or a comment; nothing was changed");
        };
        let name = name.trim();
        check_name(name).map_err(|e| anyhow::anyhow!("line {n}: {e}; nothing was changed"))?;
        let value = parse_value(value)
            .map_err(|why| anyhow::anyhow!("line {n}: the value of {name} {why}; nothing was changed"))?;
        if let Some(first) = lines_of.insert(name.to_string(), n) {
            bail!("line {n}: {name} is already set on line {first}; nothing was changed");
        }
        parameters.insert(name.to_string(), value);
    }
    Ok(parameters)
}

/// A value after `=`: `'quoted'` (a `'` inside doubled) or a bare word; then optionally a comment.
fn parse_value(raw: &str) -> Result<String, &'static str> {
    let raw = raw.trim();
    let Some(quoted) = raw.strip_prefix('\'') else {
        let value = raw.split('#').next().unwrap_or_default().trim();
        if value.is_empty() {
            return Err("is missing (write '' for an empty one)");
        }
        if value.contains(|c: char| c.is_whitespace() || c == '\'') {
            return Err("has spaces or quotes: quote it ('...', a ' inside doubled)");
        }
        return Ok(value.to_string());
    };
    let mut value = String::new();
    let mut chars = quoted.chars().peekable();
    loop {
        match chars.next() {
            None => return Err("has no closing '"),
            Some('\'') if chars.peek() == Some(&'\'') => {
                chars.next();
                value.push('\'');
            }
            Some('\'') => break,
            Some(c) => value.push(c),
        }
    }
    let rest: String = chars.collect();
    let rest = rest.trim();
    if !rest.is_empty() && !rest.starts_with('#') {
        return Err("has text after its closing '");
    }
    Ok(value)
}

/// The editor `config edit` runs: `$EDITOR`, else `$VISUAL`, else `vi`.
fn editor(var: impl Fn(&str) -> Option<String>) -> String {
    ["EDITOR", "VISUAL"]
        .iter()
        .find_map(|name| var(name).filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "vi".to_string())
}

/// A file of mode 0600 in the temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn create(text: &str) -> anyhow::Result<Scratch> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let suffix: u64 = rand::random();
        let path = std::env::temp_dir().join(format!("pgrepl-config-{}-{suffix:016x}.conf", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("create {}", path.display()))?;
        let scratch = Scratch(path);
        file.write_all(text.as_bytes()).with_context(|| format!("write {}", scratch.0.display()))?;
        Ok(scratch)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `config edit`: `$EDITOR` on the parameters, then, on save, the change written as `config set`
/// writes one, against the spec's revision read before the editor opened.
pub async fn edit(dir: &Path) -> anyhow::Result<()> {
    let actor = Actor::now("pgrepl config edit");
    let cluster = Cluster::open(dir).await?;
    let read = read(&cluster).await?;
    let scratch = Scratch::create(&render(&cluster.config.cluster, &read.parameters, &read.wide))?;
    let editor = editor(|name| std::env::var(name).ok());
    // Through the shell, as git runs it: an editor may be given with its arguments.
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$@\""))
        .arg(&editor)
        .arg(&scratch.0)
        .status()
        .await
        .context("run sh for the editor")?;
    match status.code() {
        Some(0) => {}
        Some(126 | 127) => bail!(
            "the editor {editor:?} could not be run; set EDITOR to one that can (say EDITOR=nano); nothing was changed"
        ),
        _ => bail!("the editor {editor:?} ended with {status}; nothing was changed"),
    }
    let text = std::fs::read_to_string(&scratch.0).with_context(|| format!("read {}", scratch.0.display()))?;
    drop(scratch);
    let saved = parse_file(&text)?;
    let (ours, parameters): (BTreeMap<_, _>, BTreeMap<_, _>) = saved.into_iter().partition(|(k, _)| is_key(k));
    if parameters.is_empty() && !read.parameters.is_empty() {
        println!(
            "nothing changed: the file held no parameter (`pgrepl config reset NAME ...` removes the cluster's parameters)"
        );
        return Ok(());
    }
    let set: Vec<(String, String)> = ours.clone().into_iter().collect();
    let removed: Vec<String> =
        crate::config::cluster_wide::KEYS.iter().filter(|k| !ours.contains_key(**k)).map(|k| k.to_string()).collect();
    let wide = read.wide.changed(&set, &removed).map_err(|e| anyhow::anyhow!("{e}; nothing was changed"))?;
    let next = Next { parameters, wide };
    let (old, new) = (all_settings(&read.parameters, &read.wide), all_settings(&next.parameters, &next.wide));
    let changes = parameter_changes(&old, &new);
    if changes.is_empty() || write(&cluster, read, next, &actor).await? == Written::Unchanged {
        println!("nothing changed");
        return Ok(());
    }
    for (name, change) in &changes {
        println!("{name}: {} -> {} for every member", shown(&change.old), shown(&change.new));
    }
    say_applied(&old, &new);
    Ok(())
}

/// A value in the history and in `edit`'s report: quoted, or `(default)` when not set.
fn shown(value: &Option<String>) -> String {
    match value {
        Some(v) => format!("'{}'", v.replace('\'', "''")),
        None => "(default)".to_string(),
    }
}

/// `config history [--json]`: the recorded changes of the cluster's parameters, newest last.
pub async fn history(dir: &Path, json: bool) -> anyhow::Result<()> {
    let cluster = Cluster::open(dir).await?;
    let snapshot = cluster.store.snapshot().await.context("read the store")?;
    let history: SettingsHistory = match snapshot.get(keys::SETTINGS_HISTORY) {
        None => SettingsHistory::default(),
        Some(entry) => serde_json::from_slice(&entry.value)
            .with_context(|| format!("the store's {:?} is not a settings history", keys::SETTINGS_HISTORY))?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&history.changes)?);
        return Ok(());
    }
    if history.changes.is_empty() {
        println!("no change of the cluster's settings recorded yet");
        return Ok(());
    }
    print!("{}", history_table(&history));
    Ok(())
}

/// `config history`'s table: one row per parameter changed, newest last.
pub fn history_table(history: &SettingsHistory) -> String {
    let mut rows = vec![["WHEN (UTC)".to_string(), "WHO".to_string(), "NAME".to_string(), "OLD -> NEW".to_string()]];
    for change in &history.changes {
        let who = format!("{} ({}@{})", change.command, change.user, change.host);
        for (name, value) in &change.parameters {
            let values = format!("{} -> {}", shown(&value.old), shown(&value.new));
            rows.push([utc(change.at_ms), who.clone(), name.clone(), values]);
        }
    }
    let widths: Vec<usize> = (0..4).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// pgrepl's settings as a default configuration has them.
    fn wide() -> ClusterWide {
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
        assert_eq!(parse_file(&text).unwrap(), all_settings(&map(&[("work_mem", "8MB")]), &wide()));
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
    fn the_edited_file_reads_back_what_show_prints_and_refuses_other_lines_by_number() {
        let parameters = map(&[("work_mem", "8MB"), ("search_path", "\"$user\", it's"), ("jit", "")]);
        let text = render("shop", &parameters, &wide());
        assert!(text.starts_with("# The PostgreSQL parameters of cluster shop"), "{text}");
        assert!(text.contains("search_path = '\"$user\", it''s'\n"), "{text}");
        assert!(text.contains("\nttl = '4s'\n"), "{text}");
        assert_eq!(parse_file(&text).unwrap(), all_settings(&parameters, &wide()));
        // Bare words and trailing comments, as postgresql.conf takes them.
        let edited = "# mine\n\n  work_mem = 16MB   # more\nmax_wal_size='2GB' # comment\n";
        assert_eq!(parse_file(edited).unwrap(), map(&[("work_mem", "16MB"), ("max_wal_size", "2GB")]));
        assert_eq!(parse_file("# only comments\n\n").unwrap(), map(&[]));
        for (text, words) in [
            ("work_mem = 8MB\nwork_mem 8MB\n", "line 2: \"work_mem 8MB\" is not `name = 'value'` or a comment"),
            ("# c\nport = 6000\n", "line 2: port is set by pgrepl on every member"),
            ("work mem = 1\n", "line 1: \"work mem\" is not a PostgreSQL setting name"),
            ("\n\nwork_mem =\n", "line 3: the value of work_mem is missing"),
            ("work_mem = 8 MB\n", "line 1: the value of work_mem has spaces or quotes"),
            ("work_mem = '8MB\n", "line 1: the value of work_mem has no closing '"),
            ("work_mem = '8MB' x\n", "line 1: the value of work_mem has text after its closing '"),
            ("work_mem = 1MB\njit = off\nwork_mem = 2MB\n", "line 3: work_mem is already set on line 1"),
        ] {
            let e = parse_file(text).unwrap_err().to_string();
            assert!(e.starts_with(words) && e.ends_with("nothing was changed"), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_editor_is_editor_then_visual_then_vi() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        assert_eq!(editor(env(&[("EDITOR", "nano"), ("VISUAL", "code --wait")])), "nano");
        assert_eq!(editor(env(&[("EDITOR", " "), ("VISUAL", "code --wait")])), "code --wait");
        assert_eq!(editor(env(&[])), "vi");
    }

    #[test]
    fn the_history_table_has_a_row_per_parameter_newest_last() {
        use pgrepl_core::ValueChange;
        let change =
            |revision, at_ms, command: &str, parameters: Vec<(&str, Option<&str>, Option<&str>)>| SettingsChange {
                revision,
                at_ms,
                command: command.into(),
                host: "db1".into(),
                user: "alice".into(),
                parameters: parameters
                    .into_iter()
                    .map(|(n, o, v)| (n.into(), ValueChange { old: o.map(String::from), new: v.map(String::from) }))
                    .collect(),
            };
        let history = SettingsHistory {
            changes: vec![
                change(5, 1_700_000_000_000, "pgrepl config set", vec![("work_mem", None, Some("8MB"))]),
                change(
                    9,
                    1_700_000_061_000,
                    "pgrepl config edit",
                    vec![("jit", Some("off"), None), ("work_mem", Some("8MB"), Some("16MB"))],
                ),
            ],
        };
        let table = history_table(&history);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("WHEN (UTC)"), "{table}");
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "2023-11-14",
                "22:13:20",
                "pgrepl",
                "config",
                "set",
                "(alice@db1)",
                "work_mem",
                "(default)",
                "->",
                "'8MB'"
            ]
        );
        assert!(lines[2].contains("pgrepl config edit (alice@db1)") && lines[2].contains("jit"), "{table}");
        assert!(lines[2].ends_with("'off' -> (default)"), "{table}");
        assert!(lines[3].starts_with("2023-11-14 22:14:21") && lines[3].ends_with("'8MB' -> '16MB'"), "{table}");
    }

    #[test]
    fn utc_is_a_calendar_date_and_time() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_825_600_000), "2000-02-29 12:00:00");
        assert_eq!(utc(1_767_225_599_999), "2025-12-31 23:59:59");
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
