//! The on-disk config API the daemon reuses: currentconfig and currentimage, through the `Host` trait.

mod common;

use common::*;
use machine_config_daemon::config::MachineConfig;
use machine_config_daemon::host::{Host, OdcError, Root};

#[test]
fn current_config_and_image_round_trip() {
    let t = TestRoot::new();
    let root = Root::open(t.path()).unwrap();
    assert!(root.current_config().unwrap().is_none());
    assert_eq!(root.current_image().unwrap(), None);

    let mc = MachineConfig::from_slice(&std::fs::read(fixture("worker-1.yaml")).unwrap()).unwrap();
    root.set_current_config(&mc).unwrap();
    let back = root.current_config().unwrap().unwrap();
    assert_eq!(back.name, "rendered-worker-1");
    assert_eq!(back.raw, mc.raw);
    assert_eq!(t.mode("etc/machine-config-daemon/currentconfig"), 0o600);

    let image = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:1111111111111111111111111111111111111111111111111111111111111111";
    root.set_current_image(Some(image)).unwrap();
    assert_eq!(root.current_image().unwrap().as_deref(), Some(image));
    root.set_current_image(None).unwrap();
    assert_eq!(t.read("etc/machine-config-daemon/currentimage"), "");
    assert_eq!(root.current_image().unwrap(), None);
    let leftovers: Vec<_> = t
        .snapshot()
        .into_keys()
        .filter(|p| p.to_string_lossy().contains(".mcd-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn invalid_current_config_names_the_file_and_field() {
    let t = TestRoot::new();
    t.write(
        "etc/machine-config-daemon/currentconfig",
        r#"{"apiVersion":"machineconfiguration.openshift.io/v1","kind":"MachineConfig","spec":{"kernelType":"turbo"}}"#,
        0o600,
    );
    let root = Root::open(t.path()).unwrap();
    let err = root.current_config().unwrap_err();
    assert!(matches!(err, OdcError::Invalid { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "{}/etc/machine-config-daemon/currentconfig: spec.kernelType: unknown kernel type \"turbo\" (use default, throughput, realtime or 64k-pages; \"\" means default)",
            t.path().display()
        )
    );
}

#[test]
fn current_config_behind_a_symlink_is_not_read() {
    let t = TestRoot::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("currentconfig"), "{}").unwrap();
    t.symlink(
        outside.path().to_str().unwrap(),
        "etc/machine-config-daemon",
    );
    let root = Root::open(t.path()).unwrap();
    assert!(root.current_config().unwrap().is_none());
    // Writing refuses to go through it.
    let mc = MachineConfig::from_slice(&std::fs::read(fixture("worker-1.yaml")).unwrap()).unwrap();
    let err = root.set_current_config(&mc).unwrap_err();
    assert!(format!("{err:#}").contains("is a symlink"), "{err:#}");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
}
