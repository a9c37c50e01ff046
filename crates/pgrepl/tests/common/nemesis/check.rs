//! The nemesis's checks against the real servers, each asked from inside its own host:
//! convergence (one primary by `status` and by the servers themselves: the primary not in
//! recovery with every other member streaming from it), acknowledged ids missing from the
//! primary and ids present that were never acknowledged, and the table's checksum on every
//! member once each has replayed past the primary's current position.

use crate::common::three_hosts::{host_of, member, Cluster, ADMIN_PASSWORD, HOSTS, PG_PORT};
use crate::common::writer::{WriteLog, Writer};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const ASK_WITHIN: Duration = Duration::from_secs(2);

async fn client(c: &Cluster, i: usize) -> Option<tokio_postgres::Client> {
    tokio::time::timeout(ASK_WITHIN, c.hosts.sql_in(i, PG_PORT, "postgres", ADMIN_PASSWORD)).await.ok()?.ok()
}

/// One row of one value, asked of host `i`'s server.
async fn one<T: for<'a> tokio_postgres::types::FromSql<'a>>(
    c: &Cluster,
    i: usize,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Option<T> {
    let client = client(c, i).await?;
    let row = tokio::time::timeout(ASK_WITHIN, client.query_one(sql, params)).await.ok()?.ok()?;
    row.try_get(0).ok()
}

/// The primary's host when `status` (from any host) shows one primary and every other member
/// streaming, and the servers agree: the primary is not in recovery and streams to all others.
pub async fn converged(c: &Cluster) -> Option<usize> {
    let mut named = None;
    for i in 0..HOSTS {
        if let Some(name) = c.converged_async(i).await {
            named = Some(name);
            break;
        }
    }
    let p = host_of(&named?);
    let streaming: i64 = one(
        c,
        p,
        "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND NOT pg_is_in_recovery()",
        &[],
    )
    .await?;
    if streaming != HOSTS as i64 - 1 {
        return None;
    }
    for r in (0..HOSTS).filter(|r| *r != p) {
        if !one::<bool>(c, r, "SELECT pg_is_in_recovery()", &[]).await? {
            return None;
        }
    }
    Some(p)
}

/// The host of the one server not in recovery, and the hosts it does not stream to: `None`
/// unless exactly one server answers as a primary.
pub async fn not_streaming(c: &Cluster) -> Option<(usize, Vec<usize>)> {
    let mut primaries = Vec::new();
    for i in 0..HOSTS {
        if one::<bool>(c, i, "SELECT pg_is_in_recovery()", &[]).await == Some(false) {
            primaries.push(i);
        }
    }
    let [p] = primaries[..] else { return None };
    let client = client(c, p).await?;
    let sql = "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'";
    let rows = tokio::time::timeout(ASK_WITHIN, client.query(sql, &[])).await.ok()?.ok()?;
    let streaming: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    Some((p, (0..HOSTS).filter(|i| *i != p && !streaming.contains(&member(*i))).collect()))
}

/// Waits up to `limit` for `converged`; returns the primary's host and how long it took.
pub async fn wait_converged(c: &Cluster, limit: Duration) -> Option<(usize, Duration)> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(p) = converged(c).await {
            return Some((p, start.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Every id in the table on host `i`'s server.
pub async fn ids_on(c: &Cluster, i: usize) -> Option<HashSet<i64>> {
    let client = client(c, i).await?;
    let rows =
        tokio::time::timeout(Duration::from_secs(20), client.query("SELECT id FROM acked", &[])).await.ok()?.ok()?;
    Some(rows.iter().map(|r| r.get(0)).collect())
}

pub struct Writes {
    /// Acknowledged ids missing from the primary.
    pub lost: Vec<i64>,
    /// Ids present that were sent but never acknowledged.
    pub unknown: usize,
    /// Ids present that were never sent.
    pub phantom: Vec<i64>,
}

/// Compares what the writer did with what host `p`'s server holds: the ids acknowledged before
/// the server is read must be there, and every id there must have been sent before it was read.
pub async fn writes(c: &Cluster, p: usize, writer: &Writer) -> Option<Writes> {
    let acked: Vec<i64> = writer.with_log(|l| l.acked.iter().map(|(id, _)| *id).collect());
    let present = ids_on(c, p).await?;
    let sent = writer.with_log(|l| l.sent);
    Some(compare(&acked, sent, &present))
}

/// As `writes`, for a writer that has stopped.
pub async fn writes_of(c: &Cluster, p: usize, log: &WriteLog) -> Option<Writes> {
    let acked: Vec<i64> = log.acked.iter().map(|(id, _)| *id).collect();
    Some(compare(&acked, log.sent, &ids_on(c, p).await?))
}

fn compare(acked: &[i64], sent: i64, present: &HashSet<i64>) -> Writes {
    let acked_set: HashSet<i64> = acked.iter().copied().collect();
    let lost = acked.iter().copied().filter(|id| !present.contains(id)).collect();
    let unacked: Vec<i64> = present.iter().copied().filter(|id| !acked_set.contains(id)).collect();
    let mut phantom: Vec<i64> = unacked.iter().copied().filter(|id| *id > sent || *id < 1).collect();
    phantom.sort();
    Writes { lost, unknown: unacked.len() - phantom.len(), phantom }
}

/// The checksum of the ids up to `bound` (all when `None`) on every member, asked once each
/// replica has replayed past the position the primary `p` is at after `bound` was read; an
/// `Err` says which member did not catch up within `limit`.
pub async fn checksums(c: &Cluster, p: usize, bound: Option<i64>, limit: Duration) -> Result<Vec<String>, String> {
    let bound = match bound {
        Some(b) => b,
        None => one::<Option<i64>>(c, p, "SELECT max(id) FROM acked", &[])
            .await
            .ok_or("read the primary's highest id")?
            .unwrap_or(0),
    };
    let lsn: String = one(c, p, "SELECT pg_current_wal_lsn()::text", &[]).await.ok_or("read the primary's position")?;
    let start = Instant::now();
    for r in (0..HOSTS).filter(|r| *r != p) {
        loop {
            let sql = "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn";
            if one::<bool>(c, r, sql, &[&lsn]).await == Some(true) {
                break;
            }
            if start.elapsed() > limit {
                return Err(format!("host {} had not replayed to {lsn} after {limit:?}", r + 1));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut sums = Vec::new();
    for i in 0..HOSTS {
        let sql = "SELECT md5(coalesce(string_agg(id::text, ',' ORDER BY id), '')) FROM acked WHERE id <= $1";
        let sum: String = one(c, i, sql, &[&bound]).await.ok_or(format!("checksum on host {}", i + 1))?;
        sums.push(sum);
    }
    Ok(sums)
}

/// How many members' checksums differ from the primary's.
pub fn diverged(sums: &[String], p: usize) -> usize {
    sums.iter().filter(|s| **s != sums[p]).count()
}

/// The time in `[from, to]` during which the writer waited more than `gap` for an
/// acknowledgement (the rw endpoint unavailable), from the times its ids were acknowledged.
pub fn unavailable(acks: &[Instant], from: Instant, to: Instant, gap: Duration) -> Duration {
    let first = acks.partition_point(|t| *t <= from);
    let last = acks.partition_point(|t| *t <= to);
    let before = if first > 0 { acks[first - 1] } else { from };
    let points = std::iter::once(before).chain(acks[first..last].iter().copied()).chain(std::iter::once(to));
    let mut total = Duration::ZERO;
    let mut previous: Option<Instant> = None;
    for t in points {
        if let Some(p) = previous {
            if t.duration_since(p) > gap {
                total += t.min(to).duration_since(p.max(from));
            }
        }
        previous = Some(t);
    }
    total
}
