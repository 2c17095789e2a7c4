//! `apply --sysroot`: the host part first, then the OS image and kernel arguments staged into a real
//! sandbox sysroot from a real registry on 127.0.0.1 (root required, as for any ostree deployment).

use std::path::Path;
use std::process::{Command, Output};

use testbed::{BaseSpec, FileSpec, ImageLab, LayerSpec, NodeRoot, Registry, SandboxSysroot};

const BIN: &str = env!("CARGO_BIN_EXE_machine-config-daemon");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("MCD_LOG")
        .output()
        .expect("run the binary")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write_mc(dir: &Path, name: &str, image: &str, kargs: &[&str], motd: &str) -> String {
    let kargs: String = kargs.iter().map(|k| format!("  - {k}\n")).collect();
    let body = format!(
        "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nmetadata:\n  name: {name}\nspec:\n  osImageURL: {image}\n  kernelArguments:\n{kargs}  config:\n    ignition:\n      version: 3.4.0\n    storage:\n      files:\n      - path: /etc/motd.d/50-node\n        mode: 420\n        contents:\n          source: 'data:,{motd}'\n"
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, body).unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test]
async fn apply_stages_image_and_kernel_arguments_after_the_host_part() {
    let lab = ImageLab::new().unwrap();
    let base = lab.build_base(&BaseSpec::new("base", "1.0")).await.unwrap();
    let derived = lab
        .derive(
            "base",
            "v2",
            &[LayerSpec::new("RUN install tool").file("usr/bin/tool", "#!/bin/sh\n")],
            Some("2.0"),
        )
        .unwrap();
    let registry = Registry::start().unwrap();
    registry.push(&lab, "base", "os").unwrap();
    registry.push(&lab, "v2", "os").unwrap();
    let sysroot = SandboxSysroot::create("default").unwrap();
    let node = NodeRoot::new().unwrap();
    node.trust_insecure_registry(&registry).unwrap();
    let work = tempfile::tempdir().unwrap();
    let (root, sys) = (
        node.path().to_str().unwrap(),
        sysroot.path().to_str().unwrap(),
    );

    // 1. First config: base image, a file.
    let mc1 = write_mc(
        work.path(),
        "rendered-1",
        &registry.image_by_digest("os", &base.manifest_digest),
        &["quiet"],
        "one",
    );
    let o = run(&["apply", "--root", root, "--sysroot", sys, "--desired", &mc1]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("OS: staged deployment"), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(node.path().join("etc/motd.d/50-node")).unwrap(),
        "one"
    );
    assert!(
        node.path()
            .join("etc/machine-config-daemon/currentconfig")
            .exists(),
        "ODC after the OS is staged"
    );
    let first = sysroot.deployments().unwrap();
    assert_eq!(first.len(), 1);
    assert!(
        sysroot.boot_options().unwrap()[0].contains("quiet"),
        "{:?}",
        sysroot.boot_options()
    );

    // 2. The layered image and another kernel argument (current config = the ODC).
    let mc2 = write_mc(
        work.path(),
        "rendered-2",
        &registry.image_by_digest("os", &derived.manifest_digest),
        &["quiet", "nosmt"],
        "two",
    );
    let o = run(&[
        "apply",
        "--root",
        root,
        "--sysroot",
        sys,
        "--desired",
        &mc2,
        "-o",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["plan"]["osImage"]["to"],
        registry.image_by_digest("os", &derived.manifest_digest)
    );
    assert_eq!(
        v["plan"]["kernelArguments"]["add"],
        serde_json::json!(["nosmt"])
    );
    let deployments = sysroot.deployments().unwrap();
    assert_eq!(
        deployments.len(),
        2,
        "the new default plus the previous one as rollback"
    );
    // `deployments()` is sorted by name (checksum), not by boot order: the new one is the one not there before.
    let new_id = deployments
        .iter()
        .find(|d| !first.contains(d))
        .expect("a new deployment");
    let newest = sysroot.deployment_root(new_id);
    assert!(
        newest.join("usr/bin/tool").exists(),
        "the derived layer's file is in the new deployment"
    );
    let opts = sysroot.boot_options().unwrap();
    assert!(
        opts.iter()
            .any(|o| o.contains("quiet") && o.contains("nosmt")),
        "{opts:?}"
    );

    // 3. Again: the node already holds it, nothing new is deployed.
    let o = run(&["apply", "--root", root, "--sysroot", sys, "--desired", &mc2]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("nothing to do") || text(&o).contains("already"),
        "{}",
        text(&o)
    );
    assert_eq!(sysroot.deployments().unwrap(), deployments);
}

#[tokio::test]
async fn dry_run_stages_nothing_and_a_non_sysroot_is_invalid() {
    let lab = ImageLab::new().unwrap();
    let mut spec = BaseSpec::new("base", "1.0");
    spec.files.push(FileSpec::new("usr/etc/motd", "base\n"));
    let base = lab.build_base(&spec).await.unwrap();
    let registry = Registry::start().unwrap();
    registry.push(&lab, "base", "os").unwrap();
    let sysroot = SandboxSysroot::create("default").unwrap();
    let node = NodeRoot::new().unwrap();
    node.trust_insecure_registry(&registry).unwrap();
    let work = tempfile::tempdir().unwrap();
    let mc = write_mc(
        work.path(),
        "rendered-1",
        &registry.image_by_digest("os", &base.manifest_digest),
        &[],
        "x",
    );
    let (root, sys) = (
        node.path().to_str().unwrap(),
        sysroot.path().to_str().unwrap(),
    );

    let before = sysroot.snapshot().unwrap();
    let o = run(&[
        "apply",
        "--root",
        root,
        "--sysroot",
        sys,
        "--desired",
        &mc,
        "--dry-run",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("would be staged"), "{}", text(&o));
    assert_eq!(
        sysroot.snapshot().unwrap(),
        before,
        "a dry run stages nothing"
    );
    assert!(
        !node.path().join("etc/motd.d/50-node").exists(),
        "a dry run writes nothing"
    );

    let o = run(&[
        "apply",
        "--root",
        root,
        "--sysroot",
        work.path().to_str().unwrap(),
        "--desired",
        &mc,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).starts_with(&format!(
            "--sysroot: {} is not an ostree sysroot",
            work.path().display()
        )),
        "{}",
        text(&o)
    );
    assert!(
        !node.path().join("etc/motd.d/50-node").exists(),
        "nothing written"
    );

    // Without a sysroot the host part is applied and the OS change is reported as not applied.
    let o = run(&["apply", "--root", root, "--desired", &mc]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("OS: not changed: the root is not an ostree sysroot"),
        "{}",
        text(&o)
    );
}
