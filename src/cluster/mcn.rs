//! Our MachineConfigNode (mco-protocol.md §8): created if missing with every condition False /
//! `NotYetOccurred`, then its conditions are updated with server-side apply. `status.configVersion`
//! mirrors the node annotations, `spec` its desired config. The condition logic is pure;
//! [`McnWriter`] does the I/O.
//!
//! Image-mode status (the MCD's `ImageModeStatusReporting` feature gate, MCO
//! `pkg/upgrademonitor/upgrade_monitor.go` and `pkg/daemon/update.go`): when the served CRD has the
//! fields (the TechPreviewNoUpgrade variant), `spec.configImage.desiredImage` and
//! `status.configImage.{currentImage,desiredImage}` mirror the node's image annotations, and the
//! conditions `AppliedFiles`, `AppliedOSImage` and `ImagePulledFromRegistry` take the place of
//! `AppliedFilesAndOS`. With the Default CRD only what it defines is written: a server-side apply of a
//! field its schema does not declare fails as a whole. `status.irreconcilableChanges` is in both.
//! (In the MCO the node controller keeps `spec.configImage` up to date; there is none here, so the
//! daemon does, with the desired config.)

use std::sync::Arc;

use anyhow::Result;
use k8s_openapi::api::core::v1::Node;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::Cluster;
use super::annotations::{self, CURRENT_CONFIG, CURRENT_IMAGE, DESIRED_CONFIG, DESIRED_IMAGE};
use crate::plan::Plan;
use crate::plan::irreconcilable::IrreconcilableChange;

/// The MachineConfigNode CRD, read to learn which schema the cluster serves.
pub const MCN_CRD: &str = "machineconfignodes.machineconfiguration.openshift.io";

/// The desired config before there is one (`upgrademonitor.NotYetSet`).
pub const NOT_YET_SET: &str = "not-yet-set";

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
    /// Image mode: the files part of AppliedFilesAndOS.
    AppliedFiles,
    /// Image mode: the OS part of AppliedFilesAndOS.
    AppliedOSImage,
    Cordoned,
    Uncordoned,
    RebootedNode,
    /// Image mode: the OS image pull.
    ImagePulledFromRegistry,
    NodeDegraded,
    PinnedImageSetsProgressing,
    PinnedImageSetsDegraded,
}

impl ConditionType {
    /// With image-mode status reporting AppliedFilesAndOS is replaced by AppliedFiles and
    /// AppliedOSImage, and ImagePulledFromRegistry is added (`allConditionTypes` in
    /// `generateAndApplyMachineConfigNodes`).
    pub const IMAGE_MODE: [ConditionType; 16] = [
        ConditionType::UpdatePrepared,
        ConditionType::UpdateExecuted,
        ConditionType::UpdatePostActionComplete,
        ConditionType::UpdateComplete,
        ConditionType::Updated,
        ConditionType::Resumed,
        ConditionType::Drained,
        ConditionType::AppliedFiles,
        ConditionType::AppliedOSImage,
        ConditionType::Cordoned,
        ConditionType::Uncordoned,
        ConditionType::RebootedNode,
        ConditionType::ImagePulledFromRegistry,
        ConditionType::NodeDegraded,
        ConditionType::PinnedImageSetsProgressing,
        ConditionType::PinnedImageSetsDegraded,
    ];

    /// Every type, in the order conditions are kept.
    const ORDER: [ConditionType; 17] = [
        ConditionType::UpdatePrepared,
        ConditionType::UpdateExecuted,
        ConditionType::UpdatePostActionComplete,
        ConditionType::UpdateComplete,
        ConditionType::Updated,
        ConditionType::Resumed,
        ConditionType::Drained,
        ConditionType::AppliedFilesAndOS,
        ConditionType::AppliedFiles,
        ConditionType::AppliedOSImage,
        ConditionType::Cordoned,
        ConditionType::Uncordoned,
        ConditionType::RebootedNode,
        ConditionType::ImagePulledFromRegistry,
        ConditionType::NodeDegraded,
        ConditionType::PinnedImageSetsProgressing,
        ConditionType::PinnedImageSetsDegraded,
    ];

    /// The conditions of the Default CRD.
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
            AppliedFiles => "AppliedFiles",
            AppliedOSImage => "AppliedOSImage",
            Cordoned => "Cordoned",
            Uncordoned => "Uncordoned",
            RebootedNode => "RebootedNode",
            ImagePulledFromRegistry => "ImagePulledFromRegistry",
            NodeDegraded => "NodeDegraded",
            PinnedImageSetsProgressing => "PinnedImageSetsProgressing",
            PinnedImageSetsDegraded => "PinnedImageSetsDegraded",
        }
    }

    /// Where a condition of this type goes among the others.
    fn rank(type_name: &Value) -> usize {
        Self::ORDER
            .iter()
            .position(|t| type_name == t.as_str())
            .unwrap_or(usize::MAX)
    }

    /// The conditions a MachineConfigNode of this schema has.
    pub fn for_schema(image_mode: bool) -> &'static [ConditionType] {
        if image_mode {
            &Self::IMAGE_MODE
        } else {
            &Self::ALL
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

/// Which parts of the node an update writes, for the image-mode split of AppliedFilesAndOS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedScope {
    /// Files, SSH keys or the password change (the MCD's `diff.files || diff.passwd`).
    pub files: bool,
    /// The OS image, extensions or kernel type change (`diff.osUpdate || diff.extensions || diff.kernelType`).
    pub os: bool,
    /// Which part failed, and why.
    pub failed: Option<(AppliedPart, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppliedPart {
    Files,
    Os,
}

impl AppliedScope {
    pub fn of(plan: &Plan) -> Self {
        AppliedScope {
            files: !plan.files.is_empty() || plan.ssh_keys || plan.password,
            os: plan.os_image.is_some()
                || plan.kernel_type.is_some()
                || !plan.extensions.add.is_empty()
                || !plan.extensions.remove.is_empty(),
            failed: None,
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
    /// For an AppliedFilesAndOS change: what it covers, so image mode can split it.
    pub applied: Option<AppliedScope>,
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
            applied: None,
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
            applied: None,
        }
    }

    /// AppliedFilesAndOS Unknown: the update starts writing to the node.
    pub fn applying(plan: &Plan) -> Self {
        let mut c = Self::child(
            ConditionType::UpdateExecuted,
            ConditionType::AppliedFilesAndOS,
            Status::Unknown,
            "Applying files and new OS config to node",
        );
        c.applied = Some(AppliedScope::of(plan));
        c
    }

    /// AppliedFilesAndOS True: files and OS are written (staged).
    pub fn applied(plan: &Plan) -> Self {
        let mut c = Self::child(
            ConditionType::UpdateExecuted,
            ConditionType::AppliedFilesAndOS,
            Status::True,
            "Applied files and new OS config to node",
        );
        c.applied = Some(AppliedScope::of(plan));
        c
    }

    /// Writing `part` failed (reported in image mode only, as the MCD does).
    pub fn apply_failed(plan: &Plan, part: AppliedPart, error: &str) -> Self {
        let mut c = Self::applying(plan);
        if let Some(scope) = &mut c.applied {
            scope.failed = Some((part, error.to_string()));
        }
        c
    }

    /// What this change becomes on a MachineConfigNode of the given schema: in image mode an
    /// AppliedFilesAndOS change turns into the parent (UpdateExecuted) and child conditions the MCD
    /// writes for files and for the OS (`update()` in MCO `pkg/daemon/update.go`); without image mode
    /// the image-mode-only conditions and failure reports are dropped.
    pub fn for_schema(&self, image_mode: bool) -> Vec<ConditionChange> {
        use ConditionType::*;
        let image_only = matches!(
            self.condition,
            AppliedFiles | AppliedOSImage | ImagePulledFromRegistry
        );
        let scope = match (&self.applied, self.condition) {
            (Some(scope), AppliedFilesAndOS) => scope,
            _ if image_only && !image_mode => return Vec::new(),
            _ => return vec![self.clone()],
        };
        if !image_mode {
            return if scope.failed.is_some() {
                Vec::new()
            } else {
                vec![self.clone()]
            };
        }
        let mut out = Vec::new();
        let mut pair = |part: AppliedPart, status: Status, parent: &str, child: String| {
            let ty = match part {
                AppliedPart::Files => AppliedFiles,
                AppliedPart::Os => AppliedOSImage,
            };
            out.push(ConditionChange::new(
                UpdateExecuted,
                status,
                ty.as_str(),
                parent,
            ));
            out.push(ConditionChange::child(UpdateExecuted, ty, status, child));
        };
        if let Some((part, error)) = &scope.failed {
            match part {
                AppliedPart::Files => pair(
                    *part,
                    Status::Unknown,
                    "Error updating the Files on disk as a part of the in progress phase",
                    format!("Update failed applying files to node: {error}"),
                ),
                // (sic) the MCD's wording.
                AppliedPart::Os => pair(
                    *part,
                    Status::Unknown,
                    "Error the OS on disk as a part of the in progress phase",
                    format!("Update failed applying new OS config to node: {error}"),
                ),
            }
            return out;
        }
        let done = self.status == Status::True;
        if scope.files {
            if done {
                // (sic) the MCD says "did" whatever changed.
                pair(
                    AppliedPart::Files,
                    Status::True,
                    "Updated the Files on disk as a part of the in progress phase",
                    "Applied files. SSH Keys did need an update".into(),
                );
            } else {
                pair(
                    AppliedPart::Files,
                    Status::Unknown,
                    "Updating the Files on disk as a part of the in progress phase",
                    "Applying files to node.".into(),
                );
            }
        }
        if scope.os {
            if done {
                pair(
                    AppliedPart::Os,
                    Status::True,
                    "Updated the OS on disk as a part of the in progress phase",
                    "Applied new OS config to node.".into(),
                );
            } else {
                pair(
                    AppliedPart::Os,
                    Status::Unknown,
                    "Updating the OS on disk as a part of the in progress phase",
                    "Applying new OS config to node.".into(),
                );
            }
        }
        out
    }
}

/// What "Action during update to X" names when the Updated condition resets the others: the desired
/// image when it differs from the current one (or "disable image mode" when it goes away), else the
/// desired config (`generateAndApplyMachineConfigNodes`).
pub fn update_target(
    desired_config: &str,
    desired_image: Option<&str>,
    current_image: Option<&str>,
) -> String {
    let (d, c) = (desired_image.unwrap_or(""), current_image.unwrap_or(""));
    if d == c {
        desired_config.to_string()
    } else if d.is_empty() {
        "disable image mode".to_string()
    } else {
        d.to_string()
    }
}

/// The CRD's `ImageDigestFormat` rules for `configImage` fields: at most 447 characters,
/// `host[:port][/namespace]/name@sha256:<64 hex>`. A value that does not fit is left out (the API
/// server would reject the whole status).
pub fn image_digest_format(image: &str) -> bool {
    let Some((name, digest)) = image.split_once('@') else {
        return false;
    };
    let lower_hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    let digest_ok = digest
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.chars().all(lower_hex));
    if image.len() > 447 || !digest_ok {
        return false;
    }
    let Some((host, path)) = name.split_once('/') else {
        return false;
    };
    let (host, port) = match host.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (host, None),
    };
    let label = |l: &str| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let labels: Vec<&str> = host.split('.').collect();
    let host_ok = labels.len() >= 2 && labels.iter().all(|l| label(l));
    let port_ok =
        port.is_none_or(|p| (2..=5).contains(&p.len()) && p.chars().all(|c| c.is_ascii_digit()));
    let segment = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let path_ok = match path.split_once('/') {
        Some((ns, name)) => {
            ns.chars().count() <= 61
                && ns.chars().all(segment)
                && name.chars().all(|c| segment(c) || c == '.')
        }
        None => path.chars().all(|c| segment(c) || c == '.'),
    };
    host_ok && port_ok && path_ok
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Every condition of the Default schema False with reason `NotYetOccurred`.
pub fn initial_conditions(time: &str) -> Vec<Value> {
    initial_conditions_for(false, time)
}

/// Every condition of the schema False with reason `NotYetOccurred`.
pub fn initial_conditions_for(image_mode: bool, time: &str) -> Vec<Value> {
    ConditionType::for_schema(image_mode)
        .iter()
        .map(|t| {
            json!({"type": t.as_str(), "status": "False", "reason": "NotYetOccurred",
                "message": format!("This node has not yet entered the {} phase", t.as_str()),
                "lastTransitionTime": time})
        })
        .collect()
}

/// A new MachineConfigNode with `spec` (status is written separately: it is a subresource).
pub fn new_machine_config_node(node: &str, spec: &Value) -> Value {
    json!({
        "apiVersion": "machineconfiguration.openshift.io/v1",
        "kind": "MachineConfigNode",
        "metadata": {"name": node},
        "spec": spec,
    })
}

/// Apply `change` to `conditions` (kept in the order of [`ConditionType`]). `update_target` is what
/// a reset names ("Action during update to X", see [`update_target`]). Returns false when the
/// condition already had that status, reason and message (nothing to write).
pub fn apply_change(
    conditions: &mut Vec<Value>,
    change: &ConditionChange,
    update_target: &str,
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
                c["message"] = json!(format!("Action during update to {update_target}: {old}"));
                c["lastTransitionTime"] = json!(time);
            }
        }
    }
    conditions.sort_by_key(|c| ConditionType::rank(&c["type"]));
    true
}

/// `status.configVersion` from the node annotations.
pub fn config_version(node: &Node) -> Value {
    json!({
        "current": annotations::get(node, CURRENT_CONFIG).unwrap_or_default(),
        "desired": annotations::get(node, DESIRED_CONFIG).unwrap_or_default(),
    })
}

/// An image annotation as a `configImage` field: set, and in the CRD's digest format.
fn image_annotation<'n>(node: &'n Node, key: &str) -> Option<&'n str> {
    let image = annotations::get(node, key).filter(|s| !s.is_empty())?;
    if image_digest_format(image) {
        Some(image)
    } else {
        tracing::debug!(
            image,
            annotation = key,
            "not a digested pull spec; left out of the MachineConfigNode"
        );
        None
    }
}

/// `status.configImage` from the node's image annotations (`None` when neither is set: the CRD
/// wants at least one property).
pub fn config_image(node: &Node) -> Option<Value> {
    let mut out = serde_json::Map::new();
    if let Some(i) = image_annotation(node, CURRENT_IMAGE) {
        out.insert("currentImage".into(), json!(i));
    }
    if let Some(i) = image_annotation(node, DESIRED_IMAGE) {
        out.insert("desiredImage".into(), json!(i));
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

/// What this writer keeps of our MachineConfigNode.
#[derive(Debug, Default)]
struct Written {
    generation: i64,
    conditions: Vec<Value>,
    /// The served CRD has the image-mode fields.
    image_mode: bool,
    /// `status` as last applied (to skip writes that change nothing).
    status: Value,
    /// `spec` as last seen or applied.
    spec: Value,
    irreconcilable: Vec<IrreconcilableChange>,
}

/// Writes our MachineConfigNode. Keeps the full status it applies, since server-side apply
/// removes fields a manager stops sending.
#[derive(Debug)]
pub struct McnWriter<C> {
    cluster: Arc<C>,
    pool: String,
    state: Mutex<Option<Written>>,
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

    /// Whether the served MachineConfigNode schema has the image-mode status fields.
    async fn detect_image_mode(&self) -> bool {
        match self.cluster.get_custom_resource_definition(MCN_CRD).await {
            Ok(Some(crd)) => {
                let versions = crd["spec"]["versions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let served = versions
                    .iter()
                    .find(|v| v["name"] == "v1")
                    .or(versions.first());
                let has = served.is_some_and(|v| {
                    v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
                        ["configImage"]
                        .is_object()
                });
                let feature_set =
                    crd["metadata"]["annotations"]["release.openshift.io/feature-set"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                tracing::info!(
                    feature_set = %feature_set,
                    image_mode_status = has,
                    "MachineConfigNode schema: {}",
                    if has {
                        "has the image-mode status fields; reporting configImage, AppliedFiles, AppliedOSImage and ImagePulledFromRegistry"
                    } else {
                        "no image-mode status fields; reporting AppliedFilesAndOS"
                    }
                );
                has
            }
            Ok(None) => {
                tracing::warn!(
                    "the MachineConfigNode CRD is not installed; reporting its Default fields"
                );
                false
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not read the MachineConfigNode CRD; reporting its Default fields");
                false
            }
        }
    }

    /// The spec we want: node, pool (kept as found when the object has one), the desired config and,
    /// in image mode, the desired image.
    fn desired_spec(&self, node: &Node, current: &Value, image_mode: bool) -> Value {
        let name = self.cluster.node_name();
        let pool = current["pool"]["name"]
            .as_str()
            .filter(|p| !p.is_empty())
            .unwrap_or(&self.pool);
        let desired = annotations::get(node, DESIRED_CONFIG)
            .filter(|d| !d.is_empty())
            .unwrap_or(NOT_YET_SET);
        let mut spec = json!({"node": {"name": name}, "pool": {"name": pool},
            "configVersion": {"desired": desired}});
        if image_mode && let Some(image) = image_annotation(node, DESIRED_IMAGE) {
            spec["configImage"] = json!({"desiredImage": image});
        }
        spec
    }

    fn status_body(&self, w: &Written, conditions: &[Value], node: &Node) -> Value {
        let mut status = json!({"observedGeneration": w.generation, "configVersion": config_version(node), "conditions": conditions});
        if w.image_mode
            && let Some(ci) = config_image(node)
        {
            status["configImage"] = ci;
        }
        if !w.irreconcilable.is_empty() {
            status["irreconcilableChanges"] =
                serde_json::to_value(&w.irreconcilable).unwrap_or_default();
        }
        status
    }

    async fn ensure_locked(&self, state: &mut Option<Written>, node: &Node) -> Result<()> {
        if state.is_some() {
            return Ok(());
        }
        let image_mode = self.detect_image_mode().await;
        let name = self.cluster.node_name().to_string();
        let obj = match self.cluster.get_machine_config_node().await? {
            Some(o) => o,
            None => {
                // Created without configImage: it is then set by server-side apply, so that a
                // later apply without it removes it (a field set by the create would stay).
                let spec = self.desired_spec(node, &Value::Null, false);
                let body = new_machine_config_node(&name, &spec);
                self.cluster.create_machine_config_node(&body).await?
            }
        };
        let mut w = Written {
            generation: obj["metadata"]["generation"].as_i64().unwrap_or(1).max(1),
            conditions: obj["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            image_mode,
            status: obj["status"].clone(),
            spec: obj["spec"].clone(),
            irreconcilable: serde_json::from_value(obj["status"]["irreconcilableChanges"].clone())
                .unwrap_or_default(),
        };
        let time = now();
        let mut missing = false;
        for init in initial_conditions_for(image_mode, &time) {
            if !w.conditions.iter().any(|c| c["type"] == init["type"]) {
                w.conditions.push(init);
                missing = true;
            }
        }
        w.conditions
            .sort_by_key(|c| ConditionType::rank(&c["type"]));
        self.sync_spec(&mut w, node).await?;
        let conditions = w.conditions.clone();
        if missing || self.status_body(&w, &conditions, node) != w.status {
            self.apply(&mut w, conditions, node).await?;
        }
        *state = Some(w);
        Ok(())
    }

    /// Apply the spec if it is not what we want (a new desired config or image).
    async fn sync_spec(&self, w: &mut Written, node: &Node) -> Result<()> {
        let want = self.desired_spec(node, &w.spec, w.image_mode);
        let same = ["node", "pool", "configVersion", "configImage"]
            .iter()
            .all(|k| w.spec.get(*k) == want.get(*k));
        if same {
            return Ok(());
        }
        let obj = self.cluster.apply_machine_config_node_spec(&want).await?;
        w.spec = obj["spec"].clone();
        if let Some(g) = obj["metadata"]["generation"].as_i64() {
            w.generation = w.generation.max(g);
        }
        Ok(())
    }

    async fn apply(&self, w: &mut Written, conditions: Vec<Value>, node: &Node) -> Result<()> {
        let status = self.status_body(w, &conditions, node);
        self.cluster
            .apply_machine_config_node_status(&status)
            .await?;
        w.conditions = conditions;
        w.status = status;
        Ok(())
    }

    /// Apply condition changes in order; writes once, and only if something changed (conditions,
    /// or the annotations the status and spec mirror).
    pub async fn update(&self, node: &Node, changes: &[ConditionChange]) -> Result<bool> {
        let mut state = self.state.lock().await;
        self.ensure_locked(&mut state, node).await?;
        let w = state.as_mut().expect("ensured");
        self.sync_spec(w, node).await?;
        let desired = annotations::get(node, DESIRED_CONFIG).unwrap_or_default();
        let target = if w.image_mode {
            update_target(
                desired,
                annotations::get(node, DESIRED_IMAGE),
                annotations::get(node, CURRENT_IMAGE),
            )
        } else {
            desired.to_string()
        };
        let time = now();
        let mut next = w.conditions.clone();
        let mut changed = false;
        for c in changes.iter().flat_map(|c| c.for_schema(w.image_mode)) {
            // Updated=True comes once the node is at its image (the MCD writes it after SetDone), so
            // it names the config even when the watched node does not show the new currentImage yet.
            let target = if c.condition == ConditionType::Updated && c.status == Status::True {
                desired
            } else {
                target.as_str()
            };
            changed |= apply_change(&mut next, &c, target, &time);
        }
        if !changed && self.status_body(w, &next, node) == w.status {
            return Ok(false);
        }
        self.apply(w, next, node).await?;
        Ok(true)
    }

    /// Report how the node's storage differs from the config it is at (`status.irreconcilableChanges`,
    /// empty: none). Writes only when the report changes.
    pub async fn set_irreconcilable(
        &self,
        node: &Node,
        changes: Vec<IrreconcilableChange>,
    ) -> Result<bool> {
        let mut state = self.state.lock().await;
        self.ensure_locked(&mut state, node).await?;
        let w = state.as_mut().expect("ensured");
        if w.irreconcilable == changes {
            return Ok(false);
        }
        w.irreconcilable = changes;
        let conditions = w.conditions.clone();
        self.apply(w, conditions, node).await?;
        Ok(true)
    }

    /// Whether the MachineConfigNode gets the image-mode fields and conditions (known once ensured).
    pub async fn image_mode(&self) -> bool {
        self.state
            .lock()
            .await
            .as_ref()
            .is_some_and(|w| w.image_mode)
    }

    /// The conditions as last written.
    pub async fn conditions(&self) -> Vec<Value> {
        self.state
            .lock()
            .await
            .as_ref()
            .map(|w| w.conditions.clone())
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

    #[test]
    fn image_digest_format_is_the_crds() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        for ok in [
            format!("quay.io/openshift/os@{d}"),
            format!(
                "image-registry.openshift-image-registry.svc:5000/openshift-machine-config-operator/os@{d}"
            ),
            format!("127.0.0.1:5000/os@{d}"),
        ] {
            assert!(image_digest_format(&ok), "{ok}");
        }
        for bad in [
            "quay.io/openshift/os:latest".to_string(),
            format!("quay.io/openshift/os@{}", d.to_uppercase()),
            format!("os@{d}"),
            format!("localhost/os@{d}"),
            format!("quay.io/a/b/c@{d}"),
            format!("quay.io:1/os@{d}"),
            format!("quay.io/os@{d}@{d}"),
            format!("quay.io/{}/os@{d}", "n".repeat(62)),
        ] {
            assert!(!image_digest_format(&bad), "{bad}");
        }
    }

    #[test]
    fn update_target_names_the_image_while_it_changes() {
        assert_eq!(update_target("rendered-b", None, None), "rendered-b");
        assert_eq!(update_target("rendered-b", Some("i@2"), Some("i@1")), "i@2");
        assert_eq!(
            update_target("rendered-b", Some("i@1"), Some("i@1")),
            "rendered-b"
        );
        assert_eq!(
            update_target("rendered-b", None, Some("i@1")),
            "disable image mode"
        );
    }

    #[test]
    fn applied_changes_split_in_image_mode_only() {
        let scope = |files, os| AppliedScope {
            files,
            os,
            failed: None,
        };
        let mut c = ConditionChange::child(
            ConditionType::UpdateExecuted,
            ConditionType::AppliedFilesAndOS,
            Status::Unknown,
            "Applying files and new OS config to node",
        );
        c.applied = Some(scope(true, false));
        assert_eq!(c.for_schema(false), vec![c.clone()]);
        let split = c.for_schema(true);
        assert_eq!(
            split
                .iter()
                .map(|c| (c.condition.as_str(), c.reason.as_str(), c.message.as_str()))
                .collect::<Vec<_>>(),
            [
                (
                    "UpdateExecuted",
                    "AppliedFiles",
                    "Updating the Files on disk as a part of the in progress phase"
                ),
                (
                    "AppliedFiles",
                    "UpdateExecutedAppliedFiles",
                    "Applying files to node."
                ),
            ]
        );
        // Units only (neither files nor OS): nothing in image mode, as the MCD.
        c.applied = Some(scope(false, false));
        assert!(c.for_schema(true).is_empty());
        // A failure is reported in image mode only.
        c.applied = Some(AppliedScope {
            files: true,
            os: true,
            failed: Some((AppliedPart::Os, "no space".into())),
        });
        assert!(c.for_schema(false).is_empty());
        let split = c.for_schema(true);
        assert_eq!(split[1].condition, ConditionType::AppliedOSImage);
        assert_eq!(
            split[1].message,
            "Update failed applying new OS config to node: no space"
        );
        // Image-mode-only conditions are dropped on the Default schema.
        let pulled = ConditionChange::new(
            ConditionType::ImagePulledFromRegistry,
            Status::True,
            "ImagePulledFromRegistry",
            "ok",
        );
        assert!(pulled.for_schema(false).is_empty());
        assert_eq!(pulled.for_schema(true), vec![pulled.clone()]);
        assert_eq!(initial_conditions_for(true, "t").len(), 16);
    }
}
