//! `metadata.managedFields`: who set which field. kube-sim tracks one entry per (manager,
//! operation, subresource), with `fieldsV1` sets built like the real server's: `f:<field>`,
//! `k:{"type":"Ready"}` for keyed list items, `v:"x"` for set-like lists, `.` for owned maps.
//! Server-side apply uses the previous Apply set of a manager to remove fields it stopped applying.

use serde_json::{Map, Value, json};

use crate::patch::{ListStrategy, list_strategy};

/// List item keys of the lists kube-sim treats as associative (built-in tags + CRD list-map keys).
fn item_key(field: &str, item: &Value) -> Option<String> {
    match list_strategy(field) {
        ListStrategy::MergeByKey(k) => {
            let mut m = Map::new();
            m.insert(k.to_string(), item.get(k)?.clone());
            Some(format!("k:{}", Value::Object(m)))
        }
        ListStrategy::MergePrimitive => Some(format!("v:{item}")),
        ListStrategy::Atomic => None,
    }
}

/// The field set of a whole value. `dot_maps` marks every non-empty nested map as owned (`.`),
/// as Update operations do; Apply sets only mark list items.
pub fn field_set(v: &Value, dot_maps: bool) -> Value {
    let mut out = Map::new();
    if let Value::Object(m) = v {
        for (k, child) in m {
            out.insert(format!("f:{k}"), child_set(k, child, dot_maps));
        }
    }
    Value::Object(out)
}

/// A whole object's set: `metadata` always exists, so it is never marked owned itself.
pub fn object_set(v: &Value, dot_maps: bool) -> Value {
    let mut s = field_set(v, dot_maps);
    if let Some(meta) = s.get_mut("f:metadata").and_then(Value::as_object_mut) {
        meta.shift_remove(".");
    }
    s
}

fn child_set(field: &str, child: &Value, dot_maps: bool) -> Value {
    match child {
        Value::Object(m) if !m.is_empty() => {
            let mut s = field_set(child, dot_maps);
            if dot_maps {
                let mut with_dot = Map::new();
                with_dot.insert(".".into(), json!({}));
                with_dot.extend(s.as_object_mut().map(std::mem::take).unwrap_or_default());
                s = Value::Object(with_dot);
            }
            s
        }
        Value::Array(items) => {
            let mut out = Map::new();
            for item in items {
                if let Some(k) = item_key(field, item) {
                    let mut entry = Map::new();
                    entry.insert(".".into(), json!({}));
                    if item.is_object() {
                        entry.extend(
                            field_set(item, dot_maps)
                                .as_object()
                                .cloned()
                                .unwrap_or_default(),
                        );
                    } else {
                        entry.clear();
                    }
                    out.insert(k, Value::Object(entry));
                } else {
                    return json!({});
                }
            }
            if dot_maps && !out.is_empty() {
                let mut with_dot = Map::new();
                with_dot.insert(".".into(), json!({}));
                with_dot.extend(out);
                return Value::Object(with_dot);
            }
            Value::Object(out)
        }
        _ => json!({}),
    }
}

/// The field set of what changed from `old` to `new` (added or modified fields).
pub fn changed_set(old: &Value, new: &Value) -> Value {
    let mut out = Map::new();
    let (Some(nm), om) = (new.as_object(), old.as_object()) else {
        return Value::Object(out);
    };
    for (k, nv) in nm {
        let ov = om.and_then(|m| m.get(k));
        if ov == Some(nv) {
            continue;
        }
        let entry = match (ov, nv) {
            (Some(Value::Object(_)), Value::Object(_)) => changed_set(ov.expect("some"), nv),
            (_, Value::Array(items))
                if items.iter().all(|i| item_key(k, i).is_some()) && !items.is_empty() =>
            {
                let old_items = ov.and_then(Value::as_array);
                let mut m = Map::new();
                for item in items {
                    let key = item_key(k, item).expect("keyed");
                    let before = old_items.and_then(|o| {
                        o.iter()
                            .find(|x| item_key(k, x).as_deref() == Some(key.as_str()))
                    });
                    if before == Some(item) {
                        continue;
                    }
                    let mut e = Map::new();
                    if item.is_object() {
                        e.insert(".".into(), json!({}));
                        e.extend(
                            field_set(item, true)
                                .as_object()
                                .cloned()
                                .unwrap_or_default(),
                        );
                    }
                    m.insert(key, Value::Object(e));
                }
                if ov.is_none() {
                    let mut with_dot = Map::new();
                    with_dot.insert(".".into(), json!({}));
                    with_dot.extend(m);
                    m = with_dot;
                }
                Value::Object(m)
            }
            (_, other) => child_set(k, other, true),
        };
        out.insert(format!("f:{k}"), entry);
    }
    Value::Object(out)
}

/// Union of two field sets.
pub fn union(a: &mut Value, b: &Value) {
    let (Some(am), Some(bm)) = (a.as_object_mut(), b.as_object()) else {
        return;
    };
    for (k, bv) in bm {
        match am.get_mut(k) {
            Some(av) => union(av, bv),
            None => {
                am.insert(k.clone(), bv.clone());
            }
        }
    }
}

/// Remove from `a` every leaf present in `b`.
pub fn subtract(a: &mut Value, b: &Value) {
    let (Some(am), Some(bm)) = (a.as_object_mut(), b.as_object()) else {
        return;
    };
    for (k, bv) in bm {
        if k == "." {
            continue;
        }
        let leaf = bv
            .as_object()
            .is_none_or(|m| m.is_empty() || (m.len() == 1 && m.contains_key(".")));
        if leaf {
            am.shift_remove(k);
        } else if let Some(av) = am.get_mut(k) {
            subtract(av, bv);
            if av
                .as_object()
                .is_some_and(|m| m.is_empty() || (m.len() == 1 && m.contains_key(".")))
            {
                am.shift_remove(k);
            }
        }
    }
}

/// Remove from the live object `obj` the fields named by the set `s` (fields an applier dropped).
pub fn remove_fields(obj: &mut Value, s: &Value) {
    let Some(sm) = s.as_object() else { return };
    for (k, sub) in sm {
        if let Some(field) = k.strip_prefix("f:") {
            let Some(map) = obj.as_object_mut() else {
                continue;
            };
            let leafish = sub
                .as_object()
                .is_none_or(|m| m.is_empty() || (m.len() == 1 && m.contains_key(".")));
            if leafish {
                map.shift_remove(field);
            } else if let Some(child) = map.get_mut(field) {
                match child {
                    Value::Array(items) => {
                        for (ik, isub) in sub.as_object().into_iter().flatten() {
                            let whole = isub.as_object().is_none_or(|m| m.contains_key("."));
                            if let Some(pos) = items
                                .iter()
                                .position(|it| item_key(field, it).as_deref() == Some(ik.as_str()))
                            {
                                if whole {
                                    items.remove(pos);
                                } else {
                                    remove_fields(&mut items[pos], isub);
                                }
                            }
                        }
                    }
                    _ => {
                        remove_fields(child, sub);
                        // A struct left empty by the removal goes too (structured-merge-diff's
                        // removingWalker returns no map when none of it is left; kube 1.32).
                        if child.as_object().is_some_and(|m| m.is_empty()) {
                            map.shift_remove(field);
                        }
                    }
                }
            }
        }
    }
}

fn is_empty_set(v: &Value) -> bool {
    v.as_object().is_none_or(|m| m.is_empty())
}

/// Record an operation in `obj.metadata.managedFields`.
pub fn record(
    obj: &mut Value,
    manager: &str,
    operation: &str,
    subresource: Option<&str>,
    api_version: &str,
    set: Value,
    replace_set: bool,
) {
    let time = crate::store::now_rfc3339();
    let meta = obj["metadata"].as_object_mut().expect("metadata");
    let mut entries: Vec<Value> = match meta.get("managedFields") {
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    // Fields now owned by this manager leave every other manager's set.
    for e in entries.iter_mut() {
        let same = e["manager"] == manager
            && e["operation"] == operation
            && e["subresource"].as_str() == subresource;
        if !same {
            if let Some(fs) = e.get_mut("fieldsV1") {
                subtract(fs, &set);
            }
        }
    }
    entries.retain(|e| !is_empty_set(&e["fieldsV1"]));
    let pos = entries.iter().position(|e| {
        e["manager"] == manager
            && e["operation"] == operation
            && e["subresource"].as_str() == subresource
    });
    let mut entry = match pos {
        Some(i) => entries.remove(i),
        None => json!({"manager": manager, "operation": operation, "apiVersion": api_version,
            "time": "", "fieldsType": "FieldsV1", "fieldsV1": {}}),
    };
    if replace_set {
        entry["fieldsV1"] = set;
    } else {
        union(&mut entry["fieldsV1"], &set);
    }
    entry["time"] = json!(time);
    entry["apiVersion"] = json!(api_version);
    if let Some(sub) = subresource {
        entry["subresource"] = json!(sub);
    }
    if !is_empty_set(&entry["fieldsV1"]) {
        entries.push(entry);
    }
    meta.insert("managedFields".into(), Value::Array(entries));
}

/// The previous Apply set of `manager` for `subresource`, if any.
pub fn previous_apply(obj: &Value, manager: &str, subresource: Option<&str>) -> Option<Value> {
    obj["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find_map(|e| {
            (e["manager"] == manager
                && e["operation"] == "Apply"
                && e["subresource"].as_str() == subresource)
                .then(|| e["fieldsV1"].clone())
        })
}

/// The field set of a request body, restricted to what clients own (no name/uid/RV).
pub fn request_set(body: &Value, dot_maps: bool) -> Value {
    let mut trimmed = body.clone();
    if let Some(m) = trimmed.as_object_mut() {
        m.shift_remove("apiVersion");
        m.shift_remove("kind");
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.retain(|k, _| {
                matches!(
                    k.as_str(),
                    "labels" | "annotations" | "ownerReferences" | "finalizers"
                )
            });
            if meta.is_empty() {
                m.shift_remove("metadata");
            }
        }
    }
    drop_empty(&mut trimmed);
    object_set(&trimmed, dot_maps)
}

fn drop_empty(v: &mut Value) {
    if let Value::Object(m) = v {
        for child in m.values_mut() {
            drop_empty(child);
        }
        m.retain(|_, c| !(c.is_null() || c.as_object().is_some_and(|x| x.is_empty())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_set_of_node_labels_matches_server_shape() {
        let body = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node1",
            "labels": {"kubernetes.io/hostname": "node1", "node-role.kubernetes.io/worker": ""}}, "spec": {}});
        assert_eq!(
            request_set(&body, true),
            json!({"f:metadata": {"f:labels": {".": {}, "f:kubernetes.io/hostname": {},
                "f:node-role.kubernetes.io/worker": {}}}})
        );
    }

    #[test]
    fn apply_set_marks_keyed_items_and_removal_drops_them() {
        let applied = json!({"status": {"conditions": [{"type": "A", "status": "True"}]}});
        let s = field_set(&applied, false);
        assert_eq!(
            s,
            json!({"f:status": {"f:conditions": {"k:{\"type\":\"A\"}": {".": {}, "f:status": {}, "f:type": {}}}}})
        );
        let mut live = json!({"status": {"conditions": [{"type": "A"}, {"type": "B"}]}});
        remove_fields(&mut live, &s);
        assert_eq!(live, json!({"status": {"conditions": [{"type": "B"}]}}));
        // A struct whose last field is removed is removed with it.
        let s = field_set(
            &json!({"spec": {"configImage": {"desiredImage": "x"}}}),
            false,
        );
        let mut live =
            json!({"spec": {"configImage": {"desiredImage": "x"}, "pool": {"name": "w"}}});
        remove_fields(&mut live, &s);
        assert_eq!(live, json!({"spec": {"pool": {"name": "w"}}}));
    }
}
