//! The samples in `examples/` keep the seeds' shape: the OpenShift template has the seed 000
//! template's parameters, Service names, arguments, probes and mounts, and the compose sample
//! the seed 002 sample's services, port and variables, with this image. (They run for real in
//! the image tests; this checks their shape without Docker.)

use serde_json::Value;
use std::path::PathBuf;

fn example(path: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

#[test]
fn the_openshift_template_keeps_the_seed_templates_parameters_services_and_commands() {
    let t: Value = serde_json::from_str(&example("openshift/postgresql_replica.json")).unwrap();
    assert_eq!(t["kind"], "Template");
    let params: Vec<&str> = t["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        params,
        [
            "POSTGRESQL_MASTER_USER",
            "POSTGRESQL_MASTER_PASSWORD",
            "POSTGRESQL_USER",
            "POSTGRESQL_PASSWORD",
            "POSTGRESQL_DATABASE",
            "POSTGRESQL_ADMIN_PASSWORD",
            "POSTGRESQL_MASTER_SERVICE_NAME",
            "POSTGRESQL_SLAVE_SERVICE_NAME",
            "VOLUME_CAPACITY",
            "IMAGESTREAMTAG",
            "NAMESPACE",
        ]
    );
    let objects = t["objects"].as_array().unwrap();
    let named = |kind: &str| -> Vec<&Value> { objects.iter().filter(|o| o["kind"] == kind).collect() };
    let services: Vec<&str> = named("Service").iter().map(|s| s["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(services, ["${POSTGRESQL_MASTER_SERVICE_NAME}", "${POSTGRESQL_SLAVE_SERVICE_NAME}"]);
    for s in named("Service") {
        assert_eq!(s["spec"]["clusterIP"], "None", "headless, one A record per pod");
        assert_eq!(s["spec"]["ports"][0]["port"], 5432);
    }
    let dcs = named("DeploymentConfig");
    assert_eq!(dcs.len(), 2);
    for (dc, arg, volume) in
        [(dcs[0], "run-postgresql-master", "persistentVolumeClaim"), (dcs[1], "run-postgresql-slave", "emptyDir")]
    {
        let spec = &dc["spec"]["template"]["spec"];
        let c = &spec["containers"][0];
        assert_eq!(c["args"][0], arg);
        assert_eq!(c["readinessProbe"]["exec"]["command"][0], "/usr/libexec/check-container");
        assert_eq!(c["livenessProbe"]["exec"]["command"][1], "--live");
        assert_eq!(c["volumeMounts"][0]["mountPath"], "/var/lib/pgsql/data");
        assert!(spec["volumes"][0].get(volume).is_some(), "{arg}: {volume}");
        let env: Vec<&str> = c["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
        for v in [
            "POSTGRESQL_MASTER_USER",
            "POSTGRESQL_MASTER_PASSWORD",
            "POSTGRESQL_USER",
            "POSTGRESQL_PASSWORD",
            "POSTGRESQL_DATABASE",
        ] {
            assert!(env.contains(&v), "{arg} lacks {v}");
        }
    }
    let pvc = named("PersistentVolumeClaim");
    assert_eq!(pvc[0]["metadata"]["name"], "postgresql-data-claim");
}

#[test]
fn the_compose_sample_keeps_the_seed_samples_services_port_and_variables() {
    let text = example("compose/seed/docker-compose.yml");
    for want in [
        "pg-master:",
        "pg-slave:",
        "\"7777:5432\"",
        "REPLICATE_FROM: 'pg-master'",
        "DESTROY_DATABASE_ON_RESTART:",
        "PROMOTE_MASTER:",
        "ALLOW_IP_RANGE:",
        "pg-master-data-dir:/var/lib/postgresql",
        "restart: 'always'",
        "pgrepl:latest",
    ] {
        assert!(text.contains(want), "the compose sample lacks {want:?}");
    }
    let makefile = example("compose/seed/Makefile");
    for target in
        ["up:", "down:", "scale:", "unscale:", "status:", "master-shell:", "slave-shell:", "master-log:", "slave-log:"]
    {
        assert!(makefile.lines().any(|l| l.starts_with(target)), "the sample's Makefile lacks {target}");
    }
}
