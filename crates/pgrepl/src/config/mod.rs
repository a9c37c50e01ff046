//! Configuration: `settings` (every setting, once), `raw` (file and environment as written),
//! `env` (the environment over the file) and `validate` (checked and typed, by the `checks` of
//! each concern, into the `values` of a `Config`); `cluster_wide` the settings kept in the spec.
//! Loading reads the file; nothing here writes anything.

mod checks;
pub mod cluster_wide;
pub mod env;
pub mod raw;
pub mod settings;
pub mod validate;
pub mod values;

#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod tests;

pub use env::{apply_env, label, read_env};
pub use raw::{FromEnv, RawConfig};
pub use validate::{check_unchanged, validate, Config, RouterSplice, StoreAccess, StoreConfig, ADMIN_USER};

use anyhow::{bail, Context};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Reads a `pgrepl.toml`. A file that holds passwords must not be readable by others.
pub fn read_file(path: &Path) -> anyhow::Result<RawConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read config file {}", path.display()))?;
    let raw: RawConfig = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("config file {}: {}", path.display(), e.message()))
        .with_context(|| {
            format!(
                "parse config file {} (see the README's configuration reference for the keys pgrepl knows)",
                path.display()
            )
        })?;
    if raw.has_passwords() {
        let mode = std::fs::metadata(path).with_context(|| format!("stat {}", path.display()))?.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "config file {} holds passwords but is readable by others (mode {:o}); run `chmod 600 {}` or pass the passwords in environment variables",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
    }
    Ok(raw)
}
