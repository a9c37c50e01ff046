//! SCRAM-SHA-256 verifiers (what `pg_authid.rolpassword` holds): made from a password, and
//! checked against one, so that a host can tell whether the password it holds is the one a
//! role was given elsewhere, without a login and without the password ever leaving it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// A new verifier of `password`, with a random salt, as PostgreSQL stores it.
pub fn verifier(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

/// Whether `verifier` (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`) was made
/// from `password`. A verifier that does not parse matches nothing.
pub fn matches(password: &str, verifier: &str) -> bool {
    let Some(Parsed { iterations, salt, stored_key, server_key }) = parse(verifier) else { return false };
    // As PostgreSQL and libpq: SASLprep when the password allows it, else its bytes as they are.
    let prepared = stringprep::saslprep(password).map(|p| p.into_owned()).unwrap_or_else(|_| password.to_string());
    let salted = hi(prepared.as_bytes(), &salt, iterations);
    let client_key = hmac(&salted, b"Client Key");
    let ours_stored: [u8; 32] = Sha256::digest(client_key).into();
    ours_stored[..] == stored_key[..] && hmac(&salted, b"Server Key")[..] == server_key[..]
}

/// A verifier's parts, decoded.
struct Parsed {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

fn parse(verifier: &str) -> Option<Parsed> {
    let rest = verifier.strip_prefix("SCRAM-SHA-256$")?;
    let (params, keys) = rest.split_once('$')?;
    let (iterations, salt) = params.split_once(':')?;
    let (stored, server) = keys.split_once(':')?;
    let iterations: u32 = iterations.parse().ok().filter(|i| *i > 0)?;
    Some(Parsed {
        iterations,
        salt: STANDARD.decode(salt).ok()?,
        stored_key: STANDARD.decode(stored).ok()?,
        server_key: STANDARD.decode(server).ok()?,
    })
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one block (RFC 5802's `Hi`).
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &block);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        out.iter_mut().zip(u.iter()).for_each(|(o, x)| *o ^= x);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_matches_its_own_password_only() {
        let v = verifier("new secret ünïcode");
        assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
        assert!(matches("new secret ünïcode", &v));
        assert!(!matches("new secret unicode", &v));
        assert!(!matches("", &v));
        // Two verifiers of one password differ (their salts do), and each matches it.
        let w = verifier("new secret ünïcode");
        assert_ne!(v, w);
        assert!(matches("new secret ünïcode", &w));
    }

    #[test]
    fn what_is_not_a_verifier_matches_nothing() {
        for bad in [
            "",
            "md5abc",
            "SCRAM-SHA-256$x:c2FsdA==$a:b",
            "SCRAM-SHA-256$4096:!!$a:b",
            "SCRAM-SHA-256$0:c2FsdA==$YQ==:Yg==",
        ] {
            assert!(!matches("pw", bad), "{bad}");
        }
    }
}
