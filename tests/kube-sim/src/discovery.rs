//! Discovery documents: `/api`, `/apis`, group and group/version resource lists, aggregated
//! discovery (`apidiscovery.k8s.io/v2`, what kubectl 1.32 asks for first) and `/version`.

use serde_json::{Map, Value, json};

use crate::resources::{Registry, ResourceType};

pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the Accept header asks for aggregated discovery.
pub fn wants_aggregated(accept: &str) -> bool {
    accept.contains("as=APIGroupDiscoveryList") && accept.contains("v=v2")
}

pub fn version() -> Value {
    json!({"major": "1", "minor": "32", "gitVersion": "v1.32.13-kube-sim", "gitCommit": "d4b43f374a5b",
        "gitTreeState": "clean", "buildDate": "1970-01-01T00:00:00Z", "goVersion": "go1.23.5",
        "compiler": "gc", "platform": "linux/amd64"})
}

pub fn api_versions(server_address: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]})
}

fn group_entry(reg: &Registry, group: &str) -> Value {
    let versions: Vec<Value> = reg
        .versions_of(group)
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = versions[0].clone();
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

pub fn api_group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg.groups().iter().map(|g| group_entry(reg, g)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(reg: &Registry, group: &str) -> Option<Value> {
    if !reg.groups().iter().any(|g| g == group) {
        return None;
    }
    let mut g = group_entry(reg, group);
    let obj = g.as_object_mut().expect("object");
    let mut out = Map::new();
    out.insert("kind".into(), json!("APIGroup"));
    out.insert("apiVersion".into(), json!("v1"));
    out.extend(std::mem::take(obj));
    Some(Value::Object(out))
}

fn resource_entries(rt: &ResourceType) -> Vec<Value> {
    let mut main = Map::new();
    main.insert("name".into(), json!(rt.plural));
    main.insert("singularName".into(), json!(rt.singular));
    main.insert("namespaced".into(), json!(rt.namespaced));
    main.insert("kind".into(), json!(rt.kind));
    main.insert("verbs".into(), json!(rt.verbs()));
    if !rt.short_names.is_empty() {
        main.insert("shortNames".into(), json!(rt.short_names));
    }
    if !rt.categories.is_empty() {
        main.insert("categories".into(), json!(rt.categories));
    }
    if !rt.storage_version_hash.is_empty() {
        main.insert("storageVersionHash".into(), json!(rt.storage_version_hash));
    }
    let mut out = vec![Value::Object(main)];
    if rt.has_eviction {
        out.push(json!({"name": format!("{}/eviction", rt.plural), "singularName": "", "namespaced": rt.namespaced,
            "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}));
    }
    if rt.has_status {
        out.push(json!({"name": format!("{}/status", rt.plural), "singularName": "", "namespaced": rt.namespaced,
            "kind": rt.kind, "verbs": ["get", "patch", "update"]}));
    }
    out
}

pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let types = reg.in_group_version(group, version);
    if types.is_empty() {
        return None;
    }
    let mut builtin: Vec<Value> = types
        .iter()
        .filter(|t| !t.is_custom())
        .flat_map(|t| resource_entries(t))
        .collect();
    builtin.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let custom: Vec<Value> = types
        .iter()
        .filter(|t| t.is_custom())
        .flat_map(|t| resource_entries(t))
        .collect();
    let resources: Vec<Value> = builtin.into_iter().chain(custom).collect();
    if group.is_empty() {
        // The real core list has no apiVersion.
        Some(json!({"kind": "APIResourceList", "groupVersion": version, "resources": resources}))
    } else {
        Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{group}/{version}"), "resources": resources}),
        )
    }
}

fn aggregated_resource(rt: &ResourceType) -> Value {
    let response_kind = if rt.is_custom() {
        json!({"group": rt.group, "version": rt.version, "kind": rt.kind})
    } else {
        json!({"group": "", "version": "", "kind": rt.kind})
    };
    let mut r = Map::new();
    r.insert("resource".into(), json!(rt.plural));
    r.insert("responseKind".into(), response_kind.clone());
    r.insert(
        "scope".into(),
        json!(if rt.namespaced {
            "Namespaced"
        } else {
            "Cluster"
        }),
    );
    r.insert("singularResource".into(), json!(rt.singular));
    r.insert("verbs".into(), json!(rt.verbs()));
    if !rt.short_names.is_empty() {
        r.insert("shortNames".into(), json!(rt.short_names));
    }
    if !rt.categories.is_empty() {
        r.insert("categories".into(), json!(rt.categories));
    }
    let mut subs = Vec::new();
    if rt.has_eviction {
        subs.push(json!({"subresource": "eviction", "responseKind": {"group": "policy", "version": "v1", "kind": "Eviction"}, "verbs": ["create"]}));
    }
    if rt.has_status {
        subs.push(json!({"subresource": "status", "responseKind": response_kind, "verbs": ["get", "patch", "update"]}));
    }
    if !subs.is_empty() {
        r.insert("subresources".into(), Value::Array(subs));
    }
    Value::Object(r)
}

fn aggregated_group(reg: &Registry, group: &str) -> Value {
    let versions: Vec<Value> = reg
        .versions_of(group)
        .iter()
        .map(|v| {
            let mut types = reg.in_group_version(group, v);
            types.sort_by(|a, b| a.plural.cmp(&b.plural));
            let resources: Vec<Value> = types.iter().map(|t| aggregated_resource(t)).collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let metadata = if group.is_empty() {
        json!({"creationTimestamp": null})
    } else {
        json!({"name": group, "creationTimestamp": null})
    };
    json!({"metadata": metadata, "versions": versions})
}

/// `/api` (core = true) or `/apis` as an `APIGroupDiscoveryList`.
pub fn aggregated(reg: &Registry, core: bool) -> Value {
    let items: Vec<Value> = if core {
        vec![aggregated_group(reg, "")]
    } else {
        reg.groups()
            .iter()
            .map(|g| aggregated_group(reg, g))
            .collect()
    };
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}
