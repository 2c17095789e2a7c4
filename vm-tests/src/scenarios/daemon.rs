//! The daemon end to end on a real booted ostree host: the real binary run by its real systemd units,
//! real image pulls through QEMU's restricted network, real staging in a private mount namespace, a
//! real `ostree-finalize-staged` at shutdown and a real reboot. The harness only plays the bootloader
//! (booting the highest-version BLS entry) and the cluster (kube-sim + `kubectl`), and checks what a
//! user would: the node's annotations and events, the booted deployment, files in the guest.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::json;
use testbed::LayerSpec;

use super::node::{
    self, CRIO_EVENTS, INSTALLED_CONFIG, McFile, NODE, Node, Setup, boot_history, machine_config,
    registries_conf, with_node,
};
use super::{Run, Scenario, Suite};
use crate::bls::{self, EntrySelection};
use crate::cluster::{self, NodeView};
use crate::osimages::{GUEST_REGISTRY_PORT, OsRegistry};
use crate::qemu::HOST_ADDR_IN_GUEST;
use crate::vm::Exit;

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "layering-out-of-cluster",
            about: "osImageURL by digest: drain, stage, one reboot, Done; the old deployment is the rollback",
            run: out_of_cluster_layering,
            only_when_named: false,
        },
        Scenario {
            name: "layering-on-cluster",
            about: "desiredImage set (currentImage follows), then cleared (back to the config's image)",
            run: on_cluster_layering,
            only_when_named: false,
        },
        Scenario {
            name: "rebootless",
            about: "SSH key + safe registries.conf change: files written, crio reloaded over D-Bus, no reboot",
            run: rebootless,
            only_when_named: false,
        },
        Scenario {
            name: "firstboot",
            about: "first boot as the cluster delivers it (stripped encapsulated config, node-annotations.json): image + kargs, one reboot, bootstrap, Done",
            run: firstboot,
            only_when_named: false,
        },
        Scenario {
            name: "power-cut",
            about: "power cuts while staging and before finalize: the old OS boots, the daemon restages, one reboot",
            run: power_cut_while_staging,
            only_when_named: false,
        },
        Scenario {
            name: "bad-image",
            about: "unreachable and non-bootable images: Degraded with the reason, nothing staged, no reboot",
            run: bad_image,
            only_when_named: false,
        },
    ]
}

/// First boot, and the daemon's first sync: Done at the installed config.
pub(super) const FIRST_SYNC: Duration = Duration::from_secs(240);
/// From the reboot back to Done (boot, verify, uncordon).
pub(super) const AFTER_REBOOT: Duration = Duration::from_secs(300);
/// A rebootless update or a failure report.
const NO_REBOOT_UPDATE: Duration = Duration::from_secs(240);

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHm0pUq1yBQ3KJtGx1QWl9n2n5vTq8b0yE0gR7bq1Xj4 admin@bastion";

/// The image an admin builds out of cluster: `FROM <node image>` + a layer with an agent.
fn layered_image(suite: &mut Suite) -> Result<String> {
    node::registry(suite)?.derive(
        "layered",
        LayerSpec::new("RUN install vmtest-agent")
            .file("usr/share/vmtest/layered", "layered image 2.0\n")
            .file("usr/libexec/vmtest-agent", "#!/bin/sh\necho agent\n"),
        "2.0",
    )
}

/// The image an on-cluster build (MachineOSBuild) would produce.
fn on_cluster_image(suite: &mut Suite) -> Result<String> {
    node::registry(suite)?.derive(
        "ocl",
        LayerSpec::new("RUN built on cluster by MachineOSBuild")
            .file("usr/share/vmtest/on-cluster", "on-cluster build 2.1\n"),
        "2.1",
    )
}

/// Boot, and let the daemon settle at the installed config.
pub(super) fn boot_to_done(node: &mut Node, run: &mut Run) -> Result<NodeView> {
    run.step("first boot to ready", || node.boot())?;
    let booted = booted_checksum(node)?;
    ensure!(
        booted == node.image.commit,
        "the guest booted {booted}, not the installed deployment {}",
        node.image.commit
    );
    run.step("daemon: Done at the installed config", || {
        node.wait_done(INSTALLED_CONFIG, FIRST_SYNC)
    })
}

/// After an update: a new deployment booted, nothing staged, and `rollback` (the checksum of the
/// deployment it came from) as the rollback. Returns the booted checksum.
pub(super) fn assert_updated_deployments(node: &mut Node, rollback: &str) -> Result<String> {
    let status = node.ostree_status()?;
    let booted = status
        .booted()
        .context("no booted deployment")?
        .checksum
        .clone();
    ensure!(
        booted != rollback,
        "still booted the old deployment {rollback}"
    );
    ensure!(
        status.staged().is_none(),
        "something is still staged: {status:#?}"
    );
    let previous = status
        .rollback()
        .context("no rollback deployment after the update")?;
    ensure!(
        previous.checksum == rollback,
        "the rollback is {}, expected the old deployment {rollback}",
        previous.checksum
    );
    Ok(booted)
}

pub(super) fn booted_checksum(node: &mut Node) -> Result<String> {
    Ok(node
        .ostree_status()?
        .booted()
        .context("no booted deployment")?
        .checksum
        .clone())
}

pub(super) fn count(reasons: &[String], reason: &str) -> usize {
    reasons.iter().filter(|r| r.as_str() == reason).count()
}

fn out_of_cluster_layering(suite: &mut Suite, run: &mut Run) -> Result<()> {
    let layered = layered_image(suite)?;
    const CONFIG: &str = "rendered-worker-2";
    let agent_conf = "enabled = true\n";
    let registries = registries_conf();
    let files: [McFile; 2] = [
        ("/etc/containers/registries.conf", &registries, 0o644),
        ("/etc/vmtest/agent.conf", agent_conf, 0o644),
    ];
    let setup = Setup {
        configs: vec![machine_config(CONFIG, Some(&layered), &[], &files, &[])],
        objects: vec![
            cluster::ready_pod("default", "web-1", NODE, None),
            cluster::ready_pod("default", "web-2", NODE, None),
            cluster::ready_pod(
                "kube-system",
                "node-exporter-x7k2p",
                NODE,
                Some("node-exporter"),
            ),
        ],
        ..Setup::default()
    };
    let node = Node::create(suite, run, setup)?;
    with_node(run, node, |node, run| {
        let first = boot_to_done(node, run)?;
        ensure!(
            first.annotation("currentImage").is_none(),
            "currentImage is set without on-cluster layering: {:?}",
            first.mco_annotations()
        );
        node.assert_booted_image(&node.installed_image.clone())?;
        let old = booted_checksum(node)?;

        let started = Instant::now();
        node.kube.annotate(&[("desiredConfig", Some(CONFIG))])?;
        run.step("pull + drain + stage + reboot", || {
            node.wait_daemon_reboot()
        })?;
        // The guest is down: what the daemon left in the cluster before rebooting.
        let rebooting = node.kube.node()?;
        let a = rebooting.mco_annotations();
        ensure!(
            rebooting.unschedulable(),
            "the node was not cordoned for the reboot"
        );
        ensure!(
            rebooting.annotation("post-config-action") == Some("Rebooting")
                && rebooting.state() == Some("Working"),
            "expected state=Working and post-config-action=Rebooting before the reboot: {a:?}"
        );
        ensure!(
            rebooting.annotation("currentConfig") == Some(INSTALLED_CONFIG),
            "currentConfig moved before the new OS was verified: {a:?}"
        );
        let pods = node.kube.pods_on_node()?;
        ensure!(
            pods == ["kube-system/node-exporter-x7k2p"],
            "after the drain the node runs {pods:?}; only the DaemonSet pod should stay"
        );
        run.step("boot after the reboot", || node.boot())?;
        let done = run.step("daemon: verify the boot, uncordon, Done", || {
            node.wait_done(CONFIG, AFTER_REBOOT)
        })?;
        run.notes.push(format!(
            "update from annotation to Done: {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        ensure!(!done.unschedulable(), "the node is still cordoned");
        let a = done.mco_annotations();
        ensure!(
            done.annotation("currentImage").is_none() && done.annotation("desiredImage").is_none(),
            "currentImage/desiredImage must stay unset for out-of-cluster layering: {a:?}"
        );
        ensure!(
            done.annotation("reason").unwrap_or_default().is_empty()
                && done
                    .annotation("post-config-action")
                    .unwrap_or_default()
                    .is_empty(),
            "reason or post-config-action not cleared: {a:?}"
        );
        node.assert_booted_image(&layered)?;
        assert_updated_deployments(node, &old)?;
        ensure!(
            node.guest_file("/usr/share/vmtest/layered")?.as_deref() == Some("layered image 2.0\n"),
            "the layered image's file is not in the booted OS"
        );
        ensure!(
            node.guest_file("/etc/vmtest/agent.conf")?.as_deref() == Some(agent_conf),
            "the config's file is missing after the reboot"
        );
        let reasons = node.kube.event_reasons()?;
        for wanted in [
            "Cordon",
            "Drain",
            "OSUpdateStaged",
            "Reboot",
            "Uncordon",
            "NodeDone",
        ] {
            ensure!(
                reasons.iter().any(|r| r == wanted),
                "no {wanted} event: {reasons:?}"
            );
        }
        ensure!(
            count(&reasons, "Reboot") == 1,
            "expected one reboot: {reasons:?}"
        );
        ensure!(
            boot_history(&node.vm) == [Some(Exit::Reboot), None],
            "expected exactly one reboot: {:?}",
            boot_history(&node.vm)
        );
        Ok(())
    })
}

fn on_cluster_layering(suite: &mut Suite, run: &mut Run) -> Result<()> {
    let built = on_cluster_image(suite)?;
    let node = Node::create(suite, run, Setup::default())?;
    with_node(run, node, |node, run| {
        boot_to_done(node, run)?;
        let installed = node.installed_image.clone();
        let v1 = booted_checksum(node)?;

        // The MCO node controller sets desiredImage (the MachineOSBuild's digested pull spec).
        node.kube.annotate(&[("desiredImage", Some(&built))])?;
        node.follow_daemon_reboot(run, "desiredImage: pull + stage + reboot")?;
        let done = run.step("daemon: Done with currentImage", || {
            node.wait_node("Done with currentImage = desiredImage", AFTER_REBOOT, |n| {
                n.done_at(INSTALLED_CONFIG) && n.annotation("currentImage") == Some(built.as_str())
            })
        })?;
        ensure!(!done.unschedulable(), "the node is still cordoned");
        node.assert_booted_image(&built)?;
        let v2 = assert_updated_deployments(node, &v1)?;
        ensure!(
            node.guest_file("/usr/share/vmtest/on-cluster")?.is_some(),
            "the on-cluster build's file is not in the booted OS"
        );

        // The MachineOSConfig is deleted: desiredImage goes away, the node returns to the config's image.
        node.kube.annotate(&[("desiredImage", None)])?;
        node.follow_daemon_reboot(run, "revert: stage the config's image + reboot")?;
        let done = run.step("daemon: Done without currentImage", || {
            node.wait_node("Done with currentImage removed", AFTER_REBOOT, |n| {
                n.done_at(INSTALLED_CONFIG) && n.annotation("currentImage").is_none()
            })
        })?;
        ensure!(!done.unschedulable(), "the node is still cordoned");
        ensure!(
            done.annotation("desiredImage").is_none(),
            "desiredImage came back: {:?}",
            done.mco_annotations()
        );
        node.assert_booted_image(&installed)?;
        assert_updated_deployments(node, &v2)?;
        ensure!(
            node.guest_file("/usr/share/vmtest/on-cluster")?.is_none(),
            "the on-cluster build's file is still there after the revert"
        );
        ensure!(
            boot_history(&node.vm) == [Some(Exit::Reboot), Some(Exit::Reboot), None],
            "expected two reboots: {:?}",
            boot_history(&node.vm)
        );
        Ok(())
    })
}

fn rebootless(suite: &mut Suite, run: &mut Run) -> Result<()> {
    const CONFIG: &str = "rendered-worker-2";
    // A digest-only mirror for an application registry: safe, so no drain, only a crio reload.
    let registries = format!(
        "{}\n[[registry]]\nprefix = \"quay.example.com/apps\"\nlocation = \"quay.example.com/apps\"\n\n\
         [[registry.mirror]]\nlocation = \"{HOST_ADDR_IN_GUEST}:{GUEST_REGISTRY_PORT}/apps\"\n\
         pull-from-mirror = \"digest-only\"\n",
        registries_conf()
    );
    let image = node::registry(suite)?.installed()?;
    let setup = Setup {
        configs: vec![machine_config(
            CONFIG,
            Some(&image),
            &[],
            &[("/etc/containers/registries.conf", &registries, 0o644)],
            &[KEY],
        )],
        ..Setup::default()
    };
    let node = Node::create(suite, run, setup)?;
    with_node(run, node, |node, run| {
        boot_to_done(node, run)?;
        let booted = booted_checksum(node)?;
        let crio_pid = node
            .vm
            .exec_ok("systemctl show -p MainPID --value crio.service")?;
        ensure!(
            node.guest_file(CRIO_EVENTS)?.as_deref() == Some("start\n"),
            "the crio stand-in did not start once"
        );

        node.kube.annotate(&[("desiredConfig", Some(CONFIG))])?;
        run.step("daemon: rebootless update to Done", || {
            node.wait_done(CONFIG, NO_REBOOT_UPDATE)
        })?;
        ensure!(
            node.vm.check_exit()?.is_none() && node.vm.boots().len() == 1,
            "the guest went down: {:?}",
            boot_history(&node.vm)
        );
        ensure!(
            node.journal_boots()? == 1,
            "the guest's journal shows another boot"
        );
        ensure!(
            node.guest_file(CRIO_EVENTS)?.as_deref() == Some("start\nreload\n"),
            "crio.service was not reloaded exactly once: {:?}",
            node.guest_file(CRIO_EVENTS)?
        );
        let pid_after = node
            .vm
            .exec_ok("systemctl show -p MainPID --value crio.service")?;
        ensure!(
            pid_after == crio_pid,
            "crio.service was restarted (pid {crio_pid} -> {pid_after}), not reloaded"
        );
        ensure!(
            node.guest_file("/etc/containers/registries.conf")?
                .as_deref()
                == Some(registries.as_str()),
            "registries.conf is not the config's"
        );
        let keys = node
            .vm
            .exec_ok("stat -c '%U %a' /home/core/.ssh/authorized_keys.d/ignition && cat /home/core/.ssh/authorized_keys.d/ignition")?;
        ensure!(
            keys == format!("core 600\n{KEY}\n"),
            "core's authorized keys: {keys:?}"
        );
        // Debian's sshd reads that file for core (the image ships the Debian package's sshd line).
        let sshd = node.vm.exec_ok(
            "sshd -T -C user=core,host=vmtest,addr=127.0.0.1 | grep -i '^authorizedkeysfile '",
        )?;
        ensure!(
            sshd.trim()
                == "authorizedkeysfile .ssh/authorized_keys .ssh/authorized_keys2 .ssh/authorized_keys.d/ignition",
            "sshd does not read authorized_keys.d/ignition: {sshd:?}"
        );
        ensure!(
            booted_checksum(node)? == booted,
            "the booted deployment changed"
        );
        ensure!(
            node.ostree_status()?.staged().is_none(),
            "something was staged"
        );
        let done = node.kube.node()?;
        ensure!(!done.unschedulable(), "the node was cordoned");
        let reasons = node.kube.event_reasons()?;
        ensure!(
            reasons.iter().any(|r| r == "ServiceReload") && reasons.iter().any(|r| r == "NodeDone"),
            "no ServiceReload/NodeDone event: {reasons:?}"
        );
        for unwanted in ["Cordon", "Drain", "Reboot", "OSUpdateStaged"] {
            ensure!(
                !reasons.iter().any(|r| r == unwanted),
                "unexpected {unwanted} event: {reasons:?}"
            );
        }
        Ok(())
    })
}

/// First boot as the cluster delivers it (MCO `pkg/server/server.go`): Ignition wrote the rendered
/// config's files into the deployment's `/etc`, plus the machine-config-server's encapsulated config with
/// `spec.config` emptied (`appendEncapsulated`) and `node-annotations.json` (`appendNodeAnnotations`); the
/// Node is as the kubelet registered it, without MCO annotations.
fn firstboot(suite: &mut Suite, run: &mut Run) -> Result<()> {
    let layered = layered_image(suite)?;
    const CONFIG: &str = "rendered-worker-fb";
    const KARG: &str = "vmtest.firstboot=applied";
    const FILE: &str = "/etc/vmtest-firstboot.conf";
    let conf = "first boot\n";
    let registries = registries_conf();
    let files: [McFile; 2] = [
        ("/etc/containers/registries.conf", &registries, 0o644),
        (FILE, conf, 0o644),
    ];
    let config = machine_config(CONFIG, Some(&layered), &[KARG], &files, &[]);
    let mut encapsulated = config.clone();
    encapsulated["spec"]["config"] = json!({"ignition": {"version": "3.4.0"}});
    let node_annotations = json!({
        "machineconfiguration.openshift.io/currentConfig": CONFIG,
        "machineconfiguration.openshift.io/desiredConfig": CONFIG,
        "machineconfiguration.openshift.io/firstPivotConfig": CONFIG,
        "machineconfiguration.openshift.io/state": "Done",
    });
    let mut registered = cluster::node_object(NODE, None, CONFIG);
    registered["metadata"]["annotations"] = json!({});
    let setup = Setup {
        configs: vec![config.clone()],
        node: Some(registered),
        ..Setup::default()
    };
    let node = Node::create(suite, run, setup)?;
    // What Ignition leaves in the deployment's /etc before the first boot. registries.conf is the image's
    // already (the config carries the same contents).
    let disk = node.vm.disk()?;
    let entries = disk.boot_entries()?;
    let deployment = disk.deployment_of(bls::select(&entries, EntrySelection::Default)?)?;
    let etc = format!("/ostree/deploy/debian/deploy/{deployment}/etc");
    let file_in_etc = FILE
        .strip_prefix("/etc")
        .context("the file is under /etc")?;
    disk.write_file(&format!("{etc}{file_in_etc}"), conf.as_bytes(), 0o644)?;
    disk.write_file(
        &format!("{etc}/ignition-machine-config-encapsulated.json"),
        serde_json::to_string_pretty(&encapsulated)?.as_bytes(),
        0o600,
    )?;
    disk.mkdir(&format!("{etc}/machine-config-daemon"), 0o700)?;
    disk.write_file(
        &format!("{etc}/machine-config-daemon/node-annotations.json"),
        serde_json::to_string(&node_annotations)?.as_bytes(),
        0o644,
    )?;
    with_node(run, node, |node, run| {
        let v1 = deployment.split('.').next().unwrap_or_default().to_string();
        run.step(
            "first boot: firstboot unit applies the OS part, then reboots",
            || {
                node.vm.start(EntrySelection::Default)?;
                node.vm.expect_exit(Exit::Reboot)
            },
        )?;
        run.step("boot after the reboot", || node.boot())?;
        // node-annotations.json already says Done: the NodeDone event marks the validated bootstrap.
        run.step(
            "daemon: bootstrap from node-annotations.json, validate, Done",
            || node.wait_event("NodeDone", AFTER_REBOOT),
        )?;
        let done = node.wait_done(CONFIG, Duration::from_secs(30))?;
        ensure!(!done.unschedulable(), "the node is cordoned");
        ensure!(
            done.annotation("firstPivotConfig") == Some(CONFIG),
            "the initial annotations did not come from node-annotations.json: {:?}",
            done.mco_annotations()
        );
        let cmdline = node.vm.exec_ok("cat /proc/cmdline")?;
        ensure!(
            cmdline.split_whitespace().any(|k| k == KARG),
            "{KARG} is not on the running kernel's command line: {cmdline}"
        );
        node.assert_booted_image(&layered)?;
        assert_updated_deployments(node, &v1)?;
        ensure!(
            node.guest_file(FILE)?.as_deref() == Some(conf),
            "the file Ignition wrote is gone"
        );
        let etc = node
            .vm
            .exec_ok("ls /etc | grep ignition-machine-config || true")?;
        ensure!(
            etc == "ignition-machine-config-encapsulated.json.bak\n",
            "expected only the .bak of the encapsulated config in /etc, found {etc:?}"
        );
        // The node's on-disk config is the full rendered config (with the file), not the stripped one.
        let odc = node
            .vm
            .exec_ok("cat /etc/machine-config-daemon/currentconfig")?;
        ensure!(
            odc.contains(CONFIG) && odc.contains(FILE),
            "the on-disk config is not the full rendered config: {odc}"
        );
        let state = node.vm.exec_ok("ls /etc/machine-config-daemon")?;
        ensure!(
            state.lines().any(|l| l == "node-annotation.json.bak")
                && !state.lines().any(|l| l == "node-annotations.json"),
            "node-annotations.json was not kept as .bak: {state:?}"
        );
        // Give a stray second reboot the time to show itself.
        std::thread::sleep(Duration::from_secs(10));
        ensure!(
            node.vm.check_exit()?.is_none(),
            "the node went down again after Done"
        );
        ensure!(
            boot_history(&node.vm) == [Some(Exit::Reboot), None],
            "expected exactly one reboot: {:?}",
            boot_history(&node.vm)
        );
        // The firstboot unit holds the daemon back until the node runs its config: the daemon must not
        // even start in the boot that firstboot ended with a reboot.
        let daemon_in_first_boot = node.vm.exec_ok(
            "journalctl -b -1 -u machine-config-daemon.service --no-pager -q -o short-monotonic",
        )?;
        ensure!(
            daemon_in_first_boot.trim().is_empty(),
            "machine-config-daemon.service started while the firstboot reboot was pending:\n{daemon_in_first_boot}"
        );
        let firstboot_ran = node
            .vm
            .exec_ok("journalctl -b -1 -u machine-config-daemon-firstboot --no-pager -q | wc -l")?;
        ensure!(
            firstboot_ran.trim() != "0",
            "the firstboot unit left nothing in the previous boot's journal"
        );
        Ok(())
    })
}

fn power_cut_while_staging(suite: &mut Suite, run: &mut Run) -> Result<()> {
    let layered = layered_image(suite)?;
    const CONFIG: &str = "rendered-worker-2";
    let registries = registries_conf();
    let files: [McFile; 1] = [("/etc/containers/registries.conf", &registries, 0o644)];
    let setup = Setup {
        configs: vec![machine_config(CONFIG, Some(&layered), &[], &files, &[])],
        ..Setup::default()
    };
    let node = Node::create(suite, run, setup)?;
    with_node(run, node, |node, run| {
        boot_to_done(node, run)?;
        let v1 = booted_checksum(node)?;
        node.kube.annotate(&[("desiredConfig", Some(CONFIG))])?;
        run.step("wait for the daemon to start staging", || {
            node.wait_event("OSUpdateStarted", Duration::from_secs(300))
        })?;
        node.vm.power_cut()?;
        let reasons = node.kube.event_reasons()?;
        run.notes.push(format!(
            "power cut after events {:?}",
            reasons
                .iter()
                .filter(|r| r.starts_with("OSUpdate") || r.as_str() == "Reboot")
                .collect::<Vec<_>>()
        ));
        assert_only_entry(node, &v1)?;
        node.vm
            .config_mut()
            .extra_kargs
            .push("vmtest.hold_finalize".into());
        run.step("boot after the power cut", || node.boot())?;
        ensure!(
            booted_checksum(node)? == v1,
            "the old deployment did not boot after the power cut"
        );
        // The daemon resumes and stages again; this time the power goes once the update is staged and
        // the reboot has begun, before ostree-finalize-staged writes the boot entries (the harness
        // holds the finalize at shutdown for this boot: vmtest-hold-finalize.service).
        run.step(
            "daemon: stage again, reboot; power cut before finalize",
            || {
                node.vm
                    .wait_console("VMTEST-HOLDING-FINALIZE", Duration::from_secs(300))?;
                node.vm.power_cut()
            },
        )?;
        node.vm.config_mut().extra_kargs.clear();
        let rebooting = node.kube.node()?;
        ensure!(
            rebooting.annotation("post-config-action") == Some("Rebooting"),
            "the second power cut came before the reboot was requested: {:?}",
            rebooting.mco_annotations()
        );
        assert_only_entry(node, &v1)?;
        run.step("boot after the second power cut", || node.boot())?;
        ensure!(
            booted_checksum(node)? == v1,
            "the old deployment did not boot after the second power cut"
        );
        node.follow_daemon_reboot(
            run,
            "daemon: finds the old OS booted, stages once more, reboots",
        )?;
        run.step("daemon: verify, Done", || {
            node.wait_done(CONFIG, AFTER_REBOOT)
        })?;
        node.assert_booted_image(&layered)?;
        assert_updated_deployments(node, &v1)?;
        let reasons = node.kube.event_reasons()?;
        ensure!(
            count(&reasons, "FailedFinalization") == 1,
            "expected one FailedFinalization event (the staged OS did not boot once): {reasons:?}"
        );
        std::thread::sleep(Duration::from_secs(10));
        ensure!(
            node.vm.check_exit()?.is_none(),
            "the node went down again after Done"
        );
        ensure!(
            boot_history(&node.vm)
                == [
                    Some(Exit::PowerCut),
                    Some(Exit::PowerCut),
                    Some(Exit::Reboot),
                    None
                ],
            "expected two power cuts, then exactly one reboot: {:?}",
            boot_history(&node.vm)
        );
        Ok(())
    })
}

/// With the VM off: the boot loader sees only the old deployment (nothing was finalized).
fn assert_only_entry(node: &Node, v1: &str) -> Result<()> {
    let disk = node.vm.disk()?;
    let entries = disk.boot_entries()?;
    let default = disk.deployment_of(bls::select(&entries, EntrySelection::Default)?)?;
    ensure!(
        default.starts_with(v1),
        "after the power cut the default boot entry leads to {default}, not the old {v1}"
    );
    ensure!(
        entries.len() == 1,
        "an unfinalized update must not add a boot entry: {entries:?}"
    );
    Ok(())
}

/// Wait for `state=Degraded` with a reason containing `needle`.
fn wait_degraded(node: &mut Node, needle: &str) -> Result<NodeView> {
    node.wait_node(
        &format!("Degraded with a reason containing {needle:?}"),
        NO_REBOOT_UPDATE,
        |n| {
            n.state() == Some("Degraded")
                && n.annotation("reason").is_some_and(|r| r.contains(needle))
        },
    )
}

/// Nothing staged, nothing new deployed, not cordoned, still at the installed config.
fn assert_untouched(node: &mut Node, deployments: usize, degraded: &NodeView) -> Result<()> {
    let status = node.ostree_status()?;
    ensure!(
        status.staged().is_none() && status.deployments.len() == deployments,
        "the sysroot changed: {status:#?}"
    );
    ensure!(!degraded.unschedulable(), "the node was cordoned");
    ensure!(
        degraded.annotation("currentConfig") == Some(INSTALLED_CONFIG),
        "currentConfig moved: {:?}",
        degraded.mco_annotations()
    );
    ensure!(
        node.vm.check_exit()?.is_none() && node.vm.boots().len() == 1,
        "the guest went down: {:?}",
        boot_history(&node.vm)
    );
    Ok(())
}

fn bad_image(suite: &mut Suite, run: &mut Run) -> Result<()> {
    let installed = node::registry(suite)?.installed()?;
    // A registry port the guest has no route to: the restricted network refuses it.
    let unreachable = format!(
        "{HOST_ADDR_IN_GUEST}:5999/os@{}",
        OsRegistry::digest_of(&installed)
    );
    let not_bootable = node::registry(suite)?.not_bootable("app")?;
    let registries = registries_conf();
    let files: [McFile; 1] = [("/etc/containers/registries.conf", &registries, 0o644)];
    let setup = Setup {
        configs: vec![
            machine_config(
                "rendered-bad-registry",
                Some(&unreachable),
                &[],
                &files,
                &[],
            ),
            machine_config(
                "rendered-not-bootable",
                Some(&not_bootable),
                &[],
                &files,
                &[],
            ),
        ],
        ..Setup::default()
    };
    let node = Node::create(suite, run, setup)?;
    with_node(run, node, |node, run| {
        boot_to_done(node, run)?;
        let deployments = node.ostree_status()?.deployments.len();

        for (config, label, needle, image) in [
            (
                "rendered-bad-registry",
                "unreachable",
                "the registry cannot be reached",
                &unreachable,
            ),
            (
                "rendered-not-bootable",
                "not bootable",
                "not a bootable OS image",
                &not_bootable,
            ),
        ] {
            node.kube.annotate(&[("desiredConfig", Some(config))])?;
            let degraded = run.step(&format!("{label}: Degraded"), || {
                wait_degraded(node, needle)
            })?;
            let reason = degraded
                .annotation("reason")
                .unwrap_or_default()
                .to_string();
            ensure!(
                reason.contains(image.as_str()),
                "the reason does not name the image: {reason}"
            );
            run.notes.push(format!("{label}: reason={reason:?}"));
            assert_untouched(node, deployments, &degraded)?;
        }

        // Back to the installed config: the node recovers without a reboot.
        node.kube
            .annotate(&[("desiredConfig", Some(INSTALLED_CONFIG))])?;
        let done = run.step("back to the installed config: Done", || {
            node.wait_done(INSTALLED_CONFIG, NO_REBOOT_UPDATE)
        })?;
        ensure!(
            done.annotation("reason").unwrap_or_default().is_empty(),
            "the reason was not cleared: {:?}",
            done.mco_annotations()
        );
        assert_untouched(node, deployments, &done)?;
        let reasons = node.kube.event_reasons()?;
        for unwanted in ["Reboot", "OSUpdateStaged", "Cordon"] {
            ensure!(
                !reasons.iter().any(|r| r == unwanted),
                "unexpected {unwanted} event: {reasons:?}"
            );
        }
        Ok(())
    })
}
