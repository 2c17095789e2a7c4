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
use kube::{Api, Client};
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

fn rv(node: &Option<Node>) -> Option<String> {
    node.as_ref()
        .and_then(|n| n.metadata.resource_version.clone())
}

/// Start watching `node`. Errors (including 410 and dropped watches) are logged and retried with
/// backoff; only changes of the node's resourceVersion are published.
pub fn watch_node(client: Client, node: &str) -> NodeWatch {
    watch_node_with(client, node, None)
}

/// [`watch_node`], reporting on `/healthz` (and naming the API server in logs) through `health`.
pub fn watch_node_with(client: Client, node: &str, health: Option<WatchHealth>) -> NodeWatch {
    let (tx, rx) = channel::channel(None);
    let api: Api<Node> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let node_name = node.to_string();
    let task = tokio::spawn(async move {
        let probe: Api<Node> = api.clone();
        let probe_params = kube::api::ListParams::default()
            .fields(&format!("metadata.name={node_name}"))
            .limit(1);
        let mut stream = watcher::watcher(api, config).boxed();
        // A re-list that does not contain the node means it was deleted while we were away.
        let mut seen_in_list = false;
        let mut retry: Option<Duration> = None;
        while let Some(ev) = stream.next().await {
            if let Err(e) = &ev {
                let delay = next_retry(retry);
                retry = Some(delay);
                let unreachable = report_failure(&node_name, e, health.as_ref(), delay);
                tokio::time::sleep(delay).await;
                // A watch that starts again yields nothing until the node changes: ask once, with
                // the same list request (so the same authorization), so /healthz stops saying
                // "cannot reach" as soon as the API server answers it.
                if unreachable && probe.list_metadata(&probe_params).await.is_ok() {
                    answers_again(&node_name, health.as_ref());
                    retry = None;
                }
                continue;
            }
            // `Init` only announces a (re-)list, which may fail again: it is no sign of an answer,
            // so it neither resets the backoff nor clears the problem (kube-runtime's own
            // StreamBackoff resets on it, which made a dead API server a retry every second).
            if !matches!(ev, Ok(Event::Init)) && retry.take().is_some() {
                answers_again(&node_name, health.as_ref());
            }
            let next = match ev {
                Ok(Event::Apply(n)) => Some(n),
                Ok(Event::InitApply(n)) => {
                    seen_in_list = true;
                    Some(n)
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
    NodeWatch { updates: rx, task }
}

/// Log a failed list or watch (and tell `/healthz` when the API server cannot be reached or
/// refuses our credentials): which API server, why, and when the next try is. Returns whether the
/// API server was unreachable (rather than, say, a watch that expired).
fn report_failure(
    node: &str,
    e: &watcher::Error,
    health: Option<&WatchHealth>,
    retry_in: Duration,
) -> bool {
    let secs = retry_in.as_secs();
    let Some(h) = health else {
        tracing::warn!(node = %node, error = %e, retry_in_s = secs, "node watch interrupted; retrying");
        return false;
    };
    let cause = describe_api_error(e, &h.endpoint);
    let url = &h.endpoint.url;
    let unreachable = match e {
        watcher::Error::InitialListFailed(k) | watcher::Error::WatchStartFailed(k) => match k {
            kube::Error::Api(s) => matches!(s.code, 401 | 403),
            _ => true,
        },
        _ => false,
    };
    if unreachable {
        let problem = format!("cannot reach the API server at {url}: {cause}");
        tracing::warn!(node = %node, "{problem}; retrying in {secs} s");
        h.metrics.set_api_problem(Some(problem));
    } else {
        tracing::warn!(node = %node, "the watch of node {node} at {url} was interrupted: {cause}; resuming in {secs} s");
    }
    unreachable
}

fn answers_again(node: &str, health: Option<&WatchHealth>) {
    if let Some(h) = health {
        if h.metrics.api_problem().is_some() {
            h.metrics.set_api_problem(None);
            tracing::info!(node = %node, "the API server at {} answers again", h.endpoint.url);
        }
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
