//! Watch our own Node only (`metadata.name=<node>`), with kube-runtime's watcher: it re-lists on
//! `410 Gone`, re-watches from the last RV after a dropped connection, and backs off on errors,
//! so no change is missed. Consumers get the latest Node on a `tokio::sync::watch` channel.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch as channel;

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

/// Start watching `node`. Errors (including 410 and dropped watches) are logged and recovered by
/// the watcher's backoff; only changes of the node's resourceVersion are published.
pub fn watch_node(client: Client, node: &str) -> NodeWatch {
    let (tx, rx) = channel::channel(None);
    let api: Api<Node> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let node_name = node.to_string();
    let task = tokio::spawn(async move {
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        // A re-list that does not contain the node means it was deleted while we were away.
        let mut seen_in_list = false;
        while let Some(ev) = stream.next().await {
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
                Err(e) => {
                    tracing::warn!(node = %node_name, error = %e, "node watch interrupted; resuming");
                    continue;
                }
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
