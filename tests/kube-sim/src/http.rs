//! HTTP front: URL routing, the bearer-token check, fault injection and latency, request
//! accounting, and the `/_sim/…` control API.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio_stream::wrappers::ReceiverStream;

use crate::api::{ApiResult, Core, JsonReply, Request, Target};
use crate::discovery;
use crate::faults::{FaultRule, RequestRecord};
use crate::status::ApiError;
use crate::table;

/// Where a path leads.
enum Route {
    Version,
    Health,
    ApiVersions,
    Groups,
    Group(String),
    Resources(String, String),
    Resource(Target),
    NotFound,
}

fn route(core: &Core, path: &str) -> Route {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segs.as_slice() {
        ["version"] => Route::Version,
        ["healthz"] | ["livez"] | ["readyz"] => Route::Health,
        ["api"] => Route::ApiVersions,
        ["apis"] => Route::Groups,
        ["api", v] => Route::Resources(String::new(), v.to_string()),
        ["apis", g] => Route::Group(g.to_string()),
        ["apis", g, v] => Route::Resources(g.to_string(), v.to_string()),
        ["api", v, rest @ ..] => resource_route(core, "", v, rest),
        ["apis", g, v, rest @ ..] => resource_route(core, g, v, rest),
        _ => Route::NotFound,
    }
}

fn resource_route(core: &Core, group: &str, version: &str, rest: &[&str]) -> Route {
    let reg = &core.registry;
    // /namespaces/{ns}/{plural}[/{name}[/{sub}]] when {plural} is a namespaced type.
    if rest.len() >= 3 && rest[0] == "namespaces" {
        if let Some(rt) = reg.find(group, version, rest[2]).filter(|t| t.namespaced) {
            if rest.len() > 5 {
                return Route::NotFound;
            }
            return Route::Resource(Target {
                rt,
                namespace: Some(rest[1].to_string()),
                name: rest.get(3).map(|s| s.to_string()),
                sub: rest.get(4).map(|s| s.to_string()),
            });
        }
    }
    let Some(rt) = reg.find(group, version, rest[0]) else {
        return Route::NotFound;
    };
    if rest.len() > 3 || (rt.namespaced && rest.len() > 1) {
        return Route::NotFound;
    }
    Route::Resource(Target {
        rt,
        namespace: None,
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
    })
}

fn verb_of(method: &Method, t: &Target, req: &Request) -> &'static str {
    let watch = matches!(req.q("watch"), Some("true") | Some("1"));
    match (method.as_str(), t.name.is_some()) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

fn resource_label(t: &Target) -> String {
    let mut r = t.rt.qualified();
    if let Some(sub) = &t.sub {
        r.push('/');
        r.push_str(sub);
    }
    r
}

fn json_response(
    status: u16,
    body: &Value,
    content_type: &str,
    extra: &[(String, String)],
) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/json")),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    for (k, v) in extra {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.append(name, value);
        }
    }
    resp
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.body, "application/json", &e.headers)
}

fn reply_response(r: JsonReply) -> Response {
    let warnings: Vec<(String, String)> = r
        .warnings
        .iter()
        .map(|w| {
            (
                "warning".to_string(),
                format!("299 - {}", serde_json::to_string(w).unwrap_or_default()),
            )
        })
        .collect();
    json_response(r.status, &r.body, "application/json", &warnings)
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The single handler behind every path.
pub async fn handle(
    core: Arc<Core>,
    server_addr: String,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, 256 * 1024 * 1024).await {
        Ok(b) => b,
        Err(_) => {
            return error_response(&ApiError::bad_request(
                "request body too large or unreadable",
            ));
        }
    };
    let path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().unwrap_or_default().to_string();
    let req = Request {
        method: parts.method.to_string(),
        query: form_urlencoded::parse(raw_query.as_bytes())
            .into_owned()
            .collect(),
        accept: header_str(&parts.headers, header::ACCEPT),
        content_type: header_str(&parts.headers, header::CONTENT_TYPE),
        user_agent: header_str(&parts.headers, header::USER_AGENT),
        body,
    };
    if let Some(rest) = path.strip_prefix("/_sim/") {
        return control(&core, &parts.method, rest, &req);
    }
    let path_and_query = if raw_query.is_empty() {
        path.clone()
    } else {
        format!("{path}?{raw_query}")
    };
    let route = route(&core, &path);
    let (verb, resource) = match &route {
        Route::Resource(t) => (
            verb_of(&parts.method, t, &req).to_string(),
            resource_label(t),
        ),
        _ => (parts.method.as_str().to_lowercase(), String::new()),
    };
    let mut record = RequestRecord {
        method: req.method.clone(),
        path_and_query,
        verb: verb.clone(),
        resource: resource.clone(),
        status: 0,
        accept: req.accept.clone(),
        content_type: req.content_type.clone(),
        body: (!req.body.is_empty() && req.body.len() < 4096)
            .then(|| String::from_utf8_lossy(&req.body).to_string()),
    };
    let (latency, fault) = {
        let mut c = core.controls.lock().unwrap_or_else(|e| e.into_inner());
        c.count(&verb, &resource);
        if !c.latency.is_zero() {
            c.report.delayed += 1;
        }
        (c.latency, c.take_fault(&verb, &path))
    };
    let public = matches!(route, Route::Version | Route::Health);
    let resp = if let (Some(token), false) = (&core.opts.token, public) {
        let auth = header_str(&parts.headers, header::AUTHORIZATION);
        if auth.strip_prefix("Bearer ").map(str::trim) != Some(token.as_str()) {
            Some(error_response(&ApiError::unauthorized()))
        } else {
            None
        }
    } else {
        None
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let resp = match (resp, fault) {
        (Some(r), _) => r,
        (None, Some(rule)) => {
            error_response(&ApiError::injected(rule.status, rule.message.as_deref()))
        }
        (None, None) => dispatch(&core, &server_addr, route, &parts.method, &req, &verb),
    };
    record.status = resp.status().as_u16();
    let mut controls = core.controls.lock().unwrap_or_else(|e| e.into_inner());
    if record.status == 410 {
        // A list (or a continue token) older than the compacted history; watches count in watch.rs.
        controls.report.expired += 1;
    }
    drop(controls);
    tracing::debug!(method = %record.method, path = %record.path_and_query, status = record.status, "request");
    core.controls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .record(record);
    resp
}

fn dispatch(
    core: &Arc<Core>,
    server_addr: &str,
    route: Route,
    method: &Method,
    req: &Request,
    verb: &str,
) -> Response {
    let reg = &core.registry;
    let get_only = |v: Option<Value>, ct: &str| -> Response {
        if method != Method::GET {
            return error_response(&ApiError::method_not_allowed());
        }
        match v {
            Some(v) => json_response(200, &v, ct, &[]),
            None => error_response(&ApiError::path_not_found()),
        }
    };
    match route {
        Route::Version => get_only(Some(discovery::version()), "application/json"),
        Route::Health => {
            let mut r = Response::new(Body::from("ok"));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
        Route::ApiVersions => {
            if discovery::wants_aggregated(&req.accept) {
                get_only(
                    Some(discovery::aggregated(reg, true)),
                    discovery::AGGREGATED_CONTENT_TYPE,
                )
            } else {
                get_only(
                    Some(discovery::api_versions(server_addr)),
                    "application/json",
                )
            }
        }
        Route::Groups => {
            if discovery::wants_aggregated(&req.accept) {
                get_only(
                    Some(discovery::aggregated(reg, false)),
                    discovery::AGGREGATED_CONTENT_TYPE,
                )
            } else {
                get_only(Some(discovery::api_group_list(reg)), "application/json")
            }
        }
        Route::Group(g) => get_only(discovery::api_group(reg, &g), "application/json"),
        Route::Resources(g, v) => {
            get_only(discovery::resource_list(reg, &g, &v), "application/json")
        }
        Route::NotFound => error_response(&ApiError::path_not_found()),
        Route::Resource(t) => resource(core, t, req, verb),
    }
}

fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

fn resource(core: &Arc<Core>, t: Target, req: &Request, verb: &str) -> Response {
    // The served custom types are fixed at start (`SimOptions::feature_set`): a written CRD would
    // not change them, so kube-sim refuses the write rather than pretend (a real server accepts it).
    if t.rt.storage == "customresourcedefinitions.apiextensions.k8s.io"
        && !matches!(verb, "get" | "list" | "watch")
    {
        return error_response(&ApiError::method_not_allowed());
    }
    let sub = t.sub.clone();
    let result: ApiResult = match (verb, sub.as_deref()) {
        ("watch", None) => {
            return match crate::watch::start(core.clone(), t, req) {
                Ok(rx) => {
                    let stream =
                        futures::StreamExt::map(ReceiverStream::new(rx), Ok::<_, std::io::Error>);
                    let mut resp = Response::new(Body::from_stream(stream));
                    resp.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    resp.headers_mut().insert(
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("no-cache, private"),
                    );
                    resp
                }
                Err(e) => error_response(&e),
            };
        }
        ("list", None) if wants_table(&req.accept) => {
            core.select(&t, req).map(|(items, rv, cont)| {
                let include = req.q("includeObject").unwrap_or("Metadata");
                JsonReply {
                    status: 200,
                    body: table::table(
                        &t.rt,
                        &items,
                        &rv.to_string(),
                        cont.as_ref().map(|c| c.0.as_str()),
                        include,
                    ),
                    warnings: Vec::new(),
                }
            })
        }
        ("get", None) if wants_table(&req.accept) => core.get(&t).map(|r| {
            let rv = r.body["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let include = req.q("includeObject").unwrap_or("Metadata");
            JsonReply {
                status: 200,
                body: table::table(&t.rt, &[r.body], &rv, None, include),
                warnings: Vec::new(),
            }
        }),
        ("list", None) => core.list(&t, req),
        ("get", None) | ("get", Some("status"))
            if sub.as_deref() != Some("status") || t.rt.has_status =>
        {
            core.get(&t)
        }
        ("create", None) if t.name.is_none() => core.create(&t, req),
        ("create", Some("eviction")) if t.rt.has_eviction => core.evict(&t, req),
        ("update", None) => core.update(&t, req),
        ("update", Some("status")) if t.rt.has_status => core.update(&t, req),
        ("patch", None) => core.patch(&t, req),
        ("patch", Some("status")) if t.rt.has_status => core.patch(&t, req),
        ("delete", None) => core.delete(&t, req),
        ("deletecollection", None) => core.delete_collection(&t, req),
        (_, Some(_))
            if t.name.is_some() && !matches!(sub.as_deref(), Some("status") | Some("eviction")) =>
        {
            Err(ApiError::path_not_found())
        }
        _ => Err(ApiError::method_not_allowed()),
    };
    match result {
        Ok(r) => reply_response(r),
        Err(e) => error_response(&e),
    }
}

/// The `/_sim/…` control API (the same operations as the library handle).
fn control(core: &Arc<Core>, method: &Method, rest: &str, req: &Request) -> Response {
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let ok = |v: Value| json_response(200, &v, "application/json", &[]);
    let bad = |m: String| error_response(&ApiError::bad_request(m));
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    match (method.as_str(), segs.as_slice()) {
        ("POST", ["faults"]) => match serde_json::from_value::<FaultRule>(body) {
            Ok(rule) => {
                crate::inject(core, rule);
                ok(json!({"ok": true}))
            }
            Err(e) => bad(format!("invalid fault rule: {e}")),
        },
        ("GET", ["faults"]) => ok(serde_json::to_value(
            core.controls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .report
                .clone(),
        )
        .unwrap_or(Value::Null)),
        ("DELETE", ["faults"]) => {
            core.controls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .faults
                .clear();
            ok(json!({"ok": true}))
        }
        ("POST", ["drop-watches"]) => {
            crate::drop_watches(core);
            ok(json!({"ok": true}))
        }
        ("POST", ["compact"]) => {
            core.lock().compact();
            ok(json!({"ok": true}))
        }
        ("POST", ["latency"]) => {
            let ms = body["millis"].as_u64().unwrap_or(0);
            core.controls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .latency = Duration::from_millis(ms);
            ok(json!({"ok": true}))
        }
        ("POST", ["pods", ns, name, "ready"]) => {
            let ready = body["ready"].as_bool().unwrap_or(true);
            match crate::controllers::set_pod_ready(
                &mut core.lock(),
                &format!("{ns}/{name}"),
                ready,
            ) {
                Some(p) => ok(p),
                None => error_response(&ApiError::not_found(
                    &crate::status::ResourceName {
                        plural: "pods",
                        group: "",
                    },
                    name,
                )),
            }
        }
        ("GET", ["counters"]) => ok(json!(
            core.controls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .counters
        )),
        ("DELETE", ["counters"]) => {
            let mut c = core.controls.lock().unwrap_or_else(|e| e.into_inner());
            c.counters.clear();
            c.log.clear();
            ok(json!({"ok": true}))
        }
        ("GET", ["requests"]) => ok(json!(
            core.controls.lock().unwrap_or_else(|e| e.into_inner()).log
        )),
        ("POST", ["objects"]) => {
            let text = String::from_utf8_lossy(&req.body);
            match crate::load_yaml_str(core, &text) {
                Ok(n) => ok(json!({"loaded": n})),
                Err(e) => bad(format!("{e:#}")),
            }
        }
        _ => error_response(&ApiError::path_not_found()),
    }
}
