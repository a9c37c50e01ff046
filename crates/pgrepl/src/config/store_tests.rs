//! The etcd store's access settings (`etcds://`, `store_tls_*`, `store_user`,
//! `store_password`), through the whole path a start takes: environment (and password files),
//! then `apply_env`, then `validate`.

use super::validate::ConfigError;
use super::*;
use std::io::Write;
use std::path::PathBuf;

fn env_config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env = read_env(|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string()))?;
    let mut raw = RawConfig::default();
    apply_env(&mut raw, &env)?;
    validate(&raw, &env)
}

#[test]
fn etcds_is_tls_and_needs_the_ca() {
    let c = env_config(&[("PGREPL_STORE", "etcds://e1:2379,e2:2379"), ("PGREPL_STORE_TLS_CA", "/etc/pgrepl/ca.pem")])
        .unwrap();
    assert_eq!(c.store, StoreConfig::Etcd { endpoints: vec!["e1:2379".into(), "e2:2379".into()], tls: true });
    assert_eq!(c.store.to_string(), "etcds://e1:2379,e2:2379");
    let tls = c.store_access.tls.expect("TLS on");
    assert_eq!((tls.ca, tls.identity), (PathBuf::from("/etc/pgrepl/ca.pem"), None));

    let e = env_config(&[("PGREPL_STORE", "etcds://e1:2379")]).unwrap_err();
    assert_eq!(e.setting, "store_tls_ca");
    assert!(e.problem.contains("etcds://e1:2379 is reached over TLS: give the CA certificate"), "{e}");
}

#[test]
fn a_ca_turns_tls_on_for_etcd_too_and_a_client_certificate_comes_with_its_key() {
    let c = env_config(&[
        ("PGREPL_STORE", "etcd://e1:2379"),
        ("PGREPL_STORE_TLS_CA", "/ca.pem"),
        ("PGREPL_STORE_TLS_CERT", "/client.pem"),
        ("PGREPL_STORE_TLS_KEY", "/client.key"),
    ])
    .unwrap();
    let tls = c.store_access.tls.expect("TLS on");
    assert_eq!(tls.identity, Some((PathBuf::from("/client.pem"), PathBuf::from("/client.key"))));
    assert_eq!(env_config(&[("PGREPL_STORE", "etcd://e1:2379")]).unwrap().store_access, StoreAccess::default());

    let base = [("PGREPL_STORE", "etcd://e1:2379"), ("PGREPL_STORE_TLS_CA", "/ca.pem")];
    let e = env_config(&[&base[..], &[("PGREPL_STORE_TLS_CERT", "/client.pem")]].concat()).unwrap_err();
    assert_eq!(e.setting, "store_tls_key");
    assert!(e.problem.contains("a client certificate needs its key"), "{e}");
    let e = env_config(&[&base[..], &[("PGREPL_STORE_TLS_KEY", "/client.key")]].concat()).unwrap_err();
    assert_eq!(e.setting, "store_tls_cert");
    let e = env_config(&[
        ("PGREPL_STORE", "etcd://e1:2379"),
        ("PGREPL_STORE_TLS_CERT", "/client.pem"),
        ("PGREPL_STORE_TLS_KEY", "/client.key"),
    ])
    .unwrap_err();
    assert_eq!(e.setting, "store_tls_ca");
    assert!(e.problem.contains("a client certificate is for TLS"), "{e}");
    let e = env_config(&[("PGREPL_STORE", "etcd://e1:2379"), ("PGREPL_STORE_TLS_CA", "ca.pem")]).unwrap_err();
    assert_eq!(e.setting, "store_tls_ca (PGREPL_STORE_TLS_CA)");
    assert!(e.problem.contains("\"ca.pem\" is not an absolute path"), "{e}");
}

#[test]
fn store_access_settings_are_refused_for_the_file_store() {
    for (name, value) in [("PGREPL_STORE_TLS_CA", "/ca.pem"), ("PGREPL_STORE_USER", "u")] {
        let e = env_config(&[(name, value)]).unwrap_err();
        assert!(e.setting.ends_with(&format!("({name})")), "{e}");
        assert!(e.problem.contains("applies to an etcd store only"), "{e}");
    }
}

#[test]
fn the_store_user_comes_with_a_password_from_its_variable_or_file_never_shown() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(b"etcd-s3cret\n").unwrap();
    for password in
        [("PGREPL_STORE_PASSWORD", "etcd-s3cret"), ("PGREPL_STORE_PASSWORD_FILE", file.path().to_str().unwrap())]
    {
        let c = env_config(&[("PGREPL_STORE", "etcd://e1:2379"), ("PGREPL_STORE_USER", "pgrepl"), password]).unwrap();
        assert_eq!(c.store_access.user.as_deref(), Some("pgrepl"));
        assert_eq!(c.store_access.password.as_deref(), Some("etcd-s3cret"), "{password:?}");
        assert!(!format!("{c:?}").contains("s3cret"), "a Config's Debug shows the store password");
    }
    let e = env_config(&[("PGREPL_STORE", "etcd://e1:2379"), ("PGREPL_STORE_USER", "pgrepl")]).unwrap_err();
    assert_eq!(e.setting, "store_password");
    assert!(e.problem.contains("PGREPL_STORE_PASSWORD_FILE"), "{e}");
    let e = env_config(&[("PGREPL_STORE", "etcd://e1:2379"), ("PGREPL_STORE_PASSWORD", "pw")]).unwrap_err();
    assert_eq!(e.setting, "store_user");
    assert!(env::variables().iter().any(|v| v == "PGREPL_STORE_PASSWORD_FILE"), "children lose the variable");
}

#[test]
fn switching_a_store_to_tls_is_no_change_of_store_but_other_endpoints_are() {
    let before = RawConfig { store: Some("etcd://e1:2379".into()), ..RawConfig::default() };
    let now = env_config(&[("PGREPL_STORE", "etcds://e1:2379"), ("PGREPL_STORE_TLS_CA", "/ca.pem")]).unwrap();
    check_unchanged(&before, &now, &[]).unwrap();
    let elsewhere = env_config(&[("PGREPL_STORE", "etcds://e2:2379"), ("PGREPL_STORE_TLS_CA", "/ca.pem")]).unwrap();
    assert!(check_unchanged(&before, &elsewhere, &[]).is_err());
}
