//! The health gate on a real booted ostree host: an OS image whose required check fails (the image
//! ships it under /usr/lib/machine-config-daemon/health.d/required.d/), and a node whose kubelet never
//! reports Ready (the harness, which plays the kubelet, withholds it). Both boot the new deployment,
//! fail the gate, make the previous deployment the default, reboot once more into it and report
//! Degraded with the evidence, uncordoned; the first then rolls out a fixed image (Done, the previous
//! deployment kept), the second cuts the power in the middle of its rollback.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use testbed::LayerSpec;

use super::daemon::{
    AFTER_REBOOT, assert_updated_deployments, boot_to_done, booted_checksum, count,
};
use super::node::{
    self, INSTALLED_CONFIG, McFile, NODE, Node, Setup, boot_history, machine_config,
    registries_conf, with_node,
};
use super::{Run, Scenario, Suite};
use crate::bls::{self, EntrySelection};
use crate::cluster::NodeView;
use crate::vm::Exit;

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "health-gate-rollback",
            about: "an image whose required health check fails: boot, gate fails, rollback, one more reboot, Degraded with the check's output, uncordoned; then a fixed image: Done, the previous deployment kept",
            run: failing_check_rolls_back,
            only_when_named: false,
        },
        Scenario {
            name: "health-gate-not-ready",
            about: "the kubelet never reports Ready after the boot (deadline from the environment file): rollback, with a power cut in the middle of it",
            run: not_ready_rolls_back,
            only_when_named: false,
        },
    ]
}

const CHECK: &str = "usr/lib/machine-config-daemon/health.d/required.d/50-vmtest-agent";
const FAILING: &str = "#!/bin/sh\necho checking the vmtest-agent driver\necho 'vmtest-agent: cannot load driver nvfoo.ko: No such device' >&2\nexit 1\n";
const PASSING: &str = "#!/bin/sh\necho vmtest-agent driver loaded\n";
const AGENT_CONF: &str = "/etc/vmtest/agent.conf";

/// `FROM <node image>` + the agent and its health check.
fn agent_image(suite: &mut Suite, tag: &str, check: &str, version: &str) -> Result<String> {
    node::registry(suite)?.derive(
        tag,
        LayerSpec::new("RUN install vmtest-agent and its health check")
            .executable(CHECK, check)
            .file("usr/share/vmtest/agent-version", format!("{version}\n")),
        version,
    )
}

/// Back on a deployment after a rollback: Degraded with the rollback's reason, uncordoned (the daemon
/// found the previous deployment healthy).
fn wait_rolled_back(node: &mut Node) -> Result<NodeView> {
    node.wait_node("Degraded (rolled back) and uncordoned", AFTER_REBOOT, |n| {
        n.state() == Some("Degraded")
            && n.annotation("reason")
                .is_some_and(|r| r.starts_with("rolled back:"))
            && !n.unschedulable()
    })
}

/// What an admin checks after a rollback, on the guest and in the cluster.
fn assert_rolled_back(
    node: &mut Node,
    old: &str,
    failed_image: &str,
    back: &NodeView,
) -> Result<String> {
    let reason = back.annotation("reason").unwrap_or_default().to_string();
    ensure!(
        reason.contains(failed_image) && reason.contains(INSTALLED_CONFIG),
        "the reason does not name the image rolled back and the config the node runs: {reason}"
    );
    ensure!(
        back.annotation("currentConfig") == Some(INSTALLED_CONFIG),
        "currentConfig moved: {:?}",
        back.mco_annotations()
    );
    ensure!(
        booted_checksum(node)? == old,
        "the previous deployment is not booted"
    );
    node.assert_booted_image(&node.installed_image.clone())?;
    // The installed node has no on-disk config (its annotations were set at install): after the
    // rollback there is still none, or the old one, never the failed one.
    let odc = node
        .vm
        .exec_ok("cat /etc/machine-config-daemon/currentconfig 2>/dev/null || true")?;
    ensure!(
        odc.is_empty() || odc.contains(INSTALLED_CONFIG),
        "the on-disk config is not the old config: {odc}"
    );
    ensure!(
        node.guest_file(AGENT_CONF)?.is_none(),
        "the failed config's file is still in /etc"
    );
    let events = node.kube.event_reasons()?;
    ensure!(
        count(&events, "HealthGateFailed") == 1 && count(&events, "RolledBack") == 1,
        "expected one HealthGateFailed and one RolledBack event: {events:?}"
    );
    let mcn = node
        .kube
        .kubectl(&["get", "machineconfignode", NODE, "-o", "json"])?;
    let mcn: serde_json::Value = serde_json::from_str(&mcn)?;
    let degraded = mcn["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "NodeDegraded"))
        .context("no NodeDegraded condition on the MachineConfigNode")?;
    ensure!(
        degraded["status"] == "True"
            && degraded["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("rolled back:")),
        "NodeDegraded: {degraded}"
    );
    let metrics = node
        .vm
        .exec_ok("busybox wget -qO- http://127.0.0.1:8797/metrics | grep '^mcd_rollbacks_total'")?;
    ensure!(
        metrics.trim() == "mcd_rollbacks_total 1",
        "mcd_rollbacks_total: {metrics:?}"
    );
    let status = node.vm.exec_ok("machine-config-daemon status")?;
    ensure!(
        status.contains("Last health gate: FAILED")
            && status.contains("booted back, healthy, uncordoned"),
        "status does not show the last gate:\n{status}"
    );
    Ok(reason)
}

fn failing_check_rolls_back(suite: &mut Suite, run: &mut Run) -> Result<()> {
    let bad = agent_image(suite, "agent-bad", FAILING, "3.0")?;
    let fixed = agent_image(suite, "agent-fixed", PASSING, "3.1")?;
    const BAD: &str = "rendered-worker-agent";
    const FIXED: &str = "rendered-worker-agent-fixed";
    let registries = registries_conf();
    let files: [McFile; 2] = [
        ("/etc/containers/registries.conf", &registries, 0o644),
        (AGENT_CONF, "driver = nvfoo\n", 0o644),
    ];
    let setup = Setup {
        configs: vec![
            machine_config(BAD, Some(&bad), &[], &files, &[]),
            machine_config(FIXED, Some(&fixed), &[], &files, &[]),
        ],
        ..Setup::default()
    };
    let node = Node::create(suite, run, setup)?;
    with_node(run, node, |node, run| {
        boot_to_done(node, run)?;
        let v1 = booted_checksum(node)?;
        node.kube.annotate(&[("desiredConfig", Some(BAD))])?;
        run.step("pull + drain + stage + reboot", || {
            node.wait_daemon_reboot()
        })?;
        let bad_boot = Instant::now();
        run.step("boot the new deployment", || node.boot())?;
        node.assert_booted_image(&bad)?;
        run.step(
            "health gate fails: previous deployment default, reboot",
            || node.wait_daemon_reboot(),
        )?;
        run.step("boot the previous deployment", || node.boot())?;
        let back = run.step(
            "daemon: Degraded with the evidence, healthy, uncordoned",
            || wait_rolled_back(node),
        )?;
        let took = bad_boot.elapsed();
        run.notes.push(format!(
            "bad boot to back on the old deployment and Ready (uncordoned): {:.1} s",
            took.as_secs_f64()
        ));
        let reason = assert_rolled_back(node, &v1, &bad, &back)?;
        ensure!(
            reason.contains("/usr/lib/machine-config-daemon/health.d/required.d/50-vmtest-agent exited with status 1")
                && reason.contains("vmtest-agent: cannot load driver nvfoo.ko: No such device"),
            "the reason does not carry the check and its output: {reason}"
        );
        // The failed boot's journal has the check's output too.
        let journal = node.vm.exec_ok(
            "journalctl -b -1 -u machine-config-daemon --no-pager -q -o cat | grep -c 'cannot load driver' || true",
        )?;
        ensure!(
            journal.trim() != "0",
            "the failed boot's daemon journal does not show the check's output"
        );
        // Never a loop: no further reboot while the target stays the failed one.
        std::thread::sleep(Duration::from_secs(10));
        ensure!(node.vm.check_exit()?.is_none(), "the node went down again");

        // A fixed image: the gate passes, Done, and the known-good deployment stays as the rollback.
        node.kube.annotate(&[("desiredConfig", Some(FIXED))])?;
        node.follow_daemon_reboot(run, "fixed image: pull + stage + reboot")?;
        let done = run.step("daemon: gate passes, Done", || {
            node.wait_done(FIXED, AFTER_REBOOT)
        })?;
        ensure!(!done.unschedulable(), "the node is still cordoned");
        ensure!(
            done.annotation("reason").unwrap_or_default().is_empty(),
            "the reason was not cleared: {:?}",
            done.mco_annotations()
        );
        node.assert_booted_image(&fixed)?;
        assert_updated_deployments(node, &v1)?;
        ensure!(
            node.ostree_status()?.deployments.len() == 2,
            "expected the fixed and the previous deployment only: {:#?}",
            node.ostree_status()?
        );
        ensure!(
            node.guest_file(AGENT_CONF)?.is_some(),
            "the config's file is missing after the fixed update"
        );
        let events = node.kube.event_reasons()?;
        ensure!(
            count(&events, "HealthGatePassed") == 1,
            "expected one HealthGatePassed event: {events:?}"
        );
        ensure!(
            boot_history(&node.vm)
                == [
                    Some(Exit::Reboot),
                    Some(Exit::Reboot),
                    Some(Exit::Reboot),
                    None
                ],
            "expected the update's, the rollback's and the fixed update's reboots: {:?}",
            boot_history(&node.vm)
        );
        Ok(())
    })
}

fn not_ready_rolls_back(suite: &mut Suite, run: &mut Run) -> Result<()> {
    let image = node::registry(suite)?.derive(
        "ready-gate",
        LayerSpec::new("RUN a new release").file("usr/share/vmtest/ready-gate", "4.0\n"),
        "4.0",
    )?;
    const CONFIG: &str = "rendered-worker-4";
    const DEADLINE: &str = "30s";
    let registries = registries_conf();
    let files: [McFile; 2] = [
        ("/etc/containers/registries.conf", &registries, 0o644),
        (AGENT_CONF, "release = 4\n", 0o644),
    ];
    let setup = Setup {
        configs: vec![machine_config(CONFIG, Some(&image), &[], &files, &[])],
        ..Setup::default()
    };
    let node = Node::create(suite, run, setup)?;
    with_node(run, node, |node, run| {
        boot_to_done(node, run)?;
        let v1 = booted_checksum(node)?;
        // The deadline from the environment file, as an admin sets it.
        node.vm.exec_ok(&format!(
            "echo MCD_HEALTH_READY_TIMEOUT={DEADLINE} >> /etc/default/machine-config-daemon && systemctl restart machine-config-daemon"
        ))?;
        node.kube.annotate(&[("desiredConfig", Some(CONFIG))])?;
        run.step("pull + drain + stage + reboot", || {
            node.wait_daemon_reboot()
        })?;
        // The new deployment's kubelet never comes up.
        node.kubelet_withheld = true;
        let bad_boot = Instant::now();
        run.step("boot the new deployment (no Ready)", || node.boot())?;
        let v2 = booted_checksum(node)?;
        ensure!(v2 != v1, "the new deployment did not boot");
        run.step("the Ready deadline passes: rollback decided", || {
            node.wait_event("HealthGateFailed", Duration::from_secs(300))
        })?;
        // Power goes in the middle of the rollback (making the previous deployment the default, or the
        // reboot after it).
        node.vm.power_cut()?;
        let disk = node.vm.disk()?;
        let entries = disk.boot_entries()?;
        let default = disk.deployment_of(bls::select(&entries, EntrySelection::Default)?)?;
        let switched = default.starts_with(&v1);
        run.notes.push(format!(
            "power cut during the rollback: the previous deployment was {} the default",
            if switched { "already" } else { "not yet" }
        ));
        node.kubelet_withheld = false;
        run.step("boot after the power cut", || node.boot())?;
        if booted_checksum(node)? == v2 {
            ensure!(
                !switched,
                "booted the failed deployment although the previous one was the default"
            );
            node.follow_daemon_reboot(run, "daemon: rolls back again after the power cut")?;
        }
        let back = run.step(
            "daemon: Degraded with the evidence, Ready, uncordoned",
            || wait_rolled_back(node),
        )?;
        run.notes.push(format!(
            "bad boot to back on the old deployment and Ready (uncordoned), power cut included: {:.1} s",
            bad_boot.elapsed().as_secs_f64()
        ));
        let reason = assert_rolled_back(node, &v1, &image, &back)?;
        ensure!(
            reason.contains(&format!(
                "the node did not report Ready within {} s of the boot",
                DEADLINE.trim_end_matches('s')
            )),
            "the reason does not name the deadline: {reason}"
        );
        let history = boot_history(&node.vm);
        let expected: Vec<Option<Exit>> = if switched {
            vec![Some(Exit::Reboot), Some(Exit::PowerCut), None]
        } else {
            vec![
                Some(Exit::Reboot),
                Some(Exit::PowerCut),
                Some(Exit::Reboot),
                None,
            ]
        };
        ensure!(
            history == expected,
            "boots: {history:?}, expected {expected:?}"
        );
        Ok(())
    })
}
