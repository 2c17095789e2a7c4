//! The daemon end to end: kube-sim, a real registry and sysroot, a private D-Bus with a systemd test
//! service, simulated reboots (see `tests/e2e/mod.rs`).

mod e2e;

use std::time::Duration;

use e2e::{Lab, ignition, mc};
use testbed::LayerSpec;

const KEY1: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHm0pUq1yBQ3KJtGx1QWl9n2n5vTq8b0yE0gR7bq1Xj4 admin@bastion";
const KEY2: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKf3Z8kWmT4Qy2b0Vn5c1d9s7a3x6p2o4i8u1y5t9r0e oncall@laptop";

#[tokio::test(flavor = "multi_thread")]
async fn ssh_key_change_is_rebootless_and_drainless() {
    let mut lab = Lab::new(&|lab| {
        mc(
            "rendered-1",
            Some(&lab.image("base")),
            &[],
            ignition(&[("/etc/motd.d/10-a", "a")], &[KEY1]),
        )
    })
    .await;
    lab.start();
    lab.wait_state("Done", "rendered-1").await;
    assert_eq!(
        lab.file("/home/core/.ssh/authorized_keys.d/ignition")
            .unwrap()
            .trim(),
        KEY1
    );

    let image = lab.image("base");
    lab.put_mc(&mc(
        "rendered-2",
        Some(&image),
        &[],
        ignition(&[("/etc/motd.d/10-a", "a")], &[KEY1, KEY2]),
    ));
    lab.set_desired("rendered-2", None);
    lab.wait_state("Done", "rendered-2").await;
    assert_eq!(
        lab.file("/home/core/.ssh/authorized_keys.d/ignition")
            .unwrap(),
        format!("{KEY1}\n{KEY2}\n")
    );
    assert!(
        lab.systemd.reboots().is_empty(),
        "no reboot: {:?}",
        lab.systemd.calls()
    );
    assert!(!lab.unschedulable());
    assert!(
        lab.events().contains(&"NodeDone".to_string()),
        "{:?}",
        lab.events()
    );
    assert_eq!(lab.annotation("reason").as_deref(), Some(""));
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn layered_image_by_digest_drains_reboots_once_and_verifies() {
    let mut lab = Lab::new(&|lab| {
        mc(
            "rendered-1",
            Some(&lab.image("base")),
            &[],
            ignition(&[], &[]),
        )
    })
    .await;
    let v2 = lab.derive(
        "v2",
        LayerSpec::new("RUN install agent").file("usr/bin/agent", "#!/bin/sh\n"),
    );
    lab.put_mc(&mc(
        "rendered-2",
        Some(&v2),
        &["nosmt"],
        ignition(&[("/etc/agent.conf", "on")], &[]),
    ));
    lab.start();
    lab.wait_state("Done", "rendered-1").await;
    lab.set_desired("rendered-2", None);
    lab.wait_reboot_request(1).await;
    assert!(lab.unschedulable(), "cordoned for the reboot");
    assert_eq!(
        lab.annotation("post-config-action").as_deref(),
        Some("Rebooting")
    );
    assert_eq!(lab.annotation("state").as_deref(), Some("Working"));
    assert_eq!(
        lab.annotation("currentConfig").as_deref(),
        Some("rendered-1"),
        "currentConfig moves only after the verified boot"
    );
    lab.reboot();
    lab.wait_state("Done", "rendered-2").await;
    assert!(!lab.unschedulable(), "uncordoned after the update");
    assert_eq!(lab.systemd.reboots().len(), 1, "exactly one reboot");
    assert_eq!(lab.default_deployment_image(), v2);
    assert_eq!(lab.file("/etc/agent.conf").as_deref(), Some("on"));
    assert_eq!(lab.annotation("post-config-action").as_deref(), Some(""));
    lab.stop();
    tokio::time::sleep(Duration::from_millis(10)).await;
}
