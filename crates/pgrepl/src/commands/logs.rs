//! `pgrepl logs MEMBER [-f]`: print the member's log (its agent's sentences and PostgreSQL's
//! own log lines), and with -f keep printing as it grows.

use crate::cluster::Cluster;
use anyhow::Context;
use pgrepl_core::MemberName;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

pub async fn run(dir: &Path, member: &str, follow: bool) -> anyhow::Result<()> {
    let cluster = Cluster::open(dir).await?;
    let path = match MemberName::new(member) {
        Ok(m) if cluster.layout.log(&m).exists() => cluster.layout.log(&m),
        _ => {
            let (_, view) = cluster.view().await?;
            cluster.layout.log(&Cluster::member(&view, member)?)
        }
    };
    let mut file = std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
    let mut out = std::io::stdout().lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        file.read_to_end(&mut buf).with_context(|| format!("read {}", path.display()))?;
        out.write_all(&buf)?;
        out.flush()?;
        if !follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        let pos = file.stream_position()?;
        if std::fs::metadata(&path)?.len() < pos {
            file.seek(SeekFrom::Start(0))?;
        }
    }
}
