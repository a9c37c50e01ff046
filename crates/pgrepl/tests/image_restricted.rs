//! The Kubernetes manifests' pods (`examples/kubernetes/`), run as Docker containers under the
//! restrictions of their security context: an arbitrary uid of group 0 (`--user
//! 1000650000:0`, as OpenShift's restricted SCC gives), every capability dropped (`--cap-drop
//! ALL`), no new privileges, Docker's default seccomp profile. Three etcd members with the
//! etcd StatefulSet's arguments and the pod names as network aliases, three members with the
//! member StatefulSet's environment (the pod name as `PGREPL_MEMBER`, the passwords as files,
//! the CA in the store): a leader is elected, every member holds the same CA, the probes'
//! paths answer 200, writes go through each member's router, a member given `auto` splicing
//! says it copies, and a SIGTERM of the primary hands over. Needs the image: `make test-image`.

mod docker;

use docker::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(150);

/// The pod security context of the manifests, as `docker run` options.
const RESTRICTED: [&str; 6] = ["--user", "1000650000:0", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"];

const PASSWORDS: [(&str, &str); 3] =
    [("admin-password", "adm1nPass"), ("replication-password", "r3plPass"), ("user-password", "us3rPass")];

/// The documents of a manifest, as JSON (PyYAML from `target/test-python`, as tests/manifests.rs
/// reads them).
fn manifest(file: &str) -> Vec<Value> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join("target/test-python/bin/python3");
    assert!(python.exists(), "{} is missing: run scripts/setup.sh", python.display());
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
        ])
        .arg(root.join("examples/kubernetes").join(file))
        .output()
        .expect("run python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn statefulset(file: &str) -> Value {
    manifest(file).into_iter().find(|o| o["kind"] == "StatefulSet").unwrap()
}

/// `GET http://ADDRESS:8008PATH` from inside `container` (bash's /dev/tcp: the image has no
/// curl): the status code.
fn api_status(container: &str, path: &str) -> Option<u16> {
    let script =
        format!("exec 3<>/dev/tcp/$(hostname -i)/8008 && printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3 && head -1 <&3");
    let line = exec(container, &script, &[]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `eventually`, but a timeout also shows the last lines of every container's log.
fn until<T>(what: &str, containers: &[String], f: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    let mut f = f;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > LIMIT {
            let tails: Vec<String> = containers
                .iter()
                .map(|c| {
                    let log = logs(c);
                    let lines: Vec<&str> = log.lines().collect();
                    format!("--- {c}:\n{}", lines[lines.len().saturating_sub(30)..].join("\n"))
                })
                .collect();
            panic!("timed out after {LIMIT:?} waiting for {what}\n{}", tails.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn status(container: &str) -> Option<Value> {
    let text = exec(container, "pgrepl --dir /var/lib/pgsql/data/pgrepl status --json", &[]).ok()?;
    serde_json::from_str(&text).ok()
}

fn converged(container: &str, members: usize) -> Option<Value> {
    let s = status(container)?;
    let m = s["members"].as_array()?;
    let ok = m.len() == members
        && s["leader"].is_string()
        && m.iter().all(|x| x["state"] == "running" || x["state"] == "streaming")
        && m.iter().all(|x| x["timeline"] == m[0]["timeline"]);
    ok.then_some(s)
}

/// A write through `container`'s read-write endpoint (its router), as the application user.
fn write_through(container: &str, value: u32) -> Option<()> {
    let sql =
        format!("create table if not exists k8s(x int); insert into k8s values ({value}); select pg_is_in_recovery()");
    exec(
        container,
        &format!("psql -X -q -At -h $(hostname -i) -p 5432 -U user -d userdb -c '{sql}'"),
        &[("PGPASSWORD", "us3rPass"), ("PGCONNECT_TIMEOUT", "3")],
    )
    .ok()
    .filter(|out| out.trim() == "f")
    .map(|_| ())
}

#[test]
#[ignore = "needs the pgrepl image: make test-image"]
fn the_manifests_pods_elect_a_leader_and_route_under_the_restricted_context() {
    require_image();
    let mut net = Net::new("restricted");

    // The Secret, as the kubelet mounts it: files of mode 0440 that the pod's group reads.
    let secrets = tempfile::tempdir().unwrap();
    for (key, value) in PASSWORDS {
        let file = secrets.path().join(key);
        std::fs::write(&file, value).unwrap();
        let mode = if std::os::unix::fs::chown(&file, Some(0), Some(0)).is_ok() { 0o440 } else { 0o444 };
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::set_permissions(secrets.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    // etcd: the StatefulSet's command and arguments, $(POD_NAME) as Kubernetes expands it, the
    // pod's DNS name (pgrepl-etcd-0.pgrepl-etcd, ...) as a network alias. Its volume is made
    // group-0 writable first by a root container, as the kubelet's fsGroup makes the real one
    // writable to the pod's group (the image's /var/lib/etcd is etcd's, mode 0700), and given
    // a lost+found as a new ext4 volume has (Docker copies the image's directory over an empty
    // volume at every mount).
    let etcd = statefulset("etcd.yaml");
    let etcd_name = etcd["metadata"]["name"].as_str().unwrap().to_string();
    let etcd_service = etcd["spec"]["serviceName"].as_str().unwrap().to_string();
    let container = &etcd["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["command"][0], "etcd");
    for n in 0..etcd["spec"]["replicas"].as_u64().unwrap() {
        let pod = format!("{etcd_name}-{n}");
        let args: Vec<String> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().replace("$(POD_NAME)", &pod))
            .collect();
        let mount = container["volumeMounts"][0]["mountPath"].as_str().unwrap();
        let fs_group = Spec {
            name: format!("{pod}-fsgroup"),
            args: ["-c", &format!("chgrp 0 {mount} && chmod 2770 {mount} && mkdir -m 2770 {mount}/lost+found")]
                .map(String::from)
                .to_vec(),
            entrypoint: Some("bash".into()),
            ..Spec::default()
        }
        .user("0")
        .volume(&pod, mount);
        let (code, log) = net.run_to_exit(&fs_group, LIMIT);
        assert_eq!(code, 0, "{log}");
        let spec = Spec { name: pod.clone(), args, entrypoint: Some("etcd".into()), ..Spec::default() }
            .alias(&format!("{pod}.{etcd_service}"))
            .volume(&pod, mount)
            .flags(&RESTRICTED);
        net.run(&spec);
    }

    // The members: the StatefulSet's environment as it is, the pod name where it asks for it,
    // the Secret's files where its volume is mounted.
    let members = statefulset("pgrepl.yaml");
    let name = members["metadata"]["name"].as_str().unwrap().to_string();
    let service = members["spec"]["serviceName"].as_str().unwrap().to_string();
    let pod = &members["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let secret_dir = container["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == "secrets").unwrap()
        ["mountPath"]
        .as_str()
        .unwrap()
        .to_string();
    let data_dir = container["volumeMounts"][0]["mountPath"].as_str().unwrap().to_string();
    let init = &pod["initContainers"][0];
    let mut names = Vec::new();
    for n in 0..members["spec"]["replicas"].as_u64().unwrap() {
        let pod_name = format!("{name}-{n}");
        // The init container first, to its end, as the kubelet runs it.
        let command: Vec<String> = init["command"]
            .as_array()
            .unwrap()
            .iter()
            .chain(init["args"].as_array().unwrap())
            .map(|a| a.as_str().unwrap().into())
            .collect();
        let mut wait = Spec {
            name: format!("{pod_name}-{}", init["name"].as_str().unwrap()),
            entrypoint: Some(command[0].clone()),
            args: command[1..].to_vec(),
            ..Spec::default()
        }
        .flags(&RESTRICTED);
        for e in init["env"].as_array().into_iter().flatten() {
            wait = wait.env(e["name"].as_str().unwrap(), e["value"].as_str().unwrap());
        }
        let (code, log) = net.run_to_exit(&wait, LIMIT);
        assert_eq!(code, 0, "{log}");
        let mut spec = Spec::new(&pod_name)
            .alias(&format!("{pod_name}.{service}"))
            .volume(&pod_name, &data_dir)
            .flags(&RESTRICTED)
            .flags(&["-v", &format!("{}:{secret_dir}:ro", secrets.path().display())])
            // The kubelet restarts a pod's container that exits (restartPolicy Always).
            .flags(&["--restart", "on-failure"]);
        for e in container["env"].as_array().unwrap() {
            let var = e["name"].as_str().unwrap();
            let value = match (e["value"].as_str(), e["valueFrom"]["fieldRef"]["fieldPath"].as_str()) {
                (Some(v), _) => v.to_string(),
                (None, Some("metadata.name")) => pod_name.clone(),
                _ => panic!("{var}: {e}"),
            };
            spec = spec.env(var, &value);
        }
        // One member keeps the default `auto`, to show that splicing is not possible here.
        if n == 2 {
            spec = spec.env("PGREPL_ROUTER_SPLICE", "auto");
        }
        names.push(net.run(&spec));
    }

    let mut all = names.clone();
    all.extend((0..3).map(|n| net.scoped(&format!("{etcd_name}-{n}"))));
    let first = until("three members running and streaming, one leading", &all, || converged(&names[0], 3));
    let leader = first["leader"].as_str().unwrap().to_string();
    eprintln!("converged, {leader} leading: {first}");

    // The restrictions hold inside: the uid, no capabilities.
    let id = exec(&names[0], "id -u; grep CapEff /proc/1/status", &[]).unwrap();
    assert!(id.starts_with("1000650000\n") && id.contains("0000000000000000"), "{id}");

    // One CA, made by the first member and taken from etcd by the others.
    let cas: Vec<String> =
        names.iter().map(|c| exec(c, "cat /var/lib/pgsql/data/pgrepl/ca.crt", &[]).unwrap()).collect();
    assert!(cas[0].contains("BEGIN CERTIFICATE") && cas.iter().all(|c| *c == cas[0]), "one CA: {cas:?}");

    // The probes' paths, as the kubelet asks them: every member is live and ready.
    for c in &names {
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            let path = container[probe]["httpGet"]["path"].as_str().unwrap();
            let code = eventually(&format!("{c} {path}"), LIMIT, || api_status(c, path).filter(|s| *s == 200));
            assert_eq!(code, 200);
        }
    }

    // Writes through every member's read-write endpoint reach the primary; reads through the
    // read-only one reach a replica.
    for (i, c) in names.iter().enumerate() {
        until(&format!("a write through {c}'s router"), &all, || write_through(c, i as u32));
    }
    let read = exec(
        &names[0],
        "psql -X -q -At -h $(hostname -i) -p 5433 -U user -d userdb -c 'select pg_is_in_recovery()'",
        &[("PGPASSWORD", "us3rPass")],
    );
    assert_eq!(read.as_deref().map(str::trim), Ok("t"));
    let log = logs(&names[2]);
    assert!(log.contains("the router will copy connections' bytes itself: kernel splicing is not available"), "{log}");
    for c in &names[..2] {
        assert!(!logs(c).contains("kernel splicing is not available"), "{c} was given copy");
    }

    // The kubelet deleting the primary's pod: SIGTERM, the grace period; another member leads
    // and takes writes.
    let old = net.scoped(&leader);
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap().to_string();
    ok(&docker(&["stop", "-t", &grace, &old]));
    let survivor = names.iter().find(|c| **c != old).unwrap().clone();
    let new = until("another member to lead", &all, || {
        status(&survivor)?["leader"].as_str().filter(|l| *l != leader).map(String::from)
    });
    until("a write through a survivor's router", &all, || write_through(&survivor, 99));
    eprintln!("{leader} stopped, {new} leads, a write through {survivor} reached it");
}
