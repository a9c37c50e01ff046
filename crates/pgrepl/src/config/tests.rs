//! The settings of the container image, through the whole path a start takes: environment
//! (and password files), then `apply_env`, then `validate`.

use super::validate::ConfigError;
use super::*;
use std::io::Write;

/// `raw` with `vars` as the environment over it, validated.
fn start(raw: RawConfig, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env = read_env(|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string()))?;
    let mut raw = raw;
    apply_env(&mut raw, &env)?;
    validate(&raw, &env)
}

fn env_config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    start(RawConfig::default(), vars)
}

fn file_holding(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

#[test]
fn the_upstream_is_a_host_name_or_an_address_from_the_first_variable_set() {
    assert_eq!(env_config(&[]).unwrap().upstream_host, None);
    for (vars, host) in [
        (&[("REPLICATE_FROM", "pg-master")][..], "pg-master"),
        (&[("REPLICATE_FROM", " 10.0.0.5 ")], "10.0.0.5"),
        (&[("POSTGRESQL_MASTER_IP", "fd00::5")], "fd00::5"),
        (&[("POSTGRESQL_MASTER_SERVICE_NAME", "postgresql-master.ns_1.svc")], "postgresql-master.ns_1.svc"),
        (&[("PGREPL_UPSTREAM_HOST", "mine"), ("REPLICATE_FROM", "seed")], "mine"),
        (&[("POSTGRESQL_MASTER_IP", "10.0.0.6"), ("POSTGRESQL_MASTER_SERVICE_NAME", "svc")], "10.0.0.6"),
    ] {
        assert_eq!(env_config(vars).unwrap().upstream_host.as_deref(), Some(host), "{vars:?}");
    }
    let c = env_config(&[("REPLICATE_FROM", "pg-master"), ("REPLICATE_PORT", "6543")]).unwrap();
    assert_eq!(c.upstream_port, 6543);
    assert_eq!(env_config(&[]).unwrap().upstream_port, 5432);
}

#[test]
fn an_empty_upstream_variable_is_not_set() {
    // As compose files write it for a primary: no upstream, and no error.
    let c = env_config(&[("REPLICATE_FROM", ""), ("REPLICATE_PORT", "")]).unwrap();
    assert_eq!(c.upstream_host, None);
    assert_eq!(c.upstream_port, 5432);
    // The next variable applies, and so does the file's value.
    let c = env_config(&[("REPLICATE_FROM", " "), ("POSTGRESQL_MASTER_IP", "10.0.0.7")]).unwrap();
    assert_eq!(c.upstream_host.as_deref(), Some("10.0.0.7"));
    let raw = RawConfig { upstream_host: Some("from-file".into()), ..RawConfig::default() };
    assert_eq!(start(raw, &[("REPLICATE_FROM", "")]).unwrap().upstream_host.as_deref(), Some("from-file"));
}

#[test]
fn a_bad_upstream_names_the_variable_the_value_and_what_is_allowed() {
    for value in ["pg master", "http://pg:5432", "[::1]"] {
        let err = env_config(&[("REPLICATE_FROM", value)]).unwrap_err();
        assert_eq!(err.setting, "upstream_host (REPLICATE_FROM)", "{value}");
        assert!(err.problem.contains(&format!("{value:?} is not allowed")), "{err}");
        assert!(err.problem.contains("a host name (letters, digits, '.', '-', '_') or an IP address"), "{err}");
    }
    let raw = RawConfig { upstream_host: Some(" ".into()), ..RawConfig::default() };
    assert_eq!(start(raw, &[]).unwrap_err().to_string().split(':').next(), Some("upstream_host"));
    for value in ["0", "70000"] {
        let err = env_config(&[("REPLICATE_PORT", value)]).unwrap_err();
        assert_eq!(err.to_string(), format!("upstream_port (REPLICATE_PORT): {value} is not a port; use 1 to 65535"));
    }
    let err = env_config(&[("PGREPL_UPSTREAM_PORT", "pg")]).unwrap_err();
    assert_eq!(err.to_string(), "upstream_port (PGREPL_UPSTREAM_PORT): \"pg\" is not a whole number");
}

#[test]
fn promote_takes_the_words_of_a_boolean_and_empty_means_false() {
    assert!(!env_config(&[]).unwrap().promote);
    for (value, promote) in [("", false), (" ", false), ("FALSE", false), ("no", false), ("Off", false), ("0", false)]
        .into_iter()
        .chain([("true", true), ("YES", true), ("on", true), ("1", true), (" True ", true)])
    {
        assert_eq!(env_config(&[("PROMOTE_MASTER", value)]).unwrap().promote, promote, "{value:?}");
    }
    assert!(env_config(&[("PGREPL_PROMOTE", "yes"), ("PROMOTE_MASTER", "no")]).unwrap().promote);
    let err = env_config(&[("PROMOTE_MASTER", "maybe")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "promote (PROMOTE_MASTER): \"maybe\" is not allowed; use true or false (also yes/no, on/off, 1/0; empty means false)"
    );
}

#[test]
fn destroy_on_restart_takes_the_same_words_and_empty_leaves_it_unset() {
    assert!(env_config(&[("DESTROY_DATABASE_ON_RESTART", "YES")]).unwrap().destroy_on_restart);
    assert!(!env_config(&[("DESTROY_DATABASE_ON_RESTART", "off")]).unwrap().destroy_on_restart);
    let env = read_env(|n| (n == "DESTROY_DATABASE_ON_RESTART").then(String::new)).unwrap();
    assert_eq!(env, []);
    // The container's own default (set before the environment) stands.
    let raw = RawConfig { destroy_on_restart: Some(true), ..RawConfig::default() };
    assert!(start(raw, &[("DESTROY_DATABASE_ON_RESTART", "")]).unwrap().destroy_on_restart);
    let err = env_config(&[("PGREPL_DESTROY_ON_RESTART", "maybe")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "destroy_on_restart (PGREPL_DESTROY_ON_RESTART): \"maybe\" is not a boolean; use true or false"
    );
}

#[test]
fn the_replication_role_takes_the_seeds_other_names_last() {
    let c = env_config(&[("REPLICATION_USER", "repl"), ("REPLICATION_PASS", "rpw")]).unwrap();
    assert_eq!(c.names.replication_user, "repl");
    assert_eq!(c.passwords.replication.as_deref(), Some("rpw"));
    let c = env_config(&[("POSTGRESQL_MASTER_USER", "master"), ("REPLICATION_USER", "repl")]).unwrap();
    assert_eq!(c.names.replication_user, "master");
    let err = env_config(&[("REPLICATION_USER", "postgres")]).unwrap_err();
    assert_eq!(err.setting, "database.replication_user (REPLICATION_USER)");
}

#[test]
fn passwords_may_come_from_files_named_by_name_file_variables() {
    let user = file_holding("s3cret\n");
    let admin = file_holding("admin pw");
    let replication = file_holding("repl\r\n");
    let (u, a, r) =
        (user.path().to_str().unwrap(), admin.path().to_str().unwrap(), replication.path().to_str().unwrap());
    let c = env_config(&[
        ("POSTGRESQL_USER", "user"),
        ("POSTGRESQL_PASSWORD_FILE", u),
        ("POSTGRESQL_DATABASE", "db"),
        ("PGREPL_ADMIN_PASSWORD_FILE", a),
        ("REPLICATION_PASS_FILE", r),
    ])
    .unwrap();
    assert_eq!(c.passwords.user.as_deref(), Some("s3cret"));
    assert_eq!(c.passwords.admin.as_deref(), Some("admin pw"));
    assert_eq!(c.passwords.replication.as_deref(), Some("repl"));
    let c = env_config(&[("POSTGRES_PASS_FILE", u), ("POSTGRES_USER", "u"), ("POSTGRES_DBNAME", "d")]).unwrap();
    assert_eq!(c.passwords.user.as_deref(), Some("s3cret"));

    // A variable wins over its file twin; a name wins over the later names and their files.
    let c = env_config(&[("POSTGRESQL_ADMIN_PASSWORD", "plain"), ("POSTGRESQL_ADMIN_PASSWORD_FILE", a)]).unwrap();
    assert_eq!(c.passwords.admin.as_deref(), Some("plain"));
    let c = env_config(&[("PGREPL_ADMIN_PASSWORD_FILE", a), ("POSTGRESQL_ADMIN_PASSWORD", "seed")]).unwrap();
    assert_eq!(c.passwords.admin.as_deref(), Some("admin pw"));

    // Errors name the file variable; only one trailing newline is dropped.
    let two_lines = file_holding("hunter2\n\n");
    let err = env_config(&[("POSTGRESQL_ADMIN_PASSWORD_FILE", two_lines.path().to_str().unwrap())]).unwrap_err();
    assert_eq!(err.setting, "database.admin_password (POSTGRESQL_ADMIN_PASSWORD_FILE)");
    assert!(err.problem.contains("line break"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn an_unreadable_password_file_names_the_variable_and_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-secret");
    let path = missing.to_str().unwrap();
    let err = env_config(&[("POSTGRESQL_MASTER_PASSWORD_FILE", path)]).unwrap_err();
    assert_eq!(err.setting, "database.replication_password (POSTGRESQL_MASTER_PASSWORD_FILE)");
    assert!(err.problem.starts_with(&format!("cannot read the file {path:?}")), "{err}");
    let err = env_config(&[("PGREPL_PASSWORD_FILE", dir.path().to_str().unwrap())]).unwrap_err();
    assert_eq!(err.setting, "database.password (PGREPL_PASSWORD_FILE)");
}

#[test]
fn tuning_variables_set_their_parameters_over_the_files() {
    let mut raw = RawConfig::default();
    raw.parameters.insert("max_connections".into(), toml::Value::Integer(100));
    raw.parameters.insert("work_mem".into(), toml::Value::String("8MB".into()));
    let c = start(
        raw,
        &[
            ("POSTGRESQL_MAX_CONNECTIONS", " 200 "),
            ("POSTGRESQL_SHARED_BUFFERS", "256MB"),
            ("POSTGRESQL_EFFECTIVE_CACHE_SIZE", "4GB"),
            ("POSTGRESQL_MAX_PREPARED_TRANSACTIONS", "10"),
        ],
    )
    .unwrap();
    let p: Vec<_> = c.parameters.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        p,
        [
            ("effective_cache_size", "4GB"),
            ("max_connections", "200"),
            ("max_prepared_transactions", "10"),
            ("shared_buffers", "256MB"),
            ("work_mem", "8MB"),
        ]
    );
    assert_eq!(env_config(&[("POSTGRESQL_SHARED_BUFFERS", "16384")]).unwrap().parameters["shared_buffers"], "16384");
    assert!(env_config(&[("POSTGRESQL_MAX_CONNECTIONS", "")]).unwrap().parameters.is_empty());

    let err = env_config(&[("POSTGRESQL_MAX_CONNECTIONS", "lots")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "parameters.max_connections (POSTGRESQL_MAX_CONNECTIONS): \"lots\" is not a whole number"
    );
    let err = env_config(&[("POSTGRESQL_MAX_PREPARED_TRANSACTIONS", "1.5")]).unwrap_err();
    assert_eq!(err.setting, "parameters.max_prepared_transactions (POSTGRESQL_MAX_PREPARED_TRANSACTIONS)");
    for value in ["big", "128mb", "MB", "1.5GB"] {
        let err = env_config(&[("POSTGRESQL_EFFECTIVE_CACHE_SIZE", value)]).unwrap_err();
        assert_eq!(err.setting, "parameters.effective_cache_size (POSTGRESQL_EFFECTIVE_CACHE_SIZE)");
        assert!(err.problem.starts_with(&format!("{value:?} is not a size; use a number with B, kB, MB")), "{err}");
    }
}

#[test]
fn the_password_file_variables_are_cleared_like_the_others() {
    let names = env::variables();
    for name in
        ["POSTGRESQL_PASSWORD_FILE", "POSTGRES_PASS_FILE", "PGREPL_ADMIN_PASSWORD_FILE", "REPLICATION_PASS_FILE"]
    {
        assert!(names.iter().any(|n| n == name), "{name}");
    }
    assert!(!names.iter().any(|n| n == "POSTGRESQL_USER_FILE"));
}

#[test]
fn the_api_token_comes_from_its_variable_or_its_file_and_must_be_long_and_plain() {
    assert_eq!(env_config(&[]).unwrap().api_token, None);
    let token = "0123456789abcdef-token";
    let c = env_config(&[("PGREPL_API_TOKEN", token)]).unwrap();
    assert!(c.api_token.as_ref().is_some_and(|t| t.matches(token.as_bytes())));
    assert!(!format!("{c:?}").contains(token), "a Config's Debug shows the token");
    let file = file_holding(&format!("{token}\n"));
    let c = env_config(&[("PGREPL_API_TOKEN_FILE", file.path().to_str().unwrap())]).unwrap();
    assert!(c.api_token.as_ref().is_some_and(|t| t.matches(token.as_bytes())), "read from the file, less its newline");
    let e = env_config(&[("PGREPL_API_TOKEN", "short")]).unwrap_err();
    assert_eq!(e.setting, "api_token (PGREPL_API_TOKEN)");
    assert!(e.problem.contains("at least 16"), "{}", e.problem);
    let e = env_config(&[("PGREPL_API_TOKEN", "0123456789 abcdef")]).unwrap_err();
    assert!(e.problem.contains("Authorization header"), "{}", e.problem);
    assert_eq!(env_config(&[("PGREPL_API_TOKEN", "")]).unwrap().api_token, None, "empty counts as not set");
}

#[test]
fn tls_is_on_by_default_and_required_beyond_loopback() {
    let local = env_config(&[]).unwrap().tls;
    assert!(local.on && !local.require && local.given_ca.is_none());
    let hosts = env_config(&[("PGREPL_LISTEN", "10.0.0.5")]).unwrap().tls;
    assert!(hosts.on && hosts.require);
    let relaxed = env_config(&[("PGREPL_LISTEN", "10.0.0.5"), ("PGREPL_REQUIRE_TLS", "false")]).unwrap().tls;
    assert!(relaxed.on && !relaxed.require);
    let off = env_config(&[("PGREPL_LISTEN", "10.0.0.5"), ("PGREPL_TLS", "off")]).unwrap().tls;
    assert!(!off.on && !off.require, "with TLS off nothing is required by default");
    let err = env_config(&[("PGREPL_TLS", "off"), ("PGREPL_REQUIRE_TLS", "true")]).unwrap_err();
    assert!(err.to_string().starts_with("require_tls (PGREPL_REQUIRE_TLS): is true while tls.mode is off"), "{err}");
    let err = env_config(&[("PGREPL_TLS", "maybe")]).unwrap_err();
    assert_eq!(err.to_string(), "tls.mode (PGREPL_TLS): \"maybe\" is not allowed; use on or off");
}

#[test]
fn the_ca_in_the_store_goes_with_tls_on_and_no_other_ca() {
    assert!(env_config(&[("PGREPL_TLS_CA_IN_STORE", "true")]).unwrap().tls.ca_in_store);
    assert!(!env_config(&[]).unwrap().tls.ca_in_store, "off by default");
    let err = env_config(&[("PGREPL_TLS_CA_IN_STORE", "true"), ("PGREPL_TLS", "off")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tls.ca_in_store (PGREPL_TLS_CA_IN_STORE): is true while tls.mode is off: there is no CA to keep"
    );
    let ca = pgrepl_tls::Ca::generate("shop", std::time::SystemTime::now()).unwrap();
    let given =
        [("PGREPL_TLS_CA_IN_STORE", "true"), ("PGREPL_TLS_CA_CERT", &ca.cert_pem), ("PGREPL_TLS_CA_KEY", &ca.key_pem)];
    let err = env_config(&given).unwrap_err();
    assert!(err.to_string().contains("tls.ca_cert and tls.ca_key give the CA; give one or the other"), "{err}");
    let err = env_config(&[("PGREPL_TLS_CA_IN_STORE", "perhaps")]).unwrap_err();
    assert!(err.to_string().starts_with("tls.ca_in_store (PGREPL_TLS_CA_IN_STORE): "), "{err}");
}

#[test]
fn a_given_ca_is_a_ca_certificate_with_its_own_key_from_files() {
    let now = std::time::SystemTime::now();
    let ca = pgrepl_tls::Ca::generate("shop", now).unwrap();
    let other = pgrepl_tls::Ca::generate("shop", now).unwrap();
    let (cert, key, other_key) = (file_holding(&ca.cert_pem), file_holding(&ca.key_pem), file_holding(&other.key_pem));
    let path = |f: &tempfile::NamedTempFile| f.path().to_str().unwrap().to_string();
    let given = env_config(&[("PGREPL_TLS_CA_CERT_FILE", &path(&cert)), ("PGREPL_TLS_CA_KEY_FILE", &path(&key))])
        .unwrap()
        .tls
        .given_ca
        .unwrap();
    assert_eq!(given.cert_pem, ca.cert_pem);
    assert!(!format!("{given:?}").contains("PRIVATE"), "Debug hides the key");
    let err = env_config(&[("PGREPL_TLS_CA_CERT_FILE", &path(&cert)), ("PGREPL_TLS_CA_KEY_FILE", &path(&other_key))])
        .unwrap_err();
    assert!(
        err.to_string().starts_with("tls.ca_key (PGREPL_TLS_CA_KEY_FILE): is not the private key of tls.ca_cert"),
        "{err}"
    );
    let err = env_config(&[("PGREPL_TLS_CA_CERT_FILE", &path(&cert))]).unwrap_err();
    assert!(err.to_string().contains("give both or neither"), "{err}");
    let member = ca.issue("node-1", &[], now, pgrepl_tls::MEMBER_VALIDITY).unwrap();
    let err =
        env_config(&[("PGREPL_TLS_CA_CERT", &member.cert_pem), ("PGREPL_TLS_CA_KEY", &member.key_pem)]).unwrap_err();
    assert!(err.to_string().contains("is not a CA certificate"), "{err}");
}

#[test]
fn with_tls_on_parameters_may_not_set_the_servers_certificate() {
    let mut raw = RawConfig::default();
    raw.parameters.insert("ssl_cert_file".into(), toml::Value::String("/etc/my.crt".into()));
    let err = start(raw.clone(), &[]).unwrap_err();
    assert!(err.to_string().starts_with("parameters.ssl_cert_file: is set by pgrepl while tls.mode is on"), "{err}");
    assert!(start(raw, &[("PGREPL_TLS", "off")]).is_ok(), "with TLS off the user runs it");
    let mut raw = RawConfig::default();
    raw.parameters.insert("ssl_min_protocol_version".into(), toml::Value::String("TLSv1.3".into()));
    assert!(start(raw, &[]).is_ok(), "a stricter protocol is the user's to choose");
}

#[test]
fn given_certificate_files_come_all_three_or_none_as_absolute_paths() {
    let all = [
        ("PGREPL_TLS_CERT_FILE", "/etc/tls/tls.crt"),
        ("PGREPL_TLS_KEY_FILE", "/etc/tls/tls.key"),
        ("PGREPL_TLS_CA_FILE", "/etc/tls/ca.crt"),
    ];
    let files = env_config(&all).unwrap().tls.files.expect("given");
    assert_eq!(
        files,
        pgrepl_tls::TlsFiles {
            cert: "/etc/tls/tls.crt".into(),
            key: "/etc/tls/tls.key".into(),
            ca: "/etc/tls/ca.crt".into()
        }
    );
    assert_eq!(env_config(&[]).unwrap().tls.files, None);
    let e = env_config(&all[..1]).unwrap_err();
    assert_eq!(e.setting, "tls.key_file", "not given, so no variable to name");
    assert!(e.problem.contains("but tls.cert_file is") && e.problem.contains("all three or none"), "{e}");
    let e = env_config(&all[..2]).unwrap_err();
    assert_eq!(e.setting, "tls.ca_file");
    assert!(e.problem.contains("tls.cert_file and tls.key_file are"), "{e}");
    let e = env_config(&all[1..]).unwrap_err();
    assert_eq!(e.setting, "tls.cert_file");
    let e = env_config(&[all[0], all[1], ("PGREPL_TLS_CA_FILE", "ca.crt")]).unwrap_err();
    assert!(e.to_string().starts_with("tls.ca_file (PGREPL_TLS_CA_FILE): \"ca.crt\" is not an absolute path"), "{e}");
    let e = env_config(&[all[0], all[1], all[2], ("PGREPL_TLS", "off")]).unwrap_err();
    assert!(e.problem.contains("tls.mode is off"), "{e}");
    let ca = pgrepl_tls::Ca::generate("shop", std::time::SystemTime::now()).unwrap();
    let e =
        env_config(&[all[0], all[1], all[2], ("PGREPL_TLS_CA_CERT", &ca.cert_pem), ("PGREPL_TLS_CA_KEY", &ca.key_pem)])
            .unwrap_err();
    assert_eq!(e.setting, "tls.ca_cert (PGREPL_TLS_CA_CERT)");
    assert!(e.problem.contains("replaces the certificate issued from it"), "{e}");
    let empty = env_config(&[("PGREPL_TLS_CERT_FILE", ""), ("PGREPL_TLS_KEY_FILE", ""), ("PGREPL_TLS_CA_FILE", "")]);
    assert_eq!(empty.unwrap().tls.files, None, "empty variables count as not set");
}
