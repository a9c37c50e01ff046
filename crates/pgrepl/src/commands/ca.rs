//! The cluster CA: `pgrepl ca init DIR` (a new CA for the user to give every host's
//! `pgrepl node`), `pgrepl ca show` (the cluster's CA certificate, for clients to verify the
//! members with), and `settle`, which puts a cluster directory's CA in place at `up` and `node`.
//! The CA's key never leaves its files (mode 0600) and is never printed.

use crate::config::Config;
use crate::layout::Layout;
use anyhow::{bail, Context};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::SystemTime;
use tracing::info;

/// Puts the cluster CA in `DIR/ca.crt` and `DIR/ca.key` (0600): a given one (`tls.ca_cert`,
/// `tls.ca_key`) replaces what is there; else an earlier one is kept; else one is made (`up`:
/// one machine; `node` has refused before, in `check_given`). Nothing with TLS off.
pub fn settle(layout: &Layout, config: &Config) -> anyhow::Result<()> {
    if !config.tls.on {
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
    if config.tls.on && config.tls.given_ca.is_none() && !kept {
        bail!(
            "tls.ca_cert and tls.ca_key (PGREPL_TLS_CA_CERT_FILE, PGREPL_TLS_CA_KEY_FILE) are not set: `pgrepl node` never \
             makes a CA, since every host of the cluster must use the same one; make one with `pgrepl ca init DIR` and give \
             its ca.crt and ca.key to every host (or set tls.mode = off)"
        );
    }
    Ok(())
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
    let path = layout.ca_cert();
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("read the cluster CA {} (is this a cluster directory, with TLS on?)", path.display())
    })?;
    pgrepl_tls::read_cert(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    print!("{text}");
    Ok(())
}
