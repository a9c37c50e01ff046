//! The cluster CA: `pgrepl ca init DIR` (a new CA for the user to give every host's
//! `pgrepl node`), `pgrepl ca show` (the cluster's CA certificate, for clients to verify the
//! members with), `settle`, which puts a cluster directory's CA in place at `up` and `node`,
//! and `check_files`, which checks the user's own certificate files (`tls.cert_file`) there.
//! The CA's key never leaves its files (mode 0600) and is never printed.

use crate::config::Config;
use crate::layout::Layout;
use anyhow::{bail, Context};
use pgrepl_core::keys;
use pgrepl_store::{Condition, Store};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::SystemTime;
use tracing::{info, warn};

/// Puts the cluster CA in `DIR/ca.crt` and `DIR/ca.key` (0600): a given one (`tls.ca_cert`,
/// `tls.ca_key`) replaces what is there; else an earlier one is kept; else one is made (`up`:
/// one machine; `node` has refused before, in `check_given`). Nothing with TLS off.
pub fn settle(layout: &Layout, config: &Config) -> anyhow::Result<()> {
    // The user's own files need no CA key: nothing is issued here.
    if !config.tls.on || config.tls.files.is_some() {
        return Ok(());
    }
    if let Some(given) = &config.tls.given_ca {
        return write(layout.dir.as_path(), &given.cert_pem, &given.key_pem);
    }
    if layout.ca_cert().exists() && layout.ca_key().exists() {
        return Ok(());
    }
    let ca = pgrepl_tls::Ca::generate(&config.cluster, SystemTime::now())
        .map_err(|e| anyhow::anyhow!("make the cluster CA: {e}"))?;
    write(&layout.dir, &ca.cert_pem, &ca.key_pem)?;
    info!(cert = %layout.ca_cert().display(), "made the cluster CA");
    Ok(())
}

/// For `pgrepl node`: with TLS on, the CA must be given (or kept from an earlier start), since
/// every host of the cluster must use the same one: it is never made per host.
pub fn check_given(layout: &Layout, config: &Config) -> anyhow::Result<()> {
    let kept = layout.ca_cert().exists() && layout.ca_key().exists();
    let given = config.tls.given_ca.is_some() || config.tls.files.is_some() || config.tls.ca_in_store;
    if config.tls.on && !given && !kept {
        bail!(
            "tls.ca_cert and tls.ca_key (PGREPL_TLS_CA_CERT_FILE, PGREPL_TLS_CA_KEY_FILE) are not set: `pgrepl node` never \
             makes a CA, since every host of the cluster must use the same one; make one with `pgrepl ca init DIR` and give \
             its ca.crt and ca.key to every host, or give each host its own certificate (tls.cert_file, tls.key_file, \
             tls.ca_file), or let the first member make it and keep it in the store (tls.ca_in_store = true, \
             PGREPL_TLS_CA_IN_STORE), or set tls.mode = off"
        );
    }
    Ok(())
}

/// The cluster CA as `tls.ca_in_store` keeps it under `keys::CA`.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredCa {
    cert_pem: String,
    key_pem: String,
}

/// For `pgrepl node` with `tls.ca_in_store`: the store's CA goes into `DIR/ca.crt` and
/// `DIR/ca.key` (then `settle` keeps it). When the store has none, this member puts one there:
/// the one it kept from an earlier start, else a new one; should another member put one first
/// (the write is conditional), that one is taken instead. A CA in the store that is not a CA
/// with its own key is refused, and nothing is written.
pub async fn settle_from_store(layout: &Layout, config: &Config, store: &dyn Store) -> anyhow::Result<()> {
    if !config.tls.on || !config.tls.ca_in_store {
        return Ok(());
    }
    let stored = match read_stored(store).await? {
        Some(stored) => stored,
        None => {
            let kept =
                std::fs::read_to_string(layout.ca_cert()).ok().zip(std::fs::read_to_string(layout.ca_key()).ok());
            let (cert_pem, key_pem) = match kept {
                Some(kept) => kept,
                None => {
                    let ca = pgrepl_tls::Ca::generate(&config.cluster, SystemTime::now())
                        .map_err(|e| anyhow::anyhow!("make the cluster CA: {e}"))?;
                    (ca.cert_pem, ca.key_pem)
                }
            };
            let mine = StoredCa { cert_pem, key_pem };
            match store.put(keys::CA, &serde_json::to_vec(&mine)?, Condition::Absent, None).await {
                Ok(_) => {
                    info!("put the cluster CA in the store (tls.ca_in_store), where the other members take it");
                    mine
                }
                Err(e) if e.is_conflict() => {
                    read_stored(store).await?.context("the cluster CA vanished from the store")?
                }
                Err(e) => return Err(e).context("put the cluster CA in the store"),
            }
        }
    };
    let ca = pgrepl_tls::Ca { cert_pem: stored.cert_pem.clone(), key_pem: stored.key_pem.clone() };
    let why = match ca.check(SystemTime::now()) {
        Ok(()) => None,
        Err(pgrepl_tls::CaProblem::Unreadable(e)) => Some(e.to_string()),
        Err(pgrepl_tls::CaProblem::NotCa(subject)) => Some(format!("{subject} is not a CA certificate")),
        Err(pgrepl_tls::CaProblem::NotItsKey) => Some("its key is not the certificate's".to_string()),
    };
    if let Some(why) = why {
        bail!("the CA in the store (key {:?}) is refused: {why}", keys::CA);
    }
    write(&layout.dir, &stored.cert_pem, &stored.key_pem)
}

async fn read_stored(store: &dyn Store) -> anyhow::Result<Option<StoredCa>> {
    let snapshot = store.snapshot().await.context("read the cluster CA from the store")?;
    let Some(entry) = snapshot.get(keys::CA) else { return Ok(None) };
    let stored = serde_json::from_slice(&entry.value)
        .with_context(|| format!("the store's key {:?} is not a CA certificate and key", keys::CA))?;
    Ok(Some(stored))
}

/// At `up` and `node`, before anything is started or changed: the user's own certificate files
/// (`tls.cert_file`, `tls.key_file`, `tls.ca_file`) must be readable, the key the
/// certificate's, signed by the CA, valid now and name `host` (the member's own); the error is
/// one line naming the file and what is wrong. Names it should have besides (`others`: the
/// endpoints' address, the other members' hosts) are warned of. Nothing without such files.
pub fn check_files(config: &Config, host: &str, others: &[String]) -> anyhow::Result<()> {
    let Some(given) = config.tls.files.as_ref().filter(|_| config.tls.on) else { return Ok(()) };
    let (_, info) = pgrepl_agent::tls::check_given(given, host, SystemTime::now()).map_err(|e| {
        anyhow::anyhow!("the given certificate files are refused (tls.cert_file, tls.key_file, tls.ca_file): {e}")
    })?;
    let missing = pgrepl_agent::tls::unnamed(&info, others);
    if !missing.is_empty() {
        warn!(
            cert = %given.cert.display(),
            "the given certificate does not name {}: clients verifying host names (sslmode=verify-full) that reach a member by those names refuse it",
            missing.join(", ")
        );
    }
    if let Some(w) = info.expiry_warning(SystemTime::now()) {
        warn!(cert = %given.cert.display(), "{w}");
    }
    Ok(())
}

/// The CA clients verify the members against: the given `tls.ca_file`, else `DIR/ca.crt`.
pub fn client_root(layout: &Layout, config: &Config) -> std::path::PathBuf {
    config.tls.files.as_ref().map_or_else(|| layout.ca_cert(), |f| f.ca.clone())
}

/// Writes `ca.crt` and `ca.key` into `dir`, both 0600, each atomically.
fn write(dir: &Path, cert_pem: &str, key_pem: &str) -> anyhow::Result<()> {
    for (name, text) in [("ca.key", key_pem), ("ca.crt", cert_pem)] {
        let path = dir.join(name);
        pgrepl_pg::write_atomic(&path, text.as_bytes(), 0o600).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// `pgrepl ca init DIR`: a new CA in `DIR` (created 0700 when missing), refusing to replace one.
pub fn init(dir: &Path, cluster: &str) -> anyhow::Result<()> {
    let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    if cert.exists() || key.exists() {
        bail!(
            "{} already holds a CA (ca.crt or ca.key); refusing to replace it: choose another directory",
            dir.display()
        );
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))?;
    let ca = pgrepl_tls::Ca::generate(cluster, SystemTime::now()).map_err(|e| anyhow::anyhow!("make a CA: {e}"))?;
    write(dir, &ca.cert_pem, &ca.key_pem)?;
    println!("made a CA for cluster {cluster:?}:");
    println!("  certificate: {} (give it to clients: sslrootcert=...)", cert.display());
    println!("  key:         {} (mode 0600; keep it secret)", key.display());
    println!(
        "give both to `pgrepl node` on every host: PGREPL_TLS_CA_CERT_FILE={} PGREPL_TLS_CA_KEY_FILE={}",
        cert.display(),
        key.display()
    );
    Ok(())
}

/// `pgrepl ca show`: the cluster directory's CA certificate, PEM.
pub fn show(layout: &Layout) -> anyhow::Result<()> {
    let path = crate::cluster::load_config(layout).map_or_else(|_| layout.ca_cert(), |c| client_root(layout, &c));
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("read the cluster CA {} (is this a cluster directory, with TLS on?)", path.display())
    })?;
    pgrepl_tls::read_cert(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    print!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{validate, RawConfig};
    use std::time::Duration;

    #[test]
    fn a_node_with_its_own_certificate_files_needs_no_ca_and_bad_files_are_refused_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        assert!(check_given(&layout, &validate(&RawConfig::default(), &[]).unwrap()).is_err(), "no CA, no files");
        let now = SystemTime::now();
        let ca = pgrepl_tls::Ca::generate("shop", now).unwrap();
        let m = ca.issue("db", &["10.0.0.5".to_string()], now, Duration::from_secs(86400)).unwrap();
        let (cert, key, ca_file) = (tmp.path().join("tls.crt"), tmp.path().join("tls.key"), tmp.path().join("ca.pem"));
        std::fs::write(&cert, &m.cert_pem).unwrap();
        std::fs::write(&key, &m.key_pem).unwrap();
        std::fs::write(&ca_file, &ca.cert_pem).unwrap();
        let mut raw = RawConfig::default();
        raw.tls.cert_file = Some(cert.display().to_string());
        raw.tls.key_file = Some(key.display().to_string());
        raw.tls.ca_file = Some(ca_file.display().to_string());
        let config = validate(&raw, &[]).unwrap();
        check_given(&layout, &config).unwrap();
        settle(&layout, &config).unwrap();
        assert!(!layout.ca_cert().exists() && !layout.ca_key().exists(), "no CA made beside given files");
        assert_eq!(client_root(&layout, &config), ca_file);
        check_files(&config, "10.0.0.5", &["10.0.0.6".to_string()]).unwrap();
        let e = check_files(&config, "10.0.0.9", &[]).unwrap_err().to_string();
        assert!(e.contains(&cert.display().to_string()) && e.contains("does not name 10.0.0.9"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
}
