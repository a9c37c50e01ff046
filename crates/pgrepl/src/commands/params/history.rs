//! The settings history: each change of the cluster's settings recorded after the spec write
//! that made it (`record`), and `pgrepl config history`, which prints it.

use super::*;

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
        let (mut history, condition) = read(&snapshot)?;
        history.record(change.clone());
        match store.put(keys::SETTINGS_HISTORY, &serde_json::to_vec(&history)?, condition, None).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e).context("write the settings history"),
        }
    }
    bail!("the settings history kept changing under this command")
}

/// The settings history in `snapshot` (empty when none was recorded yet), and the condition
/// that appending to it as read takes.
fn read(snapshot: &pgrepl_store::Snapshot) -> anyhow::Result<(SettingsHistory, Condition)> {
    let Some(entry) = snapshot.get(keys::SETTINGS_HISTORY) else {
        return Ok((SettingsHistory::default(), Condition::Absent));
    };
    let history = serde_json::from_slice(&entry.value)
        .with_context(|| format!("the store's {:?} is not a settings history", keys::SETTINGS_HISTORY))?;
    Ok((history, Condition::Revision(entry.revision)))
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

/// A value in the history and in `edit`'s report: quoted, or `(default)` when not set.
pub(super) fn shown(value: &Option<String>) -> String {
    match value {
        Some(v) => format!("'{}'", v.replace('\'', "''")),
        None => "(default)".to_string(),
    }
}

/// `config history [--json]`: the recorded changes of the cluster's parameters, newest last.
pub async fn history(dir: &Path, json: bool) -> anyhow::Result<()> {
    let cluster = Cluster::open(dir).await?;
    let snapshot = cluster.store.snapshot().await.context("read the store")?;
    let (history, _) = read(&snapshot)?;
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
}
