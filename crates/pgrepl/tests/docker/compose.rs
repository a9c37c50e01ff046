//! The HA compose sample (`examples/compose/ha/`) run as a project of its own: a unique project
//! name, subnet and host ports, its `.env` written by the sample's Makefile into a temporary
//! directory. Dropping it takes the project down with its volumes.

use super::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

pub const MEMBERS: [&str; 3] = ["pg-1", "pg-2", "pg-3"];

pub fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/compose/ha")
}

pub struct Project {
    pub name: String,
    /// The first three octets of the project's network (`PGREPL_SUBNET`).
    pub subnet: String,
    pub rw_port: u16,
    pub ro_port: u16,
    /// Holds the `.env` the Makefile writes.
    pub dir: tempfile::TempDir,
    env: BTreeMap<String, String>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Project {
    /// `make up` of the sample with `vars` (say `PGREPL_SYNCHRONOUS=on`) on free host ports, on a
    /// subnet no other network of this engine holds.
    pub fn up(vars: &[(&str, &str)], rw_port: u16, ro_port: u16) -> Project {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let name = format!("pgrepl-ha-{}-{n}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        let networks = ok(&docker(&["network", "ls", "-q"]));
        let mut args = vec!["network", "inspect", "--format", "{{range .IPAM.Config}}{{.Subnet}} {{end}}"];
        args.extend(networks.split_whitespace());
        let taken = ok(&docker(&args));
        let third = (100..250)
            .map(|i| (i + std::process::id() as usize * 7 + n as usize * 13) % 150 + 100)
            .find(|t| !taken.contains(&format!("172.30.{t}.")))
            .expect("a free 172.30.X.0/24");
        let mut env: BTreeMap<String, String> = [
            ("COMPOSE_PROJECT_NAME", name.clone()),
            ("PGREPL_IMAGE", image()),
            ("PGREPL_SUBNET", format!("172.30.{third}")),
            ("PGREPL_RW_PORT", rw_port.to_string()),
            ("PGREPL_RO_PORT", ro_port.to_string()),
            ("ENV_FILE", dir.path().join(".env").display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let project = Project { name, subnet: format!("172.30.{third}"), rw_port, ro_port, dir, env };
        project.make("up");
        project
    }

    /// `make -s TARGET` in the sample's directory, as this project; its output.
    pub fn make(&self, target: &str) -> String {
        let out = Command::new("make")
            .args(["-s", target])
            .current_dir(sample())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .envs(&self.env)
            .output()
            .expect("run make");
        ok(&out)
    }

    /// `sh member.sh ARG` (what the Makefile's `master-*` and `slave-*` targets run) as this
    /// project; its output.
    pub fn member_sh(&self, arg: &str) -> String {
        let compose = format!("docker-compose --env-file {}", self.env["ENV_FILE"]);
        let out = Command::new("sh")
            .args(["./member.sh", arg])
            .current_dir(sample())
            .envs(&self.env)
            .env("COMPOSE", compose)
            .output()
            .expect("run member.sh");
        ok(&out)
    }

    /// `docker-compose ARGS` as this project.
    pub fn compose(&self, args: &[&str]) -> Output {
        Command::new("docker-compose")
            .arg("--env-file")
            .arg(&self.env["ENV_FILE"])
            .args(args)
            .current_dir(sample())
            .envs(&self.env)
            .output()
            .expect("run docker-compose")
    }

    /// A password the Makefile wrote into `.env`.
    pub fn password(&self, name: &str) -> String {
        let text = std::fs::read_to_string(&self.env["ENV_FILE"]).expect("the project's .env");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in .env"))
            .to_string()
    }

    pub fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.name)
    }

    /// The member `service`'s PostgreSQL, at its fixed address on the project's network.
    pub fn pg_addr(&self, service: &str) -> SocketAddr {
        let host = MEMBERS.iter().position(|m| *m == service).expect("a member") + 21;
        SocketAddr::new(format!("{}.{host}", self.subnet).parse::<IpAddr>().unwrap(), 5434)
    }

    pub fn rw(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.rw_port))
    }

    pub fn ro(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ro_port))
    }

    /// `pgrepl status --json` inside the first member container that answers (not `except`).
    pub fn status_except(&self, except: &[&str]) -> Option<Value> {
        MEMBERS.iter().filter(|m| !except.contains(m)).find_map(|m| {
            let text = exec(&self.container(m), "pgrepl --dir /var/lib/pgsql/data/pgrepl status --json", &[]).ok()?;
            serde_json::from_str(&text).ok()
        })
    }

    pub fn status(&self) -> Option<Value> {
        self.status_except(&[])
    }

    /// The leader, once every member runs or streams on one timeline (its status then).
    pub fn converged(&self, except: &[&str]) -> Option<(String, Value)> {
        let s = self.status_except(except)?;
        let m = s["members"].as_array()?;
        let ok = m.len() == MEMBERS.len()
            && m.iter().all(|x| x["state"] == "running" || x["state"] == "streaming")
            && m.iter().all(|x| x["timeline"] == m[0]["timeline"]);
        let leader = s["leader"].as_str()?.to_string();
        ok.then_some((leader, s))
    }

    /// The cluster CA, as `pgrepl ca show` prints it in a member container.
    pub fn ca(&self) -> String {
        MEMBERS
            .iter()
            .find_map(|m| exec(&self.container(m), "pgrepl --dir /var/lib/pgsql/data/pgrepl ca show", &[]).ok())
            .expect("a member prints the CA")
    }

    pub fn logs(&self, service: &str) -> String {
        let out = docker(&["logs", &self.container(service)]);
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for service in MEMBERS.iter().chain(&["router-a"]) {
                let log = self.logs(service);
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- {service} (last lines) ---");
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
        let _ = self.compose(&["down", "-v", "--remove-orphans", "-t", "5"]);
    }
}
