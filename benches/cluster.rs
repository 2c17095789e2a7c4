//! Figures for the Kubernetes side, measured with the real kube-rs client against kube-sim:
//! - drain of 100 pods that take 1 s each to terminate (target ≤ 3 s),
//! - API requests for one annotation-only update of a node (target ≤ 12),
//! - API requests while idle, besides the node watch (target 0 per minute).
//!
//! Run: `cargo bench --bench cluster` (about 35 s).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_sim::{KubeSim, SimOptions};
use machine_config_daemon::cluster::annotations::{AnnotationChanges, CURRENT_CONFIG, NodeState};
use machine_config_daemon::cluster::mcn::{ConditionChange, Status};
use machine_config_daemon::cluster::{
    AnnotationWriter, Cluster, ConditionType, Credentials, DrainOptions, Drainer, EventReason,
    KubeCluster, McnWriter, NodeEvent, connect, watch_node,
};

const NODE: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: node1
  annotations:
    machineconfiguration.openshift.io/currentConfig: rendered-worker-a
    machineconfiguration.openshift.io/desiredConfig: rendered-worker-a
    machineconfiguration.openshift.io/state: Done
---
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata: {name: rendered-worker-a}
spec: {config: {ignition: {version: 3.4.0}}}
---
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata: {name: rendered-worker-b}
spec: {config: {ignition: {version: 3.4.0}}}
---
apiVersion: operator.openshift.io/v1
kind: MachineConfiguration
metadata: {name: cluster}
spec: {managementState: Managed}
"#;

async fn setup(extra: &str) -> (KubeSim, Arc<KubeCluster>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kc");
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
    (sim, Arc::new(KubeCluster::new(client, "node1")), dir)
}

async fn drain_100_pods() {
    let mut pods = String::from(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web-pdb, namespace: apps}\n\
         spec: {maxUnavailable: \"100%\", selector: {matchLabels: {app: web}}}\n",
    );
    for i in 0..100 {
        pods.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: web-{i}, namespace: apps, labels: {{app: web}}}}\n\
             spec: {{nodeName: node1, terminationGracePeriodSeconds: 1, containers: [{{name: c, image: x}}]}}\n\
             status: {{phase: Running, conditions: [{{type: Ready, status: \"True\"}}]}}\n"
        ));
    }
    let (sim, cluster, _dir) = setup(&pods).await;
    sim.reset_counters();
    let started = Instant::now();
    let report = Drainer::new(cluster.clone(), DrainOptions::default())
        .drain()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(report.evicted.len(), 100);
    testbed::figures::record(&testbed::figures::Figure::at_most(
        "P5",
        "drain of 100 pods with 1 s termination each",
        took.as_secs_f64(),
        "s",
        3.0,
        format!("{} API requests", sim.counters().values().sum::<u64>()),
    ))
    .unwrap();
    println!(
        "drain of 100 pods (1 s termination each): {:.2} s (target <= 3 s); {} API requests ({} evictions, {} pod lists)",
        took.as_secs_f64(),
        sim.counters().values().sum::<u64>(),
        sim.counters()
            .get("create pods/eviction")
            .copied()
            .unwrap_or(0),
        sim.counters().get("list pods").copied().unwrap_or(0),
    );
}

async fn annotation_only_update() {
    let (sim, cluster, _dir) = setup("").await;
    let mut watch = watch_node(cluster.client().clone(), "node1");
    let node = watch.wait_for(|_| true).await.unwrap();
    let mcn = McnWriter::new(cluster.clone(), "worker");
    mcn.ensure(&node).await.unwrap();
    let writer = AnnotationWriter::new(cluster.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    sim.reset_counters();

    // The controller moves desiredConfig; the watch delivers it.
    sim.merge_patch_object(
        "v1",
        "Node",
        None,
        "node1",
        &serde_json::json!({"metadata": {"annotations": {"machineconfiguration.openshift.io/desiredConfig": "rendered-worker-b"}}}),
    )
    .unwrap();
    let node = watch
        .wait_for(|n| {
            machine_config_daemon::cluster::annotations::get(
                n,
                "machineconfiguration.openshift.io/desiredConfig",
            ) == Some("rendered-worker-b")
        })
        .await
        .unwrap();
    // One update that needs neither drain nor reboot, with the building blocks the driver uses.
    cluster
        .get_machine_config("rendered-worker-b")
        .await
        .unwrap();
    cluster
        .get_machine_config("rendered-worker-a")
        .await
        .unwrap();
    cluster.get_machine_configuration().await.unwrap();
    let node = writer
        .set_state(NodeState::Working, "", Some(&node))
        .await
        .unwrap()
        .unwrap();
    mcn.update(
        &node,
        &[
            ConditionChange::new(
                ConditionType::Updated,
                Status::False,
                "Updating",
                "Node node1 is updating to rendered-worker-b",
            ),
            ConditionChange::new(
                ConditionType::UpdatePrepared,
                Status::True,
                "UpdatePrepared",
                "Update prepared",
            ),
        ],
    )
    .await
    .unwrap();
    mcn.update(
        &node,
        &[
            ConditionChange::new(
                ConditionType::AppliedFilesAndOS,
                Status::True,
                "AppliedFilesAndOS",
                "Applied files",
            ),
            ConditionChange::new(
                ConditionType::UpdatePostActionComplete,
                Status::True,
                "UpdatePostActionComplete",
                "No reboot needed",
            ),
        ],
    )
    .await
    .unwrap();
    cluster
        .emit_event(&NodeEvent::normal(
            EventReason::NodeDone,
            "Setting node node1, currentConfig rendered-worker-b to Done",
        ))
        .await
        .unwrap();
    let node = writer
        .write(
            AnnotationChanges::new().done("rendered-worker-b", None, true),
            Some(&node),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        machine_config_daemon::cluster::annotations::get(&node, CURRENT_CONFIG),
        Some("rendered-worker-b")
    );
    mcn.update(
        &node,
        &[ConditionChange::new(
            ConditionType::Updated,
            Status::True,
            "Updated",
            "Node node1 updated",
        )],
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let counters = sim.counters();
    // The controller's desiredConfig write went through the handle, not HTTP: every request
    // counted here is the daemon's. The node watch itself is not counted.
    let ours: u64 = counters
        .iter()
        .filter(|(k, _)| !k.starts_with("watch "))
        .map(|(_, v)| v)
        .sum();
    println!("requests for one annotation-only update: {ours} (target <= 12): {counters:?}");
    drop(watch);
}

async fn idle() {
    let (sim, cluster, _dir) = setup("").await;
    let mut watch = watch_node(cluster.client().clone(), "node1");
    watch.wait_for(|_| true).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    sim.reset_counters();
    let window = Duration::from_secs(20);
    tokio::time::sleep(window).await;
    let counters = sim.counters();
    let watch_reqs: u64 = counters
        .iter()
        .filter(|(k, _)| k.starts_with("watch "))
        .map(|(_, v)| v)
        .sum();
    let other: u64 = counters.values().sum::<u64>() - watch_reqs;
    println!(
        "idle for {} s: {other} requests besides the watch (target 0/min), {watch_reqs} watch re-connections",
        window.as_secs()
    );
    drop(watch);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    drain_100_pods().await;
    annotation_only_update().await;
    idle().await;
}
