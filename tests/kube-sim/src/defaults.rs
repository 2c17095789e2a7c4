//! Server-side defaulting and admission on create, as recorded from kube-apiserver 1.32
//! (see the golden `02-node-create`, `04-pod-create-*`, `04-namespace-create`, `04-pdb-create`).

use serde_json::{Map, Value, json};

fn ensure_obj<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v[key].is_object() {
        v[key] = json!({});
    }
    v[key].as_object_mut().expect("object")
}

fn set_default(m: &mut Map<String, Value>, key: &str, value: Value) {
    if !m.contains_key(key) || m[key].is_null() {
        m.insert(key.to_string(), value);
    }
}

fn random_suffix(n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    (0..n)
        .map(|i| ALPHABET[bytes[i] as usize % ALPHABET.len()] as char)
        .collect()
}

/// A generated name suffix, like the server's `generateName` (5 characters).
pub fn generated_name(prefix: &str) -> String {
    format!("{prefix}{}", random_suffix(5))
}

fn default_pod_spec(spec: &mut Value) {
    if let Some(containers) = spec.get_mut("containers").and_then(Value::as_array_mut) {
        for c in containers {
            let m = c.as_object_mut().expect("container");
            set_default(m, "resources", json!({}));
            set_default(m, "terminationMessagePath", json!("/dev/termination-log"));
            set_default(m, "terminationMessagePolicy", json!("File"));
            let image = m.get("image").and_then(Value::as_str).unwrap_or_default();
            let tag = image.rsplit('/').next().unwrap_or_default();
            let policy = if image.contains('@') || (tag.contains(':') && !tag.ends_with(":latest"))
            {
                "IfNotPresent"
            } else {
                "Always"
            };
            set_default(m, "imagePullPolicy", json!(policy));
        }
    }
    let m = spec.as_object_mut().expect("spec");
    set_default(m, "restartPolicy", json!("Always"));
    set_default(m, "terminationGracePeriodSeconds", json!(30));
    set_default(m, "dnsPolicy", json!("ClusterFirst"));
    set_default(m, "securityContext", json!({}));
    set_default(m, "schedulerName", json!("default-scheduler"));
}

fn is_mirror_pod(pod: &Value) -> bool {
    pod["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string()
}

fn default_pod(pod: &mut Value) {
    let mirror = is_mirror_pod(pod);
    let spec = &mut pod["spec"];
    if !spec.is_object() {
        *spec = json!({});
    }
    if !mirror && spec.get("serviceAccountName").is_none() {
        // ServiceAccount admission: the token volume comes first, before the user's volumes.
        let vol_name = format!("kube-api-access-{}", random_suffix(5));
        let volume = json!({"name": vol_name, "projected": {"sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            {"configMap": {"name": "openshift-service-ca.crt", "items": [{"key": "service-ca.crt", "path": "service-ca.crt"}]}}
        ], "defaultMode": 420}});
        let mut vols = spec["volumes"].as_array().cloned().unwrap_or_default();
        vols.push(volume);
        let mut reordered = Map::new();
        reordered.insert("volumes".into(), Value::Array(vols));
        for (k, v) in std::mem::take(spec.as_object_mut().expect("spec")) {
            if k != "volumes" {
                reordered.insert(k, v);
            }
        }
        *spec = Value::Object(reordered);
        if let Some(containers) = spec.get_mut("containers").and_then(Value::as_array_mut) {
            for c in containers {
                let mut mounts = c["volumeMounts"].as_array().cloned().unwrap_or_default();
                mounts.push(json!({"name": vol_name, "readOnly": true,
                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}));
                c["volumeMounts"] = Value::Array(mounts);
            }
        }
    }
    default_pod_spec(spec);
    let m = spec.as_object_mut().expect("spec");
    if !mirror {
        set_default(m, "serviceAccountName", json!("default"));
        set_default(m, "serviceAccount", json!("default"));
    }
    // Keep nodeName where the server puts it (after serviceAccount).
    if let Some(node) = m.shift_remove("nodeName") {
        m.insert("nodeName".into(), node);
    }
    for k in ["securityContext", "schedulerName"] {
        if let Some(v) = m.shift_remove(k) {
            m.insert(k.into(), v);
        }
    }
    let mut tolerations = m
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        if !tolerations.iter().any(|t| t["key"] == key) {
            tolerations.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
    m.insert("tolerations".into(), Value::Array(tolerations));
    set_default(m, "priority", json!(0));
    set_default(m, "enableServiceLinks", json!(true));
    set_default(m, "preemptionPolicy", json!("PreemptLowerPriority"));
    // Status is owned by the kubelet: a create always starts Pending.
    pod["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
}

/// Fill in what the server adds on create. `keep_status` is for objects loaded from files,
/// which describe a state (e.g. a Ready pod) rather than a client request.
pub fn on_create(kind: &str, obj: &mut Value, keep_status: bool) {
    let saved_status = obj.get("status").cloned();
    match kind {
        "Node" => {
            let spec = ensure_obj(obj, "spec");
            let mut taints = spec
                .get("taints")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if !taints
                .iter()
                .any(|t| t["key"] == "node.kubernetes.io/not-ready")
                && !keep_status
            {
                taints.push(json!({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}));
            }
            if !taints.is_empty() {
                spec.insert("taints".into(), Value::Array(taints));
            }
            let status = ensure_obj(obj, "status");
            set_default(
                status,
                "daemonEndpoints",
                json!({"kubeletEndpoint": {"Port": 0}}),
            );
            set_default(
                status,
                "nodeInfo",
                json!({"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "",
                    "containerRuntimeVersion": "", "kubeletVersion": "", "kubeProxyVersion": "",
                    "operatingSystem": "", "architecture": ""}),
            );
            return;
        }
        "Pod" => default_pod(obj),
        "Namespace" => {
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let meta = ensure_obj(obj, "metadata");
            let labels = meta.entry("labels").or_insert(json!({}));
            labels["kubernetes.io/metadata.name"] = json!(name);
            let spec = ensure_obj(obj, "spec");
            set_default(spec, "finalizers", json!(["kubernetes"]));
            obj["status"] = json!({"phase": "Active"});
        }
        "PodDisruptionBudget" => {
            obj["status"] = json!({"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0});
        }
        "DaemonSet" => {
            let meta = ensure_obj(obj, "metadata");
            let ann = meta.entry("annotations").or_insert(json!({}));
            ann["deprecated.daemonset.template.generation"] = json!("1");
            let spec = ensure_obj(obj, "spec");
            set_default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            set_default(spec, "revisionHistoryLimit", json!(10));
            default_template(obj);
            obj["status"] = json!({"currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 0, "numberReady": 0});
        }
        "ReplicaSet" | "StatefulSet" => {
            let spec = ensure_obj(obj, "spec");
            set_default(spec, "replicas", json!(1));
            if kind == "StatefulSet" {
                set_default(spec, "podManagementPolicy", json!("OrderedReady"));
                set_default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
                );
                set_default(spec, "revisionHistoryLimit", json!(10));
            }
            default_template(obj);
            obj["status"] = json!({"replicas": 0, "availableReplicas": 0});
        }
        "Event" => {
            let m = obj.as_object_mut().expect("event");
            set_default(m, "eventTime", Value::Null);
            if !m.contains_key("eventTime") {
                m.insert("eventTime".into(), Value::Null);
            }
            set_default(m, "reportingComponent", json!(""));
            set_default(m, "reportingInstance", json!(""));
        }
        _ => {}
    }
    if keep_status {
        if let Some(s) = saved_status {
            obj["status"] = s;
        }
    }
}

fn default_template(obj: &mut Value) {
    let tmpl = &mut obj["spec"]["template"];
    if tmpl.is_object() {
        let meta = ensure_obj(tmpl, "metadata");
        set_default(meta, "creationTimestamp", Value::Null);
        if tmpl["spec"].is_object() {
            default_pod_spec(&mut tmpl["spec"]);
        }
    }
}

/// The zero-valued object of a kind that BOOKMARK events carry.
pub fn bookmark_object(kind: &str, api_version: &str, rv: u64, custom: bool) -> Value {
    let mut obj = json!({"kind": kind, "apiVersion": api_version,
        "metadata": {"resourceVersion": rv.to_string(), "creationTimestamp": null}});
    if custom {
        obj["metadata"] = json!({"resourceVersion": rv.to_string()});
        return obj;
    }
    match kind {
        "Node" => {
            obj["spec"] = json!({});
            obj["status"] = json!({"daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
                "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "",
                    "containerRuntimeVersion": "", "kubeletVersion": "", "kubeProxyVersion": "",
                    "operatingSystem": "", "architecture": ""}});
        }
        "Pod" => {
            obj["spec"] = json!({"containers": null});
            obj["status"] = json!({});
        }
        "Namespace" => {
            obj["spec"] = json!({});
            obj["status"] = json!({});
        }
        "PodDisruptionBudget" => {
            obj["spec"] = json!({});
            obj["status"] = json!({"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0});
        }
        "Event" => {
            obj["involvedObject"] = json!({});
            obj["source"] = json!({});
            obj["firstTimestamp"] = Value::Null;
            obj["lastTimestamp"] = Value::Null;
            obj["eventTime"] = Value::Null;
            obj["reportingComponent"] = json!("");
            obj["reportingInstance"] = json!("");
        }
        _ => {
            obj["spec"] = json!({});
            obj["status"] = json!({});
        }
    }
    obj
}

/// core/v1 Event (storage form) → events.k8s.io/v1 Event.
pub fn event_to_events_v1(core: &Value) -> Value {
    let mut out = Map::new();
    out.insert("kind".into(), json!("Event"));
    out.insert("apiVersion".into(), json!("events.k8s.io/v1"));
    out.insert("metadata".into(), core["metadata"].clone());
    out.insert(
        "eventTime".into(),
        core.get("eventTime").cloned().unwrap_or(Value::Null),
    );
    for (from, to) in [
        ("series", "series"),
        ("reportingComponent", "reportingController"),
        ("reportingInstance", "reportingInstance"),
        ("action", "action"),
        ("reason", "reason"),
        ("involvedObject", "regarding"),
        ("related", "related"),
        ("message", "note"),
        ("type", "type"),
    ] {
        if let Some(v) = core.get(from) {
            if (from == "reportingComponent" || from == "reportingInstance") && v == "" {
                continue;
            }
            out.insert(to.into(), v.clone());
        }
    }
    out.insert(
        "deprecatedSource".into(),
        core.get("source").cloned().unwrap_or(json!({})),
    );
    out.insert(
        "deprecatedFirstTimestamp".into(),
        core.get("firstTimestamp").cloned().unwrap_or(Value::Null),
    );
    out.insert(
        "deprecatedLastTimestamp".into(),
        core.get("lastTimestamp").cloned().unwrap_or(Value::Null),
    );
    if let Some(c) = core.get("count") {
        out.insert("deprecatedCount".into(), c.clone());
    }
    Value::Object(out)
}

/// events.k8s.io/v1 Event (request form) → core/v1 storage form.
pub fn events_v1_to_core(ev: &Value) -> Value {
    let mut out = Map::new();
    out.insert("kind".into(), json!("Event"));
    out.insert("apiVersion".into(), json!("v1"));
    out.insert("metadata".into(), ev["metadata"].clone());
    for (from, to) in [
        ("regarding", "involvedObject"),
        ("reason", "reason"),
        ("note", "message"),
    ] {
        if let Some(v) = ev.get(from) {
            out.insert(to.into(), v.clone());
        }
    }
    out.insert(
        "source".into(),
        ev.get("deprecatedSource").cloned().unwrap_or(json!({})),
    );
    out.insert(
        "firstTimestamp".into(),
        ev.get("deprecatedFirstTimestamp")
            .cloned()
            .unwrap_or(Value::Null),
    );
    out.insert(
        "lastTimestamp".into(),
        ev.get("deprecatedLastTimestamp")
            .cloned()
            .unwrap_or(Value::Null),
    );
    if let Some(c) = ev.get("deprecatedCount") {
        out.insert("count".into(), c.clone());
    }
    for (from, to) in [
        ("type", "type"),
        ("eventTime", "eventTime"),
        ("series", "series"),
        ("action", "action"),
        ("related", "related"),
        ("reportingController", "reportingComponent"),
        ("reportingInstance", "reportingInstance"),
    ] {
        if let Some(v) = ev.get(from) {
            out.insert(to.into(), v.clone());
        }
    }
    Value::Object(out)
}
