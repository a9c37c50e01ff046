//! One module per subcommand, plus what several share (ports, waiting, the ready summary, why
//! a change was refused).

pub mod agent;
pub mod ca;
pub mod container;
pub mod down;
pub mod endpoints;
pub mod logs;
pub mod member_ctl;
pub mod node;
pub mod params;
pub mod passwd;
pub mod pause;
pub mod ports;
pub mod progress;
pub mod promote;
pub mod psql;
pub mod refusal;
pub mod remove;
pub mod restart;
pub mod router;
pub mod scale;
pub mod setup;
pub mod status;
pub mod summary;
pub mod term;
pub mod up;
pub mod url;
pub mod wait;
pub mod watch;
