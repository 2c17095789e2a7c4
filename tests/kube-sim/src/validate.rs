//! Validation the real server does: object names, and for custom resources the structural
//! OpenAPI schema (types, bounds, enums, required fields, pruning of unknown fields) plus the CEL
//! rules of the shipped CRDs that kube-sim knows how to evaluate.

use regex::Regex;
use serde_json::Value;

use crate::status::Cause;

const DNS1123_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const DNS1123_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

pub const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && Regex::new(DNS1123_SUBDOMAIN).expect("regex").is_match(s)
}

/// Causes for an invalid `metadata.name` (empty when it is fine).
pub fn validate_name(name: &str, dns_label: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    if name.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "metadata.name",
            "Required value: name or generateName is required",
        ));
        return causes;
    }
    let (ok, msg, max) = if dns_label {
        (
            Regex::new(DNS1123_LABEL).expect("regex").is_match(name),
            LABEL_MSG,
            63,
        )
    } else {
        (is_dns_subdomain(name), SUBDOMAIN_MSG, 253)
    };
    if name.len() > max {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: \"{name}\": must be no more than {max} characters"),
        ));
    }
    if !ok {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: \"{name}\": {msg}"),
        ));
    }
    causes
}

/// Outcome of checking a custom resource against its schema.
#[derive(Debug, Default)]
pub struct SchemaReport {
    pub causes: Vec<Cause>,
    /// Paths of unknown fields that were pruned (reported as warnings, or 400 with Strict).
    pub unknown: Vec<String>,
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn short_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

/// Validate and prune `obj` (a whole custom resource) against the CRD `schema`; `old` is the
/// stored object on updates (for transition rules).
pub fn check_custom(schema: &Value, obj: &mut Value, old: Option<&Value>) -> SchemaReport {
    let mut report = SchemaReport::default();
    if let (Some(props), Some(map)) = (schema["properties"].as_object(), obj.as_object_mut()) {
        let keys: Vec<String> = map.keys().cloned().collect();
        for k in keys {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            match props.get(&k) {
                Some(sub) => {
                    let old_sub = old.and_then(|o| o.get(&k));
                    let v = map.get_mut(&k).expect("key");
                    check_value(sub, v, old_sub, &k, &mut report);
                }
                None => {
                    map.shift_remove(&k);
                    report.unknown.push(k);
                }
            }
        }
    }
    // Root-level rules see the whole object.
    run_rules(schema, obj, old, "<nil>", &mut report);
    report
}

fn check_value(
    schema: &Value,
    v: &mut Value,
    old: Option<&Value>,
    path: &str,
    report: &mut SchemaReport,
) {
    let leaf = path.rsplit('.').next().unwrap_or(path);
    if v.is_null() {
        return;
    }
    let int_or_string = schema["x-kubernetes-int-or-string"] == Value::Bool(true);
    if let Some(want) = schema["type"].as_str() {
        let have = json_type(v);
        let ok = have == want
            || (want == "number" && have == "integer")
            || (int_or_string && (have == "integer" || have == "string"));
        if !ok {
            report.causes.push(Cause::new(
                "FieldValueTypeInvalid",
                path,
                format!(
                    "Invalid value: \"{have}\": {path} in body must be of type {want}: \"{have}\""
                ),
            ));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(v) {
            let list: Vec<String> = allowed.iter().map(short_value).collect();
            report.causes.push(Cause::new(
                "FieldValueNotSupported",
                path,
                format!(
                    "Unsupported value: {}: supported values: {}",
                    short_value(v),
                    list.join(", ")
                ),
            ));
        }
    }
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            if let Some(min) = schema["minimum"].as_f64() {
                if x < min {
                    report.causes.push(Cause::new(
                        "FieldValueInvalid",
                        path,
                        format!("Invalid value: {n}: {leaf} in body should be greater than or equal to {min}"),
                    ));
                }
            }
            if let Some(max) = schema["maximum"].as_f64() {
                if x > max {
                    report.causes.push(Cause::new(
                        "FieldValueInvalid",
                        path,
                        format!("Invalid value: {n}: {leaf} in body should be less than or equal to {max}"),
                    ));
                }
            }
        }
        Value::String(s) => {
            if let Some(max) = schema["maxLength"].as_u64() {
                if s.chars().count() as u64 > max {
                    report.causes.push(Cause::new(
                        "FieldValueTooLong",
                        path,
                        format!("Too long: may not be more than {max} bytes"),
                    ));
                }
            }
            if let Some(min) = schema["minLength"].as_u64() {
                if (s.chars().count() as u64) < min {
                    report.causes.push(Cause::new(
                        "FieldValueInvalid",
                        path,
                        format!("Invalid value: \"{s}\": {leaf} in body should be at least {min} chars long"),
                    ));
                }
            }
            if let Some(p) = schema["pattern"].as_str() {
                if let Ok(re) = Regex::new(p) {
                    if !re.is_match(s) {
                        report.causes.push(Cause::new(
                            "FieldValueInvalid",
                            path,
                            format!("Invalid value: \"{s}\": {leaf} in body should match '{p}'"),
                        ));
                    }
                }
            }
            // kube-openapi's `byte` format: standard base64 with padding (Go's StdEncoding).
            if schema["format"] == "byte" && !is_base64(s) {
                report.causes.push(Cause::new(
                    "FieldValueTypeInvalid",
                    path,
                    format!("Invalid value: \"{s}\": {path} in body must be of type byte: \"{s}\""),
                ));
            }
            if schema["format"] == "date-time" && crate::store::parse_time(s).is_none() {
                report.causes.push(Cause::new(
                    "FieldValueInvalid",
                    path,
                    format!(
                        "Invalid value: \"{s}\": {leaf} in body must be of type date-time: \"{s}\""
                    ),
                ));
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema["maxItems"].as_u64() {
                if items.len() as u64 > max {
                    report.causes.push(Cause::new(
                        "FieldValueTooMany",
                        path,
                        format!("Too many: {}: must have at most {max} items", items.len()),
                    ));
                }
            }
            if let Some(min) = schema["minItems"].as_u64() {
                if (items.len() as u64) < min {
                    report.causes.push(Cause::new(
                        "FieldValueInvalid",
                        path,
                        format!(
                            "Invalid value: {}: {leaf} in body should have at least {min} items",
                            items.len()
                        ),
                    ));
                }
            }
            let item_schema = &schema["items"];
            if item_schema.is_object() {
                for (i, item) in items.iter_mut().enumerate() {
                    check_value(item_schema, item, None, &format!("{path}[{i}]"), report);
                }
            }
        }
        Value::Object(map) => {
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true);
            if let Some(required) = schema["required"].as_array() {
                for r in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        report.causes.push(Cause::new(
                            "FieldValueRequired",
                            format!("{path}.{r}"),
                            "Required value",
                        ));
                    }
                }
            }
            let props = schema["properties"].as_object();
            let additional = &schema["additionalProperties"];
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let child_path = format!("{path}.{k}");
                let sub = props.and_then(|p| p.get(&k)).or(if additional.is_object() {
                    Some(additional)
                } else {
                    None
                });
                match sub {
                    Some(sub) => {
                        let old_child = old.and_then(|o| o.get(&k));
                        let child = map.get_mut(&k).expect("key");
                        if child.is_null() && sub["nullable"] != Value::Bool(true) {
                            map.shift_remove(&k);
                            continue;
                        }
                        check_value(sub, child, old_child, &child_path, report);
                    }
                    None if preserve || additional == &Value::Bool(true) => {}
                    None => {
                        map.shift_remove(&k);
                        report.unknown.push(child_path);
                    }
                }
            }
        }
        _ => {}
    }
    run_rules(schema, v, old, path, report);
}

/// Evaluate the `x-kubernetes-validations` rules kube-sim understands; unknown rules are skipped.
fn run_rules(
    schema: &Value,
    v: &Value,
    old: Option<&Value>,
    path: &str,
    report: &mut SchemaReport,
) {
    let Some(rules) = schema["x-kubernetes-validations"].as_array() else {
        return;
    };
    for rule in rules {
        let text = rule["rule"].as_str().unwrap_or_default().trim();
        let message = rule["message"].as_str().unwrap_or("failed rule");
        let passed = match eval_rule(text, v, old) {
            Some(p) => p,
            None => continue,
        };
        if !passed {
            report.causes.push(Cause::new(
                "FieldValueInvalid",
                path,
                format!(
                    "Invalid value: \"{}\": {message}",
                    json_type(v).replace("boolean", "bool")
                ),
            ));
        }
    }
}

fn is_base64(s: &str) -> bool {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).is_ok()
}

/// Paths of the fields of `obj` its schema does not declare (what pruning would drop), in
/// structured-merge-diff's notation (`.status.configImage`).
pub fn undeclared_fields(schema: &Value, obj: &Value) -> Vec<String> {
    let mut copy = obj.clone();
    check_custom(schema, &mut copy, None)
        .unknown
        .into_iter()
        .map(|p| format!(".{p}"))
        .collect()
}

/// The image pull spec rules of MachineConfigNode `configImage` (openshift/api
/// `ImageDigestFormat`): `(self.split('@').size() == 2 && self.split('@')[1].matches('RE'))` and
/// `(self.split('@')[0].matches('RE'))`. `None` when `rule` is not of that shape.
fn eval_split_rule(rule: &str, v: &Value) -> Option<bool> {
    let inner = rule.strip_prefix('(')?.strip_suffix(')')?;
    let s = v.as_str()?;
    let parts: Vec<&str> = s.split('@').collect();
    let mut ok = true;
    for term in inner.split(" && ") {
        let term = term.trim();
        if term == "self.split('@').size() == 2" {
            ok &= parts.len() == 2;
            continue;
        }
        let rest = term.strip_prefix("self.split('@')[")?;
        let (index, rest) = rest.split_once(']')?;
        let index: usize = index.parse().ok()?;
        let pattern = rest.strip_prefix(".matches('")?.strip_suffix("')")?;
        // CEL evaluates `&&` left to right: an index out of range only fails the rule when reached.
        if !ok {
            break;
        }
        let Some(part) = parts.get(index) else {
            return Some(false);
        };
        let re = Regex::new(&pattern.replace("\\\\", "\\")).ok()?;
        ok &= re.is_match(part);
    }
    Some(ok)
}

fn eval_rule(rule: &str, v: &Value, old: Option<&Value>) -> Option<bool> {
    if rule.starts_with("(self.split('@')") {
        return eval_split_rule(rule, v);
    }
    let as_f64 = |x: Option<&Value>| x.and_then(Value::as_f64);
    match rule {
        "self.metadata.name == self.spec.node.name" => {
            Some(v["metadata"]["name"] == v["spec"]["node"]["name"])
        }
        // Transition rules only run when there is an old value.
        "self >= oldSelf" => {
            let old = as_f64(old)?;
            Some(as_f64(Some(v))? >= old)
        }
        "self >= oldSelf || (self == 0 && oldSelf > 0)" => {
            let old = as_f64(old)?;
            let new = as_f64(Some(v))?;
            Some(new >= old || (new == 0.0 && old > 0.0))
        }
        "!format.dns1123Subdomain().validate(self).hasValue()" => {
            Some(is_dns_subdomain(v.as_str()?))
        }
        _ => {
            if let Some(arg) = rule
                .strip_prefix("self.matches('")
                .and_then(|r| r.strip_suffix("')"))
            {
                let pattern = arg.replace("\\\\", "\\");
                let re = Regex::new(&pattern).ok()?;
                return Some(re.is_match(v.as_str()?));
            }
            if let Some(arg) = rule
                .strip_prefix("self.startsWith('")
                .and_then(|r| r.strip_suffix("')"))
            {
                return Some(v.as_str()?.starts_with(arg));
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        assert!(validate_name("node1", false).is_empty());
        assert_eq!(validate_name("Bad_Name", false).len(), 1);
        assert_eq!(validate_name("a.b", true).len(), 1);
    }

    #[test]
    fn schema_type_min_and_pruning() {
        let schema = json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}},
        }});
        let mut obj = json!({"apiVersion": "x/v1", "kind": "X", "spec": {"n": 0, "junk": true}});
        let r = check_custom(&schema, &mut obj, None);
        assert_eq!(r.unknown, vec!["spec.junk".to_string()]);
        assert_eq!(r.causes.len(), 1);
        assert_eq!(
            r.causes[0].message,
            "Invalid value: 0: n in body should be greater than or equal to 1"
        );
        assert!(obj["spec"].get("junk").is_none());
    }
}
