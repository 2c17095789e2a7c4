//! The test controls (`/_sim/…` and the library handle) and the simulated kubelet/controllers.

mod common;

use std::time::{Duration, Instant};

use common::Http;
use kube_sim::{FaultRule, KubeSim, SimOptions};
use serde_json::json;

const SETUP: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: node1}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: apps}
spec:
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: c, image: x}]}
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
"#;

async fn sim() -> KubeSim {
    let sim = KubeSim::start(SimOptions::default()).await.unwrap();
    sim.load_yaml(SETUP).unwrap();
    sim
}

#[tokio::test]
async fn injected_faults_hit_only_matching_requests_and_run_out() {
    let sim = sim().await;
    let http = Http::new(&sim.url());
    let rule = json!({"verb": "get", "path": "/nodes/node1", "status": 500, "count": 2});
    assert_eq!(
        http.json("POST", "/_sim/faults", "application/json", &rule)
            .await
            .status,
        200
    );
    assert_eq!(
        http.get("/api/v1/nodes").await.status,
        200,
        "a list is not a get"
    );
    for _ in 0..2 {
        let r = http.get("/api/v1/nodes/node1").await;
        assert_eq!(r.status, 500);
        assert_eq!(r.json()["reason"], "InternalError");
    }
    assert_eq!(http.get("/api/v1/nodes/node1").await.status, 200);
    sim.inject_fault(FaultRule {
        verb: Some("patch".into()),
        path: None,
        status: 429,
        count: 1,
        message: None,
    });
    let r = http
        .json(
            "PATCH",
            "/api/v1/nodes/node1",
            "application/merge-patch+json",
            &json!({}),
        )
        .await;
    assert_eq!(
        (r.status, r.header("retry-after").as_deref()),
        (429, Some("1"))
    );
    let counters = sim.counters();
    assert_eq!(counters["get nodes"], 3);
    assert_eq!(counters["list nodes"], 1);
    assert_eq!(counters["patch nodes"], 1);
}

#[tokio::test]
async fn latency_delays_requests() {
    let sim = sim().await;
    let http = Http::new(&sim.url());
    http.json(
        "POST",
        "/_sim/latency",
        "application/json",
        &json!({"millis": 300}),
    )
    .await;
    let t = Instant::now();
    assert_eq!(http.get("/api/v1/nodes/node1").await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    sim.set_latency(Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_watches_end_and_compaction_expires_old_versions() {
    let sim = sim().await;
    let http = Http::new(&sim.url());
    let rv = sim.resource_version();
    let watcher = {
        let http = Http::new(&sim.url());
        tokio::spawn(async move {
            http.watch(
                &format!("/api/v1/nodes?watch=1&resourceVersion={rv}"),
                Duration::from_secs(20),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    http.json(
        "PATCH",
        "/api/v1/nodes/node1",
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"a": "b"}}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        http.json("POST", "/_sim/drop-watches", "application/json", &json!({}))
            .await
            .status,
        200
    );
    let (status, events, took) = watcher.await.unwrap();
    assert_eq!(status, 200);
    assert!(
        took < Duration::from_secs(5),
        "the watch ended when dropped"
    );
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "MODIFIED");
    // Still within the window: a re-watch from the old RV replays the change.
    let (_, replay, _) = http
        .watch(
            &format!("/api/v1/nodes?watch=1&resourceVersion={rv}&timeoutSeconds=1"),
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(replay.len(), 1);
    http.json("POST", "/_sim/compact", "application/json", &json!({}))
        .await;
    let (_, expired, _) = http
        .watch(
            &format!("/api/v1/nodes?watch=1&resourceVersion={rv}&timeoutSeconds=1"),
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0]["type"], "ERROR");
    assert_eq!(expired[0]["object"]["code"], 410);
}

#[tokio::test]
async fn watch_with_selector_reports_objects_leaving_and_entering_it() {
    let sim = sim().await;
    let http = Http::new(&sim.url());
    let rv = sim.resource_version();
    http.json(
        "PATCH",
        "/api/v1/nodes/node1",
        "application/merge-patch+json",
        &json!({"spec": {"unschedulable": true}}),
    )
    .await;
    http.json(
        "PATCH",
        "/api/v1/nodes/node1",
        "application/merge-patch+json",
        &json!({"spec": {"unschedulable": null}}),
    )
    .await;
    let pq = format!(
        "/api/v1/nodes?watch=1&fieldSelector=spec.unschedulable%3Dtrue&resourceVersion={rv}&timeoutSeconds=1"
    );
    let (_, events, _) = http.watch(&pq, Duration::from_secs(5)).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ADDED", "DELETED"]);
}

#[tokio::test]
async fn graceful_deletion_then_statefulset_recreates_with_new_uid() {
    let sim = sim().await;
    let http = Http::new(&sim.url());
    let old = sim.get_object("v1", "Pod", Some("apps"), "db-0").unwrap();
    let old_uid = old["metadata"]["uid"].as_str().unwrap().to_string();
    let wrong = http
        .json(
            "DELETE",
            "/api/v1/namespaces/apps/pods/db-0",
            "application/json",
            &json!({"preconditions": {"uid": "nope"}}),
        )
        .await;
    assert_eq!(wrong.status, 409);
    let r = http
        .json(
            "DELETE",
            "/api/v1/namespaces/apps/pods/db-0",
            "application/json",
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["metadata"]["deletionGracePeriodSeconds"], 1);
    let terminating = sim.get_object("v1", "Pod", Some("apps"), "db-0").unwrap();
    assert!(
        terminating["metadata"]["deletionTimestamp"].is_string(),
        "Terminating during its grace period"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let new = sim
        .get_object("v1", "Pod", Some("apps"), "db-0")
        .expect("the StatefulSet recreated db-0");
    assert_ne!(new["metadata"]["uid"], old_uid.as_str());
    assert!(new["metadata"].get("deletionTimestamp").is_none());
    assert_eq!(new["status"]["phase"], "Pending");
    // The kubelet reports it Ready through the control API.
    let r = http
        .json(
            "POST",
            "/_sim/pods/apps/db-0/ready",
            "application/json",
            &json!({"ready": true}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        sim.get_object("v1", "Pod", Some("apps"), "db-0").unwrap()["status"]["phase"],
        "Running"
    );
}

#[tokio::test]
async fn pdb_with_percent_and_max_unavailable() {
    let sim = sim().await;
    sim.load_yaml(
        r#"
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: db-pdb, namespace: apps}
spec: {maxUnavailable: "50%", selector: {matchLabels: {app: db}}}
"#,
    )
    .unwrap();
    let pdb = sim
        .get_object("policy/v1", "PodDisruptionBudget", Some("apps"), "db-pdb")
        .unwrap();
    // One replica (from the StatefulSet): 50% rounds up to 1 unavailable → 0 desired, 1 allowed.
    assert_eq!(pdb["status"]["expectedPods"], 1);
    assert_eq!(pdb["status"]["desiredHealthy"], 0);
    assert_eq!(pdb["status"]["disruptionsAllowed"], 1);
    sim.set_pod_ready("apps", "db-0", false).unwrap();
    let pdb = sim
        .get_object("policy/v1", "PodDisruptionBudget", Some("apps"), "db-pdb")
        .unwrap();
    assert_eq!(pdb["status"]["currentHealthy"], 0);
    assert_eq!(pdb["status"]["disruptionsAllowed"], 0);
}

#[tokio::test]
async fn seed_errors_are_clear() {
    let sim = sim().await;
    let err = sim
        .load_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("kube-sim does not serve ConfigMap (v1)"),
        "{err:#}"
    );
    let err = sim
        .load_yaml("apiVersion: v1\nkind: Node\nmetadata: {name: Bad_Name}\n")
        .unwrap_err();
    assert!(format!("{err:#}").contains("invalid name"), "{err:#}");
}
