//! Watch `ControllerConfig/machine-config-controller` (cluster-scoped, `machineconfiguration.openshift.io/v1`),
//! the object through which the cluster hands every node its CA bundles and the internal registry's
//! pull secret (the MCD's informer and `ccQueue`, MCO `pkg/daemon/certificate_writer.go`). Only that
//! name is watched (`metadata.name` field selector, so RBAC can be limited to it), with kube-runtime's
//! watcher: re-list on 410, resume after a dropped watch, back off on errors.

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::watch as channel;

use crate::host::certs::CONTROLLER_CONFIG_NAME;

pub(crate) fn controller_config_resource() -> ApiResource {
    ApiResource {
        group: "machineconfiguration.openshift.io".into(),
        version: "v1".into(),
        api_version: "machineconfiguration.openshift.io/v1".into(),
        kind: "ControllerConfig".into(),
        plural: "controllerconfigs".into(),
    }
}

/// The latest `ControllerConfig/machine-config-controller` as JSON (`None` until seen, or once deleted).
#[derive(Debug)]
pub struct ControllerConfigWatch {
    pub updates: channel::Receiver<Option<Value>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ControllerConfigWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn rv(v: &Option<Value>) -> Option<&str> {
    v.as_ref()
        .and_then(|o| o["metadata"]["resourceVersion"].as_str())
}

/// Start watching; only changes of the object's resourceVersion are published.
pub fn watch_controller_config(client: Client) -> ControllerConfigWatch {
    let (tx, rx) = channel::channel(None);
    let api: Api<DynamicObject> = Api::all_with(client, &controller_config_resource());
    let config =
        watcher::Config::default().fields(&format!("metadata.name={CONTROLLER_CONFIG_NAME}"));
    let task = tokio::spawn(async move {
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        let mut seen_in_list = false;
        while let Some(ev) = stream.next().await {
            let next = match ev {
                Ok(Event::Apply(o)) => serde_json::to_value(o).ok(),
                Ok(Event::InitApply(o)) => {
                    seen_in_list = true;
                    serde_json::to_value(o).ok()
                }
                Ok(Event::Delete(_)) => None,
                Ok(Event::Init) => {
                    seen_in_list = false;
                    continue;
                }
                Ok(Event::InitDone) if seen_in_list => continue,
                Ok(Event::InitDone) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "ControllerConfig watch interrupted; resuming");
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
    ControllerConfigWatch { updates: rx, task }
}
