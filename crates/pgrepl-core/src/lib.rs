//! pgrepl's pure domain: the words of DESIGN.md as types, the cluster view read from the store,
//! and `decide()`. No tokio, no I/O, no clock: everything the decision needs is an input.

pub mod decide;
pub mod decision;
pub mod failover;
pub mod fence;
pub mod fixed;
pub mod fork;
pub mod health;
pub mod lease;
pub mod local;
pub mod maintenance;
pub mod names;
pub mod restart;
pub mod spec;
pub mod sync;
pub mod testing;
pub mod tuning;
pub mod view;

pub use decide::{decide, Observation};
pub use decision::{Action, Decision, Reason, SpecWork};
pub use fixed::{decide_fixed, FixedAction, FixedDecision, FixedObservation, FixedReason, FixedRole, UpstreamState};
pub use fork::{Fork, Replayed, TimelineSwitch};
pub use local::{DataDir, ReplicationRow, Server, Slot, Upstream};
pub use names::{BadLsn, BadMemberName, Lsn, MemberName, SystemId, Timeline};
pub use spec::{FailoverSpec, MemberSpec, PasswordKind, PasswordVersions, Spec, SyncMode};
pub use tuning::{MaxLag, RoFallback, Routing, Timing};
pub use view::{
    keys, parameter_changes, ClusterView, Initialized, LeaderRecord, MemberState, MemberStatus, PauseRecord, Role,
    SettingsChange, SettingsHistory, SyncRecord, TargetRecord, ValueChange,
};
