//! The seed 002 compose sample (`examples/compose/seed/`), run as its README says, through its
//! Makefile's targets: up, the slave streams and shows the master's table, scale to three
//! slaves and back, down. Needs the image and docker-compose: `make test-image`.

mod docker;

use docker::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/compose/seed")
}

/// `make TARGET` in the sample's directory, with this test's own compose project name.
fn make(project: &str, target: &str) -> String {
    let out = Command::new("make")
        .arg("-s")
        .arg(target)
        .current_dir(sample())
        .env("COMPOSE_PROJECT_NAME", project)
        .env("PGREPL_IMAGE", image())
        .output()
        .expect("run make");
    ok(&out)
}

struct Project(String);

impl Drop for Project {
    fn drop(&mut self) {
        let _ = Command::new("docker-compose")
            .args(["down", "-v", "--remove-orphans"])
            .current_dir(sample())
            .env("COMPOSE_PROJECT_NAME", &self.0)
            .output();
    }
}

#[test]
#[ignore = "needs the pgrepl image: make test-image"]
fn the_seed_compose_sample_replicates_scales_and_comes_down() {
    require_image();
    let project = Project(format!("pgrepl-t{}", std::process::id()));
    let p = project.0.as_str();
    make(p, "up");
    let master = format!("{p}_pg-master_1");
    let slave = format!("{p}_pg-slave_1");
    wait_streaming(&master, 1, LIMIT);
    psql(&master, "gis", "create table sample(x int); insert into sample values (5)").unwrap();
    eventually("the row on the slave", LIMIT, || {
        (psql(&slave, "gis", "select x from sample").ok()? == "5").then_some(())
    });
    // The master is published on 7777, as in the seed's sample.
    assert_eq!(psql_from_host(7777, "docker", "docker", "gis", "select x from sample").as_deref(), Ok("5"));
    let status = make(p, "status");
    assert!(status.contains("streaming"), "{status}");

    make(p, "scale");
    wait_streaming(&master, 3, LIMIT);
    make(p, "unscale");
    wait_streaming(&master, 1, LIMIT);
    make(p, "down");
    let left = ok(&docker(&["ps", "-a", "-q", "--filter", &format!("label=com.docker.compose.project={p}")]));
    assert!(left.trim().is_empty(), "containers left after make down: {left}");
}
