//! The real kube-rs client over HTTP against kube-sim: watch recovery, retries, drains with PDBs,
//! the controller handshake, the MachineConfigNode and events.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube_sim::{FaultRule, KubeSim, SimOptions};
use serde_json::{Value, json};

use super::annotations::{AnnotationChanges, CORDONED_BY, LAST_APPLIED_DRAIN, NodeState, STATE};
use super::drain::{BlockedPod, DrainObserver};
use super::*;

const NODE: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: node1
  labels: {kubernetes.io/hostname: node1, node-role.kubernetes.io/worker: ""}
  annotations:
    machineconfiguration.openshift.io/currentConfig: rendered-worker-a
    machineconfiguration.openshift.io/desiredConfig: rendered-worker-b
"#;

struct Env {
    sim: KubeSim,
    cluster: Arc<KubeCluster>,
    _dir: tempfile::TempDir,
}

impl Env {
    /// Our node's MachineConfigNode as the API server holds it.
    fn mcn(&self) -> serde_json::Value {
        self.sim
            .get_object(
                "machineconfiguration.openshift.io/v1",
                "MachineConfigNode",
                None,
                "node1",
            )
            .expect("the MachineConfigNode exists")
    }
}

async fn env(extra: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    let sim = KubeSim::start(SimOptions {
        kubeconfig: Some(kc.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    sim.load_yaml(NODE).unwrap();
    if !extra.is_empty() {
        sim.load_yaml(extra).unwrap();
    }
    let client = connect(&Credentials::Kubeconfig(kc)).await.unwrap();
    Env {
        sim,
        cluster: Arc::new(KubeCluster::new(client, "node1")),
        _dir: dir,
    }
}

fn fast() -> DrainOptions {
    DrainOptions {
        retry_initial: Duration::from_millis(100),
        retry_max: Duration::from_millis(300),
        poll_interval: Duration::from_millis(50),
        controller_poll_interval: Duration::from_millis(50),
        ..Default::default()
    }
}

fn web_pods(n: usize, grace: u32) -> String {
    let mut y = String::from(
        r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web, namespace: apps}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template: {metadata: {labels: {app: web}}, spec: {containers: [{name: c, image: x}]}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web-pdb, namespace: apps}
spec: {minAvailable: 2, selector: {matchLabels: {app: web}}}
"#,
    );
    for i in 1..=n {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: web-{i}, namespace: apps, labels: {{app: web}}, \
             ownerReferences: [{{apiVersion: apps/v1, kind: ReplicaSet, name: web, uid: 6a3b0e52-0000-0000-0000-00000000000{i}, controller: true}}]}}\n\
             spec: {{nodeName: node1, terminationGracePeriodSeconds: {grace}, containers: [{{name: c, image: x}}]}}\n\
             status: {{phase: Running, conditions: [{{type: Ready, status: \"True\"}}]}}\n"
        ));
    }
    y
}

const LEFT_ALONE: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: agent-x
  namespace: apps
  ownerReferences: [{apiVersion: apps/v1, kind: DaemonSet, name: agent, uid: 1f6935d7-0000-0000-0000-000000000001, controller: true}]
spec: {nodeName: node1, containers: [{name: c, image: x}]}
status: {phase: Running, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: static-x, namespace: apps, annotations: {kubernetes.io/config.mirror: abc}}
spec: {nodeName: node1, containers: [{name: c, image: x}]}
status: {phase: Running}
---
apiVersion: v1
kind: Pod
metadata: {name: job-done, namespace: apps}
spec: {nodeName: node1, containers: [{name: c, image: x}]}
status: {phase: Succeeded}
"#;

fn pods_named(sim: &KubeSim) -> Vec<String> {
    sim.list_objects("v1", "Pod")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn events(sim: &KubeSim, reason: &str) -> Vec<Value> {
    sim.list_objects("v1", "Event")
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .collect()
}

#[derive(Default)]
struct Recorder(Mutex<Vec<BlockedPod>>);

impl DrainObserver for Recorder {
    fn pod_blocked(&self, b: &BlockedPod) {
        self.0.lock().unwrap().push(b.clone());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_watch_survives_drops_and_410() {
    let e = env("").await;
    let mut watch = watch_node(e.cluster.client().clone(), "node1");
    let first = watch.wait_for(|_| true).await.unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("node1"));
    let set = |v: &str| json!({"metadata": {"annotations": {STATE: v}}});
    e.sim
        .merge_patch_object("v1", "Node", None, "node1", &set("Working"))
        .unwrap();
    watch
        .wait_for(|n| annotations::get(n, STATE) == Some("Working"))
        .await
        .unwrap();
    // A dropped connection: the watcher re-watches from its last RV.
    e.sim.drop_watches();
    e.sim
        .merge_patch_object("v1", "Node", None, "node1", &set("Degraded"))
        .unwrap();
    watch
        .wait_for(|n| annotations::get(n, STATE) == Some("Degraded"))
        .await
        .unwrap();
    // The re-watch fails once, the node changes and history is compacted meanwhile: the
    // re-watch from the old RV gets 410 and the watcher re-lists, so the change is not missed.
    e.sim.inject_fault(FaultRule {
        verb: Some("watch".into()),
        path: Some("/nodes".into()),
        status: 500,
        count: 1,
        message: None,
    });
    e.sim.drop_watches();
    e.sim
        .merge_patch_object("v1", "Node", None, "node1", &set("Done"))
        .unwrap();
    e.sim.compact();
    let n = tokio::time::timeout(
        Duration::from_secs(20),
        watch.wait_for(|n| annotations::get(n, STATE) == Some("Done")),
    )
    .await
    .expect("change seen after 410")
    .unwrap();
    assert_eq!(annotations::get(&n, STATE), Some("Done"));
    let counters = e.sim.counters();
    assert!(
        counters.get("list nodes").copied().unwrap_or(0) >= 2,
        "the watcher re-listed after 410: {counters:?}"
    );
}

#[tokio::test]
async fn annotation_writes_retry_conflicts_and_server_errors() {
    let e = env("").await;
    let writer = AnnotationWriter::new(e.cluster.clone());
    e.sim.inject_fault(FaultRule {
        verb: Some("patch".into()),
        path: Some("/nodes/node1".into()),
        status: 409,
        count: 2,
        message: None,
    });
    e.sim.inject_fault(FaultRule {
        verb: Some("patch".into()),
        path: Some("/nodes/node1".into()),
        status: 503,
        count: 1,
        message: None,
    });
    let long = "e".repeat(5000);
    let node = writer
        .set_state(NodeState::Degraded, &long, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(annotations::get(&node, STATE), Some("Degraded"));
    let stored = e.sim.get_object("v1", "Node", None, "node1").unwrap();
    assert_eq!(
        stored["metadata"]["annotations"][annotations::REASON]
            .as_str()
            .unwrap()
            .len(),
        2000
    );
    assert_eq!(
        e.sim.counters()["patch nodes"],
        4,
        "three failures, then success"
    );
    // Deleting with null, and skipping no-op writes.
    let none = writer
        .write(AnnotationChanges::new().set(STATE, "Degraded"), Some(&node))
        .await
        .unwrap();
    assert!(none.is_none(), "an unchanged annotation is not written");
    writer
        .write(AnnotationChanges::new().delete(annotations::REASON), None)
        .await
        .unwrap();
    let stored = e.sim.get_object("v1", "Node", None, "node1").unwrap();
    assert!(
        stored["metadata"]["annotations"]
            .get(annotations::REASON)
            .is_none()
    );
}

#[tokio::test]
async fn machine_configs_are_returned_raw_and_missing_is_distinct() {
    let e = env(r#"
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata: {name: rendered-worker-b}
spec: {config: {ignition: {version: 3.4.0}}, kernelArguments: [nosmt]}
---
apiVersion: operator.openshift.io/v1
kind: MachineConfiguration
metadata: {name: cluster}
spec: {managementState: Managed}
"#)
    .await;
    let mc = e
        .cluster
        .get_machine_config("rendered-worker-b")
        .await
        .unwrap();
    assert_eq!(mc["spec"]["kernelArguments"], json!(["nosmt"]));
    assert_eq!(mc["kind"], "MachineConfig");
    let err = e
        .cluster
        .get_machine_config("rendered-worker-zzz")
        .await
        .unwrap_err();
    match err.downcast_ref::<ClusterError>() {
        Some(ClusterError::MachineConfigNotFound(n)) => assert_eq!(n, "rendered-worker-zzz"),
        other => panic!("expected MachineConfigNotFound, got {other:?} ({err:#})"),
    }
    let mcfg = e
        .cluster
        .get_machine_configuration()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mcfg["spec"]["managementState"], "Managed");
    e.sim.delete_object(
        "operator.openshift.io/v1",
        "MachineConfiguration",
        None,
        "cluster",
    );
    assert!(
        e.cluster
            .get_machine_configuration()
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn machine_config_node_is_created_and_updated_with_apply() {
    let e = env("").await;
    let node = e.cluster.get_node().await.unwrap();
    let writer = McnWriter::new(e.cluster.clone(), "worker");
    writer.ensure(&node).await.unwrap();
    let mcn = e.mcn();
    assert_eq!(mcn["spec"]["pool"]["name"], "worker");
    assert_eq!(mcn["spec"]["configVersion"]["desired"], "rendered-worker-b");
    let conds = mcn["status"]["conditions"].as_array().unwrap();
    assert_eq!(conds.len(), 14);
    assert!(
        conds
            .iter()
            .all(|c| c["status"] == "False" && c["reason"] == "NotYetOccurred")
    );
    assert_eq!(
        mcn["status"]["configVersion"],
        json!({"current": "rendered-worker-a", "desired": "rendered-worker-b"})
    );
    use mcn::{ConditionChange, Status};
    let change = ConditionChange::new(
        ConditionType::Updated,
        Status::False,
        "Updating",
        "Node node1 is updating",
    );
    assert!(
        writer
            .update(&node, std::slice::from_ref(&change))
            .await
            .unwrap()
    );
    e.sim.reset_counters();
    assert!(
        !writer.update(&node, &[change]).await.unwrap(),
        "unchanged conditions are not rewritten"
    );
    assert_eq!(e.sim.count_verb("patch"), 0);
    let mcn = e.mcn();
    let updated = mcn["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Updated")
        .unwrap()
        .clone();
    assert_eq!(
        (updated["status"].as_str(), updated["reason"].as_str()),
        (Some("False"), Some("Updating"))
    );
    let managers: Vec<&str> = mcn["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(managers.contains(&FIELD_MANAGER), "{managers:?}");
    // A second writer (daemon restart) finds the existing object.
    let again = McnWriter::new(e.cluster.clone(), "worker");
    again.ensure(&node).await.unwrap();
    assert_eq!(
        again
            .conditions()
            .await
            .iter()
            .find(|c| c["type"] == "Updated")
            .unwrap()["reason"],
        "Updating"
    );
}

#[tokio::test]
async fn events_carry_the_daemon_source() {
    let e = env("").await;
    e.cluster
        .emit_event(&NodeEvent::normal(
            EventReason::Reboot,
            "Node will reboot into config rendered-worker-b",
        ))
        .await
        .unwrap();
    let ev = &events(&e.sim, "Reboot")[0];
    assert_eq!(ev["source"]["component"], "machineconfigdaemon");
    assert_eq!(
        ev["involvedObject"],
        json!({"kind": "Node", "name": "node1", "uid": "node1", "apiVersion": "v1"})
    );
    assert_eq!(ev["type"], "Normal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_waits_for_pdb_then_another_replica_unblocks_it() {
    let e = env(&format!("{}---{LEFT_ALONE}", web_pods(3, 1))).await;
    let recorder = Arc::new(Recorder::default());
    let mcn = Arc::new(McnWriter::new(e.cluster.clone(), "worker"));
    let drainer = Drainer::new(e.cluster.clone(), fast())
        .with_observer(recorder.clone())
        .with_mcn(mcn.clone());
    let drain = drainer.drain();
    tokio::pin!(drain);
    assert!(
        tokio::time::timeout(Duration::from_secs(2), &mut drain)
            .await
            .is_err(),
        "blocked by the PDB"
    );
    let blocked = recorder.0.lock().unwrap().clone();
    assert_eq!(
        blocked.len(),
        2,
        "two pods wait for the budget: {blocked:?}"
    );
    assert!(blocked.iter().all(|b| b.pdb.as_deref() == Some("web-pdb")));
    let warning = events(&e.sim, "Drain")
        .into_iter()
        .find(|ev| ev["type"] == "Warning")
        .expect("a warning event");
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("blocked by PodDisruptionBudget web-pdb since"),
        "{warning}"
    );
    let drained = mcn
        .conditions()
        .await
        .into_iter()
        .find(|c| c["type"] == "Drained")
        .unwrap();
    assert!(
        drained["message"].as_str().unwrap().contains("web-pdb"),
        "{drained}"
    );
    assert_eq!(drained["status"], "Unknown");
    // Two replacement replicas become ready elsewhere: the budget allows the rest.
    for n in ["web-4", "web-5"] {
        e.sim
            .put_object(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": n, "namespace": "apps", "labels": {"app": "web"}},
                "spec": {"nodeName": "node2", "containers": [{"name": "c", "image": "x"}]}}))
            .unwrap();
        e.sim.set_pod_ready("apps", n, true).unwrap();
    }
    let report = tokio::time::timeout(Duration::from_secs(20), drain)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.evicted, ["apps/web-1", "apps/web-2", "apps/web-3"]);
    assert!(report.cordoned);
    let mut skipped: Vec<&str> = report.skipped.iter().map(|s| s.1).collect();
    skipped.sort();
    assert_eq!(skipped, ["DaemonSet-managed", "finished", "mirror pod"]);
    assert_eq!(
        pods_named(&e.sim),
        ["agent-x", "job-done", "static-x", "web-4", "web-5"]
    );
    let node = e.sim.get_object("v1", "Node", None, "node1").unwrap();
    assert_eq!(node["spec"]["unschedulable"], true);
    assert_eq!(
        node["metadata"]["annotations"][CORDONED_BY],
        "machine-config-daemon"
    );
    assert_eq!(
        mcn.conditions()
            .await
            .into_iter()
            .find(|c| c["type"] == "Drained")
            .unwrap()["status"],
        "True"
    );
    assert!(drainer.uncordon().await.unwrap());
    let node = e.sim.get_object("v1", "Node", None, "node1").unwrap();
    assert!(node["spec"].get("unschedulable").is_none());
    assert!(node["metadata"]["annotations"].get(CORDONED_BY).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_pod_recreated_with_new_uid_counts_as_gone() {
    let e = env(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: apps}
spec: {replicas: 1, selector: {matchLabels: {app: db}}, template: {metadata: {labels: {app: db}}, spec: {containers: [{name: c, image: x}]}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: db-0
  namespace: apps
  labels: {app: db}
  ownerReferences: [{apiVersion: apps/v1, kind: StatefulSet, name: db, uid: 5b1e4d2a-0000-0000-0000-000000000001, controller: true}]
spec: {nodeName: node1, terminationGracePeriodSeconds: 1, containers: [{name: c, image: x}]}
status: {phase: Running, conditions: [{type: Ready, status: "True"}]}
"#,
    )
    .await;
    let old_uid =
        e.sim.get_object("v1", "Pod", Some("apps"), "db-0").unwrap()["metadata"]["uid"].clone();
    let report = tokio::time::timeout(
        Duration::from_secs(10),
        Drainer::new(e.cluster.clone(), fast()).drain(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.evicted, ["apps/db-0"]);
    let new = e
        .sim
        .get_object("v1", "Pod", Some("apps"), "db-0")
        .expect("recreated");
    assert_ne!(new["metadata"]["uid"], old_uid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_names_the_blocking_pods() {
    let e = env(&web_pods(3, 1).replace("minAvailable: 2", "minAvailable: 3")).await;
    let opts = DrainOptions {
        timeout: Duration::from_secs(2),
        ..fast()
    };
    let err = Drainer::new(e.cluster.clone(), opts)
        .drain()
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DrainError::Timeout { .. }), "{msg}");
    for pod in ["apps/web-1", "apps/web-2", "apps/web-3"] {
        assert!(
            msg.contains(&format!(
                "pod {pod} is blocked by PodDisruptionBudget web-pdb since"
            )),
            "{msg}"
        );
    }
    let failed = events(&e.sim, "FailedToDrain");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["type"], "Warning");
    assert_eq!(pods_named(&e.sim).len(), 3, "nothing was evicted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_completes_through_injected_faults() {
    let e = env(&web_pods(3, 1).replace("minAvailable: 2", "minAvailable: 0")).await;
    for (verb, path, status, count) in [
        ("create", "/eviction", 500, 2),
        ("create", "/eviction", 429, 1),
        ("list", "/pods", 503, 1),
        ("patch", "/nodes/node1", 409, 1),
        ("get", "/nodes/node1", 500, 1),
    ] {
        e.sim.inject_fault(FaultRule {
            verb: Some(verb.into()),
            path: Some(path.into()),
            status,
            count,
            message: None,
        });
    }
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        Drainer::new(e.cluster.clone(), fast()).drain(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.evicted.len(), 3);
    assert!(pods_named(&e.sim).is_empty());
}

#[tokio::test]
async fn someone_elses_cordon_is_left_in_place() {
    let e = env("").await;
    e.sim
        .merge_patch_object(
            "v1",
            "Node",
            None,
            "node1",
            &json!({"spec": {"unschedulable": true}}),
        )
        .unwrap();
    let drainer = Drainer::new(e.cluster.clone(), fast());
    let report = drainer.drain().await.unwrap();
    assert!(!report.cordoned);
    assert!(!drainer.uncordon().await.unwrap(), "not our cordon");
    assert_eq!(
        e.sim.get_object("v1", "Node", None, "node1").unwrap()["spec"]["unschedulable"],
        true
    );
}

/// A stand-in for the MCO drain controller: copies desiredDrain into lastAppliedDrain.
async fn fake_controller(sim: &KubeSim, delay: Duration) {
    loop {
        tokio::time::sleep(delay).await;
        let node = sim.get_object("v1", "Node", None, "node1").unwrap();
        let ann = &node["metadata"]["annotations"];
        if let Some(want) = ann[annotations::DESIRED_DRAIN].as_str() {
            if ann[LAST_APPLIED_DRAIN].as_str() != Some(want) {
                sim.merge_patch_object(
                    "v1",
                    "Node",
                    None,
                    "node1",
                    &json!({"metadata": {"annotations": {LAST_APPLIED_DRAIN: want}}}),
                )
                .unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_mode_handshake() {
    let e = env("").await;
    let drainer = Drainer::new(e.cluster.clone(), fast());
    let controller = fake_controller(&e.sim, Duration::from_millis(200));
    tokio::pin!(controller);
    tokio::select! {
        r = drainer.controller_drain("rendered-worker-b") => { r.unwrap(); }
        _ = &mut controller => unreachable!(),
    }
    let node = e.sim.get_object("v1", "Node", None, "node1").unwrap();
    assert_eq!(
        node["metadata"]["annotations"][annotations::DESIRED_DRAIN],
        "drain-rendered-worker-b"
    );
    assert_eq!(
        node["metadata"]["annotations"][LAST_APPLIED_DRAIN],
        "drain-rendered-worker-b"
    );
    assert_eq!(events(&e.sim, "Cordon").len(), 1);
    // Already applied: no new request.
    e.sim.reset_counters();
    drainer.controller_drain("rendered-worker-b").await.unwrap();
    assert_eq!(e.sim.count_verb("patch"), 0);
    tokio::select! {
        r = drainer.controller_uncordon("rendered-worker-b") => { r.unwrap(); }
        _ = &mut controller => unreachable!(),
    }
    assert_eq!(events(&e.sim, "Uncordon").len(), 1);
    // No controller: the timeout is an error and a FailedToDrain event.
    let opts = DrainOptions {
        controller_drain_timeout: Duration::from_millis(400),
        ..fast()
    };
    let err = Drainer::new(e.cluster.clone(), opts)
        .controller_drain("rendered-worker-c")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to drain node node1: the controller did not apply \"drain-rendered-worker-c\" within 400ms"
    );
    assert_eq!(events(&e.sim, "FailedToDrain").len(), 1);
}

#[tokio::test]
async fn single_node_topology_skips_the_drain() {
    let e = env("").await;
    e.sim
        .merge_patch_object("v1", "Node", None, "node1", &json!({"metadata": {"annotations": {annotations::CONTROL_PLANE_TOPOLOGY: "SingleReplica"}}}))
        .unwrap();
    let report = Drainer::new(e.cluster.clone(), fast())
        .controller_drain("rendered-worker-b")
        .await
        .unwrap();
    assert!(report.not_required);
    let node = e.sim.get_object("v1", "Node", None, "node1").unwrap();
    assert!(
        node["metadata"]["annotations"]
            .get(annotations::DESIRED_DRAIN)
            .is_none()
    );
}
