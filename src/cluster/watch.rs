//! Watch our own Node only (`metadata.name=<node>`), with kube-runtime's watcher: it re-lists on
//! `410 Gone` and re-watches from the last RV after a dropped connection, so no change is missed.
//! Consumers get the latest Node on a `tokio::sync::watch` channel.
//!
//! Errors back off exponentially (1 s doubling to 30 s, back to 1 s after an answer) and are logged
//! with the API server's URL and the cause; with [`WatchHealth`], `/healthz` says the same while it
//! lasts.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch as channel;

use super::client::{ApiEndpoint, describe_api_error};
use crate::metrics::Metrics;

/// First retry delay after a failed request.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest delay between retries while the API server stays unreachable.
pub const MAX_RETRY: Duration = Duration::from_secs(30);

/// Where the watch reports whether the API server can be reached.
#[derive(Debug, Clone)]
pub struct WatchHealth {
    pub metrics: Arc<Metrics>,
    pub endpoint: ApiEndpoint,
}

/// The delay after `previous` (none: the first failure): doubling, at most [`MAX_RETRY`].
pub fn next_retry(previous: Option<Duration>) -> Duration {
    previous.map_or(FIRST_RETRY, |d| (d * 2).min(MAX_RETRY))
}

/// The latest observed state of our Node (`None` until first seen, or after it was deleted).
#[derive(Debug)]
pub struct NodeWatch {
    pub updates: channel::Receiver<Option<Node>>,
    task: tokio::task::JoinHandle<()>,
}

impl NodeWatch {
    /// Wait for the next change and return the node then (None: deleted, or the watch ended).
    pub async fn changed(&mut self) -> Option<Node> {
        self.updates.changed().await.ok()?;
        self.updates.borrow_and_update().clone()
    }

    /// The latest node, without waiting.
    pub fn latest(&self) -> Option<Node> {
        self.updates.borrow().clone()
    }

    /// Wait until `pred` holds for the node (checks the current value first).
    pub async fn wait_for(&mut self, mut pred: impl FnMut(&Node) -> bool) -> Option<Node> {
        let found = self
            .updates
            .wait_for(|n| n.as_ref().is_some_and(&mut pred))
            .await
            .ok()?;
        found.clone()
    }
}

impl Drop for NodeWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start watching `node`. Errors (including 410 and dropped watches) are logged and retried with
/// backoff; only changes of the node's resourceVersion are published.
pub fn watch_node(client: Client, node: &str) -> NodeWatch {
    watch_node_with(client, node, None)
}

/// [`watch_node`], reporting on `/healthz` (and naming the API server in logs) through `health`.
pub fn watch_node_with(client: Client, node: &str, health: Option<WatchHealth>) -> NodeWatch {
    let (updates, task) = watch_named(
        Api::all(client),
        node,
        node,
        format!("node {node}"),
        health.map(|h| Reporting {
            health: h,
            healthz: true,
        }),
    );
    NodeWatch { updates, task }
}

/// How a watch reports failures: the API server's URL and the cause in the log, and (for the
/// watch the daemon cannot work without) the same on `/healthz`.
#[derive(Debug, Clone)]
pub(crate) struct Reporting {
    pub(crate) health: WatchHealth,
    /// Whether this watch's failures make `/healthz` unhealthy.
    pub(crate) healthz: bool,
}

fn rv<K: Resource>(o: &Option<K>) -> Option<String> {
    o.as_ref().and_then(|o| o.meta().resource_version.clone())
}

/// Watch the one object `name` of `api` (a `metadata.name` field selector, so RBAC can be limited
/// to it). kube-runtime's watcher re-lists on `410 Gone` and re-watches from the last RV after a
/// dropped connection; failures back off here (1 s doubling to 30 s, back to 1 s after an answer).
/// Only changes of the object's resourceVersion (or its appearance/deletion) are published. Log
/// lines carry the daemon's `node` and name the object as `label`.
pub(crate) fn watch_named<K>(
    api: Api<K>,
    name: &str,
    node: &str,
    label: String,
    reporting: Option<Reporting>,
) -> (channel::Receiver<Option<K>>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (tx, rx) = channel::channel(None);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let probe_params = kube::api::ListParams::default()
        .fields(&format!("metadata.name={name}"))
        .limit(1);
    let node = node.to_string();
    let task = tokio::spawn(async move {
        let probe = api.clone();
        let mut stream = watcher::watcher(api, config).boxed();
        // A re-list that does not contain the object means it was deleted while we were away.
        let mut seen_in_list = false;
        let mut retry: Option<Duration> = None;
        while let Some(ev) = stream.next().await {
            if let Err(e) = &ev {
                let delay = next_retry(retry);
                retry = Some(delay);
                let unreachable = report_failure(&node, &label, e, reporting.as_ref(), delay);
                tokio::time::sleep(delay).await;
                // A watch that starts again yields nothing until the object changes: ask once, with
                // the same list request (so the same authorization), so /healthz stops saying
                // "cannot reach" as soon as the API server answers it.
                if unreachable && probe.list_metadata(&probe_params).await.is_ok() {
                    answers_again(&node, reporting.as_ref());
                    retry = None;
                }
                continue;
            }
            // `Init` only announces a (re-)list, which may fail again: it is no sign of an answer,
            // so it neither resets the backoff nor clears the problem (kube-runtime's own
            // StreamBackoff resets on it, which made a dead API server a retry every second).
            if !matches!(ev, Ok(Event::Init)) && retry.take().is_some() {
                answers_again(&node, reporting.as_ref());
            }
            let next = match ev {
                Ok(Event::Apply(o)) => Some(o),
                Ok(Event::InitApply(o)) => {
                    seen_in_list = true;
                    Some(o)
                }
                Ok(Event::Delete(_)) => None,
                Ok(Event::Init) => {
                    seen_in_list = false;
                    continue;
                }
                Ok(Event::InitDone) if seen_in_list => continue,
                Ok(Event::InitDone) => None,
                Err(_) => continue,
            };
            tx.send_if_modified(|cur| {
                if rv(cur) == rv(&next) && cur.is_some() == next.is_some() {
                    return false;
                }
                *cur = next;
                true
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    (rx, task)
}

/// Log a failed list or watch of `label` (and tell `/healthz` when the API server cannot be
/// reached or refuses our credentials, if this watch reports there): which API server, why, and
/// when the next try is. Returns whether the API server was unreachable (rather than, say, a watch
/// that expired).
fn report_failure(
    node: &str,
    label: &str,
    e: &watcher::Error,
    reporting: Option<&Reporting>,
    retry_in: Duration,
) -> bool {
    let secs = retry_in.as_secs();
    let Some(r) = reporting else {
        tracing::warn!(node = %node, error = %e, retry_in_s = secs, "the watch of {label} was interrupted; retrying");
        return false;
    };
    let cause = describe_api_error(e, &r.health.endpoint);
    let url = &r.health.endpoint.url;
    let refused = |k: &kube::Error| matches!(k, kube::Error::Api(s) if matches!(s.code, 401 | 403));
    let (unreachable, credentials) = match e {
        watcher::Error::InitialListFailed(k) | watcher::Error::WatchStartFailed(k) => match k {
            kube::Error::Api(_) => (refused(k), refused(k)),
            _ => (true, false),
        },
        _ => (false, false),
    };
    if unreachable && r.healthz {
        let problem = format!("cannot reach the API server at {url}: {cause}");
        tracing::warn!(node = %node, "{problem}; retrying in {secs} s");
        r.health.metrics.set_api_problem(Some(problem));
    } else if credentials {
        // Our identity may read the node but not this object: worth its own line (RBAC).
        tracing::warn!(node = %node, "cannot read {label} from the API server at {url}: {cause}; retrying in {secs} s");
    } else if unreachable {
        // The node watch already says the API server cannot be reached.
        tracing::debug!(node = %node, "cannot read {label} from the API server at {url}: {cause}; retrying in {secs} s");
    } else {
        tracing::warn!(node = %node, "the watch of {label} at {url} was interrupted: {cause}; resuming in {secs} s");
    }
    unreachable
}

fn answers_again(node: &str, reporting: Option<&Reporting>) {
    let Some(r) = reporting.filter(|r| r.healthz) else {
        return;
    };
    if r.health.metrics.api_problem().is_some() {
        r.health.metrics.set_api_problem(None);
        tracing::info!(node = %node, "the API server at {} answers again", r.health.endpoint.url);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_thirty_seconds() {
        let mut d = None;
        let delays: Vec<u64> = (0..8)
            .map(|_| {
                let next = next_retry(d);
                d = Some(next);
                next.as_secs()
            })
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
