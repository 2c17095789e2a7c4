//! The node's OS image: status of its ostree deployments, prefetching a container image into the
//! repo while the node still serves, staging it (with kernel arguments) after the drain, and cleanup.
//!
//! Two implementations of [`OsBackend`]:
//! - [`OstreeBackend`]: in-process ostree-ext (as bootc does), for nodes where we own the sysroot and for
//!   sandbox sysroots in tests;
//! - [`RpmOstreeBackend`]: rpm-ostree over D-Bus (`org.projectatomic.rpmostree1`), for RHCOS/FCOS hosts.
//!
//! [`select_backend`] picks rpm-ostree when rpm-ostreed is on the system bus, else ostree.

mod cli;
mod error;
mod fetch;
pub mod helper;
mod import;
mod kargs;
mod layer_stream;
mod namespace;
mod ostree_backend;
mod preflight;
mod pull;
mod rollback;
pub mod rpm_ostree;
mod worker;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use anyhow::Result;
use serde::{Deserialize, Serialize};

pub use crate::config::KernelType;
pub use crate::plan::KernelArgsChange;
pub use cli::{
    ApplyOsReport, NodeOsStatus, OutputFormat, StatusArgs, StatusDocument, StatusMetadata,
    StatusSpec, apply_os_change, render_status, run_status, status_document,
};
pub use error::{PartialPull, PullError, PullErrorKind};
pub use helper::HelperOptions;
pub use import::DEFAULT_PULL_CONCURRENCY;
pub use kargs::user_kargs;
pub use ostree_backend::{OstreeBackend, OstreeBackendOptions};
pub use rpm_ostree::RpmOstreeBackend;

/// One ostree deployment as a user would describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// The stateroot (`osname`) it belongs to.
    pub stateroot: String,
    /// The ostree commit checksum it was checked out from.
    pub checksum: String,
    /// Distinguishes deployments of the same commit.
    pub serial: i32,
    /// Pull spec of the container image, without transport (the MachineConfig `osImageURL` form), e.g.
    /// `quay.io/org/os@sha256:…`; for non-registry transports the transport stays (`oci:/path:tag`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The full ostree image reference recorded in the origin, e.g. `ostree-unverified-registry:quay.io/org/os:tag`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_reference: Option<String>,
    /// `sha256:…` of the image manifest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// The image's `org.opencontainers.image.version` label (or the commit's `version`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Kernel arguments, without the `ostree=` argument ostree adds itself.
    pub kernel_arguments: Vec<String>,
    /// Packages layered on the image (rpm-ostree only: kernel-rt, extensions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requested_packages: Vec<String>,
    /// Base packages removed by an override (rpm-ostree only: the default kernel under kernel-rt/64k).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requested_base_removals: Vec<String>,
}

impl Deployment {
    /// `<checksum>.<serial>`, the deployment's directory name.
    pub fn id(&self) -> String {
        format!("{}.{}", self.checksum, self.serial)
    }
}

/// Where a deployment stands relative to the running system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// Running now.
    Booted,
    /// Staged on a booted host: written out by `ostree-finalize-staged.service` at shutdown, booted next.
    Staged,
    /// The default boot entry, not booted and not staged (a sandbox sysroot, or deployed without staging).
    Pending,
    /// The previous deployment, kept to roll back to.
    Rollback,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Booted => "booted",
            Role::Staged => "staged",
            Role::Pending => "pending",
            Role::Rollback => "rollback",
        })
    }
}

/// The node's deployments by role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OsStatus {
    pub booted: Option<Deployment>,
    pub staged: Option<Deployment>,
    pub pending: Option<Deployment>,
    pub rollback: Option<Deployment>,
}

impl OsStatus {
    /// The deployment the next boot will use: staged, else pending, else booted.
    pub fn next_boot(&self) -> Option<&Deployment> {
        self.staged
            .as_ref()
            .or(self.pending.as_ref())
            .or(self.booted.as_ref())
    }

    /// The deployment changes are based on (its kargs and, for kargs-only changes, its image):
    /// the booted one, else (sandbox) the pending default.
    pub fn base(&self) -> Option<&Deployment> {
        self.booted.as_ref().or(self.pending.as_ref())
    }

    pub fn roles(&self) -> impl Iterator<Item = (Role, &Deployment)> {
        [
            (Role::Booted, self.booted.as_ref()),
            (Role::Staged, self.staged.as_ref()),
            (Role::Pending, self.pending.as_ref()),
            (Role::Rollback, self.rollback.as_ref()),
        ]
        .into_iter()
        .filter_map(|(r, d)| d.map(|d| (r, d)))
    }
}

/// What the next boot should run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsChange {
    /// The image (an `osImageURL` pull spec, or a full `ostree-…:` image reference). `None` keeps the base
    /// deployment's image, so only the kernel arguments change.
    pub image: Option<String>,
    pub kargs: KernelArgsChange,
    /// `None`: leave the kernel as it is.
    pub kernel_type: Option<KernelType>,
    /// RHCOS extensions (package names) wanted in the next deployment; `None`: leave them as they are.
    pub extensions: Option<Vec<String>>,
    /// The desired config's `baseOSExtensionsContainerImage`: the rpm-md repo that kernel-rt/64k and
    /// extension packages are installed from (rpm-ostree only).
    pub extensions_image: Option<String>,
    /// The image is an on-cluster-layering build (`desiredImage`): kernel type and extensions are built
    /// into it, so nothing is layered on the node and earlier client-side layering is dropped.
    pub layered_image: bool,
}

impl OsChange {
    /// What the OS backend must do for `plan`: the image when it changes (or the desired one when the
    /// forcefile asks for a re-apply), the kernel argument change, the kernel type when it changes, and the
    /// packages of all desired extensions when the extensions change. `None` when the OS is left alone.
    pub fn from_plan(
        plan: &crate::plan::Plan,
        desired: &crate::config::MachineConfig,
    ) -> Option<OsChange> {
        let forced_reapply = plan.forced && desired.os_image().is_some();
        if !plan.touches_os() && !forced_reapply {
            return None;
        }
        let extensions_change =
            !plan.extensions.add.is_empty() || !plan.extensions.remove.is_empty();
        let extensions_image = desired
            .base_os_extensions_container_image
            .as_ref()
            .map(|i| i.to_string());
        Some(OsChange {
            extensions_image,
            layered_image: false,
            image: match &plan.os_image {
                Some(c) => Some(c.to.clone()),
                None if plan.forced => desired.os_image().map(str::to_string),
                None => None,
            },
            kargs: plan.kernel_arguments.clone(),
            kernel_type: plan.kernel_type.as_ref().map(|c| c.to),
            extensions: extensions_change.then(|| {
                desired
                    .extensions
                    .iter()
                    .filter_map(|e| crate::config::extensions::packages(e))
                    .flatten()
                    .map(|p| p.to_string())
                    .collect()
            }),
        })
    }

    /// The same change for an on-cluster-layering image (`desiredImage`): the MCD leaves kernel type
    /// and extensions to the image build (pkg/daemon/update.go applyLayeredOSChanges returns before
    /// switchKernel/applyExtensions when OCL is enabled).
    pub fn for_layered_image(mut self, layered: bool) -> Self {
        if layered {
            self.layered_image = true;
            self.kernel_type = None;
            self.extensions = None;
        }
        self
    }
}

/// Result of [`OsBackend::stage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StageOutcome {
    /// A new deployment will boot next (staged on a booted host, the new default in a sandbox).
    Staged(Deployment),
    /// Nothing written: this deployment already has the image and kernel arguments.
    Unchanged(Role, Deployment),
}

impl StageOutcome {
    pub fn deployment(&self) -> &Deployment {
        match self {
            StageOutcome::Staged(d) | StageOutcome::Unchanged(_, d) => d,
        }
    }

    pub fn is_unchanged(&self) -> bool {
        matches!(self, StageOutcome::Unchanged(..))
    }
}

/// Result of [`OsBackend::prepare`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// The image was pulled into the repo; staging happens after the drain.
    Prefetched(PrefetchReport),
    /// The next deployment is staged already (locked: it is only booted after `finalize`).
    Staged(StageOutcome),
    /// Nothing to do before the drain.
    Nothing,
}

/// Byte-level progress of one layer download, with the pull's totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchProgress {
    pub image: String,
    /// Position in the manifest's layer list (0 = bottom).
    pub layer_index: usize,
    pub layer_digest: String,
    pub fetched: u64,
    pub total: u64,
    /// Layers and compressed bytes this pull downloads in all (layers already in the repo excluded).
    pub layers_to_fetch: usize,
    pub bytes_to_fetch: u64,
    /// Compressed bytes fetched so far of all the layers this pull fetches (layers fetch in parallel).
    pub bytes_done: u64,
    /// Layers completely fetched and imported so far.
    pub layers_done: usize,
}

/// Called with download progress (also emitted as `tracing` events).
pub type ProgressFn = Arc<dyn Fn(&FetchProgress) + Send + Sync>;

/// Result of [`OsBackend::prefetch`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrefetchReport {
    pub image: String,
    pub image_digest: String,
    pub version: Option<String>,
    /// The image's manifest was already imported: nothing but the manifest was fetched.
    pub already_present: bool,
    pub layers_total: usize,
    pub layers_fetched: usize,
    /// Layers shared with images already in the repo, not downloaded again.
    pub layers_present: usize,
    /// Compressed bytes of the layers downloaded.
    pub bytes_fetched: u64,
    /// Compressed bytes of all the image's layers.
    pub bytes_total: u64,
}

/// Result of [`OsBackend::cleanup`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanupReport {
    pub images_removed: u32,
    pub layers_removed: u32,
    pub objects_removed: u32,
    pub bytes_freed: u64,
}

/// Result of [`OsBackend::rollback`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RollbackOutcome {
    /// The deployment is now the default: the next boot runs it.
    Switched,
    /// It already was the default; nothing was written.
    AlreadyDefault,
}

/// Result of [`OsBackend::prune`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    /// Deployments removed (`<checksum>.<serial>`), oldest last.
    pub deployments_removed: Vec<String>,
    pub cleanup: CleanupReport,
}

/// The node's OS image operations. Implementations are cheap to clone and safe to share.
pub trait OsBackend: Send + Sync {
    /// `"ostree"` or `"rpm-ostree"`.
    fn name(&self) -> &'static str;

    /// Booted / staged / pending / rollback deployments.
    fn status(&self) -> impl Future<Output = Result<OsStatus>> + Send;

    /// Import every layer of `image` into the repo without deploying (layers already present are not
    /// fetched again). Meant to run before the drain.
    fn prefetch(
        &self,
        image: &str,
        progress: Option<ProgressFn>,
    ) -> impl Future<Output = Result<PrefetchReport>> + Send;

    /// Make `change` what the next boot runs: a new deployment from the (prefetched) image with the
    /// base deployment's kernel arguments changed by `change.kargs`. A no-op when the booted or
    /// staged deployment already matches.
    fn stage(&self, change: &OsChange) -> impl Future<Output = Result<StageOutcome>> + Send;

    /// Before the drain, while the node still serves: get `change` as far as can be undone without a
    /// reboot. The default prefetches the image; rpm-ostree stages the whole deployment with its
    /// finalization locked, so that after the drain only [`OsBackend::finalize`] is left.
    fn prepare(
        &self,
        change: &OsChange,
        progress: Option<ProgressFn>,
    ) -> impl Future<Output = Result<Prepared>> + Send {
        let image = change.image.clone();
        async move {
            Ok(match image {
                Some(image) => Prepared::Prefetched(self.prefetch(&image, progress).await?),
                None => Prepared::Nothing,
            })
        }
    }

    /// Release the staged deployment for `change` and reboot into it. `Ok(true)`: the backend's daemon
    /// reboots (rpm-ostree `FinalizeDeployment`); `Ok(false)`: nothing to release, the caller reboots
    /// (ostree finalizes a staged deployment at shutdown by itself — the default).
    fn finalize(&self, change: &OsChange) -> impl Future<Output = Result<bool>> + Send {
        let _ = change;
        async { Ok(false) }
    }

    /// Change only the kernel arguments: a new deployment of the base deployment's commit.
    fn set_kernel_arguments(
        &self,
        kargs: &KernelArgsChange,
    ) -> impl Future<Output = Result<StageOutcome>> + Send {
        let change = OsChange {
            kargs: kargs.clone(),
            ..Default::default()
        };
        async move { self.stage(&change).await }
    }

    /// Remove images, layers and deployments nothing references any more (including a prefetched
    /// image that was never staged).
    fn cleanup(&self) -> impl Future<Output = Result<CleanupReport>> + Send;

    /// Make `to` (the deployment booted before this one: `status().rollback`) the default for the next
    /// boot, as `rpm-ostree rollback` does; a staged deployment is dropped. Idempotent: when `to` already
    /// boots next nothing is written (where `rpm-ostree rollback` would swap back). An error when `to`
    /// is not in the sysroot any more.
    fn rollback(&self, to: &Deployment) -> impl Future<Output = Result<RollbackOutcome>> + Send;

    /// After a healthy boot: remove deployments older than the rollback one (the booted, staged, pending,
    /// rollback, pinned and other stateroots' deployments stay), then what nothing references any more
    /// ([`OsBackend::cleanup`]).
    fn prune(&self) -> impl Future<Output = Result<PruneReport>> + Send;
}

/// Which implementation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// rpm-ostree when `org.projectatomic.rpmostree1` is on the system bus, else ostree.
    #[default]
    Auto,
    Ostree,
    RpmOstree,
}

/// A backend chosen at run time.
#[derive(Debug, Clone)]
pub enum AnyBackend {
    Ostree(OstreeBackend),
    RpmOstree(RpmOstreeBackend),
}

/// Pick the backend: `kind` when given; for [`BackendKind::Auto`], rpm-ostree when its daemon is on the
/// system bus (a sandbox `sysroot` other than `/` always gets ostree).
pub async fn select_backend(
    kind: BackendKind,
    options: OstreeBackendOptions,
) -> Result<AnyBackend> {
    let sandbox = options.sysroot != std::path::Path::new("/");
    match kind {
        BackendKind::Ostree => Ok(AnyBackend::Ostree(OstreeBackend::new(options))),
        BackendKind::RpmOstree => Ok(AnyBackend::RpmOstree(
            RpmOstreeBackend::connect_system(&options.node_root).await?,
        )),
        BackendKind::Auto if sandbox => Ok(AnyBackend::Ostree(OstreeBackend::new(options))),
        BackendKind::Auto => {
            if rpm_ostree::rpm_ostreed_on_system_bus().await {
                tracing::info!(backend = "rpm-ostree", "rpm-ostreed is on the system bus");
                Ok(AnyBackend::RpmOstree(
                    RpmOstreeBackend::connect_system(&options.node_root).await?,
                ))
            } else {
                tracing::info!(backend = "ostree", "rpm-ostreed is not on the system bus");
                Ok(AnyBackend::Ostree(OstreeBackend::new(options)))
            }
        }
    }
}

impl OsBackend for AnyBackend {
    fn name(&self) -> &'static str {
        match self {
            AnyBackend::Ostree(b) => b.name(),
            AnyBackend::RpmOstree(b) => b.name(),
        }
    }

    async fn status(&self) -> Result<OsStatus> {
        match self {
            AnyBackend::Ostree(b) => b.status().await,
            AnyBackend::RpmOstree(b) => b.status().await,
        }
    }

    async fn prefetch(&self, image: &str, progress: Option<ProgressFn>) -> Result<PrefetchReport> {
        match self {
            AnyBackend::Ostree(b) => b.prefetch(image, progress).await,
            AnyBackend::RpmOstree(b) => b.prefetch(image, progress).await,
        }
    }

    async fn stage(&self, change: &OsChange) -> Result<StageOutcome> {
        match self {
            AnyBackend::Ostree(b) => b.stage(change).await,
            AnyBackend::RpmOstree(b) => b.stage(change).await,
        }
    }

    async fn cleanup(&self) -> Result<CleanupReport> {
        match self {
            AnyBackend::Ostree(b) => b.cleanup().await,
            AnyBackend::RpmOstree(b) => b.cleanup().await,
        }
    }

    async fn prepare(&self, change: &OsChange, progress: Option<ProgressFn>) -> Result<Prepared> {
        match self {
            AnyBackend::Ostree(b) => b.prepare(change, progress).await,
            AnyBackend::RpmOstree(b) => b.prepare(change, progress).await,
        }
    }

    async fn finalize(&self, change: &OsChange) -> Result<bool> {
        match self {
            AnyBackend::Ostree(b) => b.finalize(change).await,
            AnyBackend::RpmOstree(b) => b.finalize(change).await,
        }
    }

    async fn rollback(&self, to: &Deployment) -> Result<RollbackOutcome> {
        match self {
            AnyBackend::Ostree(b) => b.rollback(to).await,
            AnyBackend::RpmOstree(b) => b.rollback(to).await,
        }
    }

    async fn prune(&self) -> Result<PruneReport> {
        match self {
            AnyBackend::Ostree(b) => b.prune().await,
            AnyBackend::RpmOstree(b) => b.prune().await,
        }
    }
}

/// Indices of each role in `deployments`, from per-deployment (booted, staged) flags in sysroot order.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RoleIndices {
    pub(crate) booted: Option<usize>,
    pub(crate) staged: Option<usize>,
    pub(crate) pending: Option<usize>,
    pub(crate) rollback: Option<usize>,
}

pub(crate) fn role_indices(flags: &[(bool, bool)]) -> RoleIndices {
    let booted = flags.iter().position(|(b, _)| *b);
    let staged = flags.iter().position(|(_, s)| *s);
    // The default (first non-staged) deployment is pending unless it is the booted one.
    let first_unstaged = flags.iter().position(|(_, s)| !*s);
    let pending = first_unstaged.filter(|i| Some(*i) != booted);
    // Rollback: the next non-staged deployment after the booted one (or after pending when nothing is booted).
    let after = booted.or(pending);
    let rollback = after.and_then(|a| (a + 1..flags.len()).find(|i| !flags[*i].1));
    RoleIndices {
        booted,
        staged,
        pending,
        rollback,
    }
}

/// Split an image string into the ostree image reference ostree-ext and rpm-ostree take:
/// a full `ostree-…:` reference is kept, a plain pull spec becomes `ostree-unverified-registry:<spec>`
/// (as the OpenShift MCD rebases; signature policy comes from `/etc/containers/policy.json`).
pub fn ostree_image_reference(image: &str) -> String {
    if image.starts_with("ostree-") {
        image.to_string()
    } else {
        format!(
            "ostree-unverified-registry:{}",
            image.trim_start_matches("docker://")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_pull_specs_become_unverified_registry_refs() {
        assert_eq!(
            ostree_image_reference("quay.io/org/os@sha256:abc"),
            "ostree-unverified-registry:quay.io/org/os@sha256:abc"
        );
        assert_eq!(
            ostree_image_reference("docker://q.io/os:1"),
            "ostree-unverified-registry:q.io/os:1"
        );
        assert_eq!(
            ostree_image_reference("ostree-unverified-image:oci:/tmp/x:base"),
            "ostree-unverified-image:oci:/tmp/x:base"
        );
    }
}
