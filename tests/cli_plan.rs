//! `machine-config-daemon plan` as an admin runs it: exit codes, the one-line error naming file and field,
//! the JSON document, the shipped examples.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_machine-config-daemon");
const D1: &str =
    "quay.io/os/os@sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str =
    "quay.io/os/os@sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("MCD_LOG")
        .output()
        .expect("run the binary")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Dir(tempfile::tempdir().unwrap())
    }
    fn write(&self, name: &str, body: &str) -> String {
        let p = self.0.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_string()
    }
}

fn mc(spec: &str) -> String {
    format!(
        "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nmetadata:\n  name: test\nspec:\n{spec}"
    )
}

fn ign_files(files: &str) -> String {
    mc(&format!(
        "  config:\n    ignition:\n      version: 3.4.0\n    storage:\n      files:\n{files}"
    ))
}

#[test]
fn examples_plan_cleanly() {
    let ex = examples();
    for entry in std::fs::read_dir(&ex).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.starts_with("machineconfiguration") {
            continue;
        }
        let o = run(&["plan", "--desired", path.to_str().unwrap(), "-o", "json"]);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", stderr(&o));
        assert_eq!(json(&o)["reconcilable"], true, "{name}");
    }
}

#[test]
fn rendered_update_with_cluster_policy() {
    let ex = examples();
    let p = |n: &str| ex.join(n).to_str().unwrap().to_string();
    let o = run(&[
        "plan",
        "--current",
        &p("rendered-worker-1.yaml"),
        "--desired",
        &p("rendered-worker-2.yaml"),
        "--policy",
        &p("machineconfiguration-cluster.yaml"),
        "-o",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(
        v["files"]["add"],
        serde_json::json!(["/etc/containers/registries.conf"])
    );
    assert_eq!(v["sshKeys"], true);
    assert_eq!(
        v["actions"],
        serde_json::json!([{"type": "Reload", "unit": "crio.service"}])
    );
    assert_eq!(v["drain"], false);
    assert_eq!(v["reboot"], false);

    // text output is a readable summary
    let o = run(&[
        "plan",
        "--current",
        &p("rendered-worker-2.yaml"),
        "--desired",
        &p("rendered-worker-3.yaml"),
    ]);
    assert_eq!(o.status.code(), Some(0));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("OS image:") && text.contains("reboot:        yes"),
        "{text}"
    );
}

#[test]
fn booted_image_suppresses_os_change() {
    let d = Dir::new();
    let cur = d.write("cur.yaml", &mc(&format!("  osImageURL: {D1}\n")));
    let des = d.write("des.yaml", &mc(&format!("  osImageURL: {D2}\n")));
    let v = json(&run(&[
        "plan",
        "--current",
        &cur,
        "--desired",
        &des,
        "-o",
        "json",
    ]));
    assert_eq!(v["osImage"]["to"], D2);
    let v = json(&run(&[
        "plan",
        "--current",
        &cur,
        "--desired",
        &des,
        "--booted-image",
        D2,
        "-o",
        "json",
    ]));
    assert_eq!(v["osImage"], Value::Null);
    assert_eq!(v["reboot"], false);
}

#[test]
fn unreconcilable_exits_3_and_still_prints_json() {
    let d = Dir::new();
    let des = d.write("des.yaml", &mc("  fips: true\n"));
    let o = run(&["plan", "--desired", &des, "-o", "json"]);
    assert_eq!(o.status.code(), Some(3));
    let v = json(&o);
    assert_eq!(v["reconcilable"], false);
    assert_eq!(v["unreconcilable"][0]["field"], "spec.fips");
    assert_eq!(v["actions"], serde_json::json!([]));
}

#[test]
fn tag_reference_is_a_warning_not_an_error() {
    let d = Dir::new();
    let des = d.write("des.yaml", &mc("  osImageURL: quay.io/os/os:4.18\n"));
    let o = run(&["plan", "--desired", &des, "-o", "json"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stderr(&o)
            .contains("warning: spec.osImageURL: image quay.io/os/os:4.18 is referenced by tag"),
        "{}",
        stderr(&o)
    );
}

/// Every invalid-input class: exit 2, one line on stderr starting with the file and the field, no stdout.
#[test]
fn invalid_inputs() {
    let d = Dir::new();
    let file = |path: &str| {
        format!("      - path: {path}\n        contents:\n          source: 'data:,x'\n")
    };
    let cases: Vec<(&str, String, String)> = vec![
        ("unparsable YAML", "a: [\n".into(), "invalid YAML".into()),
        ("unparsable JSON", "{\"apiVersion\": ".into(), "invalid JSON".into()),
        ("wrong apiVersion", "apiVersion: v1\nkind: MachineConfig\n".into(), "apiVersion: must be machineconfiguration.openshift.io/v1".into()),
        ("wrong kind", "apiVersion: machineconfiguration.openshift.io/v1\nkind: ConfigMap\n".into(), "kind: must be MachineConfig".into()),
        ("ignition 3.6", mc("  config:\n    ignition:\n      version: 3.6.0-experimental\n"), "spec.config.ignition.version: Ignition spec 3.6.0-experimental is not supported".into()),
        ("ignition 2.0", mc("  config:\n    ignition:\n      version: 2.0.0\n"), "spec.config.ignition.version: Ignition spec 2.0.0 is not supported".into()),
        ("relative path", ign_files(&format!("{}{}{}", file("/etc/a"), file("/etc/b"), file("etc/c"))), "spec.config.storage.files[2].path: must be absolute".into()),
        ("dotdot path", ign_files(&file("/etc/../etc/shadow")), "spec.config.storage.files[0].path: must not contain '..' components".into()),
        ("/usr path", ign_files(&file("/usr/lib/systemd/system/x.service")), "spec.config.storage.files[0].path: \"/usr/lib/systemd/system/x.service\" is under /usr".into()),
        ("malformed data URL", ign_files("      - path: /etc/a\n        contents:\n          source: 'data:;base64,***'\n"), "spec.config.storage.files[0].contents.source: malformed data URL".into()),
        ("remote source", ign_files("      - path: /etc/a\n        contents:\n          source: 'https://example.com/a'\n"), "spec.config.storage.files[0].contents.source: remote source \"https:\" is not supported".into()),
        ("bad gzip", ign_files("      - path: /etc/a\n        contents:\n          compression: gzip\n          source: 'data:,notgzip'\n"), "spec.config.storage.files[0].contents: invalid gzip data".into()),
        ("unknown kernelType", mc("  kernelType: turbo\n"), "spec.kernelType: unknown kernel type \"turbo\"".into()),
        ("garbage image", mc("  osImageURL: 'http://not an image'\n"), "spec.osImageURL: invalid image reference".into()),
        ("bad kernel argument", mc("  kernelArguments:\n  - 'a=\"unterminated'\n"), "spec.kernelArguments[0]: unterminated double quote".into()),
    ];
    for (what, body, want) in cases {
        let des = d.write("des.yaml", &body);
        let o = run(&["plan", "--desired", &des, "-o", "json"]);
        assert_eq!(o.status.code(), Some(2), "{what}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{what}: one line expected: {err}");
        assert!(
            err.starts_with(&format!("{des}: {want}")),
            "{what}: got {err:?}, want prefix {want:?}"
        );
        assert!(o.stdout.is_empty(), "{what}: nothing on stdout");
    }
}

#[test]
fn invalid_current_policy_and_flags() {
    let d = Dir::new();
    let good = d.write("good.yaml", &mc("  kernelType: default\n"));
    let bad = d.write("bad.yaml", "kind: MachineConfig\n");
    let o = run(&["plan", "--current", &bad, "--desired", &good]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with(&format!("{bad}: apiVersion: is required")),
        "{}",
        stderr(&o)
    );

    let policy = d.write(
        "policy.yaml",
        "apiVersion: operator.openshift.io/v1\nkind: MachineConfiguration\nspec:\n  nodeDisruptionPolicy:\n    files:\n    - path: /etc/x\n      actions:\n      - type: Reload\n",
    );
    let o = run(&["plan", "--desired", &good, "--policy", &policy]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with(&format!(
            "{policy}: spec.nodeDisruptionPolicy.files[0].actions[0].reload: is required"
        )),
        "{}",
        stderr(&o)
    );

    let o = run(&["plan", "--desired", &good, "--booted-image", "not an image"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with("--booted-image: invalid image reference"),
        "{}",
        stderr(&o)
    );

    let missing = d.0.path().join("missing.yaml");
    let o = run(&["plan", "--desired", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("missing.yaml: cannot read: No such file"),
        "{}",
        stderr(&o)
    );

    let o = run(&["plan"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "clap usage errors are invalid input too"
    );
}
