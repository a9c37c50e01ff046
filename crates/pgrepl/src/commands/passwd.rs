//! `pgrepl passwd --user|--admin|--replication`: read the new password from standard input,
//! bump its version in the spec, and wait until the primary has applied it (and, for the
//! replication password, every streaming replica's password file).
//!
//! On one machine (`pgrepl up`) every member reads the one secrets file, where the new password
//! is kept. On a cluster whose members run on their own hosts (`pgrepl node`), from any host
//! that reaches the store: the spec gets the password's SCRAM verifier (never the password),
//! which whichever member leads gives the role; the admin and replication passwords, which
//! every host needs in plain text to connect to the others, are then rolled out host by host
//! (each host's secret changed, its node restarted). Replicas stream on meanwhile over the
//! connections they have; each host tells whether its secret is the cluster's.

use crate::cli::PasswdArgs;
use crate::cluster::Cluster;
use crate::commands::wait;
use anyhow::{bail, Context};
use pgrepl_agent::Secrets;
use pgrepl_core::{ClusterView, MemberName, MemberState, MemberStatus, PasswordKind};
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

/// `Ok` once the primary has set the new password, and every streaming replica has taken a
/// new replication password or says that its host holds another.
fn applied(view: &ClusterView, kind: PasswordKind) -> Result<(), String> {
    let wanted = view.spec.as_ref().map(|s| s.passwords.get(kind)).unwrap_or(0);
    let (leader, status) = view.ready_leader().ok_or("a running primary")?;
    let has = |s: &MemberStatus| s.applied_passwords.is_some_and(|a| a.get(kind) == wanted);
    if !has(status) {
        return Err(format!("{leader} to set the new {kind} password"));
    }
    if kind == PasswordKind::Replication {
        let waiting = view
            .members
            .iter()
            .find(|(_, s)| s.state == MemberState::Streaming && !has(s) && !s.stale_secrets.contains(&kind));
        if let Some((m, _)) = waiting {
            return Err(format!("{m} to take the new replication password"));
        }
    }
    Ok(())
}

/// The members whose hosts say they hold another `kind` password than the cluster's.
pub fn stale_hosts(view: &ClusterView, kind: PasswordKind) -> Vec<&MemberName> {
    view.members.iter().filter(|(_, s)| s.stale_secrets.contains(&kind)).map(|(m, _)| m).collect()
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
    let (_, view) = cluster.view().await?;
    let across_hosts = cluster.member_elsewhere(&view).is_some();
    if kind == PasswordKind::User && !across_hosts && cluster.config.names.app.is_none() {
        bail!("this cluster has no application user (database.user is not set), so it has no user password");
    }
    // This host's own secret follows (on one machine, the only one there is).
    let secrets_file = cluster.layout.secrets();
    if !across_hosts || secrets_file.exists() {
        let mut secrets = Secrets::load(&secrets_file)?;
        secrets.set(kind, password.clone());
        secrets.save(&secrets_file)?;
    }
    let verifier = across_hosts.then(|| pgrepl_pg::scram::verifier(&password));
    cluster
        .update_spec(|_, spec| {
            spec.passwords.bump(kind);
            match &verifier {
                Some(v) => spec.verifiers.insert(kind, v.clone()),
                None => spec.verifiers.remove(&kind),
            };
            Ok(())
        })
        .await?;
    wait::until(&cluster, Duration::from_secs(60), |view| applied(view, kind)).await?;
    let (_, view) = cluster.view().await?;
    let leader = view.leader.as_ref().map(|l| l.to_string()).unwrap_or_default();
    println!("the {kind} password is changed (set on {leader})");
    let stale = stale_hosts(&view, kind);
    if !stale.is_empty() {
        let names: Vec<String> = stale.iter().map(|m| m.to_string()).collect();
        println!(
            "the hosts of {} still hold the old {kind} password: they stream on over the connections they have, but \
             cannot connect again until it is changed there too; on each, one at a time, put the new password in its \
             secrets (PGREPL_{}_PASSWORD, or the file its _FILE variable names) and restart its node; `pgrepl status` \
             shows which hosts are left",
            names.join(", "),
            kind.to_string().to_uppercase()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrepl_core::testing::three_members;
    use pgrepl_core::PasswordVersions;

    fn n(k: u32) -> MemberName {
        MemberName::numbered(k)
    }

    /// node-1 leads with replication password version 1 applied; node-2 and node-3 stream
    /// with version 0 in their password files.
    fn view() -> ClusterView {
        let mut view = three_members();
        view.spec.as_mut().unwrap().passwords.replication = 1;
        for (name, s) in view.members.iter_mut() {
            s.applied_passwords =
                Some(PasswordVersions { replication: (*name == n(1)) as u64, ..PasswordVersions::default() });
        }
        view
    }

    #[test]
    fn a_replication_password_waits_for_each_streaming_replica_or_its_hosts_word() {
        let mut v = view();
        assert_eq!(applied(&v, PasswordKind::Replication), Err("node-2 to take the new replication password".into()));
        v.members.get_mut(&n(2)).unwrap().stale_secrets = vec![PasswordKind::Replication];
        v.members.get_mut(&n(3)).unwrap().applied_passwords =
            Some(PasswordVersions { replication: 1, ..PasswordVersions::default() });
        assert_eq!(applied(&v, PasswordKind::Replication), Ok(()));
        assert_eq!(stale_hosts(&v, PasswordKind::Replication), vec![&n(2)]);
        assert!(stale_hosts(&v, PasswordKind::Admin).is_empty());
    }
}
