//! The Kubernetes manifests (`examples/kubernetes/`) and the OpenShift template
//! (`examples/openshift/pgrepl-ha.json`) pass `kubernetes-validate --strict` against a current
//! Kubernetes schema (PyPI's kubernetes-validate, offline, installed by `scripts/setup.sh` in
//! `target/test-python`), the template's objects once its parameters are filled in as
//! `oc process` would, and they keep the shape that makes the cluster work: the Services select
//! the member pods and reach the router's ports, the probes ask the HTTP API, the pods run
//! under the restricted security context, the store URL names the etcd pods, and no password is
//! written in a manifest. None of this runs a Kubernetes cluster.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Kubernetes version whose schemas the manifests are checked against.
const KUBERNETES: &str = "1.37.0";

const KUBERNETES_FILES: [&str; 3] = ["kubernetes/secret.yaml", "kubernetes/etcd.yaml", "kubernetes/pgrepl.yaml"];
const TEMPLATE: &str = "openshift/pgrepl-ha.json";

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn venv_bin(program: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-python/bin").join(program);
    assert!(p.exists(), "{} is missing: run scripts/setup.sh (it installs kubernetes-validate)", p.display());
    p
}

/// What `kubernetes-validate --strict` says of `file`: whether it passed, and its output.
fn validate(file: &Path) -> (bool, String) {
    let out = Command::new(venv_bin("kubernetes-validate"))
        .args(["--strict", "-k", KUBERNETES])
        .arg(file)
        .output()
        .expect("run kubernetes-validate");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Validates `file`, which holds `documents` objects: each must be reported as passed, with no
/// warning (a kind it has no schema for is only a warning, and would check nothing).
fn assert_valid(file: &Path, documents: usize) {
    let (ok, text) = validate(file);
    assert!(ok, "{} does not validate against Kubernetes {KUBERNETES}:\n{text}", file.display());
    let passed = text.lines().filter(|l| l.starts_with("INFO") && l.contains(" passed for resource ")).count();
    assert_eq!(passed, documents, "{}: every object validated:\n{text}", file.display());
    assert!(!text.lines().any(|l| l.starts_with("WARN") || l.starts_with("ERROR")), "{}:\n{text}", file.display());
}

/// The documents of a YAML file, as JSON (read by PyYAML, which kubernetes-validate uses too).
fn yaml_documents(file: &Path) -> Vec<Value> {
    let out = Command::new(venv_bin("python3"))
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
        ])
        .arg(file)
        .output()
        .expect("run python3");
    assert!(out.status.success(), "read {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Array(docs) => docs,
        other => panic!("{}: {other}", file.display()),
    }
}

fn template() -> Value {
    let text = std::fs::read_to_string(examples().join(TEMPLATE)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The value a parameter gets when the template is processed: its default, or for a generated
/// one a sample of what `[a-zA-Z0-9]{12}` makes.
fn parameter_values(t: &Value) -> Vec<(String, String)> {
    t["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let name = p["name"].as_str().unwrap().to_string();
            let value = match (p["value"].as_str(), p["generate"].as_str()) {
                (Some(v), _) => v.to_string(),
                (None, Some("expression")) => {
                    assert_eq!(p["from"], "[a-zA-Z0-9]{12}", "{name}: generated as the seed's");
                    format!("Sample{i:0>6}")
                }
                _ => panic!("parameter {name} has neither a value nor a generator"),
            };
            (name, value)
        })
        .collect()
}

/// The template's objects with every `${NAME}` replaced by its parameter's value.
fn processed_objects() -> Vec<Value> {
    let t = template();
    let mut text = serde_json::to_string(&t["objects"]).unwrap();
    for (name, value) in parameter_values(&t) {
        text = text.replace(&format!("${{{name}}}"), &value);
    }
    // Nothing else looks like a parameter (oc process would take a ${NAME} in a script for one).
    assert!(!text.contains("${"), "a parameter the template does not declare: {text}");
    match serde_json::from_str(&text).unwrap() {
        Value::Array(objects) => objects,
        other => panic!("objects: {other}"),
    }
}

/// Every object of the Kubernetes manifests.
fn kubernetes_objects() -> Vec<Value> {
    KUBERNETES_FILES.iter().flat_map(|f| yaml_documents(&examples().join(f))).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind && o["metadata"]["name"] == name).collect();
    assert_eq!(found.len(), 1, "one {kind} {name}");
    found[0]
}

/// Whether a label selector (`matchLabels` or a Service's plain map) selects `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.get("matchLabels").unwrap_or(selector).as_object().unwrap();
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"].as_array()?.iter().find(|e| e["name"] == name)
}

fn env_value<'a>(container: &'a Value, name: &str) -> &'a str {
    env(container, name).and_then(|e| e["value"].as_str()).unwrap_or_else(|| panic!("env {name}"))
}

/// The number of a container's port, given by number or by name.
fn port_number(container: &Value, port: &Value) -> u64 {
    match port {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(name) => container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no container port named {name}"))["containerPort"]
            .as_u64()
            .unwrap(),
        other => panic!("port {other}"),
    }
}

/// Checks what makes the cluster work, on either set of objects (`openshift`: the processed
/// template, whose pods leave the uid and fsGroup to the SCC).
fn assert_shape(objects: &[Value], master: &str, slave: &str, openshift: bool) {
    let members = one(objects, "StatefulSet", "pgrepl");
    let etcd = one(objects, "StatefulSet", "pgrepl-etcd");
    let member_labels = &members["spec"]["template"]["metadata"]["labels"];
    let etcd_labels = &etcd["spec"]["template"]["metadata"]["labels"];
    assert!(selects(&members["spec"]["selector"], member_labels));
    assert!(selects(&etcd["spec"]["selector"], etcd_labels));

    // Both StatefulSets: every pod at once, a volume each, a headless Service that publishes
    // the pods' names before they are ready, and the restricted security context.
    for (sts, mount) in [(members, "/var/lib/pgsql/data"), (etcd, "/var/lib/etcd")] {
        let name = sts["metadata"]["name"].as_str().unwrap();
        let spec = &sts["spec"];
        assert_eq!(spec["podManagementPolicy"], "Parallel", "{name}");
        assert!(spec["replicas"].as_u64().unwrap() >= 3, "{name}");
        let claim = &spec["volumeClaimTemplates"][0];
        let pod = &spec["template"]["spec"];
        let container = &pod["containers"][0];
        let mounted = container["volumeMounts"].as_array().unwrap().iter().find(|m| m["mountPath"] == mount);
        assert_eq!(mounted.unwrap_or_else(|| panic!("{name} mounts {mount}"))["name"], claim["metadata"]["name"]);
        let peers = one(objects, "Service", spec["serviceName"].as_str().unwrap());
        assert_eq!(peers["spec"]["clusterIP"], "None", "{name}: headless");
        assert_eq!(peers["spec"]["publishNotReadyAddresses"], true, "{name}");
        assert!(selects(&peers["spec"]["selector"], &spec["template"]["metadata"]["labels"]), "{name}");
        assert_eq!(pod["enableServiceLinks"], false, "{name}: no Service variables in pgrepl's environment");

        let security = &pod["securityContext"];
        assert_eq!(security["runAsNonRoot"], true, "{name}");
        assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        assert_eq!(security["fsGroupChangePolicy"], "OnRootMismatch", "{name}: PostgreSQL's 0700 kept");
        if openshift {
            assert!(security.get("runAsUser").is_none() && security.get("fsGroup").is_none(), "{name}: {security}");
        } else {
            assert_eq!(security["runAsUser"], 26, "{name}: the image's postgres");
        }
        let init = pod["initContainers"].as_array().into_iter().flatten();
        for c in pod["containers"].as_array().unwrap().iter().chain(init) {
            let s = &c["securityContext"];
            assert_eq!(s["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(s["capabilities"]["drop"], serde_json::json!(["ALL"]), "{name}");
            assert!(s["capabilities"].get("add").is_none() && s.get("privileged").is_none(), "{name}");
            assert!(s.get("runAsUser").is_none() || !openshift, "{name}");
        }
        let budget = objects
            .iter()
            .find(|o| {
                o["kind"] == "PodDisruptionBudget"
                    && selects(&o["spec"]["selector"], &spec["template"]["metadata"]["labels"])
            })
            .unwrap_or_else(|| panic!("{name}: a PodDisruptionBudget"));
        assert_eq!(budget["spec"]["maxUnavailable"], 1, "{name}");
    }

    // The seed's Services select every member (and no etcd pod) and reach its router.
    let member = &members["spec"]["template"]["spec"]["containers"][0];
    for (service, target) in [(master, 5432), (slave, 5433)] {
        let s = one(objects, "Service", service);
        assert!(selects(&s["spec"]["selector"], member_labels), "{service} selects the members");
        assert!(!selects(&s["spec"]["selector"], etcd_labels), "{service} selects no etcd pod");
        assert_eq!(s["spec"]["ports"][0]["port"], 5432, "{service}");
        assert_eq!(port_number(member, &s["spec"]["ports"][0]["targetPort"]), target, "{service}");
    }

    // Probes: the HTTP API on 8008.
    for (probe, path) in
        [("startupProbe", "/liveness"), ("livenessProbe", "/liveness"), ("readinessProbe", "/read-only")]
    {
        let get = &member[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(port_number(member, &get["port"]), 8008, "{probe}");
    }
    assert!(members["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap() >= 60);

    // The member's environment: its name from the pod's, the store at the etcd pods' names.
    let name_from = &env(member, "PGREPL_MEMBER").expect("PGREPL_MEMBER")["valueFrom"]["fieldRef"]["fieldPath"];
    assert_eq!(name_from, "metadata.name");
    for n in 0..100 {
        let pod = format!("{}-{n}", members["metadata"]["name"].as_str().unwrap());
        assert!(pgrepl_core::MemberName::new(&pod).is_ok(), "{pod} is a valid member name");
    }
    let etcd_name = etcd["metadata"]["name"].as_str().unwrap();
    let etcd_service = etcd["spec"]["serviceName"].as_str().unwrap();
    let etcd_pods: Vec<String> =
        (0..etcd["spec"]["replicas"].as_u64().unwrap()).map(|n| format!("{etcd_name}-{n}.{etcd_service}")).collect();
    let store = etcd_pods.iter().map(|p| format!("{p}:2379")).collect::<Vec<_>>().join(",");
    assert_eq!(env_value(member, "PGREPL_STORE"), format!("etcd://{store}"));
    assert_eq!(env_value(member, "PGREPL_TLS_CA_IN_STORE"), "true");
    // The member waits for etcd to have a leader before it starts, at the same endpoints.
    let wait = &members["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(wait["name"], "wait-for-etcd");
    let endpoints: Vec<&str> = wait["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(format!("etcd://{}", endpoints.join(",")), env_value(member, "PGREPL_STORE"));
    assert_eq!(wait["image"], member["image"]);
    assert_eq!(env_value(member, "PGREPL_ROUTER_SPLICE"), "copy", "the restricted context cannot splice");

    // etcd from the same image, with --pre-vote, its peers by their DNS names.
    let e = &etcd["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(e["command"], serde_json::json!(["etcd"]));
    assert_eq!(e["image"], member["image"], "etcd runs from the pgrepl image");
    let args: Vec<&str> = e["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(args.contains(&"--pre-vote=true"), "{args:?}");
    let peers = etcd_pods
        .iter()
        .map(|p| format!("{}=http://{p}:2380", p.split('.').next().unwrap()))
        .collect::<Vec<_>>()
        .join(",");
    assert!(args.contains(&format!("--initial-cluster={peers}").as_str()), "{args:?}");
    assert!(args.contains(&"--data-dir=/var/lib/etcd/data"), "{args:?}");

    // Passwords come from the Secret's keys, as files; no manifest writes one in an env value.
    let secret = one(objects, "Secret", "pgrepl");
    let keys = secret["stringData"].as_object().unwrap();
    let pod = &members["spec"]["template"]["spec"];
    let secret_volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["secret"]["secretName"] == "pgrepl");
    let secret_volume = secret_volume.expect("the Secret mounted")["name"].clone();
    let secret_dir = member["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == secret_volume).unwrap()
        ["mountPath"]
        .as_str()
        .unwrap();
    for var in ["POSTGRESQL_ADMIN_PASSWORD", "POSTGRESQL_MASTER_PASSWORD", "POSTGRESQL_PASSWORD"] {
        let path = env_value(member, &format!("{var}_FILE"));
        let key = path.strip_prefix(&format!("{secret_dir}/")).unwrap_or_else(|| panic!("{var}_FILE: {path}"));
        assert!(keys.contains_key(key), "{var}_FILE names the Secret's key {key}");
    }
    for o in objects {
        for c in o["spec"]["template"]["spec"]["containers"].as_array().into_iter().flatten() {
            for e in c["env"].as_array().into_iter().flatten() {
                let name = e["name"].as_str().unwrap();
                if (name.contains("PASSWORD") || name.contains("_KEY")) && !name.ends_with("_FILE") {
                    assert!(e.get("value").is_none(), "{name} is written in the manifest: {e}");
                }
            }
        }
    }
}

#[test]
fn the_kubernetes_manifests_pass_kubernetes_validate_strict() {
    for f in KUBERNETES_FILES {
        let path = examples().join(f);
        assert_valid(&path, yaml_documents(&path).len());
    }
}

#[test]
fn the_template_kind_is_not_in_the_kubernetes_schema_so_its_objects_are_validated() {
    // Given whole, the Template passes with a warning only: nothing in it would be checked.
    let (ok, text) = validate(&examples().join(TEMPLATE));
    assert!(ok && text.contains("Couldn't find schema for kind Template"), "{text}");

    let objects = processed_objects();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgrepl-ha-processed.yaml");
    let documents: Vec<String> = objects.iter().map(|o| serde_json::to_string_pretty(o).unwrap()).collect();
    std::fs::write(&file, documents.join("\n---\n")).unwrap();
    assert_valid(&file, objects.len());
}

#[test]
fn a_broken_manifest_fails_the_validation() {
    // The check above can fail: an unknown field, and a field of the wrong type.
    let text = std::fs::read_to_string(examples().join("kubernetes/pgrepl.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (from, to) in [
        ("  podManagementPolicy: Parallel\n", "  podManagementPolicy: Parallel\n  podManagement: Parallel\n"),
        ("  replicas: 3\n", "  replicas: three\n"),
    ] {
        assert!(text.contains(from));
        let file = dir.path().join("broken.yaml");
        std::fs::write(&file, text.replacen(from, to, 1)).unwrap();
        let (ok, out) = validate(&file);
        assert!(!ok && out.contains("ERROR"), "{to:?} passed:\n{out}");
    }
}

#[test]
fn the_kubernetes_manifests_keep_the_shape_that_makes_failover_work() {
    let objects = kubernetes_objects();
    assert_shape(&objects, "postgresql-master", "postgresql-slave", false);
    // The only passwords in a manifest are the Secret example's placeholders.
    let secret = one(&objects, "Secret", "pgrepl");
    for (key, value) in secret["stringData"].as_object().unwrap() {
        assert!(value.as_str().unwrap().starts_with("CHANGE-ME"), "{key}: a placeholder");
    }
}

#[test]
fn the_openshift_template_has_the_seed_templates_parameters_and_the_ha_cluster() {
    let t = template();
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
    let generated: Vec<&str> = t["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["generate"] == "expression")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(generated, ["POSTGRESQL_MASTER_PASSWORD", "POSTGRESQL_PASSWORD", "POSTGRESQL_ADMIN_PASSWORD"]);

    // The Secret holds the generated parameters and nothing else.
    let raw = t["objects"].as_array().unwrap();
    let secret = one(raw, "Secret", "pgrepl");
    for value in secret["stringData"].as_object().unwrap().values() {
        let param = value.as_str().unwrap().strip_prefix("${").and_then(|v| v.strip_suffix('}'));
        assert!(param.is_some_and(|p| generated.contains(&p)), "{value}: a generated parameter");
    }
    // The user's names and the volume size come from the parameters.
    let members = one(raw, "StatefulSet", "pgrepl");
    let member = &members["spec"]["template"]["spec"]["containers"][0];
    for var in ["POSTGRESQL_MASTER_USER", "POSTGRESQL_USER", "POSTGRESQL_DATABASE"] {
        assert_eq!(env_value(member, var), format!("${{{var}}}"));
    }
    assert_eq!(
        members["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "${VOLUME_CAPACITY}"
    );
    // A new image in the image stream rolls both StatefulSets.
    for (sts, container) in [(members, "pgrepl"), (one(raw, "StatefulSet", "pgrepl-etcd"), "etcd")] {
        let triggers: Value =
            serde_json::from_str(sts["metadata"]["annotations"]["image.openshift.io/triggers"].as_str().unwrap())
                .unwrap();
        assert_eq!(triggers[0]["from"]["name"], "${IMAGESTREAMTAG}");
        assert_eq!(
            triggers[0]["fieldPath"],
            format!("spec.template.spec.containers[?(@.name==\"{container}\")].image")
        );
        assert_eq!(sts["spec"]["template"]["spec"]["containers"][0]["name"], container);
    }

    let objects = processed_objects();
    let values = parameter_values(&t);
    let value = |name: &str| values.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert_shape(&objects, &value("POSTGRESQL_MASTER_SERVICE_NAME"), &value("POSTGRESQL_SLAVE_SERVICE_NAME"), true);
}
