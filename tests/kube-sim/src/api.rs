//! The resource operations: get, list, create, update, patch (merge, JSON, strategic, apply),
//! delete with grace periods and preconditions, and the pods/eviction subresource.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

use crate::controllers::{self, PDBS, PODS};
use crate::defaults;
use crate::faults::Controls;
use crate::managed;
use crate::patch::{self, JsonPatchError};
use crate::resources::{Registry, ResourceType};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::{ApiError, Cause};
use crate::store::{State, key_of, now_rfc3339, object_key, order_builtin, sort_keys};
use crate::validate;

/// Settings of a running simulator.
#[derive(Debug, Clone)]
pub struct CoreOptions {
    pub token: Option<String>,
    /// Watch timeout when the client sends no `timeoutSeconds`.
    pub default_watch_timeout: Duration,
    /// How often a long watch with bookmarks gets a BOOKMARK.
    pub bookmark_interval: Duration,
}

/// The shared state of one simulator.
#[derive(Debug)]
pub struct Core {
    pub registry: Registry,
    pub state: Mutex<State>,
    pub controls: Mutex<Controls>,
    pub opts: CoreOptions,
    /// Bumped to end every open watch.
    pub drop_tx: tokio::sync::watch::Sender<u64>,
    pub kubelet_wake: Notify,
}

/// A resolved resource URL.
#[derive(Debug, Clone)]
pub struct Target {
    pub rt: Arc<ResourceType>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

impl Target {
    pub fn key(&self) -> String {
        object_key(
            self.namespace.as_deref(),
            self.name.as_deref().unwrap_or_default(),
        )
    }
    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }
    fn is_status(&self) -> bool {
        self.sub.as_deref() == Some("status")
    }
}

/// An incoming request, decoupled from the HTTP stack.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    pub query: Vec<(String, String)>,
    pub accept: String,
    pub content_type: String,
    pub user_agent: String,
    pub body: Bytes,
}

impl Request {
    pub fn q(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn dry_run(&self) -> bool {
        self.q("dryRun") == Some("All")
    }
    /// The field manager: `?fieldManager=`, else derived from the User-Agent like the server.
    fn manager(&self) -> String {
        if let Some(m) = self.q("fieldManager") {
            return m.to_string();
        }
        let ua = self.user_agent.split('/').next().unwrap_or_default();
        if ua.is_empty() {
            "unknown".into()
        } else {
            ua.chars().take(128).collect()
        }
    }
}

/// A JSON reply (watches are handled by `crate::watch`).
#[derive(Debug)]
pub struct JsonReply {
    pub status: u16,
    pub body: Value,
    pub warnings: Vec<String>,
}

impl JsonReply {
    fn ok(status: u16, body: Value) -> Self {
        JsonReply {
            status,
            body,
            warnings: Vec::new(),
        }
    }
}

pub type ApiResult = Result<JsonReply, ApiError>;

/// Listed objects (rendered), the list RV, and the continue token + remaining count if paginated.
pub type Selection = (Vec<Value>, u64, Option<(String, i64)>);

/// A Go-like JSON decode error message (what `encoding/json` would say).
pub fn go_json_error(body: &[u8], err: &serde_json::Error) -> String {
    if err.is_eof() {
        return "unexpected end of JSON input".into();
    }
    let text = String::from_utf8_lossy(body);
    let line = text
        .lines()
        .nth(err.line().saturating_sub(1))
        .unwrap_or_default();
    let ch = line
        .chars()
        .nth(err.column().saturating_sub(1))
        .unwrap_or(' ');
    let msg = err.to_string();
    if msg.starts_with("key must be a string") {
        format!("invalid character '{ch}' looking for beginning of object key string")
    } else if msg.starts_with("trailing characters") {
        format!("invalid character '{ch}' after top-level value")
    } else {
        format!("invalid character '{ch}' looking for beginning of value")
    }
}

fn parse_json(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| go_json_error(body, &e))
}

impl Core {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The object as the requested API version shows it.
    pub fn render(&self, rt: &ResourceType, obj: &Value) -> Value {
        if rt.group == "events.k8s.io" {
            let mut v = defaults::event_to_events_v1(obj);
            order_builtin(&mut v);
            v
        } else {
            obj.clone()
        }
    }

    /// Convert a request body of `rt`'s version into the storage form.
    fn to_storage(&self, rt: &ResourceType, obj: Value) -> Value {
        if rt.group == "events.k8s.io" {
            defaults::events_v1_to_core(&obj)
        } else {
            obj
        }
    }

    fn finish_shape(&self, rt: &ResourceType, obj: &mut Value) {
        if rt.is_custom() {
            sort_keys(obj);
        } else {
            order_builtin(obj);
        }
        if rt.kind == "Pod" {
            normalize_pod_conditions(obj);
        }
    }

    // ----------------------------------------------------------------------------- reads

    pub fn get(&self, t: &Target) -> ApiResult {
        let state = self.lock();
        let obj = state
            .get(&t.rt.storage, &t.key())
            .ok_or_else(|| ApiError::not_found(&t.rt.name(), t.name()))?;
        Ok(JsonReply::ok(200, self.render(&t.rt, obj)))
    }

    /// Objects matching the list request's selectors, in key order, plus the list RV.
    pub fn select(&self, t: &Target, req: &Request) -> Result<Selection, ApiError> {
        let label_sel = req
            .q("labelSelector")
            .map(LabelSelector::parse)
            .transpose()?;
        let field_sel = req
            .q("fieldSelector")
            .map(|s| FieldSelector::parse(s, &t.rt.kind))
            .transpose()?;
        let rv_param = req.q("resourceVersion").filter(|s| !s.is_empty());
        let rv_match = req.q("resourceVersionMatch").filter(|s| !s.is_empty());
        if rv_match.is_some() && rv_param.is_none() {
            return Err(ApiError::invalid(
                "ListOptions",
                "meta.k8s.io",
                "",
                &[Cause::new(
                    "FieldValueForbidden",
                    "resourceVersionMatch",
                    "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
                )],
            ));
        }
        let state = self.lock();
        let limit: Option<usize> = req
            .q("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0);
        let limit = if rv_param == Some("0") { None } else { limit };
        // Continue tokens pin the snapshot of the first page.
        let mut start_after: Option<String> = None;
        let mut snapshot_rv = state.rv;
        let mut inconsistent = false;
        if let Some(token) = req.q("continue").filter(|s| !s.is_empty()) {
            let (rv, start) = decode_continue(token)?;
            if rv < 0 {
                inconsistent = true;
            } else if (rv as u64) < state.window_start {
                let fresh = encode_continue(-1, &start);
                let mut err = ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                );
                err.body["metadata"] = json!({"continue": fresh});
                return Err(err);
            } else {
                snapshot_rv = rv as u64;
            }
            // The real server's keys are relative to the resource prefix and may start with '/'.
            start_after = Some(
                start
                    .trim_end_matches('\u{0}')
                    .trim_start_matches('/')
                    .to_string(),
            );
        } else if let (Some(rv), Some("Exact")) = (rv_param, rv_match) {
            let rv: u64 = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?;
            if rv < state.window_start {
                return Err(ApiError::expired(
                    "The resourceVersion for the provided list is too old.",
                ));
            }
            if rv > state.rv {
                return Err(ApiError::timeout(format!(
                    "Too large resource version: {rv}, current: {}",
                    state.rv
                )));
            }
            snapshot_rv = rv;
        }
        let objects: Vec<(String, Value)> = if snapshot_rv == state.rv || inconsistent {
            state
                .list(&t.rt.storage)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        } else {
            match state.snapshot_at(&t.rt.storage, snapshot_rv) {
                Some(m) => m.into_iter().collect(),
                None => {
                    return Err(ApiError::expired(
                        "The resourceVersion for the provided list is too old.",
                    ));
                }
            }
        };
        let list_rv = if inconsistent { state.rv } else { snapshot_rv };
        drop(state);
        let mut items: Vec<(String, Value)> = objects
            .into_iter()
            .filter(|(_, o)| match &t.namespace {
                Some(ns) => o["metadata"]["namespace"] == ns.as_str(),
                None => true,
            })
            .filter(|(_, o)| {
                label_sel
                    .as_ref()
                    .is_none_or(|s| s.matches(&o["metadata"]["labels"]))
            })
            .filter(|(_, o)| field_sel.as_ref().is_none_or(|s| s.matches(o)))
            .collect();
        if let Some(after) = &start_after {
            items.retain(|(k, _)| k.as_str() > after.as_str());
        }
        let mut cont = None;
        if let Some(limit) = limit {
            if items.len() > limit {
                let remaining = (items.len() - limit) as i64;
                items.truncate(limit);
                let last = items.last().map(|(k, _)| k.clone()).unwrap_or_default();
                let token_rv = if inconsistent { -1 } else { list_rv as i64 };
                cont = Some((
                    encode_continue(token_rv, &format!("{last}\u{0}")),
                    remaining,
                ));
            }
        }
        Ok((
            items
                .into_iter()
                .map(|(_, v)| self.render(&t.rt, &v))
                .collect(),
            list_rv,
            cont,
        ))
    }

    pub fn list(&self, t: &Target, req: &Request) -> ApiResult {
        let (items, rv, cont) = self.select(t, req)?;
        let custom = t.rt.is_custom();
        let items: Vec<Value> = items
            .into_iter()
            .map(|mut o| {
                if !custom {
                    if let Some(m) = o.as_object_mut() {
                        m.shift_remove("kind");
                        m.shift_remove("apiVersion");
                    }
                }
                o
            })
            .collect();
        let mut meta = Map::new();
        if custom {
            meta.insert(
                "continue".into(),
                json!(cont.as_ref().map(|c| c.0.clone()).unwrap_or_default()),
            );
        }
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        if let Some((token, remaining)) = &cont {
            meta.insert("continue".into(), json!(token));
            meta.insert("remainingItemCount".into(), json!(remaining));
        }
        let mut body = json!({"kind": t.rt.list_kind(), "apiVersion": t.rt.api_version(), "metadata": meta, "items": items});
        if custom {
            sort_keys(&mut body);
        }
        Ok(JsonReply::ok(200, body))
    }

    // ----------------------------------------------------------------------------- writes

    fn decode_body(&self, t: &Target, req: &Request) -> Result<Value, ApiError> {
        let body = parse_json(&req.body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?;
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "couldn't get version/kind; json parse error: expected an object",
            ));
        }
        let kind = body["kind"].as_str().unwrap_or_default();
        let api_version = body["apiVersion"].as_str().unwrap_or_default();
        if (!kind.is_empty() && kind != t.rt.kind)
            || (!api_version.is_empty() && api_version != t.rt.api_version())
        {
            let ver = api_version.split_once('/').map_or(api_version, |(_, v)| v);
            let internal_group = if t.rt.group.is_empty() {
                "core".to_string()
            } else {
                t.rt.group.clone()
            };
            return Err(ApiError::bad_request(format!(
                "{kind} in version \"{ver}\" cannot be handled as a {}: converting ({}.{kind}) to ({internal_group}.{}): unknown conversion",
                t.rt.kind, ver, t.rt.kind
            )));
        }
        Ok(body)
    }

    fn check_namespace(&self, state: &State, t: &Target, body: &mut Value) -> Result<(), ApiError> {
        if !t.rt.namespaced {
            if let Some(m) = body["metadata"].as_object_mut() {
                m.shift_remove("namespace");
            }
            return Ok(());
        }
        let ns = t.namespace.clone().unwrap_or_default();
        match body["metadata"]["namespace"].as_str() {
            Some(b) if !b.is_empty() && b != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {}
        }
        body["metadata"]["namespace"] = json!(ns);
        if state.get("namespaces", &ns).is_none() {
            let nsrt = self
                .registry
                .find("", "v1", "namespaces")
                .expect("namespaces");
            return Err(ApiError::not_found(&nsrt.name(), &ns));
        }
        Ok(())
    }

    /// Schema validation of a custom resource; returns warnings for pruned fields.
    fn check_custom(
        &self,
        rt: &ResourceType,
        obj: &mut Value,
        old: Option<&Value>,
        req: &Request,
    ) -> Result<Vec<String>, ApiError> {
        let Some(custom) = &rt.custom else {
            return Ok(Vec::new());
        };
        let report = validate::check_custom(&custom.schema, obj, old);
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !report.unknown.is_empty() && req.q("fieldValidation") == Some("Strict") {
            let fields: Vec<String> = report
                .unknown
                .iter()
                .map(|u| format!("unknown field \"{u}\""))
                .collect();
            return Err(ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                rt.kind,
                rt.version,
                rt.kind,
                fields.join(", ")
            )));
        }
        if !report.causes.is_empty() {
            return Err(ApiError::invalid(
                &rt.kind,
                &rt.group,
                &name,
                &report.causes,
            ));
        }
        if req.q("fieldValidation") == Some("Ignore") {
            return Ok(Vec::new());
        }
        Ok(report
            .unknown
            .iter()
            .map(|u| format!("unknown field \"{u}\""))
            .collect())
    }

    fn validate_event(&self, rt: &ResourceType, obj: &Value, name: &str) -> Result<(), ApiError> {
        if rt.group == "events.k8s.io" && obj["eventTime"].is_null() {
            return Err(ApiError::invalid(
                "Event",
                "",
                name,
                &[Cause::new(
                    "FieldValueRequired",
                    "eventTime",
                    "Required value",
                )],
            ));
        }
        Ok(())
    }

    pub fn create(&self, t: &Target, req: &Request) -> ApiResult {
        let mut body = self.decode_body(t, req)?;
        if !body["metadata"].is_object() {
            body["metadata"] = json!({});
        }
        let mut state = self.lock();
        self.check_namespace(&state, t, &mut body)?;
        let name = match body["metadata"]["name"].as_str().filter(|n| !n.is_empty()) {
            Some(n) => n.to_string(),
            None => match body["metadata"]["generateName"].as_str() {
                Some(prefix) => defaults::generated_name(prefix),
                None => String::new(),
            },
        };
        let causes = validate::validate_name(&name, t.rt.kind == "Namespace");
        if !causes.is_empty() {
            return Err(ApiError::invalid(
                &t.rt.kind,
                if t.rt.is_custom() { &t.rt.group } else { "" },
                &name,
                &causes,
            ));
        }
        body["metadata"]["name"] = json!(name);
        self.validate_event(&t.rt, &body, &name)?;
        let request_set = managed::request_set(&body, true);
        let mut obj = self.to_storage(&t.rt, body);
        let warnings = self.check_custom(&t.rt, &mut obj, None, req)?;
        let key = key_of(&obj);
        if state.get(&t.rt.storage, &key).is_some() {
            return Err(ApiError::already_exists(&t.rt.name(), &name));
        }
        if t.rt.has_status && t.rt.is_custom() {
            if let Some(m) = obj.as_object_mut() {
                m.shift_remove("status");
            }
        }
        self.stamp_new(&t.rt, &mut obj);
        defaults::on_create(&t.rt.kind, &mut obj, false);
        managed::record(
            &mut obj,
            &req.manager(),
            "Update",
            None,
            &t.rt.api_version(),
            request_set,
            false,
        );
        self.finish_shape(&t.rt, &mut obj);
        if req.dry_run() {
            return Ok(JsonReply {
                status: 201,
                body: self.render(&t.rt, &obj),
                warnings,
            });
        }
        let stored = state.insert(&t.rt.storage, obj);
        self.after_write(&mut state, &t.rt, &stored);
        Ok(JsonReply {
            status: 201,
            body: self.render(&t.rt, &stored),
            warnings,
        })
    }

    fn stamp_new(&self, rt: &ResourceType, obj: &mut Value) {
        let meta = obj["metadata"].as_object_mut().expect("metadata");
        for k in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "generation",
            "selfLink",
        ] {
            meta.shift_remove(k);
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        if rt.has_generation {
            meta.insert("generation".into(), json!(1));
        }
        if obj.get("kind").is_none() || obj.get("apiVersion").is_none() {
            let api_version = if rt.storage == "events" {
                "v1".to_string()
            } else {
                rt.api_version()
            };
            obj["kind"] = json!(rt.kind);
            obj["apiVersion"] = json!(api_version);
        }
    }

    /// Load an object from a seed file: like a create, but status is kept as given.
    pub fn seed(&self, mut obj: Value) -> anyhow::Result<Value> {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let rt = self
            .registry
            .find_kind(&api_version, &kind)
            .ok_or_else(|| anyhow::anyhow!("kube-sim does not serve {kind} ({api_version})"))?;
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        anyhow::ensure!(
            validate::validate_name(&name, kind == "Namespace").is_empty(),
            "invalid name {name:?} for {kind}"
        );
        if rt.namespaced
            && obj["metadata"]["namespace"]
                .as_str()
                .is_none_or(str::is_empty)
        {
            obj["metadata"]["namespace"] = json!("default");
        }
        let mut state = self.lock();
        if let Some(ns) = obj["metadata"]["namespace"]
            .as_str()
            .filter(|_| rt.namespaced)
        {
            if state.get("namespaces", ns).is_none() {
                let mut nsobj =
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                let nsrt = self
                    .registry
                    .find("", "v1", "namespaces")
                    .expect("namespaces");
                self.stamp_new(&nsrt, &mut nsobj);
                defaults::on_create("Namespace", &mut nsobj, false);
                order_builtin(&mut nsobj);
                state.insert("namespaces", nsobj);
            }
        }
        let mut obj = self.to_storage(&rt, obj);
        if let Some(custom) = &rt.custom {
            let report = validate::check_custom(&custom.schema, &mut obj, None);
            anyhow::ensure!(
                report.causes.is_empty(),
                "{kind} {name:?} is invalid: {}",
                report
                    .causes
                    .iter()
                    .map(|c| format!("{}: {}", c.field, c.message))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let key = key_of(&obj);
        let request_set = managed::request_set(&obj, true);
        self.stamp_new(&rt, &mut obj);
        defaults::on_create(&kind, &mut obj, true);
        managed::record(
            &mut obj,
            "kube-sim",
            "Update",
            None,
            &rt.api_version(),
            request_set,
            false,
        );
        self.finish_shape(&rt, &mut obj);
        let stored = if state.get(&rt.storage, &key).is_some() {
            state.replace(&rt.storage, obj)
        } else {
            state.insert(&rt.storage, obj)
        };
        self.after_write(&mut state, &rt, &stored);
        Ok(stored)
    }

    /// Controllers that react to a write (PDB status, finalizer-driven deletion).
    fn after_write(&self, state: &mut State, rt: &ResourceType, stored: &Value) {
        let ns = stored["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if rt.storage == PODS
            || rt.storage == PDBS
            || rt.storage == "replicasets.apps"
            || rt.storage == "statefulsets.apps"
        {
            controllers::reconcile_pdbs(state, &ns);
        }
        let finalizers_gone = stored["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty());
        if controllers::is_terminating(stored) && finalizers_gone && rt.storage != PODS {
            state.remove(&rt.storage, &key_of(stored));
        }
    }

    /// Shared tail of PUT and PATCH: merge the client's version into the stored object.
    fn commit_update(
        &self,
        state: &mut State,
        t: &Target,
        old: &Value,
        mut new: Value,
        req: &Request,
        own: Ownership,
    ) -> ApiResult {
        let rt = &t.rt;
        // Optimistic concurrency: a resourceVersion the client sends must be the current one.
        if let Some(rv) = new["metadata"]["resourceVersion"]
            .as_str()
            .filter(|s| !s.is_empty())
        {
            if rv
                != old["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
            {
                return Err(ApiError::conflict(&rt.name(), t.name()));
            }
        }
        if new["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n != t.name())
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({})",
                new["metadata"]["name"].as_str().unwrap_or_default(),
                t.name()
            )));
        }
        new = self.to_storage(rt, new);
        // The status subresource takes only status; the main resource never takes status.
        if rt.has_status {
            if t.is_status() {
                let mut merged = old.clone();
                merged["status"] = new.get("status").cloned().unwrap_or(Value::Null);
                if merged["status"].is_null() {
                    merged
                        .as_object_mut()
                        .expect("object")
                        .shift_remove("status");
                }
                new = merged;
            } else {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.shift_remove("status");
                        }
                    }
                }
            }
        }
        // Server-owned metadata cannot be changed by clients.
        {
            let old_meta = &old["metadata"];
            let meta = new["metadata"]
                .as_object_mut()
                .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
            for k in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "managedFields",
                "resourceVersion",
            ] {
                match old_meta.get(k) {
                    Some(v) => {
                        meta.insert(k.into(), v.clone());
                    }
                    None => {
                        meta.shift_remove(k);
                    }
                }
            }
        }
        new["kind"] = old["kind"].clone();
        new["apiVersion"] = old["apiVersion"].clone();
        let warnings = self.check_custom(rt, &mut new, Some(old), req)?;
        if rt.has_generation && new.get("spec") != old.get("spec") {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
            new["metadata"]["generation"] = json!(g + 1);
        }
        match own {
            Ownership::Update => {
                let changed = managed::changed_set(&strip_for_set(old), &strip_for_set(&new));
                managed::record(
                    &mut new,
                    &req.manager(),
                    "Update",
                    t.sub.as_deref(),
                    &rt.api_version(),
                    changed,
                    false,
                );
            }
            Ownership::Apply(manager, set) => {
                managed::record(
                    &mut new,
                    &manager,
                    "Apply",
                    t.sub.as_deref(),
                    &rt.api_version(),
                    set,
                    true,
                );
            }
        }
        self.finish_shape(rt, &mut new);
        if same_ignoring_times(old, &new) {
            return Ok(JsonReply {
                status: 200,
                body: self.render(rt, old),
                warnings,
            });
        }
        if req.dry_run() {
            return Ok(JsonReply {
                status: 200,
                body: self.render(rt, &new),
                warnings,
            });
        }
        let stored = state.replace(&rt.storage, new);
        self.after_write(state, rt, &stored);
        Ok(JsonReply {
            status: 200,
            body: self.render(rt, &stored),
            warnings,
        })
    }

    pub fn update(&self, t: &Target, req: &Request) -> ApiResult {
        let body = self.decode_body(t, req)?;
        let mut state = self.lock();
        let old = state
            .get(&t.rt.storage, &t.key())
            .cloned()
            .ok_or_else(|| ApiError::not_found(&t.rt.name(), t.name()))?;
        if t.rt.is_custom()
            && body["metadata"]["resourceVersion"]
                .as_str()
                .is_none_or(str::is_empty)
        {
            return Err(ApiError::invalid(
                &t.rt.kind,
                &t.rt.group,
                t.name(),
                &[Cause::new(
                    "FieldValueInvalid",
                    "metadata.resourceVersion",
                    "Invalid value: 0x0: must be specified for an update",
                )],
            ));
        }
        self.commit_update(&mut state, t, &old, body, req, Ownership::Update)
    }

    pub fn patch(&self, t: &Target, req: &Request) -> ApiResult {
        let ctype = req
            .content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        match ctype.as_str() {
            "application/merge-patch+json"
            | "application/json-patch+json"
            | "application/apply-patch+yaml" => {}
            "application/strategic-merge-patch+json" if !t.rt.is_custom() => {}
            _ if t.rt.is_custom() => return Err(ApiError::unsupported_patch_for_custom_resource()),
            _ => return Err(ApiError::unsupported_media_type()),
        }
        if ctype == "application/apply-patch+yaml" {
            return self.apply(t, req);
        }
        let patch = parse_json(&req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
        let mut state = self.lock();
        let old = state
            .get(&t.rt.storage, &t.key())
            .cloned()
            .ok_or_else(|| ApiError::not_found(&t.rt.name(), t.name()))?;
        let mut doc = self.render(&t.rt, &old);
        match ctype.as_str() {
            "application/merge-patch+json" => patch::merge_patch(&mut doc, &patch),
            "application/json-patch+json" => {
                patch::json_patch(&mut doc, &patch).map_err(|e| match e {
                    JsonPatchError::TestFailed => ApiError::invalid_generic(),
                    JsonPatchError::Invalid(m) => {
                        let mut err = ApiError::invalid_generic();
                        err.body["message"] = json!(m);
                        err
                    }
                })?
            }
            _ => patch::strategic_merge_patch(&mut doc, &patch).map_err(ApiError::bad_request)?,
        }
        if !doc.is_object() || !doc["metadata"].is_object() {
            return Err(ApiError::bad_request(
                "the patched object is not a valid object",
            ));
        }
        self.commit_update(&mut state, t, &old, doc, req, Ownership::Update)
    }

    /// Server-side apply (`application/apply-patch+yaml`).
    fn apply(&self, t: &Target, req: &Request) -> ApiResult {
        let Some(manager) = req.q("fieldManager").filter(|m| !m.is_empty()) else {
            return Err(ApiError::invalid(
                "PatchOptions",
                "meta.k8s.io",
                "",
                &[Cause::new(
                    "FieldValueRequired",
                    "fieldManager",
                    "Required value: is required for apply patch",
                )],
            ));
        };
        let text = String::from_utf8_lossy(&req.body);
        let applied: Value = serde_yaml::from_str(&text)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        if !applied.is_object() {
            return Err(ApiError::bad_request(
                "error decoding YAML: the apply configuration is not an object",
            ));
        }
        // Unlike create, update and the other patches (which prune unknown fields, with a warning),
        // server-side apply converts the configuration to a typed object first, and a field the
        // schema does not declare fails that conversion: structured-merge-diff's error as a plain
        // error, which the server answers as a 500 without a reason (kube-apiserver 1.32,
        // `structuredMergeManager.Apply` in apimachinery's managedfields; kubernetes#139253).
        if let Some(custom) = &t.rt.custom {
            let undeclared = validate::undeclared_fields(&custom.schema, &applied);
            if !undeclared.is_empty() {
                let errors: Vec<String> = undeclared
                    .iter()
                    .map(|p| format!("{p}: field not declared in schema"))
                    .collect();
                let errors = if errors.len() == 1 {
                    errors[0].clone()
                } else {
                    format!("errors:\n  {}", errors.join("\n  "))
                };
                return Err(ApiError::unclassified(
                    500,
                    format!(
                        "failed to create typed patch object ({}/{}; {}, Kind={}): {errors}",
                        applied["metadata"]["namespace"]
                            .as_str()
                            .unwrap_or_default(),
                        applied["metadata"]["name"].as_str().unwrap_or_default(),
                        t.rt.api_version(),
                        t.rt.kind
                    ),
                ));
            }
        }
        let mut state = self.lock();
        let Some(old) = state.get(&t.rt.storage, &t.key()).cloned() else {
            if t.sub.is_some() {
                return Err(ApiError::not_found(&t.rt.name(), t.name()));
            }
            drop(state);
            let mut create_req = req.clone();
            create_req.body = Bytes::from(serde_json::to_vec(&applied).unwrap_or_default());
            let mut reply = self.create(t, &create_req)?;
            // Record the create as this manager's Apply.
            let mut state = self.lock();
            if let Some(mut obj) = state.get(&t.rt.storage, &t.key()).cloned() {
                if let Some(mf) = obj
                    .pointer_mut("/metadata/managedFields")
                    .and_then(Value::as_array_mut)
                {
                    mf.clear();
                }
                let set = managed::request_set(&applied, false);
                managed::record(
                    &mut obj,
                    manager,
                    "Apply",
                    None,
                    &t.rt.api_version(),
                    set,
                    true,
                );
                let stored = state.replace(&t.rt.storage, obj);
                reply.body = self.render(&t.rt, &stored);
            }
            return Ok(reply);
        };
        // The part of the configuration this endpoint owns.
        let mut config = applied.clone();
        if t.rt.has_status {
            let cm = config.as_object_mut().expect("object");
            if t.is_status() {
                cm.retain(|k, _| {
                    matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status")
                });
            } else {
                cm.shift_remove("status");
            }
        }
        let new_set = managed::request_set(&config, false);
        let mut live = self.render(&t.rt, &old);
        if let Some(prev) = managed::previous_apply(&old, manager, t.sub.as_deref()) {
            let mut dropped = prev.clone();
            managed::subtract(&mut dropped, &new_set);
            managed::remove_fields(&mut live, &dropped);
        }
        let mut body = config.clone();
        if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.retain(|k, _| {
                matches!(
                    k.as_str(),
                    "labels" | "annotations" | "finalizers" | "ownerReferences" | "resourceVersion"
                )
            });
        }
        patch::strategic_merge_patch(&mut live, &body).map_err(ApiError::bad_request)?;
        self.commit_update(
            &mut state,
            t,
            &old,
            live,
            req,
            Ownership::Apply(manager.to_string(), new_set),
        )
    }

    // ----------------------------------------------------------------------------- deletes

    pub fn delete(&self, t: &Target, req: &Request) -> ApiResult {
        let opts = if req.body.is_empty() {
            json!({})
        } else {
            parse_json(&req.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
        };
        let grace = opts["gracePeriodSeconds"]
            .as_i64()
            .or_else(|| req.q("gracePeriodSeconds").and_then(|g| g.parse().ok()));
        let mut state = self.lock();
        let old = state
            .get(&t.rt.storage, &t.key())
            .cloned()
            .ok_or_else(|| ApiError::not_found(&t.rt.name(), t.name()))?;
        check_preconditions(&t.rt, t.name(), &old, &opts["preconditions"])?;
        if req.dry_run() {
            return Ok(JsonReply::ok(200, self.render(&t.rt, &old)));
        }
        self.delete_object(&mut state, t, old, grace)
    }

    fn delete_object(
        &self,
        state: &mut State,
        t: &Target,
        old: Value,
        grace: Option<i64>,
    ) -> ApiResult {
        let rt = &t.rt;
        if rt.storage == PODS {
            let pod = pod_delete(state, old, grace);
            self.kubelet_wake.notify_one();
            return Ok(JsonReply::ok(200, self.render(rt, &pod)));
        }
        if old["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
        {
            if controllers::is_terminating(&old) {
                return Ok(JsonReply::ok(200, self.render(rt, &old)));
            }
            let mut obj = old;
            obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            self.finish_shape(rt, &mut obj);
            let stored = state.replace(&rt.storage, obj);
            return Ok(JsonReply::ok(200, self.render(rt, &stored)));
        }
        if rt.storage == "namespaces" {
            let ns = t.name().to_string();
            let storages: Vec<String> = state.objects.keys().cloned().collect();
            for s in storages {
                let keys: Vec<String> = state
                    .list(&s)
                    .filter(|(_, o)| o["metadata"]["namespace"] == ns.as_str())
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in keys {
                    state.remove(&s, &k);
                }
            }
        }
        let removed = state.remove(&rt.storage, &t.key()).expect("exists");
        let ns = removed["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if rt.storage == PDBS {
            controllers::reconcile_pdbs(state, &ns);
        }
        if rt.storage == "namespaces" || rt.storage == "events" {
            return Ok(JsonReply::ok(200, self.render(rt, &removed)));
        }
        let uid = removed["metadata"]["uid"].as_str().unwrap_or_default();
        Ok(JsonReply::ok(
            200,
            crate::status::deleted(&rt.name(), t.name(), uid),
        ))
    }

    pub fn delete_collection(&self, t: &Target, req: &Request) -> ApiResult {
        let (items, _, _) = self.select(t, req)?;
        let mut state = self.lock();
        let mut out = Vec::new();
        for item in items {
            let name = item["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let ns = item["metadata"]["namespace"].as_str().map(String::from);
            let target = Target {
                rt: t.rt.clone(),
                namespace: ns,
                name: Some(name),
                sub: None,
            };
            if let Some(old) = state.get(&t.rt.storage, &target.key()).cloned() {
                if !req.dry_run() {
                    self.delete_object(&mut state, &target, old.clone(), None)?;
                }
                let mut o = old;
                if let Some(m) = o.as_object_mut() {
                    m.shift_remove("kind");
                    m.shift_remove("apiVersion");
                }
                out.push(o);
            }
        }
        Ok(JsonReply::ok(
            200,
            json!({"kind": t.rt.list_kind(), "apiVersion": t.rt.api_version(), "metadata": {"resourceVersion": state.rv.to_string()}, "items": out}),
        ))
    }

    // ----------------------------------------------------------------------------- eviction

    pub fn evict(&self, t: &Target, req: &Request) -> ApiResult {
        let body = parse_json(&req.body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?;
        let kind = body["kind"].as_str().unwrap_or("Eviction");
        let api_version = body["apiVersion"].as_str().unwrap_or("policy/v1");
        if kind != "Eviction" || !matches!(api_version, "policy/v1" | "policy/v1beta1") {
            return Err(ApiError::bad_request(format!(
                "{kind} in version \"{}\" cannot be handled as a Eviction: no kind \"{kind}\" is registered for version \"{api_version}\"",
                api_version.split('/').next_back().unwrap_or_default()
            )));
        }
        if body["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n != t.name())
        {
            return Err(ApiError::bad_request(
                "name in URL does not match name in Eviction object",
            ));
        }
        let dry_run = req.dry_run()
            || body["deleteOptions"]["dryRun"]
                .as_array()
                .is_some_and(|d| d.iter().any(|x| x == "All"));
        let opts = &body["deleteOptions"];
        let grace = opts["gracePeriodSeconds"].as_i64();
        let mut state = self.lock();
        let pod = state
            .get(PODS, &t.key())
            .cloned()
            .ok_or_else(|| ApiError::not_found(&t.rt.name(), t.name()))?;
        check_preconditions(&t.rt, t.name(), &pod, &opts["preconditions"])?;
        let phase = pod["status"]["phase"].as_str().unwrap_or_default();
        // Pods already terminating or not running cannot be disrupted further: no PDB charge.
        let ignore_pdb = controllers::is_terminating(&pod)
            || matches!(phase, "Succeeded" | "Failed" | "Pending");
        if !ignore_pdb {
            let pdbs: Vec<Value> = state
                .list(PDBS)
                .map(|(_, p)| p.clone())
                .filter(|p| controllers::pdb_selects(p, &pod))
                .collect();
            if pdbs.len() > 1 {
                return Err(ApiError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ));
            }
            if let Some(pdb) = pdbs.into_iter().next() {
                self.charge_pdb(&mut state, &pod, pdb, dry_run)?;
            }
        }
        if dry_run {
            return Ok(JsonReply::ok(201, crate::status::success(201)));
        }
        // First write: the DisruptionTarget condition; second: the deletion itself.
        let mut pod = pod;
        if !controllers::is_terminating(&pod) {
            let mut conds = pod["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            conds.retain(|c| c["type"] != "DisruptionTarget");
            conds.push(json!({"type": "DisruptionTarget", "status": "True", "lastProbeTime": null,
                "lastTransitionTime": now_rfc3339(), "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting"}));
            pod["status"]["conditions"] = Value::Array(conds);
            pod = state.replace(PODS, pod);
        }
        pod_delete(&mut state, pod, grace);
        self.kubelet_wake.notify_one();
        Ok(JsonReply::ok(201, crate::status::success(201)))
    }

    fn charge_pdb(
        &self,
        state: &mut State,
        pod: &Value,
        pdb: Value,
        dry_run: bool,
    ) -> Result<(), ApiError> {
        let name = pdb["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let status = &pdb["status"];
        if !controllers::is_pod_ready(pod) {
            let policy = pdb["spec"]["unhealthyPodEvictionPolicy"].as_str();
            let current = status["currentHealthy"].as_i64().unwrap_or(0);
            let desired = status["desiredHealthy"].as_i64().unwrap_or(0);
            if policy == Some("AlwaysAllow") || (current >= desired && desired > 0) {
                return Ok(());
            }
        }
        let generation = pdb["metadata"]["generation"].as_i64().unwrap_or(0);
        if status["observedGeneration"].as_i64().unwrap_or(0) < generation {
            return Err(ApiError::too_many_requests(
                "Cannot evict pod as it would violate the pod's disruption budget.",
                Some(
                    json!([{"reason": "DisruptionBudget", "message": format!("The disruption budget {name} is still being processed by the server.")}]),
                ),
            ));
        }
        let allowed = status["disruptionsAllowed"].as_i64().unwrap_or(0);
        if allowed <= 0 {
            return Err(ApiError::too_many_requests(
                "Cannot evict pod as it would violate the pod's disruption budget.",
                Some(json!([{"reason": "DisruptionBudget", "message": format!(
                    "The disruption budget {name} needs {} healthy pods and has {} currently",
                    status["desiredHealthy"].as_i64().unwrap_or(0),
                    status["currentHealthy"].as_i64().unwrap_or(0)
                )}])),
            ));
        }
        if !dry_run {
            let mut pdb = pdb;
            pdb["status"]["disruptionsAllowed"] = json!(allowed - 1);
            let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
            pdb["status"]["disruptedPods"] = json!({pod_name: now_rfc3339()});
            state.replace(PDBS, pdb);
        }
        Ok(())
    }
}

/// Pod conditions serialise `lastProbeTime` even when unset (as null), in Go struct order.
pub fn normalize_pod_conditions(pod: &mut Value) {
    let Some(conds) = pod
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for c in conds.iter_mut() {
        let Some(m) = c.as_object_mut() else { continue };
        let mut out = Map::new();
        for k in [
            "type",
            "status",
            "observedGeneration",
            "lastProbeTime",
            "lastTransitionTime",
            "reason",
            "message",
        ] {
            match m.shift_remove(k) {
                Some(v) => {
                    out.insert(k.into(), v);
                }
                None if k == "lastProbeTime" => {
                    out.insert(k.into(), Value::Null);
                }
                None => {}
            }
        }
        out.extend(std::mem::take(m));
        *m = out;
    }
}

/// Start (or finish) a pod's deletion with the effective grace period.
fn pod_delete(state: &mut State, pod: Value, grace: Option<i64>) -> Value {
    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
    let unscheduled = pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty);
    let mut grace = grace
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30)
        .max(0);
    if unscheduled || matches!(phase, "Succeeded" | "Failed") {
        grace = 0;
    }
    if grace == 0 {
        return controllers::finish_pod_deletion(state, pod);
    }
    if controllers::is_terminating(&pod) {
        // Only a shorter grace period changes a deletion already under way.
        let current = pod["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(i64::MAX);
        if grace >= current {
            return pod;
        }
    }
    controllers::start_graceful_deletion(state, pod, grace)
}

fn check_preconditions(
    rt: &ResourceType,
    name: &str,
    obj: &Value,
    pre: &Value,
) -> Result<(), ApiError> {
    if let Some(uid) = pre["uid"].as_str() {
        let have = obj["metadata"]["uid"].as_str().unwrap_or_default();
        if uid != have {
            return Err(ApiError::precondition_conflict(
                &rt.kind, name, "UID", uid, have,
            ));
        }
    }
    if let Some(rv) = pre["resourceVersion"].as_str() {
        let have = obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default();
        if rv != have {
            return Err(ApiError::precondition_conflict(
                &rt.kind,
                name,
                "ResourceVersion",
                rv,
                have,
            ));
        }
    }
    Ok(())
}

fn strip_for_set(v: &Value) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.as_object_mut() {
        m.shift_remove("kind");
        m.shift_remove("apiVersion");
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.retain(|k, _| {
                matches!(
                    k.as_str(),
                    "labels" | "annotations" | "ownerReferences" | "finalizers"
                )
            });
        }
    }
    c
}

/// Equal apart from the RV and the times in managedFields: such a write is a no-op.
fn same_ignoring_times(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut c = v.clone();
        if let Some(meta) = c["metadata"].as_object_mut() {
            meta.shift_remove("resourceVersion");
            if let Some(Value::Array(mf)) = meta.get_mut("managedFields") {
                for e in mf.iter_mut() {
                    if let Some(m) = e.as_object_mut() {
                        m.shift_remove("time");
                    }
                }
            }
        }
        c
    };
    strip(a) == strip(b)
}

/// How a write is recorded in managedFields.
enum Ownership {
    Update,
    Apply(String, Value),
}

pub fn encode_continue(rv: i64, start: &str) -> String {
    use base64::Engine;
    let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(token: &str) -> Result<(i64, String), ApiError> {
    use base64::Engine;
    let bad = |detail: String| {
        ApiError::bad_request(format!(
            "invalid continue token: continue key is not valid: {detail}"
        ))
    };
    // Like Go's RawURLEncoding: lenient about trailing bits.
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let raw = lenient
        .decode(token)
        .map_err(|_| bad("illegal base64 data at input byte 0".into()))?;
    let v: Value = serde_json::from_slice(&raw).map_err(|e| {
        let first = raw.first().copied().unwrap_or(b' ');
        let ch = char::from_u32(first as u32).unwrap_or(' ');
        let shown = if ch.is_ascii_graphic() {
            ch.to_string()
        } else {
            format!("\\u{:04x}", first)
        };
        let _ = e;
        bad(format!(
            "invalid character '{shown}' looking for beginning of value"
        ))
    })?;
    if v["v"] != "meta.k8s.io/v1" {
        return Err(bad("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)".into()));
    }
    Ok((
        v["rv"].as_i64().unwrap_or(0),
        v["start"].as_str().unwrap_or_default().to_string(),
    ))
}
