//! The MCD node annotations (mco-protocol.md §1) and the single writer that sets them.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Node;
use tokio::sync::Mutex;

use super::Cluster;

pub const PREFIX: &str = "machineconfiguration.openshift.io/";
pub const CURRENT_CONFIG: &str = "machineconfiguration.openshift.io/currentConfig";
pub const DESIRED_CONFIG: &str = "machineconfiguration.openshift.io/desiredConfig";
pub const STATE: &str = "machineconfiguration.openshift.io/state";
pub const REASON: &str = "machineconfiguration.openshift.io/reason";
pub const DESIRED_DRAIN: &str = "machineconfiguration.openshift.io/desiredDrain";
pub const LAST_APPLIED_DRAIN: &str = "machineconfiguration.openshift.io/lastAppliedDrain";
pub const CURRENT_IMAGE: &str = "machineconfiguration.openshift.io/currentImage";
pub const DESIRED_IMAGE: &str = "machineconfiguration.openshift.io/desiredImage";
pub const POST_CONFIG_ACTION: &str = "machineconfiguration.openshift.io/post-config-action";
pub const FINALIZE_FAILURE: &str =
    "machineconfiguration.openshift.io/ostree-finalize-staged-failure";
pub const CONTROL_PLANE_TOPOLOGY: &str = "machineconfiguration.openshift.io/controlPlaneTopology";
/// Ours (not the MCD's): set when this daemon cordoned the node, so only it uncordons.
pub const CORDONED_BY: &str = "machineconfiguration.openshift.io/cordoned-by";
pub const CORDONED_BY_VALUE: &str = "machine-config-daemon";

/// `reason` (and the finalize-failure annotation) are cut to this many characters, as the MCD does.
pub const MAX_REASON_CHARS: usize = 2000;

/// The `state` annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Done,
    Working,
    Degraded,
    Unreconcilable,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Done => "Done",
            NodeState::Working => "Working",
            NodeState::Degraded => "Degraded",
            NodeState::Unreconcilable => "Unreconcilable",
        }
    }

    /// Parse the annotation; an empty or missing state means Done (the MCS used not to write it).
    pub fn parse(value: Option<&str>) -> Option<NodeState> {
        match value.unwrap_or("") {
            "" | "Done" => Some(NodeState::Done),
            "Working" => Some(NodeState::Working),
            "Degraded" => Some(NodeState::Degraded),
            "Unreconcilable" => Some(NodeState::Unreconcilable),
            _ => None,
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Cut to at most 2000 characters (not bytes), like Go's `%.2000s`.
pub fn truncate_reason(reason: &str) -> String {
    reason.chars().take(MAX_REASON_CHARS).collect()
}

/// An annotation value of a node.
pub fn get<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// A set of annotation changes (`None` deletes the key), built up and sent as one merge patch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnnotationChanges(pub BTreeMap<String, Option<String>>);

impl AnnotationChanges {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(mut self, key: &str, value: impl Into<String>) -> Self {
        self.0.insert(key.to_string(), Some(value.into()));
        self
    }

    pub fn delete(mut self, key: &str) -> Self {
        self.0.insert(key.to_string(), None);
        self
    }

    /// `state` plus `reason`, as the MCD's writer (`pkg/daemon/writer.go`) sets them: Degraded and
    /// Unreconcilable with the reason (truncated), Done with an empty reason (`SetDone` clears it), Working
    /// alone (`SetWorking` writes only the state, so a reason stays until Done replaces it).
    pub fn state(self, state: NodeState, reason: &str) -> Self {
        match state {
            NodeState::Working => self.set(STATE, state.as_str()),
            NodeState::Done => self.set(STATE, state.as_str()).set(REASON, ""),
            NodeState::Degraded | NodeState::Unreconcilable => self
                .set(STATE, state.as_str())
                .set(REASON, truncate_reason(reason)),
        }
    }

    /// The MCD's `SetDone`: Done, currentConfig, empty reason; currentImage set or deleted,
    /// desiredImage deleted when empty.
    pub fn done(
        self,
        current_config: &str,
        current_image: Option<&str>,
        desired_image_empty: bool,
    ) -> Self {
        let mut c = self
            .state(NodeState::Done, "")
            .set(CURRENT_CONFIG, current_config);
        c = match current_image.filter(|i| !i.is_empty()) {
            Some(i) => c.set(CURRENT_IMAGE, i),
            None => c.delete(CURRENT_IMAGE),
        };
        if desired_image_empty {
            c.delete(DESIRED_IMAGE)
        } else {
            c
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Drop changes the node already has (a no-op write costs a request and an RV).
    pub fn without_noops(mut self, node: &Node) -> Self {
        self.0.retain(|k, v| get(node, k) != v.as_deref());
        self
    }

    /// The JSON merge patch body.
    pub fn to_merge_patch(&self) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> = self
            .0
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.clone()
                        .map_or(serde_json::Value::Null, serde_json::Value::String),
                )
            })
            .collect();
        serde_json::json!({"metadata": {"annotations": map}})
    }
}

/// The one writer of our node's annotations: writes are serialised, and each is a single merge
/// patch (retried by the cluster on conflicts and transient errors).
#[derive(Debug)]
pub struct AnnotationWriter<C> {
    cluster: std::sync::Arc<C>,
    lock: Mutex<()>,
}

impl<C: Cluster> AnnotationWriter<C> {
    pub fn new(cluster: std::sync::Arc<C>) -> Self {
        AnnotationWriter {
            cluster,
            lock: Mutex::new(()),
        }
    }

    /// Apply `changes` (skipping the ones `current` already has, when given). Returns the node
    /// as stored, or `None` when there was nothing to write.
    pub async fn write(
        &self,
        changes: AnnotationChanges,
        current: Option<&Node>,
    ) -> anyhow::Result<Option<Node>> {
        let changes = match current {
            Some(node) => changes.without_noops(node),
            None => changes,
        };
        if changes.is_empty() {
            return Ok(None);
        }
        let _guard = self.lock.lock().await;
        tracing::debug!(node = self.cluster.node_name(), keys = %changes.0.keys().map(String::as_str).collect::<Vec<_>>().join(", "), "writing node annotations");
        Ok(Some(self.cluster.patch_node_annotations(&changes.0).await?))
    }

    pub async fn set_state(
        &self,
        state: NodeState,
        reason: &str,
        current: Option<&Node>,
    ) -> anyhow::Result<Option<Node>> {
        self.write(AnnotationChanges::new().state(state, reason), current)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_is_cut_at_2000_characters_not_bytes() {
        let long: String = "é".repeat(2500);
        let cut = truncate_reason(&long);
        assert_eq!(cut.chars().count(), 2000);
        assert_eq!(truncate_reason("short"), "short");
    }

    #[test]
    fn degraded_patch_carries_state_and_truncated_reason() {
        let patch = AnnotationChanges::new()
            .state(NodeState::Degraded, &"x".repeat(3000))
            .to_merge_patch();
        let ann = &patch["metadata"]["annotations"];
        assert_eq!(ann[STATE], "Degraded");
        assert_eq!(ann[REASON].as_str().unwrap().len(), 2000);
    }

    #[test]
    fn done_clears_reason_and_deletes_empty_images() {
        let patch = AnnotationChanges::new()
            .done("rendered-worker-b", None, true)
            .to_merge_patch();
        let ann = &patch["metadata"]["annotations"];
        assert_eq!(ann[STATE], "Done");
        assert_eq!(ann[REASON], "");
        assert_eq!(ann[CURRENT_CONFIG], "rendered-worker-b");
        assert!(ann[CURRENT_IMAGE].is_null() && ann.get(CURRENT_IMAGE).is_some());
        assert!(ann[DESIRED_IMAGE].is_null() && ann.get(DESIRED_IMAGE).is_some());
    }

    #[test]
    fn working_writes_only_the_state() {
        // writer.go SetWorking: `state=Working`, the reason of an earlier Degraded stays.
        let c = AnnotationChanges::new().state(NodeState::Working, "ignored");
        assert_eq!(c.0.keys().collect::<Vec<_>>(), [STATE]);
    }

    #[test]
    fn state_parsing_treats_empty_as_done() {
        assert_eq!(NodeState::parse(None), Some(NodeState::Done));
        assert_eq!(NodeState::parse(Some("")), Some(NodeState::Done));
        assert_eq!(
            NodeState::parse(Some("Unreconcilable")),
            Some(NodeState::Unreconcilable)
        );
        assert_eq!(NodeState::parse(Some("Rebooting")), None);
    }

    #[test]
    fn noops_are_dropped() {
        let mut node = Node::default();
        node.metadata.annotations = Some([(STATE.to_string(), "Done".to_string())].into());
        let c = AnnotationChanges::new()
            .set(STATE, "Done")
            .set(REASON, "x")
            .delete(DESIRED_DRAIN);
        let c = c.without_noops(&node);
        assert_eq!(c.0.keys().collect::<Vec<_>>(), [REASON]);
    }
}
