//! The health gate after a boot into a new deployment, end to end (kube-sim, a real registry and
//! sysroot, simulated boots; see `tests/e2e/mod.rs`): every branch — a required check the image ships
//! fails, a check hangs past its timeout, the kubelet never reports Ready, wanted and greenboot checks —
//! then the rollback: one more reboot, the previous deployment, the old files, Degraded with the evidence,
//! uncordoned once healthy, never a loop; the forcefile tries again; a fixed image passes and the
//! previous deployment is kept. The kill -9 / power-cut sweep of the gate and rollback is in
//! `tests/health_gate_crash.rs`.

mod e2e;

use std::time::Duration;

use e2e::{Lab, ignition, mc};
use serde_json::{Value, json};
use testbed::LayerSpec;

const IMAGE_CHECK: &str = "usr/lib/machine-config-daemon/health.d/required.d/50-agent";
const FAILING: &str = "#!/bin/sh\necho checking the agent driver\necho 'agent: cannot load driver nvfoo.ko: No such device' >&2\nexit 1\n";
const PASSING: &str = "#!/bin/sh\necho agent driver loaded\n";

/// An Ignition config with files `(path, contents, mode)`.
fn files(list: &[(&str, &str, u32)]) -> Value {
    let files: Vec<Value> = list
        .iter()
        .map(|(p, c, m)| json!({"path": p, "mode": m, "overwrite": true, "contents": {"source": machine_config_daemon::config::dataurl::encode_base64(c.as_bytes())}}))
        .collect();
    json!({"ignition": {"version": "3.4.0"}, "storage": {"files": files}})
}

/// Back on the previous deployment, Degraded with the rollback's evidence, the rollback over.
fn rolled_back(lab: &Lab) -> bool {
    lab.annotation("state").as_deref() == Some("Degraded")
        && lab
            .annotation("reason")
            .is_some_and(|r| r.starts_with("rolled back:"))
        && lab
            .gate_record()
            .is_some_and(|r| r["rollback"]["step"] == "finished")
}

async fn wait_rolled_back(lab: &mut Lab) {
    lab.wait_for(
        "the rollback to finish (Degraded, rolled back)",
        Duration::from_secs(90),
        rolled_back,
    )
    .await;
}

/// The update from rendered-1 (base image, agent off) to `config`; the new deployment boots, its gate
/// fails, the node reboots into the previous deployment and reports it.
async fn update_and_roll_back(lab: &mut Lab, config: &str, reboots_before: usize) {
    lab.set_desired(config, None);
    lab.wait_reboot_request(reboots_before + 1).await;
    lab.reboot();
    lab.wait_reboot_request(reboots_before + 2).await;
    lab.reboot();
    wait_rolled_back(lab).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_image_check_rolls_back_once_then_the_forcefile_retries_and_a_fixed_image_passes()
{
    let mut lab = Lab::at_base("rendered-1", &[("/etc/agent.conf", "off")], &[]).await;
    let base = lab.image("base");
    let bad = lab.derive(
        "bad",
        LayerSpec::new("RUN install agent").executable(IMAGE_CHECK, FAILING),
    );
    let fixed = lab.derive(
        "fixed",
        LayerSpec::new("RUN install agent 2").executable(IMAGE_CHECK, PASSING),
    );
    lab.put_mc(&mc(
        "rendered-2",
        Some(&bad),
        &[],
        ignition(&[("/etc/agent.conf", "on")], &[]),
    ));
    lab.start();
    lab.wait_settled().await;

    lab.set_desired("rendered-2", None);
    lab.wait_reboot_request(1).await;
    lab.reboot();
    // The gate fails on the new deployment: it says why, makes the previous one the default, reboots.
    lab.wait_reboot_request(2).await;
    let failed = lab.event_messages("HealthGateFailed");
    assert!(
        failed.len() == 1
            && failed[0].contains("50-agent exited with status 1")
            && failed[0].contains("cannot load driver nvfoo.ko")
            && failed[0].contains(&format!("rolling back to {base}")),
        "{failed:?}"
    );
    assert_eq!(
        lab.default_deployment_image(),
        base,
        "the next boot runs the previous deployment"
    );
    assert_eq!(lab.annotation("state").as_deref(), Some("Working"));
    assert!(lab.unschedulable(), "cordoned while it is not back");
    lab.reboot();
    wait_rolled_back(&mut lab).await;

    // What an admin sees.
    let reason = lab.annotation("reason").unwrap();
    for needle in [
        "config rendered-2",
        bad.as_str(),
        "required health check /usr/lib/machine-config-daemon/health.d/required.d/50-agent exited with status 1",
        "agent: cannot load driver nvfoo.ko: No such device",
        &format!("runs config rendered-1 on {base} again"),
        "/run/machine-config-daemon-force",
    ] {
        assert!(
            reason.contains(needle),
            "{needle:?} not in the reason: {reason}"
        );
    }
    assert_eq!(
        lab.annotation("currentConfig").as_deref(),
        Some("rendered-1")
    );
    let odc = lab
        .file("/etc/machine-config-daemon/currentconfig")
        .unwrap();
    assert!(
        odc.contains("rendered-1") && !odc.contains("rendered-2"),
        "{odc}"
    );
    assert_eq!(
        lab.file("/etc/agent.conf").as_deref(),
        Some("off"),
        "the old config's file is back"
    );
    assert!(
        !lab.unschedulable(),
        "uncordoned on the healthy previous deployment\n{}",
        lab.describe()
    );
    let rolled = lab.event_messages("RolledBack");
    assert_eq!(rolled.len(), 1, "{:?}", lab.events_full());
    assert_eq!(rolled[0], reason);
    let degraded = lab.mcn_condition("NodeDegraded").unwrap();
    assert_eq!(
        (degraded.status.as_str(), degraded.message.as_str()),
        ("True", reason.as_str())
    );
    assert_eq!(lab.metric("mcd_rollbacks_total"), Some(1.0));
    assert!(
        lab.metric("mcd_health_gate{result=\"rolled_back\",config=\"rendered-2\"}")
            .is_some_and(|t| t > 0.0),
        "{:?}",
        lab.http_get("/metrics")
    );
    assert_eq!(
        lab.systemd.reboots().len(),
        2,
        "the update's reboot and the rollback's"
    );
    assert_eq!(lab.boots, 3);
    assert_eq!(
        lab.deployment_images(),
        vec![base.clone(), bad.clone()],
        "booted back, failed one kept"
    );
    let status = lab.status_output("text");
    for needle in [
        "Last health gate: FAILED",
        "required: /usr/lib/machine-config-daemon/health.d/required.d/50-agent exited with status 1",
        &format!("Rollback: to {base}: booted back, healthy, uncordoned"),
    ] {
        assert!(status.contains(needle), "{needle:?} not in:\n{status}");
    }
    let json: Value = serde_json::from_str(&lab.status_output("json")).unwrap();
    let gate = &json["status"]["lastHealthGate"];
    assert_eq!(gate["verdict"], "failed");
    assert_eq!(
        gate["checks"][0]["output"][1],
        "agent: cannot load driver nvfoo.ko: No such device"
    );

    // Never a loop: a restart, or a boot, does not try rendered-2 again.
    lab.stop();
    lab.start();
    tokio::time::sleep(Duration::from_secs(2)).await;
    lab.stop();
    lab.reboot_stopped();
    lab.start();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        lab.systemd.reboots().len(),
        2,
        "no third reboot\n{}",
        lab.describe()
    );
    assert_eq!(lab.annotation("reason").as_deref(), Some(reason.as_str()));
    assert!(!lab.unschedulable());

    // The forcefile tries the same target again (and it fails again the same way).
    let reboots = lab.systemd.reboots().len();
    lab.write_file("run/machine-config-daemon-force", "");
    lab.wait_reboot_request(reboots + 1).await;
    lab.reboot();
    lab.wait_reboot_request(reboots + 2).await;
    lab.reboot();
    lab.wait_for("the second rollback", Duration::from_secs(90), |lab| {
        rolled_back(lab) && lab.event_messages("RolledBack").len() == 2
    })
    .await;
    assert_eq!(lab.file("/etc/agent.conf").as_deref(), Some("off"));

    // A fixed image passes: Done, and the previous deployment is kept for a rollback; the older ones go.
    lab.put_mc(&mc(
        "rendered-3",
        Some(&fixed),
        &[],
        ignition(&[("/etc/agent.conf", "on")], &[]),
    ));
    lab.set_desired("rendered-3", None);
    lab.wait_reboot_request(reboots + 3).await;
    lab.reboot();
    lab.wait_updated("rendered-3").await;
    lab.wait_for("the prune", Duration::from_secs(30), |lab| {
        lab.gate_record().is_some_and(|r| r["pruned"] == true)
    })
    .await;
    assert_eq!(lab.deployment_images(), vec![fixed.clone(), base.clone()]);
    assert_eq!(lab.file("/etc/agent.conf").as_deref(), Some("on"));
    assert_eq!(lab.annotation("reason").as_deref(), Some(""));
    assert!(!lab.unschedulable());
    assert_eq!(lab.mcn_condition("NodeDegraded").unwrap().status, "False");
    let passed = lab.event_messages("HealthGatePassed");
    assert!(passed.iter().any(|m| m.contains(&fixed)), "{passed:?}");
    assert!(
        lab.status_output("text")
            .contains("Last health gate: passed")
    );
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_check_that_hangs_past_its_timeout_is_killed_and_the_node_rolls_back() {
    let mut lab = Lab::at_base("rendered-1", &[("/etc/agent.conf", "off")], &[]).await;
    lab.extra_args = vec!["--health-check-timeout".into(), "2s".into()];
    let check = "/etc/machine-config-daemon/health.d/required.d/10-hang";
    // A kernel argument makes a new deployment of the same image; the config ships its own check.
    lab.put_mc(&mc(
        "rendered-2",
        Some(&lab.image("base")),
        &["nosmt"],
        files(&[
            ("/etc/agent.conf", "on", 0o644),
            (
                check,
                "#!/bin/sh\necho waiting for /dev/nvfoo\nsleep 6017 &\nexec sleep 6017\n",
                0o755,
            ),
        ]),
    ));
    lab.start();
    lab.wait_settled().await;
    update_and_roll_back(&mut lab, "rendered-2", 0).await;
    let reason = lab.annotation("reason").unwrap();
    assert!(
        reason.contains(&format!(
            "{check} did not finish within its 2 s timeout; its last output: waiting for /dev/nvfoo"
        )),
        "{reason}"
    );
    let left = std::process::Command::new("pgrep")
        .args(["-f", "sleep 6017"])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "the check's processes were killed: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    assert!(
        !lab.path(check).exists(),
        "the failed config's check is gone with its other files"
    );
    assert_eq!(lab.file("/etc/agent.conf").as_deref(), Some("off"));
    let options = lab.sysroot.boot_options().unwrap();
    assert!(
        !options[0].contains("nosmt"),
        "the previous deployment's arguments: {options:?}"
    );
    let record = lab.gate_record().unwrap();
    assert_eq!(record["checks"][0]["result"], "timedOut");
    assert!(
        record["checks"][0]["millis"].as_u64().unwrap() < 10_000,
        "{record}"
    );
    assert!(!lab.unschedulable());
    assert_eq!(lab.systemd.reboots().len(), 2);
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_never_reports_ready_rolls_back_and_is_uncordoned_once_ready() {
    let mut lab = Lab::at_base("rendered-1", &[], &[]).await;
    lab.extra_args = vec!["--health-ready-timeout".into(), "6s".into()];
    let v2 = lab.derive("v2", LayerSpec::new("RUN x").file("usr/share/v2", "2\n"));
    lab.put_mc(&mc("rendered-2", Some(&v2), &[], ignition(&[], &[])));
    lab.start();
    lab.wait_settled().await;
    lab.set_desired("rendered-2", None);
    lab.wait_reboot_request(1).await;
    // The new deployment's kubelet never comes up.
    lab.kubelet_withheld = true;
    lab.reboot();
    lab.wait_reboot_request(2).await;
    let failed = lab.event_messages("HealthGateFailed");
    assert!(
        failed
            .iter()
            .any(|m| m.contains("the node did not report Ready within 6 s of the boot")),
        "{failed:?}"
    );
    // Back on the previous deployment the kubelet is slow too: Degraded at once, cordoned until Ready.
    lab.reboot();
    lab.wait_for("the rollback report", Duration::from_secs(60), |lab| {
        !lab.event_messages("RolledBack").is_empty()
    })
    .await;
    assert_eq!(lab.annotation("state").as_deref(), Some("Degraded"));
    assert!(
        lab.unschedulable(),
        "not uncordoned before the node is Ready"
    );
    lab.kubelet_withheld = false;
    lab.kubelet_reports_ready();
    wait_rolled_back(&mut lab).await;
    assert!(!lab.unschedulable());
    let reason = lab.annotation("reason").unwrap();
    assert!(
        reason.contains("did not report Ready within 6 s"),
        "{reason}"
    );
    assert_eq!(lab.default_deployment_image(), lab.image("base"));
    assert_eq!(lab.systemd.reboots().len(), 2);
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn wanted_checks_only_warn_greenboot_and_config_checks_run_and_plan_names_them() {
    let mut lab = Lab::at_base("rendered-1", &[], &[]).await;
    let v2 = lab.derive(
        "v2",
        LayerSpec::new("RUN install ntp check").executable(
            "usr/lib/machine-config-daemon/health.d/wanted.d/90-ntp",
            "#!/bin/sh\necho 'clock not synchronised'\nexit 2\n",
        ),
    );
    let rendered2 = mc(
        "rendered-2",
        Some(&v2),
        &[],
        files(&[
            // greenboot's scripts run with bash, executable or not.
            (
                "/etc/greenboot/check/required.d/10-ok.sh",
                "[[ -d / ]] && echo bash ok\n",
                0o644,
            ),
            (
                "/etc/machine-config-daemon/health.d/required.d/20-ok",
                "#!/bin/sh\nexit 0\n",
                0o755,
            ),
        ]),
    );
    lab.put_mc(&rendered2);
    // `plan` says which checks will run.
    let dir = lab.work.path();
    std::fs::write(
        dir.join("r1.json"),
        serde_json::to_vec(&mc(
            "rendered-1",
            Some(&lab.image("base")),
            &[],
            ignition(&[], &[]),
        ))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("r2.json"), serde_json::to_vec(&rendered2).unwrap()).unwrap();
    let plan = std::process::Command::new(e2e::BIN)
        .args(["plan", "--current"])
        .arg(dir.join("r1.json"))
        .arg("--desired")
        .arg(dir.join("r2.json"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.contains("health gate:   after the reboot, required checks in /usr/lib/machine-config-daemon/health.d/required.d")
            && text.contains("(this config adds 10-ok.sh, 20-ok)")
            && text.contains("rolls back to the current deployment"),
        "{text}"
    );

    lab.start();
    lab.wait_settled().await;
    lab.set_desired("rendered-2", None);
    lab.wait_reboot_request(1).await;
    lab.reboot();
    lab.wait_updated("rendered-2").await;
    assert_eq!(lab.systemd.reboots().len(), 1);
    let warnings = lab.event_messages("HealthCheckWarning");
    assert!(
        warnings.len() == 1
            && warnings[0].contains("90-ntp exited with status 2")
            && warnings[0].contains("clock not synchronised"),
        "{warnings:?}"
    );
    let record = lab.gate_record().unwrap();
    assert_eq!(record["verdict"], "passed");
    let checks: Vec<(&str, &str)> = record["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["path"].as_str().unwrap(), c["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        checks,
        [
            (
                "/etc/machine-config-daemon/health.d/required.d/20-ok",
                "passed"
            ),
            ("/etc/greenboot/check/required.d/10-ok.sh", "passed"),
            (
                "/usr/lib/machine-config-daemon/health.d/wanted.d/90-ntp",
                "failed"
            ),
        ]
    );
    assert_eq!(record["checks"][1]["output"][0], "bash ok");
    assert!(lab.event_messages("HealthGatePassed")[0].contains("3 check(s) ran"));
    lab.stop();
}
