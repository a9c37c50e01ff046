//! The loop of one member: observe -> decide -> act -> publish. `member` owns the loop and the
//! agent's own memory (first cycle, passwords applied, stream clock); `act` carries out one
//! `Action` through `pgrepl-pg` and the store; `publish` writes the member's status; `chore` is
//! work asked of the loop from outside (restart, reinitialize); `follow` takes the cluster's
//! own settings from the spec.

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
