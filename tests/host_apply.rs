//! `apply` and `validate` against real node roots in temp dirs, through the real binary.

mod common;

use common::*;

const CORE_HASH: &str = "$6$rounds=4096$saltsalt$0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ./0123456789abcdefghijkl";

fn mc(name: &str) -> String {
    fixture(name).display().to_string()
}

/// First config on a fresh node: every file, unit, dropin, mask, enablement link, SSH key and the
/// password land where and how the config says; originals are kept; the ODC records the config.
#[test]
fn first_apply_writes_everything_and_keeps_originals() {
    let root = TestRoot::new();
    let out = root.run(&["apply", "--desired", &mc("worker-1.yaml")]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("Plan: (none) -> rendered-worker-1"), "{text}");
    assert!(text.contains("Post-config action owed: Reboot"), "{text}");
    assert!(
        text.contains("OS: not changed: the root is not an ostree sysroot (give --sysroot DIR)"),
        "{text}"
    );
    // The daemon's state holds the config (secrets included): root's only, as the man page says.
    assert_eq!(root.mode("etc/machine-config-daemon"), 0o700);

    // Files: contents, mode, owners (names from the root's passwd, not this machine's).
    assert_eq!(
        root.read("etc/chrony.conf"),
        "server clock.corp.example.com iburst\ndriftfile /var/lib/chrony/drift\nmakestep 1.0 3\nrtcsync\n"
    );
    assert_eq!(root.mode("var/lib/kubelet/config.json"), 0o600);
    assert_eq!(root.mode("etc/sysctl.d"), 0o755, "parent dirs are 0755");
    assert_eq!(
        root.read("etc/NetworkManager/conf.d/99-dns.conf"),
        "[main]\ndns=default\n[global-dns-domain-*]\nservers=10.0.0.10\n",
        "gzip contents are decompressed"
    );
    // /home -> var/home is followed inside the root; the symlink itself stays.
    assert_eq!(root.link("home").as_deref(), Some("var/home"));
    assert_eq!(
        root.owner("var/home/core/.config/motd.d/cluster"),
        (CORE_UID, CORE_UID)
    );

    // Backups: the image-owned and the admin's pre-existing file are kept once; new files get stamps.
    let orig = "etc/machine-config-daemon/orig";
    let noorig = "etc/machine-config-daemon/noorig";
    assert_eq!(
        root.read(&format!("{orig}/etc/chrony.conf.mcdorig")),
        CHRONY_IMAGE
    );
    assert_eq!(
        root.read(&format!("{orig}/etc/containers/registries.conf.mcdorig")),
        REGISTRIES_ADMIN
    );
    assert_eq!(
        root.read(&format!("{noorig}/etc/sysctl.d/99-inotify.conf.mcdnoorig")),
        ""
    );
    assert!(root.exists(&format!(
        "{noorig}/home/core/.config/motd.d/cluster.mcdnoorig"
    )));

    // Units: contents, dropins, mask, enablement as `systemctl --root enable` does it.
    let sd = "etc/systemd/system";
    assert!(
        root.read(&format!("{sd}/kubelet.service"))
            .contains("Kubernetes Kubelet")
    );
    assert!(
        root.read(&format!(
            "{sd}/crio.service.d/10-mco-profile-unix-socket.conf"
        ))
        .contains("ENABLE_PROFILE_UNIX_SOCKET")
    );
    assert!(
        !root.exists(&format!("{sd}/crio.service")),
        "dropin-only entry writes no unit file"
    );
    assert_eq!(
        root.link(&format!("{sd}/multi-user.target.wants/kubelet.service"))
            .as_deref(),
        Some("/etc/systemd/system/kubelet.service")
    );
    assert_eq!(
        root.link(&format!("{sd}/greeting.service")).as_deref(),
        Some("/etc/systemd/system/hello.service"),
        "Alias="
    );
    assert_eq!(
        root.link(&format!("{sd}/multi-user.target.wants/vendor-tool.service"))
            .as_deref(),
        Some("/usr/lib/systemd/system/vendor-tool.service"),
        "a unit that exists only in the image is enabled too"
    );
    assert_eq!(
        root.link(&format!("{sd}/nm-cloud-setup.service"))
            .as_deref(),
        Some("/dev/null")
    );
    assert!(
        !root.exists(&format!("{sd}/multi-user.target.wants/zincati.service")),
        "enabled: false removes the image's enablement"
    );

    // SSH keys for core: 0600 file, 0700 dirs, owned by core, under var/home.
    let keys = "var/home/core/.ssh/authorized_keys.d/ignition";
    assert_eq!(
        root.read(keys),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOM0k1 admin@bastion\nssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 ops@jump\n"
    );
    assert_eq!(root.mode(keys), 0o600);
    assert_eq!(root.owner(keys), (CORE_UID, CORE_UID));
    for dir in ["var/home/core/.ssh", "var/home/core/.ssh/authorized_keys.d"] {
        assert_eq!(root.mode(dir), 0o700, "{dir}");
        assert_eq!(root.owner(dir), (CORE_UID, CORE_UID), "{dir}");
    }

    // Password: only core's field changes, the file keeps its mode; the hash is never printed.
    let shadow = root.read("etc/shadow");
    assert_eq!(
        shadow,
        format!("root:*:19000:0:99999:7:::\ncore:{CORE_HASH}:19000:0:99999:7:::\n")
    );
    assert_eq!(root.mode("etc/shadow"), 0o000);
    assert!(!text.contains(CORE_HASH) && !stderr(&out).contains(CORE_HASH));

    // ODC: the config as received, readable only by root; no temp files left anywhere.
    let odc = root.read("etc/machine-config-daemon/currentconfig");
    let doc: serde_json::Value = serde_json::from_str(&odc).unwrap();
    assert_eq!(doc["metadata"]["name"], "rendered-worker-1");
    assert_eq!(root.mode("etc/machine-config-daemon/currentconfig"), 0o600);
    assert_no_temp_files(&root);

    // The disk now validates against the config.
    let v = root.run(&["validate"]);
    assert_code(&v, 0);
    assert!(stdout(&v).contains("matches MachineConfig rendered-worker-1"));
}

fn assert_no_temp_files(root: &TestRoot) {
    let leftovers: Vec<_> = root
        .snapshot()
        .into_keys()
        .filter(|p| p.to_string_lossy().contains(".mcd-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

/// The next config, with the ODC as the current config: removed files get their originals back or go,
/// removed units are disabled and deleted, the mask is lifted, backups are dropped.
#[test]
fn update_restores_originals_and_removes_what_is_gone() {
    let root = TestRoot::new();
    assert_code(&root.run(&["apply", "--desired", &mc("worker-1.yaml")]), 0);
    let out = root.run(&["apply", "--desired", &mc("worker-2.yaml")]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("Plan: rendered-worker-1 -> rendered-worker-2"),
        "{}",
        stdout(&out)
    );

    let orig = "etc/machine-config-daemon/orig";
    let noorig = "etc/machine-config-daemon/noorig";
    let sd = "etc/systemd/system";
    // chrony: the image's original is back, and its backup dropped.
    assert_eq!(root.read("etc/chrony.conf"), CHRONY_IMAGE);
    assert!(!root.exists(&format!("{orig}/etc/chrony.conf.mcdorig")));
    // The sysctl file had no original: it is gone with its stamp.
    assert!(!root.exists("etc/sysctl.d/99-inotify.conf"));
    assert!(!root.exists(&format!("{noorig}/etc/sysctl.d/99-inotify.conf.mcdnoorig")));
    // registries.conf is still managed: the admin's original stays backed up.
    assert_eq!(
        root.read(&format!("{orig}/etc/containers/registries.conf.mcdorig")),
        REGISTRIES_ADMIN
    );
    assert!(
        root.read("etc/containers/registries.conf")
            .contains("mirror.corp.example.com")
    );
    assert_eq!(root.mode("etc/kubernetes/kubelet.conf"), 0o600);
    assert_eq!(root.read("etc/motd"), "Authorized use only.\n");
    // hello.service: disabled (its links gone) and deleted.
    assert!(!root.exists(&format!("{sd}/hello.service")));
    assert!(!root.exists(&format!("{sd}/greeting.service")));
    assert!(!root.exists(&format!("{sd}/multi-user.target.wants/hello.service")));
    // Dropins: emptied one removed, dropped one removed, new one written.
    assert!(!root.exists(&format!("{sd}/kubelet.service.d/10-mco-default-env.conf")));
    assert!(!root.exists(&format!(
        "{sd}/crio.service.d/10-mco-profile-unix-socket.conf"
    )));
    assert!(
        root.read(&format!("{sd}/kubelet.service.d/20-logging.conf"))
            .contains("=4")
    );
    // The mask is lifted (no original unit file in /etc: the symlink goes).
    assert!(!root.exists(&format!("{sd}/nm-cloud-setup.service")));
    assert!(root.exists(&format!("{sd}/multi-user.target.wants/kubelet.service")));
    assert_eq!(
        root.read("var/home/core/.ssh/authorized_keys.d/ignition"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOM0k1 admin@bastion\n"
    );
    assert_no_temp_files(&root);
    assert_code(&root.run(&["validate"]), 0);

    // Going back to the first config converges to exactly the state the first apply produced.
    let fresh = TestRoot::new();
    assert_code(&fresh.run(&["apply", "--desired", &mc("worker-1.yaml")]), 0);
    assert_code(&root.run(&["apply", "--desired", &mc("worker-1.yaml")]), 0);
    assert_eq!(
        diff(&fresh.snapshot(), &root.snapshot()),
        Vec::<String>::new()
    );
}

/// Applying the same config again writes nothing; `--dry-run` writes nothing either.
#[test]
fn reapply_is_a_noop_and_dry_run_writes_nothing() {
    let root = TestRoot::new();
    let before = root.snapshot();
    let out = root.run(&["apply", "--desired", &mc("worker-1.yaml"), "--dry-run"]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("dry run, nothing written"),
        "{}",
        stdout(&out)
    );
    assert_eq!(diff(&before, &root.snapshot()), Vec::<String>::new());

    assert_code(&root.run(&["apply", "--desired", &mc("worker-1.yaml")]), 0);
    let after_first = root.snapshot();
    let out = root.run(&["apply", "--desired", &mc("worker-1.yaml"), "-o", "json"]);
    assert_code(&out, 0);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(doc["operations"], serde_json::json!([]), "{doc:#}");
    assert_eq!(doc["written"], false);
    assert_eq!(doc["actionsOwed"], serde_json::json!([{"type": "None"}]));
    assert_eq!(diff(&after_first, &root.snapshot()), Vec::<String>::new());
}

/// `validate` reports every mismatch, not just the first, and exit 1.
#[test]
fn validate_reports_every_mismatch() {
    let root = TestRoot::new();
    assert_code(&root.run(&["apply", "--desired", MC1_ABS.as_str()]), 0);
    let sd = "etc/systemd/system";
    root.write("etc/chrony.conf", "server evil.example.com\n", 0o644);
    std::fs::set_permissions(
        root.p("var/lib/kubelet/config.json"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    std::fs::remove_file(root.p(&format!("{sd}/multi-user.target.wants/kubelet.service"))).unwrap();
    std::fs::remove_file(root.p(&format!("{sd}/kubelet.service.d/10-mco-default-env.conf")))
        .unwrap();
    std::fs::remove_file(root.p(&format!("{sd}/nm-cloud-setup.service"))).unwrap();
    root.symlink(
        "/usr/lib/systemd/system/zincati.service",
        &format!("{sd}/multi-user.target.wants/zincati.service"),
    );
    root.write(
        "var/home/core/.ssh/authorized_keys.d/ignition",
        "ssh-rsa intruder\n",
        0o600,
    );
    // Outside validation (§4.2): the cert writer owns it.
    root.write("etc/kubernetes/kubelet-ca.crt", "rotated\n", 0o644);

    let out = root.run(&["validate", "--config", MC1_ABS.as_str()]);
    assert_code(&out, 4);
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(
        lines,
        vec![
            "content mismatch for file \"/etc/chrony.conf\"",
            "mode mismatch for file \"/var/lib/kubelet/config.json\": expected 0600, found 0644",
            "dropin \"10-mco-default-env.conf\" of unit \"kubelet.service\" does not exist",
            "unit \"kubelet.service\" not enabled",
            "unit \"nm-cloud-setup.service\" is not masked",
            "unit \"zincati.service\" enabled but should be disabled",
            "content mismatch for file \"/home/core/.ssh/authorized_keys.d/ignition\"",
            "The node does not match MachineConfig rendered-worker-1: 7 mismatches (7 files, 5 units, 2 dropins, core's SSH keys checked)",
        ]
    );

    // A re-apply repairs all of it, and says the config did not change but the node had drifted.
    let out = root.run(&["apply", "--desired", MC1_ABS.as_str()]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("  no change: the desired config is the current one\n")
            && text.contains(
                "Host: the node had drifted from rendered-worker-1; 8 operations restored it:\n"
            ),
        "{text}"
    );
    let out = root.run(&["validate"]);
    assert_code(&out, 0);
    assert_eq!(
        stdout(&out),
        "The node matches MachineConfig rendered-worker-1 (7 files, 5 units, 2 dropins, core's SSH keys checked)\n"
    );
}

static MC1_ABS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| mc("worker-1.yaml"));

/// An Ignition 2.2 config applies the same way.
#[test]
fn ignition_2_2_config_applies() {
    let root = TestRoot::new();
    let out = root.run(&["apply", "--desired", &mc("ign22-worker.yaml")]);
    assert_code(&out, 0);
    assert!(
        root.read("etc/sysconfig/crio-network")
            .contains("cni-config-dir")
    );
    assert_eq!(
        root.link("etc/systemd/system/multi-user.target.wants/machine-config-daemon-host.service")
            .as_deref(),
        Some("/etc/systemd/system/machine-config-daemon-host.service")
    );
    assert_eq!(
        root.read("var/home/core/.ssh/authorized_keys.d/ignition"),
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDlegacy legacy@installer\n"
    );
    assert_code(&root.run(&["validate"]), 0);
}

/// Without a core user, SSH keys and password are skipped with a log line; the rest is written.
#[test]
fn no_core_user_skips_ssh_and_password() {
    let root = TestRoot::new();
    root.write("etc/passwd", "root:x:0:0:root:/root:/bin/bash\n", 0o644);
    // The file owned by core cannot be resolved without core: remove it from the picture by using the
    // legacy config, which has no core-owned file.
    let out = root.run(&["apply", "--desired", &mc("ign22-worker.yaml")]);
    assert_code(&out, 0);
    // Each skipped part is said once, in one wording, on stderr; stdout is the report.
    assert_eq!(
        stderr(&out),
        "warning: core's SSH keys were not written: there is no user core in the node's /etc/passwd (config=rendered-worker-legacy)\n"
    );
    assert!(!stdout(&out).contains("no user core"), "{}", stdout(&out));
    assert!(!root.exists("var/home/core/.ssh"));
    assert_eq!(root.read("etc/shadow"), SHADOW);
    assert!(root.exists("etc/sysconfig/crio-network"));
    // validate does not claim what it could not check.
    let out = root.run(&["validate"]);
    assert_code(&out, 0);
    assert_eq!(
        stdout(&out),
        "The node matches MachineConfig rendered-worker-legacy in what could be checked (2 files, 1 unit, 0 dropins); not checked: core's SSH keys: there is no user core in the node's /etc/passwd\n"
    );
}

/// A `~core/.ssh` that core does not own is replaced (OCPBUGS-11832).
#[test]
fn foreign_ssh_dir_is_replaced() {
    let root = TestRoot::new();
    root.mkdir("var/home/core/.ssh/authorized_keys.d", 0o755);
    root.write(
        "var/home/core/.ssh/authorized_keys.d/ignition",
        "ssh-rsa planted\n",
        0o644,
    );
    root.write("var/home/core/.ssh/stray", "x", 0o644);
    assert_code(
        &root.run(&["apply", "--desired", &mc("ign22-worker.yaml")]),
        0,
    );
    assert!(
        !root.exists("var/home/core/.ssh/stray"),
        "the foreign tree is gone"
    );
    assert_eq!(root.owner("var/home/core/.ssh"), (CORE_UID, CORE_UID));
    assert_eq!(root.mode("var/home/core/.ssh"), 0o700);
    assert_eq!(
        root.read("var/home/core/.ssh/authorized_keys.d/ignition"),
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDlegacy legacy@installer\n"
    );
}

/// `--current` overrides the ODC; an unreconcilable update writes nothing and exits 3.
#[test]
fn unreconcilable_update_writes_nothing() {
    let root = TestRoot::new();
    let bad = root.p("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nmetadata: {name: rendered-worker-x}\nspec:\n  fips: true\n  config:\n    ignition: {version: 3.4.0}\n    storage:\n      files:\n      - path: /etc/x\n        contents: {source: 'data:,x'}\n",
    )
    .unwrap();
    let before = root.snapshot();
    let out = root.run(&[
        "apply",
        "--current",
        MC1_ABS.as_str(),
        "--desired",
        bad.to_str().unwrap(),
    ]);
    assert_code(&out, 3);
    assert!(stdout(&out).contains("UNRECONCILABLE"), "{}", stdout(&out));
    assert_eq!(diff(&before, &root.snapshot()), Vec::<String>::new());
}

/// `validate` without a config and without an ODC is invalid input.
#[test]
fn validate_without_config_is_invalid_input() {
    let root = TestRoot::new();
    let out = root.run(&["validate"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("etc/machine-config-daemon/currentconfig: does not exist; give the config to check with --config"),
        "{}",
        stderr(&out)
    );
}

/// Dropping everything undoes everything: originals are back, what the configs added is gone, units
/// they enabled are disabled, and no backup or stamp is left.
#[test]
fn empty_config_reverts_the_node() {
    let root = TestRoot::new();
    assert_code(&root.run(&["apply", "--desired", &mc("worker-1.yaml")]), 0);
    assert_code(&root.run(&["apply", "--desired", &mc("worker-2.yaml")]), 0);
    let cfg = tempfile::tempdir().unwrap();
    let empty = cfg.path().join("empty.yaml");
    std::fs::write(
        &empty,
        "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nmetadata: {name: rendered-worker-empty}\nspec:\n  config:\n    ignition: {version: 3.4.0}\n",
    )
    .unwrap();
    let out = root.run(&["apply", "--desired", empty.to_str().unwrap()]);
    assert_code(&out, 0);

    assert_eq!(
        root.read("etc/containers/registries.conf"),
        REGISTRIES_ADMIN
    );
    assert_eq!(root.read("etc/chrony.conf"), CHRONY_IMAGE);
    for gone in [
        "etc/motd",
        "etc/kubernetes/kubelet.conf",
        "var/lib/kubelet/config.json",
        "etc/NetworkManager/conf.d/99-dns.conf",
        "var/home/core/.config/motd.d/cluster",
        "etc/systemd/system/kubelet.service",
        "etc/systemd/system/kubelet.service.d/20-logging.conf",
        "etc/systemd/system/multi-user.target.wants/kubelet.service",
        "etc/systemd/system/multi-user.target.wants/vendor-tool.service",
    ] {
        assert!(!root.exists(gone), "{gone} is still there");
    }
    // The cert writer's file is never removed as stale (§4.2).
    assert!(root.exists("etc/kubernetes/kubelet-ca.crt"));
    // core's keys emptied, password locked.
    assert_eq!(
        root.read("var/home/core/.ssh/authorized_keys.d/ignition"),
        ""
    );
    assert!(root.read("etc/shadow").contains("\ncore:*:19000:"));
    let backups: Vec<_> = root
        .snapshot()
        .into_keys()
        .filter(|p| {
            let p = p.to_string_lossy();
            p.ends_with(".mcdorig") || p.ends_with(".mcdnoorig")
        })
        .collect();
    assert_eq!(
        backups,
        vec![std::path::PathBuf::from(
            "etc/machine-config-daemon/noorig/etc/kubernetes/kubelet-ca.crt.mcdnoorig"
        )],
        "only the never-removed cert keeps its stamp"
    );
    assert_code(&root.run(&["validate"]), 0);
}

/// Without root privileges, a config that needs other owners fails before writing anything.
#[test]
fn unprivileged_apply_fails_before_writing() {
    let root = TestRoot::new();
    for dir in ["", "etc", "etc/containers"] {
        std::fs::set_permissions(
            root.p(dir),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
    }
    let cfg = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        cfg.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let desired = cfg.path().join("d.yaml");
    std::fs::write(
        &desired,
        "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nmetadata: {name: x}\nspec:\n  config:\n    ignition: {version: 3.4.0}\n    storage:\n      files:\n      - path: /etc/containers/policy.json\n        contents: {source: 'data:,%7B%7D'}\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &desired,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let before = root.snapshot();
    let mut cmd = if rustix::process::geteuid().is_root() {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
        c
    } else {
        std::process::Command::new(BIN)
    };
    let out = cmd
        .args(["apply", "--desired"])
        .arg(&desired)
        .arg("--root")
        .arg(root.path())
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("needs root privileges")
            && stderr(&out).contains("nothing was written"),
        "{}",
        stderr(&out)
    );
    assert_eq!(diff(&before, &root.snapshot()), Vec::<String>::new());
}

fn write_config(dir: &std::path::Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nmetadata: {{name: {name}}}\nspec:\n  config:\n    ignition: {{version: 3.4.0}}\n{body}"
        ),
    )
    .unwrap();
    p.display().to_string()
}

/// A changed `[Install]` section re-enables: links it no longer asks for go, new ones come.
#[test]
fn changed_install_section_reenables() {
    let root = TestRoot::new();
    let cfg = tempfile::tempdir().unwrap();
    let unit = |target: &str| {
        format!(
            "    systemd:\n      units:\n      - name: app.service\n        enabled: true\n        contents: |\n          [Service]\n          ExecStart=/usr/bin/app\n          [Install]\n          WantedBy={target}\n"
        )
    };
    let a = write_config(cfg.path(), "a", &unit("multi-user.target"));
    let b = write_config(cfg.path(), "b", &unit("graphical.target"));
    assert_code(&root.run(&["apply", "--desired", &a]), 0);
    assert!(root.exists("etc/systemd/system/multi-user.target.wants/app.service"));
    assert_code(&root.run(&["apply", "--desired", &b]), 0);
    assert!(!root.exists("etc/systemd/system/multi-user.target.wants/app.service"));
    assert_eq!(
        root.link("etc/systemd/system/graphical.target.wants/app.service")
            .as_deref(),
        Some("/etc/systemd/system/app.service")
    );
    assert_code(&root.run(&["validate"]), 0);
}

/// An original that is a symlink (`/etc/localtime`) is kept as a symlink and comes back as one; a
/// masked unit's admin-written original comes back when the mask goes.
#[test]
fn symlink_and_unit_originals_come_back() {
    let root = TestRoot::new();
    root.symlink("../usr/share/zoneinfo/UTC", "etc/localtime");
    root.write(
        "etc/systemd/system/nm-cloud-setup.service",
        "[Service]\nExecStart=/usr/bin/admin\n",
        0o644,
    );
    let before = root.snapshot();
    let cfg = tempfile::tempdir().unwrap();
    let with = write_config(
        cfg.path(),
        "with",
        "    storage:\n      files:\n      - path: /etc/localtime\n        contents: {source: 'data:,TZif'}\n    systemd:\n      units:\n      - name: nm-cloud-setup.service\n        mask: true\n",
    );
    let without = write_config(cfg.path(), "without", "");
    assert_code(&root.run(&["apply", "--desired", &with]), 0);
    assert_eq!(root.read("etc/localtime"), "TZif");
    assert_eq!(
        root.link("etc/systemd/system/nm-cloud-setup.service")
            .as_deref(),
        Some("/dev/null")
    );
    assert_eq!(
        root.link("etc/machine-config-daemon/orig/etc/localtime.mcdorig")
            .as_deref(),
        Some("../usr/share/zoneinfo/UTC")
    );
    assert_code(&root.run(&["apply", "--desired", &without]), 0);
    // Every path that existed before is exactly as it was.
    let after = root.snapshot();
    for (path, node) in &before {
        assert_eq!(after.get(path), Some(node), "{}", path.display());
    }
}
