//! The drift monitor on a real root with real inotify: drift is reported, and reported again when it is
//! gone; changes to unmanaged files next to managed ones are not.

mod common;

use std::time::Duration;

use common::*;
use machine_config_daemon::config::MachineConfig;
use machine_config_daemon::host::{DriftMonitor, DriftOptions, DriftReport, MismatchKind, Root};
use tokio::sync::mpsc::Receiver;

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(600);

fn config() -> MachineConfig {
    MachineConfig::from_slice(&std::fs::read(fixture("worker-1.yaml")).unwrap()).unwrap()
}

fn applied_root() -> TestRoot {
    let root = TestRoot::new();
    let desired = fixture("worker-1.yaml").display().to_string();
    assert_code(&root.run(&["apply", "--desired", &desired]), 0);
    root
}

fn start(root: &TestRoot) -> (DriftMonitor, Receiver<DriftReport>) {
    DriftMonitor::start(
        Root::open(root.path()).unwrap(),
        config(),
        DriftOptions {
            debounce: Duration::from_millis(100),
        },
    )
    .unwrap()
}

async fn next(rx: &mut Receiver<DriftReport>) -> DriftReport {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a drift report within the timeout")
        .expect("the monitor is running")
}

async fn assert_quiet(rx: &mut Receiver<DriftReport>) {
    if let Ok(r) = tokio::time::timeout(QUIET, rx.recv()).await {
        panic!("unexpected report: {r:?}");
    }
}

fn messages(r: &DriftReport) -> Vec<String> {
    r.mismatches.iter().map(|m| m.message.clone()).collect()
}

#[tokio::test]
async fn drift_is_reported_and_cleared() {
    let root = applied_root();
    let (monitor, mut rx) = start(&root);
    assert_quiet(&mut rx).await;

    // Content drift, then repaired.
    let good = root.read("etc/chrony.conf");
    root.write("etc/chrony.conf", "server rogue.example.com\n", 0o644);
    let r = next(&mut rx).await;
    assert_eq!(r.config, "rendered-worker-1");
    assert_eq!(
        messages(&r),
        vec!["content mismatch for file \"/etc/chrony.conf\""]
    );
    root.write("etc/chrony.conf", &good, 0o644);
    let r = next(&mut rx).await;
    assert!(!r.is_drift(), "the drift is gone: {r:?}");

    // Mode drift (inotify ATTRIB).
    let pull = root.p("var/lib/kubelet/config.json");
    std::fs::set_permissions(&pull, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let r = next(&mut rx).await;
    assert_eq!(r.mismatches[0].kind, MismatchKind::Mode);
    std::fs::set_permissions(&pull, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    assert!(!next(&mut rx).await.is_drift());

    // An unmanaged file in a watched directory is not a reason to report.
    root.write("etc/resolv.conf", "nameserver 127.0.0.53\n", 0o644);
    root.write(
        "etc/systemd/system/multi-user.target.wants/other.service",
        "",
        0o644,
    );
    assert_quiet(&mut rx).await;

    // Disabling a unit behind the config's back (a symlink in a .wants directory).
    let link = "etc/systemd/system/multi-user.target.wants/kubelet.service";
    std::fs::remove_file(root.p(link)).unwrap();
    assert_eq!(
        messages(&next(&mut rx).await),
        vec!["unit \"kubelet.service\" not enabled"]
    );
    root.symlink("/etc/systemd/system/kubelet.service", link);
    assert!(!next(&mut rx).await.is_drift());

    // A whole dropin directory removed, then the config re-applied: watches follow the new directory.
    std::fs::remove_dir_all(root.p("etc/systemd/system/kubelet.service.d")).unwrap();
    let r = next(&mut rx).await;
    assert_eq!(r.mismatches[0].kind, MismatchKind::Missing, "{r:?}");
    let desired = fixture("worker-1.yaml").display().to_string();
    assert_code(&root.run(&["apply", "--desired", &desired]), 0);
    assert!(!next(&mut rx).await.is_drift());
    root.write(
        "etc/systemd/system/kubelet.service.d/10-mco-default-env.conf",
        "[Service]\n",
        0o644,
    );
    assert_eq!(
        messages(&next(&mut rx).await),
        vec!["content mismatch for dropin \"10-mco-default-env.conf\" of unit \"kubelet.service\""]
    );
    monitor.stop();
}

#[tokio::test]
async fn existing_drift_is_reported_at_start() {
    let root = applied_root();
    std::fs::remove_dir_all(root.p("etc/sysctl.d")).unwrap();
    let (_monitor, mut rx) = start(&root);
    let r = next(&mut rx).await;
    assert_eq!(
        messages(&r),
        vec!["file \"/etc/sysctl.d/99-inotify.conf\" does not exist"]
    );
    // The file comes back with its directory: watched from /etc until the directory exists.
    let desired = fixture("worker-1.yaml").display().to_string();
    assert_code(&root.run(&["apply", "--desired", &desired]), 0);
    assert!(!next(&mut rx).await.is_drift());
}

#[tokio::test]
async fn files_outside_validation_are_not_watched() {
    let root = applied_root();
    let (_monitor, mut rx) = start(&root);
    // The cert writer rotates this one (§4.2).
    root.write("etc/kubernetes/kubelet-ca.crt", "rotated\n", 0o644);
    assert_quiet(&mut rx).await;
}
