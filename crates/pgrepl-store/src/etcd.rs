//! The etcd store: the `Store` semantics over an etcd v3 cluster, for members on several hosts.
//!
//! Every key lives under one prefix (say `/pgrepl/<cluster>/`, ending in `/` so that one
//! cluster's prefix is never the start of another's); `snapshot` returns keys with it stripped.
//! How the semantics map onto etcd:
//! - The store revision is etcd's revision. It counts writes to the whole etcd keyspace, so
//!   writes outside the prefix raise it too (the trait only promises that it increases).
//!   An entry's revision is the key's `mod_revision`.
//! - A condition is the compare of the one transaction that does the write: `Absent` is
//!   `create_revision == 0`, `Revision(r)` is `mod_revision == r`.
//! - A TTL is a lease granted for that one write and attached to the key (rounded up to whole
//!   seconds: see [`lease_seconds`]). Every lease this module grants holds exactly one key, and
//!   a put revokes the lease the key had before, so keys under the prefix must be written only
//!   through this module. Expiry is a delete in etcd: it raises the revision and wakes
//!   `wait_change`, which the trait allows. etcd gives every lease its full TTL again when it
//!   elects a leader, as it does when it starts: after etcd was down, a TTL key written before
//!   lives up to its TTL beyond the outage. Longer, never shorter (the safe direction for a
//!   lease), but readers see, say, member statuses from before the outage until they are
//!   rewritten.
//!
//! Every call is bounded by the timeout given to [`EtcdStore::connect`]; an etcd that does not
//! answer within it, or any error from etcd, is `StoreError::Unavailable`, never a hang (an
//! agent fences its primary on store errors, so a hang would be worse than an error). Calls
//! ask for a leader (`require_leader`), so a member cut off from its cluster fails them instead
//! of serving stale data. This module must not cache anything read from etcd: etcd is the truth.
//!
//! With several endpoints, calls go to one of them until a call there fails, then to the next
//! (as etcd's own Go client does). etcd-client's balanced channel would instead spread calls
//! over every endpoint, and one that is cut off (its packets dropped, so its connection is not
//! seen to fail) would then time out a share of all calls for as long as the cut lasts. A read
//! that fails for want of etcd is tried again on each other endpoint, each try bounded by the
//! timeout; a write is not (it may have landed), so its caller sees the error.
//!
//! [`EtcdAccess`] says how to reach etcd beyond its addresses: TLS (the server verified against
//! a given CA, optionally with a client certificate for etcd's `--client-cert-auth`) and a user
//! and password for etcd's own authentication. The password is sent only in etcd's
//! `Authenticate` call, made on an endpoint's first use (not at `connect`, so a store can be
//! opened while etcd is down) and again whenever etcd refuses the token it gave (it forgets
//! its tokens when it restarts, and they expire: 5 minutes by default). Failures that a person
//! must fix (a CA that did not sign etcd's certificate, a missing client certificate, a refused
//! password) are told apart from an etcd that is merely down, in the words of
//! [`AccessLabels`], so the message names what to change.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity, PutOptions,
    ResponseHeader, TlsOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions,
};
use tokio::task::JoinSet;

use crate::{Condition, Entry, Revision, Snapshot, Store, StoreError};

/// How to reach etcd beyond its addresses. The default: plain gRPC, no user.
#[derive(Clone, Debug, Default)]
pub struct EtcdAccess {
    /// TLS: every endpoint is reached over `https`.
    pub tls: Option<EtcdTls>,
    /// etcd's own authentication (`etcdctl auth enable`).
    pub user: Option<EtcdUser>,
    /// What the caller calls each of these, for error messages.
    pub labels: AccessLabels,
}

/// TLS to etcd, in PEM.
#[derive(Clone)]
pub struct EtcdTls {
    /// The CA etcd's server certificate must be signed by (system roots are not used).
    pub ca_pem: Vec<u8>,
    /// A client certificate and its key, for an etcd started with `--client-cert-auth`.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdTls").field("identity", &self.identity.as_ref().map(|_| "<given>")).finish_non_exhaustive()
    }
}

/// An etcd user and its password. The password never shows in `Debug`.
#[derive(Clone)]
pub struct EtcdUser {
    pub name: String,
    pub password: String,
}

impl fmt::Debug for EtcdUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdUser").field("name", &self.name).field("password", &"<secret>").finish()
    }
}

/// The names the caller gives the parts of an [`EtcdAccess`] (its configuration settings, say),
/// so that an error tells what to change.
#[derive(Clone, Debug)]
pub struct AccessLabels {
    pub ca: &'static str,
    pub identity: &'static str,
    pub user: &'static str,
}

impl Default for AccessLabels {
    fn default() -> AccessLabels {
        AccessLabels { ca: "the CA", identity: "a client certificate and key", user: "a user and password" }
    }
}

/// Why etcd did not serve a call, when a person must act.
enum Refusal {
    /// etcd or TLS said so: `StoreError::Refused`.
    Certain(String),
    /// What the failure looks like, though an etcd that is merely down may look the same:
    /// `StoreError::Unavailable`, with the hint.
    Likely(String),
}

/// One endpoint's client, and whether it has logged in (when there is a user).
struct Endpoint {
    client: Client,
    logged_in: std::sync::atomic::AtomicBool,
}

/// A store in etcd under one key prefix. Cheap to clone (clones share the connection); any
/// number of handles, in any number of processes and hosts, may share the prefix.
#[derive(Clone)]
pub struct EtcdStore {
    /// One client per endpoint, in the order given.
    clients: Arc<[Endpoint]>,
    /// The index in `clients` that calls go to now.
    current: Arc<AtomicUsize>,
    prefix: String,
    timeout: Duration,
    /// The endpoints, comma-separated, for error messages.
    endpoints: String,
    user: Option<EtcdUser>,
    /// Whether TLS is on, and with a client certificate: for error messages.
    tls: bool,
    identity: bool,
    labels: AccessLabels,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// A store on the etcd cluster at `endpoints` (`host:port` or `http://host:port`), with
    /// every key under `prefix`; each later call gives up after `timeout`. Does not wait for
    /// etcd to answer (connections are made on first use), so an agent can start while etcd is
    /// down: an unreachable etcd shows as `Unavailable` from each call instead. Fails only on
    /// arguments it cannot use (no endpoint, an endpoint that is not a URL).
    pub async fn connect(endpoints: &[String], prefix: &str, timeout: Duration) -> Result<EtcdStore, StoreError> {
        EtcdStore::connect_with(endpoints, prefix, timeout, EtcdAccess::default()).await
    }

    /// [`EtcdStore::connect`] with TLS and a user as `access` says. With TLS, an endpoint
    /// written `host:port` is reached over `https`; one written `http://` is refused. Does not
    /// log in yet (see the module's documentation), so a wrong password shows on first use.
    pub async fn connect_with(
        endpoints: &[String],
        prefix: &str,
        timeout: Duration,
        access: EtcdAccess,
    ) -> Result<EtcdStore, StoreError> {
        let joined = endpoints.join(",");
        if endpoints.is_empty() {
            return Err(StoreError::Unavailable("connect to etcd: no endpoints given".to_owned()));
        }
        let tls = access.tls.as_ref().map(|tls| {
            let options = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
            match &tls.identity {
                Some((cert, key)) => options.identity(Identity::from_pem(cert, key)),
                None => options,
            }
        });
        let mut clients = Vec::new();
        for endpoint in endpoints {
            let mut options = ConnectOptions::new()
                .with_connect_timeout(timeout)
                .with_require_leader(true)
                .with_auto_token_refresh(access.user.is_some());
            if let Some(tls) = &tls {
                if endpoint.starts_with("http://") {
                    return Err(StoreError::Unavailable(format!(
                        "connect to etcd at {endpoint}: TLS is on, so the endpoint cannot be http://"
                    )));
                }
                options = options.with_tls(tls.clone());
            }
            let client = match tokio::time::timeout(timeout, Client::connect([endpoint], Some(options))).await {
                Ok(Ok(client)) => client,
                Ok(Err(e)) => return Err(StoreError::Unavailable(format!("connect to etcd at {endpoint}: {e}"))),
                Err(_elapsed) => {
                    return Err(StoreError::Unavailable(format!(
                        "connect to etcd at {endpoint}: no answer within {timeout:?}"
                    )))
                }
            };
            clients.push(Endpoint { client, logged_in: false.into() });
        }
        Ok(EtcdStore {
            clients: clients.into(),
            current: Arc::new(AtomicUsize::new(0)),
            prefix: prefix.to_owned(),
            timeout,
            endpoints: joined,
            tls: access.tls.is_some(),
            identity: access.tls.as_ref().is_some_and(|tls| tls.identity.is_some()),
            user: access.user,
            labels: access.labels,
        })
    }

    /// The prefix every key is stored under.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Run `op` (one call's talk with etcd, through the client it is given) within the store
    /// timeout. When it fails for want of etcd, later calls go to the next endpoint.
    async fn within<T, F, Fut>(&self, doing: &str, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let used = self.current.load(Ordering::Relaxed) % self.clients.len();
        let call = async {
            self.log_in(&self.clients[used], doing).await?;
            op(self.clients[used].client.clone()).await
        };
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_elapsed) => Err(StoreError::Unavailable(format!(
                "{doing}: etcd at {} did not answer within {:?}",
                self.endpoints, self.timeout
            ))),
        };
        if matches!(result, Err(StoreError::Unavailable(_))) {
            // Only from the endpoint this call used: concurrent failures move on once.
            let next = (used + 1) % self.clients.len();
            let _ = self.current.compare_exchange(used, next, Ordering::Relaxed, Ordering::Relaxed);
        }
        result
    }

    /// `within` for a read: when etcd is wanting, tried again on each other endpoint in turn.
    async fn read_within<T, F, Fut>(&self, doing: &str, op: F) -> Result<T, StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut tries = self.clients.len();
        loop {
            tries -= 1;
            match self.within(doing, &op).await {
                Err(StoreError::Unavailable(_)) if tries > 0 => continue,
                done => return done,
            }
        }
    }

    /// Logs in on `endpoint` once, when there is a user: etcd's `Authenticate`, whose token
    /// the client then sends with every call (and renews when etcd refuses it).
    async fn log_in(&self, endpoint: &Endpoint, doing: &str) -> Result<(), StoreError> {
        let Some(user) = &self.user else { return Ok(()) };
        if endpoint.logged_in.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut client = endpoint.client.clone();
        client
            .update_user(Some((user.name.clone(), user.password.clone())))
            .await
            .map_err(|e| self.failed(&format!("{doing}: log in to etcd as {:?}", user.name), e))?;
        endpoint.logged_in.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn failed(&self, doing: &str, e: etcd_client::Error) -> StoreError {
        let detail = error_chain(&e);
        match self.refusal(&detail) {
            Some(Refusal::Certain(why)) => {
                StoreError::Refused(format!("{doing}: etcd at {}: {why} ({detail})", self.endpoints))
            }
            Some(Refusal::Likely(why)) => {
                StoreError::Unavailable(format!("{doing}: etcd at {}: {why} ({detail})", self.endpoints))
            }
            None => StoreError::Unavailable(format!("{doing}: etcd at {}: {detail}", self.endpoints)),
        }
    }

    /// What a person must change, when `detail` (an error's whole chain) is etcd or TLS
    /// refusing this client rather than etcd being down.
    fn refusal(&self, detail: &str) -> Option<Refusal> {
        let l = &self.labels;
        let lower = detail.to_ascii_lowercase();
        let has = |text: &str| lower.contains(&text.to_ascii_lowercase());
        let any = |texts: &[&str]| texts.iter().any(|t| has(t));
        if any(&["UnknownIssuer", "BadSignature", "invalid peer certificate"]) {
            return Some(Refusal::Certain(format!(
                "etcd's server certificate is not one {} vouches for: give the CA that signed etcd's certificate",
                l.ca
            )));
        }
        if any(&["CertificateRequired", "certificate required", "BadCertificate", "bad certificate"]) {
            return Some(Refusal::Certain(match self.identity {
                true => format!(
                    "etcd refused this client's certificate: give {} issued by a CA etcd trusts (its --trusted-ca-file)",
                    l.identity
                ),
                false => format!("etcd wants a client certificate (--client-cert-auth): set {}", l.identity),
            }));
        }
        // With TLS 1.3 the client's handshake is over before the server checks its certificate:
        // an etcd refusing a client without one often just closes the connection.
        let closed = ["broken pipe", "connection closed", "operation was canceled", "connection reset"];
        if self.tls && !self.identity && any(&closed) {
            return Some(Refusal::Likely(format!(
                "etcd closed the TLS connection; an etcd started with --client-cert-auth does that to a client \
                 without a certificate: if it was, set {}",
                l.identity
            )));
        }
        if !self.tls && (any(&closed) || has("frame with invalid size")) {
            return Some(Refusal::Likely(format!(
                "etcd closed the connection; an etcd serving TLS does that to plain gRPC: if it does, set {} \
                 (or write the store etcds://)",
                l.ca
            )));
        }
        if any(&["authentication failed", "invalid user ID or password"]) {
            let name = self.user.as_ref().map_or("", |u| u.name.as_str());
            return Some(Refusal::Certain(format!("etcd refused user {name:?} with this password: check {}", l.user)));
        }
        if has("authentication is not enabled") {
            return Some(Refusal::Certain(format!(
                "etcd has authentication off, yet a user is given: turn it on (etcdctl auth enable) or unset {}",
                l.user
            )));
        }
        if any(&["user name is empty", "user name not found"]) {
            return Some(Refusal::Certain(format!("etcd has authentication on and wants a user: set {}", l.user)));
        }
        if has("permission denied") {
            return Some(Refusal::Certain(format!(
                "etcd's user lacks permission: grant its role readwrite on the keys {}*",
                self.prefix
            )));
        }
        None
    }

    /// The time left on each lease, all asked concurrently: one request per lease, one round
    /// trip of latency however many there are. etcd answers in whole seconds, rounded down, so
    /// a value is at most 1 s short and never long: a leader reading its own lease renews early
    /// rather than late. A lease that is gone (expired, or revoked by a write after the range
    /// read) has zero left.
    async fn time_left(&self, client: &Client, leases: BTreeSet<i64>) -> Result<BTreeMap<i64, Duration>, StoreError> {
        let mut lookups = JoinSet::new();
        for lease in leases {
            let mut client = client.clone();
            lookups.spawn(async move { (lease, client.lease_time_to_live(lease, None).await) });
        }
        let mut left = BTreeMap::new();
        while let Some(joined) = lookups.join_next().await {
            let (lease, answer) = joined
                .map_err(|e| StoreError::Unavailable(format!("read the time left on a lease: lookup task: {e}")))?;
            let seconds = match answer {
                Ok(response) => u64::try_from(response.ttl()).unwrap_or(0),
                Err(e) if lease_not_found(&e) => 0,
                Err(e) => return Err(self.failed(&format!("read the time left on lease {lease:x}"), e)),
            };
            left.insert(lease, Duration::from_secs(seconds));
        }
        Ok(left)
    }

    /// Revoke `lease` without waiting, ignoring failures: used only for a lease no key is
    /// attached to any more, which etcd drops by itself when its TTL runs out anyway.
    fn revoke_in_background(&self, lease: i64) {
        if lease == 0 {
            return;
        }
        // Calls run on a tokio runtime (the etcd client needs one); without one, leave the lease.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let mut client = self.clients[self.current.load(Ordering::Relaxed) % self.clients.len()].client.clone();
        let timeout = self.timeout;
        runtime.spawn(async move {
            let _ = tokio::time::timeout(timeout, client.lease_revoke(lease)).await;
        });
    }

    /// The current store revision (a count-only read of one key).
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let doing = "read the etcd revision";
        self.read_within(doing, |mut client| async move {
            let response = client
                .get(self.prefix.as_bytes(), Some(GetOptions::new().with_count_only()))
                .await
                .map_err(|e| self.failed(doing, e))?;
            header_revision(response.header(), doing)
        })
        .await
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    /// One range read over the prefix (one revision), then one concurrent round of lease
    /// lookups for the keys that have a TTL.
    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let doing = format!("read {}", self.prefix);
        let doing = doing.as_str();
        self.read_within(doing, |mut client| async move {
            let mut response = client
                .get(self.prefix.as_bytes(), Some(GetOptions::new().with_prefix()))
                .await
                .map_err(|e| self.failed(doing, e))?;
            let revision = header_revision(response.header(), doing)?;
            let kvs = response.take_kvs();
            let left =
                self.time_left(&client, kvs.iter().map(|kv| kv.lease()).filter(|&lease| lease != 0).collect()).await?;
            let mut entries = BTreeMap::new();
            for kv in kvs {
                let (lease, mod_revision) = (kv.lease(), kv.mod_revision());
                let (key, value) = kv.into_key_value();
                // Keys this module did not write (not UTF-8) are not part of the store.
                let Some(key) =
                    key.strip_prefix(self.prefix.as_bytes()).and_then(|k| String::from_utf8(k.to_vec()).ok())
                else {
                    continue;
                };
                let expires_in = (lease != 0).then(|| left.get(&lease).copied().unwrap_or(Duration::ZERO));
                let entry = Entry { key: key.clone(), value, revision: revision_of(mod_revision), expires_in };
                entries.insert(key, entry);
            }
            Ok(Snapshot { revision, entries })
        })
        .await
    }

    /// One transaction: the condition's compare, then the put (with a new lease when there is a
    /// `ttl`, granted first). After it, the lease the key had before is revoked in the
    /// background; after a failed compare, the new one is. After an error the new lease is left
    /// to expire: the put may have happened, and revoking would delete the key early.
    async fn put(
        &self,
        key: &str,
        value: &[u8],
        cond: Condition,
        ttl: Option<Duration>,
    ) -> Result<Revision, StoreError> {
        let full = self.full_key(key);
        let Some(compares) = compares(&full, cond) else { return Err(conflict(key, cond)) };
        let doing = format!("write {full}");
        let doing = doing.as_str();
        self.within(doing, |mut client| async move {
            let lease = match ttl {
                None => 0,
                Some(ttl) => {
                    let granted = client
                        .lease_grant(lease_seconds(ttl), None)
                        .await
                        .map_err(|e| self.failed(&format!("{doing}: grant a lease"), e))?;
                    if !granted.error().is_empty() {
                        return Err(StoreError::Unavailable(format!("{doing}: grant a lease: {}", granted.error())));
                    }
                    granted.id()
                }
            };
            let put = TxnOp::put(full.as_bytes(), value, Some(PutOptions::new().with_lease(lease).with_prev_key()));
            let response =
                client.txn(Txn::new().when(compares).and_then([put])).await.map_err(|e| self.failed(doing, e))?;
            if !response.succeeded() {
                self.revoke_in_background(lease);
                return Err(conflict(key, cond));
            }
            let previous = previous_lease(&response);
            if previous != lease {
                self.revoke_in_background(previous);
            }
            header_revision(response.header(), doing)
        })
        .await
    }

    /// One transaction: the condition's compare, then the delete (of nothing, when the key is
    /// absent: etcd then leaves the revision as it is). The deleted key's lease is revoked in
    /// the background.
    async fn delete(&self, key: &str, cond: Condition) -> Result<Revision, StoreError> {
        let full = self.full_key(key);
        let Some(compares) = compares(&full, cond) else { return Err(conflict(key, cond)) };
        let doing = format!("delete {full}");
        let doing = doing.as_str();
        self.within(doing, |mut client| async move {
            let delete = TxnOp::delete(full.as_bytes(), Some(DeleteOptions::new().with_prev_key()));
            let response =
                client.txn(Txn::new().when(compares).and_then([delete])).await.map_err(|e| self.failed(doing, e))?;
            if !response.succeeded() {
                return Err(conflict(key, cond));
            }
            self.revoke_in_background(previous_lease(&response));
            header_revision(response.header(), doing)
        })
        .await
    }

    /// A watch on the prefix from revision `after + 1`, so writes already made since `after`
    /// answer at once. Returns the revision reported with the first event; at `timeout`, the
    /// current revision (one more read). Only writes under the prefix wake it. Starting the
    /// watch and the final read are each bounded by the store timeout (per endpoint tried), so
    /// an unreachable etcd is `Unavailable` promptly, whatever `timeout` is.
    async fn wait_change(&self, after: Revision, timeout: Duration) -> Result<Revision, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let doing = format!("watch {}", self.prefix);
        let start = i64::try_from(after.saturating_add(1)).unwrap_or(i64::MAX);
        let options = WatchOptions::new().with_prefix().with_start_revision(start);
        let watching = doing.as_str();
        let mut stream = self
            .read_within(watching, |mut client| {
                let options = options.clone();
                async move {
                    client.watch(self.prefix.as_bytes(), Some(options)).await.map_err(|e| self.failed(watching, e))
                }
            })
            .await?;
        loop {
            let message = match tokio::time::timeout_at(deadline, stream.message()).await {
                Err(_elapsed) => return self.current_revision().await,
                Ok(Ok(Some(message))) => message,
                Ok(Ok(None)) => return Err(StoreError::Unavailable(format!("{doing}: etcd ended the watch"))),
                Ok(Err(e)) => return Err(self.failed(&doing, e)),
            };
            if message.canceled() {
                // A start revision already compacted away: the store has certainly moved past
                // `after`, and the header has the current revision.
                if message.compact_revision() > 0 {
                    let current = header_revision(message.header(), &doing)?;
                    return Ok(current.max(revision_of(message.compact_revision())));
                }
                return Err(StoreError::Unavailable(format!(
                    "{doing}: etcd cancelled the watch: {}",
                    message.cancel_reason()
                )));
            }
            if let Some(last) = message.events().last() {
                let current = header_revision(message.header(), &doing)?;
                return Ok(current.max(last.kv().map_or(0, |kv| revision_of(kv.mod_revision()))));
            }
            // The watch's creation or a progress report: keep waiting.
        }
    }
}

/// The lease for a `ttl`, in whole seconds as etcd grants them: rounded UP, at least 1 s.
///
/// Never shorter than asked, because shorter is the unsafe direction: callers count on a key
/// outliving `ttl` from the moment they called `put` (the lease is granted before the write, so
/// its clock starts no earlier than that). A leader fences itself within `ttl` of its last
/// renewal while the others wait for the leader key to vanish; a lease cut short could let a
/// member take the lease while the old leader still runs as primary. Longer only delays a
/// failover, by under a second here (and etcd itself may grant more: its minimum lease TTL,
/// 2 s with the default election timeout, and its expiry check every 500 ms).
pub fn lease_seconds(ttl: Duration) -> i64 {
    let seconds = ttl.as_secs().saturating_add(u64::from(ttl.subsec_nanos() > 0)).max(1);
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

/// The compares for `cond` on `key`; `None` when it can never hold (no live key has revision
/// 0, while etcd reads the `mod_revision` of an absent key as 0).
fn compares(key: &str, cond: Condition) -> Option<Vec<Compare>> {
    match cond {
        Condition::Any => Some(Vec::new()),
        Condition::Absent => Some(vec![Compare::create_revision(key, CompareOp::Equal, 0)]),
        Condition::Revision(0) => None,
        Condition::Revision(r) => Some(vec![Compare::mod_revision(key, CompareOp::Equal, i64::try_from(r).ok()?)]),
    }
}

fn conflict(key: &str, cond: Condition) -> StoreError {
    StoreError::Conflict { key: key.to_owned(), expected: cond.to_string() }
}

/// The lease the key had before the transaction's one put or delete (0: none).
fn previous_lease(response: &TxnResponse) -> i64 {
    response
        .op_responses()
        .iter()
        .find_map(|op| match op {
            TxnOpResponse::Put(put) => put.prev_key().map(|kv| kv.lease()),
            TxnOpResponse::Delete(delete) => delete.prev_kvs().first().map(|kv| kv.lease()),
            _ => None,
        })
        .unwrap_or(0)
}

fn header_revision(header: Option<&ResponseHeader>, doing: &str) -> Result<Revision, StoreError> {
    header
        .map(|h| revision_of(h.revision()))
        .ok_or_else(|| StoreError::Unavailable(format!("{doing}: etcd answered without a response header")))
}

/// etcd revisions are positive `i64`s.
fn revision_of(revision: i64) -> Revision {
    u64::try_from(revision).unwrap_or(0)
}

/// An etcd client error with everything beneath it (TLS and connection failures sit in the
/// sources of a gRPC status or a transport error), as one line.
fn error_chain(e: &etcd_client::Error) -> String {
    let mut text = e.to_string();
    let mut source: Option<&(dyn std::error::Error + 'static)> = match e {
        etcd_client::Error::GRpcStatus(status) => std::error::Error::source(status),
        etcd_client::Error::TransportError(transport) => std::error::Error::source(transport),
        _ => None,
    };
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text.replace('\n', " ")
}

/// Whether etcd said the lease does not exist (expired or revoked): `ErrGRPCLeaseNotFound`.
fn lease_not_found(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(status) if status.message().contains("requested lease not found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_whole_seconds_never_shorter_than_the_ttl() {
        assert_eq!(lease_seconds(Duration::ZERO), 1);
        assert_eq!(lease_seconds(Duration::from_millis(300)), 1);
        assert_eq!(lease_seconds(Duration::from_secs(1)), 1);
        assert_eq!(lease_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(lease_seconds(Duration::from_secs(30)), 30);
        assert_eq!(lease_seconds(Duration::from_nanos(30_000_000_001)), 31);
        assert_eq!(lease_seconds(Duration::MAX), i64::MAX);
    }

    #[test]
    fn a_revision_condition_of_zero_never_holds() {
        assert!(compares("k", Condition::Revision(0)).is_none());
        assert!(compares("k", Condition::Revision(u64::MAX)).is_none());
        assert_eq!(compares("k", Condition::Any).map(|c| c.len()), Some(0));
        assert_eq!(compares("k", Condition::Revision(7)).map(|c| c.len()), Some(1));
    }
}
