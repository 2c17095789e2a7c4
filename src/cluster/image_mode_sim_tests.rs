//! The MachineConfigNode writer against kube-sim serving either MachineConfigNode CRD (Default and
//! TechPreviewNoUpgrade), the irreconcilable report, and the node disruption policy source.

use std::sync::Arc;
use std::time::Duration;

use kube_sim::{FeatureSet, KubeSim, SimOptions};
use serde_json::{Value, json};

use super::mcn::{AppliedPart, ConditionChange, ConditionType, Status};
use super::policy_source::{PolicyWait, fetch_policy};
use super::*;
use crate::plan::PolicySource;
use crate::plan::irreconcilable::IrreconcilableChange;

const MCFG: &str = "machineconfiguration.openshift.io/v1";
const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

struct Env {
    sim: KubeSim,
    cluster: Arc<KubeCluster>,
    _dir: tempfile::TempDir,
}

async fn env(feature_set: FeatureSet) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    let sim = KubeSim::start(SimOptions {
        kubeconfig: Some(kc.clone()),
        feature_set,
        ..Default::default()
    })
    .await
    .unwrap();
    sim.load_yaml(&format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: node1\n  annotations:\n    \
         machineconfiguration.openshift.io/currentConfig: rendered-worker-a\n    \
         machineconfiguration.openshift.io/desiredConfig: rendered-worker-b\n    \
         machineconfiguration.openshift.io/currentImage: image-registry.openshift-image-registry.svc:5000/openshift-machine-config-operator/os@{D1}\n    \
         machineconfiguration.openshift.io/desiredImage: image-registry.openshift-image-registry.svc:5000/openshift-machine-config-operator/os@{D2}\n"
    ))
    .unwrap();
    let client = connect(&Credentials::Kubeconfig(kc)).await.unwrap();
    Env {
        sim,
        cluster: Arc::new(KubeCluster::new(client, "node1")),
        _dir: dir,
    }
}

impl Env {
    fn mcn(&self) -> Value {
        self.sim
            .get_object(MCFG, "MachineConfigNode", None, "node1")
            .unwrap()
    }

    fn condition(&self, ty: &str) -> Option<Value> {
        self.mcn()["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == ty)
            .cloned()
    }
}

/// A plan that writes files and changes the OS image.
fn files_and_os_plan() -> crate::plan::Plan {
    let mc = |name: &str, image: &str, contents: &str| {
        crate::config::MachineConfig::from_value(json!({
            "apiVersion": MCFG, "kind": "MachineConfig", "metadata": {"name": name},
            "spec": {"osImageURL": image, "config": {"ignition": {"version": "3.4.0"},
                "storage": {"files": [{"path": "/etc/x", "contents": {"source": format!("data:,{contents}")}}]}}}
        }))
        .unwrap()
    };
    crate::plan::plan(
        &mc("a", &format!("quay.io/os/os@{D1}"), "1"),
        &mc("b", &format!("quay.io/os/os@{D2}"), "2"),
        None,
        &crate::config::MachineConfiguration::default(),
    )
}

#[tokio::test]
async fn default_schema_gets_only_what_it_defines() {
    let e = env(FeatureSet::Default).await;
    let node = e.cluster.get_node().await.unwrap();
    let writer = McnWriter::new(e.cluster.clone(), "worker");
    writer.ensure(&node).await.unwrap();
    assert!(!writer.image_mode().await);
    let plan = files_and_os_plan();
    writer
        .update(
            &node,
            &[
                ConditionChange::applying(&plan),
                ConditionChange::new(
                    ConditionType::ImagePulledFromRegistry,
                    Status::Unknown,
                    "ImagePulledFromRegistry",
                    "Pulling",
                ),
                ConditionChange::apply_failed(&plan, AppliedPart::Os, "boom"),
            ],
        )
        .await
        .unwrap();
    let mcn = e.mcn();
    assert!(mcn["spec"].get("configImage").is_none());
    assert!(mcn["status"].get("configImage").is_none());
    let types: Vec<&str> = mcn["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types.len(), 14);
    assert!(!types.contains(&"ImagePulledFromRegistry") && !types.contains(&"AppliedFiles"));
    let applied = e.condition("AppliedFilesAndOS").unwrap();
    assert_eq!(
        (&applied["status"], &applied["reason"], &applied["message"]),
        (
            &json!("Unknown"),
            &json!("UpdateExecutedAppliedFilesAndOS"),
            &json!("Applying files and new OS config to node")
        )
    );
    // Nothing ever failed: no 500 from an undeclared field.
    assert!(
        e.sim.requests().iter().all(|r| r.status < 500),
        "{:?}",
        e.sim
            .requests()
            .iter()
            .filter(|r| r.status >= 500)
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn tech_preview_schema_gets_the_image_fields_and_split_conditions() {
    let e = env(FeatureSet::TechPreviewNoUpgrade).await;
    let node = e.cluster.get_node().await.unwrap();
    let writer = McnWriter::new(e.cluster.clone(), "worker");
    writer.ensure(&node).await.unwrap();
    assert!(writer.image_mode().await);
    let desired = format!(
        "image-registry.openshift-image-registry.svc:5000/openshift-machine-config-operator/os@{D2}"
    );
    let current = desired.replace(D2, D1);
    let mcn = e.mcn();
    assert_eq!(mcn["spec"]["configImage"], json!({"desiredImage": desired}));
    assert_eq!(mcn["spec"]["configVersion"]["desired"], "rendered-worker-b");
    assert_eq!(
        mcn["status"]["configImage"],
        json!({"currentImage": current, "desiredImage": desired})
    );
    let types: Vec<&str> = mcn["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ConditionType::IMAGE_MODE
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
    );

    let plan = files_and_os_plan();
    writer
        .update(&node, &[ConditionChange::applying(&plan)])
        .await
        .unwrap();
    let files = e.condition("AppliedFiles").unwrap();
    assert_eq!(
        (&files["status"], &files["reason"], &files["message"]),
        (
            &json!("Unknown"),
            &json!("UpdateExecutedAppliedFiles"),
            &json!("Applying files to node.")
        )
    );
    let os = e.condition("AppliedOSImage").unwrap();
    assert_eq!(os["message"], "Applying new OS config to node.");
    let parent = e.condition("UpdateExecuted").unwrap();
    assert_eq!(
        (&parent["status"], &parent["reason"], &parent["message"]),
        (
            &json!("Unknown"),
            &json!("AppliedOSImage"),
            &json!("Updating the OS on disk as a part of the in progress phase")
        )
    );
    writer
        .update(&node, &[ConditionChange::applied(&plan)])
        .await
        .unwrap();
    assert_eq!(
        e.condition("AppliedFiles").unwrap()["message"],
        "Applied files. SSH Keys did need an update"
    );
    assert_eq!(e.condition("AppliedOSImage").unwrap()["status"], "True");
    // Updated resets the others, naming the image being rolled out.
    writer
        .update(
            &node,
            &[ConditionChange::new(
                ConditionType::Updated,
                Status::False,
                "Updated",
                "Node node1 needs an update",
            )],
        )
        .await
        .unwrap();
    assert_eq!(
        e.condition("AppliedOSImage").unwrap()["message"],
        format!("Action during update to {desired}: Applied new OS config to node.")
    );

    // The node moves on: spec and status follow the annotations; an image that is not a digested
    // pull spec is left out rather than failing the whole write.
    e.sim
        .merge_patch_object(
            "v1",
            "Node",
            None,
            "node1",
            &json!({"metadata": {"annotations": {
                "machineconfiguration.openshift.io/desiredConfig": "rendered-worker-c",
                "machineconfiguration.openshift.io/currentImage": desired,
                "machineconfiguration.openshift.io/desiredImage": "quay.io/os/os:latest"}}}),
        )
        .unwrap();
    let node = e.cluster.get_node().await.unwrap();
    assert!(writer.update(&node, &[]).await.unwrap());
    let mcn = e.mcn();
    assert_eq!(mcn["spec"]["configVersion"]["desired"], "rendered-worker-c");
    assert!(mcn["spec"].get("configImage").is_none(), "{}", mcn["spec"]);
    assert_eq!(
        mcn["status"]["configImage"],
        json!({"currentImage": desired})
    );
}

#[tokio::test]
async fn irreconcilable_changes_are_reported_in_either_schema() {
    for fs in [FeatureSet::Default, FeatureSet::TechPreviewNoUpgrade] {
        let e = env(fs).await;
        let node = e.cluster.get_node().await.unwrap();
        let writer = McnWriter::new(e.cluster.clone(), "worker");
        let report = vec![IrreconcilableChange {
            field_path: "spec.config.storage.disks[0].partitions[0].sizeMiB".into(),
            diff: "- 100\n+ 200\n".into(),
        }];
        assert!(
            writer
                .set_irreconcilable(&node, report.clone())
                .await
                .unwrap()
        );
        assert!(!writer.set_irreconcilable(&node, report).await.unwrap());
        assert_eq!(
            e.mcn()["status"]["irreconcilableChanges"],
            json!([{"fieldPath": "spec.config.storage.disks[0].partitions[0].sizeMiB", "diff": "- 100\n+ 200\n"}])
        );
        // A later status write keeps it (server-side apply drops what a manager stops sending).
        writer
            .update(
                &node,
                &[ConditionChange::new(
                    ConditionType::Resumed,
                    Status::True,
                    "Resumed",
                    "x",
                )],
            )
            .await
            .unwrap();
        assert!(e.mcn()["status"]["irreconcilableChanges"].is_array());
        writer.set_irreconcilable(&node, Vec::new()).await.unwrap();
        assert!(e.mcn()["status"].get("irreconcilableChanges").is_none());
    }
}

const MC_HEAD: &str = "apiVersion: operator.openshift.io/v1\nkind: MachineConfiguration\nmetadata:\n  name: cluster\n";
const SPEC: &str = "spec:\n  nodeDisruptionPolicy:\n    files:\n    - path: /etc/foo.conf\n      actions:\n      - type: Restart\n        restart: {serviceName: foo.service}\n";

fn status(observed: i64) -> Value {
    json!({"status": {"observedGeneration": observed, "nodeDisruptionPolicyStatus": {"clusterPolicies": {
        "files": [{"path": "/etc/foo.conf", "actions": [{"type": "Reload", "reload": {"serviceName": "bar.service"}}]}],
        "sshkey": {"actions": [{"type": "None"}]}}}}})
}

fn quick() -> PolicyWait {
    PolicyWait {
        poll: Duration::from_millis(50),
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn policy_comes_from_the_operator_status_once_current() {
    let e = env(FeatureSet::Default).await;
    let (_, source) = fetch_policy(&*e.cluster, quick()).await.unwrap();
    assert_eq!(source, PolicySource::DefaultsMergedWithSpec, "no object");

    e.sim.load_yaml(&format!("{MC_HEAD}{SPEC}")).unwrap();
    let (p, source) = fetch_policy(&*e.cluster, quick()).await.unwrap();
    assert_eq!(source, PolicySource::DefaultsMergedWithSpec, "no status");
    assert_eq!(p.node_disruption_policy.files.len(), 1);

    e.sim
        .merge_patch_object(
            "operator.openshift.io/v1",
            "MachineConfiguration",
            None,
            "cluster",
            &status(1),
        )
        .unwrap();
    let (p, source) = fetch_policy(&*e.cluster, quick()).await.unwrap();
    assert_eq!(source, PolicySource::OperatorStatus);
    assert_eq!(
        p.current_cluster_policies().unwrap().files[0].actions,
        vec![crate::config::PolicyAction::Reload("bar.service".into())]
    );

    // spec changes (generation 2): the status is stale until the operator catches up.
    e.sim
        .merge_patch_object(
            "operator.openshift.io/v1",
            "MachineConfiguration",
            None,
            "cluster",
            &json!({"spec": {"nodeDisruptionPolicy": {"units": [{"name": "x.service", "actions": [{"type": "None"}]}]}}}),
        )
        .unwrap();
    let operator = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        e.sim
            .merge_patch_object(
                "operator.openshift.io/v1",
                "MachineConfiguration",
                None,
                "cluster",
                &status(2),
            )
            .unwrap();
    };
    let started = std::time::Instant::now();
    let (fetched, ()) = tokio::join!(fetch_policy(&*e.cluster, quick()), operator);
    let (p, source) = fetched.unwrap();
    assert_eq!(source, PolicySource::OperatorStatus);
    assert_eq!(p.generation, 2);
    assert!(started.elapsed() >= Duration::from_millis(400), "it waited");

    // An operator that never catches up: the update fails with the generations named.
    e.sim
        .merge_patch_object(
            "operator.openshift.io/v1",
            "MachineConfiguration",
            None,
            "cluster",
            &json!({"spec": {"nodeDisruptionPolicy": {"units": null}}}),
        )
        .unwrap();
    let err = fetch_policy(
        &*e.cluster,
        PolicyWait {
            poll: Duration::from_millis(50),
            timeout: Duration::from_millis(300),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "NodeDisruptionPolicyStatus was not ready: MachineConfiguration cluster status.observedGeneration 2 is not metadata.generation 3 after 0.3s; is the machine-config-operator running?"
    );
}
