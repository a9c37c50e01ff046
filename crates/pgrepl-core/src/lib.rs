//! pgrepl's pure domain: the words of DESIGN.md as types, the cluster view read from the store,
//! and `decide()`. No tokio, no I/O, no clock: everything the decision needs is an input.

pub mod local;
pub mod names;

pub use local::{DataDir, ReplicationRow, Server, Slot, Upstream};
pub use names::{BadLsn, BadMemberName, Lsn, MemberName, SystemId, Timeline};
