//! `pgrepl psql [MEMBER|--ro] [-- ARGS]`: replace this process with psql, connected over the
//! member's unix socket as the admin user to the application database.

use crate::cluster::Cluster;
use crate::config::ADMIN_USER;
use anyhow::{bail, Context};
use pgrepl_core::MemberState;
use std::os::unix::process::CommandExt;
use std::path::Path;

pub async fn run(dir: &Path, member: Option<String>, ro: bool, args: Vec<String>) -> anyhow::Result<()> {
    let cluster = Cluster::open(dir).await?;
    let (_, view) = cluster.view().await?;
    let member = match (member, ro) {
        (Some(name), _) => Cluster::member(&view, &name)?,
        (None, true) => match view.members.iter().find(|(_, s)| s.state == MemberState::Streaming) {
            Some((m, _)) => m.clone(),
            None => bail!("no replica is streaming; see `pgrepl status`"),
        },
        (None, false) => match view.ready_leader() {
            Some((m, _)) => m.clone(),
            None => bail!("no primary is running; see `pgrepl status`"),
        },
    };
    let spec = view.spec.as_ref().context("no cluster spec")?;
    let port = spec.members.get(&member).context("member not in spec")?.port;
    let bins = pgrepl_pg::Binaries::find(cluster.config.bin_dir.as_deref())?;
    let database = cluster.config.names.app.as_ref().map_or("postgres", |a| a.database.as_str());
    let err = std::process::Command::new(bins.path("psql"))
        .arg("-h")
        .arg(cluster.layout.socket_dir(&member))
        .args(["-p", &port.to_string(), "-U", ADMIN_USER, "-d", database])
        .args(args)
        .exec();
    Err(err).context("run psql")
}
