//! `meta.k8s.io/v1` Table output for `kubectl get` (server-side printing): the built-in printers
//! for the types kube-sim serves and the CRDs' `additionalPrinterColumns`.

use serde_json::{Map, Value, json};

use crate::resources::ResourceType;
use crate::store::parse_time;

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

fn col(name: &str, ty: &str, format: &str, desc: &str, priority: i64) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": desc, "priority": priority})
}

/// Kubernetes' human duration (`6m47s`, `3h5m`, `2d3h`, `45d`).
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    if s < 120 {
        return format!("{s}s");
    }
    let m = s / 60;
    if m < 10 {
        return if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        };
    }
    if m < 180 {
        return format!("{m}m");
    }
    let h = s / 3600;
    if h < 8 {
        return if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        };
    }
    if h < 48 {
        return format!("{h}h");
    }
    let d = h / 24;
    if h < 24 * 8 {
        return if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        };
    }
    if d < 365 * 2 {
        return format!("{d}d");
    }
    format!("{}y", d / 365)
}

fn age(ts: &Value) -> String {
    match ts.as_str().and_then(parse_time) {
        Some(t) => human_duration((chrono::Utc::now() - t).num_seconds()),
        None => "<unknown>".into(),
    }
}

fn node_row(n: &Value) -> Vec<Value> {
    let ready = n["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| {
            if c["status"] == "True" {
                "Ready"
            } else {
                "NotReady"
            }
        })
        .unwrap_or("Unknown");
    let mut status = ready.to_string();
    if n["spec"]["unschedulable"] == true {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = n["metadata"]["labels"]
        .as_object()
        .map(|l| {
            l.iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix("node-role.kubernetes.io/")
                        .map(String::from)
                        .or_else(|| {
                            (k == "kubernetes.io/role")
                                .then(|| v.as_str().unwrap_or_default().to_string())
                        })
                })
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    };
    let addr = |ty: &str| {
        n["status"]["addresses"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["type"] == ty))
            .and_then(|x| x["address"].as_str())
            .unwrap_or("<none>")
            .to_string()
    };
    let info = |k: &str| {
        let v = n["status"]["nodeInfo"][k].as_str().unwrap_or_default();
        if v.is_empty() {
            "<unknown>".to_string()
        } else {
            v.to_string()
        }
    };
    vec![
        n["metadata"]["name"].clone(),
        json!(status),
        json!(roles),
        json!(age(&n["metadata"]["creationTimestamp"])),
        json!(
            n["status"]["nodeInfo"]["kubeletVersion"]
                .as_str()
                .unwrap_or_default()
        ),
        json!(addr("InternalIP")),
        json!(addr("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

fn pod_row(p: &Value) -> Vec<Value> {
    let total = p["spec"]["containers"].as_array().map_or(0, Vec::len);
    let statuses = p["status"]["containerStatuses"].as_array();
    let ready = statuses.map_or(0, |s| s.iter().filter(|c| c["ready"] == true).count());
    let restarts: i64 = statuses.map_or(0, |s| {
        s.iter()
            .map(|c| c["restartCount"].as_i64().unwrap_or(0))
            .sum()
    });
    let mut status = p["status"]["reason"]
        .as_str()
        .or(p["status"]["phase"].as_str())
        .unwrap_or("Unknown")
        .to_string();
    if p["metadata"]["deletionTimestamp"].is_string() {
        status = "Terminating".into();
    }
    vec![
        p["metadata"]["name"].clone(),
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts),
        json!(age(&p["metadata"]["creationTimestamp"])),
        json!(p["status"]["podIP"].as_str().unwrap_or("<none>")),
        json!(p["spec"]["nodeName"].as_str().unwrap_or("<none>")),
        json!("<none>"),
        json!("<none>"),
    ]
}

fn int_or_string(v: &Value) -> String {
    match v {
        Value::Null => "N/A".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Evaluate the small JSONPath subset CRD printer columns use: `.a.b`, `.a\.b`, `[N]`,
/// `[?(@.type=="X")]`.
pub fn json_path(obj: &Value, path: &str) -> Option<Value> {
    let mut cur = vec![obj.clone()];
    let chars: Vec<char> = path.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                let mut name = String::new();
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        name.push(chars[i + 1]);
                        i += 2;
                        continue;
                    }
                    name.push(chars[i]);
                    i += 1;
                }
                cur = cur.iter().filter_map(|v| v.get(&name).cloned()).collect();
            }
            '[' => {
                let end = chars[i..].iter().position(|c| *c == ']')? + i;
                let inner: String = chars[i + 1..end].iter().collect();
                i = end + 1;
                if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                    let (field, want) = filter.split_once("==")?;
                    let want = want.trim().trim_matches('"').trim_matches('\'');
                    cur = cur
                        .iter()
                        .filter_map(Value::as_array)
                        .flatten()
                        .filter(|item| item.get(field.trim()).and_then(Value::as_str) == Some(want))
                        .cloned()
                        .collect();
                } else if inner == "*" {
                    cur = cur
                        .iter()
                        .filter_map(Value::as_array)
                        .flatten()
                        .cloned()
                        .collect();
                } else {
                    let idx: usize = inner.parse().ok()?;
                    cur = cur.iter().filter_map(|v| v.get(idx).cloned()).collect();
                }
            }
            _ => i += 1,
        }
    }
    match cur.len() {
        0 => None,
        1 => cur.pop(),
        _ => Some(Value::Array(cur)),
    }
}

fn columns_and_rows(rt: &ResourceType, objects: &[Value]) -> (Vec<Value>, Vec<Vec<Value>>) {
    let name_col = col("Name", "string", "name", NAME_DESC, 0);
    let age_col = col("Age", "string", "", AGE_DESC, 0);
    if let Some(custom) = &rt.custom {
        let mut cols = vec![name_col];
        let pcs = &custom.printer_columns;
        for pc in pcs {
            cols.push(json!({"name": pc["name"], "type": pc["type"], "format": pc.get("format").cloned().unwrap_or(json!("")),
                "description": pc.get("description").cloned().unwrap_or(json!("")), "priority": pc.get("priority").cloned().unwrap_or(json!(0))}));
        }
        if pcs.is_empty() {
            cols.push(age_col);
        }
        let rows = objects
            .iter()
            .map(|o| {
                let mut cells = vec![o["metadata"]["name"].clone()];
                for pc in pcs {
                    let v = json_path(o, pc["jsonPath"].as_str().unwrap_or_default());
                    cells.push(match (pc["type"].as_str(), v) {
                        (Some("date"), Some(v)) => json!(age(&v)),
                        (_, Some(Value::Array(a))) => json!(
                            a.iter()
                                .map(|x| x.as_str().map(String::from).unwrap_or(x.to_string()))
                                .collect::<Vec<_>>()
                                .join(",")
                        ),
                        (_, Some(v)) => v,
                        (_, None) => Value::Null,
                    });
                }
                if pcs.is_empty() {
                    cells.push(json!(age(&o["metadata"]["creationTimestamp"])));
                }
                cells
            })
            .collect();
        return (cols, rows);
    }
    match rt.kind.as_str() {
        "Node" => (
            vec![
                name_col,
                col("Status", "string", "", "The status of the node", 0),
                col("Roles", "string", "", "The roles of the node", 0),
                age_col,
                col(
                    "Version",
                    "string",
                    "",
                    "Kubelet Version reported by the node.",
                    0,
                ),
                col(
                    "Internal-IP",
                    "string",
                    "",
                    "List of addresses reachable to the node.",
                    1,
                ),
                col(
                    "External-IP",
                    "string",
                    "",
                    "List of addresses reachable to the node.",
                    1,
                ),
                col(
                    "OS-Image",
                    "string",
                    "",
                    "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
                    1,
                ),
                col(
                    "Kernel-Version",
                    "string",
                    "",
                    "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
                    1,
                ),
                col(
                    "Container-Runtime",
                    "string",
                    "",
                    "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
                    1,
                ),
            ],
            objects.iter().map(node_row).collect(),
        ),
        "Pod" => (
            vec![
                name_col,
                col(
                    "Ready",
                    "string",
                    "",
                    "The aggregate readiness state of this pod for accepting traffic.",
                    0,
                ),
                col(
                    "Status",
                    "string",
                    "",
                    "The aggregate status of the containers in this pod.",
                    0,
                ),
                col(
                    "Restarts",
                    "string",
                    "",
                    "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
                    0,
                ),
                age_col,
                col(
                    "IP",
                    "string",
                    "",
                    "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
                    1,
                ),
                col(
                    "Node",
                    "string",
                    "",
                    "NodeName is a request to schedule this pod onto a specific node.",
                    1,
                ),
                col(
                    "Nominated Node",
                    "string",
                    "",
                    "nominatedNodeName is set only when this pod preempts other pods on the node.",
                    1,
                ),
                col(
                    "Readiness Gates",
                    "string",
                    "",
                    "If specified, all readiness gates will be evaluated for pod readiness.",
                    1,
                ),
            ],
            objects.iter().map(pod_row).collect(),
        ),
        "Namespace" => (
            vec![
                name_col,
                col("Status", "string", "", "The status of the namespace", 0),
                age_col,
            ],
            objects
                .iter()
                .map(|o| {
                    vec![
                        o["metadata"]["name"].clone(),
                        o["status"]["phase"].clone(),
                        json!(age(&o["metadata"]["creationTimestamp"])),
                    ]
                })
                .collect(),
        ),
        "PodDisruptionBudget" => (
            vec![
                name_col,
                col(
                    "Min Available",
                    "string",
                    "",
                    "The minimum number of pods that must be available.",
                    0,
                ),
                col(
                    "Max Unavailable",
                    "string",
                    "",
                    "The maximum number of pods that may be unavailable.",
                    0,
                ),
                col(
                    "Allowed Disruptions",
                    "integer",
                    "",
                    "Calculated number of pods that may be disrupted at this time.",
                    0,
                ),
                age_col,
            ],
            objects
                .iter()
                .map(|o| {
                    vec![
                        o["metadata"]["name"].clone(),
                        json!(int_or_string(&o["spec"]["minAvailable"])),
                        json!(int_or_string(&o["spec"]["maxUnavailable"])),
                        o["status"]["disruptionsAllowed"].clone(),
                        json!(age(&o["metadata"]["creationTimestamp"])),
                    ]
                })
                .collect(),
        ),
        "Event" => (
            vec![
                col(
                    "Last Seen",
                    "string",
                    "",
                    "Time when this Event was last seen",
                    0,
                ),
                col(
                    "Type",
                    "string",
                    "",
                    "Type of this event (Normal, Warning), new types could be added in the future.",
                    0,
                ),
                col(
                    "Reason",
                    "string",
                    "",
                    "Reason is why the action was taken. It is human-readable. This field cannot be empty for new Events and it can have at most 128 characters.",
                    0,
                ),
                col(
                    "Object",
                    "string",
                    "",
                    "The object that this event is about.",
                    0,
                ),
                col(
                    "Message",
                    "string",
                    "",
                    "A human-readable description of the status of this operation.",
                    0,
                ),
            ],
            objects
                .iter()
                .map(|o| {
                    let io = if o["involvedObject"].is_object() {
                        &o["involvedObject"]
                    } else {
                        &o["regarding"]
                    };
                    let last = if o["lastTimestamp"].is_string() {
                        &o["lastTimestamp"]
                    } else {
                        &o["eventTime"]
                    };
                    vec![
                        json!(age(last)),
                        o["type"].clone(),
                        o["reason"].clone(),
                        json!(format!(
                            "{}/{}",
                            io["kind"].as_str().unwrap_or_default().to_lowercase(),
                            io["name"].as_str().unwrap_or_default()
                        )),
                        o.get("message")
                            .or(o.get("note"))
                            .cloned()
                            .unwrap_or(json!("")),
                    ]
                })
                .collect(),
        ),
        _ => (
            vec![name_col, age_col],
            objects
                .iter()
                .map(|o| {
                    vec![
                        o["metadata"]["name"].clone(),
                        json!(age(&o["metadata"]["creationTimestamp"])),
                    ]
                })
                .collect(),
        ),
    }
}

/// The Table for `objects` (already rendered in the requested version).
pub fn table(
    rt: &ResourceType,
    objects: &[Value],
    list_rv: &str,
    cont: Option<&str>,
    include_object: &str,
) -> Value {
    let (cols, rows) = columns_and_rows(rt, objects);
    let rows: Vec<Value> = rows
        .into_iter()
        .zip(objects)
        .map(|(cells, o)| {
            let object = match include_object {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}),
            };
            let mut row = Map::new();
            row.insert("cells".into(), Value::Array(cells));
            if !object.is_null() {
                row.insert("object".into(), object);
            }
            Value::Object(row)
        })
        .collect();
    let mut meta = Map::new();
    meta.insert("resourceVersion".into(), json!(list_rv));
    if let Some(c) = cont {
        meta.insert("continue".into(), json!(c));
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": cols, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(407), "6m47s");
        assert_eq!(human_duration(3600 * 3 + 300), "3h5m");
        assert_eq!(human_duration(86400 * 3), "3d");
    }

    #[test]
    fn json_path_filter() {
        let o = json!({"status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Updated", "status": "True"}]},
            "metadata": {"annotations": {"a.b/c": "x"}}});
        assert_eq!(
            json_path(&o, r#".status.conditions[?(@.type=="Updated")].status"#),
            Some(json!("True"))
        );
        assert_eq!(
            json_path(&o, r".metadata.annotations.a\.b/c"),
            Some(json!("x"))
        );
        assert_eq!(json_path(&o, ".spec.missing"), None);
    }
}
