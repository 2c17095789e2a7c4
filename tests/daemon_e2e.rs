//! The daemon end to end: kube-sim, a real registry and sysroot, a private D-Bus with a systemd test
//! service, simulated reboots (see `tests/e2e/mod.rs`). Each test has its own lab (API server, registry,
//! sysroot, node root, bus), so they run in parallel.

mod e2e;

use std::time::Duration;

use e2e::{
    Lab, guarded_pod, ignition, mc, mirror_pod, pod, relax_budget, snapshot_tree, tree_diff,
    wait_blocked,
};
use serde_json::{Value, json};
use testbed::LayerSpec;

const KEY1: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHm0pUq1yBQ3KJtGx1QWl9n2n5vTq8b0yE0gR7bq1Xj4 admin@bastion";
const KEY2: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKf3Z8kWmT4Qy2b0Vn5c1d9s7a3x6p2o4i8u1y5t9r0e oncall@laptop";

/// Assert the node is Done at `config` the way an admin checks it.
fn assert_done(lab: &Lab, config: &str) {
    assert_eq!(
        lab.annotation("state").as_deref(),
        Some("Done"),
        "{}",
        lab.describe()
    );
    assert_eq!(lab.annotation("currentConfig").as_deref(), Some(config));
    assert_eq!(lab.annotation("reason").as_deref(), Some(""));
    assert!(!lab.unschedulable(), "left cordoned\n{}", lab.describe());
    let updated = lab.mcn_condition("Updated").expect("MCN Updated condition");
    assert_eq!(updated.status, "True", "{updated:?}\n{}", lab.describe());
}

#[tokio::test(flavor = "multi_thread")]
async fn ssh_key_change_is_rebootless_and_drainless() {
    let mut lab = Lab::at_base("rendered-1", &[("/etc/motd.d/10-a", "a")], &[KEY1]).await;
    lab.start();
    lab.wait_settled().await;
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
    lab.wait_updated("rendered-2").await;
    assert_done(&lab, "rendered-2");
    assert_eq!(
        lab.file("/home/core/.ssh/authorized_keys.d/ignition")
            .unwrap(),
        format!("{KEY1}\n{KEY2}\n")
    );
    assert!(
        lab.systemd.calls().is_empty(),
        "no reboot, no daemon-reload, no reload or restart: {:?}",
        lab.systemd.calls()
    );
    assert!(!lab.ever_cordoned(), "never cordoned");
    assert!(lab.evictions().is_empty());
    let drained = lab.mcn_condition("Drained").unwrap();
    assert_eq!(drained.status, "False", "{drained:?}");
    assert!(drained.message.contains("not required"), "{drained:?}");
    assert_eq!(
        lab.mcn_condition("UpdatePostActionComplete")
            .unwrap()
            .status,
        "False",
        "reset by Updated=True after the update"
    );
    let done = lab.event_messages("NodeDone");
    assert!(
        done.iter().any(|m| m.contains("rendered-2")),
        "{:?}",
        lab.events_full()
    );
    assert!(!lab.events().contains(&"Reboot".to_string()));
    assert_eq!(lab.boots, 1);
    assert_eq!(lab.default_deployment_image(), image, "the OS is untouched");
    lab.stop();
}

/// registries.conf with the test registry (so image pulls still work) and `extra` appended.
fn registries_conf(lab: &Lab, extra: &str) -> String {
    format!(
        "{}\n[[registry]]\nprefix = \"\"\nlocation = \"quay.io/openshift-release-dev/ocp-release\"\n{extra}",
        lab.registry.registries_conf()
    )
}

const DIGEST_MIRROR: &str = "\n[[registry.mirror]]\nlocation = \"mirror.corp.example.com:5000/ocp/release\"\npull-from-mirror = \"digest-only\"\n";
const TAG_MIRROR: &str =
    "\n[[registry.mirror]]\nlocation = \"mirror.corp.example.com:5000/ocp/release\"\n";

#[tokio::test(flavor = "multi_thread")]
async fn registries_conf_safe_change_reloads_crio_unsafe_change_drains() {
    let mut lab = Lab::new(&|lab| {
        mc(
            "rendered-1",
            Some(&lab.image("base")),
            &[],
            ignition(
                &[("/etc/containers/registries.conf", &registries_conf(lab, ""))],
                &[],
            ),
        )
    })
    .await;
    // Workloads on the node: one that a drain moves, one it leaves (DaemonSet), a static pod's mirror,
    // and a pod on another node.
    for p in [
        pod(
            "default",
            "web-7d4b9-abcde",
            "node1",
            Some(("ReplicaSet", "web-7d4b9")),
            json!({"app": "web"}),
        ),
        pod(
            "kube-system",
            "node-exporter-x1",
            "node1",
            Some(("DaemonSet", "node-exporter")),
            json!({"app": "node-exporter"}),
        ),
        mirror_pod("kube-system", "etcd-node1", "node1"),
        pod(
            "default",
            "web-7d4b9-fghij",
            "node2",
            Some(("ReplicaSet", "web-7d4b9")),
            json!({"app": "web"}),
        ),
    ] {
        lab.sim.put_object(p).unwrap();
    }
    let image = lab.image("base");
    lab.start();
    lab.wait_settled().await;

    // Safe: a digest-only mirror. crio is reloaded, the node is never cordoned.
    let safe = registries_conf(&lab, DIGEST_MIRROR);
    lab.put_mc(&mc(
        "rendered-2",
        Some(&image),
        &[],
        ignition(&[("/etc/containers/registries.conf", &safe)], &[]),
    ));
    lab.set_desired("rendered-2", None);
    lab.wait_updated("rendered-2").await;
    assert_done(&lab, "rendered-2");
    assert_eq!(lab.file("/etc/containers/registries.conf").unwrap(), safe);
    assert_eq!(
        lab.service_calls(),
        vec!["ReloadUnit crio.service replace"],
        "only crio reloaded"
    );
    assert!(lab.systemd.reboots().is_empty());
    assert!(!lab.ever_cordoned(), "a safe change never cordons");
    assert!(lab.evictions().is_empty());
    assert!(lab.pod_exists("default", "web-7d4b9-abcde"));

    // Unsafe: a mirror that serves tags too. Drained (only the ReplicaSet pod), crio reloaded, uncordoned.
    lab.systemd.clear_calls();
    let unsafe_conf = registries_conf(&lab, TAG_MIRROR);
    lab.put_mc(&mc(
        "rendered-3",
        Some(&image),
        &[],
        ignition(&[("/etc/containers/registries.conf", &unsafe_conf)], &[]),
    ));
    lab.set_desired("rendered-3", None);
    lab.wait_updated("rendered-3").await;
    assert_done(&lab, "rendered-3");
    assert_eq!(
        lab.file("/etc/containers/registries.conf").unwrap(),
        unsafe_conf
    );
    assert_eq!(lab.service_calls(), vec!["ReloadUnit crio.service replace"]);
    assert!(lab.systemd.reboots().is_empty(), "no reboot");
    assert!(lab.ever_cordoned(), "an unsafe change drains");
    assert_eq!(lab.evictions(), vec!["default/web-7d4b9-abcde"]);
    assert!(!lab.pod_exists("default", "web-7d4b9-abcde"), "evicted");
    assert!(
        lab.pod_exists("kube-system", "node-exporter-x1"),
        "DaemonSet pods stay"
    );
    assert!(
        lab.pod_exists("kube-system", "etcd-node1"),
        "mirror pods stay"
    );
    assert!(
        lab.pod_exists("default", "web-7d4b9-fghij"),
        "other nodes untouched"
    );
    let events = lab.events();
    for reason in ["Cordon", "Drain", "Uncordon"] {
        assert!(events.contains(&reason.to_string()), "{reason}: {events:?}");
    }
    // The annotations cordon ownership leaves behind are cleaned up.
    assert_eq!(lab.annotation("cordoned-by"), None);
    assert_eq!(lab.boots, 1);
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn file_change_reboots_without_policy_and_restarts_a_unit_with_one() {
    let mut lab = Lab::at_base(
        "rendered-1",
        &[("/etc/chrony.conf", "pool 2.pool.ntp.org iburst\n")],
        &[],
    )
    .await;
    let image = lab.image("base");
    lab.start();
    lab.wait_settled().await;

    // No policy for /etc/chrony.conf: the default is a reboot (and so a drain).
    lab.put_mc(&mc(
        "rendered-2",
        Some(&image),
        &[],
        ignition(
            &[("/etc/chrony.conf", "server ntp1.corp.example.com iburst\n")],
            &[],
        ),
    ));
    lab.set_desired("rendered-2", None);
    lab.wait_reboot_request(1).await;
    assert!(lab.unschedulable(), "drained before the reboot");
    assert_eq!(lab.annotation("state").as_deref(), Some("Working"));
    assert_eq!(
        lab.file("/etc/chrony.conf").as_deref(),
        Some("server ntp1.corp.example.com iburst\n"),
        "written before the reboot"
    );
    let reboot = &lab.systemd.reboots()[0];
    assert!(
        reboot.contains("update to rendered-2") && reboot.contains(r#"["systemctl", "reboot"]"#),
        "{reboot}"
    );
    lab.reboot();
    lab.wait_updated("rendered-2").await;
    assert_done(&lab, "rendered-2");
    assert_eq!(lab.systemd.reboots().len(), 1);
    assert_eq!(
        lab.mcn_condition("RebootedNode").unwrap().status,
        "False",
        "reset by Updated=True"
    );
    assert_eq!(lab.annotation("post-config-action").as_deref(), Some(""));

    // A NodeDisruptionPolicy: restart chronyd instead of rebooting.
    lab.sim
        .load_yaml(
            "apiVersion: operator.openshift.io/v1\nkind: MachineConfiguration\nmetadata:\n  name: cluster\nspec:\n  managementState: Managed\n  nodeDisruptionPolicy:\n    files:\n    - path: /etc/chrony.conf\n      actions:\n      - type: Restart\n        restart:\n          serviceName: chronyd.service\n",
        )
        .unwrap();
    lab.systemd.clear_calls();
    let patches_before = lab.node_patches().len();
    lab.put_mc(&mc(
        "rendered-3",
        Some(&image),
        &[],
        ignition(
            &[("/etc/chrony.conf", "server ntp2.corp.example.com iburst\n")],
            &[],
        ),
    ));
    lab.set_desired("rendered-3", None);
    lab.wait_updated("rendered-3").await;
    assert_done(&lab, "rendered-3");
    assert_eq!(
        lab.file("/etc/chrony.conf").as_deref(),
        Some("server ntp2.corp.example.com iburst\n")
    );
    assert_eq!(
        lab.systemd.calls(),
        vec!["RestartUnit chronyd.service replace"],
        "restarted, not rebooted"
    );
    let cordons_after = lab.node_patches()[patches_before..]
        .iter()
        .any(|p| p["spec"]["unschedulable"] == json!(true));
    assert!(!cordons_after, "a Restart policy does not drain");
    assert!(
        lab.event_messages("ServiceRestart")
            .iter()
            .any(|m| m.contains("chronyd.service")),
        "{:?}",
        lab.events_full()
    );
    assert_eq!(lab.boots, 2);
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn layered_image_by_digest_drains_reboots_once_and_verifies() {
    let mut lab = Lab::at_base("rendered-1", &[], &[]).await;
    let base = lab.image("base");
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
    lab.wait_settled().await;
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
    assert_eq!(lab.mcn_condition("RebootedNode").unwrap().status, "Unknown");
    assert_eq!(
        lab.deployment_images(),
        vec![v2.clone(), base.clone()],
        "staged in front of the booted deployment"
    );
    lab.reboot();
    lab.wait_updated("rendered-2").await;
    assert_done(&lab, "rendered-2");
    assert_eq!(lab.systemd.reboots().len(), 1, "exactly one reboot");
    assert_eq!(lab.default_deployment_image(), v2);
    assert_eq!(
        lab.deployment_images(),
        vec![v2.clone(), base.clone()],
        "the old deployment is kept as the rollback"
    );
    let options = lab.sysroot.boot_options().unwrap();
    assert!(
        options[0].split_whitespace().any(|a| a == "nosmt"),
        "{options:?}"
    );
    assert_eq!(lab.file("/etc/agent.conf").as_deref(), Some("on"));
    assert_eq!(lab.annotation("post-config-action").as_deref(), Some(""));
    assert_eq!(
        lab.annotation("currentImage"),
        None,
        "no on-cluster layering"
    );
    for reason in ["OSUpdateStaged", "Reboot", "NodeDone"] {
        assert!(lab.events().contains(&reason.to_string()), "{reason}");
    }
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn on_cluster_layering_deploys_desired_image_then_reverts() {
    let mut lab = Lab::at_base("rendered-1", &[("/etc/agent.conf", "on")], &[]).await;
    let base = lab.image("base");
    // The image a MachineOSBuild would produce, by digest.
    let built = lab.derive(
        "mosb-1",
        LayerSpec::new("RUN dnf install -y htop").file("usr/bin/htop", "#!/bin/sh\n"),
    );
    lab.start();
    lab.wait_settled().await;

    // The controller sets desiredImage with the same desiredConfig.
    lab.set_desired("rendered-1", Some(&built));
    lab.wait_reboot_request(1).await;
    assert_eq!(lab.default_deployment_image(), built);
    assert_eq!(
        lab.annotation("currentImage"),
        None,
        "set only once verified"
    );
    lab.reboot();
    lab.wait_updated("rendered-1").await;
    assert_done(&lab, "rendered-1");
    assert_eq!(
        lab.annotation("currentImage").as_deref(),
        Some(built.as_str())
    );
    assert_eq!(
        lab.annotation("desiredImage").as_deref(),
        Some(built.as_str())
    );
    assert_eq!(lab.deployment_images(), vec![built.clone(), base.clone()]);
    assert_eq!(
        lab.file("/etc/agent.conf").as_deref(),
        Some("on"),
        "files kept"
    );
    assert_eq!(
        std::fs::read_to_string(lab.path("etc/machine-config-daemon/currentimage"))
            .unwrap()
            .trim(),
        built
    );

    // The MachineOSConfig is deleted: desiredImage is cleared, back to the MC's osImageURL.
    lab.annotate(&[("desiredImage", Some(""))]);
    lab.wait_reboot_request(2).await;
    assert_eq!(lab.default_deployment_image(), base);
    let done_events = lab.event_messages("NodeDone").len();
    lab.reboot();
    lab.wait_for(
        "the revert to complete",
        Duration::from_secs(60),
        move |lab| lab.event_messages("NodeDone").len() > done_events,
    )
    .await;
    assert_eq!(lab.annotation("currentImage"), None, "currentImage deleted");
    assert_done(&lab, "rendered-1");
    assert_eq!(
        lab.annotation("desiredImage"),
        None,
        "an empty desiredImage is deleted"
    );
    assert_eq!(lab.deployment_images()[0], base);
    assert_eq!(lab.systemd.reboots().len(), 2);
    assert_eq!(lab.boots, 3);
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn unreconcilable_config_touches_nothing() {
    let mut lab = Lab::at_base("rendered-1", &[("/etc/agent.conf", "on")], &[KEY1]).await;
    let image = lab.image("base");
    lab.start();
    lab.wait_settled().await;
    let root_before = snapshot_tree(lab.node.path());
    let sysroot_before = lab.sysroot_snapshot();
    let patches_before = lab.node_patches().len();

    // FIPS cannot be switched on a running node; the file change in the same config is not applied.
    let mut bad = mc(
        "rendered-2",
        Some(&image),
        &[],
        ignition(&[("/etc/agent.conf", "off")], &[KEY1]),
    );
    bad["spec"]["fips"] = json!(true);
    lab.put_mc(&bad);
    lab.set_desired("rendered-2", None);
    lab.wait_state("Unreconcilable", "rendered-2").await;
    lab.wait_for(
        "the FailedToReconcile event",
        Duration::from_secs(10),
        |lab| lab.events().contains(&"FailedToReconcile".to_string()),
    )
    .await;
    let reason = lab.annotation("reason").unwrap();
    assert!(
        reason.contains("fips") && reason.contains("rendered-2"),
        "the reason names the field and the config: {reason}"
    );
    assert_eq!(
        lab.annotation("currentConfig").as_deref(),
        Some("rendered-1")
    );
    assert!(
        lab.event_messages("FailedToReconcile")
            .iter()
            .any(|m| m.contains("fips")),
        "{:?}",
        lab.events_full()
    );
    lab.wait_condition("UpdatePrepared", "Unknown").await;
    let prepared = lab.mcn_condition("UpdatePrepared").unwrap();
    assert!(prepared.message.contains("fips"), "{prepared:?}");
    // Give a wrong daemon time to do damage, then compare.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let diff = tree_diff(&root_before, &snapshot_tree(lab.node.path()));
    assert!(diff.is_empty(), "the node root changed: {diff:?}");
    assert_eq!(
        lab.sysroot_snapshot(),
        sysroot_before,
        "the sysroot changed"
    );
    assert!(lab.systemd.calls().is_empty());
    let cordoned = lab.node_patches()[patches_before..]
        .iter()
        .any(|p| p["spec"]["unschedulable"] == json!(true));
    assert!(!cordoned);
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_machineconfig_degrades_then_converges_once_created() {
    let mut lab = Lab::at_base("rendered-1", &[], &[KEY1]).await;
    let image = lab.image("base");
    lab.start();
    lab.wait_settled().await;
    lab.sim.reset_counters();
    lab.set_desired("rendered-2", None);
    lab.wait_state("Degraded", "rendered-2").await;
    let reason = lab.annotation("reason").unwrap();
    assert_eq!(
        reason,
        "MachineConfig rendered-2 does not exist; check the node's desiredConfig annotation and the pool's rendered config"
    );
    lab.wait_condition("NodeDegraded", "True").await;
    // Retried with backoff (5 s, then 10 s), not in a hot loop.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let gets = lab.counters_for("get machineconfigs");
    assert_eq!(
        gets,
        2,
        "one try and one retry after 5 s: {:?}",
        lab.sim.counters()
    );
    // The controller renders it late: the daemon converges by itself at its next retry.
    lab.put_mc(&mc(
        "rendered-2",
        Some(&image),
        &[],
        ignition(&[], &[KEY1, KEY2]),
    ));
    lab.wait_updated("rendered-2").await;
    assert_done(&lab, "rendered-2");
    lab.wait_condition("NodeDegraded", "False").await;
    assert!(lab.systemd.reboots().is_empty());
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_degrades_naming_the_file_and_recovers_by_itself() {
    let mut lab = Lab::at_base(
        "rendered-1",
        &[("/etc/agent.conf", "on"), ("/etc/other.conf", "x")],
        &[],
    )
    .await;
    lab.start();
    lab.wait_settled().await;
    lab.wait_for("the drift monitor", Duration::from_secs(10), |lab| {
        lab.events()
            .contains(&"ConfigDriftMonitorStarted".to_string())
    })
    .await;
    lab.write_file("etc/agent.conf", "someone edited this by hand");
    lab.wait_state("Degraded", "rendered-1").await;
    let reason = lab.annotation("reason").unwrap();
    assert!(reason.contains("/etc/agent.conf"), "{reason}");
    assert!(!reason.contains("/etc/other.conf"), "{reason}");
    assert!(
        !reason.contains("someone edited"),
        "contents are never shown: {reason}"
    );
    assert!(
        lab.event_messages("ConfigDriftDetected")
            .iter()
            .any(|m| m.contains("/etc/agent.conf")),
        "{:?}",
        lab.events_full()
    );
    lab.wait_condition("NodeDegraded", "True").await;
    lab.write_file("etc/agent.conf", "on");
    lab.wait_state("Done", "rendered-1").await;
    assert_eq!(lab.annotation("reason").as_deref(), Some(""));
    lab.wait_condition("NodeDegraded", "False").await;
    assert!(lab.systemd.calls().is_empty(), "nothing re-applied");
    lab.stop();
}

/// A lab at rendered-1 (base image) with rendered-2 (a layered image + a file) ready to roll.
async fn image_update_lab() -> (Lab, String, String) {
    let mut lab = Lab::at_base("rendered-1", &[("/etc/agent.conf", "off")], &[]).await;
    let base = lab.image("base");
    let v2 = lab.derive(
        "v2",
        LayerSpec::new("RUN install agent").file("usr/bin/agent", "#!/bin/sh\n"),
    );
    lab.put_mc(&mc(
        "rendered-2",
        Some(&v2),
        &[],
        ignition(&[("/etc/agent.conf", "on")], &[]),
    ));
    (lab, base, v2)
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_staged_deployment_is_restaged_once() {
    let (mut lab, base, v2) = image_update_lab().await;
    lab.start();
    lab.wait_settled().await;
    lab.set_desired("rendered-2", None);
    lab.wait_reboot_request(1).await;
    // The staged deployment never makes it (ostree-finalize-staged failed, or power was cut).
    lab.lose_staged_deployment();
    assert_eq!(lab.deployment_images(), vec![base.clone()]);
    lab.reboot();
    // The daemon notices the old deployment booted, says why, stages again and reboots once more.
    lab.wait_reboot_request(2).await;
    let why = lab.event_messages("FailedFinalization");
    assert!(
        why.iter()
            .any(|m| m.contains("Booted the previous deployment") && m.contains(&v2)),
        "{:?}",
        lab.events_full()
    );
    assert_eq!(lab.annotation("state").as_deref(), Some("Working"));
    assert_eq!(lab.deployment_images()[0], v2);
    lab.reboot();
    lab.wait_updated("rendered-2").await;
    assert_done(&lab, "rendered-2");
    assert_eq!(lab.systemd.reboots().len(), 2);
    assert_eq!(lab.default_deployment_image(), v2);
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_staged_deployment_twice_degrades_without_a_reboot_loop() {
    let (mut lab, base, v2) = image_update_lab().await;
    lab.start();
    lab.wait_settled().await;
    lab.set_desired("rendered-2", None);
    for n in 1..=2 {
        lab.wait_reboot_request(n).await;
        lab.lose_staged_deployment();
        lab.reboot();
    }
    lab.wait_state("Degraded", "rendered-2").await;
    let reason = lab.annotation("reason").unwrap();
    assert!(
        reason.contains("did not boot config rendered-2 after staging it twice")
            && reason.contains(&base)
            && reason.contains(&v2)
            && reason.contains("/run/machine-config-daemon-force"),
        "the evidence and what to do: {reason}"
    );
    assert_eq!(
        lab.annotation("currentConfig").as_deref(),
        Some("rendered-1")
    );
    lab.wait_condition("NodeDegraded", "True").await;
    assert_eq!(lab.systemd.reboots().len(), 2);
    // Restarting the daemon (or the node) does not start the loop again.
    lab.stop();
    lab.start();
    tokio::time::sleep(Duration::from_secs(2)).await;
    lab.stop();
    lab.reboot_stopped();
    lab.start();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        lab.systemd.reboots().len(),
        2,
        "no third reboot\n{}",
        lab.describe()
    );
    assert_eq!(lab.annotation("state").as_deref(), Some("Degraded"));
    assert_eq!(lab.annotation("reason").as_deref(), Some(reason.as_str()));
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn forcefile_reapplies_and_reboots_once() {
    let (mut lab, _base, v2) = image_update_lab().await;
    lab.start();
    lab.wait_settled().await;
    lab.set_desired("rendered-2", None);
    lab.wait_reboot_request(1).await;
    lab.reboot();
    lab.wait_updated("rendered-2").await;
    // Someone edits a managed file: Degraded. The admin asks for a full re-apply.
    lab.write_file("etc/agent.conf", "hand-edited");
    lab.wait_state("Degraded", "rendered-2").await;
    let nodedone_before = lab.event_messages("NodeDone").len();
    // Without a restart or a node change: the running daemon looks for the forcefile every 10 s.
    lab.write_file("run/machine-config-daemon-force", "");
    lab.wait_reboot_request(2).await;
    assert!(
        !lab.path("run/machine-config-daemon-force").exists(),
        "the forcefile is consumed"
    );
    assert_eq!(
        lab.file("/etc/agent.conf").as_deref(),
        Some("on"),
        "re-applied"
    );
    lab.reboot();
    lab.wait_for(
        "Done after the forced update",
        Duration::from_secs(60),
        |lab| {
            lab.annotation("state").as_deref() == Some("Done")
                && lab.event_messages("NodeDone").len() > nodedone_before
        },
    )
    .await;
    assert_done(&lab, "rendered-2");
    assert_eq!(
        lab.systemd.reboots().len(),
        2,
        "one reboot for the forced update"
    );
    assert_eq!(lab.default_deployment_image(), v2);

    // On a healthy node (Done, nothing scheduled) the forcefile is noticed too, within a tick (10 s).
    lab.wait_settled().await;
    let touched = std::time::Instant::now();
    lab.write_file("run/machine-config-daemon-force", "");
    lab.wait_reboot_request(3).await;
    assert!(
        touched.elapsed() < Duration::from_secs(20),
        "noticed after {:?}",
        touched.elapsed()
    );
    lab.reboot();
    lab.wait_state("Done", "rendered-2").await;
    assert_eq!(
        lab.systemd.reboots().len(),
        3,
        "one reboot per forced update"
    );
    lab.stop();
}

/// Plays the MCO drain controller: copies `desiredDrain` to `lastAppliedDrain` after cordoning or
/// uncordoning, and records the values it saw.
fn drain_controller(lab: &Lab, seen: &mut Vec<String>) {
    let desired = lab.annotation("desiredDrain");
    let applied = lab.annotation("lastAppliedDrain");
    if let Some(d) = desired.filter(|d| Some(d) != applied.as_ref()) {
        let cordon = d.starts_with("drain-");
        lab.sim
            .merge_patch_object(
                "v1",
                "Node",
                None,
                e2e::NODE,
                &json!({"spec": {"unschedulable": if cordon { json!(true) } else { Value::Null }}}),
            )
            .unwrap();
        lab.annotate(&[("lastAppliedDrain", Some(&d))]);
        seen.push(d);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn controller_drain_mode_hands_the_drain_to_the_controller() {
    let (mut lab, _base, _v2) = image_update_lab().await;
    lab.extra_args = vec!["--drain-mode".into(), "controller".into()];
    lab.sim
        .put_object(pod(
            "default",
            "web-1",
            "node1",
            Some(("ReplicaSet", "web")),
            json!({"app": "web"}),
        ))
        .unwrap();
    lab.start();
    lab.wait_settled().await;
    lab.set_desired("rendered-2", None);
    lab.wait_for("desiredDrain", Duration::from_secs(30), |lab| {
        lab.annotation("desiredDrain").is_some()
    })
    .await;
    assert_eq!(
        lab.annotation("desiredDrain").as_deref(),
        Some("drain-rendered-2")
    );
    // The daemon waits for the controller: nothing is written, nothing rebooted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(lab.systemd.reboots().is_empty());
    assert_eq!(lab.file("/etc/agent.conf").as_deref(), Some("off"));
    assert!(
        !lab.ever_cordoned(),
        "the daemon never cordons itself in controller mode"
    );
    let mut seen = Vec::new();
    drain_controller(&lab, &mut seen);
    lab.wait_reboot_request(1).await;
    assert!(lab.unschedulable());
    assert_eq!(lab.file("/etc/agent.conf").as_deref(), Some("on"));
    lab.reboot();
    lab.wait_for("uncordon request", Duration::from_secs(60), |lab| {
        lab.annotation("desiredDrain").as_deref() == Some("uncordon-rendered-2")
    })
    .await;
    drain_controller(&lab, &mut seen);
    lab.wait_updated("rendered-2").await;
    assert_done(&lab, "rendered-2");
    assert_eq!(seen, vec!["drain-rendered-2", "uncordon-rendered-2"]);
    assert!(
        lab.evictions().is_empty(),
        "the controller drains, not the daemon"
    );
    assert!(lab.pod_exists("default", "web-1"));
    assert!(!lab.ever_cordoned());
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_blocked_by_a_budget_says_why_and_completes_once_relaxed() {
    let (mut lab, _base, v2) = image_update_lab().await;
    guarded_pod(&lab);
    lab.start();
    lab.wait_settled().await;
    lab.set_desired("rendered-2", None);
    wait_blocked(&mut lab).await;
    lab.wait_for(
        "the reason to name the pod and the budget",
        Duration::from_secs(10),
        |lab| {
            lab.annotation("reason")
                .is_some_and(|r| r.contains("shop/db-0") && r.contains("db-pdb"))
        },
    )
    .await;
    assert_eq!(lab.annotation("state").as_deref(), Some("Working"));
    assert!(lab.unschedulable(), "cordoned while draining");
    lab.wait_for(
        "the MCN Drained message to name the pod and the budget",
        Duration::from_secs(10),
        |lab| {
            lab.mcn_condition("Drained").is_some_and(|c| {
                c.status == "Unknown"
                    && c.message.contains("shop/db-0")
                    && c.message.contains("db-pdb")
            })
        },
    )
    .await;
    assert!(lab.pod_exists("shop", "db-0"));
    assert_eq!(
        lab.file("/etc/agent.conf").as_deref(),
        Some("off"),
        "nothing written yet"
    );
    assert!(lab.systemd.reboots().is_empty());

    relax_budget(&lab);
    lab.wait_reboot_request(1).await;
    assert!(!lab.pod_exists("shop", "db-0"), "evicted once allowed");
    assert_eq!(
        lab.annotation("reason").as_deref(),
        Some(""),
        "the drain is no longer blocked"
    );
    lab.reboot();
    lab.wait_updated("rendered-2").await;
    assert_done(&lab, "rendered-2");
    assert_eq!(lab.default_deployment_image(), v2);
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_blocked_drain_exits_promptly_and_resumes() {
    let (mut lab, _base, _v2) = image_update_lab().await;
    guarded_pod(&lab);
    lab.start();
    lab.wait_settled().await;
    lab.set_desired("rendered-2", None);
    wait_blocked(&mut lab).await;
    // How fast it stops is a figure for `make bench`, not an assertion on a shared 2-core machine.
    let code = lab.stop();
    assert_eq!(code, Some(0), "a clean stop\n{}", lab.logs());
    assert!(lab.unschedulable(), "the drain resumes after the restart");
    assert_eq!(lab.file("/etc/agent.conf").as_deref(), Some("off"));
    lab.start();
    wait_blocked(&mut lab).await;
    relax_budget(&lab);
    lab.wait_reboot_request(1).await;
    lab.reboot();
    lab.wait_updated("rendered-2").await;
    assert_done(&lab, "rendered-2");
    assert_eq!(lab.systemd.reboots().len(), 1);
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn update_abandoned_during_a_blocked_drain_uncordons() {
    let (mut lab, _base, _v2) = image_update_lab().await;
    guarded_pod(&lab);
    lab.start();
    lab.wait_settled().await;
    lab.set_desired("rendered-2", None);
    wait_blocked(&mut lab).await;
    lab.stop();
    // The admin gives up on rendered-2 while the daemon is down: the node goes back to rendered-1.
    lab.set_desired("rendered-1", None);
    lab.start();
    lab.wait_updated("rendered-1").await;
    assert_done(&lab, "rendered-1");
    assert_eq!(lab.file("/etc/agent.conf").as_deref(), Some("off"));
    assert!(lab.systemd.reboots().is_empty());
    assert!(lab.pod_exists("shop", "db-0"));
    lab.stop();
}

/// The update path a crash test walks.
#[derive(Debug, Clone, Copy, PartialEq)]
enum CrashPath {
    /// Files under /etc/app with a `Drain` + `Reload app.service` policy: drained, no reboot.
    Rebootless,
    /// A new OS image and a file: drained, staged, one reboot.
    ImageAndReboot,
}

const APP_FILES: [&str; 3] = ["/etc/app/a.conf", "/etc/app/b.conf", "/etc/app/c.conf"];

fn app_files(generation: usize) -> Vec<(&'static str, String)> {
    APP_FILES
        .iter()
        .map(|p| (*p, format!("{p} generation {generation}\n")))
        .collect()
}

/// Kill -9 the daemon at every crash point the daemon lists, once per update, on one path; restart it
/// without failpoints each time. Returns the points that fired.
async fn crash_at_every_point(path: CrashPath) -> Vec<String> {
    let mut lab = Lab::new(&|lab| {
        let files = app_files(0);
        let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
        mc(
            "rendered-0",
            Some(&lab.image("base")),
            &[],
            ignition(&files, &[]),
        )
    })
    .await;
    lab.sim
        .load_yaml(
            "apiVersion: operator.openshift.io/v1\nkind: MachineConfiguration\nmetadata:\n  name: cluster\nspec:\n  managementState: Managed\n  nodeDisruptionPolicy:\n    files:\n    - path: /etc/app\n      actions:\n      - type: Drain\n      - type: Reload\n        reload:\n          serviceName: app.service\n",
        )
        .unwrap();
    lab.sim
        .put_object(pod(
            "default",
            "web-1",
            "node1",
            Some(("ReplicaSet", "web")),
            json!({"app": "web"}),
        ))
        .unwrap();
    let images = [
        lab.derive("v2", LayerSpec::new("RUN v2").file("usr/lib/os-v", "2\n")),
        lab.derive("v3", LayerSpec::new("RUN v3").file("usr/lib/os-v", "3\n")),
    ];
    let base = lab.image("base");
    let mut fired = Vec::new();
    for (i, point) in machine_config_daemon::daemon::update::crash_points()
        .into_iter()
        .enumerate()
    {
        let generation = i + 1;
        let config = format!("rendered-{generation}");
        let image = match path {
            CrashPath::Rebootless => base.clone(),
            CrashPath::ImageAndReboot => images[i % 2].clone(),
        };
        let old = app_files(generation - 1);
        let new = app_files(generation);
        let files: Vec<(&str, &str)> = new.iter().map(|(p, c)| (*p, c.as_str())).collect();
        // The reboot path also moves a kernel argument, which must end up exactly once.
        let karg = format!("app.generation={generation}");
        let kargs: Vec<&str> = match path {
            CrashPath::Rebootless => vec![],
            CrashPath::ImageAndReboot => vec![karg.as_str()],
        };
        lab.put_mc(&mc(&config, Some(&image), &kargs, ignition(&files, &[])));
        let reboots_before = lab.systemd.reboots().len();
        let boots_before = lab.boots;
        lab.extra_env = vec![("FAILPOINTS".into(), format!("{point}=return"))];
        lab.set_desired(&config, None);
        lab.start();
        let all = |v: &[(&str, String)]| v.iter().map(|(_, c)| c.clone()).collect::<Vec<_>>();
        let did_fire = lab
            .run_through_crash(&config, &point, |lab| {
                // Files are wholly old or wholly new (all of them: the points are between phases).
                let now: Vec<String> = APP_FILES.iter().map(|p| lab.file(p).unwrap()).collect();
                assert!(
                    now == all(&old) || now == all(&new),
                    "{point}: files are neither the old nor the new config: {now:?}"
                );
            })
            .await;
        // The prune comes after Done, which is what run_through_crash waits for: a kill there
        // happens once it returned. The restarted daemon prunes at its first sync.
        let mut did_fire = did_fire;
        if path == CrashPath::ImageAndReboot {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while lab.sysroot.deployments().unwrap().len() > 2 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{point}: no prune after the gate\n{}",
                    lab.describe()
                );
                if lab.exited() {
                    assert!(
                        lab.logs().contains(&format!("failpoint {point}: killing")),
                        "{point}: the daemon exited\n{}",
                        lab.describe()
                    );
                    did_fire = true;
                    lab.extra_env.clear();
                    lab.start();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if did_fire {
            fired.push(point.clone());
        }
        let (reboots, boots) = (
            lab.systemd.reboots().len() - reboots_before,
            lab.boots - boots_before,
        );
        let expected = usize::from(path == CrashPath::ImageAndReboot);
        assert_eq!(
            boots,
            expected,
            "{point}: {boots} boots for one update\n{}",
            lab.describe()
        );
        assert_eq!(
            reboots,
            expected,
            "{point}: {reboots} reboot requests for one update\n{}",
            lab.describe()
        );
        assert!(
            !lab.unschedulable(),
            "{point}: left cordoned\n{}",
            lab.describe()
        );
        for (p, c) in &new {
            assert_eq!(lab.file(p).as_deref(), Some(c.as_str()), "{point}: {p}");
        }
        assert_eq!(lab.default_deployment_image(), image, "{point}");
        if path == CrashPath::ImageAndReboot {
            let options = lab.sysroot.boot_options().unwrap();
            let generations: Vec<&str> = options[0]
                .split_whitespace()
                .filter(|a| a.starts_with("app.generation="))
                .collect();
            assert_eq!(
                generations,
                [karg.as_str()],
                "{point}: kernel arguments {options:?}"
            );
        }
        assert_eq!(lab.annotation("reason").as_deref(), Some(""), "{point}");
        // Settle, then stop for the next round.
        tokio::time::sleep(Duration::from_millis(100)).await;
        lab.stop();
        lab.extra_env.clear();
    }
    fired
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_at_every_point_rebootless_converges() {
    let fired = crash_at_every_point(CrashPath::Rebootless).await;
    // No reboot, so no new deployment and no health gate (nor a prune after it).
    let expected: Vec<String> = machine_config_daemon::daemon::update::crash_points()
        .into_iter()
        .filter(|p| !p.contains("reboot") && !p.contains("healthy") && !p.contains("gate"))
        .filter(|p| !p.contains("prune"))
        .collect();
    assert_eq!(fired, expected, "every point on the rebootless path fired");
    testbed::sweep::record(
        "crash-rebootless",
        fired.len(),
        "kill -9 at each crash point of a drain+reload update: converged, files all old or all new, no reboot, uncordoned",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_at_every_point_with_image_and_reboot_converges() {
    let fired = crash_at_every_point(CrashPath::ImageAndReboot).await;
    let expected: Vec<String> = machine_config_daemon::daemon::update::crash_points()
        .into_iter()
        .filter(|p| !p.contains("actions-done"))
        .collect();
    assert_eq!(fired, expected, "every point on the reboot path fired");
    testbed::sweep::record(
        "crash-image-reboot",
        fired.len(),
        "kill -9 at each crash point of an image+drain+reboot update: converged, files all old or all new, exactly one reboot, uncordoned",
    )
    .unwrap();
}
