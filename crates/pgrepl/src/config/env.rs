//! The environment, read through `SETTINGS`: which variables are set, their values put over the
//! file's, and how a setting is named in messages. The process environment is read only
//! through the `get` the caller passes.

use super::raw::{FromEnv, RawConfig};
use super::settings::{setting, SETTINGS};
use super::validate::{bad, ConfigError};

/// Every variable pgrepl reads, in `SETTINGS` order.
pub fn variables() -> Vec<String> {
    SETTINGS.iter().flat_map(|s| s.env.iter().map(|n| n.to_string())).collect()
}

/// Reads the environment through `get` (so tests need not touch the process environment): for
/// each setting, the first of its variables that is set.
pub fn read_env(get: impl Fn(&str) -> Option<String>) -> Vec<FromEnv> {
    SETTINGS
        .iter()
        .filter_map(|s| {
            s.env.iter().find_map(|n| get(n).map(|value| FromEnv { variable: n.to_string(), field: s.key, value }))
        })
        .collect()
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
        let env = read_env(|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string()));
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
