//! The daemon end to end on the rpm-ostree backend (RHCOS): the `start` binary with `--backend
//! rpm-ostree` against kube-sim and the rpm-ostreed double (`testbed::rpm_ostreed`, rebuilt from
//! coreos/rpm-ostree's source), with simulated reboots (see `tests/e2e/rpm_lab.rs`). Each test has its
//! own lab, so they run in parallel.

mod e2e;
#[path = "e2e/rpm_lab.rs"]
mod rpm_lab;

use std::time::Duration;

use e2e::{ignition, mc};
use rpm_lab::{ALL_EXTENSION_PACKAGES, RpmLab, digest, os_image};
use serde_json::Value;

/// A MachineConfig with kernel type, extensions and the extensions container.
fn rhcos_mc(
    name: &str,
    image: &str,
    kargs: &[&str],
    files: &[(&str, &str)],
    kernel_type: &str,
    extensions: &[&str],
    extensions_image: Option<&str>,
) -> Value {
    let mut m = mc(name, Some(image), kargs, ignition(files, &[]));
    m["spec"]["kernelType"] = kernel_type.into();
    m["spec"]["extensions"] = extensions.iter().map(|e| Value::from(*e)).collect();
    if let Some(i) = extensions_image {
        m["spec"]["baseOSExtensionsContainerImage"] = i.into();
    }
    m
}

fn assert_done(lab: &RpmLab, config: &str) {
    assert_eq!(
        lab.annotation("state").as_deref(),
        Some("Done"),
        "{}",
        lab.describe()
    );
    assert_eq!(lab.annotation("currentConfig").as_deref(), Some(config));
    assert_eq!(lab.annotation("reason").as_deref(), Some(""));
    assert!(!lab.unschedulable(), "left cordoned\n{}", lab.describe());
}

/// Staged before the cordon, finalized after: the node is cordoned while the staged deployment is
/// already there and still locked.
async fn wait_cordon_with_locked_stage(lab: &mut RpmLab) {
    lab.wait_for("the cordon", Duration::from_secs(90), |lab| {
        lab.unschedulable() || lab.reboot_requests() > 0
    })
    .await;
    let st = lab.rpm.state();
    let staged = st.staged().expect("staged before the drain");
    assert!(
        staged.finalization_locked || !st.reboots.is_empty(),
        "the staged deployment is locked until the drain is done: {staged:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn image_update_stages_while_serving_and_finalizes_after_the_drain() {
    let v1 = os_image('1');
    let v2 = os_image('2');
    let mut lab = RpmLab::new(&rhcos_mc(
        "rendered-1",
        &v1,
        &["rw", "nosmt"],
        &[("/etc/motd.d/10-site", "one\n")],
        "default",
        &[],
        None,
    ))
    .await;
    lab.start();
    lab.wait_settled().await;
    assert_eq!(lab.annotation("state").as_deref(), Some("Done"));

    lab.put_mc(&rhcos_mc(
        "rendered-2",
        &v2,
        &["rw", "hugepages=2"],
        &[("/etc/motd.d/10-site", "two\n")],
        "default",
        &[],
        None,
    ));
    lab.set_desired("rendered-2", None);
    wait_cordon_with_locked_stage(&mut lab).await;
    lab.wait_reboot_request(1).await;
    {
        let st = lab.rpm.state();
        assert_eq!(
            st.reboots.len(),
            1,
            "rpm-ostreed reboots after FinalizeDeployment"
        );
        assert!(
            lab.systemd.reboots().is_empty(),
            "not systemd: {:?}",
            lab.systemd.calls()
        );
        let methods = st.methods();
        assert_eq!(
            methods
                .iter()
                .filter(|m| *m == "FinalizeDeployment")
                .count(),
            1,
            "{methods:?}"
        );
        assert_eq!(
            methods.last().map(String::as_str),
            Some("FinalizeDeployment")
        );
        let finalize = st
            .calls
            .iter()
            .find(|c| c.starts_with("FinalizeDeployment"))
            .unwrap();
        assert!(
            finalize.contains(&digest('2')),
            "pinned to the image digest: {finalize}"
        );
        let staged = st.staged().unwrap();
        assert!(
            !staged.finalization_locked,
            "released by FinalizeDeployment"
        );
        assert_eq!(staged.kargs, ["rw", "hugepages=2"]);
    }
    assert_eq!(lab.file("/etc/motd.d/10-site").as_deref(), Some("two\n"));
    assert_eq!(
        lab.annotation("currentConfig").as_deref(),
        Some("rendered-1")
    );

    lab.reboot().await;
    lab.wait_updated("rendered-2").await;
    assert_done(&lab, "rendered-2");
    let booted = lab.rpm.state().booted().cloned().unwrap();
    assert_eq!(booted.image(), v2);
    assert_eq!(booted.kargs, ["rw", "hugepages=2"]);
    assert_eq!(lab.reboot_requests(), 1, "one reboot");

    // What an admin checks, like `rpm-ostree status`.
    let text = lab.status("text");
    assert!(
        text.contains(&format!("* ostree-unverified-registry:{v2}\n")),
        "{text}"
    );
    assert!(text.contains(&format!("Digest: {}", digest('2'))), "{text}");
    assert!(text.contains("Version: 418.94.2"), "{text}");
    let json: Value = serde_json::from_str(&lab.status("json")).unwrap();
    assert_eq!(json["spec"]["backend"], "rpm-ostree");
    assert_eq!(
        json["status"]["booted"]["imageReference"],
        format!("ostree-unverified-registry:{v2}")
    );
    assert_eq!(json["status"]["booted"]["imageDigest"], digest('2'));
    assert_eq!(json["status"]["booted"]["version"], "418.94.2");
    assert_eq!(json["status"]["rollback"]["image"], v1.as_str());
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn on_cluster_layering_image_replaces_client_side_layering() {
    let v1 = os_image('1');
    let mut lab = RpmLab::new(&rhcos_mc(
        "rendered-1",
        &v1,
        &["rw"],
        &[],
        "default",
        &["usbguard"],
        None,
    ))
    .await;
    // The booted deployment layers usbguard (the extension) client-side.
    assert!(
        lab.rpm
            .state()
            .booted()
            .unwrap()
            .requested_packages
            .contains("usbguard")
    );
    lab.start();
    lab.wait_settled().await;
    assert_eq!(
        lab.annotation("state").as_deref(),
        Some("Done"),
        "{}",
        lab.describe()
    );

    // The pool switches to an image built on the cluster (with usbguard inside) for the same config.
    let built = os_image('3');
    lab.set_desired("rendered-1", Some(&built));
    lab.wait_reboot_request(1).await;
    {
        let st = lab.rpm.state();
        let staged = st.staged().unwrap();
        assert_eq!(staged.image(), built);
        assert!(
            staged.requested_packages.is_empty() && staged.requested_base_removals.is_empty(),
            "nothing layered on the node: {staged:?}"
        );
        let rebase = st.calls.iter().find(|c| c.starts_with("Rebase")).unwrap();
        assert!(rebase.contains("no-layering=true"), "{rebase}");
        assert!(
            !st.calls.iter().any(|c| c.starts_with("UpdateDeployment")),
            "{:?}",
            st.calls
        );
    }
    assert!(
        !lab.node
            .path()
            .join("etc/yum.repos.d/coreos-extensions.repo")
            .exists(),
        "no repo needed"
    );
    lab.reboot().await;
    lab.wait_updated("rendered-1").await;
    assert_done(&lab, "rendered-1");
    assert_eq!(
        lab.annotation("currentImage").as_deref(),
        Some(built.as_str())
    );
    assert_eq!(lab.rpm.state().booted().unwrap().image(), built);
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn kernel_rt_swaps_the_kernel_from_the_extensions_repo_and_back() {
    let v1 = os_image('1');
    let mut lab = RpmLab::new(&rhcos_mc(
        "rendered-1",
        &v1,
        &["rw"],
        &[],
        "default",
        &[],
        None,
    ))
    .await;
    let ext = lab.extensions_image("ext-1", ALL_EXTENSION_PACKAGES, true);
    lab.start();
    lab.wait_settled().await;

    lab.put_mc(&rhcos_mc(
        "rendered-2",
        &v1,
        &["rw"],
        &[],
        "realtime",
        &[],
        Some(&ext),
    ));
    lab.set_desired("rendered-2", None);
    lab.wait_reboot_request(1).await;
    {
        let st = lab.rpm.state();
        let staged = st.staged().unwrap();
        let packages: Vec<&str> = staged
            .requested_packages
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(
            packages,
            [
                "kernel-rt-core",
                "kernel-rt-modules",
                "kernel-rt-modules-extra"
            ]
        );
        assert_eq!(
            staged.requested_base_removals.len(),
            testbed::rpm_ostreed::BASE_KERNEL_PACKAGES.len()
        );
        assert_eq!(staged.image_digest, digest('1'), "same image");
        let update = st
            .calls
            .iter()
            .find(|c| c.starts_with("UpdateDeployment"))
            .unwrap();
        assert!(update.contains("no-pull-base=true"), "{update}");
        assert!(
            !st.calls.iter().any(|c| c.starts_with("Rebase")),
            "{:?}",
            st.calls
        );
    }
    // The repo existed for the transaction only.
    assert!(
        !lab.node
            .path()
            .join("etc/yum.repos.d/coreos-extensions.repo")
            .exists()
    );
    lab.reboot().await;
    lab.wait_updated("rendered-2").await;
    assert_done(&lab, "rendered-2");
    assert!(
        lab.rpm
            .state()
            .booted()
            .unwrap()
            .requested_packages
            .contains("kernel-rt-core")
    );

    // Back to the default kernel: override reset + uninstall; no repo needed.
    lab.put_mc(&rhcos_mc(
        "rendered-3",
        &v1,
        &["rw"],
        &[],
        "default",
        &[],
        Some(&ext),
    ));
    lab.set_desired("rendered-3", None);
    lab.wait_reboot_request(2).await;
    lab.reboot().await;
    lab.wait_updated("rendered-3").await;
    assert_done(&lab, "rendered-3");
    let booted = lab.rpm.state().booted().cloned().unwrap();
    assert!(booted.requested_packages.is_empty(), "{booted:?}");
    assert!(booted.requested_base_removals.is_empty(), "{booted:?}");
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn extensions_install_and_remove_only_mco_packages() {
    let v1 = os_image('1');
    let v2 = os_image('2');
    let mut lab = RpmLab::new(&rhcos_mc(
        "rendered-1",
        &v1,
        &["rw"],
        &[],
        "default",
        &[],
        None,
    ))
    .await;
    // An admin layered a package of their own by hand; the daemon must leave it alone.
    {
        let mut st = lab.rpm.state();
        let b = st.deployments[0].clone();
        st.deployments[0] = b.layered(&["htop".to_string()], &[]);
    }
    let ext = lab.extensions_image(
        "ext-1",
        &["usbguard", "krb5-workstation", "libkadm5", "htop"],
        true,
    );
    lab.start();
    lab.wait_settled().await;

    lab.put_mc(&rhcos_mc(
        "rendered-2",
        &v1,
        &["rw"],
        &[],
        "default",
        &["usbguard", "kerberos"],
        Some(&ext),
    ));
    lab.set_desired("rendered-2", None);
    lab.wait_reboot_request(1).await;
    lab.reboot().await;
    lab.wait_updated("rendered-2").await;
    assert_done(&lab, "rendered-2");
    let packages = lab.rpm.state().booted().unwrap().requested_packages.clone();
    assert_eq!(
        packages.iter().map(String::as_str).collect::<Vec<_>>(),
        ["htop", "krb5-workstation", "libkadm5", "usbguard"]
    );

    // Drop kerberos and update the OS image at the same time: the layered packages are resolved again
    // against the repo while rebasing.
    lab.put_mc(&rhcos_mc(
        "rendered-3",
        &v2,
        &["rw"],
        &[],
        "default",
        &["usbguard"],
        Some(&ext),
    ));
    lab.set_desired("rendered-3", None);
    lab.wait_reboot_request(2).await;
    lab.reboot().await;
    lab.wait_updated("rendered-3").await;
    assert_done(&lab, "rendered-3");
    let booted = lab.rpm.state().booted().cloned().unwrap();
    assert_eq!(booted.image(), v2);
    assert_eq!(
        booted
            .requested_packages
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["htop", "usbguard"],
        "htop is not the MCO's to remove"
    );
    lab.stop();
}

/// Nothing staged, never cordoned, no reboot, Degraded with `reason` containing `why`.
async fn assert_refused(lab: &mut RpmLab, why: &str) -> String {
    let reason = lab.wait_degraded(why).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = lab.rpm.state();
    assert!(
        st.staged().is_none(),
        "nothing staged: {:?}",
        st.deployments
    );
    assert!(
        st.reboots.is_empty() && lab.systemd.reboots().is_empty(),
        "no reboot"
    );
    drop(st);
    assert!(!lab.ever_cordoned(), "refused before the drain");
    // The daemon retries at once; stopped, it leaves no repository behind.
    lab.stop();
    assert!(
        !lab.node
            .path()
            .join("etc/yum.repos.d/coreos-extensions.repo")
            .exists()
    );
    assert_eq!(
        std::fs::read_dir(lab.node.path().join("run/mco-extensions"))
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "no extracted image left"
    );
    lab.start();
    reason
}

#[tokio::test(flavor = "multi_thread")]
async fn extension_problems_degrade_with_one_sentence_and_stage_nothing() {
    let v1 = os_image('1');
    let mut lab = RpmLab::new(&rhcos_mc(
        "rendered-1",
        &v1,
        &["rw"],
        &[],
        "default",
        &[],
        None,
    ))
    .await;
    lab.start();
    lab.wait_settled().await;

    // No extensions container in the config.
    lab.put_mc(&rhcos_mc(
        "rendered-2",
        &v1,
        &["rw"],
        &[],
        "default",
        &["usbguard"],
        None,
    ));
    lab.set_desired("rendered-2", None);
    let reason = assert_refused(&mut lab, "no baseOSExtensionsContainerImage").await;
    assert!(reason.contains("usbguard"), "{reason}");

    // A container that does not have the package.
    let without = lab.extensions_image("ext-empty", &["sysstat"], true);
    lab.put_mc(&rhcos_mc(
        "rendered-3",
        &v1,
        &["rw"],
        &[],
        "default",
        &["usbguard"],
        Some(&without),
    ));
    lab.set_desired("rendered-3", None);
    let reason = assert_refused(&mut lab, "Packages not found: usbguard").await;
    assert!(
        reason.contains("rpm-ostree update (packages) failed"),
        "{reason}"
    );

    // A repo rpm-ostree cannot load.
    let broken = lab.extensions_image("ext-broken", &["usbguard"], false);
    lab.put_mc(&rhcos_mc(
        "rendered-4",
        &v1,
        &["rw"],
        &[],
        "default",
        &["usbguard"],
        Some(&broken),
    ));
    lab.set_desired("rendered-4", None);
    assert_refused(&mut lab, "Updating rpm-md repo 'coreos-extensions'").await;

    // An extensions image that does not exist.
    let missing = lab
        .registry
        .image_by_digest("rhel-coreos-extensions", &digest('e'));
    lab.put_mc(&rhcos_mc(
        "rendered-5",
        &v1,
        &["rw"],
        &[],
        "default",
        &["usbguard"],
        Some(&missing),
    ));
    lab.set_desired("rendered-5", None);
    assert_refused(&mut lab, "Cannot pull the extensions image").await;

    // Fixed: Done, and the Degraded reason is gone.
    let good = lab.extensions_image("ext-good", &["usbguard"], true);
    lab.put_mc(&rhcos_mc(
        "rendered-6",
        &v1,
        &["rw"],
        &[],
        "default",
        &["usbguard"],
        Some(&good),
    ));
    lab.set_desired("rendered-6", None);
    lab.wait_reboot_request(1).await;
    lab.reboot().await;
    lab.wait_updated("rendered-6").await;
    assert_done(&lab, "rendered-6");
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_extension_degrades_before_anything_is_touched() {
    let v1 = os_image('1');
    let mut lab = RpmLab::new(&rhcos_mc(
        "rendered-1",
        &v1,
        &["rw"],
        &[],
        "default",
        &[],
        None,
    ))
    .await;
    let ext = lab.extensions_image("ext-1", ALL_EXTENSION_PACKAGES, true);
    lab.start();
    lab.wait_settled().await;
    lab.put_mc(&rhcos_mc(
        "rendered-2",
        &v1,
        &["rw"],
        &[],
        "default",
        &["bitcoin-miner"],
        Some(&ext),
    ));
    lab.set_desired("rendered-2", None);
    // As the MCD (applyExtensions → ValidateMachineConfigExtensions): a failed update, Degraded
    // with one sentence, never cordoned, nothing staged.
    lab.wait_for("Degraded", Duration::from_secs(60), |lab| {
        lab.annotation("state").as_deref() == Some("Degraded")
    })
    .await;
    let reason = lab.annotation("reason").unwrap();
    assert!(
        reason.starts_with("config rendered-2 cannot be applied, nothing was changed: spec.extensions[0]: unknown extension \"bitcoin-miner\""),
        "{reason}"
    );
    assert!(!lab.unschedulable(), "never cordoned");
    let st = lab.rpm.state();
    assert!(st.staged().is_none());
    assert!(
        !st.methods()
            .iter()
            .any(|m| m != "RegisterClient" && m != "GetDeploymentBootConfig"),
        "no transaction: {:?}",
        st.calls
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rpm_ostreed_missing_crashing_or_failing_degrades_without_a_reboot() {
    let v1 = os_image('1');
    let v2 = os_image('2');
    let mut lab = RpmLab::new(&rhcos_mc(
        "rendered-1",
        &v1,
        &["rw"],
        &[],
        "default",
        &[],
        None,
    ))
    .await;
    lab.start();
    lab.wait_settled().await;

    // rpm-ostreed is not on the bus.
    lab.rpm.crash().await;
    lab.put_mc(&rhcos_mc(
        "rendered-2",
        &v2,
        &["rw", "quiet"],
        &[],
        "default",
        &[],
        None,
    ));
    lab.set_desired("rendered-2", None);
    let reason = lab.wait_degraded("rpm-ostreed is not running").await;
    assert!(
        reason.contains("org.freedesktop.DBus.Error.ServiceUnknown"),
        "{reason}"
    );
    assert!(!lab.ever_cordoned());

    // It crashes in the middle of the rebase.
    lab.rpm.state().crash_during = Some("Rebase".into());
    lab.rpm.restart().await.unwrap();
    lab.poke();
    lab.wait_degraded("rpm-ostreed went away during the rebase transaction")
        .await;
    {
        let st = lab.rpm.state();
        assert!(st.staged().is_none(), "{:?}", st.deployments);
        assert!(st.reboots.is_empty());
    }

    // It answers with an error after the rebase staged: the partly staged deployment is removed.
    lab.rpm.state().fail_next.insert(
        "KernelArgs".into(),
        "error: Writing kernel arguments: No space left on device".into(),
    );
    lab.rpm.restart().await.unwrap();
    lab.poke();
    let reason = lab.wait_degraded("No space left on device").await;
    assert!(reason.contains("rpm-ostree kargs failed"), "{reason}");
    {
        // The daemon retries at once (its own Degraded write wakes it), so check the order of events:
        // the failed step was followed by removing what had been staged, and nothing was finalized.
        let st = lab.rpm.state();
        let failed = st
            .transactions
            .iter()
            .position(|t| t.method == "KernelArgs" && t.result.as_ref().is_some_and(|r| !r.0))
            .expect("the failed kargs transaction");
        let before_retry = &st.transactions[..=failed + 1];
        assert_eq!(
            before_retry[failed + 1].method,
            "Cleanup",
            "{:?}",
            st.transactions
        );
        assert!(
            !before_retry
                .iter()
                .any(|t| t.method == "FinalizeDeployment"),
            "no reboot: {:?}",
            st.transactions
        );
    }

    // Healthy again: the retry goes through.
    lab.poke();
    lab.wait_reboot_request(1).await;
    lab.reboot().await;
    lab.wait_updated("rendered-2").await;
    assert_done(&lab, "rendered-2");
    assert_eq!(lab.rpm.state().booted().unwrap().kargs, ["rw", "quiet"]);
    lab.stop();
}

/// The health gate on the rpm-ostree backend: a required check the config ships fails after the boot
/// into the new image, so rpm-ostreed's `Rollback` (once, without its own reboot) makes the previous
/// deployment the default, the daemon reboots, and reports the rollback once back, uncordoned.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_health_gate_rolls_back_with_rpm_ostreeds_rollback() {
    let v1 = os_image('1');
    let v2 = os_image('2');
    let mut lab = RpmLab::new(&rhcos_mc(
        "rendered-1",
        &v1,
        &["rw"],
        &[],
        "default",
        &[],
        None,
    ))
    .await;
    let check = "/etc/machine-config-daemon/health.d/required.d/10-crio";
    let mut target = rhcos_mc("rendered-2", &v2, &["rw"], &[], "default", &[], None);
    target["spec"]["config"]["storage"]["files"] = serde_json::json!([{
        "path": check, "mode": 493, "overwrite": true,
        "contents": {"source": machine_config_daemon::config::dataurl::encode_base64(b"#!/bin/sh\necho 'crio: cannot start' >&2\nexit 1\n")},
    }]);
    lab.put_mc(&target);
    lab.start();
    lab.wait_settled().await;
    lab.set_desired("rendered-2", None);
    lab.wait_reboot_request(1).await;
    lab.reboot().await;
    // The gate fails on v2: Rollback, then the daemon's own reboot.
    lab.wait_reboot_request(2).await;
    {
        let st = lab.rpm.state();
        let rollbacks: Vec<&String> = st
            .calls
            .iter()
            .filter(|c| c.starts_with("Rollback"))
            .collect();
        assert_eq!(rollbacks, ["Rollback {reboot=false}"], "{:?}", st.calls);
        assert_eq!(
            st.deployments[0].image(),
            v1,
            "the previous deployment boots next"
        );
        assert_eq!(
            st.reboots.len(),
            1,
            "rpm-ostreed rebooted only after FinalizeDeployment"
        );
    }
    assert_eq!(lab.systemd.reboots().len(), 1, "the rollback's reboot");
    lab.reboot().await;
    let reason = lab.wait_degraded("rolled back: config rendered-2").await;
    assert!(
        reason.contains(&format!(
            "{check} exited with status 1; its last output: crio: cannot start"
        )),
        "{reason}"
    );
    lab.wait_for("the uncordon", Duration::from_secs(60), |lab| {
        !lab.unschedulable()
    })
    .await;
    assert_eq!(lab.rpm.state().booted().unwrap().image(), v1);
    assert_eq!(
        lab.annotation("currentConfig").as_deref(),
        Some("rendered-1")
    );
    assert!(
        lab.file(check).is_none(),
        "the failed config's check is gone"
    );
    assert_eq!(lab.event_messages("RolledBack").len(), 1);
    assert_eq!(lab.reboot_requests(), 2);
    lab.stop();
}
