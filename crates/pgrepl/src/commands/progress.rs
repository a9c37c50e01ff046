//! Progress of a clone while `up` or `scale` waits for the cluster: once the wait has run for
//! `QUIET_FOR`, and only when standard error is a terminal, one line redrawn in place
//! ("node-3: cloning 48.2 MiB of 512.0 MiB (9%)"), read from the primary's
//! `pg_stat_progress_basebackup` over its unix socket. The line is erased when the wait ends,
//! so what the command prints next reads as without it. It only reads; a primary that cannot
//! be reached (on another host, mid-failover) shows nothing rather than an error.

use crate::cluster::Cluster;
use crate::commands::term;
use crate::config::ADMIN_USER;
use pgrepl_core::{MemberName, MemberState};
use pgrepl_pg::{Binaries, Instance};
use std::future::Future;
use std::io::Write;
use std::time::{Duration, Instant};

/// A wait shorter than this shows no progress at all.
const QUIET_FOR: Duration = Duration::from_secs(2);
const EVERY: Duration = Duration::from_millis(500);
/// One probe of the primary may take this long before it is given up for this round.
const PROBE_LIMIT: Duration = Duration::from_secs(2);

/// One `pg_basebackup` as the primary reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct CloneProgress {
    pub member: String,
    /// `pg_stat_progress_basebackup.phase`.
    pub phase: String,
    pub streamed: u64,
    /// The primary's estimate, `None` when it made none.
    pub total: Option<u64>,
}

/// `n` bytes as people read them: "512 B", "48.2 KiB", "512.0 MiB", "1.5 GiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// One clone's progress as a phrase.
pub fn describe(p: &CloneProgress) -> String {
    if p.phase != "streaming database files" && p.streamed == 0 {
        return format!("{}: cloning ({})", p.member, p.phase);
    }
    match p.total {
        Some(total) if total > 0 => {
            // The estimate is made before the copy; files that grow meanwhile can pass it.
            let percent = (p.streamed.saturating_mul(100) / total).min(100);
            format!("{}: cloning {} of {} ({percent}%)", p.member, bytes(p.streamed), bytes(total))
        }
        _ => format!("{}: cloning, {} so far", p.member, bytes(p.streamed)),
    }
}

/// The whole line: every clone under way, or `None` when there is none.
pub fn line(clones: &[CloneProgress]) -> Option<String> {
    (!clones.is_empty()).then(|| clones.iter().map(describe).collect::<Vec<_>>().join("; "))
}

/// Runs `work` to its end; meanwhile, on a terminal, draws the progress of clones on standard
/// error after `QUIET_FOR`.
pub async fn while_waiting<T>(cluster: &Cluster, work: impl Future<Output = T>) -> T {
    if !term::stderr_is_terminal() {
        return work.await;
    }
    tokio::pin!(work);
    let start = Instant::now();
    let mut drawn = Drawn(false);
    let mut probe = Probe { client: None };
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tokio::time::sleep(EVERY) => {}
        }
        if start.elapsed() < QUIET_FOR {
            continue;
        }
        // The work is followed while the primary is asked, so its end is never held up.
        let clones = tokio::select! {
            out = &mut work => return out,
            clones = tokio::time::timeout(PROBE_LIMIT, probe.clones(cluster)) => clones.unwrap_or_default(),
        };
        drawn.draw(line(&clones).as_deref());
    }
}

/// Whether a progress line is on the screen; erased when dropped (also when the wait it ran
/// beside is dropped, say because the supervisor exited first).
struct Drawn(bool);

impl Drawn {
    fn draw(&mut self, text: Option<&str>) {
        let mut err = std::io::stderr().lock();
        let _ = match text {
            Some(text) => {
                let width = term::size(&std::io::stderr()).map_or(80, |(w, _)| w);
                self.0 = true;
                // One column short of the width, so the line never wraps and `\r` redraws it.
                write!(err, "\r{}{}", term::fit(text, width.saturating_sub(1)), term::CLEAR_LINE)
            }
            None if self.0 => {
                self.0 = false;
                write!(err, "\r{}", term::CLEAR_LINE)
            }
            None => Ok(()),
        };
        let _ = err.flush();
    }
}

impl Drop for Drawn {
    fn drop(&mut self) {
        self.draw(None);
    }
}

/// The connection to the primary, kept from one round to the next.
struct Probe {
    client: Option<(MemberName, tokio_postgres::Client)>,
}

impl Probe {
    /// The clones under way, as the running primary reports them; nothing when none of the
    /// members prepares, or when the primary cannot be asked.
    async fn clones(&mut self, cluster: &Cluster) -> Vec<CloneProgress> {
        let Ok((_, view)) = cluster.view().await else { return vec![] };
        if !view.members.values().any(|s| s.state == MemberState::Preparing) {
            return vec![];
        }
        let Some((leader, _)) = view.ready_leader() else { return vec![] };
        if self.client.as_ref().is_none_or(|(m, c)| m != leader || c.is_closed()) {
            self.client = connect(cluster, leader, &view).await.map(|c| (leader.clone(), c));
        }
        let Some((_, client)) = &self.client else { return vec![] };
        let sql = "SELECT a.application_name, p.phase, p.backup_streamed, p.backup_total \
                   FROM pg_stat_progress_basebackup p JOIN pg_stat_activity a USING (pid) ORDER BY 1";
        let Ok(rows) = client.query(sql, &[]).await else {
            self.client = None;
            return vec![];
        };
        rows.iter()
            .map(|r| CloneProgress {
                member: r.get::<_, Option<String>>(0).unwrap_or_default(),
                phase: r.get::<_, Option<String>>(1).unwrap_or_default(),
                streamed: r.get::<_, Option<i64>>(2).unwrap_or(0).max(0) as u64,
                total: r.get::<_, Option<i64>>(3).map(|t| t.max(0) as u64),
            })
            .collect()
    }
}

/// The admin user over the leader's socket in this cluster directory.
async fn connect(
    cluster: &Cluster,
    leader: &MemberName,
    view: &pgrepl_core::ClusterView,
) -> Option<tokio_postgres::Client> {
    let port = view.spec.as_ref()?.members.get(leader)?.port;
    let instance = Instance {
        bins: Binaries::find(cluster.config.bin_dir.as_deref()).ok()?,
        data_dir: cluster.layout.data(leader),
        socket_dir: cluster.layout.socket_dir(leader),
        listen_address: cluster.config.listen.to_string(),
        port,
        log_file: cluster.layout.log(leader),
        name: leader.to_string(),
    };
    instance.connect(ADMIN_USER, "postgres").await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clone(phase: &str, streamed: u64, total: Option<u64>) -> CloneProgress {
        CloneProgress { member: "node-3".into(), phase: phase.into(), streamed, total }
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(48 * 1024 * 1024 + 205 * 1024), "48.2 MiB");
        assert_eq!(bytes(512 << 20), "512.0 MiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(bytes(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn a_clone_reads_as_bytes_done_of_the_total() {
        let streaming = "streaming database files";
        assert_eq!(
            describe(&clone(streaming, 48 * 1024 * 1024 + 205 * 1024, Some(512 << 20))),
            "node-3: cloning 48.2 MiB of 512.0 MiB (9%)"
        );
        assert_eq!(
            describe(&clone(streaming, 700, Some(500))),
            "node-3: cloning 700 B of 500 B (100%)",
            "past the estimate"
        );
        assert_eq!(describe(&clone(streaming, 5 << 20, None)), "node-3: cloning, 5.0 MiB so far", "no estimate");
        assert_eq!(describe(&clone(streaming, 0, Some(0))), "node-3: cloning, 0 B so far");
        assert_eq!(
            describe(&clone("waiting for checkpoint to finish", 0, None)),
            "node-3: cloning (waiting for checkpoint to finish)"
        );
        assert_eq!(
            describe(&clone("transferring wal files", 10 << 20, Some(10 << 20))),
            "node-3: cloning 10.0 MiB of 10.0 MiB (100%)"
        );
    }

    #[test]
    fn several_clones_share_one_line_and_none_draws_nothing() {
        let mut other = clone("streaming database files", 1 << 20, Some(4 << 20));
        other.member = "node-4".into();
        let both = [clone("estimating backup size", 0, None), other];
        assert_eq!(
            line(&both).as_deref(),
            Some("node-3: cloning (estimating backup size); node-4: cloning 1.0 MiB of 4.0 MiB (25%)")
        );
        assert_eq!(line(&[]), None);
    }
}
