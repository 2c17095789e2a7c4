//! [`Cluster`] with kube-rs.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{
    ApiResource, DynamicObject, EvictParams, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Api, Client};
use serde_json::{Value, json};

use super::{Cluster, ClusterError, Eviction, FIELD_MANAGER, NodeEvent};

/// The kube-rs implementation, scoped to one node.
#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
    node: String,
    /// Attempts for requests that fail transiently (409 on writes, 429, 5xx, connection errors).
    attempts: u32,
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCluster")
            .field("node", &self.node)
            .finish()
    }
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

pub(crate) fn machine_config_resource() -> ApiResource {
    resource(
        "machineconfiguration.openshift.io",
        "v1",
        "MachineConfig",
        "machineconfigs",
    )
}

pub(crate) fn machine_config_node_resource() -> ApiResource {
    resource(
        "machineconfiguration.openshift.io",
        "v1",
        "MachineConfigNode",
        "machineconfignodes",
    )
}

fn machine_configuration_resource() -> ApiResource {
    resource(
        "operator.openshift.io",
        "v1",
        "MachineConfiguration",
        "machineconfigurations",
    )
}

/// The HTTP status of an API error, if it is one.
pub fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// 5xx and connection failures: worth another try for any request.
fn server_error(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(s) => matches!(s.code, 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Reads: also retry 429 (API priority and fairness).
fn read_transient(err: &kube::Error) -> bool {
    server_error(err) || status_code(err) == Some(429)
}

/// Writes: also retry conflicts (our writes are merge patches and applies, safe to resend).
fn write_transient(err: &kube::Error) -> bool {
    read_transient(err) || status_code(err) == Some(409)
}

/// The PodDisruptionBudget named in a 429 eviction answer (`The disruption budget web-pdb needs…`).
pub fn blocking_pdb(status: &kube::core::Status) -> Option<String> {
    let causes = &status.details.as_ref()?.causes;
    causes.iter().find_map(|c| {
        let rest = c.message.strip_prefix("The disruption budget ")?;
        rest.split_whitespace().next().map(String::from)
    })
}

impl KubeCluster {
    pub fn new(client: Client, node: &str) -> Self {
        KubeCluster {
            client,
            node: node.to_string(),
            attempts: 6,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Run `op`, retrying transient failures with exponential backoff (100 ms … 3.2 s).
    async fn retry_when<T, F, Fut>(
        &self,
        what: &str,
        transient: fn(&kube::Error) -> bool,
        mut op: F,
    ) -> Result<T, kube::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < self.attempts && transient(&e) => {
                    tracing::debug!(node = %self.node, what, attempt, error = %e, "retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    fn dynamic(&self, ar: &ApiResource) -> Api<DynamicObject> {
        Api::all_with(self.client.clone(), ar)
    }

    async fn patch_node(&self, what: &str, patch: Value) -> Result<Node> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let api = self.nodes();
        let patch = Patch::Merge(&patch);
        self.retry_when(what, write_transient, || {
            api.patch(&self.node, &params, &patch)
        })
        .await
        .map_err(|e| match status_code(&e) {
            Some(404) => anyhow::Error::new(ClusterError::NodeNotFound(self.node.clone())),
            _ => anyhow::Error::new(e),
        })
        .with_context(|| format!("{what} on node {}", self.node))
    }
}

impl Cluster for KubeCluster {
    fn node_name(&self) -> &str {
        &self.node
    }

    async fn get_node(&self) -> Result<Node> {
        let api = self.nodes();
        match self
            .retry_when("get node", read_transient, || api.get_opt(&self.node))
            .await
        {
            Ok(Some(n)) => Ok(n),
            Ok(None) => Err(ClusterError::NodeNotFound(self.node.clone()).into()),
            Err(e) => Err(anyhow::Error::new(e).context(format!("Getting node {}", self.node))),
        }
    }

    async fn patch_node_annotations(
        &self,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<Node> {
        let annotations: serde_json::Map<String, Value> = changes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().map_or(Value::Null, Value::String)))
            .collect();
        self.patch_node(
            "Writing annotations",
            json!({"metadata": {"annotations": annotations}}),
        )
        .await
    }

    async fn set_unschedulable(&self, unschedulable: bool) -> Result<Node> {
        let value = if unschedulable {
            json!(true)
        } else {
            Value::Null
        };
        let what = if unschedulable {
            "Cordoning"
        } else {
            "Uncordoning"
        };
        self.patch_node(what, json!({"spec": {"unschedulable": value}}))
            .await
    }

    async fn get_machine_config(&self, name: &str) -> Result<Value> {
        let api = self.dynamic(&machine_config_resource());
        match self
            .retry_when("get MachineConfig", read_transient, || api.get_opt(name))
            .await
        {
            Ok(Some(mc)) => Ok(serde_json::to_value(mc)?),
            Ok(None) => Err(ClusterError::MachineConfigNotFound(name.to_string()).into()),
            Err(e) => Err(anyhow::Error::new(e).context(format!("Getting MachineConfig {name}"))),
        }
    }

    async fn get_machine_configuration(&self) -> Result<Option<Value>> {
        let api = self.dynamic(&machine_configuration_resource());
        let obj = self
            .retry_when("get MachineConfiguration", read_transient, || {
                api.get_opt("cluster")
            })
            .await
            .context("Getting MachineConfiguration cluster")?;
        Ok(obj.map(serde_json::to_value).transpose()?)
    }

    async fn list_pods_on_node(&self) -> Result<Vec<Pod>> {
        let api: Api<Pod> = Api::all(self.client.clone());
        let lp = ListParams::default().fields(&format!("spec.nodeName={}", self.node));
        let list = self
            .retry_when("list pods", read_transient, || api.list(&lp))
            .await
            .context("Listing pods on the node")?;
        Ok(list.items)
    }

    async fn get_pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        self.retry_when("get pod", read_transient, || api.get_opt(name))
            .await
            .with_context(|| format!("Getting pod {namespace}/{name}"))
    }

    async fn evict_pod(&self, namespace: &str, name: &str) -> Result<Eviction> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let params = EvictParams::default();
        // 429 is the PDB's answer here, not an overload: the drain loop decides when to retry.
        let result = self
            .retry_when("evict pod", server_error, || api.evict(name, &params))
            .await;
        match result {
            Ok(_) => Ok(Eviction::Started),
            Err(kube::Error::Api(s)) if s.code == 429 => Ok(Eviction::Blocked {
                pdb: blocking_pdb(&s),
                message: s.message.clone(),
            }),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Eviction::Gone),
            Err(e) => {
                Err(anyhow::Error::new(e).context(format!("Evicting pod {namespace}/{name}")))
            }
        }
    }

    async fn emit_event(&self, event: &NodeEvent) -> Result<()> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let ev = event.to_event(&self.node);
        let params = PostParams::default();
        self.retry_when("create event", read_transient, || api.create(&params, &ev))
            .await
            .with_context(|| format!("Recording event {}", event.reason.as_str()))?;
        Ok(())
    }

    async fn get_machine_config_node(&self) -> Result<Option<Value>> {
        let api = self.dynamic(&machine_config_node_resource());
        let obj = self
            .retry_when("get MachineConfigNode", read_transient, || {
                api.get_opt(&self.node)
            })
            .await
            .context("Getting the MachineConfigNode")?;
        Ok(obj.map(serde_json::to_value).transpose()?)
    }

    async fn create_machine_config_node(&self, mcn: &Value) -> Result<Value> {
        let api = self.dynamic(&machine_config_node_resource());
        let obj: DynamicObject =
            serde_json::from_value(mcn.clone()).context("MachineConfigNode body")?;
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match self
            .retry_when("create MachineConfigNode", read_transient, || {
                api.create(&params, &obj)
            })
            .await
        {
            Ok(created) => Ok(serde_json::to_value(created)?),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let existing = self
                    .retry_when("get MachineConfigNode", read_transient, || {
                        api.get(&self.node)
                    })
                    .await?;
                Ok(serde_json::to_value(existing)?)
            }
            Err(e) => Err(anyhow::Error::new(e).context("Creating the MachineConfigNode")),
        }
    }

    async fn apply_machine_config_node_spec(&self, spec: &Value) -> Result<Value> {
        let ar = machine_config_node_resource();
        let api = self.dynamic(&ar);
        let body = json!({"apiVersion": ar.api_version, "kind": ar.kind, "metadata": {"name": self.node}, "spec": spec});
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(&body);
        let obj = self
            .retry_when("apply MachineConfigNode spec", write_transient, || {
                api.patch(&self.node, &params, &patch)
            })
            .await
            .context("Applying the MachineConfigNode spec")?;
        Ok(serde_json::to_value(obj)?)
    }

    async fn get_custom_resource_definition(&self, name: &str) -> Result<Option<Value>> {
        let ar = resource(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
        );
        let api = self.dynamic(&ar);
        let obj = self
            .retry_when("get CustomResourceDefinition", read_transient, || {
                api.get_opt(name)
            })
            .await
            .with_context(|| format!("Getting CustomResourceDefinition {name}"))?;
        Ok(obj.map(serde_json::to_value).transpose()?)
    }

    async fn apply_machine_config_node_status(&self, status: &Value) -> Result<Value> {
        let ar = machine_config_node_resource();
        let api = self.dynamic(&ar);
        let body = json!({"apiVersion": ar.api_version, "kind": ar.kind, "metadata": {"name": self.node}, "status": status});
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(&body);
        let obj = self
            .retry_when("apply MachineConfigNode status", write_transient, || {
                api.patch_status(&self.node, &params, &patch)
            })
            .await
            .context("Applying the MachineConfigNode status")?;
        Ok(serde_json::to_value(obj)?)
    }
}
