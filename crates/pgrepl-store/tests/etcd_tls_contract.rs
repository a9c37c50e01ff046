//! The store contract against a real etcd that lets in only who belongs: one over TLS with
//! `--client-cert-auth`, one with etcd's user/password authentication. And what a client that
//! does not belong is told: no client certificate, a CA that did not sign etcd's certificate,
//! plain gRPC to a TLS etcd, no user, a wrong password. Each fails within the timeout, saying
//! what to change: `Refused` where etcd or TLS said so, else `Unavailable` with the likely cause.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgrepl_store::contract::Contract;
use pgrepl_store::testing::{Etcd, Mode};
use pgrepl_store::{Condition, EtcdAccess, EtcdStore, EtcdTls, EtcdUser, Store, StoreError};

const TIMEOUT: Duration = Duration::from_secs(2);
const PREFIX: &str = "/pgrepl/test/";

/// The whole contract on two separate clients that get in.
async fn run_contract(etcd: &Etcd) {
    let a = etcd.connect(PREFIX, TIMEOUT).await;
    let b = etcd.connect(PREFIX, TIMEOUT).await;
    Contract::new(Arc::new(a), Arc::new(b)).ttl(Duration::from_secs(2)).run_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_holds_over_tls_with_a_client_certificate() {
    let etcd = Etcd::start_in(Mode::TlsClientCert).await;
    assert!(etcd.endpoint().starts_with("https://"));
    run_contract(&etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_holds_with_a_user_and_password() {
    let etcd = Etcd::start_in(Mode::Password).await;
    run_contract(&etcd).await;
}

/// The error of a snapshot through `access`, which must fail within the timeout, and whether it
/// is `Refused` (else `Unavailable`).
async fn refusal(endpoint: String, access: EtcdAccess) -> (String, bool) {
    let store = EtcdStore::connect_with(&[endpoint], PREFIX, TIMEOUT, access).await.expect("connect is lazy");
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), store.snapshot()).await.expect("snapshot hung");
    assert!(started.elapsed() < TIMEOUT + Duration::from_millis(500), "took {:?} to fail", started.elapsed());
    match result {
        Err(StoreError::Refused(message)) => (message, true),
        Err(StoreError::Unavailable(message)) => (message, false),
        other => panic!("a client that does not belong got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_etcd_refuses_a_client_without_certificate_or_with_the_wrong_ca_and_says_so() {
    let etcd = Etcd::start_in(Mode::TlsClientCert).await;
    let given = etcd.access().tls.expect("TLS mode gives a CA");

    let without_certificate =
        EtcdAccess { tls: Some(EtcdTls { ca_pem: given.ca_pem.clone(), identity: None }), ..EtcdAccess::default() };
    // TLS 1.3: etcd's alert may come (Refused), or just the closed connection (Unavailable).
    let (message, _) = refusal(etcd.endpoint(), without_certificate).await;
    assert!(
        message.contains("--client-cert-auth") && message.contains("set a client certificate and key"),
        "{message}"
    );

    let other_ca = pgrepl_tls::Ca::generate("another", std::time::SystemTime::now()).expect("generate a CA");
    let wrong_ca = EtcdAccess {
        tls: Some(EtcdTls { ca_pem: other_ca.cert_pem.into_bytes(), identity: given.identity.clone() }),
        ..EtcdAccess::default()
    };
    let (message, refused) = refusal(etcd.endpoint(), wrong_ca).await;
    assert!(refused, "{message}");
    assert!(message.contains("etcd's server certificate is not one the CA vouches for"), "{message}");

    let (plain, _) = refusal(format!("http://{}", etcd.address()), EtcdAccess::default()).await;
    assert!(plain.contains("an etcd serving TLS does that to plain gRPC: if it does, set the CA"), "{plain}");

    // The same settings with the certificate get in.
    let store = etcd.connect(PREFIX, TIMEOUT).await;
    store.put("k", b"v", Condition::Absent, None).await.expect("put with the client certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_with_authentication_refuses_no_user_and_a_wrong_password_and_says_so() {
    let etcd = Etcd::start_in(Mode::Password).await;
    let (message, refused) = refusal(etcd.endpoint(), EtcdAccess::default()).await;
    assert!(refused, "{message}");
    assert!(message.contains("wants a user: set a user and password"), "{message}");

    let wrong = EtcdAccess {
        user: Some(EtcdUser { name: "pgrepl".into(), password: "not-the-password".into() }),
        ..EtcdAccess::default()
    };
    let (message, refused) = refusal(etcd.endpoint(), wrong).await;
    assert!(refused, "{message}");
    assert!(message.contains("etcd refused user \"pgrepl\" with this password"), "{message}");
    assert!(!message.contains("not-the-password"), "the password shows in {message}");
}

/// etcd forgets its tokens when it restarts: the same client logs in again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_a_user_logs_in_again_after_etcd_restarts() {
    let mut etcd = Etcd::start_in(Mode::Password).await;
    let store = etcd.connect(PREFIX, TIMEOUT).await;
    let written = store.put("kept", b"v", Condition::Absent, None).await.expect("put");
    etcd.stop();
    etcd.restart().await;
    let started = Instant::now();
    loop {
        match store.put("kept", b"w", Condition::Revision(written), None).await {
            Ok(_) => break,
            Err(e) => {
                assert!(started.elapsed() < Duration::from_secs(10), "the client did not get back in: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let snap = store.snapshot().await.expect("snapshot");
    assert_eq!(snap.get("kept").map(|e| e.value.as_slice()), Some(&b"w"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_holds_over_tls_with_a_client_certificate_and_a_user() {
    let etcd = Etcd::start_in(Mode::TlsClientCertAndPassword).await;
    run_contract(&etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_given_for_an_etcd_without_authentication_is_refused_and_said_so() {
    let etcd = Etcd::start().await;
    let user =
        EtcdAccess { user: Some(EtcdUser { name: "pgrepl".into(), password: "pw".into() }), ..EtcdAccess::default() };
    let (message, refused) = refusal(etcd.endpoint(), user).await;
    assert!(refused, "{message}");
    assert!(message.contains("etcd has authentication off, yet a user is given"), "{message}");
}
