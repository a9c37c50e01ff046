//! The randomized fault test's kit (`tests/nemesis.rs` runs it): the fault menu, the write
//! probe that records every moment two servers accept a write, the checks against the real
//! servers, and the report.

pub mod check;
pub mod faults;
pub mod probe;
pub mod report;
