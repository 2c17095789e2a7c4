//! Our MachineConfigNode (mco-protocol.md §8): created if missing with every condition False /
//! `NotYetOccurred`, then its conditions are updated with server-side apply. `status.configVersion`
//! mirrors the node annotations. The condition logic is pure; [`McnWriter`] does the I/O.

use std::sync::Arc;

use anyhow::Result;
use k8s_openapi::api::core::v1::Node;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::Cluster;
use super::annotations::{self, CURRENT_CONFIG, DESIRED_CONFIG};

/// Condition types, in the order the MCO lists (and we keep) them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionType {
    UpdatePrepared,
    UpdateExecuted,
    UpdatePostActionComplete,
    UpdateComplete,
    Updated,
    Resumed,
    Drained,
    AppliedFilesAndOS,
    Cordoned,
    Uncordoned,
    RebootedNode,
    NodeDegraded,
    PinnedImageSetsProgressing,
    PinnedImageSetsDegraded,
}

impl ConditionType {
    pub const ALL: [ConditionType; 14] = [
        ConditionType::UpdatePrepared,
        ConditionType::UpdateExecuted,
        ConditionType::UpdatePostActionComplete,
        ConditionType::UpdateComplete,
        ConditionType::Updated,
        ConditionType::Resumed,
        ConditionType::Drained,
        ConditionType::AppliedFilesAndOS,
        ConditionType::Cordoned,
        ConditionType::Uncordoned,
        ConditionType::RebootedNode,
        ConditionType::NodeDegraded,
        ConditionType::PinnedImageSetsProgressing,
        ConditionType::PinnedImageSetsDegraded,
    ];

    pub fn as_str(self) -> &'static str {
        use ConditionType::*;
        match self {
            UpdatePrepared => "UpdatePrepared",
            UpdateExecuted => "UpdateExecuted",
            UpdatePostActionComplete => "UpdatePostActionComplete",
            UpdateComplete => "UpdateComplete",
            Updated => "Updated",
            Resumed => "Resumed",
            Drained => "Drained",
            AppliedFilesAndOS => "AppliedFilesAndOS",
            Cordoned => "Cordoned",
            Uncordoned => "Uncordoned",
            RebootedNode => "RebootedNode",
            NodeDegraded => "NodeDegraded",
            PinnedImageSetsProgressing => "PinnedImageSetsProgressing",
            PinnedImageSetsDegraded => "PinnedImageSetsDegraded",
        }
    }
}

/// `True`, `False` or `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

/// One condition change.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionChange {
    pub condition: ConditionType,
    pub status: Status,
    pub reason: String,
    pub message: String,
}

impl ConditionChange {
    pub fn new(
        condition: ConditionType,
        status: Status,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        ConditionChange {
            condition,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// A child phase: its reason is the parent's and the child's names joined
    /// (e.g. `UpdateExecutedDrained`).
    pub fn child(
        parent: ConditionType,
        child: ConditionType,
        status: Status,
        message: impl Into<String>,
    ) -> Self {
        let reason = format!("{}{}", parent.as_str(), child.as_str());
        ConditionChange {
            condition: child,
            status,
            reason,
            message: message.into(),
        }
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Every condition False with reason `NotYetOccurred`.
pub fn initial_conditions(time: &str) -> Vec<Value> {
    ConditionType::ALL
        .iter()
        .map(|t| {
            json!({"type": t.as_str(), "status": "False", "reason": "NotYetOccurred",
                "message": format!("This node has not yet entered the {} phase", t.as_str()),
                "lastTransitionTime": time})
        })
        .collect()
}

/// A new MachineConfigNode for `node` in `pool` (status is written separately: it is a subresource).
pub fn new_machine_config_node(node: &str, pool: &str, desired_config: &str) -> Value {
    json!({
        "apiVersion": "machineconfiguration.openshift.io/v1",
        "kind": "MachineConfigNode",
        "metadata": {"name": node},
        "spec": {"node": {"name": node}, "pool": {"name": pool}, "configVersion": {"desired": desired_config}},
    })
}

/// Apply `change` to `conditions` (kept in [`ConditionType::ALL`] order). Returns false when the
/// condition already had that status, reason and message (nothing to write).
pub fn apply_change(
    conditions: &mut Vec<Value>,
    change: &ConditionChange,
    desired_config: &str,
    time: &str,
) -> bool {
    let ty = change.condition.as_str();
    let existing = conditions.iter().position(|c| c["type"] == ty);
    if let Some(i) = existing {
        let c = &conditions[i];
        if c["status"] == change.status.as_str()
            && c["reason"] == change.reason.as_str()
            && c["message"] == change.message.as_str()
        {
            return false;
        }
    }
    let transition = match existing {
        Some(i) if conditions[i]["status"] == change.status.as_str() => {
            conditions[i]["lastTransitionTime"].clone()
        }
        _ => json!(time),
    };
    let new = json!({"type": ty, "status": change.status.as_str(), "reason": change.reason,
        "message": change.message, "lastTransitionTime": transition});
    match existing {
        Some(i) => conditions[i] = new,
        None => conditions.push(new),
    }
    // A new Updated condition resets every other condition that is not False.
    if change.condition == ConditionType::Updated {
        for c in conditions.iter_mut() {
            if c["type"] != ty && c["status"] != "False" {
                let old = c["message"].as_str().unwrap_or_default().to_string();
                c["status"] = json!("False");
                c["message"] = json!(format!("Action during update to {desired_config}: {old}"));
                c["lastTransitionTime"] = json!(time);
            }
        }
    }
    let order = |c: &Value| {
        ConditionType::ALL
            .iter()
            .position(|t| c["type"] == t.as_str())
            .unwrap_or(usize::MAX)
    };
    conditions.sort_by_key(order);
    true
}

/// `status.configVersion` from the node annotations.
pub fn config_version(node: &Node) -> Value {
    json!({
        "current": annotations::get(node, CURRENT_CONFIG).unwrap_or_default(),
        "desired": annotations::get(node, DESIRED_CONFIG).unwrap_or_default(),
    })
}

/// Writes our MachineConfigNode. Keeps the full status it applies, since server-side apply
/// removes fields a manager stops sending.
#[derive(Debug)]
pub struct McnWriter<C> {
    cluster: Arc<C>,
    pool: String,
    state: Mutex<Option<(i64, Vec<Value>)>>,
}

impl<C: Cluster> McnWriter<C> {
    pub fn new(cluster: Arc<C>, pool: &str) -> Self {
        McnWriter {
            cluster,
            pool: pool.to_string(),
            state: Mutex::new(None),
        }
    }

    /// Create the MachineConfigNode if missing and make sure every condition exists.
    pub async fn ensure(&self, node: &Node) -> Result<()> {
        let mut state = self.state.lock().await;
        self.ensure_locked(&mut state, node).await
    }

    async fn ensure_locked(
        &self,
        state: &mut Option<(i64, Vec<Value>)>,
        node: &Node,
    ) -> Result<()> {
        if state.is_some() {
            return Ok(());
        }
        let name = self.cluster.node_name().to_string();
        let desired = annotations::get(node, DESIRED_CONFIG).unwrap_or_default();
        let obj = match self.cluster.get_machine_config_node().await? {
            Some(o) => o,
            None => {
                let body = new_machine_config_node(&name, &self.pool, desired);
                self.cluster.create_machine_config_node(&body).await?
            }
        };
        let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1).max(1);
        let mut conditions: Vec<Value> = obj["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let time = now();
        let mut missing = false;
        for init in initial_conditions(&time) {
            if !conditions.iter().any(|c| c["type"] == init["type"]) {
                conditions.push(init);
                missing = true;
            }
        }
        conditions.sort_by_key(|c| {
            ConditionType::ALL
                .iter()
                .position(|t| c["type"] == t.as_str())
                .unwrap_or(usize::MAX)
        });
        if missing || obj["status"]["configVersion"] != config_version(node) {
            self.apply(generation, &conditions, node).await?;
        }
        *state = Some((generation, conditions));
        Ok(())
    }

    async fn apply(&self, generation: i64, conditions: &[Value], node: &Node) -> Result<()> {
        let status = json!({"observedGeneration": generation, "configVersion": config_version(node), "conditions": conditions});
        self.cluster
            .apply_machine_config_node_status(&status)
            .await?;
        Ok(())
    }

    /// Apply condition changes in order; writes once, and only if something changed.
    pub async fn update(&self, node: &Node, changes: &[ConditionChange]) -> Result<bool> {
        let mut state = self.state.lock().await;
        self.ensure_locked(&mut state, node).await?;
        let (generation, conditions) = state.as_mut().expect("ensured");
        let desired = annotations::get(node, DESIRED_CONFIG)
            .unwrap_or_default()
            .to_string();
        let time = now();
        let mut next = conditions.clone();
        let mut changed = false;
        for c in changes {
            changed |= apply_change(&mut next, c, &desired, &time);
        }
        if !changed {
            return Ok(false);
        }
        self.apply(*generation, &next, node).await?;
        *conditions = next;
        Ok(true)
    }

    /// The conditions as last written.
    pub async fn conditions(&self) -> Vec<Value> {
        self.state
            .lock()
            .await
            .as_ref()
            .map(|s| s.1.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_conditions_are_all_false_not_yet_occurred() {
        let c = initial_conditions("2026-01-01T00:00:00Z");
        assert_eq!(c.len(), 14);
        assert!(
            c.iter()
                .all(|c| c["status"] == "False" && c["reason"] == "NotYetOccurred")
        );
        assert_eq!(
            c[6]["message"],
            "This node has not yet entered the Drained phase"
        );
    }

    #[test]
    fn unchanged_condition_is_not_rewritten() {
        let mut c = initial_conditions("t0");
        let ch = ConditionChange::new(
            ConditionType::Drained,
            Status::True,
            "Drained",
            "Drained node n",
        );
        assert!(apply_change(&mut c, &ch, "rendered-b", "t1"));
        assert!(!apply_change(&mut c, &ch, "rendered-b", "t2"));
        let d = c.iter().find(|c| c["type"] == "Drained").unwrap();
        assert_eq!(d["lastTransitionTime"], "t1");
    }

    #[test]
    fn updated_resets_other_true_conditions() {
        let mut c = initial_conditions("t0");
        apply_change(
            &mut c,
            &ConditionChange::new(
                ConditionType::Drained,
                Status::True,
                "Drained",
                "Drained node n",
            ),
            "b",
            "t1",
        );
        apply_change(
            &mut c,
            &ConditionChange::new(
                ConditionType::Updated,
                Status::False,
                "Updating",
                "updating",
            ),
            "rendered-b",
            "t2",
        );
        let d = c.iter().find(|c| c["type"] == "Drained").unwrap();
        assert_eq!(d["status"], "False");
        assert_eq!(
            d["message"],
            "Action during update to rendered-b: Drained node n"
        );
        assert_eq!(
            c.iter()
                .map(|c| c["type"].as_str().unwrap())
                .collect::<Vec<_>>()[..5],
            [
                "UpdatePrepared",
                "UpdateExecuted",
                "UpdatePostActionComplete",
                "UpdateComplete",
                "Updated"
            ]
        );
    }

    #[test]
    fn child_reason_joins_names() {
        let ch = ConditionChange::child(
            ConditionType::UpdateExecuted,
            ConditionType::Drained,
            Status::Unknown,
            "x",
        );
        assert_eq!(ch.reason, "UpdateExecutedDrained");
    }
}
