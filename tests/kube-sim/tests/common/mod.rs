//! Helpers shared by kube-sim's integration tests: a small HTTP client and the golden-file
//! comparison (structural, ignoring each file's `volatile` paths).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    pub base: String,
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    }
}

impl Http {
    pub fn new(base: &str) -> Self {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: base.to_string(),
        }
    }

    fn request(
        &self,
        method: &str,
        pq: &str,
        ctype: Option<&str>,
        headers: &[(String, String)],
        body: Bytes,
    ) -> hyper::Request<Full<Bytes>> {
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, pq));
        if let Some(c) = ctype {
            b = b.header("content-type", c);
        }
        for (k, v) in headers {
            b = b.header(k.as_str(), v.as_str());
        }
        b.body(Full::new(body)).expect("request")
    }

    pub async fn send(
        &self,
        method: &str,
        pq: &str,
        ctype: Option<&str>,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Resp {
        let resp = self
            .client
            .request(self.request(method, pq, ctype, headers, body))
            .await
            .expect("http request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, pq: &str) -> Resp {
        self.send("GET", pq, None, &[], Bytes::new()).await
    }

    pub async fn json(&self, method: &str, pq: &str, ctype: &str, body: &Value) -> Resp {
        self.send(method, pq, Some(ctype), &[], Bytes::from(body.to_string()))
            .await
    }

    /// Read a watch until the server closes it (or `limit` passes): status, events, how long.
    pub async fn watch(&self, pq: &str, limit: Duration) -> (u16, Vec<Value>, Duration) {
        let started = std::time::Instant::now();
        let resp = self
            .client
            .request(self.request("GET", pq, None, &[], Bytes::new()))
            .await
            .expect("watch");
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        let mut events = Vec::new();
        loop {
            let frame =
                match tokio::time::timeout(limit.saturating_sub(started.elapsed()), body.frame())
                    .await
                {
                    Ok(Some(Ok(f))) => f,
                    _ => break,
                };
            if let Some(data) = frame.data_ref() {
                buf.extend_from_slice(data);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                        events.push(v);
                    }
                }
            }
        }
        (status, events, started.elapsed())
    }
}

pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden")
}

pub fn load_golden(name: &str) -> Value {
    let path = golden_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("golden JSON")
}

/// Volatile paths of a golden file, relative to the response body (or to a watch event's object
/// when `events` is true), as segment lists (`*` = any index or key).
pub fn volatile_paths(golden: &Value, events: bool) -> Vec<Vec<String>> {
    let prefix = if events {
        "response.events[*]."
    } else {
        "response.body."
    };
    golden["volatile"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|p| p.split(' ').next())
        .filter_map(|p| p.strip_prefix(prefix))
        .map(split_path)
        .collect()
}

pub fn split_path(p: &str) -> Vec<String> {
    p.replace("[*]", ".*")
        .split('.')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn is_ignored(path: &[String], ignore: &[Vec<String>]) -> bool {
    ignore
        .iter()
        .any(|pat| pat.len() == path.len() && pat.iter().zip(path).all(|(a, b)| a == "*" || a == b))
}

/// Replace runs of digits by `N` (numbers inside messages are volatile).
fn digits_to_n(s: &str) -> String {
    let mut out = String::new();
    let mut in_digits = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('N');
            }
            in_digits = true;
        } else {
            in_digits = false;
            out.push(c);
        }
    }
    out
}

/// Structural comparison; returns human-readable differences. `managedFields` are not compared
/// (kube-sim tracks them approximately), nor any path in `ignore`.
pub fn compare(expected: &Value, actual: &Value, ignore: &[Vec<String>]) -> Vec<String> {
    let mut out = Vec::new();
    walk(expected, actual, &mut Vec::new(), ignore, &mut out);
    out
}

fn walk(
    e: &Value,
    a: &Value,
    path: &mut Vec<String>,
    ignore: &[Vec<String>],
    out: &mut Vec<String>,
) {
    if is_ignored(path, ignore) || path.last().is_some_and(|l| l == "managedFields") {
        return;
    }
    match (e, a) {
        (Value::Object(em), Value::Object(am)) => {
            for (k, ev) in em {
                path.push(k.clone());
                match am.get(k) {
                    Some(av) => walk(ev, av, path, ignore, out),
                    None if is_ignored(path, ignore) => {}
                    None => out.push(format!("{}: missing (expected {ev})", path.join("."))),
                }
                path.pop();
            }
            for k in am.keys() {
                if !em.contains_key(k) {
                    path.push(k.clone());
                    if !is_ignored(path, ignore) {
                        out.push(format!("{}: unexpected {}", path.join("."), am[k]));
                    }
                    path.pop();
                }
            }
        }
        (Value::Array(ea), Value::Array(aa)) => {
            if ea.len() != aa.len() {
                out.push(format!(
                    "{}: {} items, expected {}",
                    path.join("."),
                    aa.len(),
                    ea.len()
                ));
                return;
            }
            for (i, (ev, av)) in ea.iter().zip(aa).enumerate() {
                path.push("*".into());
                let before = out.len();
                walk(ev, av, path, ignore, out);
                for m in out.iter_mut().skip(before) {
                    *m = m.replacen(".*.", &format!("[{i}]."), 1);
                }
                path.pop();
            }
        }
        (Value::String(es), Value::String(as_)) if path.last().is_some_and(|l| l == "message") => {
            if digits_to_n(es) != digits_to_n(as_) {
                out.push(format!("{}: {as_:?}, expected {es:?}", path.join(".")));
            }
        }
        _ => {
            if e != a {
                out.push(format!("{}: {a}, expected {e}", path.join(".")));
            }
        }
    }
}

/// Golden RVs/UIDs → the ones kube-sim handed out, learned from paired responses.
#[derive(Default, Debug)]
pub struct IdMap {
    pub rv: HashMap<String, String>,
    pub uid: HashMap<String, String>,
}

impl IdMap {
    pub fn learn(&mut self, expected: &Value, actual: &Value) {
        match (expected, actual) {
            (Value::Object(em), Value::Object(am)) => {
                for (k, ev) in em {
                    let Some(av) = am.get(k) else { continue };
                    match (k.as_str(), ev, av) {
                        ("resourceVersion", Value::String(e), Value::String(a)) => {
                            self.rv.entry(e.clone()).or_insert(a.clone());
                        }
                        ("uid", Value::String(e), Value::String(a)) => {
                            self.uid.entry(e.clone()).or_insert(a.clone());
                        }
                        _ => self.learn(ev, av),
                    }
                }
            }
            (Value::Array(ea), Value::Array(aa)) => {
                for (e, a) in ea.iter().zip(aa) {
                    self.learn(e, a);
                }
            }
            _ => {}
        }
    }

    /// Rewrite golden RVs and UIDs in a request body (or any value) to kube-sim's.
    pub fn rewrite(&self, v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    match (k.as_str(), x.as_str()) {
                        ("resourceVersion", Some(s)) if self.rv.contains_key(s) => {
                            *x = Value::String(self.rv[s].clone())
                        }
                        ("uid", Some(s)) if self.uid.contains_key(s) => {
                            *x = Value::String(self.uid[s].clone())
                        }
                        _ => self.rewrite(x),
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| self.rewrite(x)),
            Value::String(s) => {
                for (g, o) in &self.uid {
                    if s.contains(g.as_str()) {
                        *s = s.replace(g.as_str(), o);
                    }
                }
            }
            _ => {}
        }
    }

    pub fn rewrite_query(&self, pq: &str) -> String {
        let Some((path, q)) = pq.split_once('?') else {
            return pq.to_string();
        };
        let parts: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some(("resourceVersion", v)) if self.rv.contains_key(v) => {
                    format!("resourceVersion={}", self.rv[v])
                }
                _ => kv.to_string(),
            })
            .collect();
        format!("{path}?{}", parts.join("&"))
    }
}
