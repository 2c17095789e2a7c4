//! The reliability sweep beyond the crash points of `daemon_e2e.rs` (which covers the rebootless and the
//! image+reboot paths): kill -9 at every crash point of the first-boot path, API faults from kube-sim
//! during updates, hostile node annotations, and secrets that must never reach a log or the cluster.
//! Each part records its result for `testbed sweep-report` (the summary line of `make test`).

mod e2e;

use std::time::{Duration, Instant};

use e2e::{Lab, NODE, ignition, mc, pod};
use kube_sim::{FaultReport, FaultRule};
use serde_json::{Value, json};
use testbed::LayerSpec;

const KEY1: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHm0pUq1yBQ3KJtGx1QWl9n2n5vTq8b0yE0gR7bq1Xj4 admin@bastion";
const JOURNAL: &str = "etc/machine-config-daemon/update-in-progress.json";
const APP_FILES: [&str; 3] = ["/etc/app/a.conf", "/etc/app/b.conf", "/etc/app/c.conf"];
const APP_POLICY: &str = "apiVersion: operator.openshift.io/v1\nkind: MachineConfiguration\nmetadata:\n  name: cluster\nspec:\n  managementState: Managed\n  nodeDisruptionPolicy:\n    files:\n    - path: /etc/app\n      actions:\n      - type: Drain\n      - type: Reload\n        reload:\n          serviceName: app.service\n";

fn app_files(generation: usize) -> Vec<(&'static str, String)> {
    APP_FILES
        .iter()
        .map(|p| (*p, format!("{p} generation {generation}\n")))
        .collect()
}

fn app_mc(name: &str, image: &str, generation: usize, keys: &[&str]) -> Value {
    let files = app_files(generation);
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    mc(name, Some(image), &[], ignition(&files, keys))
}

/// A lab installed at rendered-0: the base image with the app files of generation 0.
async fn app_lab() -> Lab {
    Lab::new(&|lab| app_mc("rendered-0", &lab.image("base"), 0, &[])).await
}

fn assert_converged(lab: &Lab, config: &str, generation: usize, what: &str) {
    assert_eq!(
        lab.annotation("state").as_deref(),
        Some("Done"),
        "{what}\n{}",
        lab.describe()
    );
    assert_eq!(
        lab.annotation("currentConfig").as_deref(),
        Some(config),
        "{what}"
    );
    assert_eq!(lab.annotation("reason").as_deref(), Some(""), "{what}");
    assert!(!lab.unschedulable(), "{what}: left cordoned");
    for (p, c) in app_files(generation) {
        assert_eq!(lab.file(p).as_deref(), Some(c.as_str()), "{what}: {p}");
    }
}

/// Kill -9 at one crash point on the first-boot path (firstboot, its reboot, the daemon's verification and
/// bootstrap); recover as the node would: the daemon (ordered after the failed first-boot unit) resumes the
/// journal. Returns whether the point fired.
async fn firstboot_crash(point: &str) -> bool {
    let mut lab = Lab::new(&|lab| {
        mc(
            "rendered-0",
            Some(&lab.image("base")),
            &[],
            json!({"ignition": {"version": "3.4.0"}}),
        )
    })
    .await;
    let v2 = lab.derive(
        "v2",
        LayerSpec::new("RUN install agent").file("usr/bin/agent", "#!/bin/sh\n"),
    );
    let target = {
        let mut m = app_mc("rendered-1", &v2, 1, &[KEY1]);
        m["spec"]["kernelArguments"] = json!(["nosmt", "audit=1"]);
        m
    };
    // As the cluster delivers it: the stripped encapsulated config, node-annotations.json, the files
    // and keys Ignition wrote, and a Node the kubelet registered without MCO annotations.
    lab.prepare_first_boot(&target);

    let died_in_firstboot = !lab.run_firstboot(Some(point));
    let mut fired = died_in_firstboot;
    if !fired {
        assert_eq!(
            lab.systemd.reboots().len(),
            1,
            "{point}: firstboot asked for one reboot"
        );
        lab.extra_env = vec![("FAILPOINTS".into(), format!("{point}=return"))];
    }
    // A reboot first boot asked for happens, whether or not it lived on to see it.
    if !lab.systemd.reboots().is_empty() {
        lab.reboot_stopped();
    }
    lab.start();
    fired |= lab.run_through_crash("rendered-1", point, |_| {}).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    lab.stop();
    assert_converged(&lab, "rendered-1", 1, point);
    assert_eq!(
        lab.systemd.reboots().len(),
        1,
        "{point}: exactly one reboot for the first boot\n{}",
        lab.describe()
    );
    assert_eq!(lab.boots, 2, "{point}: install + one reboot");
    // First boot itself never cordons. When it died before its reboot, the daemon resumes the update
    // once the kubelet has joined the node, and then drains it like any update with a reboot.
    if !died_in_firstboot {
        assert!(!lab.ever_cordoned(), "{point}: first boot never cordons");
    }
    assert_eq!(lab.default_deployment_image(), v2, "{point}");
    let options = lab.sysroot.boot_options().unwrap();
    for karg in ["nosmt", "audit=1"] {
        let n = options[0].split_whitespace().filter(|a| *a == karg).count();
        assert_eq!(n, 1, "{point}: {karg} once in {options:?}");
    }
    assert_eq!(
        lab.file("/home/core/.ssh/authorized_keys.d/ignition")
            .unwrap()
            .trim(),
        KEY1,
        "{point}"
    );
    assert!(
        lab.path("etc/ignition-machine-config-encapsulated.json.bak")
            .exists(),
        "{point}"
    );
    assert!(!lab.path(JOURNAL).exists(), "{point}: journal left behind");
    // The node's on-disk config is the full rendered config, never the stripped encapsulated one.
    let odc = lab
        .file("/etc/machine-config-daemon/currentconfig")
        .unwrap_or_default();
    assert!(
        odc.contains("rendered-1") && odc.contains("/etc/app/a.conf"),
        "{point}: on-disk config {odc}"
    );
    assert!(
        lab.path("etc/machine-config-daemon/node-annotation.json.bak")
            .exists(),
        "{point}: bootstrap finished"
    );
    fired
}

#[test]
fn firstboot_crash_at_every_point_converges_with_one_reboot() {
    let points: Vec<String> = machine_config_daemon::daemon::update::crash_points()
        .into_iter()
        // No post-config actions on first boot: the reboot is the action; and no health gate (no
        // known-good deployment of the config to go back to).
        .filter(|p| !p.contains("actions-done"))
        .filter(|p| !p.contains("healthy") && !p.contains("gate") && !p.contains("prune"))
        .collect();
    // Four labs at a time, each on its own thread and runtime (a lab is not Send): mostly waiting.
    let mut fired = Vec::new();
    for chunk in points.chunks(4) {
        let handles: Vec<_> = chunk
            .iter()
            .cloned()
            .map(|p| {
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Runtime::new().unwrap();
                    (rt.block_on(firstboot_crash(&p)), p)
                })
            })
            .collect();
        // Join every case before judging, so a failed one cannot leave the others' daemons running.
        let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        for r in results {
            let (did, p) = r.expect("a first-boot crash case failed (see above)");
            if did {
                fired.push(p);
            }
        }
    }
    fired.sort();
    let mut expected = points.clone();
    expected.sort();
    assert_eq!(fired, expected, "every point on the first-boot path fired");
    testbed::sweep::record(
        "crash-firstboot",
        fired.len(),
        "kill -9 at each crash point of first boot (no API server) and the daemon's verification after it: one reboot, kargs once, converged",
    )
    .unwrap();
}

/// A fault kube-sim injects during an update.
struct Fault {
    name: &'static str,
    /// Called right after the node was pointed at the new config.
    inject: fn(&Lab),
    /// Called repeatedly while the update runs (e.g. dropping watches again and again).
    during: Option<fn(&Lab)>,
    /// How many requests (or watch streams) the fault affected, from kube-sim's report: a case whose
    /// fault never fired proved nothing and fails.
    fired: fn(&FaultReport) -> u64,
}

/// Requests failed by the injected rules: each rule must have failed at least one.
fn every_rule_fired(r: &FaultReport) -> u64 {
    if r.rules.is_empty() || r.rules.iter().any(|h| h.hits == 0) {
        0
    } else {
        r.rules.iter().map(|h| h.hits).sum()
    }
}

fn rule(verb: &str, path: &str, status: u16, count: u32) -> FaultRule {
    FaultRule {
        verb: Some(verb.into()),
        path: Some(path.into()),
        status,
        count,
        message: Some(format!("injected by the reliability sweep ({status})")),
    }
}

fn faults() -> Vec<Fault> {
    vec![
        Fault {
            name: "500 on the first 3 node patches",
            inject: |lab| lab.sim.inject_fault(rule("patch", "/nodes/node1", 500, 3)),
            during: None,
            fired: every_rule_fired,
        },
        Fault {
            name: "409 storm: 10 node patches in a row",
            inject: |lab| lab.sim.inject_fault(rule("patch", "/nodes/node1", 409, 10)),
            during: None,
            fired: every_rule_fired,
        },
        Fault {
            name: "429 on 5 evictions",
            inject: |lab| lab.sim.inject_fault(rule("create", "/eviction", 429, 5)),
            during: None,
            fired: every_rule_fired,
        },
        Fault {
            name: "500 on 3 MachineConfig reads",
            inject: |lab| {
                lab.sim
                    .inject_fault(rule("get", "/machineconfigs/", 500, 3))
            },
            during: None,
            fired: every_rule_fired,
        },
        Fault {
            name: "500 on 3 MachineConfigNode status writes",
            inject: |lab| {
                lab.sim
                    .inject_fault(rule("patch", "/machineconfignodes/", 500, 3))
            },
            during: None,
            fired: every_rule_fired,
        },
        Fault {
            name: "500 on 5 Event writes",
            inject: |lab| lab.sim.inject_fault(rule("create", "/events", 500, 5)),
            during: None,
            fired: every_rule_fired,
        },
        Fault {
            name: "watches dropped every 150 ms",
            inject: |lab| lab.sim.drop_watches(),
            during: Some(|lab| lab.sim.drop_watches()),
            fired: |r| r.watches_dropped,
        },
        Fault {
            name: "410 Gone: history compacted, watches dropped",
            inject: |lab| {
                lab.sim.compact();
                lab.sim.drop_watches();
            },
            during: Some(|lab| {
                lab.sim.compact();
                lab.sim.drop_watches();
            }),
            fired: |r| r.expired.min(r.watches_dropped),
        },
        Fault {
            name: "slow API: 250 ms per request",
            inject: |lab| lab.sim.set_latency(Duration::from_millis(250)),
            during: None,
            fired: |r| r.delayed,
        },
    ]
}

/// Every fault, once during a rebootless drain+reload update and once during an image+reboot update:
/// each update converges with exactly one reload or one reboot, never left cordoned.
#[tokio::test(flavor = "multi_thread")]
async fn api_faults_during_updates_converge_without_duplicate_actions() {
    let mut lab = app_lab().await;
    lab.sim.load_yaml(APP_POLICY).unwrap();
    let images = [
        lab.derive("v2", LayerSpec::new("RUN v2").file("usr/lib/os-v", "2\n")),
        lab.derive("v3", LayerSpec::new("RUN v3").file("usr/lib/os-v", "3\n")),
    ];
    let base = lab.image("base");
    lab.start();
    lab.wait_settled().await;
    let mut image = base.clone();
    let mut generation = 0;
    let mut cases = 0;
    let mut reboot_updates = 0;
    for fault in faults() {
        for reboot in [false, true] {
            generation += 1;
            cases += 1;
            let what = format!(
                "{} during a {} update",
                fault.name,
                if reboot { "image+reboot" } else { "rebootless" }
            );
            if reboot {
                // Alternate, so each reboot update moves to an image other than the booted one.
                image = images[reboot_updates % 2].clone();
                reboot_updates += 1;
            }
            let config = format!("rendered-{generation}");
            lab.put_mc(&app_mc(&config, &image, generation, &[]));
            if lab
                .sim
                .get_object("v1", "Pod", Some("default"), "web-1")
                .is_none()
            {
                lab.sim
                    .put_object(pod(
                        "default",
                        "web-1",
                        NODE,
                        Some(("ReplicaSet", "web")),
                        json!({"app": "web"}),
                    ))
                    .unwrap();
            }
            let reloads_before = reloads(&lab);
            let reboots_before = lab.systemd.reboots().len();
            let boots_before = lab.boots;
            lab.sim.reset_fault_report();
            lab.set_desired(&config, None);
            (fault.inject)(&lab);
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut next_during = Instant::now();
            let mut handled = reboots_before;
            loop {
                assert!(
                    Instant::now() < deadline,
                    "{what}: no convergence\n{}",
                    lab.describe()
                );
                if let Some(during) = fault.during
                    && Instant::now() >= next_during
                {
                    during(&lab);
                    next_during = Instant::now() + Duration::from_millis(150);
                }
                if lab.systemd.reboots().len() > handled {
                    handled = lab.systemd.reboots().len();
                    lab.reboot();
                    continue;
                }
                assert!(
                    !lab.exited(),
                    "{what}: the daemon exited\n{}",
                    lab.describe()
                );
                if lab.annotation("state").as_deref() == Some("Done")
                    && lab.annotation("currentConfig").as_deref() == Some(config.as_str())
                    && !lab.unschedulable()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let report = lab.sim.fault_report();
            lab.sim.clear_faults();
            lab.sim.set_latency(Duration::ZERO);
            assert!(
                (fault.fired)(&report) > 0,
                "{what}: the fault never fired, so the case proves nothing: {report:?}"
            );
            // Let a duplicate action, if any, show up before counting.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_converged(&lab, &config, generation, &what);
            let (reloads, reboots) = (
                reloads(&lab) - reloads_before,
                lab.systemd.reboots().len() - reboots_before,
            );
            assert_eq!(
                (reloads, reboots, lab.boots - boots_before),
                if reboot { (0, 1, 1) } else { (1, 0, 0) },
                "{what}: (reloads, reboot requests, boots)\n{}",
                lab.describe()
            );
            assert_eq!(lab.default_deployment_image(), image, "{what}");
            assert!(
                !lab.pod_exists("default", "web-1"),
                "{what}: the pod was drained"
            );
        }
    }
    assert!(!lab.exited(), "the daemon survived every fault");
    lab.stop();
    testbed::sweep::record(
        "api-faults",
        cases,
        "kube-sim 500/409/429/dropped watches/410/latency during rebootless and reboot updates: converged, one reload or one reboot each, uncordoned",
    )
    .unwrap();
}

fn reloads(lab: &Lab) -> usize {
    lab.service_calls()
        .iter()
        .filter(|c| c.contains("app.service"))
        .count()
}

/// What the case is, the annotations it sets, what its reason must name.
type HostileCase<'a> = (&'a str, Vec<(&'a str, Option<&'a str>)>, &'a str);

/// Hostile or broken node annotations: each gives Degraded with a clear, bounded reason and writes nothing;
/// the node recovers by itself once the annotation is fixed.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_annotations_degrade_with_a_bounded_reason_and_write_nothing() {
    let mut lab = app_lab().await;
    // A reason of 1 MB left on the node (by another tool, or an old daemon): the daemon starts, finds
    // the node at its config and replaces it.
    let megabyte = "x".repeat(1 << 20);
    lab.annotate(&[("state", Some("Degraded")), ("reason", Some(&megabyte))]);
    lab.start();
    lab.wait_state("Done", "rendered-0").await;
    lab.wait_settled().await;
    assert_eq!(lab.annotation("reason").as_deref(), Some(""));
    let mut cases = 1;

    let long_name = format!("rendered-{}", "a".repeat(300));
    // Only 127.0.0.1: a digest the test registry does not have, and a port nothing listens on.
    let zeros = "0".repeat(64);
    let missing_image = format!("{}/os@sha256:{zeros}", lab.registry.addr());
    let unreachable_image = format!("127.0.0.1:9/os@sha256:{zeros}");
    let traversal = "../../etc/shadow";
    let huge_karg = format!("console={}", "y".repeat(1 << 20));
    lab.put_mc(&{
        let mut m = app_mc("rendered-huge-karg", &lab.image("base"), 0, &[]);
        m["spec"]["kernelArguments"] = json!(["quiet", huge_karg, "a=\"unterminated"]);
        m
    });
    let cases_list: Vec<HostileCase> = vec![
        (
            "desiredImage is not an image reference",
            vec![("desiredImage", Some("not an image ref!! @@"))],
            "desiredImage",
        ),
        (
            "desiredImage names an image the registry does not have",
            vec![("desiredImage", Some(&missing_image))],
            &missing_image,
        ),
        (
            "desiredImage names a registry nobody listens on",
            vec![("desiredImage", Some(&unreachable_image))],
            "cannot be reached",
        ),
        (
            "desiredConfig names a missing MachineConfig",
            vec![("desiredConfig", Some("rendered-missing"))],
            "rendered-missing",
        ),
        (
            "desiredConfig is a path traversal",
            vec![("desiredConfig", Some(traversal))],
            "cannot be a MachineConfig name: it contains '/'",
        ),
        (
            "desiredConfig is longer than any object name",
            vec![("desiredConfig", Some(&long_name))],
            "it is 309 characters long (at most 253)",
        ),
        (
            "kernel arguments of 1 MB with an unterminated quote",
            vec![("desiredConfig", Some("rendered-huge-karg"))],
            "rendered-huge-karg",
        ),
    ];
    for (what, annotations, mentions) in &cases_list {
        cases += 1;
        let before = e2e::snapshot_tree(lab.node.path());
        let sysroot_before = lab.sysroot_snapshot();
        lab.annotate(annotations);
        lab.wait_for(what, Duration::from_secs(60), |lab| {
            matches!(
                lab.annotation("state").as_deref(),
                Some("Degraded" | "Unreconcilable")
            )
        })
        .await;
        let reason = lab.annotation("reason").unwrap_or_default();
        println!("{what}: {}", reason.chars().take(300).collect::<String>());
        assert!(
            reason.contains(mentions),
            "{what}: the reason names {mentions:?}: {reason}"
        );
        assert!(
            reason.chars().count() <= 2000,
            "{what}: reason of {} characters",
            reason.chars().count()
        );
        assert!(!reason.contains(&"y".repeat(2001)), "{what}");
        // Give a wrong write time to happen, then prove there was none.
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The daemon's own progress journal may record the attempt; nothing else may change.
        let diff: Vec<String> = e2e::tree_diff(&before, &e2e::snapshot_tree(lab.node.path()))
            .into_iter()
            .filter(|d| !d.ends_with(JOURNAL))
            .collect();
        assert!(diff.is_empty(), "{what}: the node root changed: {diff:?}");
        assert_eq!(
            lab.sysroot_snapshot(),
            sysroot_before,
            "{what}: the sysroot changed"
        );
        assert!(!lab.ever_cordoned(), "{what}: cordoned");
        assert!(
            lab.systemd.calls().is_empty(),
            "{what}: {:?}",
            lab.systemd.calls()
        );
        // Fixed by the controller: back to Done by itself.
        lab.annotate(&[
            ("desiredConfig", Some("rendered-0")),
            ("desiredImage", None),
        ]);
        lab.wait_state("Done", "rendered-0").await;
        assert_eq!(lab.annotation("reason").as_deref(), Some(""), "{what}");
        lab.wait_for(
            "the abandoned attempt's journal to go",
            Duration::from_secs(10),
            |lab| !lab.path(JOURNAL).exists(),
        )
        .await;
    }
    // Names that cannot be objects never reach a request path.
    let sent: Vec<String> = lab
        .sim
        .requests()
        .into_iter()
        .map(|r| r.path_and_query)
        .filter(|p| p.contains("etc/shadow") || p.contains(&long_name))
        .collect();
    assert!(sent.is_empty(), "requests made with a bad name: {sent:?}");

    // An empty desiredConfig is "no target yet" (as a node the controller has not assigned): the node
    // stays Done at its config, nothing is written.
    cases += 1;
    let before = e2e::snapshot_tree(lab.node.path());
    let patches = lab.node_patches().len();
    lab.annotate(&[("desiredConfig", Some(""))]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(lab.annotation("state").as_deref(), Some("Done"));
    assert_eq!(
        lab.annotation("currentConfig").as_deref(),
        Some("rendered-0")
    );
    let diff = e2e::tree_diff(&before, &e2e::snapshot_tree(lab.node.path()));
    assert!(
        diff.is_empty(),
        "empty desiredConfig: the node root changed: {diff:?}"
    );
    assert!(
        lab.node_patches()[patches..]
            .iter()
            .all(|p| p["spec"]["unschedulable"].is_null()),
        "empty desiredConfig: cordoned"
    );
    assert!(
        !lab.exited(),
        "the daemon survived every hostile annotation"
    );
    lab.stop();
    testbed::sweep::record(
        "bad-annotations",
        cases,
        "1 MB reason on the node, garbage desiredImage, missing/traversal/overlong desiredConfig, 1 MB kargs: Degraded with a reason <= 2000 chars naming the field, nothing written, recovered by itself; empty desiredConfig: stays Done",
    )
    .unwrap();
}

/// An update with a pull secret and a password hash: neither appears in any log line (debug level),
/// annotation, Event or MachineConfigNode.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_reach_logs_annotations_or_events() {
    const HASH: &str = "$6$rounds=4096$s3cr3tSalt$Xq0u1Hk2mZ8vQ9tR7yW3pL5nB4cD6fG8hJ0kL2mN4pQ6rS8tU0vW2xY4zA6bC8dE0fG2hI4jK6lM8nO0pQ2r";
    const SECRET_USER_PASS: &str = "pullbot:Sup3r-S3cret-Token-9f8e7d";
    let mut lab = app_lab().await;
    // The new OS image lives in a registry that requires the pull secret.
    let (user, pass) = SECRET_USER_PASS.split_once(':').unwrap();
    let secure = testbed::Registry::start_with_auth(user, pass).unwrap();
    let built = lab
        .images
        .derive(
            "base",
            "v2",
            &[LayerSpec::new("RUN v2").file("usr/lib/os-v", "2\n")],
            Some("v2"),
        )
        .unwrap();
    secure.push(&lab.images, "v2", "os").unwrap();
    let v2 = secure.image_by_digest("os", &built.manifest_digest);
    lab.write_file(
        "etc/containers/registries.conf",
        &format!(
            "{}{}",
            lab.registry.registries_conf(),
            secure.registries_conf()
        ),
    );
    lab.write_file("etc/ostree/auth.json", &secure.auth_json(user, pass));
    let auth = base64_encode(SECRET_USER_PASS.as_bytes());
    let mut target = app_mc("rendered-1", &v2, 1, &[KEY1]);
    target["spec"]["config"]["passwd"]["users"][0]["passwordHash"] = json!(HASH);
    lab.put_mc(&target);
    lab.extra_env = vec![("MCD_LOG".into(), "debug".into())];
    lab.start();
    lab.wait_settled().await;
    lab.set_desired("rendered-1", None);
    lab.wait_reboot_request(1).await;
    lab.reboot();
    lab.wait_updated("rendered-1").await;
    // A failing update too: errors are where secrets leak most often.
    let mut broken = target.clone();
    broken["metadata"]["name"] = json!("rendered-2");
    broken["spec"]["config"]["passwd"]["users"][0]["passwordHash"] =
        json!(format!("{HASH}\nroot::0:0"));
    lab.put_mc(&broken);
    lab.set_desired("rendered-2", None);
    lab.wait_state("Degraded", "rendered-2").await;
    lab.stop();
    // htpasswd auth: a manifest served with 200 means the daemon presented the pull secret.
    assert!(
        secure
            .access_log()
            .unwrap()
            .iter()
            .any(|e| e.is_manifest_get()),
        "the image was pulled with the pull secret"
    );

    let shadow = lab.file("/etc/shadow").unwrap();
    assert!(
        shadow
            .lines()
            .any(|l| l.starts_with(&format!("core:{HASH}:"))),
        "the hash was applied: {shadow}"
    );
    let node = serde_json::to_string(&lab.node_obj()).unwrap();
    let events = serde_json::to_string(&lab.sim.list_objects("v1", "Event")).unwrap();
    let mcn = serde_json::to_string(&lab.mcn()).unwrap();
    let logs = lab.logs();
    assert!(logs.lines().count() > 50, "debug logs were written");
    for (what, text) in [
        ("logs", &logs),
        ("node", &node),
        ("events", &events),
        ("MCN", &mcn),
    ] {
        for (secret_name, secret) in [
            ("password hash", HASH),
            ("password hash salt", "s3cr3tSalt"),
            ("pull secret (base64)", auth.as_str()),
            ("pull secret password", pass),
        ] {
            assert!(
                !text.contains(secret),
                "the {secret_name} appears in the {what}"
            );
        }
    }
    testbed::sweep::record(
        "secrets",
        4,
        "pull secret (encoded and decoded) and password hash (and its salt) absent from debug logs, node, Events and MCN, through an image update and a failing update",
    )
    .unwrap();
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
