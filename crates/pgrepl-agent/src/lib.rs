//! The loop of one member: observe -> decide -> act -> publish. `member` owns the loop and the
//! agent's own memory (first cycle, the clocks, the kept connection); its `observe` only reads
//! the store and the local server, its `lease` renews and releases the lease and tells the
//! fencer what each cycle saw. `act` carries out one `Action` through `pgrepl-pg` and the store
//! and owns what it applied (`Applied`; `act/refresh` is the work after a quiet cycle);
//! `publish` builds the member's status purely and its `Publisher` writes it; `store_writer`
//! is the one handle on the store; `chore` is work asked of the loop from outside (restart,
//! reinitialize); `follow` takes the cluster's own settings and this member's port from the
//! spec.

mod act;
pub mod chore;
mod fence;
pub mod fencer;
pub mod fixed;
mod follow;
mod member;
pub mod probe;
mod publish;
pub mod secrets;
mod seen;
pub mod settings;
mod store_writer;
mod stream_clock;
pub mod tls;

pub use chore::{Chore, ChoreError, Chores};
pub use member::Agent;
pub use probe::Probe;
pub use publish::wall_clock_ms;
pub use secrets::Secrets;
pub use settings::Settings;
pub use tls::{CertSource, Tls, TlsOn};
