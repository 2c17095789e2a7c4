//! Image mode on a real OpenShift cluster, end to end (the daemon binary, kube-sim, real registries,
//! a sandbox sysroot; see `tests/e2e/mod.rs`): certificates and pull secrets that reach the node only
//! through the ControllerConfig, the MachineConfigNode image status over an on-cluster layering
//! rollout, hostile ControllerConfigs, the operator's node disruption policy status, and accepted
//! irreconcilable storage changes.

mod e2e;

use std::time::{Duration, Instant};

use base64::Engine as _;
use e2e::{Lab, controller_config, ignition, mc, snapshot_tree, tree_diff};
use serde_json::{Value, json};
use testbed::tls::TestCa;
use testbed::{Credentials, LayerSpec, Registry};

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

const LAST_SYNCED: &str = "lastSyncedControllerConfigResourceVersion";

/// The cluster's internal registry: HTTPS with its own CA, htpasswd credentials; and the image a
/// MachineOSBuild pushed there (by digest).
struct InternalRegistry {
    ca: TestCa,
    registry: Registry,
    image: String,
    password: String,
}

impl InternalRegistry {
    fn start(lab: &mut Lab, layer_bytes: u64) -> InternalRegistry {
        let ca = TestCa::new("image-registry.openshift-image-registry CA").unwrap();
        let password = "s3cret-internal-pw".to_string();
        let registry = Registry::start_tls(
            &ca,
            Some(Credentials {
                username: "builder".into(),
                password: password.clone(),
            }),
        )
        .unwrap();
        let mut layer = LayerSpec::new("RUN dnf install -y node-agent")
            .file("usr/bin/node-agent", "#!/bin/sh\n");
        if layer_bytes > 0 {
            layer = layer.random_file("usr/lib/node-agent/data.bin", layer_bytes);
        }
        let built = lab
            .images
            .derive("base", "mosb-1", &[layer], Some("mosb-1"))
            .unwrap();
        registry.push(&lab.images, "mosb-1", "os").unwrap();
        let image = registry.image_by_digest("os", &built.manifest_digest);
        lab.built.insert("mosb-1".into(), built);
        InternalRegistry {
            ca,
            registry,
            image,
            password,
        }
    }

    /// Its pull secret, as the operator puts it in the ControllerConfig.
    fn pull_secret(&self) -> String {
        json!({"auths": {self.registry.addr(): {"auth": b64(&format!("builder:{}", self.password))}}})
            .to_string()
    }

    /// Its `imageRegistryBundleData` file name (`..` for `:`, as ConfigMap keys have it).
    fn bundle_file(&self) -> String {
        self.registry.addr().replace(':', "..")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn internal_registry_is_reached_only_through_the_controller_config() {
    let mut lab = Lab::at_base("rendered-1", &[("/etc/agent.conf", "on")], &[]).await;
    // The node's own pull secret knows another registry only.
    let node_secret = json!({"auths": {"quay.io": {"auth": b64("node:pw")}}});
    lab.write_file("var/lib/kubelet/config.json", &node_secret.to_string());
    let internal = InternalRegistry::start(&mut lab, 0);
    lab.start();
    lab.wait_settled().await;

    // The controller points the node at the image in the internal registry: without its CA the
    // node cannot even talk to it.
    lab.set_desired("rendered-1", Some(&internal.image));
    lab.wait_for(
        "Degraded: the registry's certificate is not trusted",
        Duration::from_secs(60),
        |lab| {
            lab.annotation("state").as_deref() == Some("Degraded")
                && lab
                    .annotation("reason")
                    .is_some_and(|r| r.contains("TLS certificate is not trusted"))
        },
    )
    .await;
    let reason = lab.annotation("reason").unwrap();
    assert!(
        reason.contains(&internal.image)
            && reason.contains("certificate signed by unknown authority"),
        "{reason}"
    );
    assert!(!lab.path("etc/docker/certs.d").exists());
    assert!(!lab.unschedulable(), "the pull comes before the drain");
    assert!(lab.systemd.reboots().is_empty());

    // The ControllerConfig arrives with the registry's CA and credentials.
    let kubelet_ca = TestCa::new("kube-apiserver-to-kubelet-signer").unwrap();
    let rv = lab.put_controller_config(&controller_config(
        Some(&kubelet_ca.cert_pem()),
        &[(&internal.bundle_file(), &internal.ca.cert_pem())],
        Some(&internal.pull_secret()),
    ));
    lab.wait_reboot_request(1).await;
    assert_eq!(lab.annotation(LAST_SYNCED).as_deref(), Some(rv.as_str()));
    let registry_ca = format!("etc/docker/certs.d/{}/ca.crt", internal.registry.addr());
    assert_eq!(lab.file(&registry_ca), Some(internal.ca.cert_pem()));
    assert_eq!(
        lab.file("etc/kubernetes/kubelet-ca.crt"),
        Some(kubelet_ca.cert_pem())
    );
    assert_eq!(
        lab.file("etc/mco/internal-registry-pull-secret.json"),
        Some(format!("{}\n", internal.pull_secret()))
    );
    let merged: Value = serde_json::from_str(&lab.file("run/ostree/auth.json").unwrap()).unwrap();
    assert_eq!(
        merged["auths"],
        json!({"quay.io": node_secret["auths"]["quay.io"],
               internal.registry.addr(): {"auth": b64(&format!("builder:{}", internal.password))}}),
        "the node's pull secret, with the internal registry's entry added"
    );
    assert_eq!(lab.default_deployment_image(), internal.image);
    lab.reboot();
    lab.wait_updated("rendered-1").await;
    assert_eq!(
        lab.annotation("currentImage").as_deref(),
        Some(internal.image.as_str())
    );
    assert_eq!(lab.systemd.reboots().len(), 1, "the update's reboot, only");

    // The kubelet CA rotates and a user adds a registry CA: written in place, no drain, no reboot.
    let calls = lab.systemd.calls().len();
    let patches = lab.node_patches().len();
    let rotated = TestCa::new("kube-apiserver-to-kubelet-signer 2").unwrap();
    let mirror = TestCa::new("mirror CA").unwrap();
    let rv2 = lab.put_controller_config(&controller_config(
        Some(&rotated.cert_pem()),
        &[
            (&internal.bundle_file(), &internal.ca.cert_pem()),
            ("mirror.example.com..5000", &mirror.cert_pem()),
        ],
        Some(&internal.pull_secret()),
    ));
    let want = rv2.clone();
    lab.wait_for(
        "the new ControllerConfig synced",
        Duration::from_secs(30),
        move |lab| lab.annotation(LAST_SYNCED).as_deref() == Some(want.as_str()),
    )
    .await;
    assert_eq!(
        lab.file("etc/kubernetes/kubelet-ca.crt"),
        Some(rotated.cert_pem())
    );
    assert_eq!(
        lab.file("etc/docker/certs.d/mirror.example.com:5000/ca.crt"),
        Some(mirror.cert_pem())
    );
    assert_eq!(
        lab.systemd.calls().len(),
        calls,
        "{:?}",
        lab.systemd.calls()
    );
    assert!(
        lab.node_patches()[patches..]
            .iter()
            .all(|p| p["spec"]["unschedulable"].is_null()),
        "never cordoned"
    );
    assert_eq!(lab.annotation("state").as_deref(), Some("Done"));

    // The mirror goes away again: its directory (ours) goes, the internal registry's stays.
    let rv3 = lab.put_controller_config(&controller_config(
        Some(&rotated.cert_pem()),
        &[(&internal.bundle_file(), &internal.ca.cert_pem())],
        Some(&internal.pull_secret()),
    ));
    lab.wait_for(
        "the third ControllerConfig synced",
        Duration::from_secs(30),
        move |lab| lab.annotation(LAST_SYNCED).as_deref() == Some(rv3.as_str()),
    )
    .await;
    assert!(
        !lab.path("etc/docker/certs.d/mirror.example.com:5000")
            .exists()
    );
    assert!(lab.path(&registry_ca).exists());

    // Secrets are never logged.
    let logs = lab.logs();
    for secret in [
        internal.password.clone(),
        b64(&format!("builder:{}", internal.password)),
        b64("node:pw"),
    ] {
        assert!(!logs.contains(&secret), "a secret is in the logs");
    }
    lab.stop();
}

/// Every version of our MachineConfigNode the API server stored, in order (a watch sees each write).
struct McnHistory {
    seen: std::sync::Arc<std::sync::Mutex<Vec<(Duration, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl McnHistory {
    async fn start(lab: &Lab) -> McnHistory {
        use futures::StreamExt;
        use kube::api::{ApiResource, DynamicObject};
        use kube::runtime::watcher;
        let client = machine_config_daemon::cluster::connect(
            &machine_config_daemon::cluster::Credentials::Kubeconfig(
                lab.kubeconfig().to_path_buf(),
            ),
        )
        .await
        .unwrap();
        let ar = ApiResource {
            group: "machineconfiguration.openshift.io".into(),
            version: "v1".into(),
            api_version: "machineconfiguration.openshift.io/v1".into(),
            kind: "MachineConfigNode".into(),
            plural: "machineconfignodes".into(),
        };
        let api: kube::Api<DynamicObject> = kube::Api::all_with(client, &ar);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
            while let Some(ev) = stream.next().await {
                if let Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) = ev {
                    sink.lock()
                        .unwrap()
                        .push((started.elapsed(), serde_json::to_value(o).unwrap()));
                }
            }
        });
        McnHistory { seen, task }
    }

    fn versions(&self) -> Vec<(Duration, Value)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for McnHistory {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn condition<'v>(mcn: &'v Value, ty: &str) -> Option<&'v Value> {
    mcn["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

#[tokio::test(flavor = "multi_thread")]
async fn machine_config_node_reports_an_on_cluster_layering_rollout() {
    let mut lab = Lab::at_base("rendered-1", &[("/etc/agent.conf", "on")], &[]).await;
    lab.use_feature_set(kube_sim::FeatureSet::TechPreviewNoUpgrade)
        .await;
    // ~200 MB of incompressible data in the built image's layer, in the internal registry.
    let internal = InternalRegistry::start(&mut lab, 200_000_000);
    lab.put_controller_config(&controller_config(
        None,
        &[(&internal.bundle_file(), &internal.ca.cert_pem())],
        Some(&internal.pull_secret()),
    ));
    let base = lab.image("base");
    lab.put_mc(&mc(
        "rendered-2",
        Some(&base),
        &[],
        ignition(&[("/etc/agent.conf", "v2")], &[]),
    ));
    lab.start();
    lab.wait_settled().await;
    let history = McnHistory::start(&lab).await;

    // The controller rolls a new config and the image built for it.
    lab.set_desired("rendered-2", Some(&internal.image));
    lab.wait_reboot_request(1).await;
    lab.reboot();
    lab.wait_updated("rendered-2").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let versions = history.versions();
    drop(history);

    // Every write of the MachineConfigNode was accepted by the techpreview schema (kube-sim checks
    // types, bounds, enums, required fields and the CEL rules, e.g. the digest format of images).
    let rejected: Vec<String> = lab
        .sim
        .requests()
        .iter()
        .filter(|r| r.resource.starts_with("machineconfignodes") && r.status >= 400)
        // The daemon's first look, before it creates the object.
        .filter(|r| !(r.method == "GET" && r.status == 404))
        .map(|r| format!("{} {} -> {}", r.method, r.path_and_query, r.status))
        .collect();
    assert!(rejected.is_empty(), "{rejected:?}");

    let image = internal.image.as_str();
    let last = &versions.last().unwrap().1;
    assert_eq!(last["spec"]["configImage"], json!({"desiredImage": image}));
    assert_eq!(last["spec"]["configVersion"]["desired"], "rendered-2");
    assert_eq!(
        last["status"]["configImage"],
        json!({"currentImage": image, "desiredImage": image})
    );
    assert_eq!(
        last["status"]["configVersion"],
        json!({"current": "rendered-2", "desired": "rendered-2"})
    );
    let types: Vec<&str> = last["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types.len(), 16, "{types:?}");
    assert!(
        !types.contains(&"AppliedFilesAndOS"),
        "replaced by AppliedFiles and AppliedOSImage"
    );
    assert_eq!(condition(last, "Updated").unwrap()["status"], "True");
    // While the image was pulled and applied, status.configImage had the new desired image.
    assert!(versions.iter().any(|(_, v)| {
        v["status"]["configImage"]["desiredImage"] == image
            && v["status"]["configImage"]["currentImage"] != image
    }));

    // The sequence of transitions: (type, status) in the order each first appeared once the rollout
    // started (Updated=False).
    let mut order: Vec<(String, String)> = Vec::new();
    let mut pulls: Vec<(Duration, String, String)> = Vec::new();
    let start = versions
        .iter()
        .position(|(_, v)| condition(v, "Updated").is_some_and(|c| c["status"] == "False"))
        .expect("the rollout started");
    for (at, v) in &versions[start..] {
        for c in v["status"]["conditions"].as_array().unwrap() {
            let key = (
                c["type"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            );
            if key.1 != "False" && !order.contains(&key) {
                order.push(key.clone());
            }
            if key.0 == "ImagePulledFromRegistry"
                && key.1 != "False"
                && pulls
                    .last()
                    .is_none_or(|(_, _, m)| m != c["message"].as_str().unwrap())
            {
                pulls.push((
                    *at,
                    key.1.clone(),
                    c["message"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    let position = |ty: &str, st: &str| {
        order
            .iter()
            .position(|(t, s)| t == ty && s == st)
            .unwrap_or_else(|| panic!("{ty}={st} never appeared: {order:?}"))
    };
    let expected = [
        ("UpdatePrepared", "True"),
        ("ImagePulledFromRegistry", "Unknown"),
        ("ImagePulledFromRegistry", "True"),
        ("AppliedFiles", "Unknown"),
        ("AppliedOSImage", "Unknown"),
        ("AppliedFiles", "True"),
        ("AppliedOSImage", "True"),
        ("RebootedNode", "Unknown"),
        ("RebootedNode", "True"),
        ("Updated", "True"),
    ];
    let positions: Vec<usize> = expected.iter().map(|(t, s)| position(t, s)).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "transitions out of order: {order:?}"
    );
    let (_, _, first) = &pulls[0];
    assert_eq!(first, &format!("Pulling OS image {image} from registry"));
    let progress: Vec<&String> = pulls
        .iter()
        .filter(|(_, s, m)| s == "Unknown" && m.contains(" MB ("))
        .map(|(_, _, m)| m)
        .collect();
    let in_between = progress.iter().any(|m| {
        let pct: u64 = m
            .rsplit_once(" MB (")
            .and_then(|(_, r)| r.split_once('%'))
            .and_then(|(p, _)| p.parse().ok())
            .unwrap();
        pct > 0 && pct < 100
    });
    assert!(in_between, "no progress seen while pulling: {pulls:?}");
    assert!(
        progress[0].starts_with(&format!("Pulling OS image {image} from registry: "))
            && progress[0].ends_with("of 1 layers"),
        "{}",
        progress[0]
    );
    let (pull_start, _, _) = pulls[0];
    let (pull_end, st, done) = pulls
        .iter()
        .find(|(_, s, _)| s == "True")
        .expect("the pull completed");
    assert_eq!(st, "True");
    assert_eq!(
        done,
        &format!("Successfully pulled OS image {image} from registry")
    );
    let pull_time = *pull_end - pull_start;

    // Events: at most one per 10% or 30 s.
    let events = lab.event_messages("OSImagePullProgress");
    let bound = 10 + pull_time.as_secs() / 30 + 1;
    assert!(
        !events.is_empty() && events.len() as u64 <= bound,
        "{} progress events for a {pull_time:?} pull: {events:?}",
        events.len()
    );
    eprintln!(
        "figure: pulled a {} MB layer in {:.1} s; {} MachineConfigNode versions, {} progress messages, {} progress events",
        lab.built["mosb-1"].top_layer().size / 1_000_000,
        pull_time.as_secs_f64(),
        versions.len(),
        progress.len(),
        events.len()
    );
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_controller_configs_degrade_naming_the_field_and_write_nothing() {
    let mut lab = Lab::at_base("rendered-1", &[("/etc/agent.conf", "on")], &[]).await;
    lab.start();
    lab.wait_settled().await;
    let ca = TestCa::new("registry CA").unwrap();
    let pem = ca.cert_pem();
    let key = ca.server_cert(&["127.0.0.1"], &[]).unwrap().key_pem;
    // A certificate whose body was tampered with (still base64, no longer DER).
    let mut tampered: Vec<char> = pem.chars().collect();
    let mid = pem.find('\n').unwrap() + 40;
    tampered[mid] = if tampered[mid] == 'A' { 'B' } else { 'A' };
    tampered.splice(mid..mid, "AAAA".chars());
    let tampered: String = tampered.into_iter().collect();
    let secret = "hunter2-do-not-log";
    let registry = |file: &str, data: &str| controller_config(None, &[(file, data)], None);
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "not a certificate",
            controller_config(Some("not a certificate\n"), &[], None),
            "spec.kubeAPIServerServingCAData: is not a PEM certificate bundle",
        ),
        (
            "a name that escapes /etc/docker/certs.d",
            registry("../../etc/cron.d", &pem),
            "spec.imageRegistryBundleData[0].file: \"../../etc/cron.d\" is not a registry name",
        ),
        (
            "a name with a slash",
            registry("quay.io/evil", &pem),
            "spec.imageRegistryBundleData[0].file: \"quay.io/evil\" is not a registry name",
        ),
        (
            "a private key in a CA bundle",
            registry("quay.io", &format!("{pem}{key}")),
            "spec.imageRegistryBundleData[0].data: holds PEM blocks that are not certificates",
        ),
        (
            "a tampered certificate",
            registry("quay.io", &tampered),
            "spec.imageRegistryBundleData[0].data: holds a certificate that does not parse",
        ),
        (
            "JSON that is not a pull secret",
            controller_config(None, &[], Some(&json!({"auth": secret}).to_string())),
            "spec.internalRegistryPullSecret: is not a pull secret: no \"auths\" object",
        ),
        (
            "not JSON at all",
            controller_config(None, &[], Some(secret)),
            "spec.internalRegistryPullSecret: is not a pull secret: not JSON",
        ),
        (
            "an auth that is not user:password",
            controller_config(
                None,
                &[],
                Some(&json!({"auths": {"r.example": {"auth": b64(secret)}}}).to_string()),
            ),
            "spec.internalRegistryPullSecret: is not a pull secret: auths[\"r.example\"].auth is not base64 of user:password",
        ),
    ];
    let cases_run = cases.len();
    for (what, cc, want) in cases {
        let before = snapshot_tree(lab.node.path());
        let rv = lab.put_controller_config(&cc);
        let (rv2, want2) = (rv.clone(), want.to_string());
        lab.wait_for(
            &format!("Degraded for {what}"),
            Duration::from_secs(30),
            move |lab| {
                lab.annotation("state").as_deref() == Some("Degraded")
                    && lab.annotation("reason").is_some_and(|r| {
                        r.contains(&format!("(resourceVersion {rv2})")) && r.contains(&want2)
                    })
            },
        )
        .await;
        let reason = lab.annotation("reason").unwrap();
        assert!(
            reason.contains("nothing was written") && !reason.contains(secret),
            "{what}: {reason}"
        );
        let after = snapshot_tree(lab.node.path());
        assert!(
            tree_diff(&before, &after).is_empty(),
            "{what}: {:?}",
            tree_diff(&before, &after)
        );
        assert_ne!(lab.annotation(LAST_SYNCED), Some(rv), "{what}");
        assert!(lab.systemd.calls().is_empty(), "{what}");
        assert!(!lab.unschedulable());
    }
    // Undecodable base64 never gets this far: the API server checks the byte format.
    let mut garbage = controller_config(None, &[], None);
    garbage["spec"]["kubeAPIServerServingCAData"] = json!("%%% not base64 %%%");
    let err = lab.sim.put_object(garbage).unwrap_err().to_string();
    assert!(err.contains("must be of type byte"), "{err}");

    // Fixed: synced, and Done again by itself.
    let rv = lab.put_controller_config(&registry("quay.io", &pem));
    lab.wait_for("Done again", Duration::from_secs(30), move |lab| {
        lab.annotation("state").as_deref() == Some("Done")
            && lab.annotation(LAST_SYNCED).as_deref() == Some(rv.as_str())
    })
    .await;
    assert_eq!(lab.file("etc/docker/certs.d/quay.io/ca.crt"), Some(pem));
    assert!(!lab.logs().contains(secret), "a secret is in the logs");
    assert!(lab.systemd.calls().is_empty());
    eprintln!(
        "figure: {cases_run} hostile ControllerConfigs, each Degraded with its field, nothing written"
    );
    lab.stop();
}

const POLICY_SPEC: &str = "apiVersion: operator.openshift.io/v1\nkind: MachineConfiguration\nmetadata:\n  name: cluster\nspec:\n  managementState: Managed\n  nodeDisruptionPolicy:\n    files:\n    - path: /etc/foo.conf\n      actions:\n      - type: Restart\n        restart: {serviceName: foo.service}\n";

fn policy_status(observed: i64, service: &str) -> Value {
    json!({"status": {"observedGeneration": observed, "nodeDisruptionPolicyStatus": {"clusterPolicies": {
        "files": [{"path": "/etc/foo.conf", "actions": [{"type": "Reload", "reload": {"serviceName": service}}]}],
        "sshkey": {"actions": [{"type": "None"}]}}}}})
}

#[tokio::test(flavor = "multi_thread")]
async fn node_disruption_policy_comes_from_the_operators_status() {
    let mut lab = Lab::at_base("rendered-1", &[("/etc/foo.conf", "1")], &[]).await;
    // spec says restart foo.service; the operator's merge (current for this spec) says reload bar.
    lab.sim.load_yaml(POLICY_SPEC).unwrap();
    let patch_mc = |lab: &Lab, patch: &Value| {
        lab.sim
            .merge_patch_object(
                "operator.openshift.io/v1",
                "MachineConfiguration",
                None,
                "cluster",
                patch,
            )
            .unwrap()
    };
    patch_mc(&lab, &policy_status(1, "bar.service"));
    lab.start();
    lab.wait_settled().await;
    let image = lab.image("base");
    let config = |name: &str, foo: &str| {
        mc(
            name,
            Some(&image),
            &[],
            ignition(&[("/etc/foo.conf", foo)], &[]),
        )
    };
    lab.put_mc(&config("rendered-2", "2"));
    lab.set_desired("rendered-2", None);
    lab.wait_updated("rendered-2").await;
    assert_eq!(lab.systemd.calls(), vec!["ReloadUnit bar.service replace"]);
    assert!(
        lab.logs()
            .contains("node disruption policy from the operator's status")
    );

    // spec changes (generation 2): the status is stale; the daemon waits for the operator, which
    // catches up two seconds later with another merge.
    lab.systemd.clear_calls();
    let stored = patch_mc(
        &lab,
        &json!({"spec": {"nodeDisruptionPolicy": {"units": [{"name": "x.service", "actions": [{"type": "None"}]}]}}}),
    );
    assert_eq!(stored["metadata"]["generation"], 2);
    lab.put_mc(&config("rendered-3", "3"));
    lab.set_desired("rendered-3", None);
    lab.wait_for(
        "the daemon to wait for the operator",
        Duration::from_secs(30),
        |lab| {
            lab.logs()
                .contains("waiting for the operator to observe MachineConfiguration cluster")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        lab.annotation("currentConfig").as_deref(),
        Some("rendered-2")
    );
    assert!(lab.systemd.calls().is_empty(), "nothing ran while waiting");
    patch_mc(&lab, &policy_status(2, "baz.service"));
    lab.wait_updated("rendered-3").await;
    assert_eq!(lab.systemd.calls(), vec!["ReloadUnit baz.service replace"]);
    lab.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn overridden_storage_changes_are_accepted_and_reported() {
    let mut lab = Lab::at_base("rendered-1", &[("/etc/agent.conf", "on")], &[]).await;
    let image = lab.image("base");
    let installed = mc(
        "rendered-1",
        Some(&image),
        &[],
        ignition(&[("/etc/agent.conf", "on")], &[]),
    );
    // What the machine-config-server gave the node at install time.
    lab.write_file(
        "etc/mcs-machine-config-content.json",
        &serde_json::to_string(&installed).unwrap(),
    );
    lab.sim
        .load_yaml("apiVersion: operator.openshift.io/v1\nkind: MachineConfiguration\nmetadata:\n  name: cluster\nspec:\n  managementState: Managed\n  irreconcilableValidationOverrides:\n    storage: [Disks, FileSystems, Raid]\n")
        .unwrap();
    let mut target = installed.clone();
    target["metadata"]["name"] = json!("rendered-2");
    target["spec"]["config"]["storage"]["disks"] = json!([{"device": "/dev/sdb", "wipeTable": true, "partitions": [{"label": "data", "number": 1}]}]);
    target["spec"]["config"]["storage"]["filesystems"] =
        json!([{"device": "/dev/disk/by-partlabel/data", "format": "xfs", "path": "/var/data"}]);
    target["spec"]["config"]["storage"]["raid"] =
        json!([{"name": "md0", "level": "raid1", "devices": ["/dev/sdc", "/dev/sdd"]}]);
    lab.put_mc(&target);
    lab.start();
    lab.wait_settled().await;
    let before = snapshot_tree(lab.node.path());
    lab.set_desired("rendered-2", None);
    lab.wait_updated("rendered-2").await;
    assert!(
        lab.systemd.calls().is_empty(),
        "accepted, not applied: no reboot"
    );
    let changed: Vec<String> = tree_diff(&before, &snapshot_tree(lab.node.path()))
        .into_iter()
        .filter(|d| !d.contains("etc/machine-config-daemon/"))
        .collect();
    assert!(
        changed.is_empty(),
        "only the daemon's own records change: {changed:?}"
    );
    let mcn = lab.mcn().unwrap();
    let report = mcn["status"]["irreconcilableChanges"].as_array().unwrap();
    let paths: Vec<&str> = report
        .iter()
        .map(|c| c["fieldPath"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "spec.config.storage.disks",
            "spec.config.storage.filesystems",
            "spec.config.storage.raid"
        ]
    );
    assert_eq!(
        report[2]["diff"],
        "+ [{\"devices\":[\"/dev/sdc\",\"/dev/sdd\"],\"level\":\"raid1\",\"name\":\"md0\"}]\n"
    );
    lab.stop();
}
