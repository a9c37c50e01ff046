//! The throwaway etcd of `pgrepl_store::testing`, with what pgrepl's end-to-end tests ask of it.

pub use pgrepl_store::testing::Etcd;
use pgrepl_store::{EtcdStore, Store};
use std::time::Duration;

pub trait EtcdExt {
    /// The `store` setting that points pgrepl at this etcd (`etcds://` for a TLS one).
    fn store_setting(&self) -> String;
    /// A store client on this etcd with every key under `prefix`.
    async fn store(&self, prefix: &str) -> EtcdStore;
    /// The keys under `prefix` (with the prefix stripped), sorted.
    async fn keys(&self, prefix: &str) -> Vec<String>;
}

impl EtcdExt for Etcd {
    fn store_setting(&self) -> String {
        let scheme = if self.mode.tls() { "etcds" } else { "etcd" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// With the CA, client certificate and user the etcd's mode asks for.
    async fn store(&self, prefix: &str) -> EtcdStore {
        self.connect(prefix, Duration::from_secs(1)).await
    }

    async fn keys(&self, prefix: &str) -> Vec<String> {
        let snapshot = self.store(prefix).await.snapshot().await.expect("read etcd");
        snapshot.entries.into_keys().collect()
    }
}
