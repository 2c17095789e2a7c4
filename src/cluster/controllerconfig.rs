//! Watch `ControllerConfig/machine-config-controller` (cluster-scoped, `machineconfiguration.openshift.io/v1`),
//! the object through which the cluster hands every node its CA bundles and the internal registry's
//! pull secret (the MCD's informer and `ccQueue`, MCO `pkg/daemon/certificate_writer.go`). Only that
//! name is watched (`metadata.name` field selector, so RBAC can be limited to it), the way the node
//! is watched ([`super::watch`]): re-list on 410, resume after a dropped watch, back off on errors.

use kube::api::{ApiResource, DynamicObject};
use kube::{Api, Client};
use tokio::sync::watch as channel;

use super::watch::{Reporting, WatchHealth, watch_named};

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

/// The latest `ControllerConfig/machine-config-controller` (`None` until seen, or once deleted).
#[derive(Debug)]
pub struct ControllerConfigWatch {
    pub updates: channel::Receiver<Option<DynamicObject>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ControllerConfigWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start watching, with the node watch's backoff; failures name the API server (through `health`)
/// but leave `/healthz` to the node watch: the daemon works on without a ControllerConfig.
pub fn watch_controller_config(
    client: Client,
    node: &str,
    health: Option<WatchHealth>,
) -> ControllerConfigWatch {
    let api: Api<DynamicObject> = Api::all_with(client, &controller_config_resource());
    let (updates, task) = watch_named(
        api,
        CONTROLLER_CONFIG_NAME,
        node,
        format!("ControllerConfig {CONTROLLER_CONFIG_NAME}"),
        health.map(|health| Reporting {
            health,
            healthz: false,
        }),
    );
    ControllerConfigWatch { updates, task }
}
