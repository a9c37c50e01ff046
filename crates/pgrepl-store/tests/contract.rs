//! Runs the store contract suite against every backend in this crate: one test per property
//! per backend, each on a fresh store reached through two handles.

use std::sync::Arc;

use pgrepl_store::contract::{self, Contract};
use pgrepl_store::{FileStore, MemoryStore, Store};
use tempfile::TempDir;

/// Two clones of one memory store.
fn memory_contract() -> (Contract, ()) {
    let store = MemoryStore::new();
    (Contract::new(Arc::new(store.clone()), Arc::new(store)), ())
}

/// Two independent `FileStore::open` on one fresh directory (kept alive by the `TempDir`).
fn file_contract() -> (Contract, TempDir) {
    let dir = tempfile::tempdir().expect("create temporary directory");
    let path = dir.path().join("store");
    let a = FileStore::open(&path).expect("open file store");
    let b = FileStore::open(&path).expect("open file store again");
    (Contract::new(Arc::new(a), Arc::new(b)), dir)
}

mod memory {
    pgrepl_store::contract_tests!(super::memory_contract());
}

mod file {
    pgrepl_store::contract_tests!(super::file_contract());
}

/// The whole suite through its one-call entry point, on one store: properties must not trip
/// over each other's keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_on_one_memory_store() {
    let store = MemoryStore::new();
    let (a, b): (Arc<dyn Store>, Arc<dyn Store>) = (Arc::new(store.clone()), Arc::new(store));
    contract::run_all(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_on_one_file_store() {
    let dir = tempfile::tempdir().expect("create temporary directory");
    let a = FileStore::open(dir.path()).expect("open file store");
    let b = FileStore::open(dir.path()).expect("open file store again");
    Contract::new(Arc::new(a), Arc::new(b)).prefix("suite/").run_all().await;
}
