//! WATCH: a chunked stream of `{"type":…,"object":…}` lines with the real server's semantics
//! (initial ADDEDs for RV 0/unset, replay from a given RV, 410 as an ERROR event when that RV is
//! older than the history window, BOOKMARKs, selector-aware ADDED/DELETED, clean close on timeout).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use crate::api::{Core, Request, Target};
use crate::defaults;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::{ApiError, Cause};
use crate::store::{EventType, WatchEvent};

struct Filter {
    target: Target,
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.target.namespace {
            if obj["metadata"]["namespace"] != ns.as_str() {
                return false;
            }
        }
        if let Some(name) = &self.target.name {
            if obj["metadata"]["name"] != name.as_str() {
                return false;
            }
        }
        self.labels
            .as_ref()
            .is_none_or(|s| s.matches(&obj["metadata"]["labels"]))
            && self.fields.as_ref().is_none_or(|s| s.matches(obj))
    }

    /// What a watcher with this filter sees of one change.
    fn convert(&self, ev: &WatchEvent) -> Option<(&'static str, Value)> {
        if ev.storage != self.target.rt.storage {
            return None;
        }
        let now = self.matches(&ev.object);
        match ev.etype {
            EventType::Added => now.then_some(("ADDED", ev.object.clone())),
            EventType::Deleted => now.then_some(("DELETED", ev.object.clone())),
            EventType::Modified => {
                let before = ev.prev.as_ref().map(|p| self.matches(p)).unwrap_or(now);
                match (before, now) {
                    (true, true) => Some(("MODIFIED", ev.object.clone())),
                    (false, true) => Some(("ADDED", ev.object.clone())),
                    (true, false) => Some(("DELETED", ev.object.clone())),
                    (false, false) => None,
                }
            }
        }
    }
}

fn line(etype: &str, object: Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": etype, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn forbidden(field: &str, message: &str) -> ApiError {
    ApiError::invalid(
        "ListOptions",
        "meta.k8s.io",
        "",
        &[Cause::new(
            "FieldValueForbidden",
            field,
            format!("Forbidden: {message}"),
        )],
    )
}

/// Validate a watch request and start streaming it; the receiver yields the body chunks.
pub fn start(
    core: Arc<Core>,
    target: Target,
    req: &Request,
) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let labels = req
        .q("labelSelector")
        .map(LabelSelector::parse)
        .transpose()?;
    let fields = req
        .q("fieldSelector")
        .map(|s| FieldSelector::parse(s, &target.rt.kind))
        .transpose()?;
    let rv_param = req
        .q("resourceVersion")
        .filter(|s| !s.is_empty())
        .map(String::from);
    let allow_bookmarks = req.q("allowWatchBookmarks") == Some("true");
    let send_initial = req.q("sendInitialEvents") == Some("true");
    let rv_match = req.q("resourceVersionMatch").filter(|s| !s.is_empty());
    if req.q("sendInitialEvents").is_some() {
        if rv_match != Some("NotOlderThan") {
            return Err(forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if !allow_bookmarks {
            return Err(forbidden(
                "sendInitialEvents",
                "sendInitialEvents requires setting allowWatchBookmarks to true",
            ));
        }
    } else if rv_match.is_some() {
        return Err(forbidden(
            "resourceVersionMatch",
            "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        ));
    }
    let timeout = req
        .q("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(core.opts.default_watch_timeout);
    let filter = Filter {
        target,
        labels,
        fields,
    };
    let rt = filter.target.rt.clone();
    let (tx, rx) = mpsc::channel::<Bytes>(1024);

    // Under the lock: the starting point and the subscription, so nothing falls in between.
    let mut first: Vec<Bytes> = Vec::new();
    let (events, start_rv, expired) = {
        let state = core.lock();
        let events = state.events_tx.subscribe();
        let initial = rv_param.as_deref().is_none_or(|r| r == "0") || send_initial;
        let mut expired = false;
        let mut start_rv = state.rv;
        if initial {
            for (_, obj) in state.list(&rt.storage) {
                if filter.matches(obj) {
                    first.push(line("ADDED", core.render(&rt, obj)));
                }
            }
            if allow_bookmarks && (send_initial || rv_param.as_deref() == Some("0")) {
                let mut bm = defaults::bookmark_object(
                    &rt.kind,
                    &rt.api_version(),
                    state.rv,
                    rt.is_custom(),
                );
                bm["metadata"]["annotations"] = json!({
                    "k8s.io/initial-events-end": "true",
                    "kubernetes.io/initial-events-list-blueprint": initial_blueprint(&rt.list_kind(), &rt.api_version()),
                });
                first.push(line("BOOKMARK", bm));
            }
        } else {
            let rv: u64 = rv_param.as_deref().unwrap_or("0").parse().unwrap_or(0);
            if rv < state.window_start {
                expired = true;
                first.push(line(
                    "ERROR",
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": format!("too old resource version: {rv} ({})", state.window_start),
                        "reason": "Expired", "code": 410}),
                ));
            } else {
                for ev in state.history.iter().filter(|e| e.rv > rv) {
                    if let Some((ty, obj)) = filter.convert(ev) {
                        first.push(line(ty, core.render(&rt, &obj)));
                    }
                }
                start_rv = rv.max(state.rv);
            }
        }
        (events, start_rv, expired)
    };
    tokio::spawn(stream(
        core,
        filter,
        events,
        first,
        expired,
        start_rv,
        allow_bookmarks,
        timeout,
        tx,
    ));
    Ok(rx)
}

fn initial_blueprint(list_kind: &str, api_version: &str) -> String {
    use base64::Engine;
    let text = format!(
        "{{\"kind\":\"{list_kind}\",\"apiVersion\":\"{api_version}\",\"metadata\":{{}},\"items\":null}}\n"
    );
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[allow(clippy::too_many_arguments)]
async fn stream(
    core: Arc<Core>,
    filter: Filter,
    mut events: broadcast::Receiver<Arc<WatchEvent>>,
    first: Vec<Bytes>,
    expired: bool,
    start_rv: u64,
    allow_bookmarks: bool,
    timeout: Duration,
    tx: mpsc::Sender<Bytes>,
) {
    for chunk in first {
        if tx.send(chunk).await.is_err() {
            return;
        }
    }
    if expired {
        core.controls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .report
            .expired += 1;
        return;
    }
    let rt = filter.target.rt.clone();
    let mut drop_rx = core.drop_tx.subscribe();
    let started = Instant::now();
    let deadline = started + timeout;
    // One bookmark ~2 s before the timeout (as observed), and periodically on long watches.
    let mut next_bookmark = if allow_bookmarks {
        let before_end = timeout
            .checked_sub(Duration::from_secs(2))
            .filter(|d| !d.is_zero());
        let periodic = core.opts.bookmark_interval;
        Some(started + before_end.map_or(periodic, |d| d.min(periodic)))
    } else {
        None
    };
    let mut last_rv = start_rv;
    loop {
        let bookmark_sleep = async {
            match next_bookmark {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            biased;
            // A drop requested before an event was published must win over that event.
            _ = drop_rx.changed() => {
                core.controls
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .report
                    .watches_dropped += 1;
                return;
            }
            ev = events.recv() => match ev {
                Ok(ev) => {
                    if ev.rv <= last_rv {
                        continue;
                    }
                    last_rv = ev.rv;
                    if let Some((ty, obj)) = filter.convert(&ev) {
                        if tx.send(line(ty, core.render(&rt, &obj))).await.is_err() {
                            return;
                        }
                    }
                }
                // A watcher that cannot keep up is closed; clients re-watch from their last RV.
                Err(_) => return,
            },
            _ = tokio::time::sleep_until(deadline) => return,
            _ = bookmark_sleep => {
                let bm = defaults::bookmark_object(&rt.kind, &rt.api_version(), last_rv, rt.is_custom());
                if tx.send(line("BOOKMARK", bm)).await.is_err() {
                    return;
                }
                let next = Instant::now() + core.opts.bookmark_interval;
                let before_end = deadline.checked_sub(Duration::from_secs(2));
                next_bookmark = match before_end {
                    Some(b) if b > Instant::now() && b < next => Some(b),
                    _ if next < deadline => Some(next),
                    _ => None,
                };
            }
            _ = tx.closed() => return,
        }
    }
}
