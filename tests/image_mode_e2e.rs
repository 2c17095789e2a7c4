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
