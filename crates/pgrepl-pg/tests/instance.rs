//! End-to-end tests against real PostgreSQL binaries: a primary, a replica cloned from it,
//! promotion, and the old primary rewound into a replica of the new one. When run as root the
//! whole test process drops to the `postgres` OS user first, as PostgreSQL requires.

use pgrepl_core::{DataDir, Server, Slot, Timeline, Upstream};
use pgrepl_pg::sql::{self, RoleKind};
use pgrepl_pg::{write_passfile, Binaries, Conninfo, HbaRules, Instance, PassEntry, PgError, ServerConf, StopMode};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Once;
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;

const SUPERUSER: &str = "postgres";
const REPL_USER: &str = "replicator";
// Passwords with the characters that password files and SQL literals must escape.
const ADMIN_PASSWORD: &str = r"adm:in\pw";
const REPL_PASSWORD: &str = r"re:pl\pw'";
const APP_PASSWORD: &str = "app pw'";
const START: Duration = Duration::from_secs(30);

static DROP_ROOT: Once = Once::new();

/// Drops the whole test process to the `postgres` OS user (once) when running as root.
fn drop_root() {
    DROP_ROOT.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::new("pgrepl_pg=debug"))
            .try_init();
        pgrepl_pg::become_user("postgres").expect("switch the test process to OS user postgres");
    });
}

fn temp_root() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("pgrepl-pg-").tempdir_in("/tmp").expect("create a temporary directory")
}

/// Distinct free TCP ports on 127.0.0.1 (all listeners are held until every port is chosen).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("local address").port()).collect()
}

fn instance(bins: &Binaries, root: &Path, name: &str, port: u16) -> Instance {
    Instance {
        bins: bins.clone(),
        data_dir: root.join(name).join("data"),
        socket_dir: root.join(name).join("sock"),
        listen_address: "127.0.0.1".into(),
        port,
        log_file: root.join("log").join(format!("{name}.log")),
        name: name.into(),
    }
}

fn small_server() -> ServerConf {
    let mut conf = ServerConf::default();
    conf.parameters.insert("shared_buffers".into(), "16MB".into());
    conf.parameters.insert("max_connections".into(), "20".into());
    conf
}

fn replica_of(port: u16, member: &str, passfile: &Path) -> ServerConf {
    ServerConf {
        primary_conninfo: Some(conninfo(port, REPL_USER, member, passfile)),
        primary_slot_name: Some(member.replace('-', "_")),
        ..small_server()
    }
}

fn conninfo(port: u16, user: &str, application_name: &str, passfile: &Path) -> Conninfo {
    Conninfo {
        host: "127.0.0.1".into(),
        port,
        user: user.into(),
        dbname: "postgres".into(),
        application_name: application_name.into(),
        passfile: passfile.to_path_buf(),
        tls: pgrepl_pg::ClientTls::Prefer,
    }
}

fn hba() -> HbaRules {
    HbaRules {
        admin_user: SUPERUSER.into(),
        replication_user: REPL_USER.into(),
        members: vec!["127.0.0.1/32".into()],
        allow: vec!["127.0.0.1/32".into(), "::1/128".into()],
        require_tls: false,
    }
}

/// Stops every server it knows of when the test ends, passed or not.
struct StopOnDrop(Vec<Instance>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        for inst in &self.0 {
            let _ = std::process::Command::new(inst.bins.path("pg_ctl"))
                .args(["stop", "-m", "immediate", "-w", "-D"])
                .arg(&inst.data_dir)
                .output();
        }
    }
}

fn log_tail(inst: &Instance) -> String {
    let text = std::fs::read_to_string(&inst.log_file).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Polls `observe()` until `want` holds, failing the test with the last observation and the
/// server log after 20 seconds.
async fn wait_for(inst: &Instance, what: &str, want: impl Fn(&Server) -> bool) -> Server {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = inst.observe(SUPERUSER).await;
        if want(&seen) {
            return seen;
        }
        if Instant::now() > deadline {
            panic!("{} never became {what}; last seen {seen:?}; log:\n{}", inst.name, log_tail(inst));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn values(c: &tokio_postgres::Client) -> Vec<String> {
    c.query("SELECT v FROM t ORDER BY v", &[])
        .await
        .expect("read table t")
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

fn is_streaming_replica_of(port: u16, timeline: u32) -> impl Fn(&Server) -> bool {
    move |s| {
        matches!(s, Server::Replica { streaming: true, upstream: Some(Upstream { host, port: p }), timeline: t, .. }
            if host == "127.0.0.1" && *p == port && *t == Timeline(timeline))
    }
}

#[test]
fn binaries_not_found_names_the_path_and_how_to_install() {
    let err = Binaries::find(Some(Path::new("/nonexistent"))).expect_err("/nonexistent holds no postgres");
    assert!(matches!(err, PgError::BinariesNotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent"), "{msg}");
    assert!(msg.contains("apt-get install postgresql-15"), "{msg}");
}

#[test]
fn binaries_are_found_with_their_major_version() {
    let bins = Binaries::find(None).expect("find postgresql binaries");
    assert!(bins.major() >= 12, "major {}", bins.major());
    assert!(bins.path("pg_ctl").is_file());
    let again = Binaries::find(Some(bins.dir())).expect("find binaries in a configured dir");
    assert_eq!(again, bins);
}

#[tokio::test]
async fn data_directories_are_never_overwritten() {
    drop_root();
    let root = temp_root();
    let bins = Binaries::find(None).expect("find postgresql binaries");
    let inst = instance(&bins, root.path(), "node-9", 1);

    assert_eq!(inst.data_dir_state().expect("state of an absent dir"), DataDir::Missing);
    std::fs::create_dir_all(&inst.data_dir).expect("create data dir");
    assert_eq!(inst.data_dir_state().expect("state of an empty dir"), DataDir::Missing);

    std::fs::write(inst.data_dir.join("precious"), "keep me").expect("write a file");
    let err = inst.initdb(SUPERUSER).await.expect_err("initdb into a non-empty dir");
    assert!(matches!(&err, PgError::NotEmpty { path } if path == &inst.data_dir), "{err:?}");
    let from = conninfo(1, REPL_USER, "node-9", &root.path().join("pgpass"));
    let err = inst.basebackup(&from, "node_9").await.expect_err("clone into a non-empty dir");
    assert!(matches!(err, PgError::NotEmpty { .. }), "{err:?}");
    let err = inst.data_dir_state().expect_err("a dir without pg_control has no state");
    assert!(err.to_string().contains("pg_controldata"), "{err}");

    let aside = inst.move_aside("diverged").expect("move aside");
    assert!(aside.to_string_lossy().starts_with(&format!("{}.diverged-", inst.data_dir.display())), "{aside:?}");
    assert_eq!(std::fs::read_to_string(aside.join("precious")).expect("moved file"), "keep me");
    assert!(!inst.data_dir.exists());

    std::fs::create_dir_all(inst.data_dir.join("base")).expect("create data dir");
    // A stale pid file naming a live process that is not a postmaster of this directory.
    let stale = format!("{}\n{}\n", std::process::id(), inst.data_dir.display());
    std::fs::write(inst.data_dir.join("postmaster.pid"), stale).expect("write stale pid file");
    assert!(!inst.postmaster_running(), "a reused pid is not our postmaster");
    inst.remove_data().expect("remove data");
    assert!(!inst.data_dir.exists());
    inst.remove_data().expect("removing an absent data dir is fine");
    assert!(!inst.postmaster_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_replica_failover_and_rewind() {
    drop_root();
    let root = temp_root();
    let bins = Binaries::find(None).expect("find postgresql binaries");
    // PGREPL_TEST_KEEP=1 keeps the directory (data and logs) for a look after the test.
    let root_path = root.path().to_path_buf();
    let _keep = std::env::var_os("PGREPL_TEST_KEEP").map(|_| root_path.clone());
    let ports = free_ports(3);
    let (pa, pb, busy) = (ports[0], ports[1], ports[2]);
    let a = instance(&bins, root.path(), "node-1", pa);
    let b = instance(&bins, root.path(), "node-2", pb);
    let _stop = StopOnDrop(vec![a.clone(), b.clone()]);
    let passfile = root.path().join("pgpass");
    let mut entries = Vec::new();
    for port in [pa, pb] {
        let entry = |database: &str, user: &str, password: &str| PassEntry {
            host: "127.0.0.1".into(),
            port,
            database: database.into(),
            user: user.into(),
            password: password.into(),
        };
        entries.push(entry("replication", REPL_USER, REPL_PASSWORD));
        entries.push(entry("*", SUPERUSER, ADMIN_PASSWORD));
    }
    write_passfile(&passfile, &entries).expect("write passfile");

    // A primary.
    a.initdb(SUPERUSER).await.expect("initdb");
    let system_id = match a.data_dir_state().expect("state after initdb") {
        DataDir::Primary { system_id } => system_id,
        other => panic!("after initdb: {other:?}"),
    };
    a.write_conf(&small_server()).expect("write primary conf");
    a.write_conf(&small_server()).expect("write primary conf again");
    let main_conf = std::fs::read_to_string(a.data_dir.join("postgresql.conf")).expect("read postgresql.conf");
    assert_eq!(main_conf.matches("pgrepl.conf").count(), 1, "one include line");
    a.write_hba(&hba()).expect("write hba");
    a.start(START).await.unwrap_or_else(|e| panic!("start primary: {e:#}"));
    assert!(a.postmaster_running());
    a.start(START).await.expect("starting a running server is a no-op");
    let seen = wait_for(&a, "a primary", |s| matches!(s, Server::Primary { .. })).await;
    assert!(matches!(seen, Server::Primary { timeline: Timeline(1), .. }), "{seen:?}");

    // Roles, passwords, database, slot.
    let ca = a.connect(SUPERUSER, "postgres").await.expect("connect to primary");
    for _ in 0..2 {
        sql::ensure_role(&ca, "app", RoleKind::Login, APP_PASSWORD).await.expect("ensure app role");
        sql::ensure_role(&ca, REPL_USER, RoleKind::Replication, REPL_PASSWORD).await.expect("ensure replication role");
        sql::ensure_role(&ca, SUPERUSER, RoleKind::Superuser, ADMIN_PASSWORD).await.expect("ensure admin password");
        sql::ensure_database(&ca, "app", "app").await.expect("ensure database");
        sql::create_slot(&ca, "node_2").await.expect("create slot");
    }
    let stored: String = ca
        .query_one("SELECT rolpassword FROM pg_authid WHERE rolname = 'app'", &[])
        .await
        .expect("read stored password")
        .get(0);
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{stored}");
    let attrs = ca
        .query_one("SELECT rolreplication, rolcanlogin FROM pg_roles WHERE rolname = $1", &[&REPL_USER])
        .await
        .expect("read role attributes");
    assert!(attrs.get::<_, bool>(0) && attrs.get::<_, bool>(1));
    assert_eq!(sql::slots(&ca).await.expect("slots"), vec![Slot { name: "node_2".into(), active: false }]);

    // The app user logs in over TCP with its password, and not without it.
    let tcp = |password: &str| {
        let mut config = tokio_postgres::Config::new();
        config.host("127.0.0.1").port(pa).user("app").dbname("app").password(password);
        config
    };
    let (app, conn) = tcp(APP_PASSWORD).connect(tokio_postgres::NoTls).await.expect("app logs in with its password");
    tokio::spawn(conn);
    let owner: String = app
        .query_one("SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = 'app'", &[])
        .await
        .expect("read database owner")
        .get(0);
    assert_eq!(owner, "app");
    assert!(tcp("wrong").connect(tokio_postgres::NoTls).await.is_err(), "a wrong password must be refused");

    // A replica, cloned through its slot.
    b.basebackup(&conninfo(pa, REPL_USER, "node-2", &passfile), "node_2")
        .await
        .unwrap_or_else(|e| panic!("basebackup: {e:#}"));
    let mode = std::fs::metadata(&b.data_dir).expect("replica data dir").permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    b.write_conf(&replica_of(pa, "node-2", &passfile)).expect("write replica conf");
    b.write_hba(&hba()).expect("write replica hba");
    b.set_standby_signal(true).expect("standby signal");
    assert_eq!(b.data_dir_state().expect("replica state"), DataDir::Standby { system_id });
    b.start(START).await.unwrap_or_else(|e| panic!("start replica: {e:#}"));
    wait_for(&b, "a streaming replica of node-1", is_streaming_replica_of(pa, 1)).await;
    assert!(matches!(a.observe(SUPERUSER).await, Server::Primary { .. }));
    assert_eq!(b.replay_timeline(SUPERUSER).await.expect("replayed timeline of the replica"), Timeline(1));
    assert_eq!(a.timeline_history(Timeline(1)).expect("timeline 1 has no history"), vec![]);

    let rows = sql::replication_rows(&ca).await.expect("replication rows");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].application_name, "node-2");
    assert_eq!(rows[0].state, "streaming");
    assert_eq!(rows[0].client_addr.as_deref(), Some("127.0.0.1"));
    assert_eq!(sql::slots(&ca).await.expect("slots"), vec![Slot { name: "node_2".into(), active: true }]);
    // Asked last: its own replication connection shows in pg_stat_replication until its
    // walsender has exited.
    assert_eq!(a.replay_timeline(SUPERUSER).await.expect("timeline of the primary"), Timeline(1));

    // Writes reach the replica; the replica refuses writes.
    ca.batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('1 before')").await.expect("write on primary");
    let cb = b.connect(SUPERUSER, "postgres").await.expect("connect to replica");
    let deadline = Instant::now() + Duration::from_secs(10);
    while cb.query("SELECT 1 FROM t", &[]).await.map(|r| r.len()).unwrap_or(0) != 1 {
        assert!(Instant::now() < deadline, "the write never reached the replica");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = cb.execute("INSERT INTO t VALUES ('x')", &[]).await.expect_err("a replica must refuse writes");
    assert_eq!(err.code(), Some(&SqlState::READ_ONLY_SQL_TRANSACTION), "{err:?}");

    // Divergence: node-1 takes a write node-2 never sees, then crashes; node-2 is promoted.
    drop(cb);
    b.stop(StopMode::Fast, START).await.expect("stop replica");
    assert!(!b.postmaster_running());
    ca.batch_execute("INSERT INTO t VALUES ('2 lost')").await.expect("write on primary alone");
    drop((ca, app));
    a.stop(StopMode::Immediate, START).await.expect("crash primary");
    assert!(!a.postmaster_running());
    assert_eq!(a.observe(SUPERUSER).await, Server::Stopped);
    a.stop(StopMode::Fast, START).await.expect("stopping a stopped server is fine");

    b.start(START).await.unwrap_or_else(|e| panic!("restart replica: {e:#}"));
    wait_for(&b, "a replica", |s| matches!(s, Server::Replica { .. })).await;
    b.promote(START).await.unwrap_or_else(|e| panic!("promote: {e:#}"));
    let seen = wait_for(&b, "a primary", |s| matches!(s, Server::Primary { .. })).await;
    assert!(matches!(seen, Server::Primary { timeline: Timeline(2), .. }), "{seen:?}");
    let cb = b.connect(SUPERUSER, "postgres").await.expect("connect to new primary");
    cb.batch_execute("INSERT INTO t VALUES ('3 after')").await.expect("write on new primary");
    sql::checkpoint(&cb).await.expect("checkpoint after promotion");
    sql::create_slot(&cb, "node_1").await.expect("create slot for node-1");
    let history = b.timeline_history(Timeline(2)).expect("history of timeline 2");
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].timeline, Timeline(1));
    assert!(history[0].end > pgrepl_core::Lsn(0), "{history:?}");

    // The old primary is rewound (crash recovery included) and follows the new one.
    a.set_standby_signal(true).expect("standby signal before rewind");
    a.rewind(&conninfo(pb, SUPERUSER, "node-1", &passfile)).await.unwrap_or_else(|e| panic!("rewind: {e:#}"));
    a.write_conf(&replica_of(pb, "node-1", &passfile)).expect("write rewound conf");
    a.write_hba(&hba()).expect("write rewound hba");
    a.set_standby_signal(true).expect("standby signal");
    assert_eq!(a.data_dir_state().expect("rewound state"), DataDir::Standby { system_id });
    a.start(START).await.unwrap_or_else(|e| panic!("start rewound node: {e:#}"));
    wait_for(&a, "a streaming replica of node-2", is_streaming_replica_of(pb, 2)).await;
    let rows = sql::replication_rows(&cb).await.expect("replication rows on new primary");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].application_name.as_str(), rows[0].state.as_str()), ("node-1", "streaming"));
    let ca = a.connect(SUPERUSER, "postgres").await.expect("connect to rewound node");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = values(&ca).await;
        if seen == ["1 before", "3 after"] {
            break;
        }
        assert!(Instant::now() < deadline, "rewound node holds {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(a.replay_timeline(SUPERUSER).await.expect("replayed timeline after the rewind"), Timeline(2));

    // A busy port is named as such.
    drop(ca);
    a.stop(StopMode::Fast, START).await.expect("stop rewound node");
    let _holder = std::net::TcpListener::bind(("127.0.0.1", busy)).expect("hold a port");
    let a_busy = Instance { port: busy, ..a.clone() };
    a_busy.write_conf(&replica_of(pb, "node-1", &passfile)).expect("write conf with busy port");
    let err = a_busy.start(START).await.expect_err("start on a busy port");
    let msg = err.to_string();
    assert!(msg.contains(&format!("port {busy} on 127.0.0.1 is already in use")), "{msg}");
    assert!(msg.starts_with(&format!("start postgres in {}", a.data_dir.display())), "{msg}");
    assert!(!a.postmaster_running());

    drop(cb);
    b.stop(StopMode::Fast, START).await.expect("stop new primary");
    assert_eq!(b.observe(SUPERUSER).await, Server::Stopped);
    if let Some(kept) = _keep {
        std::mem::forget(root);
        eprintln!("kept {}", kept.display());
    }
}
