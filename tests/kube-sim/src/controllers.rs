//! The controllers the real cluster would run that matter to drains: the disruption controller
//! (PDB status), the kubelet's side of pod termination and readiness, and a StatefulSet
//! controller that recreates a deleted pod under the same name with a new UID.

use serde_json::{Value, json};
use tokio::time::{Duration, Instant};

use crate::selectors::LabelSelector;
use crate::store::{State, key_of, now_rfc3339, object_key};

pub const PODS: &str = "pods";
pub const PDBS: &str = "poddisruptionbudgets.policy";

pub fn is_pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

pub fn is_terminating(obj: &Value) -> bool {
    obj["metadata"]["deletionTimestamp"].is_string()
}

/// policy/v1: a missing selector selects nothing, an empty one selects every pod.
pub fn pdb_selects(pdb: &Value, pod: &Value) -> bool {
    let sel = &pdb["spec"]["selector"];
    if !sel.is_object() {
        return false;
    }
    pdb["metadata"]["namespace"] == pod["metadata"]["namespace"]
        && LabelSelector::from_object(sel).matches(&pod["metadata"]["labels"])
}

fn scaled(v: &Value, total: i64, round_up: bool) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let pct: f64 = s.strip_suffix('%')?.parse().ok()?;
            let x = pct * total as f64 / 100.0;
            Some(if round_up { x.ceil() } else { x.floor() } as i64)
        }
        _ => None,
    }
}

/// The expected pod count: the sum of the owning controllers' replicas when they are known
/// (what the real controller does for percentages and maxUnavailable), else the pod count.
fn expected_count(state: &State, pdb: &Value, pods: &[&Value]) -> i64 {
    let int_min_available =
        pdb["spec"]["minAvailable"].is_i64() || pdb["spec"]["minAvailable"].is_u64();
    if int_min_available {
        return pods.len() as i64;
    }
    let mut owners: Vec<(String, String)> = Vec::new();
    for pod in pods {
        let Some(owner) = pod["metadata"]["ownerReferences"]
            .as_array()
            .and_then(|o| o.iter().find(|r| r["controller"] == true))
        else {
            return pods.len() as i64;
        };
        let storage = match owner["kind"].as_str().unwrap_or_default() {
            "ReplicaSet" => "replicasets.apps",
            "StatefulSet" => "statefulsets.apps",
            _ => return pods.len() as i64,
        };
        let key = object_key(
            pod["metadata"]["namespace"].as_str(),
            owner["name"].as_str().unwrap_or_default(),
        );
        if !owners.contains(&(storage.to_string(), key.clone())) {
            owners.push((storage.to_string(), key));
        }
    }
    let mut total = 0;
    for (storage, key) in owners {
        match state
            .get(&storage, &key)
            .and_then(|o| o["spec"]["replicas"].as_i64())
        {
            Some(r) => total += r,
            None => return pods.len() as i64,
        }
    }
    total
}

/// What the disruption controller would write into a PDB's status now.
pub fn computed_pdb_status(state: &State, pdb: &Value) -> Value {
    let pods: Vec<&Value> = state
        .list(PODS)
        .map(|(_, p)| p)
        .filter(|p| pdb_selects(pdb, p))
        .collect();
    let expected = expected_count(state, pdb, &pods);
    let healthy = pods
        .iter()
        .filter(|p| is_pod_ready(p) && !is_terminating(p))
        .count() as i64;
    let spec = &pdb["spec"];
    let desired = if let Some(min) = spec.get("minAvailable").filter(|v| !v.is_null()) {
        scaled(min, expected, true).unwrap_or(0)
    } else if let Some(max) = spec.get("maxUnavailable").filter(|v| !v.is_null()) {
        (expected - scaled(max, expected, true).unwrap_or(0)).max(0)
    } else {
        expected
    };
    let allowed = (healthy - desired).max(0);
    let generation = pdb["metadata"]["generation"].as_i64().unwrap_or(1);
    let (cond_status, reason) = if allowed > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    let previous = pdb["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "DisruptionAllowed"));
    let transition = match previous {
        Some(c) if c["status"] == cond_status => c["lastTransitionTime"].clone(),
        _ => json!(now_rfc3339()),
    };
    json!({
        "observedGeneration": generation,
        "disruptionsAllowed": allowed,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "conditions": [{"type": "DisruptionAllowed", "status": cond_status, "observedGeneration": generation,
            "lastTransitionTime": transition, "reason": reason, "message": ""}]
    })
}

/// Recompute the status of every PDB in `namespace` and write those that changed.
pub fn reconcile_pdbs(state: &mut State, namespace: &str) {
    let pdbs: Vec<Value> = state
        .list(PDBS)
        .map(|(_, p)| p.clone())
        .filter(|p| p["metadata"]["namespace"] == namespace)
        .collect();
    for mut pdb in pdbs {
        let status = computed_pdb_status(state, &pdb);
        if pdb["status"] != status {
            pdb["status"] = status;
            state.replace(PDBS, pdb);
        }
    }
}

/// Finish terminating pods whose grace period is over: one MODIFIED (grace 0) then DELETED,
/// as a kubelet's final `gracePeriodSeconds=0` DELETE produces.
pub fn finalize_due_pods(state: &mut State, now: Instant) -> Option<Instant> {
    let due: Vec<(String, String)> = state
        .pod_deadlines
        .iter()
        .filter(|(_, at)| **at <= now)
        .map(|(k, _)| k.clone())
        .collect();
    for (key, uid) in due {
        state.pod_deadlines.remove(&(key.clone(), uid.clone()));
        let Some(pod) = state.get(PODS, &key).cloned() else {
            continue;
        };
        if pod["metadata"]["uid"] != uid.as_str() {
            continue;
        }
        finish_pod_deletion(state, pod);
    }
    state.pod_deadlines.values().min().copied()
}

/// Delete a pod for good now (MODIFIED with grace 0, then DELETED), returning the final copy.
pub fn finish_pod_deletion(state: &mut State, mut pod: Value) -> Value {
    let ns = pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    pod["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
    pod["metadata"]["deletionGracePeriodSeconds"] = json!(0);
    crate::store::order_builtin(&mut pod);
    let pod = state.replace(PODS, pod);
    let key = key_of(&pod);
    let deleted = state.remove(PODS, &key).unwrap_or(pod);
    reconcile_pdbs(state, &ns);
    recreate_statefulset_pod(state, &deleted);
    deleted
}

/// Mark a pod terminating for `grace` seconds and tell the kubelet when to finish it.
pub fn start_graceful_deletion(state: &mut State, mut pod: Value, grace: i64) -> Value {
    pod["metadata"]["deletionTimestamp"] = json!(crate::store::rfc3339_after(grace));
    pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
    crate::store::order_builtin(&mut pod);
    let ns = pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let pod = state.replace(PODS, pod);
    let uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    state.pod_deadlines.insert(
        (key_of(&pod), uid),
        Instant::now() + Duration::from_secs(grace.max(0) as u64),
    );
    reconcile_pdbs(state, &ns);
    pod
}

/// A StatefulSet keeps its pod names: a deleted pod comes back with a new UID (unscheduled, as
/// the scheduler would not put it back on a cordoned node).
fn recreate_statefulset_pod(state: &mut State, deleted: &Value) {
    let Some(owner) = deleted["metadata"]["ownerReferences"]
        .as_array()
        .and_then(|o| {
            o.iter()
                .find(|r| r["controller"] == true && r["kind"] == "StatefulSet")
        })
    else {
        return;
    };
    let ns = deleted["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default();
    let sts_key = object_key(Some(ns), owner["name"].as_str().unwrap_or_default());
    if state.get("statefulsets.apps", &sts_key).is_none() {
        return;
    }
    let mut pod = deleted.clone();
    let meta = pod["metadata"].as_object_mut().expect("metadata");
    for k in [
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "resourceVersion",
        "managedFields",
    ] {
        meta.shift_remove(k);
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    if let Some(spec) = pod["spec"].as_object_mut() {
        spec.shift_remove("nodeName");
    }
    pod["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
    state.insert(PODS, pod);
    reconcile_pdbs(state, ns);
}

/// The kubelet reporting a pod Ready (Running) or not ready.
pub fn set_pod_ready(state: &mut State, key: &str, ready: bool) -> Option<Value> {
    let mut pod = state.get(PODS, key)?.clone();
    let status = if ready { "True" } else { "False" };
    let t = now_rfc3339();
    let mut conds = Vec::new();
    for ty in [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ] {
        let s = if matches!(ty, "Ready" | "ContainersReady") {
            status
        } else {
            "True"
        };
        conds
            .push(json!({"type": ty, "status": s, "lastProbeTime": null, "lastTransitionTime": t}));
    }
    // Keep conditions other parties added (DisruptionTarget).
    if let Some(existing) = pod["status"]["conditions"].as_array() {
        for c in existing {
            if !conds.iter().any(|n| n["type"] == c["type"]) {
                conds.push(c.clone());
            }
        }
    }
    pod["status"]["phase"] = json!("Running");
    pod["status"]["conditions"] = json!(conds);
    let ns = pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let pod = state.replace(PODS, pod);
    reconcile_pdbs(state, &ns);
    Some(pod)
}
