//! Choosing a read-only backend: round-robin over the qualifying replicas, then the fallback.

use crate::{Backend, RoFallback, Topology};

/// The backends to try, in order, for the `turn`-th read-only connection: every replica,
/// starting at `turn` (so connections spread), then the primary when the fallback allows it.
pub fn pick_ro(topology: &Topology, fallback: RoFallback, turn: usize) -> Vec<Backend> {
    let n = topology.ro.len();
    let mut order: Vec<Backend> = (0..n).map(|i| topology.ro[(turn + i) % n].clone()).collect();
    if fallback == RoFallback::Primary {
        order.extend(topology.rw.iter().cloned());
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(name: &str, port: u16) -> Backend {
        Backend { name: name.into(), addr: ([127, 0, 0, 1], port).into() }
    }

    fn names(v: &[Backend]) -> Vec<&str> {
        v.iter().map(|b| b.name.as_str()).collect()
    }

    #[test]
    fn turns_spread_over_replicas_then_fall_back_to_the_primary() {
        let t = Topology { rw: Some(b("p", 1)), ro: vec![b("a", 2), b("b", 3)] };
        assert_eq!(names(&pick_ro(&t, RoFallback::Primary, 0)), ["a", "b", "p"]);
        assert_eq!(names(&pick_ro(&t, RoFallback::Primary, 1)), ["b", "a", "p"]);
        assert_eq!(names(&pick_ro(&t, RoFallback::Refuse, 2)), ["a", "b"]);
    }

    #[test]
    fn without_replicas_the_fallback_decides() {
        let t = Topology { rw: Some(b("p", 1)), ro: vec![] };
        assert_eq!(names(&pick_ro(&t, RoFallback::Primary, 5)), ["p"]);
        assert!(pick_ro(&t, RoFallback::Refuse, 5).is_empty());
        assert!(pick_ro(&Topology::default(), RoFallback::Primary, 0).is_empty());
    }
}
