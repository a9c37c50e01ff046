//! The passwords of one cluster (and the HTTP API's token, the etcd store's password), kept in a file only its OS user can read (mode 0600).
//! Owns reading and writing that file; never logs or displays a password or the token.

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pgrepl_core::PasswordKind;

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secrets {
    /// The application user's password, when the cluster has an application user.
    pub user: Option<String>,
    pub admin: String,
    pub replication: String,
    /// The bearer token that allows actions over the HTTP API, when they are on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token: Option<String>,
    /// The etcd store's password (`store_password`), when its etcd has authentication on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_password: Option<String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secrets { .. }")
    }
}

impl Secrets {
    pub fn get(&self, kind: PasswordKind) -> Option<&str> {
        match kind {
            PasswordKind::User => self.user.as_deref(),
            PasswordKind::Admin => Some(&self.admin),
            PasswordKind::Replication => Some(&self.replication),
        }
    }

    pub fn set(&mut self, kind: PasswordKind, value: String) {
        match kind {
            PasswordKind::User => self.user = Some(value),
            PasswordKind::Admin => self.admin = value,
            PasswordKind::Replication => self.replication = value,
        }
    }

    pub fn load(path: &Path) -> anyhow::Result<Secrets> {
        let meta = std::fs::metadata(path).with_context(|| format!("read secrets file {}", path.display()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            bail!(
                "secrets file {} is readable by others (mode {:o}); run `chmod 600` on it",
                path.display(),
                meta.permissions().mode() & 0o777
            );
        }
        let text = std::fs::read(path).with_context(|| format!("read secrets file {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("parse secrets file {}", path.display()))
    }

    /// Writes atomically: a temporary file with mode 0600 from its creation, fsynced, renamed.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        pgrepl_pg::write_atomic(path, &json, 0o600)
            .with_context(|| format!("write secrets file {}", path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_round_trip_in_a_private_file_and_hide_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        let s = Secrets {
            user: Some("u-pw".into()),
            admin: "a-pw".into(),
            replication: "r-pw".into(),
            api_token: Some("t-pw".into()),
            store_password: Some("s-pw".into()),
        };
        s.save(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(Secrets::load(&path).unwrap(), s);
        assert!(!format!("{s:?}").contains("pw"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Secrets::load(&path).unwrap_err().to_string().contains("readable by others"));
    }
}
