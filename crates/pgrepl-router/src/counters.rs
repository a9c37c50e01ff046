//! Counts of routed connections per endpoint and backend (opened since the router started,
//! open now) and of refused ones per endpoint, for the metrics. A routed connection costs the
//! hot path one short lookup when it is routed and two atomic increments, and one decrement
//! when it ends; nothing per byte.

use crate::Endpoint;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The counts of one (endpoint, backend).
#[derive(Debug, Default)]
struct Pair {
    opened: AtomicU64,
    open: AtomicU64,
}

/// Shared by every endpoint of one router; clones of the `Arc` read the same counts.
#[derive(Debug, Default)]
pub struct Connections {
    pairs: Mutex<BTreeMap<(Endpoint, String), Arc<Pair>>>,
    refused_rw: AtomicU64,
    refused_ro: AtomicU64,
}

/// One (endpoint, backend)'s counts as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionCount {
    pub endpoint: Endpoint,
    /// The backend member's name.
    pub backend: String,
    /// Connections routed to it since the router started.
    pub opened: u64,
    /// Connections to it open now.
    pub open: u64,
}

/// Held while a routed connection lasts; counts it closed when dropped.
pub struct Routed(Arc<Pair>);

impl Drop for Routed {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connections {
    /// A connection of `endpoint` was routed to `backend`.
    pub fn routed(&self, endpoint: Endpoint, backend: &str) -> Routed {
        let pair = {
            let mut pairs = self.pairs.lock().unwrap_or_else(|e| e.into_inner());
            pairs.entry((endpoint, backend.to_string())).or_default().clone()
        };
        pair.opened.fetch_add(1, Ordering::Relaxed);
        pair.open.fetch_add(1, Ordering::Relaxed);
        Routed(pair)
    }

    /// A connection of `endpoint` had nowhere to go and was answered with an error.
    pub fn refused(&self, endpoint: Endpoint) {
        self.refused_counter(endpoint).fetch_add(1, Ordering::Relaxed);
    }

    fn refused_counter(&self, endpoint: Endpoint) -> &AtomicU64 {
        match endpoint {
            Endpoint::Rw => &self.refused_rw,
            Endpoint::Ro => &self.refused_ro,
        }
    }

    /// Every (endpoint, backend) ever routed to, in a stable order.
    pub fn counts(&self) -> Vec<ConnectionCount> {
        let pairs = self.pairs.lock().unwrap_or_else(|e| e.into_inner());
        pairs
            .iter()
            .map(|((endpoint, backend), pair)| ConnectionCount {
                endpoint: *endpoint,
                backend: backend.clone(),
                opened: pair.opened.load(Ordering::Relaxed),
                open: pair.open.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Connections of `endpoint` refused since the router started.
    pub fn refusals(&self, endpoint: Endpoint) -> u64 {
        self.refused_counter(endpoint).load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_routed_connection_counts_as_open_until_it_is_dropped() {
        let c = Connections::default();
        let first = c.routed(Endpoint::Rw, "node-1");
        let second = c.routed(Endpoint::Rw, "node-1");
        let _ro = c.routed(Endpoint::Ro, "node-2");
        drop(first);
        c.refused(Endpoint::Ro);
        let count = |endpoint, backend: &str| {
            c.counts().into_iter().find(|n| n.endpoint == endpoint && n.backend == backend).map(|n| (n.opened, n.open))
        };
        assert_eq!(count(Endpoint::Rw, "node-1"), Some((2, 1)));
        assert_eq!(count(Endpoint::Ro, "node-2"), Some((1, 1)));
        drop(second);
        assert_eq!(count(Endpoint::Rw, "node-1"), Some((2, 0)), "closed, still counted as opened");
        assert_eq!((c.refusals(Endpoint::Rw), c.refusals(Endpoint::Ro)), (0, 1));
    }
}
