//! `pgrepl passwd --user|--admin|--replication`: read the new password from standard input,
//! keep it in the secrets file, bump its version in the spec, and wait until the primary has
//! applied it (and, for the replication password, every streaming replica's password file).

use crate::cli::PasswdArgs;
use crate::cluster::Cluster;
use crate::commands::wait;
use anyhow::{bail, Context};
use pgrepl_agent::Secrets;
use pgrepl_core::{ClusterView, MemberState, PasswordKind};
use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

fn kind(args: &PasswdArgs) -> PasswordKind {
    if args.user {
        PasswordKind::User
    } else if args.admin {
        PasswordKind::Admin
    } else {
        PasswordKind::Replication
    }
}

fn applied(view: &ClusterView, kind: PasswordKind) -> Result<(), String> {
    let wanted = view.spec.as_ref().map(|s| s.passwords.get(kind)).unwrap_or(0);
    let (leader, status) = view.ready_leader().ok_or("a running primary")?;
    let has = |s: &pgrepl_core::MemberStatus| s.applied_passwords.is_some_and(|a| a.get(kind) == wanted);
    if !has(status) {
        return Err(format!("{leader} to set the new {kind} password"));
    }
    if kind == PasswordKind::Replication {
        if let Some((m, _)) = view.members.iter().find(|(_, s)| s.state == MemberState::Streaming && !has(s)) {
            return Err(format!("{m} to take the new replication password"));
        }
    }
    Ok(())
}

pub async fn run(dir: &Path, args: PasswdArgs) -> anyhow::Result<()> {
    let kind = kind(&args);
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("read the new password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        bail!("the new {kind} password read from standard input is empty; give a non-empty password on one line");
    }
    let cluster = Cluster::open(dir).await?;
    if kind == PasswordKind::User && cluster.config.names.app.is_none() {
        bail!("this cluster has no application user (database.user is not set), so it has no user password");
    }
    let mut secrets = Secrets::load(&cluster.layout.secrets())?;
    secrets.set(kind, password);
    secrets.save(&cluster.layout.secrets())?;
    cluster
        .update_spec(|_, spec| {
            spec.passwords.bump(kind);
            Ok(())
        })
        .await?;
    wait::until(&cluster, Duration::from_secs(60), |view| applied(view, kind)).await?;
    println!("the {kind} password is changed");
    Ok(())
}
