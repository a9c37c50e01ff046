//! The `pgrepl` binary: parse the command line, set up logging, run the command, and turn an
//! error into one message and a non-zero exit.

mod agent_lock;
mod api;
mod cli;
mod cluster;
mod commands;
mod config;
mod handover;
mod init;
mod layout;
mod readiness;
mod supervisor;
mod topology;

use clap::Parser;
use cli::{CaCommand, Cli, Command, ConfigCommand};
use std::process::ExitCode;

fn init_logging(daemon: bool) {
    let default = if daemon { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).init();
}

/// The settings `pgrepl node` takes from the environment, which it then removes from its own
/// environment so that no child (PostgreSQL) inherits a password (invariant 4). Called before
/// any thread starts; a setting that cannot be read (a password file) ends the process.
fn take_env() -> Vec<config::FromEnv> {
    let env = config::read_env(|name| std::env::var(name).ok());
    for name in config::env::variables() {
        std::env::remove_var(name);
    }
    env.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    })
}

async fn run(cli: Cli, env: Vec<config::FromEnv>) -> anyhow::Result<()> {
    let dir = cli.dir.as_path();
    match cli.command {
        Command::Up(args) => commands::up::run(dir, args).await,
        Command::Down { destroy } => commands::down::run(dir, destroy).await,
        Command::Status { json, watch: false } => commands::status::run(dir, json).await,
        Command::Status { json, watch: true } => commands::watch::run(dir, json).await,
        Command::Scale { replicas, wait } => commands::scale::run(dir, replicas, wait).await,
        Command::Passwd(args) => commands::passwd::run(dir, args).await,
        Command::Logs { member, follow } => commands::logs::run(dir, &member, follow).await,
        Command::Psql { member, ro, args } => commands::psql::run(dir, member, ro, args).await,
        Command::Url { ro } => commands::url::run(dir, ro).await,
        Command::Endpoints { rw, ro } => commands::endpoints::run(dir, rw, ro).await,
        Command::Promote { member, wait } => commands::promote::run(dir, Request::Promote(member), wait).await,
        Command::Switchover { to, wait } => commands::promote::run(dir, Request::Switchover(to), wait).await,
        Command::Failover { to, wait } => commands::promote::run(dir, Request::Failover(to), wait).await,
        Command::Pause { wait } => commands::pause::run(dir, true, wait).await,
        Command::Resume { wait } => commands::pause::run(dir, false, wait).await,
        Command::Restart { member, pending, rolling, wait } => {
            commands::restart::run(dir, member, pending, rolling, wait).await
        }
        Command::Reload { wait } => commands::restart::reload(dir, wait).await,
        Command::Stop { member } => commands::member_ctl::run(dir, &member, true).await,
        Command::Start { member } => commands::member_ctl::run(dir, &member, false).await,
        Command::Remove { member } => commands::remove::run(dir, &member).await,
        Command::Supervise => supervisor::run(dir).await,
        Command::Agent { member } => commands::agent::run(dir, &member).await,
        Command::Fencer { .. } => unreachable!("the fencer runs before the async runtime starts"),
        Command::Router => commands::router::run(dir).await,
        Command::Config { command: ConfigCommand::Show { json } } => commands::params::show(dir, json).await,
        Command::Config { command: ConfigCommand::Set { pairs, if_revision } } => {
            let change = commands::params::Change::Set(commands::params::parse_pairs(&pairs)?);
            commands::params::run(dir, change, if_revision).await
        }
        Command::Config { command: ConfigCommand::Reset { names, if_revision } } => {
            commands::params::run(dir, commands::params::Change::Reset(names), if_revision).await
        }
        Command::Config { command: ConfigCommand::Edit } => commands::params::edit(dir).await,
        Command::Config { command: ConfigCommand::History { json } } => commands::params::history(dir, json).await,
        Command::Ca { command: CaCommand::Show } => commands::ca::show(&layout::Layout::new(dir)),
        Command::Ca { command: CaCommand::Init { dir, cluster } } => commands::ca::init(&dir, &cluster),
        Command::Node(args) => commands::node::run(dir, args, env).await,
        Command::Container { args } => commands::container::run(args, env).await,
    }
}

use commands::promote::Request;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = matches!(
        cli.command,
        Command::Supervise
            | Command::Agent { .. }
            | Command::Fencer { .. }
            | Command::Router
            | Command::Node(_)
            | Command::Container { .. }
    );
    if !daemon {
        // A short command dies quietly on a closed pipe (`pgrepl status | head`), as Unix tools
        // do. A long-running one keeps Rust's default (ignored): a write to a connection the
        // other side dropped (an etcd member killed, a client gone) is an error it handles.
        // SAFETY: restoring a default signal disposition before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    if let Command::Container { args } = &cli.command {
        // PID 1 of a container: a parent that reaps every orphan (PostgreSQL's processes end
        // up there) and passes signals on, and a child that does the work.
        if args.first().map(String::as_str) != Some("check") {
            init::split_off_init();
        }
    }
    let env = if matches!(cli.command, Command::Node(_) | Command::Container { .. }) { take_env() } else { Vec::new() };
    init_logging(daemon);
    if let Command::Fencer { data_dir, socket } = &cli.command {
        // No async runtime: one thread that waits for beats and a timer, nothing else.
        return match pgrepl_agent::fencer::run(data_dir, socket) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // The router moves every byte of every client: one thread, one event loop, no hand-offs
    // between workers (measured in docs/benchmarks.md). Everything else may use two.
    let mut builder = match cli.command {
        Command::Router => tokio::runtime::Builder::new_current_thread(),
        _ => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, env)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
