//! The cluster's X.509 work: a CA of its own (`Ca::generate`), member certificates issued from
//! it (`Ca::issue`), and the checks a certificate, key and CA must pass before PostgreSQL is
//! given them (`check_files`: readable, a key that matches, signed by the CA, valid now, naming
//! what it must). rcgen writes certificates; x509-parser reads them. No hand-written ASN.1.
//! Pure but for `check_files`, which reads the files it names.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// How long a generated CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a generated member certificate is valid (browsers' limit; pgrepl reissues a
/// generated one when it comes within `RENEW_BEFORE` of its end).
pub const MEMBER_VALIDITY: Duration = Duration::from_secs(397 * 24 * 3600);
/// A certificate expiring within this is warned about (and a generated one reissued).
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Issued certificates start this long before "now", so a clock a little behind accepts them.
const BACKDATE: Duration = Duration::from_secs(3600);

/// What went wrong, as one sentence (the caller names the file or setting).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Bad(String),
}

fn bad(sentence: impl Into<String>) -> TlsError {
    TlsError::Bad(sentence.into())
}

/// A CA: its certificate and private key, in PEM.
#[derive(Clone)]
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("cert_pem", &self.cert_pem).field("key_pem", &"<secret>").finish()
    }
}

/// A certificate and its private key, in PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("cert_pem", &self.cert_pem).field("key_pem", &"<secret>").finish()
    }
}

fn validity(params: &mut CertificateParams, now: SystemTime, lasts: Duration) {
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + lasts).into();
}

/// Why a given certificate and key are not a CA with its own key (`Ca::check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaProblem {
    /// The certificate does not parse.
    Unreadable(TlsError),
    /// It parses, but is no CA certificate: its subject.
    NotCa(String),
    /// The key is not the certificate's (or no key in PEM).
    NotItsKey,
}

impl Ca {
    /// Whether this is a CA certificate with its own key: a certificate issued with the key
    /// (a probe, valid a minute from `now`) checks against the certificate.
    pub fn check(&self, now: SystemTime) -> Result<(), CaProblem> {
        let info = read_cert(&self.cert_pem).map_err(CaProblem::Unreadable)?;
        if !info.is_ca {
            return Err(CaProblem::NotCa(info.subject));
        }
        let probe = self.issue("probe", &[], now, Duration::from_secs(60)).map_err(|_| CaProblem::NotItsKey)?;
        check(&probe.cert_pem, &probe.key_pem, &self.cert_pem, now, &[]).map_err(|_| CaProblem::NotItsKey)?;
        Ok(())
    }

    /// A new CA for `cluster` (ECDSA P-256), valid for `CA_VALIDITY` from `now`.
    pub fn generate(cluster: &str, now: SystemTime) -> Result<Ca, TlsError> {
        let key = KeyPair::generate().map_err(|e| bad(format!("generate the CA's key: {e}")))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("pgrepl CA for cluster {cluster}"));
        dn.push(DnType::OrganizationName, "pgrepl");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, now, CA_VALIDITY);
        let cert = params.self_signed(&key).map_err(|e| bad(format!("sign the CA's certificate: {e}")))?;
        Ok(Ca { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A certificate for a member or a client (`common_name`), valid for `lasts` from `now`,
    /// for both server and client authentication, naming `names` (IP addresses as IP
    /// addresses, anything else as DNS names).
    pub fn issue(
        &self,
        common_name: &str,
        names: &[String],
        now: SystemTime,
        lasts: Duration,
    ) -> Result<Issued, TlsError> {
        let ca_key = KeyPair::from_pem(&self.key_pem).map_err(|e| bad(format!("the CA's key does not parse: {e}")))?;
        let ca_params = CertificateParams::from_ca_cert_pem(&self.cert_pem)
            .map_err(|e| bad(format!("the CA's certificate does not parse: {e}")))?;
        let ca_cert = ca_params.self_signed(&ca_key).map_err(|e| bad(format!("load the CA: {e}")))?;
        let key = KeyPair::generate().map_err(|e| bad(format!("generate a key: {e}")))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "pgrepl");
        params.distinguished_name = dn;
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|_| bad(format!("{n:?} is neither an IP address nor a DNS name"))),
            })
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut params, now, lasts);
        let cert = params
            .signed_by(&key, &ca_cert, &ca_key)
            .map_err(|e| bad(format!("sign the certificate of {common_name}: {e}")))?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// What a certificate says of itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Its subject alternative names: DNS names and IP addresses, as text.
    pub names: Vec<String>,
    pub is_ca: bool,
}

impl CertInfo {
    /// Whether it ends within `within` of `now` (or has ended).
    pub fn expires_within(&self, now: SystemTime, within: Duration) -> bool {
        self.not_after <= now + within
    }

    /// Seconds since the Unix epoch of its end.
    pub fn not_after_unix(&self) -> u64 {
        self.not_after.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    /// The warning an operator gets when it ends within `RENEW_BEFORE` of `now` (see
    /// `expiry_warning`).
    pub fn expiry_warning(&self, now: SystemTime) -> Option<String> {
        expiry_warning(self.not_after, now)
    }
}

/// The warning for a certificate that ends at `not_after`: none while that is further than
/// `RENEW_BEFORE` from `now`; else how long it has left (in whole days, hours below a day),
/// or that it has expired.
pub fn expiry_warning(not_after: SystemTime, now: SystemTime) -> Option<String> {
    if not_after > now + RENEW_BEFORE {
        return None;
    }
    let at = not_after.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Some(match not_after.duration_since(now) {
        Err(_) => format!("this member's certificate expired at {at} (unix); replace it"),
        Ok(left) if left < Duration::from_secs(24 * 3600) => {
            format!("this member's certificate expires in {} hours (at {at}, unix); replace it", left.as_secs() / 3600)
        }
        Ok(left) => format!(
            "this member's certificate expires in {} days (at {at}, unix), within 30 days; replace it",
            left.as_secs() / (24 * 3600)
        ),
    })
}

fn to_system_time(t: x509_parser::time::ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH
    }
}

/// The first certificate of a PEM text, parsed (the DER is kept by the caller of `parse`).
fn der_of(pem: &str) -> Result<Vec<u8>, TlsError> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|_| bad("holds no PEM certificate (-----BEGIN CERTIFICATE-----)"))?;
    if block.label != "CERTIFICATE" {
        return Err(bad(format!("holds a PEM {} where a CERTIFICATE was expected", block.label)));
    }
    Ok(block.contents)
}

fn info(cert: &X509Certificate<'_>) -> CertInfo {
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => names.push(d.to_string()),
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => names.push(IpAddr::from(<[u8; 4]>::try_from(*bytes).unwrap_or_default()).to_string()),
                    16 => names.push(IpAddr::from(<[u8; 16]>::try_from(*bytes).unwrap_or_default()).to_string()),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    CertInfo {
        subject: cert.subject().to_string(),
        not_before: to_system_time(cert.validity().not_before),
        not_after: to_system_time(cert.validity().not_after),
        names,
        is_ca: cert.is_ca(),
    }
}

/// What a PEM certificate says of itself.
pub fn read_cert(pem: &str) -> Result<CertInfo, TlsError> {
    let der = der_of(pem)?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|e| bad(format!("is not an X.509 certificate: {e}")))?;
    Ok(info(&cert))
}

/// Checks `cert_pem` with its `key_pem` and the CA that must have signed it: the key is the
/// certificate's, the CA signed it, it is valid at `now`, and (for a server) it names each of
/// `must_name`. The error says which part fails; the caller names the files.
pub fn check(
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
    now: SystemTime,
    must_name: &[String],
) -> Result<CertInfo, TlsError> {
    let der = der_of(cert_pem)?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|e| bad(format!("is not an X.509 certificate: {e}")))?;
    let key = KeyPair::from_pem(key_pem).map_err(|e| bad(format!("key: not a private key in PEM: {e}")))?;
    if cert.public_key().raw != key.public_key_der().as_slice() {
        return Err(bad("key: is not the key of this certificate (their public keys differ)"));
    }
    let ca_der = der_of(ca_pem).map_err(|e| bad(format!("CA: {e}")))?;
    let (_, ca) = X509Certificate::from_der(&ca_der).map_err(|e| bad(format!("CA: not an X.509 certificate: {e}")))?;
    if cert.verify_signature(Some(ca.public_key())).is_err() {
        return Err(bad(format!("was not signed by the CA ({})", ca.subject())));
    }
    let info = info(&cert);
    if now < info.not_before {
        return Err(bad(format!("is not valid yet: it starts at {}", cert.validity().not_before)));
    }
    if now > info.not_after {
        return Err(bad(format!("expired at {}", cert.validity().not_after)));
    }
    let missing: Vec<&String> = must_name.iter().filter(|n| !names_cover(&info.names, n)).collect();
    if !missing.is_empty() {
        return Err(bad(format!(
            "does not name {} (it names {}), so clients verifying host names (sslmode=verify-full) would refuse it",
            missing.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", "),
            if info.names.is_empty() { "nothing".to_string() } else { info.names.join(", ") }
        )));
    }
    Ok(info)
}

/// Whether `names` cover `host`: exactly (IP addresses compared as addresses), or by a
/// `*.domain` wildcard for one label.
pub fn names_cover(names: &[String], host: &str) -> bool {
    let ip = host.parse::<IpAddr>().ok();
    names.iter().any(|n| match (ip, n.parse::<IpAddr>().ok()) {
        (Some(a), Some(b)) => a == b,
        (Some(_), None) | (None, Some(_)) => false,
        (None, None) => {
            n.eq_ignore_ascii_case(host)
                || n.strip_prefix("*.").is_some_and(|domain| {
                    host.split_once('.').is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(domain))
                })
        }
    })
}

/// The three files PostgreSQL is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// The text of the three files, as read at one moment.
#[derive(Clone, PartialEq, Eq)]
pub struct PemSet {
    pub cert: String,
    pub key: String,
    pub ca: String,
}

impl std::fmt::Debug for PemSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemSet").field("cert", &self.cert).field("key", &"<secret>").field("ca", &self.ca).finish()
    }
}

/// Reads the three files, the error naming the one that cannot be read.
pub fn read_set(files: &TlsFiles) -> Result<PemSet, TlsError> {
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| bad(format!("{}: cannot be read: {e}", p.display())));
    Ok(PemSet { cert: read(&files.cert)?, key: read(&files.key)?, ca: read(&files.ca)? })
}

/// `check_files` on what was read of `files`.
pub fn check_set(files: &TlsFiles, set: &PemSet, now: SystemTime, must_name: &[String]) -> Result<CertInfo, TlsError> {
    check(&set.cert, &set.key, &set.ca, now, must_name).map_err(|TlsError::Bad(s)| {
        let s = if let Some(rest) = s.strip_prefix("key: ") {
            format!("{}: {rest}", files.key.display())
        } else if let Some(rest) = s.strip_prefix("CA: ") {
            format!("{}: {rest}", files.ca.display())
        } else {
            format!("{}: {s}", files.cert.display())
        };
        bad(s)
    })
}

/// `check` on files, each error naming the file at fault.
pub fn check_files(files: &TlsFiles, now: SystemTime, must_name: &[String]) -> Result<CertInfo, TlsError> {
    check_set(files, &read_set(files)?, now, must_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        SystemTime::now()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_ca_checks_with_its_own_key_and_nothing_else_does() {
        let ca = Ca::generate("shop", now()).unwrap();
        assert_eq!(ca.check(now()), Ok(()));
        let other = Ca::generate("shop", now()).unwrap();
        let wrong_key = Ca { cert_pem: ca.cert_pem.clone(), key_pem: other.key_pem };
        assert_eq!(wrong_key.check(now()), Err(CaProblem::NotItsKey));
        let leaf = ca.issue("node-1", &names(&["127.0.0.1"]), now(), Duration::from_secs(3600)).unwrap();
        let not_ca = Ca { cert_pem: leaf.cert_pem, key_pem: leaf.key_pem };
        assert!(matches!(not_ca.check(now()), Err(CaProblem::NotCa(_))));
        let garbage = Ca { cert_pem: "no".into(), key_pem: ca.key_pem };
        assert!(matches!(garbage.check(now()), Err(CaProblem::Unreadable(_))));
    }

    #[test]
    fn a_certificate_is_warned_of_only_within_30_days_of_its_end() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(expiry_warning(now + RENEW_BEFORE + Duration::from_secs(1), now), None);
        let w = expiry_warning(now + RENEW_BEFORE, now).expect("at 30 days");
        assert!(w.contains("expires in 30 days"), "{w}");
        let w = expiry_warning(now + 10 * day + Duration::from_secs(60), now).expect("10 days");
        assert!(w.contains("in 10 days") && w.contains(&format!("at {}", 1_800_000_000 + 10 * 86400 + 60)), "{w}");
        assert!(expiry_warning(now + Duration::from_secs(7200), now).unwrap().contains("in 2 hours"));
        assert!(expiry_warning(now - Duration::from_secs(1), now).unwrap().contains("expired at 1799999999"));
        let ca = Ca::generate("shop", now).unwrap();
        let m = ca.issue("node-1", &[], now, 10 * day).unwrap();
        let info = read_cert(&m.cert_pem).unwrap();
        assert_eq!(info.expiry_warning(now), expiry_warning(info.not_after, now));
        assert!(info.expiry_warning(now).is_some() && info.expiry_warning(now - 30 * day).is_none());
    }

    #[test]
    fn an_issued_certificate_passes_with_its_key_and_ca_and_names_its_hosts() {
        let ca = Ca::generate("shop", now()).unwrap();
        let m = ca.issue("node-1", &names(&["10.0.0.5", "db-1.example", "127.0.0.1"]), now(), MEMBER_VALIDITY).unwrap();
        let info = check(&m.cert_pem, &m.key_pem, &ca.cert_pem, now(), &names(&["10.0.0.5", "db-1.example"])).unwrap();
        assert_eq!(info.names, names(&["10.0.0.5", "db-1.example", "127.0.0.1"]));
        assert!(!info.is_ca);
        assert!(read_cert(&ca.cert_pem).unwrap().is_ca);
        assert!(!info.expires_within(now(), RENEW_BEFORE));
        assert!(info.expires_within(now(), MEMBER_VALIDITY + Duration::from_secs(60)));
    }

    #[test]
    fn a_wrong_key_another_ca_and_a_missing_name_are_each_told() {
        let ca = Ca::generate("shop", now()).unwrap();
        let other = Ca::generate("other", now()).unwrap();
        let a = ca.issue("node-1", &names(&["10.0.0.5"]), now(), MEMBER_VALIDITY).unwrap();
        let b = ca.issue("node-2", &names(&["10.0.0.6"]), now(), MEMBER_VALIDITY).unwrap();
        let e = check(&a.cert_pem, &b.key_pem, &ca.cert_pem, now(), &[]).unwrap_err().to_string();
        assert!(e.starts_with("key: is not the key of this certificate"), "{e}");
        let e = check(&a.cert_pem, &a.key_pem, &other.cert_pem, now(), &[]).unwrap_err().to_string();
        assert!(e.contains("was not signed by the CA") && e.contains("other"), "{e}");
        let e = check(&a.cert_pem, &a.key_pem, &ca.cert_pem, now(), &names(&["10.0.0.9"])).unwrap_err().to_string();
        assert!(e.contains("does not name 10.0.0.9 (it names 10.0.0.5)"), "{e}");
        let e = check("garbage", &a.key_pem, &ca.cert_pem, now(), &[]).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn an_expired_certificate_and_one_not_valid_yet_are_refused() {
        let ca = Ca::generate("shop", now()).unwrap();
        let long_ago = now() - Duration::from_secs(400 * 24 * 3600);
        let old = ca.issue("node-1", &[], long_ago, Duration::from_secs(24 * 3600)).unwrap();
        let e = check(&old.cert_pem, &old.key_pem, &ca.cert_pem, now(), &[]).unwrap_err().to_string();
        assert!(e.starts_with("expired at"), "{e}");
        let later = ca.issue("node-1", &[], now() + Duration::from_secs(48 * 3600), MEMBER_VALIDITY).unwrap();
        let e = check(&later.cert_pem, &later.key_pem, &ca.cert_pem, now(), &[]).unwrap_err().to_string();
        assert!(e.starts_with("is not valid yet"), "{e}");
    }

    #[test]
    fn names_cover_exact_names_addresses_and_one_label_wildcards() {
        let n = names(&["*.pg.example", "10.0.0.5", "::1", "db"]);
        assert!(names_cover(&n, "a.pg.example"));
        assert!(!names_cover(&n, "a.b.pg.example"));
        assert!(!names_cover(&n, "pg.example"));
        assert!(names_cover(&n, "10.0.0.5"));
        assert!(names_cover(&n, "0:0:0:0:0:0:0:1"));
        assert!(names_cover(&n, "DB"));
        assert!(!names_cover(&n, "10.0.0.6"));
    }

    #[test]
    fn file_errors_name_the_file_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("shop", now()).unwrap();
        let a = ca.issue("node-1", &[], now(), MEMBER_VALIDITY).unwrap();
        let b = ca.issue("node-2", &[], now(), MEMBER_VALIDITY).unwrap();
        let files =
            TlsFiles { cert: dir.path().join("a.crt"), key: dir.path().join("b.key"), ca: dir.path().join("ca.crt") };
        std::fs::write(&files.cert, &a.cert_pem).unwrap();
        std::fs::write(&files.key, &b.key_pem).unwrap();
        let e = check_files(&files, now(), &[]).unwrap_err().to_string();
        assert!(e.contains("ca.crt: cannot be read"), "{e}");
        std::fs::write(&files.ca, &ca.cert_pem).unwrap();
        let e = check_files(&files, now(), &[]).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: is not the key", files.key.display())), "{e}");
        std::fs::write(&files.key, &a.key_pem).unwrap();
        check_files(&files, now(), &[]).unwrap();
        assert!(!format!("{a:?}").contains("PRIVATE"), "Debug shows no key");
    }
}
