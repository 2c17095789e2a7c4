//! A new node's first normal start, as the MCD's `checkStateOnFirstRun` (`pkg/daemon/daemon.go`) does it.
//!
//! The machine-config-server served two files with the node's Ignition config (`appendNodeAnnotations`
//! and `appendEncapsulated` in `pkg/server/server.go`): `node-annotations.json` with the rendered config's
//! name (`currentConfig`, `desiredConfig`, `firstPivotConfig`, `state: Done`, and `currentImage`/
//! `desiredImage` when set), and the encapsulated MachineConfig with `spec.config` emptied. Ignition wrote
//! the files, units and users; first boot applied the OS part. So the node's current config is the full
//! rendered config, which only the API server has:
//!
//! 1. without a `currentConfig` annotation, the annotations come from `node-annotations.json`
//!    (`loadNodeAnnotations`, `pkg/daemon/node.go`; the on-disk config's name when the file is gone);
//! 2. while the file is there, the node is bootstrapping: read the full rendered config by name (a failure
//!    is retried, logged and shown by `/healthz`, and nothing is written), validate the node against it
//!    (booted image, kernel arguments, files, units, users), and only then record it as the on-disk
//!    config and keep the file as `node-annotation.json.bak` (sic, the MCD's name). Done follows from
//!    the ordinary settle. The forcefile skips the validation, as in the MCD.
//!
//! Also here: the previous boot's `ostree-finalize-staged` failure, reported once per start as the MCD's
//! `syncFinalizationFailureAnnotation` does.

use std::collections::BTreeMap;

use anyhow::Context;
use k8s_openapi::api::core::v1::Node;

use super::driver::{Daemon, RetryQuietly, Synced};
use super::journal::with_target_image;
use super::state::Target;
use crate::cluster::annotations::{self as ann, AnnotationChanges};
use crate::cluster::{Cluster, EventReason, NodeEvent};
use crate::host::{self, Root};
use crate::os::OsBackend;
use crate::systemd::ServiceManager;

/// The MCS's initial node annotations (`constants.InitialNodeAnnotationsFilePath`).
pub const NODE_ANNOTATIONS: &str = "/etc/machine-config-daemon/node-annotations.json";
/// Where the file goes once the node is validated (`constants.InitialNodeAnnotationsBakPath`, singular).
pub const NODE_ANNOTATIONS_BAK: &str = "/etc/machine-config-daemon/node-annotation.json.bak";

/// `node-annotations.json` is there: the node has not finished its bootstrap.
pub fn pending(root: &Root) -> anyhow::Result<bool> {
    let resolved = root
        .resolve(NODE_ANNOTATIONS)
        .with_context(|| format!("resolving {}", root.display(NODE_ANNOTATIONS)))?;
    Ok(resolved.entry.exists())
}

/// The annotations in `node-annotations.json`; `None` when the file does not exist.
pub fn read(root: &Root) -> anyhow::Result<Option<BTreeMap<String, String>>> {
    let Some(bytes) = root.read_optional(NODE_ANNOTATIONS)? else {
        return Ok(None);
    };
    let map: BTreeMap<String, String> = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is not a JSON object of annotation names to strings",
            root.display(NODE_ANNOTATIONS)
        )
    })?;
    Ok(Some(map))
}

/// Keep the file as `node-annotation.json.bak`: the node's on-disk config is the truth from now on.
pub fn finish(root: &Root) -> anyhow::Result<()> {
    let from = NODE_ANNOTATIONS.trim_start_matches('/');
    let to = NODE_ANNOTATIONS_BAK.trim_start_matches('/');
    root.dir().rename(from, root.dir(), to).with_context(|| {
        format!(
            "renaming {} to {}",
            root.display(NODE_ANNOTATIONS),
            root.display(NODE_ANNOTATIONS_BAK)
        )
    })?;
    let (parent, _) = root
        .open_parent_rel(std::path::Path::new(to))
        .context("opening the daemon's state directory")?;
    rustix::fs::fsync(&parent).context("syncing the daemon's state directory")?;
    Ok(())
}

impl<C, O, S> Daemon<C, O, S>
where
    C: Cluster + 'static,
    O: OsBackend,
    S: ServiceManager,
{
    /// The MCD's `loadNodeAnnotations`: a node without `currentConfig` gets its annotations from
    /// `node-annotations.json`, else from the on-disk config's name. Returns the node as it now is.
    pub(super) async fn load_node_annotations(&self, node: Node) -> anyhow::Result<Node> {
        if ann::get(&node, ann::CURRENT_CONFIG).is_some_and(|c| !c.is_empty()) {
            return Ok(node);
        }
        let changes = match read(&self.root)? {
            Some(initial) => {
                let mut changes = AnnotationChanges::new();
                for (k, v) in &initial {
                    // The MCS writes only machineconfiguration.openshift.io/ keys; nothing else is ours.
                    if k.starts_with(ann::PREFIX) {
                        changes = changes.set(k, v.clone());
                    } else {
                        tracing::warn!(key = %k, "ignoring a key of node-annotations.json outside {}", ann::PREFIX);
                    }
                }
                tracing::info!(
                    file = %self.root.display(NODE_ANNOTATIONS),
                    config = initial.get(ann::CURRENT_CONFIG).map(String::as_str).unwrap_or(""),
                    "no currentConfig annotation: setting the node's initial annotations from the machine-config-server's file"
                );
                changes
            }
            None => match self.read_odc()? {
                Some((mc, image)) => {
                    tracing::info!(config = %mc.name, "no currentConfig annotation: setting it from the on-disk config");
                    let c = AnnotationChanges::new().set(ann::CURRENT_CONFIG, mc.name.clone());
                    match image {
                        Some(i) => c.set(ann::CURRENT_IMAGE, i),
                        None => c,
                    }
                }
                None => anyhow::bail!(
                    "node {} has no {} annotation, and neither {} nor the on-disk config {} exists: nothing says which config the node runs",
                    self.node_name,
                    ann::CURRENT_CONFIG,
                    self.root.display(NODE_ANNOTATIONS),
                    self.root.display(crate::config::paths::CURRENT_CONFIG)
                ),
            },
        };
        let written = self.side.annotations.write(changes, Some(&node)).await?;
        Ok(written.unwrap_or(node))
    }

    /// Validate a bootstrapping node against its full rendered config and record it as the on-disk
    /// config. `Some` ends this sync (Degraded with the mismatch); `None` goes on to the decision.
    pub(super) async fn bootstrap(
        &mut self,
        node: &Node,
        forcefile: bool,
    ) -> anyhow::Result<Option<Synced>> {
        let get = |k: &str| {
            ann::get(node, k)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let Some(config) = get(ann::CURRENT_CONFIG) else {
            anyhow::bail!(
                "{} gives node {} no {} annotation",
                self.root.display(NODE_ANNOTATIONS),
                self.node_name,
                ann::CURRENT_CONFIG
            );
        };
        let current = Target {
            config,
            image: get(ann::CURRENT_IMAGE),
        };
        if forcefile {
            tracing::info!(
                forcefile = crate::config::paths::FORCEFILE,
                "bootstrap: skipping the validation; the forcefile re-applies the config"
            );
            finish(&self.root)?;
            return Ok(None);
        }
        let received = self.fetch_config(&current.config).await.map_err(|e| {
            RetryQuietly(e.context(format!(
                "bootstrap: reading the node's rendered config {} (named by {}); nothing is written until it can be read",
                current.config,
                self.root.display(NODE_ANNOTATIONS)
            )))
        })?;
        let config = with_target_image(received.clone(), current.image.as_deref())?;
        if let Some(reason) = self.check_node(&config, current.image.is_some()).await? {
            tracing::error!(config = %config.name, "bootstrap: the node does not match its rendered config: {reason}");
            self.side
                .event(NodeEvent::warning(
                    EventReason::OnDiskStateValidationFailed,
                    reason.clone(),
                ))
                .await;
            // The drift monitor re-runs the bootstrap once the files are fixed.
            self.start_drift(&config).await;
            self.report_degraded(&reason).await?;
            return Ok(Some(Synced::Settled));
        }
        let (root, image) = (self.root.clone(), current.image.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            host::odc::write_current_config(&root, &received)?;
            host::odc::write_current_image(&root, image.as_deref())?;
            finish(&root)
        })
        .await
        .context("the bootstrap task panicked")??;
        tracing::info!(config = %current, "bootstrap: the node runs its rendered config; recorded as the on-disk config");
        self.bootstrapped = true;
        Ok(None)
    }

    /// The previous boot's `ostree-finalize-staged` failure: the annotation and a `FailedFinalization`
    /// event when it failed, the annotation emptied when it did not (`syncFinalizationFailureAnnotation`).
    /// Best effort, as in the MCD.
    pub(super) async fn report_finalize_failure(&mut self, node: &Node) {
        let failure = match self.env.previous_finalize_error() {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not read the previous boot's ostree-finalize-staged log");
                return;
            }
        };
        let had = ann::get(node, ann::FINALIZE_FAILURE);
        let changes = match &failure {
            Some(f) => {
                let f = ann::truncate_reason(f);
                tracing::warn!(error = %f, "the previous boot's ostree-finalize-staged failed");
                if had != Some(f.as_str()) {
                    self.side
                        .event(NodeEvent::warning(
                            EventReason::FailedFinalization,
                            f.clone(),
                        ))
                        .await;
                }
                AnnotationChanges::new().set(ann::FINALIZE_FAILURE, f)
            }
            None if had.is_some_and(|h| !h.is_empty()) => {
                AnnotationChanges::new().set(ann::FINALIZE_FAILURE, "")
            }
            None => return,
        };
        self.finalize_failure = failure;
        if let Err(e) = self.side.annotations.write(changes, Some(node)).await {
            tracing::warn!(error = %format!("{e:#}"), "could not report the finalize failure");
        }
    }
}
