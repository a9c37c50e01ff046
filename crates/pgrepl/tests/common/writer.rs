//! The test kit's writer and checker: the writer inserts ids 1, 2, 3, ... one per transaction
//! through a port (the rw endpoint), reconnecting after any error and retrying the same id until
//! it is acknowledged; the checker proves that every acknowledged id is on a server. A watcher
//! samples every member's port and records the most servers ever writable at once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Writer {
    acked: Arc<Mutex<Vec<i64>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    /// Creates table `acked(id bigint primary key)` through `port` and starts writing.
    pub async fn start(port: u16, password: String) -> Writer {
        let client = super::connect(port, "postgres", &password, "postgres").await.unwrap();
        client.batch_execute("CREATE TABLE IF NOT EXISTS acked (id bigint PRIMARY KEY)").await.unwrap();
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(write(port, password, acked.clone(), stop.clone()));
        Writer { acked, stop, task }
    }

    pub fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Stops writing; returns every acknowledged id.
    pub async fn stop(self) -> Vec<i64> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        Arc::try_unwrap(self.acked).unwrap().into_inner().unwrap()
    }
}

async fn write(port: u16, password: String, acked: Arc<Mutex<Vec<i64>>>, stop: Arc<AtomicBool>) {
    let mut next = 1i64;
    let mut client = None;
    while !stop.load(Ordering::SeqCst) {
        if client.is_none() {
            client = super::connect(port, "postgres", &password, "postgres").await.ok();
            if client.is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        let c = client.as_ref().unwrap();
        let id = next;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
        match tokio::time::timeout(Duration::from_secs(5), c.execute("INSERT INTO acked VALUES ($1)", &params)).await {
            Ok(Ok(_)) => {
                acked.lock().unwrap().push(next);
                next += 1;
            }
            // A retry of an insert that had committed before its answer was lost.
            Ok(Err(e)) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                acked.lock().unwrap().push(next);
                next += 1;
            }
            _ => client = None,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Acknowledged ids missing from the server at `port`.
pub async fn missing(port: u16, password: &str, acked: &[i64]) -> Vec<i64> {
    let client = super::connect(port, "postgres", password, "postgres").await.unwrap();
    let rows = client.query("SELECT id FROM acked", &[]).await.unwrap();
    let present: std::collections::HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    acked.iter().copied().filter(|id| !present.contains(id)).collect()
}

/// Samples the given ports every 50 ms and remembers the most that were writable primaries
/// (answering `pg_is_in_recovery() = false`) in one sample.
pub struct PrimaryWatch {
    most: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl PrimaryWatch {
    pub fn start(ports: Vec<u16>, password: String) -> PrimaryWatch {
        let most = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (most.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::SeqCst) {
                let mut writable = 0;
                for port in &ports {
                    let probe = async {
                        let c = super::connect(*port, "postgres", &password, "postgres").await.ok()?;
                        let row = c.query_one("SELECT pg_is_in_recovery()", &[]).await.ok()?;
                        Some(!row.get::<_, bool>(0))
                    };
                    if tokio::time::timeout(Duration::from_millis(500), probe).await.ok().flatten() == Some(true) {
                        writable += 1;
                    }
                }
                m.fetch_max(writable, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        PrimaryWatch { most, stop, task }
    }

    /// Stops watching; returns the most primaries seen writable at once.
    pub async fn stop(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        self.most.load(Ordering::SeqCst)
    }
}
