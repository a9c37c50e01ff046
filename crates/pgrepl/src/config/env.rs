//! The environment, read through `SETTINGS`: which variables are set (and the files that
//! `NAME_FILE` variables of passwords name), their values put over the file's, and how a setting
//! is named in messages. The process environment is read only through the `get` the caller
//! passes.

use super::raw::{FromEnv, RawConfig};
use super::settings::{setting, Setting, SETTINGS};
use super::validate::{bad, ConfigError};

/// A setting's variables in the order they are tried: each name, then for a password its
/// `NAME_FILE` twin (with `true` for a file).
fn names(s: &Setting) -> impl Iterator<Item = (String, bool)> + '_ {
    s.env.iter().flat_map(move |n| {
        let file = s.secret.then(|| (format!("{n}_FILE"), true));
        std::iter::once((n.to_string(), false)).chain(file)
    })
}

/// Every variable pgrepl reads, in `SETTINGS` order.
pub fn variables() -> Vec<String> {
    SETTINGS.iter().flat_map(|s| names(s).map(|(name, _)| name)).collect()
}

/// Reads the environment through `get` (so tests need not touch the process environment): for
/// each setting, the first of its variables that is set (an empty one skipped where the setting
/// says so). A `NAME_FILE` variable's value is read from the file it names, dropping one
/// trailing newline; a file that cannot be read is an error naming the variable and the path.
pub fn read_env(get: impl Fn(&str) -> Option<String>) -> Result<Vec<FromEnv>, ConfigError> {
    let mut found = Vec::new();
    for s in SETTINGS {
        let set = |name: &String| get(name).filter(|v| !(s.empty_is_unset && v.trim().is_empty()));
        let Some((variable, is_file, value)) =
            names(s).find_map(|(name, is_file)| set(&name).map(|value| (name, is_file, value)))
        else {
            continue;
        };
        let value = if is_file { read_secret(s.key, &variable, &value)? } else { value };
        found.push(FromEnv { variable, field: s.key, value });
    }
    Ok(found)
}

/// The contents of the file `path` that `variable` names, less one trailing newline.
fn read_secret(key: &str, variable: &str, path: &str) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(format!("{key} ({variable})"), format!("cannot read the file {path:?}: {e}")))?;
    let text = text.strip_suffix('\n').map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
    Ok(text.to_string())
}

/// Applies environment values over the file's.
pub fn apply_env(raw: &mut RawConfig, env: &[FromEnv]) -> Result<(), ConfigError> {
    for e in env {
        let s = setting(e.field).ok_or_else(|| bad(e.field, "is not a setting pgrepl knows"))?;
        (s.set)(raw, &e.value).map_err(|problem| bad(format!("{} ({})", e.field, e.variable), problem))?;
    }
    Ok(())
}

/// The name a setting goes by in messages: its key, plus the variable when it came from one
/// (`database.user (POSTGRESQL_USER)`).
pub fn label(env: &[FromEnv], key: &str) -> String {
    match env.iter().find(|e| e.field == key) {
        Some(e) => format!("{key} ({})", e.variable),
        None => key.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_KIT_LIST: &str = include_str!("../../tests/common/variables.txt");

    #[test]
    fn the_test_kit_clears_every_variable_of_the_settings() {
        let expected = format!(
            "# Every variable pgrepl's settings read: the list of SETTINGS in crates/pgrepl/src/config/settings.rs.\n{}\n",
            variables().join("\n")
        );
        assert!(
            TEST_KIT_LIST == expected,
            "crates/pgrepl/tests/common/variables.txt is not the list of SETTINGS' variables; make it this:\n\n{expected}"
        );
    }

    #[test]
    fn the_first_variable_set_wins_and_errors_name_it() {
        let vars = [("POSTGRES_USER", "late"), ("POSTGRESQL_USER", "early"), ("PGREPL_REPLICAS", "two")];
        let env = read_env(|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string())).unwrap();
        assert_eq!(label(&env, "database.user"), "database.user (POSTGRESQL_USER)");
        assert_eq!(label(&env, "cluster"), "cluster");
        let err = apply_env(&mut RawConfig::default(), &env).unwrap_err();
        assert_eq!(err.to_string(), "replicas (PGREPL_REPLICAS): \"two\" is not a whole number");
        let mut raw = RawConfig::default();
        let good: Vec<_> = env.iter().filter(|e| e.field != "replicas").cloned().collect();
        apply_env(&mut raw, &good).unwrap();
        assert_eq!(raw.database.user.as_deref(), Some("early"));
    }
}
