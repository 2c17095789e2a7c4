//! The three patch flavours of PATCH: JSON merge patch (RFC 7386), JSON patch (RFC 6902, with the
//! API server's leniency) and strategic merge patch (the subset clients actually send).

use serde_json::{Map, Value};

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    let entry = t.entry(k.clone()).or_insert(Value::Null);
                    merge_patch(entry, v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[derive(Debug, PartialEq)]
pub enum JsonPatchError {
    /// A `test` op failed: the server answers the generic 422.
    TestFailed,
    /// Anything else (bad pointer, missing path): 422 too, with a message.
    Invalid(String),
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<Vec<String>, JsonPatchError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    if !path.starts_with('/') {
        return Err(JsonPatchError::Invalid(format!(
            "invalid JSON pointer {path:?}"
        )));
    }
    Ok(path[1..].split('/').map(unescape).collect())
}

fn get_mut<'a>(root: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    let mut cur = root;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m.get_mut(t)?,
            Value::Array(a) => a.get_mut(t.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn add_at(
    root: &mut Value,
    tokens: &[String],
    value: Value,
    path: &str,
) -> Result<(), JsonPatchError> {
    let Some((last, parent_tokens)) = tokens.split_last() else {
        *root = value;
        return Ok(());
    };
    let parent = get_mut(root, parent_tokens).ok_or_else(|| {
        JsonPatchError::Invalid(format!(
            "add operation does not apply: doc is missing path: \"{path}\""
        ))
    })?;
    match parent {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
                return Ok(());
            }
            let idx: i64 = last
                .parse()
                .map_err(|_| JsonPatchError::Invalid(format!("invalid array index {last:?}")))?;
            let idx = if idx < 0 { a.len() as i64 + idx } else { idx };
            if idx < 0 || idx as usize > a.len() {
                return Err(JsonPatchError::Invalid(format!(
                    "add operation does not apply: index out of bounds: \"{path}\""
                )));
            }
            a.insert(idx as usize, value);
            Ok(())
        }
        _ => Err(JsonPatchError::Invalid(format!(
            "add operation does not apply: doc is missing path: \"{path}\""
        ))),
    }
}

fn remove_at(root: &mut Value, tokens: &[String], path: &str) -> Result<Value, JsonPatchError> {
    let missing = || {
        JsonPatchError::Invalid(format!(
            "remove operation does not apply: doc is missing path: \"{path}\""
        ))
    };
    let (last, parent_tokens) = tokens.split_last().ok_or_else(missing)?;
    let parent = get_mut(root, parent_tokens).ok_or_else(missing)?;
    match parent {
        Value::Object(m) => m.shift_remove(last).ok_or_else(missing),
        Value::Array(a) => {
            let idx: i64 = last.parse().map_err(|_| missing())?;
            let idx = if idx < 0 { a.len() as i64 + idx } else { idx };
            if idx < 0 || idx as usize >= a.len() {
                return Err(missing());
            }
            Ok(a.remove(idx as usize))
        }
        _ => Err(missing()),
    }
}

/// RFC 6902 as the API server applies it. Like the server's library, `replace` of a missing
/// object member adds it instead of failing.
pub fn json_patch(target: &mut Value, ops: &Value) -> Result<(), JsonPatchError> {
    let ops = ops.as_array().ok_or_else(|| {
        JsonPatchError::Invalid("a JSON patch must be an array of operations".into())
    })?;
    let mut doc = target.clone();
    for op in ops {
        let kind = op["op"].as_str().unwrap_or_default();
        let path = op["path"].as_str().unwrap_or_default();
        let tokens = split_pointer(path)?;
        match kind {
            "add" => add_at(&mut doc, &tokens, op["value"].clone(), path)?,
            "remove" => {
                remove_at(&mut doc, &tokens, path)?;
            }
            "replace" => {
                let exists = get_mut(&mut doc, &tokens).is_some();
                if exists {
                    *get_mut(&mut doc, &tokens).expect("exists") = op["value"].clone();
                } else {
                    add_at(&mut doc, &tokens, op["value"].clone(), path)?;
                }
            }
            "test" => {
                let cur = get_mut(&mut doc, &tokens).cloned();
                if cur.as_ref() != Some(&op["value"]) {
                    return Err(JsonPatchError::TestFailed);
                }
            }
            "move" | "copy" => {
                let from = op["from"].as_str().unwrap_or_default();
                let from_tokens = split_pointer(from)?;
                let value = if kind == "move" {
                    remove_at(&mut doc, &from_tokens, from)?
                } else {
                    get_mut(&mut doc, &from_tokens).cloned().ok_or_else(|| {
                        JsonPatchError::Invalid(format!(
                            "copy operation does not apply: doc is missing from path: \"{from}\""
                        ))
                    })?
                };
                add_at(&mut doc, &tokens, value, path)?;
            }
            other => {
                return Err(JsonPatchError::Invalid(format!("Unexpected kind: {other}")));
            }
        }
    }
    *target = doc;
    Ok(())
}

/// How a list field merges under a strategic merge patch (from the Go struct tags).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ListStrategy {
    /// Replaced whole.
    Atomic,
    /// Merged by the named key (`patchMergeKey`).
    MergeByKey(&'static str),
    /// A list of scalars merged as a set (`finalizers`).
    MergePrimitive,
}

/// The merge strategy of the lists clients patch on the types kube-sim serves.
pub fn list_strategy(field: &str) -> ListStrategy {
    match field {
        "conditions" => ListStrategy::MergeByKey("type"),
        "addresses" => ListStrategy::MergeByKey("type"),
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => ListStrategy::MergeByKey("name"),
        "volumeMounts" => ListStrategy::MergeByKey("mountPath"),
        "ownerReferences" => ListStrategy::MergeByKey("uid"),
        "ports" => ListStrategy::MergeByKey("containerPort"),
        "finalizers" => ListStrategy::MergePrimitive,
        _ => ListStrategy::Atomic,
    }
}

/// Strategic merge patch: a merge patch where some lists merge by key and `$patch`,
/// `$deleteFromPrimitiveList/…`, `$setElementOrder/…` and `$retainKeys` directives are honoured.
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    match patch {
        Value::Object(p) => {
            if p.get("$patch").and_then(Value::as_str) == Some("replace") {
                let mut replaced = p.clone();
                replaced.remove("$patch");
                *target = Value::Object(replaced);
                return Ok(());
            }
            if p.get("$patch").and_then(Value::as_str) == Some("delete") {
                *target = Value::Null;
                return Ok(());
            }
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Some(Value::Array(keep)) = p.get("$retainKeys") {
                let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
                let t = target.as_object_mut().expect("object");
                t.retain(|k, _| keep.contains(&k.as_str()));
            }
            for (k, v) in p {
                if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
                    continue;
                }
                let t = target.as_object_mut().expect("object");
                if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
                    if let (Some(Value::Array(cur)), Value::Array(del)) = (t.get_mut(field), v) {
                        cur.retain(|x| !del.contains(x));
                    }
                    continue;
                }
                if v.is_null() {
                    t.shift_remove(k);
                    continue;
                }
                match (v, list_strategy(k)) {
                    (Value::Array(items), ListStrategy::MergeByKey(key)) => {
                        let entry = t.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                        merge_keyed_list(entry, items, key)?;
                    }
                    (Value::Array(items), ListStrategy::MergePrimitive) => {
                        let entry = t.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                        if let Value::Array(cur) = entry {
                            for item in items {
                                if !cur.contains(item) {
                                    cur.push(item.clone());
                                }
                            }
                        } else {
                            *entry = Value::Array(items.clone());
                        }
                    }
                    _ => {
                        let entry = t.entry(k.clone()).or_insert(Value::Null);
                        if v.is_object() {
                            strategic_merge_patch(entry, v)?;
                            if entry.is_null() {
                                t.shift_remove(k);
                            }
                        } else {
                            *entry = v.clone();
                        }
                    }
                }
            }
            Ok(())
        }
        other => {
            *target = other.clone();
            Ok(())
        }
    }
}

fn merge_keyed_list(target: &mut Value, items: &[Value], key: &str) -> Result<(), String> {
    if !target.is_array() {
        *target = Value::Array(Vec::new());
    }
    // A `{"$patch": "replace"}` element replaces the whole list with the other elements.
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *target = Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .cloned()
                .collect(),
        );
        return Ok(());
    }
    let cur = target.as_array_mut().expect("array");
    for item in items {
        let Some(k) = item.get(key) else {
            return Err(format!(
                "map: {item} does not contain declared merge key: {key}"
            ));
        };
        let pos = cur.iter().position(|c| c.get(key) == Some(k));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = pos {
                cur.remove(i);
            }
            continue;
        }
        match pos {
            Some(i) => strategic_merge_patch(&mut cur[i], item)?,
            None => {
                let mut fresh = Value::Object(Map::new());
                strategic_merge_patch(&mut fresh, item)?;
                cur.push(fresh);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_null_deletes_and_objects_merge() {
        let mut doc = json!({"metadata": {"annotations": {"a": "1", "b": "2"}}});
        merge_patch(
            &mut doc,
            &json!({"metadata": {"annotations": {"a": null, "c": "3"}}}),
        );
        assert_eq!(
            doc,
            json!({"metadata": {"annotations": {"b": "2", "c": "3"}}})
        );
    }

    #[test]
    fn json_patch_replace_of_missing_member_adds_it() {
        let mut doc = json!({"metadata": {"annotations": {}}});
        json_patch(
            &mut doc,
            &json!([{"op": "replace", "path": "/metadata/annotations/a~1b", "value": "x"}]),
        )
        .unwrap();
        assert_eq!(doc["metadata"]["annotations"]["a/b"], "x");
    }

    #[test]
    fn json_patch_failing_test_changes_nothing() {
        let mut doc = json!({"a": 1});
        let err = json_patch(
            &mut doc,
            &json!([{"op": "replace", "path": "/a", "value": 2}, {"op": "test", "path": "/a", "value": 5}]),
        )
        .unwrap_err();
        assert_eq!(err, JsonPatchError::TestFailed);
        assert_eq!(doc, json!({"a": 1}));
    }

    #[test]
    fn strategic_merge_conditions_by_type_and_delete_directive() {
        let mut doc = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False"}, {"type": "X", "status": "True"}]}});
        strategic_merge_patch(
            &mut doc,
            &json!({"status": {"conditions": [
                {"type": "Ready", "status": "True"}, {"type": "X", "$patch": "delete"}]}}),
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
        );
    }

    #[test]
    fn strategic_merge_null_uncordons_and_finalizers_merge_as_set() {
        let mut doc = json!({"spec": {"unschedulable": true}, "metadata": {"finalizers": ["a"]}});
        strategic_merge_patch(
            &mut doc,
            &json!({"spec": {"unschedulable": null}, "metadata": {"finalizers": ["a", "b"],
                "$deleteFromPrimitiveList/finalizers": ["a"]}}),
        )
        .unwrap();
        assert_eq!(doc, json!({"spec": {}, "metadata": {"finalizers": ["b"]}}));
    }

    #[test]
    fn strategic_merge_replace_directive_on_map() {
        let mut doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        strategic_merge_patch(
            &mut doc,
            &json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}}),
        )
        .unwrap();
        assert_eq!(doc, json!({"metadata": {"labels": {"c": "3"}}}));
    }
}
