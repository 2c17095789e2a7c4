//! Every bad input to `apply` ends with one clear line and exit 2 (or 1 for the node's own limits, and
//! for a node root in the way of a valid config, where the root is named rather than the input) — and
//! nothing written: a full snapshot of the root is compared before and after.

mod common;

use std::path::PathBuf;

use common::*;

const HEAD: &str = "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nmetadata:\n  name: rendered-worker-bad\nspec:\n  config:\n    ignition:\n      version: 3.4.0\n";

/// 16 good files, so a failure on a later entry proves the earlier ones were not written either.
fn good_files() -> String {
    (1..=16)
        .map(|i| format!("      - path: /etc/good/file-{i:02}.conf\n        contents:\n          source: data:,ok{i}\n"))
        .collect()
}

struct Case {
    root: TestRoot,
    /// Where the config lives: outside the root, so the root snapshot only shows the apply's writes.
    _cfg_dir: tempfile::TempDir,
    cfg: PathBuf,
}

fn case(body: &str) -> Case {
    let root = TestRoot::new();
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("desired.yaml");
    std::fs::write(&cfg, format!("{HEAD}{body}")).unwrap();
    Case {
        root,
        _cfg_dir: cfg_dir,
        cfg,
    }
}

fn files(extra: &str) -> String {
    format!("    storage:\n      files:\n{}{extra}", good_files())
}

/// Run apply, expect `code` and a stderr line starting with the config path and containing `want`,
/// and no change at all in the root.
fn expect_rejected(c: &Case, code: i32, want: &str) -> String {
    let before = c.root.snapshot();
    let out = c.root.run(&["apply", "--desired", c.cfg.to_str().unwrap()]);
    assert_code(&out, code);
    let err = stderr(&out);
    assert!(err.contains(want), "stderr {err:?} lacks {want:?}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line on stderr: {err:?}"
    );
    assert_eq!(
        diff(&before, &c.root.snapshot()),
        Vec::<String>::new(),
        "the root changed"
    );
    err
}

/// The config is fine but the node root is in the way: exit 1, the root named, the field that needed
/// the path, and nothing written.
fn expect_in_the_way(c: &Case, why: &str, field: &str) -> String {
    let err = expect_rejected(c, 1, why);
    assert!(
        err.starts_with(&format!(
            "error: the node root {} is in the way: ",
            c.root.path().display()
        )),
        "{err}"
    );
    assert!(
        err.trim_end().ends_with(&format!(
            "(needed for {field} of {}); nothing was written",
            c.cfg.display()
        )),
        "{err}"
    );
    err
}

#[test]
fn traversal_is_rejected() {
    let c = case(&files("      - path: /etc/../usr/bin/kubelet\n"));
    let err = expect_rejected(
        &c,
        2,
        "spec.config.storage.files[16].path: must not contain '..' components",
    );
    assert!(err.starts_with(c.cfg.to_str().unwrap()), "{err}");
}

#[test]
fn usr_path_is_rejected() {
    let c = case(&files("      - path: /usr/local/bin/tool\n"));
    expect_rejected(
        &c,
        2,
        "spec.config.storage.files[16].path: \"/usr/local/bin/tool\" is under /usr, which is read-only",
    );
}

#[test]
fn symlinked_parent_pointing_outside_the_root_is_not_followed() {
    let outside = tempfile::tempdir().unwrap();
    let c = case(&files(
        "      - path: /etc/evil/cron.d/job\n        contents:\n          source: data:,owned\n",
    ));
    c.root.symlink(outside.path().to_str().unwrap(), "etc/evil");
    let err = expect_in_the_way(
        &c,
        "parent directory \"/etc/evil\" is a symlink (to",
        "spec.config.storage.files[16].path",
    );
    assert!(err.contains("refusing to follow it"), "{err}");
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing written outside"
    );
}

#[test]
fn relative_symlink_escaping_the_root_is_not_followed() {
    let c = case(&files("      - path: /var/lib/up/x\n"));
    c.root.symlink("../../..", "var/lib/up");
    expect_in_the_way(
        &c,
        "parent directory \"/var/lib/up\" is a symlink (to \"../../..\")",
        "spec.config.storage.files[16].path",
    );
}

#[test]
fn home_symlink_pointing_outside_is_not_followed() {
    let outside = tempfile::tempdir().unwrap();
    let c = case(
        "    passwd:\n      users:\n      - name: core\n        sshAuthorizedKeys: [\"ssh-ed25519 AAAA k\"]\n",
    );
    std::fs::remove_file(c.root.p("home")).unwrap();
    c.root.symlink(outside.path().to_str().unwrap(), "home");
    expect_in_the_way(
        &c,
        "\"/home\" is a symlink to",
        "spec.config.passwd.users[0].sshAuthorizedKeys",
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[test]
fn unknown_owner_is_rejected_before_any_write() {
    let c = case(&files(
        "      - path: /etc/app/conf\n        user:\n          name: ghost\n",
    ));
    expect_rejected(
        &c,
        2,
        "spec.config.storage.files[16].user.name: user \"ghost\" does not exist in the node's /etc/passwd",
    );
    let c = case(&files(
        "      - path: /etc/app/conf\n        user:\n          name: core\n        group:\n          name: wheels\n",
    ));
    expect_rejected(
        &c,
        2,
        "spec.config.storage.files[16].group.name: group \"wheels\" does not exist in the node's /etc/group",
    );
}

#[test]
fn bad_mode_is_rejected() {
    let c = case(&files("      - path: /etc/app/conf\n        mode: 99999\n"));
    expect_rejected(
        &c,
        2,
        "spec.config.storage.files[16].mode: must be a permission mode between 0 and 07777",
    );
}

#[test]
fn path_that_is_a_directory_is_rejected() {
    let c = case(&files("      - path: /etc/containers\n"));
    expect_in_the_way(
        &c,
        "\"/etc/containers\" is a directory on the node",
        "spec.config.storage.files[16].path",
    );
}

#[test]
fn file_where_a_directory_is_needed_is_rejected() {
    let c = case(&files("      - path: /etc/chrony.conf/x\n"));
    expect_in_the_way(
        &c,
        "parent \"/etc/chrony.conf\" exists and is not a directory",
        "spec.config.storage.files[16].path",
    );
}

#[test]
fn daemon_state_cannot_be_managed() {
    let c = case(&files(
        "      - path: /etc/machine-config-daemon/orig/etc/chrony.conf.mcdorig\n",
    ));
    expect_rejected(&c, 2, "is the daemon's own state and cannot be managed");
}

#[test]
fn enablement_blocked_by_a_regular_file_is_rejected() {
    let c = case(
        "    systemd:\n      units:\n      - name: app.service\n        enabled: true\n        contents: |\n          [Service]\n          ExecStart=/bin/true\n          [Install]\n          WantedBy=multi-user.target\n",
    );
    c.root.write(
        "etc/systemd/system/multi-user.target.wants/app.service",
        "not a link",
        0o644,
    );
    expect_in_the_way(
        &c,
        "cannot enable app.service: \"/etc/systemd/system/multi-user.target.wants/app.service\" exists on the node and is not a symlink",
        "spec.config.systemd.units[0].enabled",
    );
}

#[test]
fn malformed_config_is_rejected() {
    let c = case("    storage: [\n");
    expect_rejected(&c, 2, "invalid YAML");
}

#[test]
fn invalid_on_disk_config_is_rejected() {
    let c = case(&files(""));
    c.root.write(
        "etc/machine-config-daemon/currentconfig",
        "{\"kind\": \"Pod\"",
        0o600,
    );
    expect_rejected(
        &c,
        2,
        "etc/machine-config-daemon/currentconfig: invalid JSON",
    );
}

#[test]
fn missing_root_is_rejected() {
    let out = std::process::Command::new(BIN)
        .args(["apply", "--root", "/nonexistent/root", "--desired"])
        .arg(fixture("worker-1.yaml"))
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert_eq!(stderr(&out), "--root: /nonexistent/root: does not exist\n");
    // A file is not a root either; the same exit code.
    let out = std::process::Command::new(BIN)
        .args(["apply", "--root"])
        .arg(fixture("worker-1.yaml"))
        .arg("--desired")
        .arg(fixture("worker-1.yaml"))
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert_eq!(
        stderr(&out),
        format!(
            "--root: {}: not a directory\n",
            fixture("worker-1.yaml").display()
        )
    );
}

/// A second apply while one holds the root fails instead of interleaving.
#[test]
fn concurrent_apply_is_refused() {
    use rustix::fs::{FlockOperation, Mode, OFlags};
    let c = case(&files(""));
    let fd = rustix::fs::openat(
        rustix::fs::CWD,
        c.root.path(),
        OFlags::RDONLY | OFlags::DIRECTORY,
        Mode::empty(),
    )
    .unwrap();
    rustix::fs::flock(&fd, FlockOperation::LockExclusive).unwrap();
    expect_rejected(&c, 1, "another apply is writing to");
}

/// Not enough space is found before the first write (the failpoint stands in for a full disk).
#[cfg(feature = "failpoints")]
#[test]
fn no_space_is_found_before_writing() {
    let c = case(&files(""));
    let before = c.root.snapshot();
    let out = c.root.run_env(
        &["apply", "--desired", c.cfg.to_str().unwrap()],
        &[("FAILPOINTS", "host::free-space=return(4096)")],
    );
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("not enough free space: the update writes")
            && err.contains("but only 4096 are available; nothing was written"),
        "{err}"
    );
    assert_eq!(diff(&before, &c.root.snapshot()), Vec::<String>::new());
}
