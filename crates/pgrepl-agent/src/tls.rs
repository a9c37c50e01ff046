//! The member's TLS files: what PostgreSQL reads (`server.crt`, `server.key`, `ca.crt` in the
//! member's own `tls/` directory) and where they come from (a `CertSource`: for now issued from
//! the cluster CA). Owns installing them: a new set is checked before it replaces the installed
//! one, and a source that fails leaves a set that still passes in place, so PostgreSQL only
//! ever reads files that passed `pgrepl_tls::check` and is never left unable to start by a bad
//! source. Decides nothing about the cluster.

use anyhow::{bail, Context};
use pgrepl_pg::{ClientTls, ServerTls};
use pgrepl_tls::{Ca, CertInfo, TlsFiles, MEMBER_VALIDITY, RENEW_BEFORE};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tracing::{info, warn};

/// Whether the member's PostgreSQL runs with TLS, and from what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tls {
    /// `ssl` as PostgreSQL has it by default (off); replicas connect with `sslmode=disable`.
    Off,
    On(TlsOn),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOn {
    /// Where the member's certificate comes from.
    pub source: CertSource,
    /// The member's own directory of installed files (`server.crt`, `server.key`, `ca.crt`).
    pub dir: PathBuf,
    /// What the certificate must name so that clients verifying host names accept it: the
    /// member's host, the endpoints' address, `localhost`, `127.0.0.1`, the machine's name.
    pub names: Vec<String>,
}

/// Where a member's certificate comes from. (Bring-your-own files will be a second kind: the
/// user's certificate, key and CA, checked and copied in the same way.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertSource {
    /// Issued here, as `common_name`, from the cluster CA's certificate and key (key 0600).
    Issue { common_name: String, ca_cert: PathBuf, ca_key: PathBuf },
}

/// What `install` left in place.
#[derive(Clone, Debug)]
pub struct Installed {
    pub files: TlsFiles,
    pub info: CertInfo,
    /// A new set replaced the one before (a running server must reload to use it).
    pub replaced: bool,
}

impl TlsOn {
    /// The installed files, whether or not they exist yet.
    pub fn files(&self) -> TlsFiles {
        TlsFiles { cert: self.dir.join("server.crt"), key: self.dir.join("server.key"), ca: self.dir.join("ca.crt") }
    }

    pub fn server(&self) -> ServerTls {
        let f = self.files();
        ServerTls { cert: f.cert, key: f.key, ca: f.ca }
    }

    /// How this member connects to another: verifying its certificate against the installed CA.
    pub fn client(&self) -> ClientTls {
        ClientTls::VerifyFull { root_cert: self.files().ca }
    }
}

impl Tls {
    pub fn server(&self) -> Option<ServerTls> {
        match self {
            Tls::Off => None,
            Tls::On(on) => Some(on.server()),
        }
    }

    pub fn client(&self) -> ClientTls {
        match self {
            Tls::Off => ClientTls::Disable,
            Tls::On(on) => on.client(),
        }
    }
}

/// Makes sure the installed files pass and are not due for renewal: kept when they pass, name
/// what they must, are further than `RENEW_BEFORE` from their end and carry the source's CA;
/// else a new set is made from the source, checked, and only then written over them. Should the
/// source fail, installed files that are still valid stay (with a warning); with none, the error.
pub fn install(on: &TlsOn, now: SystemTime) -> anyhow::Result<Installed> {
    let files = on.files();
    let current = pgrepl_tls::check_files(&files, now, &on.names);
    let CertSource::Issue { common_name, ca_cert, ca_key } = &on.source;
    let source_ca = std::fs::read_to_string(ca_cert);
    let why = match (&current, &source_ca) {
        (Ok(info), Ok(ca)) if !info.expires_within(now, RENEW_BEFORE) && same_file_text(&files.ca, ca) => {
            return Ok(Installed { files, info: info.clone(), replaced: false });
        }
        (Ok(info), _) if info.expires_within(now, RENEW_BEFORE) => {
            format!("it expires at {} (unix), within 30 days", info.not_after_unix())
        }
        (Ok(_), _) => "the cluster CA is not the one it was issued from".to_string(),
        (Err(_), _) if !files.cert.exists() => "there is none yet".to_string(),
        (Err(e), _) => e.to_string(),
    };
    match issue(common_name, ca_cert, ca_key, &on.names, now).and_then(|(ca, new)| {
        let info = pgrepl_tls::check(&new.cert_pem, &new.key_pem, &ca.cert_pem, now, &on.names)
            .context("check the certificate just issued")?;
        write_set(&on.dir, &files, &ca.cert_pem, &new.cert_pem, &new.key_pem)?;
        Ok(info)
    }) {
        Ok(info) => {
            info!(cert = %files.cert.display(), names = %on.names.join(", "), "issued this member's certificate from the cluster CA ({why})");
            Ok(Installed { files, info, replaced: true })
        }
        // Kept when it is still valid, the key its own and signed by its CA, even if it does
        // not name all it should: PostgreSQL starts with it, and only clients verifying that
        // name refuse it (the warning says so).
        Err(e) => match current.or_else(|_| pgrepl_tls::check_files(&files, now, &[])) {
            Ok(info) => {
                warn!(
                    "kept this member's certificate {}: a new one is wanted ({why}) but could not be made: {e:#}",
                    files.cert.display()
                );
                Ok(Installed { files, info, replaced: false })
            }
            Err(_) => Err(e.context(format!("make this member's certificate ({why})"))),
        },
    }
}

fn same_file_text(path: &Path, text: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t == text)
}

/// Reads the CA (its key must be 0600) and issues a member certificate from it.
fn issue(
    common_name: &str,
    ca_cert: &Path,
    ca_key: &Path,
    names: &[String],
    now: SystemTime,
) -> anyhow::Result<(Ca, pgrepl_tls::Issued)> {
    let cert_pem =
        std::fs::read_to_string(ca_cert).with_context(|| format!("read the cluster CA {}", ca_cert.display()))?;
    let meta = std::fs::metadata(ca_key).with_context(|| format!("read the cluster CA's key {}", ca_key.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "the cluster CA's key {} is readable by others (mode {:o}); run `chmod 600` on it",
            ca_key.display(),
            meta.permissions().mode() & 0o777
        );
    }
    let key_pem =
        std::fs::read_to_string(ca_key).with_context(|| format!("read the cluster CA's key {}", ca_key.display()))?;
    let ca = Ca { cert_pem, key_pem };
    let issued = ca
        .issue(common_name, names, now, MEMBER_VALIDITY)
        .map_err(|e| anyhow::anyhow!("issue a certificate from {}: {e}", ca_cert.display()))?;
    Ok((ca, issued))
}

/// Writes the three files (each atomically, mode 0600) into `dir` (0700).
fn write_set(dir: &Path, files: &TlsFiles, ca: &str, cert: &str, key: &str) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))?;
    for (path, text) in [(&files.ca, ca), (&files.key, key), (&files.cert, cert)] {
        pgrepl_pg::write_atomic(path, text.as_bytes(), 0o600).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn setup(dir: &Path, ca: &Ca) -> TlsOn {
        std::fs::write(dir.join("ca.crt"), &ca.cert_pem).unwrap();
        pgrepl_pg::write_atomic(&dir.join("ca.key"), ca.key_pem.as_bytes(), 0o600).unwrap();
        TlsOn {
            source: CertSource::Issue {
                common_name: "node-1".into(),
                ca_cert: dir.join("ca.crt"),
                ca_key: dir.join("ca.key"),
            },
            dir: dir.join("members/node-1/tls"),
            names: vec!["10.0.0.5".into(), "localhost".into()],
        }
    }

    #[test]
    fn a_certificate_is_issued_once_then_kept_and_reissued_when_it_must_name_more() {
        let tmp = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let ca = Ca::generate("shop", now).unwrap();
        let mut on = setup(tmp.path(), &ca);
        let first = install(&on, now).unwrap();
        assert!(first.replaced);
        assert_eq!(first.info.names, ["10.0.0.5", "localhost"]);
        let key_mode = std::fs::metadata(&first.files.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(key_mode, 0o600);
        assert_eq!(std::fs::metadata(&on.dir).unwrap().permissions().mode() & 0o777, 0o700);
        assert!(!install(&on, now).unwrap().replaced, "a set that passes is kept");
        on.names.push("db-1.example".into());
        let again = install(&on, now).unwrap();
        assert!(again.replaced && again.info.names.contains(&"db-1.example".to_string()));
        let later = now + MEMBER_VALIDITY - RENEW_BEFORE + Duration::from_secs(3600);
        assert!(install(&on, later).unwrap().replaced, "one within RENEW_BEFORE of its end is renewed");
    }

    #[test]
    fn a_new_cluster_ca_gets_a_new_certificate_and_a_failing_source_keeps_the_installed_one() {
        let tmp = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let on = setup(tmp.path(), &Ca::generate("shop", now).unwrap());
        install(&on, now).unwrap();
        let other = Ca::generate("shop", now).unwrap();
        std::fs::write(tmp.path().join("ca.crt"), &other.cert_pem).unwrap();
        pgrepl_pg::write_atomic(&tmp.path().join("ca.key"), other.key_pem.as_bytes(), 0o600).unwrap();
        let moved = install(&on, now).unwrap();
        assert!(moved.replaced);
        assert_eq!(std::fs::read_to_string(&moved.files.ca).unwrap(), other.cert_pem);

        // A key the CA's certificate does not go with: nothing passes, so nothing is written.
        let third = Ca::generate("shop", now).unwrap();
        pgrepl_pg::write_atomic(&tmp.path().join("ca.key"), third.key_pem.as_bytes(), 0o600).unwrap();
        let mut wants_more = on.clone();
        wants_more.names.push("db-2.example".into());
        let kept = install(&wants_more, now).unwrap();
        assert!(!kept.replaced, "the installed set still passes, so it stays");
        assert_eq!(std::fs::read_to_string(&kept.files.ca).unwrap(), other.cert_pem);

        std::fs::set_permissions(tmp.path().join("ca.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::remove_file(on.files().cert).unwrap();
        let e = format!("{:#}", install(&on, now).unwrap_err());
        assert!(e.contains("readable by others") && e.contains("there is none yet"), "{e}");
        assert!(!on.files().cert.exists());
    }
}
