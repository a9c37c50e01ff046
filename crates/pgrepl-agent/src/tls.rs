//! The member's TLS files: what PostgreSQL reads (`server.crt`, `server.key`, `ca.crt` in the
//! member's own `tls/` directory) and where they come from (a `CertSource`: issued from the
//! cluster CA, or the user's own files, say a Kubernetes Secret mounted as files). Owns
//! installing them: a new set is checked before it replaces the installed
//! one, and a source that fails leaves a set that still passes in place, so PostgreSQL only
//! ever reads files that passed `pgrepl_tls::check` and is never left unable to start by a bad
//! source. Decides nothing about the cluster.

use anyhow::{bail, Context};
use pgrepl_pg::{ClientTls, ServerTls};
use pgrepl_tls::{Ca, CertInfo, PemSet, TlsFiles, MEMBER_VALIDITY, RENEW_BEFORE};
use std::hash::{Hash, Hasher};
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
    /// The member's own host: a given certificate must name it (the others in `names` it
    /// should, and is warned of when it does not).
    pub host: String,
    /// What the certificate must name so that clients verifying host names accept it: the
    /// member's host, the endpoints' address, `localhost`, `127.0.0.1`, the machine's name.
    pub names: Vec<String>,
}

/// Where a member's certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertSource {
    /// Issued here, as `common_name`, from the cluster CA's certificate and key (key 0600).
    Issue { common_name: String, ca_cert: PathBuf, ca_key: PathBuf },
    /// The user's own certificate, key and CA (`tls.cert_file`, `tls.key_file`,
    /// `tls.ca_file`), copied in when they pass; never renewed here, only warned of.
    Files(TlsFiles),
}

/// What the given files hold now, as one number (content, or why a file cannot be read), so
/// the agent can tell cheaply when they changed; `None` for an issued certificate.
pub fn fingerprint(source: &CertSource) -> Option<u64> {
    let CertSource::Files(given) = source else { return None };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for path in [&given.cert, &given.key, &given.ca] {
        match std::fs::read(path) {
            Ok(bytes) => bytes.hash(&mut h),
            Err(e) => e.kind().to_string().hash(&mut h),
        }
    }
    Some(h.finish())
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
    let (common_name, ca_cert, ca_key) = match &on.source {
        CertSource::Issue { common_name, ca_cert, ca_key } => (common_name, ca_cert, ca_key),
        CertSource::Files(given) => return install_given(on, given, now),
    };
    let files = on.files();
    let current = pgrepl_tls::check_files(&files, now, &on.names);
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

/// The user's files: checked (readable, the key the certificate's, signed by their CA, valid
/// now, naming the member's own host) and copied in when they differ from the installed set.
/// Files that fail leave an installed set that is still valid in place, with a warning; names
/// of `names` the certificate lacks (other members' hosts, the endpoints' address) are warned of.
fn install_given(on: &TlsOn, given: &TlsFiles, now: SystemTime) -> anyhow::Result<Installed> {
    let files = on.files();
    let checked = check_given(given, &on.host, now);
    let (set, info) = match checked {
        Ok(ok) => ok,
        Err(e) => {
            return match pgrepl_tls::check_files(&files, now, &[]) {
                Ok(info) if files_hold(&files).is_some() => {
                    warn!(
                        "refused the given certificate files, kept the installed ones ({}): {e}",
                        files.cert.display()
                    );
                    Ok(Installed { files, info, replaced: false })
                }
                _ => Err(anyhow::anyhow!("{e}")),
            }
        }
    };
    if files_hold(&files).as_ref() == Some(&set) {
        return Ok(Installed { files, info, replaced: false });
    }
    write_set(&on.dir, &files, &set.ca, &set.cert, &set.key)?;
    let missing = unnamed(&info, &on.names);
    if !missing.is_empty() {
        warn!(
            cert = %given.cert.display(),
            "the given certificate does not name {}: clients verifying host names (sslmode=verify-full) that reach this member by those names refuse it",
            missing.join(", ")
        );
    }
    info!(cert = %given.cert.display(), subject = %info.subject, "installed the given certificate files");
    Ok(Installed { files, info, replaced: true })
}

/// Checks the user's files as `pgrepl up` and `node` do before starting anything: each
/// error names the file at fault.
pub fn check_given(given: &TlsFiles, host: &str, now: SystemTime) -> Result<(PemSet, CertInfo), pgrepl_tls::TlsError> {
    let set = pgrepl_tls::read_set(given)?;
    let info = pgrepl_tls::check_set(given, &set, now, &[host.to_string()])?;
    Ok((set, info))
}

/// Those of `names` the certificate does not name, loopback names aside (clients on the
/// member's own machine may use its socket).
pub fn unnamed(info: &CertInfo, names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|n| !matches!(n.as_str(), "localhost" | "127.0.0.1" | "::1"))
        .filter(|n| !pgrepl_tls::names_cover(&info.names, n))
        .cloned()
        .collect()
}

/// The installed set, when all three files can be read.
fn files_hold(files: &TlsFiles) -> Option<PemSet> {
    pgrepl_tls::read_set(files).ok()
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
            host: "10.0.0.5".into(),
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

    /// Writes a certificate of `ca` for `names`, valid from `from` for `lasts`, with its key and
    /// the CA, as the user's files in `dir`.
    fn given(dir: &Path, ca: &Ca, names: &[&str], from: SystemTime, lasts: Duration) -> TlsFiles {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let m = ca.issue("db", &names, from, lasts).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let files = TlsFiles { cert: dir.join("tls.crt"), key: dir.join("tls.key"), ca: dir.join("ca.crt") };
        std::fs::write(&files.cert, &m.cert_pem).unwrap();
        std::fs::write(&files.key, &m.key_pem).unwrap();
        std::fs::write(&files.ca, &ca.cert_pem).unwrap();
        files
    }

    #[test]
    fn given_files_are_installed_when_they_pass_and_a_bad_change_keeps_the_installed_set() {
        let tmp = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let ca = Ca::generate("shop", now).unwrap();
        let secret = tmp.path().join("secret");
        let files = given(&secret, &ca, &["10.0.0.5"], now, MEMBER_VALIDITY);
        let on = TlsOn {
            source: CertSource::Files(files.clone()),
            dir: tmp.path().join("members/node-1/tls"),
            host: "10.0.0.5".into(),
            names: vec!["10.0.0.5".into(), "localhost".into(), "10.0.0.6".into()],
        };
        let first = install(&on, now).unwrap();
        assert!(first.replaced, "installed although it does not name 10.0.0.6 (only warned of)");
        assert_eq!(std::fs::read_to_string(&first.files.cert).unwrap(), std::fs::read_to_string(&files.cert).unwrap());
        assert_eq!(unnamed(&first.info, &on.names), ["10.0.0.6"]);
        assert!(!install(&on, now).unwrap().replaced, "the same files again change nothing");

        let seen = fingerprint(&on.source);
        assert_eq!(seen, fingerprint(&on.source), "unchanged files, same fingerprint");
        given(&secret, &ca, &["10.0.0.5"], now, MEMBER_VALIDITY);
        assert_ne!(seen, fingerprint(&on.source), "a new certificate, another fingerprint");
        let second = install(&on, now).unwrap();
        assert!(second.replaced);
        let installed = std::fs::read_to_string(&second.files.cert).unwrap();

        // Expired, or not naming the member's own host: refused, the installed set stays.
        given(&secret, &ca, &["10.0.0.5"], now - 2 * RENEW_BEFORE, RENEW_BEFORE);
        let kept = install(&on, now).unwrap();
        assert!(!kept.replaced);
        assert_eq!(std::fs::read_to_string(&kept.files.cert).unwrap(), installed);
        let e = check_given(&files, "10.0.0.5", now).unwrap_err().to_string();
        assert!(e.contains("tls.crt") && e.contains("expired"), "{e}");
        given(&secret, &ca, &["10.0.0.7"], now, MEMBER_VALIDITY);
        assert!(!install(&on, now).unwrap().replaced);
        assert_eq!(std::fs::read_to_string(&on.files().cert).unwrap(), installed);

        // With nothing installed, the refusal is the error.
        std::fs::remove_file(on.files().cert).unwrap();
        let e = format!("{:#}", install(&on, now).unwrap_err());
        assert!(e.contains("does not name 10.0.0.5"), "{e}");
        std::fs::remove_file(&files.key).unwrap();
        assert_ne!(fingerprint(&on.source), None);
        assert_eq!(
            fingerprint(&CertSource::Issue { common_name: "x".into(), ca_cert: "/a".into(), ca_key: "/b".into() }),
            None
        );
    }
}
