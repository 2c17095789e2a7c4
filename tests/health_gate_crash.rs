//! Kill -9 and power cuts at every point of a failing health gate and its rollback: the daemon is killed
//! at the point (a crash point of `update::rollback_crash_points()` or of the gate itself), then either
//! restarted in the same boot (a crash) or the node boots again without having asked (a power cut).
//! Every case must converge: back on the previous deployment with the old files, Degraded with the
//! evidence, uncordoned, one rollback reported, and no more reboots than the update's and the
//! rollback's (plus the power cut's own boot).

mod e2e;

use std::time::{Duration, Instant};

use e2e::{Lab, ignition, mc};
use testbed::LayerSpec;

const CHECK: &str = "usr/lib/machine-config-daemon/health.d/required.d/50-agent";

/// The points on the failing gate's path: the gate's own, then the rollback's.
fn points() -> Vec<String> {
    let mut p = vec![
        "daemon::before-healthy".to_string(),
        "daemon::gate-started".to_string(),
    ];
    p.extend(machine_config_daemon::daemon::update::rollback_crash_points());
    p
}

/// Play the host until the rollback is over. `power_cut`: the kill at `point` is followed by a boot the
/// daemon did not ask for. Returns whether the point fired.
async fn play(lab: &mut Lab, point: &str, power_cut: bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut handled = lab.systemd.reboots().len();
    let mut fired = false;
    loop {
        assert!(
            Instant::now() < deadline,
            "{point} (power cut {power_cut}): no convergence\n{}",
            lab.describe()
        );
        let reboot_requested = lab.systemd.reboots().len() > handled;
        if reboot_requested || lab.exited() {
            if lab.running() {
                lab.stop();
            }
            let mut cut = false;
            if !fired && lab.logs().contains(&format!("failpoint {point}: killing")) {
                fired = true;
                cut = power_cut;
                lab.extra_env.retain(|(k, _)| k != "FAILPOINTS");
            } else {
                assert!(
                    reboot_requested,
                    "{point}: the daemon exited, not by the crash point\n{}",
                    lab.describe()
                );
            }
            if reboot_requested || cut {
                handled = lab.systemd.reboots().len();
                lab.reboot_stopped();
            }
            lab.start();
            continue;
        }
        if lab.annotation("state").as_deref() == Some("Degraded")
            && lab
                .gate_record()
                .is_some_and(|r| r["rollback"]["step"] == "finished")
        {
            return fired;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn case(point: String, power_cut: bool) -> bool {
    let mut lab = Lab::at_base("rendered-1", &[("/etc/agent.conf", "off")], &[]).await;
    let base = lab.image("base");
    let bad = lab.derive(
        "bad",
        LayerSpec::new("RUN install agent")
            .executable(CHECK, "#!/bin/sh\necho 'agent: no driver' >&2\nexit 1\n"),
    );
    lab.put_mc(&mc(
        "rendered-2",
        Some(&bad),
        &[],
        ignition(&[("/etc/agent.conf", "on")], &[]),
    ));
    lab.extra_env = vec![("FAILPOINTS".into(), format!("{point}=return"))];
    lab.start();
    lab.wait_settled().await;
    lab.set_desired("rendered-2", None);
    let fired = play(&mut lab, &point, power_cut).await;
    // Settle, then judge.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let what = format!("{point} (power cut {power_cut})");
    let reason = lab.annotation("reason").unwrap_or_default();
    assert!(
        reason.starts_with("rolled back: config rendered-2") && reason.contains("agent: no driver"),
        "{what}: {reason}\n{}",
        lab.describe()
    );
    assert_eq!(
        lab.annotation("currentConfig").as_deref(),
        Some("rendered-1"),
        "{what}"
    );
    assert_eq!(
        lab.file("/etc/agent.conf").as_deref(),
        Some("off"),
        "{what}"
    );
    assert!(
        !lab.unschedulable(),
        "{what}: left cordoned\n{}",
        lab.describe()
    );
    assert_eq!(lab.default_deployment_image(), base, "{what}");
    assert_eq!(
        lab.event_messages("RolledBack").len(),
        1,
        "{what}: one rollback reported\n{}",
        lab.describe()
    );
    // A power cut after the previous deployment became the default is the rollback's reboot; one
    // after the reboot request coincides with it; one before the switch (or after the boot back) is a
    // boot of its own.
    let cut_is_the_reboot = power_cut
        && fired
        && [
            "daemon::rollback-after-switch",
            "daemon::rollback-after-reboot-recorded",
        ]
        .contains(&point.as_str());
    let cut_is_a_boot = power_cut
        && fired
        && !cut_is_the_reboot
        && point != "daemon::rollback-after-reboot-requested";
    assert_eq!(
        lab.systemd.reboots().len(),
        2 - usize::from(cut_is_the_reboot),
        "{what}: the update's reboot and the rollback's\n{}",
        lab.describe()
    );
    let expected_boots = 3 + usize::from(cut_is_a_boot);
    assert_eq!(lab.boots, expected_boots, "{what}\n{}", lab.describe());
    lab.stop();
    fired
}

#[test]
fn a_crash_or_power_cut_anywhere_in_the_gate_or_rollback_converges() {
    let mut cases: Vec<(String, bool)> = Vec::new();
    for p in points() {
        cases.push((p.clone(), false));
        cases.push((p, true));
    }
    let mut fired = Vec::new();
    for chunk in cases.chunks(4) {
        let handles: Vec<_> = chunk
            .iter()
            .cloned()
            .map(|(p, cut)| {
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Runtime::new().unwrap();
                    (rt.block_on(case(p.clone(), cut)), p, cut)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        for r in results {
            let (did, p, cut) = r.expect("a gate crash case failed (see above)");
            assert!(did, "{p} (power cut {cut}) never fired");
            fired.push(format!("{p}{}", if cut { " + power cut" } else { "" }));
        }
    }
    testbed::sweep::record(
        "crash-health-gate",
        fired.len(),
        "kill -9, or a power cut, at each point of a failing health gate and its rollback: back on the previous deployment with the old files, Degraded with the evidence, uncordoned, one rollback, two reboot requests",
    )
    .unwrap();
}
