//! First boot as the cluster really delivers it (MCO `pkg/server/server.go`, `pkg/daemon/daemon.go`): the
//! machine-config-server's encapsulated MachineConfig with `spec.config` emptied, `node-annotations.json`,
//! the files, units and users Ignition wrote, and a Node the kubelet registered without MCO annotations.
//! `firstboot-complete-machineconfig` applies the OS part and reboots once; the daemon's first start
//! bootstraps the annotations, reads the full rendered config, validates the node against it, and only
//! then records it and reports Done. The harness is `tests/e2e/mod.rs`.

mod e2e;

use std::time::Duration;

use e2e::{Lab, ignition, mc};
use kube_sim::FaultRule;
use serde_json::{Value, json};
use testbed::LayerSpec;

const KEY1: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHm0pUq1yBQ3KJtGx1QWl9n2n5vTq8b0yE0gR7bq1Xj4 admin@bastion";
const KEY2: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKf3Z8kWmT4Qy2b0Vn5c1d9s7a3x6p2o4i8u1y5t9r0e oncall@laptop";
const ODC: &str = "etc/machine-config-daemon/currentconfig";
const NODE_ANNOTATIONS: &str = "etc/machine-config-daemon/node-annotations.json";
const NODE_ANNOTATIONS_BAK: &str = "etc/machine-config-daemon/node-annotation.json.bak";
const ENCAPSULATED: &str = "etc/ignition-machine-config-encapsulated.json";

/// A lab with the base image installed and a v2 image to boot into; `rendered-1` is the node's config:
/// v2, two kernel arguments, a file and core's SSH key.
async fn first_boot_lab() -> (Lab, String, Value) {
    let mut lab = Lab::at_base("rendered-0", &[], &[]).await;
    let v2 = lab.derive(
        "v2",
        LayerSpec::new("RUN install agent").file("usr/bin/agent", "#!/bin/sh\n"),
    );
    let target = mc(
        "rendered-1",
        Some(&v2),
        &["nosmt", "audit=1"],
        ignition(&[("/etc/agent.conf", "on")], &[KEY1]),
    );
    (lab, v2, target)
}

/// After `firstboot-complete-machineconfig`: one reboot requested, the OS part staged, the encapsulated
/// config kept as `.bak`, no on-disk config written, and no API request made.
fn assert_first_boot_applied(lab: &Lab, image: &str) {
    assert_eq!(lab.systemd.reboots().len(), 1, "{:?}", lab.systemd.calls());
    assert!(
        lab.path(&format!("{ENCAPSULATED}.bak")).exists(),
        "the encapsulated config is kept as .bak"
    );
    assert!(!lab.path(ENCAPSULATED).exists());
    assert_eq!(lab.default_deployment_image(), image);
    let options = lab.sysroot.boot_options().unwrap();
    for karg in ["nosmt", "audit=1"] {
        let n = options[0].split_whitespace().filter(|a| *a == karg).count();
        assert_eq!(n, 1, "{karg} once in {options:?}");
    }
    assert!(
        !lab.path(ODC).exists(),
        "the stripped encapsulated config is never the node's on-disk config"
    );
    assert!(lab.sim.counters().is_empty(), "{:?}", lab.sim.counters());
}

/// After the daemon's bootstrap: Done at `config` with no second reboot, the full rendered config
/// recorded on disk, `node-annotations.json` kept as `.bak`, uncordoned.
fn assert_bootstrapped(lab: &Lab, config: &str) {
    assert_eq!(
        lab.annotation("state").as_deref(),
        Some("Done"),
        "{}",
        lab.describe()
    );
    assert_eq!(lab.annotation("currentConfig").as_deref(), Some(config));
    assert_eq!(lab.annotation("firstPivotConfig").as_deref(), Some(config));
    assert_eq!(lab.annotation("reason").as_deref(), Some(""));
    assert!(!lab.unschedulable(), "{}", lab.describe());
    assert_eq!(lab.systemd.reboots().len(), 1, "no second reboot");
    let odc: Value =
        serde_json::from_str(&std::fs::read_to_string(lab.path(ODC)).unwrap()).unwrap();
    assert_eq!(odc["metadata"]["name"], config);
    assert!(
        odc["spec"]["config"]["storage"]["files"]
            .as_array()
            .is_some_and(|f| !f.is_empty()),
        "the on-disk config is the full rendered config, with its files: {odc}"
    );
    assert!(!lab.path(NODE_ANNOTATIONS).exists());
    assert!(lab.path(NODE_ANNOTATIONS_BAK).exists());
    assert!(
        !lab.path("etc/machine-config-daemon/update-in-progress.json")
            .exists()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn first_boot_on_the_real_shape_validates_the_full_config_then_updates_like_any_node() {
    let (mut lab, v2, target) = first_boot_lab().await;
    lab.prepare_first_boot(&target);
    assert!(lab.run_firstboot(None));
    assert_first_boot_applied(&lab, &v2);
    assert_eq!(
        lab.file("/etc/agent.conf").as_deref(),
        Some("on"),
        "Ignition's file"
    );

    lab.reboot_stopped();
    lab.start();
    lab.wait_updated("rendered-1").await;
    assert_bootstrapped(&lab, "rendered-1");
    assert!(!lab.ever_cordoned(), "first boot never cordons");

    // The node's config is the full one: drift in a file Ignition wrote is seen and named...
    lab.wait_settled().await;
    lab.write_file("/etc/agent.conf", "tampered");
    lab.wait_state("Degraded", "rendered-1").await;
    let reason = lab.annotation("reason").unwrap();
    assert!(reason.contains("/etc/agent.conf"), "{reason}");
    // ...and goes away once restored.
    lab.write_file("/etc/agent.conf", "on");
    lab.wait_state("Done", "rendered-1").await;

    // ...and an SSH-key-only change is a rebootless, drainless update (from an empty config it would be
    // every file "added": a drain and a reboot).
    lab.put_mc(&mc(
        "rendered-2",
        Some(&v2),
        &["nosmt", "audit=1"],
        ignition(&[("/etc/agent.conf", "on")], &[KEY1, KEY2]),
    ));
    lab.systemd.clear_calls();
    lab.set_desired("rendered-2", None);
    lab.wait_updated("rendered-2").await;
    assert_eq!(
        lab.file("/home/core/.ssh/authorized_keys.d/ignition")
            .unwrap(),
        format!("{KEY1}\n{KEY2}\n")
    );
    assert!(lab.systemd.calls().is_empty(), "{:?}", lab.systemd.calls());
    assert!(!lab.ever_cordoned());
    assert_eq!(lab.boots, 2, "install + the first-boot reboot");
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn first_boot_on_a_fips_node_with_fips_in_the_config_is_no_change() {
    let (mut lab, v2, mut target) = first_boot_lab().await;
    target["spec"]["fips"] = json!(true);
    lab.set_fips(true);
    lab.prepare_first_boot(&target);
    // The MCD's first-boot "old" config carries the node's FIPS state (`setNodeFipsIntoMC`).
    assert!(lab.run_firstboot(None));
    assert_first_boot_applied(&lab, &v2);
    lab.reboot_stopped();
    lab.start();
    lab.wait_updated("rendered-1").await;
    assert_bootstrapped(&lab, "rendered-1");
    // Later updates compare FIPS with the node's state too (`checkFIPS`): still no change.
    let mut next = target.clone();
    next["metadata"]["name"] = "rendered-2".into();
    next["spec"]["config"] = ignition(&[("/etc/agent.conf", "on")], &[KEY1, KEY2]);
    lab.put_mc(&next);
    lab.set_desired("rendered-2", None);
    lab.wait_updated("rendered-2").await;
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn first_boot_with_the_full_config_an_older_server_served() {
    let (mut lab, v2, target) = first_boot_lab().await;
    lab.prepare_first_boot_served(&target, &target);
    assert!(lab.run_firstboot(None));
    assert_first_boot_applied(&lab, &v2);
    lab.reboot_stopped();
    lab.start();
    lab.wait_updated("rendered-1").await;
    assert_bootstrapped(&lab, "rendered-1");
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_retries_reading_the_rendered_config_and_writes_nothing_meanwhile() {
    let (mut lab, v2, target) = first_boot_lab().await;
    lab.prepare_first_boot(&target);
    assert!(lab.run_firstboot(None));
    assert_first_boot_applied(&lab, &v2);
    lab.reboot_stopped();
    // The API server fails every read of the node's rendered config for a while.
    lab.sim.inject_fault(FaultRule {
        verb: Some("get".into()),
        path: Some("/machineconfigs/rendered-1".into()),
        status: 503,
        count: 1000,
        message: Some("etcdserver: leader changed".into()),
    });
    lab.start();
    lab.wait_for(
        "/healthz to say why the sync is retried",
        Duration::from_secs(60),
        |lab| {
            lab.healthz().is_some_and(|h| {
                h.contains("the last sync failed and is retried")
                    && h.contains("rendered-1")
                    && h.contains("leader changed")
            })
        },
    )
    .await;
    lab.wait_for(
        "a second attempt (retried with a backoff)",
        Duration::from_secs(30),
        |lab| lab.sim.fault_report().rules[0].hits >= 2,
    )
    .await;
    assert!(
        lab.logs()
            .contains("bootstrap: reading the node's rendered config rendered-1"),
        "{}",
        lab.logs()
    );
    // The annotations came from node-annotations.json; nothing else was written.
    assert_eq!(
        lab.annotation("currentConfig").as_deref(),
        Some("rendered-1")
    );
    assert_eq!(lab.annotation("state").as_deref(), Some("Done"));
    assert!(!lab.path(ODC).exists(), "no on-disk config while unread");
    assert!(lab.path(NODE_ANNOTATIONS).exists());
    assert!(lab.event_messages("NodeDone").is_empty());
    lab.sim.clear_faults();
    lab.wait_updated("rendered-1").await;
    assert_bootstrapped(&lab, "rendered-1");
    lab.wait_for("/healthz to be ok", Duration::from_secs(10), |lab| {
        lab.healthz().as_deref() == Some("ok\n")
    })
    .await;
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_finds_a_file_ignition_did_not_write_and_says_so() {
    let (mut lab, v2, target) = first_boot_lab().await;
    lab.prepare_first_boot(&target);
    assert!(lab.run_firstboot(None));
    assert_first_boot_applied(&lab, &v2);
    // Something on the node differs from the rendered config before the daemon's first start.
    lab.write_file("/etc/agent.conf", "off");
    lab.reboot_stopped();
    lab.start();
    lab.wait_state("Degraded", "rendered-1").await;
    let reason = lab.annotation("reason").unwrap();
    assert!(
        reason.contains("/etc/agent.conf") && reason.contains("rendered-1"),
        "{reason}"
    );
    assert!(
        lab.events()
            .contains(&"OnDiskStateValidationFailed".to_string()),
        "{:?}",
        lab.events()
    );
    assert!(!lab.path(ODC).exists(), "not recorded before it validates");
    assert!(lab.path(NODE_ANNOTATIONS).exists());
    // Fixed on the node: the bootstrap completes by itself.
    lab.write_file("/etc/agent.conf", "on");
    lab.wait_updated("rendered-1").await;
    assert_bootstrapped(&lab, "rendered-1");
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_previous_boots_finalize_failure_is_an_annotation_and_an_event() {
    let mut lab = Lab::at_base("rendered-1", &[("/etc/agent.conf", "on")], &[]).await;
    let log = "Finalizing staged deployment\nerror: Installing kernel: regfile copy: No space left on device\n";
    lab.finalize_failed_in_previous_boot(log);
    lab.start();
    lab.wait_settled().await;
    let want = "error: Installing kernel: regfile copy: No space left on device";
    lab.wait_for(
        "the ostree-finalize-staged-failure annotation",
        Duration::from_secs(10),
        |lab| lab.annotation("ostree-finalize-staged-failure").as_deref() == Some(want),
    )
    .await;
    let events = lab.events_full();
    assert!(
        events
            .iter()
            .any(|e| e.reason == "FailedFinalization" && e.kind == "Warning" && e.message == want),
        "{events:?}"
    );
    // A later boot whose finalize went fine clears it (as `syncFinalizationFailureAnnotation`).
    lab.stop();
    lab.reboot_stopped();
    lab.start();
    lab.wait_settled().await;
    lab.wait_for(
        "the annotation to be emptied",
        Duration::from_secs(10),
        |lab| lab.annotation("ostree-finalize-staged-failure").as_deref() == Some(""),
    )
    .await;
    assert_eq!(
        lab.event_messages("FailedFinalization").len(),
        1,
        "one event for one failure"
    );
    lab.stop();
}
