//! The ControllerConfig step of every sync (the MCD runs it as its own worker,
//! `syncControllerConfigHandler` in MCO `pkg/daemon/certificate_writer.go`, and writes the internal
//! registry's pull secret at the start of every `syncNode`): when the watched
//! `ControllerConfig/machine-config-controller` has a resourceVersion the node's
//! `lastSyncedControllerConfigResourceVersion` annotation does not name, validate it, write what it
//! holds to the node (no drain, no reboot: see [`crate::host::certs`]), then record the
//! resourceVersion in that annotation. A ControllerConfig that cannot be used fails the sync: the
//! node is Degraded with the field named and nothing is written, until a new resourceVersion fixes
//! it. Also, on every sync, `/run/ostree/auth.json` is brought back after a boot (it lives in `/run`).

use std::sync::Arc;

use anyhow::Context;
use k8s_openapi::api::core::v1::Node;

use super::update::ClusterSide;
use crate::cluster::Cluster;
use crate::cluster::annotations::{self as ann, AnnotationChanges};
use crate::host::Root;
use crate::host::certs::{self, CONTROLLER_CONFIG_NAME, ClusterCerts};

/// The resourceVersion of the ControllerConfig last written to the node (MCO
/// `constants.ControllerConfigResourceVersionKey`).
pub const LAST_SYNCED_CONTROLLER_CONFIG: &str =
    "machineconfiguration.openshift.io/lastSyncedControllerConfigResourceVersion";

/// Sync the node with the ControllerConfig, if there is one and it changed since the last sync.
pub async fn sync_controller_config<C: Cluster + 'static>(
    side: &ClusterSide<C>,
    root: &Arc<Root>,
    node: &Node,
) -> anyhow::Result<()> {
    let r = root.clone();
    match tokio::task::spawn_blocking(move || certs::refresh_ostree_auth(&r)).await {
        Ok(Ok(true)) => tracing::info!(
            path = certs::OSTREE_AUTH,
            "wrote the pull secret for OS images (the node's merged with the internal registry's)"
        ),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %format!("{e:#}"), "could not refresh {}", certs::OSTREE_AUTH)
        }
        Err(e) => tracing::warn!(error = %e, "the auth refresh task panicked"),
    }
    let Some(updates) = &side.controller_config else {
        return Ok(());
    };
    let Some(cc) = updates.borrow().clone() else {
        return Ok(());
    };
    let cc = serde_json::to_value(cc).context("reading the ControllerConfig")?;
    let rv = cc["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if ann::get(node, LAST_SYNCED_CONTROLLER_CONFIG) == Some(rv.as_str()) {
        return Ok(());
    }
    let certs = ClusterCerts::from_controller_config(&cc).map_err(|e| {
        anyhow::anyhow!(
            "ControllerConfig {CONTROLLER_CONFIG_NAME} (resourceVersion {rv}) cannot be used, nothing was written: {e}"
        )
    })?;
    let r = root.clone();
    let report = tokio::task::spawn_blocking(move || certs::sync(&r, &certs))
        .await
        .context("the certificate writer panicked")?
        .with_context(|| {
            format!("writing what ControllerConfig {CONTROLLER_CONFIG_NAME} (resourceVersion {rv}) holds to the node")
        })?;
    tracing::info!(
        resource_version = %rv,
        written = %report.written.join(", "),
        removed = %report.removed.join(", "),
        "certificates and pull secrets synced from ControllerConfig {CONTROLLER_CONFIG_NAME}"
    );
    side.annotations
        .write(
            AnnotationChanges::new().set(LAST_SYNCED_CONTROLLER_CONFIG, rv),
            Some(node),
        )
        .await
        .context("recording the synced ControllerConfig on the node")?;
    Ok(())
}
