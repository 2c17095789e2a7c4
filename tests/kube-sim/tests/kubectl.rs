//! The real kubectl (1.32, /usr/bin/kubectl) against kube-sim: get, annotate, cordon, uncordon,
//! drain with a PodDisruptionBudget, and the MachineConfig custom resources. Request sequences are
//! compared with the ones recorded from a real API server (`golden/kubectl-*-requests.txt`).

mod common;

use std::path::Path;
use std::time::Duration;

use kube_sim::{KubeSim, RequestRecord, SimOptions};
use serde_json::json;

struct Env {
    sim: KubeSim,
    dir: tempfile::TempDir,
}

async fn start(yaml: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let objects = dir.path().join("objects.yaml");
    std::fs::write(&objects, yaml).unwrap();
    let sim = KubeSim::start(SimOptions {
        kubeconfig: Some(kubeconfig),
        load: vec![objects],
        ..Default::default()
    })
    .await
    .unwrap();
    Env { sim, dir }
}

/// Run kubectl with a fresh discovery cache and HOME inside the test's temp dir.
async fn kubectl(env: &Env, args: &[&str]) -> (i32, String, String) {
    let home = env.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let cache = tempfile::tempdir_in(env.dir.path()).unwrap();
    let out = tokio::process::Command::new("kubectl")
        .args(args)
        .arg(format!("--cache-dir={}", cache.path().display()))
        .env("KUBECONFIG", env.sim.kubeconfig_path().unwrap())
        .env("HOME", &home)
        .output()
        .await
        .expect("kubectl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `(METHOD, path_and_query)` of each request in a recorded `kubectl -v=8` trace.
fn recorded(name: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(common::golden_dir().join(name)).unwrap();
    text.lines()
        .filter(|l| l.starts_with('+'))
        .map(|l| {
            let mut parts = l.split_whitespace().skip(2);
            (
                parts.next().unwrap().to_string(),
                parts.next().unwrap().to_string(),
            )
        })
        .collect()
}

/// The requests kube-sim served. The machine's kubectl is the "dispatcher" build, which first
/// asks `/version?timeout=5s` to pick a matching kubectl; the recorded plain kubectl did not.
fn served(reqs: &[RequestRecord]) -> Vec<(String, String)> {
    reqs.iter()
        .filter(|r| r.path_and_query != "/version?timeout=5s")
        .map(|r| (r.method.clone(), r.path_and_query.clone()))
        .collect()
}

const NODE: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: node1
  labels: {kubernetes.io/hostname: node1, node-role.kubernetes.io/worker: ""}
status:
  conditions:
  - {type: Ready, status: "True", reason: KubeletReady, message: kubelet is posting ready status}
"#;

#[tokio::test]
async fn get_annotate_cordon_uncordon_like_the_real_server() {
    let env = start(NODE).await;
    for (args, trace, stdout) in [
        (
            vec!["get", "nodes"],
            "kubectl-get-nodes-requests.txt",
            "node1   Ready    worker",
        ),
        (
            vec![
                "annotate",
                "node",
                "node1",
                "machineconfiguration.openshift.io/state=Done",
                "--overwrite",
            ],
            "kubectl-annotate-node-requests.txt",
            "node/node1 annotated",
        ),
        (
            vec!["cordon", "node1"],
            "kubectl-cordon-requests.txt",
            "node/node1 cordoned",
        ),
        (
            vec!["uncordon", "node1"],
            "kubectl-uncordon-requests.txt",
            "node/node1 uncordoned",
        ),
    ] {
        env.sim.reset_counters();
        let (code, out, err) = kubectl(&env, &args).await;
        assert_eq!(code, 0, "kubectl {args:?}: {err}");
        assert!(out.contains(stdout), "kubectl {args:?} printed {out:?}");
        let reqs = env.sim.requests();
        assert_eq!(
            served(&reqs),
            recorded(trace),
            "kubectl {args:?} request sequence"
        );
        assert!(reqs.iter().all(|r| r.status == 200), "{reqs:?}");
    }
    let node = env.sim.get_object("v1", "Node", None, "node1").unwrap();
    assert_eq!(
        node["metadata"]["annotations"]["machineconfiguration.openshift.io/state"],
        "Done"
    );
    assert!(
        node["spec"].get("unschedulable").is_none(),
        "uncordon removes spec.unschedulable: {node}"
    );
    // The annotate request carried kubectl's field manager and a merge patch.
    let (code, out, _) = kubectl(
        &env,
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[0].metadata.managedFields[*].manager}",
        ],
    )
    .await;
    assert_eq!(code, 0);
    // cordon sends no fieldManager: the server derives "kubectl" from the User-Agent.
    let managers: Vec<&str> = out.split_whitespace().collect();
    assert!(
        managers.contains(&"kubectl-annotate") && managers.contains(&"kubectl"),
        "managers: {out}"
    );
}

#[tokio::test]
async fn get_machineconfigs_and_machineconfignodes() {
    let env = start(&format!(
        "{NODE}---\n{}",
        r#"apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata: {name: 99-worker-golden, labels: {machineconfiguration.openshift.io/role: worker}}
spec:
  config: {ignition: {version: 3.4.0}}
  osImageURL: quay.io/example/os@sha256:0000000000000000000000000000000000000000000000000000000000000000
---
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfigNode
metadata: {name: node1}
spec: {node: {name: node1}, pool: {name: worker}, configVersion: {desired: rendered-worker-bbb}}
status:
  observedGeneration: 1
  configVersion: {current: rendered-worker-aaa, desired: rendered-worker-bbb}
  conditions:
  - {type: Updated, status: "False", reason: Updating, message: updating, lastTransitionTime: "2026-01-01T00:00:00Z"}
"#
    ))
    .await;
    let (code, out, err) = kubectl(&env, &["get", "machineconfigs"]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "GENERATEDBYCONTROLLER", "IGNITIONVERSION", "AGE"]
    );
    assert!(
        lines[1].starts_with("99-worker-golden") && lines[1].contains("3.4.0"),
        "{out}"
    );
    let (code, out, err) = kubectl(&env, &["get", "machineconfignodes"]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "NAME",
            "POOLNAME",
            "DESIREDCONFIG",
            "CURRENTCONFIG",
            "UPDATED",
            "AGE"
        ]
    );
    assert_eq!(
        lines[1].split_whitespace().take(5).collect::<Vec<_>>(),
        [
            "node1",
            "worker",
            "rendered-worker-bbb",
            "rendered-worker-aaa",
            "False"
        ]
    );
    let (code, out, _) = kubectl(
        &env,
        &[
            "get",
            "mc",
            "99-worker-golden",
            "-o",
            "jsonpath={.spec.config.ignition.version}",
        ],
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "3.4.0"));
}

fn drain_scenario(grace: u32) -> String {
    let mut y = format!(
        "{NODE}{}",
        r#"---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: node-agent, namespace: apps}
spec:
  selector: {matchLabels: {app: node-agent}}
  template:
    metadata: {labels: {app: node-agent}}
    spec: {containers: [{name: c, image: registry.example/none:latest}]}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web, namespace: apps}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: registry.example/none:latest}]}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web-pdb, namespace: apps}
spec:
  minAvailable: 2
  selector: {matchLabels: {app: web}}
---
apiVersion: v1
kind: Pod
metadata:
  name: node-agent-abcde
  namespace: apps
  labels: {app: node-agent}
  ownerReferences: [{apiVersion: apps/v1, kind: DaemonSet, name: node-agent, uid: 1f6935d7-40d8-45e5-b588-2b6db0aca460, controller: true}]
spec: {nodeName: node1, containers: [{name: c, image: registry.example/none:latest}]}
status: {phase: Running, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: static-web-node1
  namespace: apps
  labels: {app: static}
  annotations: {kubernetes.io/config.mirror: d41d8cd98f00b204e9800998ecf8427e}
spec: {nodeName: node1, containers: [{name: c, image: registry.example/none:latest}]}
status: {phase: Running, conditions: [{type: Ready, status: "True"}]}
"#
    );
    for i in 1..=3 {
        y.push_str(&format!(
            r#"---
apiVersion: v1
kind: Pod
metadata:
  name: web-{i}
  namespace: apps
  labels: {{app: web}}
  ownerReferences: [{{apiVersion: apps/v1, kind: ReplicaSet, name: web, uid: 6a3b0e52-0000-0000-0000-00000000000{i}, controller: true}}]
spec: {{nodeName: node1, terminationGracePeriodSeconds: {grace}, containers: [{{name: c, image: registry.example/none:latest}}]}}
status: {{phase: Running, conditions: [{{type: Ready, status: "True"}}]}}
"#
        ));
    }
    y
}

fn web_pods_on(env: &Env, node: &str) -> Vec<String> {
    env.sim
        .list_objects("v1", "Pod")
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["app"] == "web" && p["spec"]["nodeName"] == node)
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

async fn drain_blocked_then(env: &Env, unblock: impl AsyncFnOnce(&Env)) -> (i32, String, String) {
    env.sim.reset_counters();
    let kc = kubectl(
        env,
        &[
            "drain",
            "node1",
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=60s",
        ],
    );
    tokio::pin!(kc);
    // kubectl retries 429s every 5 s: after 4 s one pod is gone and two are held by the PDB.
    let waited = tokio::time::timeout(Duration::from_secs(4), &mut kc).await;
    assert!(
        waited.is_err(),
        "drain must not finish while the PDB allows no disruption: {waited:?}"
    );
    assert_eq!(
        web_pods_on(env, "node1").len(),
        2,
        "exactly one web pod may be evicted"
    );
    let pdb = env
        .sim
        .get_object("policy/v1", "PodDisruptionBudget", Some("apps"), "web-pdb")
        .unwrap();
    assert_eq!(pdb["status"]["disruptionsAllowed"], 0, "{pdb}");
    let node = env.sim.get_object("v1", "Node", None, "node1").unwrap();
    assert_eq!(node["spec"]["unschedulable"], true);
    unblock(env).await;
    tokio::time::timeout(Duration::from_secs(30), kc)
        .await
        .expect("drain completes once unblocked")
}

fn check_drain_requests(env: &Env) {
    let reqs = env.sim.requests();
    let ours = served(&reqs);
    let golden = recorded("kubectl-drain-requests.txt");
    // The deterministic prefix: discovery, GET node, cordon, list pods, GET DaemonSet, GET /api/v1.
    assert_eq!(ours[..7], golden[..7], "drain request prefix");
    let evictions: Vec<&RequestRecord> = reqs
        .iter()
        .filter(|r| r.path_and_query.ends_with("/eviction"))
        .collect();
    assert!(
        evictions.iter().any(|r| r.status == 429),
        "some evictions must be refused by the PDB"
    );
    assert_eq!(
        evictions.iter().filter(|r| r.status == 201).count(),
        3,
        "each web pod is evicted once"
    );
    assert!(
        evictions
            .iter()
            .all(|r| !r.path_and_query.contains("node-agent")
                && !r.path_and_query.contains("static-web"))
    );
    // kubectl polls each evicted pod until the API says 404.
    for pod in ["web-1", "web-2", "web-3"] {
        assert!(
            reqs.iter().any(|r| r.method == "GET"
                && r.path_and_query == format!("/api/v1/namespaces/apps/pods/{pod}")
                && r.status == 404),
            "kubectl saw {pod} disappear"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_waits_for_the_pdb_until_another_replica_is_ready() {
    let env = start(&drain_scenario(1)).await;
    let (code, out, err) = drain_blocked_then(&env, async |env: &Env| {
        // The ReplicaSet's replacements come up Ready on another node.
        for name in ["web-4", "web-5"] {
            env.sim
                .put_object(json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": "apps", "labels": {"app": "web"}},
                    "spec": {"nodeName": "node2", "containers": [{"name": "c", "image": "x"}]}}))
                .unwrap();
            env.sim.set_pod_ready("apps", name, true).unwrap();
        }
    })
    .await;
    assert_eq!(code, 0, "drain failed: {err}");
    assert!(out.contains("node/node1 drained"), "{out}");
    assert!(
        err.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{err}"
    );
    assert!(web_pods_on(&env, "node1").is_empty());
    check_drain_requests(&env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_completes_when_the_pdb_is_relaxed() {
    let env = start(&drain_scenario(1)).await;
    let (code, out, err) = drain_blocked_then(&env, async |env: &Env| {
        env.sim
            .merge_patch_object(
                "policy/v1",
                "PodDisruptionBudget",
                Some("apps"),
                "web-pdb",
                &json!({"spec": {"minAvailable": 0}}),
            )
            .unwrap();
    })
    .await;
    assert_eq!(code, 0, "drain failed: {err}");
    assert!(out.contains("node/node1 drained"), "{out}");
    check_drain_requests(&env);
    // The DaemonSet and mirror pods stay.
    let left: Vec<String> = env
        .sim
        .list_objects("v1", "Pod")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, ["node-agent-abcde", "static-web-node1"]);
}

#[tokio::test]
async fn binary_prints_url_and_writes_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kc");
    let objects = dir.path().join("o.yaml");
    std::fs::write(&objects, NODE).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args(["--port", "0", "--kubeconfig"])
        .arg(&kc)
        .arg("--load")
        .arg(&objects)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(Path::new(&kc).exists());
    let home = dir.path().join("home");
    let out = tokio::process::Command::new("kubectl")
        .args(["get", "node", "node1", "-o", "name"])
        .env("KUBECONFIG", &kc)
        .env("HOME", &home)
        .arg(format!(
            "--cache-dir={}",
            dir.path().join("cache").display()
        ))
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "node/node1");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn bearer_token_is_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kc");
    let sim = KubeSim::start(SimOptions {
        token: Some("s3cret".into()),
        kubeconfig: Some(kc.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let http = common::Http::new(&sim.url());
    let resp = http.get("/api/v1/namespaces").await;
    assert_eq!(resp.status, 401);
    assert_eq!(resp.json()["reason"], "Unauthorized");
    assert_eq!(http.get("/version").await.status, 200);
    let authed = http
        .send(
            "GET",
            "/api/v1/namespaces/default",
            None,
            &[("authorization".into(), "Bearer s3cret".into())],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(authed.status, 200);
    let wrong = http
        .send(
            "GET",
            "/api/v1/namespaces/default",
            None,
            &[("authorization".into(), "Bearer nope".into())],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(wrong.status, 401);
    // The kubeconfig carries the token for clients (kubectl itself sends none over plain HTTP).
    assert!(
        std::fs::read_to_string(&kc)
            .unwrap()
            .contains("token: s3cret")
    );
}
