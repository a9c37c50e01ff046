//! Where things live in a cluster directory. Owns the paths only; creates nothing.
//!
//! ```text
//! DIR/pgrepl.toml            configuration (no passwords)
//! DIR/secrets.json           passwords, mode 0600
//! DIR/ca.crt, DIR/ca.key     the cluster CA (made by `up`; given to `node`), the key 0600
//! DIR/store/                 the file store (cluster state; with `store = etcd://...` it is in etcd)
//! DIR/supervisor.pid|.log    the local supervisor
//! DIR/router.lock|.log       the router (its lock holds its pid)
//! DIR/router.api             where the router serves its metrics: `PID HOST:PORT`
//! DIR/members/NAME/data      the member's PostgreSQL data directory
//! DIR/members/NAME/member.log  the agent's and PostgreSQL's log
//! DIR/members/NAME/run/      the member's unix socket directory (0700)
//! DIR/members/NAME/pgpass    the member's libpq password file (0600)
//! DIR/members/NAME/agent.lock  held by the member's running agent (its pid)
//! DIR/members/NAME/tls/      what the member's PostgreSQL reads: server.crt, server.key, ca.crt
//!                            (0700, files 0600; installed by its agent, only once they pass)
//! ```

use pgrepl_core::MemberName;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        Layout { dir }
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("pgrepl.toml")
    }
    pub fn secrets(&self) -> PathBuf {
        self.dir.join("secrets.json")
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn tls_dir(&self, m: &MemberName) -> PathBuf {
        self.member(m).join("tls")
    }
    pub fn store(&self) -> PathBuf {
        self.dir.join("store")
    }
    pub fn supervisor_pid(&self) -> PathBuf {
        self.dir.join("supervisor.pid")
    }
    pub fn supervisor_log(&self) -> PathBuf {
        self.dir.join("supervisor.log")
    }
    pub fn member(&self, m: &MemberName) -> PathBuf {
        self.dir.join("members").join(m.as_str())
    }
    pub fn data(&self, m: &MemberName) -> PathBuf {
        self.member(m).join("data")
    }
    pub fn log(&self, m: &MemberName) -> PathBuf {
        self.member(m).join("member.log")
    }
    pub fn socket_dir(&self, m: &MemberName) -> PathBuf {
        self.member(m).join("run")
    }
    pub fn agent_lock(&self, m: &MemberName) -> PathBuf {
        self.member(m).join("agent.lock")
    }
    pub fn router_lock(&self) -> PathBuf {
        self.dir.join("router.lock")
    }
    pub fn router_api(&self) -> PathBuf {
        self.dir.join("router.api")
    }
    pub fn router_log(&self) -> PathBuf {
        self.dir.join("router.log")
    }
    pub fn passfile(&self, m: &MemberName) -> PathBuf {
        self.member(m).join("pgpass")
    }
    /// The longest unix socket path a member of this directory would use.
    pub fn longest_socket_path(&self) -> usize {
        self.socket_dir(&MemberName::numbered(999)).join(".s.PGSQL.65535").as_os_str().len()
    }
}
