//! `pgrepl config edit` and `pgrepl config history` on a running cluster, with `EDITOR` a small
//! script that edits the file as a user would: a valid edit reaches every member; a file saved
//! unchanged changes nothing; a value PostgreSQL refuses, or a line that is not `name = value`,
//! is refused in one line and nothing changes; a `config set` made while the editor is open
//! makes the edit fail and leaves that change alone; an editor that cannot run is said so.
//! Every change made (by `set`, `reset`, `edit` and `up`) is in the history, oldest first, with
//! its command, host and user and each parameter's old and new value.

mod common;

use common::{eventually, pgrepl_bin, TestCluster};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

/// An editor: a shell script (run as the cluster's OS user) whose `$1` is the file to edit.
fn editor(c: &TestCluster, name: &str, body: &str) -> PathBuf {
    let dir = c.scratch("editors");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\nset -e\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn edit(c: &TestCluster, editor: &Path) -> Output {
    c.run_env(&["config", "edit"], &[("EDITOR", editor.to_str().unwrap()), ("VISUAL", "false")])
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_edit_writes_a_valid_edit_refuses_a_bad_or_late_one_and_every_change_is_in_the_history() {
    let c = TestCluster::new();
    c.ok(&["up", "--replicas", "1"]);
    let members = c.all_members();
    assert_eq!(members.len(), 2);

    // A valid edit: the editor sees the header and the parameters in a file only its user may
    // read, and what it saves reaches every member.
    c.ok(&["config", "set", "maintenance_work_mem=32MB"]);
    let add = editor(&c, "add.sh", "stat -c 'mode %a' \"$1\"\ncat \"$1\"\nprintf \"work_mem = '9MB'\\n\" >> \"$1\"");
    let out = edit(&c, &add);
    let said = stdout(&out);
    assert!(out.status.success(), "{said}{}", stderr(&out));
    assert!(said.contains("mode 600\n"), "{said}");
    assert!(said.contains("# The PostgreSQL parameters of cluster"), "{said}");
    assert!(said.contains("changes nothing"), "{said}");
    assert!(said.contains("\nmaintenance_work_mem = '32MB'\n"), "{said}");
    assert!(said.contains("work_mem: (default) -> '9MB' for every member"), "{said}");
    for (name, port) in &members {
        eventually(LIMIT, &format!("work_mem on {name}"), || async {
            (c.show(*port, "work_mem").await.as_deref() == Some("9MB")).then_some(())
        })
        .await;
    }
    let temp_files = || {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("pgrepl-config-"))
            .count()
    };
    let scratch_before = temp_files();

    // Saved unchanged: nothing written.
    let at = c.config_revision();
    let out = edit(&c, &editor(&c, "same.sh", "true"));
    assert!(out.status.success() && stdout(&out).contains("nothing changed"), "{}", stderr(&out));
    assert_eq!(c.config_revision(), at);

    // Refused, in one line, and nothing written: a value PostgreSQL refuses, a line that is not
    // `name = value`, a parameter pgrepl sets itself, an editor that fails or cannot run.
    for (name, body, words) in [
        (
            "range.sh",
            "sed -i \"s/^work_mem = .*/work_mem = '1'/\" \"$1\"",
            "outside the valid range for parameter \"work_mem\"",
        ),
        ("line.sh", "echo 'work_mem 10MB' >> \"$1\"", "is not `name = 'value'` or a comment"),
        ("port.sh", "echo \"port = '6000'\" >> \"$1\"", "port is set by pgrepl on every member"),
        ("fails.sh", "exit 3", "ended with exit status: 3"),
    ] {
        let out = edit(&c, &editor(&c, name, body));
        let err = stderr(&out);
        assert!(!out.status.success() && err.contains(words), "{name}: {err}");
        assert!(err.contains("nothing was changed") && err.trim().lines().count() == 1, "{name}: {err}");
    }
    let out = edit(&c, Path::new("/nonexistent/editor"));
    let err = stderr(&out);
    assert!(!out.status.success() && err.contains("could not be run; set EDITOR"), "{err}");
    let appends = editor(&c, "line2.sh", "echo \"appended line $(( $(wc -l < \"$1\") + 1 ))\"\necho 'x' >> \"$1\"");
    let out = edit(&c, &appends);
    let number = stdout(&out).trim().strip_prefix("appended line ").unwrap().to_string();
    assert!(stderr(&out).contains(&format!("error: line {number}: \"x\" is not")), "{}", stderr(&out));
    assert_eq!(c.config_revision(), at, "nothing was written");

    // A change made while the editor is open: the edit fails, that change stays.
    let late = editor(
        &c,
        "late.sh",
        &format!(
            "'{}' --dir '{}' config set work_mem=12MB >/dev/null\nsed -i \"s/^work_mem = .*/work_mem = '11MB'/\" \"$1\"",
            pgrepl_bin().display(),
            c.dir.display()
        ),
    );
    let out = edit(&c, &late);
    let err = stderr(&out);
    assert!(!out.status.success() && err.contains("the cluster's spec changed while this command ran"), "{err}");
    assert!(err.contains("nothing was changed") && err.trim().lines().count() == 1, "{err}");
    assert!(c.ok(&["config", "show"]).contains("work_mem = '12MB'"));
    assert_eq!(temp_files(), scratch_before, "every edit's file is removed");

    // `config reset`, and `up` applying a changed [parameters], are recorded too.
    c.ok(&["config", "reset", "maintenance_work_mem"]);
    let toml_path = c.dir.join("pgrepl.toml");
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    assert!(toml.contains("work_mem = \"12MB\""), "{toml}");
    std::fs::write(&toml_path, toml.replace("work_mem = \"12MB\"", "work_mem = \"12MB\"\njit = \"off\"")).unwrap();
    c.ok(&["up"]);
    assert!(c.ok(&["config", "show"]).contains("jit = 'off'"));

    let history: Value = serde_json::from_str(&c.ok(&["config", "history", "--json"])).unwrap();
    let changes = history.as_array().unwrap();
    let summary: Vec<(String, String, Value, Value)> = changes
        .iter()
        .flat_map(|change| {
            let command = change["command"].as_str().unwrap().to_string();
            change["parameters"]
                .as_object()
                .unwrap()
                .iter()
                .map(move |(name, v)| (command.clone(), name.clone(), v["old"].clone(), v["new"].clone()))
        })
        .collect();
    let s = |v: &str| Value::String(v.into());
    assert_eq!(
        summary,
        [
            ("pgrepl config set".into(), "maintenance_work_mem".into(), Value::Null, s("32MB")),
            ("pgrepl config edit".into(), "work_mem".into(), Value::Null, s("9MB")),
            ("pgrepl config set".into(), "work_mem".into(), s("9MB"), s("12MB")),
            ("pgrepl config reset".into(), "maintenance_work_mem".into(), s("32MB"), Value::Null),
            ("pgrepl up".into(), "jit".into(), Value::Null, s("off")),
        ]
    );
    let user = String::from_utf8(std::process::Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let mut last = 0;
    for (i, change) in changes.iter().enumerate() {
        // The third ran inside the editor, as the cluster's OS user; the others as this test.
        if i != 2 {
            assert_eq!(change["user"], user.trim(), "who ran it, not the cluster's run_as: {change}");
        }
        assert!(!change["host"].as_str().unwrap().is_empty(), "{change}");
        let at = change["at_ms"].as_u64().unwrap();
        assert!(at >= last, "oldest first: {history:#}");
        last = at;
    }
    let table = c.ok(&["config", "history"]);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 1 + summary.len(), "{table}");
    assert!(rows[0].starts_with("WHEN (UTC)"), "{table}");
    assert!(rows[3].contains("pgrepl config set (") && rows[3].ends_with("'9MB' -> '12MB'"), "{table}");
    assert!(rows[5].contains("pgrepl up (") && rows[5].contains("jit") && rows[5].ends_with("(default) -> 'off'"));
}
