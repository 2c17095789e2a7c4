//! Paths that end an update without finishing it, end to end (the harness is `tests/e2e/mod.rs`): none may
//! strand the node. A newer desiredConfig and the forcefile supersede a failing update in any phase; the
//! node is uncordoned whenever it reaches Done, whichever update cordoned it; a new target is taken up while
//! a drain is blocked; a retried update keeps Degraded and its reason (no flapping); a CA bundle change on a
//! host without `coreos-update-ca-trust.service` refreshes the trust store with the host's tool.

mod e2e;

use std::time::Duration;

use e2e::{Lab, guarded_pod, ignition, mc, relax_budget, wait_blocked};
use serde_json::{Value, json};

const MYAPP_POLICY: &str = "apiVersion: operator.openshift.io/v1\nkind: MachineConfiguration\nmetadata:\n  name: cluster\nspec:\n  managementState: Managed\n  nodeDisruptionPolicy:\n    files:\n    - path: /etc/myapp\n      actions:\n      - type: Restart\n        restart:\n          serviceName: myapp.service\n";

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
    assert!(
        !lab.path("etc/machine-config-daemon/update-in-progress.json")
            .exists(),
        "journal left behind"
    );
}

/// The `state` values the daemon wrote, in order, from the node patches from `from` on.
fn states_written(lab: &Lab, from: usize) -> Vec<String> {
    lab.node_patches()[from..]
        .iter()
        .filter_map(|p| {
            p["metadata"]["annotations"]["machineconfiguration.openshift.io/state"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// The `reason` values the daemon wrote, in order, from the node patches from `from` on.
fn reasons_written(lab: &Lab, from: usize) -> Vec<String> {
    lab.node_patches()[from..]
        .iter()
        .filter_map(|p| {
            p["metadata"]["annotations"]["machineconfiguration.openshift.io/reason"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

fn myapp_mc(name: &str, lab: &Lab, contents: &str) -> Value {
    mc(
        name,
        Some(&lab.image("base")),
        &[],
        ignition(&[("/etc/myapp/app.conf", contents)], &[]),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newer_config_and_the_forcefile_supersede_an_update_whose_restart_fails() {
    let mut lab = Lab::new(&|lab| myapp_mc("rendered-1", lab, "mode=one\n")).await;
    lab.sim.load_yaml(MYAPP_POLICY).unwrap();
    lab.put_mc(&myapp_mc("rendered-3", &lab, "mode=three\n"));
    lab.start();
    lab.wait_settled().await;

    // rendered-3 writes its file, then the policy's restart fails: Degraded, retried.
    lab.systemd.fail_unit("myapp.service");
    let patches = lab.node_patches().len();
    lab.set_desired("rendered-3", None);
    lab.wait_state("Degraded", "rendered-3").await;
    assert_eq!(
        lab.file("/etc/myapp/app.conf").as_deref(),
        Some("mode=three\n")
    );
    let reason = lab.annotation("reason").unwrap();
    assert!(reason.contains("myapp.service"), "{reason}");
    lab.wait_for(
        "the restart to be retried",
        Duration::from_secs(30),
        |lab| {
            lab.service_calls()
                .iter()
                .filter(|c| c.contains("myapp.service"))
                .count()
                >= 2
        },
    )
    .await;
    // Retrying keeps Degraded and its reason (the MCD's update() does not set Working over Degraded).
    let states = states_written(&lab, patches);
    let first_degraded = states.iter().position(|s| s == "Degraded").unwrap();
    assert!(
        states[first_degraded..].iter().all(|s| s == "Degraded"),
        "the state flapped while retrying: {states:?}"
    );
    assert_eq!(lab.annotation("reason").as_deref(), Some(reason.as_str()));

    // The admin goes back to rendered-1: the failing update gives way at once (the service still
    // fails), rendered-1's file is written back and the policy's action runs for that change...
    lab.set_desired("rendered-1", None);
    lab.wait_for(
        "rendered-1's file back while the restart still fails",
        Duration::from_secs(60),
        |lab| lab.file("/etc/myapp/app.conf").as_deref() == Some("mode=one\n"),
    )
    .await;
    // ...and once the service accepts it, the node reports rendered-1, never rendered-3.
    lab.systemd.heal_unit("myapp.service");
    lab.wait_updated("rendered-1").await;
    assert_done(&lab, "rendered-1");
    assert!(
        lab.node_patches()[patches..].iter().all(|p| {
            p["metadata"]["annotations"]["machineconfiguration.openshift.io/currentConfig"]
                != "rendered-3"
        }),
        "the superseded update was reported as done"
    );
    assert!(lab.systemd.reboots().is_empty());

    // Again to rendered-3, failing again; now the forcefile: a full re-apply with a reboot.
    lab.systemd.fail_unit("myapp.service");
    lab.set_desired("rendered-3", None);
    lab.wait_state("Degraded", "rendered-3").await;
    lab.write_file("/run/machine-config-daemon-force", "");
    lab.wait_reboot_request(1).await;
    assert!(
        !lab.path("run/machine-config-daemon-force").exists(),
        "the forcefile is consumed"
    );
    lab.reboot();
    lab.wait_updated("rendered-3").await;
    assert_done(&lab, "rendered-3");
    assert_eq!(lab.systemd.reboots().len(), 1);
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_target_during_a_blocked_drain_is_taken_up_at_once_and_the_node_uncordoned() {
    let mut lab = Lab::at_base("rendered-1", &[("/etc/agent.conf", "off")], &[]).await;
    // A drain that would otherwise wait for the budget for ten minutes.
    lab.drain_timeout = "600s".into();
    let image = lab.image("base");
    lab.put_mc(&mc(
        "rendered-2",
        Some(&image),
        &[],
        ignition(&[("/etc/agent.conf", "on")], &[]),
    ));
    // rendered-3 changes only the SSH keys: no drain, no reboot.
    lab.put_mc(&mc(
        "rendered-3",
        Some(&image),
        &[],
        ignition(
            &[("/etc/agent.conf", "off")],
            &["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHm0pUq1yBQ3KJtGx1QWl9n2n5vTq8b0yE0gR7bq1Xj4 admin@bastion"],
        ),
    ));
    guarded_pod(&lab);
    lab.start();
    lab.wait_settled().await;
    lab.set_desired("rendered-2", None);
    wait_blocked(&mut lab).await;
    assert!(lab.unschedulable());
    lab.set_desired("rendered-3", None);
    // Well before the drain's timeout.
    lab.wait_for(
        "Done at rendered-3 while the budget still blocks",
        Duration::from_secs(60),
        |lab| {
            lab.annotation("state").as_deref() == Some("Done")
                && lab.annotation("currentConfig").as_deref() == Some("rendered-3")
        },
    )
    .await;
    lab.wait_for("the uncordon", Duration::from_secs(10), |lab| {
        !lab.unschedulable()
    })
    .await;
    assert_done(&lab, "rendered-3");
    assert!(
        lab.pod_exists("shop", "db-0"),
        "the guarded pod was never evicted"
    );
    assert_eq!(lab.file("/etc/agent.conf").as_deref(), Some("off"));
    assert!(lab.systemd.reboots().is_empty());
    assert_eq!(lab.annotation("cordoned-by"), None);
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_cordoned_for_an_update_that_became_unreconcilable_is_uncordoned_at_done() {
    let mut lab = Lab::at_base("rendered-1", &[("/etc/agent.conf", "off")], &[]).await;
    lab.drain_timeout = "600s".into();
    let image = lab.image("base");
    lab.put_mc(&mc(
        "rendered-2",
        Some(&image),
        &[],
        ignition(&[("/etc/agent.conf", "on")], &[]),
    ));
    let mut fips = mc(
        "rendered-fips",
        Some(&image),
        &[],
        ignition(&[("/etc/agent.conf", "on")], &[]),
    );
    fips["spec"]["fips"] = json!(true);
    lab.put_mc(&fips);
    guarded_pod(&lab);
    lab.start();
    lab.wait_settled().await;
    lab.set_desired("rendered-2", None);
    wait_blocked(&mut lab).await;
    assert!(lab.unschedulable());
    // The pool moves on to a config that cannot be applied: Unreconcilable, still cordoned.
    lab.set_desired("rendered-fips", None);
    lab.wait_for("Unreconcilable", Duration::from_secs(60), |lab| {
        lab.annotation("state").as_deref() == Some("Unreconcilable")
    })
    .await;
    assert!(lab.annotation("reason").unwrap().contains("FIPS"));
    // Back to the config the node runs: Done, and the cordon this daemon made is undone.
    lab.set_desired("rendered-1", None);
    lab.wait_updated("rendered-1").await;
    lab.wait_for("the uncordon", Duration::from_secs(10), |lab| {
        !lab.unschedulable()
    })
    .await;
    assert_done(&lab, "rendered-1");
    assert_eq!(lab.file("/etc/agent.conf").as_deref(), Some("off"));
    assert!(lab.pod_exists("shop", "db-0"));
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drain_that_times_out_stays_degraded_with_its_reason_while_retried() {
    let mut lab = Lab::at_base("rendered-1", &[("/etc/agent.conf", "off")], &[]).await;
    lab.drain_timeout = "2s".into();
    lab.put_mc(&mc(
        "rendered-2",
        Some(&lab.image("base")),
        &[],
        ignition(&[("/etc/agent.conf", "on")], &[]),
    ));
    guarded_pod(&lab);
    lab.start();
    lab.wait_settled().await;
    let patches = lab.node_patches().len();
    lab.set_desired("rendered-2", None);
    lab.wait_state("Degraded", "rendered-2").await;
    // Two more attempts (after 5 s and 10 s of backoff), each timing out again.
    lab.wait_for("three drain attempts", Duration::from_secs(60), |lab| {
        lab.event_messages("FailedToDrain").len() >= 3
    })
    .await;
    let states = states_written(&lab, patches);
    let first_degraded = states.iter().position(|s| s == "Degraded").unwrap();
    assert!(
        states[first_degraded..].iter().all(|s| s == "Degraded"),
        "the pool's Degraded flapped: {states:?}"
    );
    let reasons = reasons_written(&lab, patches);
    let first_reason = reasons
        .iter()
        .position(|r| r.contains("failed to drain") || r.contains("drain"))
        .unwrap();
    assert!(
        reasons[first_reason..].iter().all(|r| !r.is_empty()),
        "the reason was cleared while Degraded: {reasons:?}"
    );
    relax_budget(&lab);
    lab.wait_reboot_request(1).await;
    lab.reboot();
    lab.wait_updated("rendered-2").await;
    assert_done(&lab, "rendered-2");
    lab.stop();
}

/// A stand-in for the host's trust store tool in the node root: records that it ran.
fn trust_tool(lab: &Lab, path: &str) {
    let marker = lab.path("trust-store-refreshed");
    lab.write_file(
        path,
        &format!("#!/bin/sh\necho \"$0\" >> {}\n", marker.display()),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(lab.path(path), std::fs::Permissions::from_mode(0o755)).unwrap();
}

const CA_BUNDLE: &str = "/etc/pki/ca-trust/source/anchors/openshift-config-user-ca-bundle.crt";

#[tokio::test(flavor = "multi_thread")]
async fn a_ca_bundle_change_without_the_coreos_unit_uses_the_hosts_tool_or_says_what_is_missing() {
    let mut lab = Lab::at_base(
        "rendered-1",
        &[(CA_BUNDLE, "-----BEGIN CERTIFICATE-----\nA\n")],
        &[],
    )
    .await;
    lab.systemd.remove_unit("coreos-update-ca-trust.service");
    trust_tool(&lab, "/usr/sbin/update-ca-certificates");
    let image = lab.image("base");
    lab.put_mc(&mc(
        "rendered-2",
        Some(&image),
        &[],
        ignition(&[(CA_BUNDLE, "-----BEGIN CERTIFICATE-----\nB\n")], &[]),
    ));
    lab.start();
    lab.wait_settled().await;
    lab.set_desired("rendered-2", None);
    lab.wait_updated("rendered-2").await;
    assert_done(&lab, "rendered-2");
    assert_eq!(
        std::fs::read_to_string(lab.path("trust-store-refreshed"))
            .unwrap()
            .trim(),
        lab.path("usr/sbin/update-ca-certificates")
            .display()
            .to_string(),
        "Debian's tool refreshed the trust store"
    );
    let calls = lab.service_calls();
    assert!(
        calls.contains(&"RestartUnit coreos-update-ca-trust.service replace".to_string())
            && calls.contains(&"RestartUnit crio.service replace".to_string()),
        "{calls:?}"
    );
    assert!(lab.systemd.reboots().is_empty());

    // Neither the unit nor a tool: Degraded, naming what is missing.
    std::fs::remove_file(lab.path("usr/sbin/update-ca-certificates")).unwrap();
    lab.put_mc(&mc(
        "rendered-3",
        Some(&image),
        &[],
        ignition(&[(CA_BUNDLE, "-----BEGIN CERTIFICATE-----\nC\n")], &[]),
    ));
    lab.set_desired("rendered-3", None);
    lab.wait_state("Degraded", "rendered-3").await;
    let reason = lab.annotation("reason").unwrap();
    assert!(
        reason.contains("coreos-update-ca-trust.service does not exist on this node")
            && reason.contains("/usr/bin/update-ca-trust")
            && reason.contains("/usr/sbin/update-ca-certificates"),
        "{reason}"
    );
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reboot_that_never_happens_is_reported_and_asked_for_again() {
    let mut lab = Lab::at_base("rendered-1", &[("/etc/agent.conf", "off")], &[]).await;
    lab.extra_env
        .push(("MCD_TEST_ONLY_REBOOT_GRACE_SECS".into(), "3".into()));
    lab.put_mc(&mc(
        "rendered-2",
        Some(&lab.image("base")),
        &[],
        ignition(&[("/etc/agent.conf", "on")], &[]),
    ));
    lab.start();
    lab.wait_settled().await;
    lab.set_desired("rendered-2", None);
    lab.wait_reboot_request(1).await;
    // The reboot unit was queued, but the node never goes down (a failed or inhibited reboot).
    lab.wait_for(
        "Degraded naming the reboot that did not happen",
        Duration::from_secs(60),
        |lab| {
            lab.annotation("state").as_deref() == Some("Degraded")
                && lab.annotation("reason").is_some_and(|r| {
                    r.contains("has not happened") && r.contains("machine-config-daemon-reboot")
                })
        },
    )
    .await;
    lab.wait_reboot_request(2).await;
    // Now it happens: one boot, Done.
    lab.reboot();
    lab.wait_updated("rendered-2").await;
    assert_done(&lab, "rendered-2");
    assert_eq!(lab.boots, 2, "install + the one reboot");
    lab.stop();
}
