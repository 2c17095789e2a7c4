//! What an admin meets first, through the real binary, with the exact output where it is the contract:
//! safe defaults (`--root` is required off a node), what a plan says about SSH keys and risky modes,
//! errors that name the option and cut long values, `status` on a machine that is not a node, and
//! `plan -o yaml` / `--arch`.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_machine-config-daemon");

// Real keys (ssh-keygen -t ed25519); `ssh-keygen -l` prints these fingerprints for them.
const ADMIN: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHmJdPlvu7AHMnU9O9MEZXyptkDEAYhZCNg9Iyg7392E admin@laptop";
const OPS_NO_COMMENT: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA0aJ/LUfeDXTZ5t+zvPL5KRGC8BBwGYiQHwstpApGWj";
const OPS_FP: &str = "SHA256:QrPeEWRmwH0Z8g0eR6V3M2Qk9QRsujIXor1sVLLxi6w";
const ADMIN_FP: &str = "SHA256:s1P0BeohyRm/dUQe5wzZi/+sNSryyNHmA7I3y8Eo8Bs";

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("MCD_LOG")
        .output()
        .expect("run the binary")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Dir(tempfile::tempdir().unwrap())
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
    fn write(&self, name: &str, body: &str) -> String {
        let p = self.0.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_string()
    }
}

fn mc(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

fn with_keys(name: &str, keys: &[&str]) -> String {
    let list: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    mc(
        name,
        &format!(
            "  config:\n    ignition:\n      version: 3.4.0\n    passwd:\n      users:\n      - name: core\n        sshAuthorizedKeys: [{}]\n",
            list.join(", ")
        ),
    )
}

/// This machine is not an ostree-booted node; the tests below rely on it (and must never run `apply`
/// without `--root` where it would write into the real /etc).
fn assert_not_a_node() {
    assert!(
        !Path::new("/run/ostree-booted").exists(),
        "refusing to run on an ostree-booted host: these tests check what happens off a node"
    );
}

#[test]
fn apply_and_validate_require_root_off_a_node() {
    assert_not_a_node();
    let d = Dir::new();
    let des = d.write("des.yaml", &mc("x", "  kernelType: default\n"));
    let o = run(&["apply", "--desired", &des]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert_eq!(
        err(&o),
        "--root is required: this machine did not boot from ostree (/run/ostree-booted does not exist), so / is not a node root; give --root DIR (--root / writes to this machine's own files)\n"
    );
    assert!(out(&o).is_empty());
    // Even a dry run: nothing is looked at without a root.
    assert_eq!(
        run(&["apply", "--dry-run", "--desired", &des])
            .status
            .code(),
        Some(2)
    );
    let o = run(&["validate", "--config", &des]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        err(&o),
        "--root is required: this machine did not boot from ostree (/run/ostree-booted does not exist), so / is not a node root; give --root DIR (--root / checks this machine's own files)\n"
    );
}

#[test]
fn plan_names_ssh_keys_added_and_removed() {
    let d = Dir::new();
    let cur = d.write("cur.yaml", &with_keys("cur", &[ADMIN]));
    let des = d.write("des.yaml", &with_keys("des", &[OPS_NO_COMMENT]));
    let o = run(&["plan", "--current", &cur, "--desired", &des]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(
        out(&o).contains(&format!(
            "\n  SSH keys:      +{OPS_FP}  -admin@laptop  (1 key after the update)\n"
        )),
        "{}",
        out(&o)
    );
    let o = run(&["plan", "--current", &cur, "--desired", &des, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["sshKeyChanges"],
        serde_json::json!({
            "add": [{"fingerprint": OPS_FP, "keyType": "ssh-ed25519", "comment": null}],
            "remove": [{"fingerprint": ADMIN_FP, "keyType": "ssh-ed25519", "comment": "admin@laptop"}],
            "remaining": 1,
        })
    );
}

#[test]
fn plan_warns_loudly_when_no_key_is_left() {
    let d = Dir::new();
    let cur = d.write("cur.yaml", &with_keys("cur", &[ADMIN, OPS_NO_COMMENT]));
    let des = d.write("des.yaml", &with_keys("des", &[]));
    let o = run(&["plan", "--current", &cur, "--desired", &des]);
    assert_eq!(o.status.code(), Some(0));
    let text = out(&o);
    assert!(
        text.contains(&format!(
            "\n  SSH keys:      -admin@laptop  -{OPS_FP}  -- NO KEY LEFT: core cannot log in with SSH after this update\n"
        )),
        "{text}"
    );
    let warning = format!(
        "core's SSH keys: this update removes every key (admin@laptop, {OPS_FP}) and leaves none: nobody can log in as core with an SSH key afterwards"
    );
    assert!(text.contains(&format!("  warning: {warning}\n")), "{text}");
    // JSON: the document on stdout, the warning on stderr.
    let o = run(&["plan", "--current", &cur, "--desired", &des, "-o", "json"]);
    assert_eq!(err(&o), format!("warning: {warning}\n"));
}

#[test]
fn risky_modes_and_unknown_keys_warn_with_one_field_path_style() {
    let d = Dir::new();
    let des = d.write(
        "des.yaml",
        &mc(
            "modes",
            "  config:\n    ignition:\n      version: 3.4.0\n    storage:\n      files:\n      - path: /etc/tool\n        mode: 4095\n        bogus: 1\n        contents:\n          source: 'data:,x'\n",
        ),
    );
    let o = run(&["plan", "--desired", &des, "-o", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(
        err(&o),
        "warning: spec.config.storage.files[0].bogus: unknown key for Ignition 3.4.0, ignored\n\
         warning: spec.config.storage.files[0].mode: 7777 makes /etc/tool setuid (runs as its owner) and setgid (runs with its group) and world-writable (any local user can change it); is that intended?\n"
    );
}

#[test]
fn invalid_values_are_cut_and_kernel_types_listed() {
    let d = Dir::new();
    let long = format!("a=\"{}", "x".repeat(20_000));
    let des = d.write(
        "des.yaml",
        &mc("k", &format!("  kernelArguments:\n  - '{long}'\n")),
    );
    let o = run(&["plan", "--desired", &des]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        err(&o),
        format!(
            "{des}: spec.kernelArguments[0]: unterminated double quote in kernel argument \"a=\\\"{}…\" (20004 characters)\n",
            "x".repeat(36)
        )
    );
    let des = d.write("kt.yaml", &mc("k", "  kernelType: turbo\n"));
    let o = run(&["plan", "--desired", &des]);
    assert_eq!(
        err(&o),
        format!(
            "{des}: spec.kernelType: unknown kernel type \"turbo\" (use default, throughput, realtime or 64k-pages; \"\" means default)\n"
        )
    );
}

#[test]
fn plan_takes_the_nodes_architecture_and_prints_yaml() {
    let d = Dir::new();
    let des = d.write("des.yaml", &mc("k64", "  kernelType: 64k-pages\n"));
    let o = run(&["plan", "--desired", &des, "--arch", "aarch64", "-o", "yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let v: serde_json::Value = serde_yaml::from_slice(&o.stdout).unwrap();
    assert_eq!(v["reconcilable"], true);
    assert_eq!(v["kernelType"]["to"], "64k-pages");
    // arm64 is the same architecture under its Go name.
    let o = run(&["plan", "--desired", &des, "--arch", "arm64"]);
    assert_eq!(o.status.code(), Some(0));
    let o = run(&["plan", "--desired", &des, "--arch", "x86_64"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        out(&o).contains(
            "  spec.kernelType: 64k-pages is only supported on aarch64, this node is x86_64\n"
        ),
        "{}",
        out(&o)
    );
    // The same document in JSON and YAML.
    let json: serde_json::Value = serde_json::from_slice(
        &run(&["plan", "--desired", &des, "--arch", "aarch64", "-o", "json"]).stdout,
    )
    .unwrap();
    assert_eq!(json, v);
}

#[test]
fn unreconcilable_apply_says_nothing_was_written() {
    let d = Dir::new();
    let root = Dir::new();
    let des = d.write("des.yaml", &mc("fips", "  fips: true\n"));
    let root_path = root.path().to_str().unwrap();
    let o = run(&["apply", "--root", root_path, "--desired", &des]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        out(&o).ends_with(
            "Nothing was written: this update cannot be applied to a running node (see UNRECONCILABLE above).\n"
        ),
        "{}",
        out(&o)
    );
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    // JSON: the keys of a successful apply, with nothing written.
    let o = run(&[
        "apply",
        "--root",
        root_path,
        "--desired",
        &des,
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ok_des = d.write("ok.yaml", &mc("ok", "  kernelType: default\n"));
    let ok = run(&[
        "apply",
        "--root",
        root_path,
        "--desired",
        &ok_des,
        "-o",
        "json",
        "--dry-run",
    ]);
    let ok: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&v), keys(&ok));
    assert_eq!(v["written"], false);
    assert_eq!(v["operations"], serde_json::json!([]));
    assert_eq!(v["plan"]["reconcilable"], false);
}

#[test]
fn status_off_a_node_and_bogus_paths_are_invalid_command_lines() {
    assert!(
        !Path::new("/ostree/repo").exists(),
        "this machine is an ostree host"
    );
    let o = run(&["status"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert_eq!(
        err(&o),
        "/ is not an ostree sysroot (no /ostree/repo): this machine does not boot from ostree; give --sysroot DIR to read another sysroot\n"
    );
    let o = run(&["status", "--sysroot", "/nonexistent/sysroot"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(err(&o), "--sysroot: /nonexistent/sysroot: does not exist\n");
    let d = Dir::new();
    let o = run(&["status", "--sysroot", d.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        err(&o),
        format!(
            "--sysroot: {} is not an ostree sysroot (no ostree/repo in it)\n",
            d.path().display()
        )
    );
    // --root and --sysroot of apply answer the same way.
    let des = d.write("des.yaml", &mc("x", "  kernelType: default\n"));
    let o = run(&["apply", "--root", "/nonexistent/root", "--desired", &des]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(err(&o), "--root: /nonexistent/root: does not exist\n");
    let o = run(&[
        "apply",
        "--root",
        d.path().to_str().unwrap(),
        "--sysroot",
        "/nonexistent/sysroot",
        "--desired",
        &des,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(err(&o), "--sysroot: /nonexistent/sysroot: does not exist\n");
}
