//! `pgrepl container [ARG]`: the container image's entrypoint. Reads the seeds' environment and
//! picks the mode: with `PGREPL_STORE=etcd://...`, `pgrepl node` (roles decided by the lease,
//! automatic failover, the router); otherwise a fixed-role member as the seeds run one:
//! seed 000's `run-postgresql-master` / `run-postgresql-slave` (data under
//! `/var/lib/pgsql/data`), or seed 002's role by `REPLICATE_FROM` (no argument; data under
//! `/var/lib/postgresql`). `check [--live]` answers the container's probes.

use crate::cli::NodeArgs;
use crate::config::raw::FromEnv;
use crate::config::{self, Config, RawConfig};
use anyhow::{bail, Context};
use pgrepl_agent::fixed::{AppRole, FixedMember, FixedPasswords, FixedSettings, FixedState};
use pgrepl_core::{FixedRole, Upstream};
use pgrepl_pg::sql::RoleKind;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;

/// Runtime files: the state the probes read, the password file, the server log, `PGDATA` for
/// shells (`docker exec`), all in the image's `/run/pgrepl` (group-0 writable).
const RUN_DIR: &str = "/run/pgrepl";
/// Where `psql` in the container finds the server (the image sets `PGHOST` to it). Made by
/// the server's start, so that whatever uid runs the container owns it (mode 0700).
const SOCKET_DIR: &str = "/run/pgrepl/socket";
/// The port PostgreSQL listens on in the seed modes, as in both seeds.
const PORT: u16 = 5432;
/// The port PostgreSQL listens on under `pgrepl node`: the router's endpoints take 5432 and 5433.
const NODE_PG_PORT: u16 = 5434;
/// The seeds' default for clients: any address, with a password (scram-sha-256).
const ANYWHERE: [&str; 2] = ["0.0.0.0/0", "::/0"];

/// The two seeds' ways of running the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seed {
    /// sclorg's OpenShift template: the role is the container's argument.
    OpenShift(Seed000Role),
    /// kartoza's image: no argument, the role by `REPLICATE_FROM`.
    Docker,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seed000Role {
    Master,
    Slave,
    Standalone,
}

impl Seed {
    /// Where the seed's template or compose sample mounts the data volume.
    fn mount(self) -> &'static Path {
        match self {
            Seed::OpenShift(_) => Path::new("/var/lib/pgsql/data"),
            Seed::Docker => Path::new("/var/lib/postgresql"),
        }
    }
}

const ARGUMENTS: &str = "run-postgresql-master, run-postgresql-slave, run-postgresql, router, check [--live], or none";

pub async fn run(args: Vec<String>, env: Vec<FromEnv>) -> anyhow::Result<()> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let seed = match words.as_slice() {
        ["check"] => return check(false, &env).await,
        ["check", "--live"] => return check(true, &env).await,
        ["router"] => return run_router(env).await,
        [] => Seed::Docker,
        ["run-postgresql-master"] => Seed::OpenShift(Seed000Role::Master),
        ["run-postgresql-slave"] => Seed::OpenShift(Seed000Role::Slave),
        ["run-postgresql"] => Seed::OpenShift(Seed000Role::Standalone),
        other => bail!("container argument {:?} is not allowed; use {ARGUMENTS}", other.join(" ")),
    };
    ensure_passwd_entry()?;
    // On etcd, `pgrepl node` takes the environment as it is (the seeds' defaults are not its).
    if on_etcd(&env) {
        return run_node(env).await;
    }
    let mut raw = RawConfig::default();
    seed_defaults(&mut raw, seed);
    config::apply_env(&mut raw, &env)?;
    if let Seed::Docker = seed {
        settle_docker_passwords(&mut raw)?;
    }
    let config = config::validate(&raw, &env)?;
    let settings = fixed_settings(seed, &raw, &config)?;
    // One server per data volume: a volume shared by two containers (a named volume under
    // `--scale`) would put two servers on one data directory.
    let lock = seed.mount().join("pgrepl.lock");
    let _lock = crate::agent_lock::acquire(&lock)
        .with_context(|| format!("the data volume at {} is in use by another container", seed.mount().display()))?;
    write_shell_env(&settings.data_dir)?;
    info!(role = ?settings.role, data_dir = %settings.data_dir.display(), "starting a fixed-role member");
    let member = FixedMember::new(settings)?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = async {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: stopping"),
            _ = int.recv() => info!("SIGINT: stopping"),
        }
    };
    member.run(shutdown).await
}

/// Whether the environment names an etcd store (`PGREPL_STORE=etcd://...` or `etcds://...`):
/// then the image runs `pgrepl node`.
fn on_etcd(env: &[FromEnv]) -> bool {
    env.iter().any(|e| {
        e.field == "store" && (e.value.trim().starts_with("etcd://") || e.value.trim().starts_with("etcds://"))
    })
}

/// What each seed assumes when a variable is not set (before the environment applies).
fn seed_defaults(raw: &mut RawConfig, seed: Seed) {
    raw.allow = Some(ANYWHERE.iter().map(|s| s.to_string()).collect());
    raw.parameters.insert("jit".into(), toml::Value::String("off".into()));
    if seed == Seed::Docker {
        raw.database.user = Some("docker".into());
        raw.database.name = Some("gis".into());
        raw.destroy_on_restart = Some(true);
    }
}

/// Seed 002 never required a password: a primary without `POSTGRES_PASS` gets a generated one,
/// kept (mode 0600) on its volume so it stays the same across restarts; the replication role's
/// password defaults to the user's, as the seed's replicas used the user's credentials.
fn settle_docker_passwords(raw: &mut RawConfig) -> anyhow::Result<()> {
    let d = &mut raw.database;
    if d.password.is_none() && raw.upstream_host.is_some() {
        // A replica creates no user: without the user's password it needs none of the user.
        d.user = None;
        d.name = None;
    }
    if d.password.is_none() && raw.upstream_host.is_none() {
        let path = &Seed::Docker.mount().join("pgrepl-password");
        d.password = Some(kept_password(path)?);
        info!(user = ?d.user, file = %path.display(), "POSTGRES_PASS is not set: the user's password was generated and is kept in the file named here (mode 0600)");
    }
    if d.replication_password.is_none() {
        d.replication_password = d.password.clone();
    }
    Ok(())
}

/// The password kept in `path`, made (32 random characters, mode 0600) if there is none.
fn kept_password(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    }
    let password = crate::commands::setup::generated_password();
    pgrepl_pg::write_atomic(path, password.as_bytes(), 0o600)?;
    Ok(password)
}

fn fixed_settings(seed: Seed, raw: &RawConfig, config: &Config) -> anyhow::Result<FixedSettings> {
    let bins = pgrepl_pg::Binaries::find(config.bin_dir.as_deref())?;
    let (data_dir, app_kind) = match seed {
        Seed::OpenShift(_) => (seed.mount().join("userdata"), RoleKind::Login),
        Seed::Docker => (seed.mount().join(format!("{}/main", bins.major())), RoleKind::Superuser),
    };
    if let Seed::OpenShift(_) = seed {
        // S1: the application triple, or the admin password, or both.
        if raw.database.user.is_none() && config.passwords.admin.is_none() {
            bail!(
                "the container needs either the application user, its password and its database \
                 (POSTGRESQL_USER, POSTGRESQL_PASSWORD, POSTGRESQL_DATABASE: names of at most 63 bytes) \
                 or the admin password (POSTGRESQL_ADMIN_PASSWORD), or both; none of them is set"
            );
        }
    }
    let Some(replication) = config.passwords.replication.clone() else {
        let key = "database.replication_password";
        let variables = config::settings::setting(key).map(|s| s.env.join(", ")).unwrap_or_default();
        bail!(
            "{key} ({variables}) is not set: the primary and its replicas must be given the same replication password"
        );
    };
    let replica_of = |host: String| FixedRole::Replica {
        upstream: Upstream { host, port: config.upstream_port },
        promote: config.promote,
    };
    let role = match (seed, config.upstream_host.clone()) {
        (Seed::OpenShift(Seed000Role::Master | Seed000Role::Standalone), _) => FixedRole::Primary,
        (Seed::OpenShift(Seed000Role::Slave), host) => replica_of(host.unwrap_or_else(|| "postgresql-master".into())),
        (Seed::Docker, Some(host)) => replica_of(host),
        (Seed::Docker, None) => FixedRole::Primary,
    };
    let run = Path::new(RUN_DIR);
    Ok(FixedSettings {
        role,
        name: host_name(),
        data_dir,
        socket_dir: PathBuf::from(SOCKET_DIR),
        log_file: run.join("postgresql.log"),
        passfile: run.join("pgpass"),
        state_file: run.join("state.json"),
        bin_dir: Some(bins.dir().to_path_buf()),
        listen: "*".into(),
        port: PORT,
        admin_user: config::ADMIN_USER.into(),
        replication_user: config.names.replication_user.clone(),
        // A replica knows the application user only when given its password (seed 000's
        // slaves are; seed 002's need not be): a promoted replica then resets it too.
        app: config.names.app.as_ref().filter(|_| config.passwords.user.is_some()).map(|a| AppRole {
            user: a.user.clone(),
            database: a.database.clone(),
            kind: app_kind,
        }),
        passwords: FixedPasswords {
            user: config.passwords.user.clone(),
            admin: config.passwords.admin.clone(),
            replication,
        },
        allow: config.allow.clone(),
        parameters: config.parameters.clone(),
        destroy_on_restart: config.destroy_on_restart,
        loop_wait: config.loop_wait,
        stall_timeout: Duration::from_secs(30),
    })
}

/// `pgrepl node` in the container: the member's name from `PGREPL_MEMBER` (or the host name,
/// when it is a valid member name), its address the container's own, PostgreSQL on 5434 and
/// the endpoints on 5432 (read-write) and 5433 (read-only).
async fn run_node(mut env: Vec<FromEnv>) -> anyhow::Result<()> {
    // Listening on the container's own address (the members publish it as theirs, and the
    // router reaches them there), open to clients from anywhere with a password, as in the
    // seeds; unless the environment says otherwise.
    let own = first_address().map(|ip| ip.to_string()).unwrap_or_else(|| "0.0.0.0".into());
    let anywhere = ANYWHERE.join(",");
    for (field, value) in [("listen", own.as_str()), ("allow", anywhere.as_str())] {
        if !env.iter().any(|e| e.field == field) {
            env.push(FromEnv { variable: "the image's default".into(), field, value: value.into() });
        }
    }
    let member = std::env::var("PGREPL_MEMBER").unwrap_or_else(|_| host_name());
    if pgrepl_core::MemberName::new(member.as_str()).is_err() {
        bail!(
            "PGREPL_MEMBER: {member:?} is not allowed as this member's name; give 1 to 40 lowercase letters, digits \
             or '-', starting with a letter (with PGREPL_STORE set, the image runs `pgrepl node`)"
        );
    }
    let host = match std::env::var("PGREPL_HOST") {
        Ok(text) => Some(text.parse().map_err(|_| anyhow::anyhow!("PGREPL_HOST: {text:?} is not an IP address"))?),
        Err(_) => None,
    };
    let dir = std::env::var("PGREPL_DIR").unwrap_or_else(|_| "/var/lib/pgsql/data/pgrepl".into());
    // `psql` and `pg_ctl` in a shell of the container (`docker exec c bash -c psql`) find this
    // member's server.
    let layout = crate::layout::Layout::new(Path::new(&dir));
    let name = pgrepl_core::MemberName::new(member.as_str())?;
    let (data, socket) = (layout.data(&name).display().to_string(), layout.socket_dir(&name).display().to_string());
    write_shell_vars(&[("PGDATA", &data), ("PGHOST", &socket), ("PGPORT", &NODE_PG_PORT.to_string())])?;
    let args = NodeArgs { member, host, pg_port: NODE_PG_PORT, router: true };
    crate::commands::node::run(Path::new(&dir), args, env).await
}

/// `pgrepl container router`: only the cluster's endpoints, read-write on 5432 and read-only
/// on 5433 at every address (`PGREPL_PORT`, `PGREPL_RO_PORT`, `PGREPL_LISTEN` say otherwise),
/// following the store (`PGREPL_STORE`, `PGREPL_CLUSTER`); no member, no data. Its ports are
/// shared with the other routers of the cluster on the same network (`SO_REUSEPORT`): run two
/// with the host's network and the endpoints stay up at the host's ports while either is
/// down (the HA compose sample does).
async fn run_router(mut env: Vec<FromEnv>) -> anyhow::Result<()> {
    if !env.iter().any(|e| e.field == "listen") {
        env.push(FromEnv { variable: "the image's default".into(), field: "listen", value: "0.0.0.0".into() });
    }
    let mut raw = RawConfig::default();
    config::apply_env(&mut raw, &env)?;
    let config = config::validate(&raw, &env)?;
    if config.store == config::StoreConfig::File {
        bail!("PGREPL_STORE is not set: the image's router mode follows a cluster on etcd (etcd://HOST:PORT,...)");
    }
    let dir = Path::new(RUN_DIR).join("router");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let layout = crate::layout::Layout::new(&dir);
    let splicer = crate::commands::router::load_splicer(config.router_splice)?;
    let store = crate::cluster::open_store(&layout, &config).await?;
    let cluster = crate::cluster::Cluster { layout, config, store };
    info!(listen = %cluster.config.listen, port = cluster.config.port, ro_port = cluster.config.ro_port, "serving the endpoints, sharing their ports with the cluster's other routers here");
    crate::commands::router::serve_until_stopped(&cluster, splicer, crate::commands::router::Ports::Shared).await
}

/// The container's own address: its first interface address that is not a loopback one
/// (IPv4 first).
fn first_address() -> Option<std::net::IpAddr> {
    let mut addresses: Vec<_> = pgrepl_agent::fixed::own_addresses()
        .into_iter()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .collect();
    addresses.sort_by_key(|ip| ip.is_ipv6());
    addresses.into_iter().next()
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "pgrepl".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// `export PGDATA=...` for shells in the container (`docker exec`): the image's `BASH_ENV`
/// and `/etc/profile.d` read it, since each seed mode keeps its data under another mount.
fn write_shell_env(data_dir: &Path) -> anyhow::Result<()> {
    write_shell_vars(&[("PGDATA", &data_dir.display().to_string())])
}

/// The variables shells in the container (`docker exec c bash -c ...`) read from `/run/pgrepl/env`.
fn write_shell_vars(vars: &[(&str, &str)]) -> anyhow::Result<()> {
    let text: String = vars.iter().map(|(k, v)| format!("export {k}='{v}'\n")).collect();
    pgrepl_pg::write_atomic(&Path::new(RUN_DIR).join("env"), text.as_bytes(), 0o644)?;
    Ok(())
}

/// Under OpenShift's restricted policy the container runs as an arbitrary uid with group 0,
/// which `/etc/passwd` does not know; `initdb` needs a name for it. The image leaves
/// `/etc/passwd` group-writable for this one line.
fn ensure_passwd_entry() -> anyhow::Result<()> {
    // SAFETY: getuid/getgid cannot fail; getpwuid returns a pointer into static storage or null.
    let (uid, gid, known) = unsafe {
        let uid = libc::getuid();
        (uid, libc::getgid(), !libc::getpwuid(uid).is_null())
    };
    if known {
        return Ok(());
    }
    let line = format!("pgrepl:x:{uid}:{gid}:pgrepl container user:/var/lib/pgsql:/bin/bash\n");
    use std::io::Write;
    let mut passwd = std::fs::OpenOptions::new().append(true).open("/etc/passwd").with_context(|| {
        format!("uid {uid} has no entry in /etc/passwd, and /etc/passwd is not writable to add one")
    })?;
    passwd.write_all(line.as_bytes()).context("add this uid to /etc/passwd")?;
    info!(uid, gid, "added a passwd entry for this uid");
    Ok(())
}

/// The probes: readiness (`check`) passes when the member has nothing left to do and its
/// server answers over the socket; liveness (`check --live`) while the member's process runs.
/// A member on etcd answers them with its HTTP API (`check_api`).
async fn check(live: bool, env: &[FromEnv]) -> anyhow::Result<()> {
    let given = |field: &str| env.iter().find(|e| e.field == field).map(|e| e.value.trim().to_string());
    if on_etcd(env) {
        return check_api(live, given("api_listen"), given("api_port")).await;
    }
    let path = Path::new(RUN_DIR).join("state.json");
    let text = std::fs::read(&path).with_context(|| format!("read {} (has the member started?)", path.display()))?;
    let state: FixedState = serde_json::from_slice(&text).with_context(|| format!("parse {}", path.display()))?;
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(state.pid as libc::pid_t, 0) } == 0;
    if !alive {
        bail!("the member's process ({}) is not running", state.pid);
    }
    if live {
        return Ok(());
    }
    if !state.ready {
        bail!("not ready: {}", state.decision);
    }
    let mut pg = tokio_postgres::Config::new();
    pg.host_path(SOCKET_DIR).port(PORT).user(config::ADMIN_USER).dbname("postgres");
    pg.connect_timeout(Duration::from_secs(2));
    let (client, connection) = pg.connect(tokio_postgres::NoTls).await.context("connect to postgres")?;
    tokio::spawn(connection);
    client.simple_query("SELECT 1").await.context("query postgres")?;
    Ok(())
}

/// The probes of a member on etcd (`pgrepl node`): its HTTP API's `/readiness` (running, and a
/// replica streaming and caught up) or `/liveness` (its loop beats), at the API's address
/// (`PGREPL_API_LISTEN`, else the container's own) and port (`PGREPL_API_PORT`, else 8008).
async fn check_api(live: bool, listen: Option<String>, port: Option<String>) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port: u16 = match port {
        Some(text) => text.parse().map_err(|_| anyhow::anyhow!("PGREPL_API_PORT: {text:?} is not a port"))?,
        None => crate::commands::node::DEFAULT_API_PORT,
    };
    let ip = match listen {
        Some(text) => text.parse().map_err(|_| anyhow::anyhow!("PGREPL_API_LISTEN: {text:?} is not an IP address"))?,
        None => first_address().unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
    };
    let ip = if ip.is_unspecified() { std::net::Ipv4Addr::LOCALHOST.into() } else { ip };
    let path = if live { "/liveness" } else { "/readiness" };
    let asked = async {
        let mut stream = tokio::net::TcpStream::connect((ip, port)).await?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
    };
    let answer = tokio::time::timeout(Duration::from_secs(3), asked)
        .await
        .map_err(|_| anyhow::anyhow!("the member's API at {ip}:{port} did not answer {path} within 3 s"))?
        .with_context(|| format!("ask the member's API at {ip}:{port} for {path}"))?;
    let status = answer.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b.trim());
        bail!("{path} answered {status}: {body}");
    }
    Ok(())
}
