//! `Seen`: one cycle's reading of the world, the store snapshot it came from and the
//! observation `decide()` takes.

use pgrepl_core::{keys, Observation};
use pgrepl_store::Snapshot;
use std::time::Duration;

pub(crate) struct Seen {
    pub snapshot: Snapshot,
    pub obs: Observation,
}

impl Seen {
    /// How long the leader lease seen in this snapshot has left, when it has a TTL.
    pub fn lease_left(&self) -> Option<Duration> {
        self.snapshot.get(keys::LEADER)?.expires_in
    }
}
