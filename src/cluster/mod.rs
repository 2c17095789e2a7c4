//! The daemon's Kubernetes side: watch our own Node, read the MachineConfig named by
//! `desiredConfig` and `MachineConfiguration/cluster`, write the MCD node annotations, the
//! MachineConfigNode conditions and Events, and drain (ourselves, or through the MCO controller).
//!
//! Every API side effect is a method of the [`Cluster`] trait; [`KubeCluster`] implements it with
//! kube-rs, and tests of the daemon's driver can use a recording fake. The building blocks here
//! are policy-free: the daemon's state machine decides when to call them.

pub mod annotations;
pub mod client;
pub mod controllerconfig;
pub mod drain;
pub mod events;
mod kube_impl;
pub mod mcn;
pub mod policy_source;
pub mod watch;

use std::collections::BTreeMap;
use std::future::Future;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::Value;

pub use annotations::{AnnotationWriter, NodeState};
pub use client::{ApiEndpoint, Credentials, connect, connect_to};
pub use controllerconfig::{ControllerConfigWatch, watch_controller_config};
pub use drain::{DrainError, DrainOptions, DrainReport, Drainer};
pub use events::{EventReason, NodeEvent};
pub use kube_impl::KubeCluster;
pub use mcn::{ConditionType, McnWriter};
pub use watch::{NodeWatch, WatchHealth, watch_node, watch_node_with};

/// Errors a caller branches on; everything else is an `anyhow::Error` with context.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The MachineConfig named by the node's `desiredConfig` does not exist (yet, or any more).
    #[error("MachineConfig {0:?} not found")]
    MachineConfigNotFound(String),
    /// Our own Node object is gone.
    #[error("node {0:?} not found")]
    NodeNotFound(String),
}

/// The outcome of one eviction request.
#[derive(Debug, Clone, PartialEq)]
pub enum Eviction {
    /// 201: the pod is being deleted.
    Started,
    /// 429: a PodDisruptionBudget allows no disruption now. `pdb` is the budget named in the
    /// server's message when it names one.
    Blocked {
        pdb: Option<String>,
        message: String,
    },
    /// 404: the pod is already gone.
    Gone,
}

/// Every Kubernetes side effect the daemon has. Implemented by [`KubeCluster`].
pub trait Cluster: Send + Sync {
    /// The node this daemon runs on.
    fn node_name(&self) -> &str;

    fn get_node(&self) -> impl Future<Output = anyhow::Result<Node>> + Send;

    /// One JSON merge patch of our node's annotations (`None` deletes a key). Transient errors and
    /// conflicts are retried. Returns the node as stored.
    fn patch_node_annotations(
        &self,
        changes: &BTreeMap<String, Option<String>>,
    ) -> impl Future<Output = anyhow::Result<Node>> + Send;

    /// Set or clear `spec.unschedulable` (cordon/uncordon).
    fn set_unschedulable(
        &self,
        unschedulable: bool,
    ) -> impl Future<Output = anyhow::Result<Node>> + Send;

    /// The MachineConfig as raw JSON; [`ClusterError::MachineConfigNotFound`] when missing.
    fn get_machine_config(&self, name: &str) -> impl Future<Output = anyhow::Result<Value>> + Send;

    /// `MachineConfiguration/cluster` (operator.openshift.io/v1) as raw JSON, if it exists.
    fn get_machine_configuration(
        &self,
    ) -> impl Future<Output = anyhow::Result<Option<Value>>> + Send;

    /// Pods bound to our node (`spec.nodeName` field selector), all namespaces.
    fn list_pods_on_node(&self) -> impl Future<Output = anyhow::Result<Vec<Pod>>> + Send;

    fn get_pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = anyhow::Result<Option<Pod>>> + Send;

    fn evict_pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = anyhow::Result<Eviction>> + Send;

    /// Record a core/v1 Event about our node.
    fn emit_event(&self, event: &NodeEvent) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Our MachineConfigNode (same name as the node) as raw JSON, if it exists.
    fn get_machine_config_node(&self)
    -> impl Future<Output = anyhow::Result<Option<Value>>> + Send;

    /// Create our MachineConfigNode (an existing one is not an error). Returns the stored object.
    fn create_machine_config_node(
        &self,
        mcn: &Value,
    ) -> impl Future<Output = anyhow::Result<Value>> + Send;

    /// Server-side apply of our MachineConfigNode's `status` (field manager `machine-config-daemon`).
    fn apply_machine_config_node_status(
        &self,
        status: &Value,
    ) -> impl Future<Output = anyhow::Result<Value>> + Send;

    /// Server-side apply of our MachineConfigNode's `spec` (field manager `machine-config-daemon`).
    fn apply_machine_config_node_spec(
        &self,
        spec: &Value,
    ) -> impl Future<Output = anyhow::Result<Value>> + Send;

    /// A CustomResourceDefinition as the cluster serves it (`None` when not installed): which
    /// variant of the MachineConfigNode schema is served decides what the daemon writes there.
    fn get_custom_resource_definition(
        &self,
        name: &str,
    ) -> impl Future<Output = anyhow::Result<Option<Value>>> + Send;
}

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "machine-config-daemon";

#[cfg(test)]
mod image_mode_sim_tests;
#[cfg(test)]
mod sim_tests;
