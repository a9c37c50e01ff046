//! The command line: clap definitions only. Each subcommand is carried out in `commands/`.

use clap::{Args, Parser, Subcommand};
use std::net::IpAddr;
use std::path::PathBuf;

/// pgrepl: a replicated PostgreSQL cluster (one primary, streaming replicas) from one command.
#[derive(Parser, Debug)]
#[command(name = "pgrepl", version, about)]
pub struct Cli {
    /// The cluster directory (config, secrets, store, one data directory and log per member).
    #[arg(long, global = true, env = "PGREPL_DIR", default_value = "pgrepl-cluster")]
    pub dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create (or restart) the cluster, wait until every replica streams, print how to connect.
    Up(UpArgs),
    /// Stop every member (data kept; --destroy removes the cluster directory).
    Down {
        /// Also delete the cluster directory with every member's data.
        #[arg(long)]
        destroy: bool,
    },
    /// One row per member: role, state, address, timeline, LSN, lag, last decision.
    Status {
        /// Print JSON (the format documented in the README).
        #[arg(long)]
        json: bool,
        /// Keep watching: a view redrawn in place with events as they happen (on a terminal),
        /// else one line per event; with --json one status object a line per change.
        #[arg(long)]
        watch: bool,
    },
    /// Add or remove replicas while the cluster serves.
    Scale {
        /// The number of replicas wanted (0 or more).
        #[arg(allow_negative_numbers = true)]
        replicas: i64,
        #[arg(long, default_value_t = 120)]
        wait: u64,
    },
    /// Change a password live; the new value is read from standard input.
    Passwd(PasswdArgs),
    /// Print a member's log (agent and PostgreSQL).
    Logs {
        member: String,
        /// Keep printing as the log grows.
        #[arg(short, long)]
        follow: bool,
    },
    /// Print the connection string of the read-write endpoint (--ro: the read-only one), password
    /// included, for scripts: psql "$(pgrepl url)".
    Url {
        /// The read-only endpoint's.
        #[arg(long)]
        ro: bool,
    },
    /// A psql shell on a member (default: the primary) as the admin user.
    Psql {
        /// The member; default the primary.
        member: Option<String>,
        /// Pick a streaming replica.
        #[arg(long, conflicts_with = "member")]
        ro: bool,
        /// Arguments passed to psql (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The read-write and read-only endpoints and where each routes now.
    Endpoints {
        /// Print only the primary's address.
        #[arg(long, conflicts_with = "ro")]
        rw: bool,
        /// Print only the addresses of the replicas serving reads, one a line.
        #[arg(long)]
        ro: bool,
    },
    /// Make MEMBER the primary (also when the primary is down); the others follow it.
    Promote {
        member: String,
        #[arg(long, default_value_t = 120)]
        wait: u64,
    },
    /// Planned change of primary with no committed transaction lost: the primary checkpoints,
    /// stops cleanly and hands the lease to a streaming replica (default: the least lagging).
    Switchover {
        /// The member to hand over to.
        #[arg(long)]
        to: Option<String>,
        #[arg(long, default_value_t = 120)]
        wait: u64,
    },
    /// Forced change of primary: MEMBER takes over even if it is not streaming or lags
    /// (writes it had not received are lost).
    Failover {
        /// The member to make the primary.
        #[arg(long)]
        to: String,
        #[arg(long, default_value_t = 120)]
        wait: u64,
    },
    /// Maintenance mode: no automatic failover, no restart of a stopped PostgreSQL, no fence
    /// (the leader keeps its lease); promote, switchover and failover still work.
    Pause {
        /// Seconds to wait for every agent to take it in.
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
    /// End maintenance mode: every agent decides again from what it observes now.
    Resume {
        /// Seconds to wait for every agent to take it in.
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
    /// Restart a member's PostgreSQL, or with --rolling every member one at a time (replicas
    /// first, then a switchover, then the old primary); --pending: only members with a
    /// parameter pending a restart.
    Restart {
        member: Option<String>,
        #[arg(long)]
        pending: bool,
        #[arg(long)]
        rolling: bool,
        /// Seconds to wait for each member to restart and serve again.
        #[arg(long, default_value_t = 120)]
        wait: u64,
    },
    /// Every member's PostgreSQL reloads its configuration files.
    Reload {
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
    /// Stop one member and keep it stopped (its data is kept).
    Stop { member: String },
    /// Start a member stopped with `pgrepl stop`.
    Start { member: String },
    /// Take a stopped member out of the cluster: its slot is dropped, its status cleared (its
    /// data is kept on its host).
    Remove { member: String },
    /// The cluster's PostgreSQL parameters, the same for every member: `config show`,
    /// `config set NAME=VALUE ...` (checked by PostgreSQL's own parser first; reloaded at once,
    /// or pending restart), `config reset NAME ...`, `config edit`, `config history`.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The cluster CA: `ca show` prints the cluster's CA certificate (for clients'
    /// `sslrootcert`); `ca init DIR` makes a CA for the hosts of a `pgrepl node` cluster.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Serve the read-write (--port) and read-only (--ro-port) endpoints of the cluster
    /// (`up` runs one under its supervisor).
    Router,
    /// Run one member of a cluster whose members are on several hosts (store = etcd://...), in
    /// the foreground until SIGTERM: register it in the cluster (creating the cluster when it is
    /// new), then keep it running.
    Node(NodeArgs),
    /// The container image's entrypoint: the seeds' modes (`run-postgresql-master`,
    /// `run-postgresql-slave`, or by `REPLICATE_FROM`), `pgrepl node` when `PGREPL_STORE` is
    /// etcd, and `check [--live]` for the probes.
    Container {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// (internal) Run the supervisor of a local cluster.
    #[command(hide = true)]
    Supervise,
    /// (internal) Run the agent of one member.
    #[command(hide = true)]
    Agent {
        #[arg(long)]
        member: String,
    },
    /// (internal) Run the fencer of one member (started by its agent).
    #[command(hide = true)]
    Fencer {
        #[arg(long)]
        data_dir: std::path::PathBuf,
        #[arg(long)]
        socket: std::path::PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Number of replicas of a new cluster (or scale an existing one to it).
    #[arg(long, allow_negative_numbers = true)]
    pub replicas: Option<i64>,
    /// Read-write endpoint port (served by the router).
    #[arg(long)]
    pub port: Option<i64>,
    /// Read-only endpoint port (served by the router).
    #[arg(long)]
    pub ro_port: Option<i64>,
    /// First member port; members get consecutive ports (default: free ports).
    #[arg(long)]
    pub base_port: Option<i64>,
    /// A pgrepl.toml to create the cluster from.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Seconds to wait for the cluster to be ready.
    #[arg(long, default_value_t = 120)]
    pub wait: u64,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the parameters every member runs with (`--json`: with the spec's revision).
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Set parameters for every member: NAME=VALUE ...
    Set {
        #[arg(required = true, value_name = "NAME=VALUE")]
        pairs: Vec<String>,
        /// Only if the spec is still at this revision (`config show --json`); else change nothing.
        #[arg(long)]
        if_revision: Option<u64>,
    },
    /// Remove parameters, back to PostgreSQL's (or pgrepl's) default: NAME ...
    Reset {
        #[arg(required = true)]
        names: Vec<String>,
        /// Only if the spec is still at this revision (`config show --json`); else change nothing.
        #[arg(long)]
        if_revision: Option<u64>,
    },
    /// Edit the parameters in $EDITOR (else $VISUAL, else vi); on save, checked and written as
    /// `set` writes, unless the spec changed while the editor was open.
    Edit,
    /// The recorded changes of the parameters (the last 100): when, who, old and new values.
    History {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Print the cluster's CA certificate (PEM) from the cluster directory.
    Show,
    /// Make a new CA (ca.crt, and ca.key with mode 0600) in DIR, to give every host's `pgrepl node`.
    Init {
        /// Where to write ca.crt and ca.key (created when missing).
        dir: PathBuf,
        /// The cluster's name, written into the CA's subject.
        #[arg(long, default_value = "pgrepl")]
        cluster: String,
    },
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct PasswdArgs {
    /// The application user's password.
    #[arg(long)]
    pub user: bool,
    /// The admin (postgres) password.
    #[arg(long)]
    pub admin: bool,
    /// The replication role's password.
    #[arg(long)]
    pub replication: bool,
}

#[derive(Args, Debug)]
pub struct NodeArgs {
    /// This member's name, unique in the cluster: lowercase letters, digits and '-'.
    #[arg(long)]
    pub member: String,
    /// The address other members reach this member's PostgreSQL at (default: `listen`).
    #[arg(long)]
    pub host: Option<IpAddr>,
    /// This member's PostgreSQL port (on `listen`).
    #[arg(long, default_value_t = 5432, value_parser = clap::value_parser!(u16).range(1..))]
    pub pg_port: u16,
    /// Also serve the read-write and read-only endpoints (`port` and `ro_port` on `listen`).
    #[arg(long)]
    pub router: bool,
}
