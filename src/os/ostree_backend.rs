//! The ostree backend: ostree-ext's `ImageImporter` pulls container images into the sysroot's repo (the
//! layers several at a time, [`super::fetch`]), and the libostree sysroot API deploys (sandbox) or
//! stages (booted host) them, with the origin `container-image-reference` that rpm-ostree and bootc
//! also read. The work runs in this process, or (the daemon) in a short-lived helper process
//! ([`super::helper`]) so the idle daemon never calls libostree.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use fn_error_context::context;
use ostree_ext::container::deploy::ORIGIN_CONTAINER;
use ostree_ext::container::store;
use ostree_ext::container::{OstreeImageReference, Transport};
use ostree_ext::glib;
use ostree_ext::ostree::{self, gio};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::helper::protocol::{Operation, Outcome, Request};
use super::helper::{self, HelperOptions};
use super::import::{self, DEFAULT_PULL_CONCURRENCY, PullOptions, parse_image};
use super::rollback::{Slot, prune_keep, rollback_order};
use super::worker::run_on_ostree_thread;
use super::{
    CleanupReport, Deployment, KernelType, OsBackend, OsChange, OsStatus, PrefetchReport,
    ProgressFn, Role, StageOutcome, user_kargs,
};
use super::{PruneReport, RoleIndices, RollbackOutcome, role_indices};

/// Where the backend works.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OstreeBackendOptions {
    /// The sysroot: `/` on a host, a directory for a sandbox.
    pub sysroot: PathBuf,
    /// The node's `/`, where the pull secret and `etc/containers/registries.conf` are read.
    pub node_root: PathBuf,
    /// Stateroot for a sysroot with nothing deployed yet; otherwise the booted (or default) deployment's is used.
    pub stateroot: String,
    /// Image layers fetched at once (1: one after another).
    pub pull_concurrency: usize,
    /// Run each operation in a helper process (the daemon does); `None`: in this process.
    pub helper: Option<HelperOptions>,
}

impl Default for OstreeBackendOptions {
    fn default() -> Self {
        Self {
            sysroot: "/".into(),
            node_root: "/".into(),
            stateroot: "default".into(),
            pull_concurrency: DEFAULT_PULL_CONCURRENCY,
            helper: None,
        }
    }
}

impl OstreeBackendOptions {
    /// A sandbox sysroot with its own node root (tests, `--sysroot DIR`).
    pub fn sandbox(sysroot: impl Into<PathBuf>, node_root: impl Into<PathBuf>) -> Self {
        Self {
            sysroot: sysroot.into(),
            node_root: node_root.into(),
            ..Self::default()
        }
    }

    /// The same, with the ostree work in a helper process.
    pub fn in_helper(mut self, helper: HelperOptions) -> Self {
        self.helper = Some(helper);
        self
    }

    /// A real booted host: writes need a private mount namespace with `/sysroot` remounted read-write.
    fn is_booted_host(&self) -> bool {
        self.sysroot == Path::new("/") && Path::new("/run/ostree-booted").exists()
    }
}

/// Identifies one deployment across sysroot reloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeploymentKey {
    stateroot: String,
    checksum: String,
    serial: i32,
}

impl std::fmt::Display for DeploymentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.stateroot, self.checksum, self.serial)
    }
}

/// Which deployment a simulated boot booted (test only).
#[derive(Debug, Serialize, Deserialize)]
struct SimulatedBoot {
    boot_id: String,
    deployment: Option<DeploymentKey>,
}

impl DeploymentKey {
    fn of(d: &ostree::Deployment) -> Self {
        Self {
            stateroot: d.osname().to_string(),
            checksum: d.csum().to_string(),
            serial: d.deployserial(),
        }
    }
}

/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct OstreeBackend {
    options: Arc<OstreeBackendOptions>,
    /// Test only: the deployment treated as booted (see [`Self::test_only_treat_default_deployment_as_booted`]).
    simulated_booted: Option<Arc<DeploymentKey>>,
    /// With a helper: the last status and the sysroot state it was read in (see [`StatusStamp`]).
    status_cache: Arc<Mutex<Option<(StatusStamp, OsStatus)>>>,
}

impl OstreeBackend {
    pub fn new(options: OstreeBackendOptions) -> Self {
        Self {
            options: Arc::new(options),
            simulated_booted: None,
            status_cache: Arc::default(),
        }
    }

    /// The deployments of the sysroot `options` names, in order.
    async fn deployment_keys(options: &OstreeBackendOptions) -> Result<Vec<DeploymentKey>> {
        match Self::new(options.clone())
            .run(Operation::Deployments, None)
            .await?
        {
            Outcome::Deployments(keys) => Ok(keys),
            other => Err(unexpected(other)),
        }
    }

    /// **Test only.** Treat the sysroot's current default deployment as the booted one, as if the sandbox
    /// had just booted it. Deployments this backend makes afterwards are reported as `staged` (as on a
    /// real host) until a new backend is created, which is how a test simulates the reboot.
    /// With nothing deployed yet, nothing is booted.
    pub async fn test_only_treat_default_deployment_as_booted(
        options: OstreeBackendOptions,
    ) -> Result<Self> {
        let key = Self::deployment_keys(&options).await?.into_iter().next();
        tracing::warn!(
            deployment = %key.as_ref().map(DeploymentKey::to_string).unwrap_or_default(),
            "TEST ONLY: treating the sandbox's default deployment as booted"
        );
        Ok(Self {
            simulated_booted: key.map(Arc::new),
            ..Self::new(options)
        })
    }

    /// **Test only.** A simulated boot identified by the boot id in `boot_id_file`: the first backend
    /// created in a boot treats the sysroot's default deployment as booted and records it next to the
    /// boot id file; later backends in the same boot (a restarted daemon, first boot then the daemon)
    /// keep that deployment as booted, as a real host would. Only a new boot id boots the new default.
    pub async fn test_only_simulated_boot(
        options: OstreeBackendOptions,
        boot_id_file: &Path,
    ) -> Result<Self> {
        let boot_id = std::fs::read_to_string(boot_id_file)
            .with_context(|| format!("Reading the boot id from {}", boot_id_file.display()))?
            .trim()
            .to_string();
        let mut record_path = boot_id_file.as_os_str().to_owned();
        record_path.push(".booted-deployment.json");
        let record_path = PathBuf::from(record_path);
        let recorded: Option<SimulatedBoot> = std::fs::read(&record_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|r: &SimulatedBoot| r.boot_id == boot_id);
        let deployments = Self::deployment_keys(&options).await?;
        let still_there = recorded
            .and_then(|r| r.deployment)
            .filter(|k| deployments.contains(k));
        let key = still_there.or_else(|| deployments.into_iter().next());
        let record = SimulatedBoot {
            boot_id,
            deployment: key.clone(),
        };
        std::fs::write(&record_path, serde_json::to_vec(&record)?)
            .with_context(|| format!("Writing {}", record_path.display()))?;
        tracing::warn!(
            deployment = %key.as_ref().map(DeploymentKey::to_string).unwrap_or_default(),
            "TEST ONLY: simulated boot, treating this deployment of the sandbox as booted"
        );
        Ok(Self {
            simulated_booted: key.map(Arc::new),
            ..Self::new(options)
        })
    }

    pub fn options(&self) -> &OstreeBackendOptions {
        &self.options
    }

    /// Run `operation` here or in a helper process.
    async fn run(&self, operation: Operation, progress: Option<ProgressFn>) -> Result<Outcome> {
        match &self.options.helper {
            Some(helper_options) => {
                let request = Request {
                    options: OstreeBackendOptions {
                        helper: None,
                        ..(*self.options).clone()
                    },
                    simulated: self.simulated_booted.as_deref().cloned(),
                    operation,
                };
                helper::call(helper_options, &request, progress.as_ref()).await
            }
            None => {
                let (_never, cancel) = watch::channel(false);
                let ctx = ExecContext {
                    progress,
                    heartbeat: None,
                    cancel,
                };
                execute(
                    self.options.clone(),
                    self.simulated_booted.clone(),
                    operation,
                    ctx,
                )
                .await
            }
        }
    }

    fn forget_status(&self) {
        *self.status_cache.lock().unwrap() = None;
    }
}

fn unexpected(outcome: Outcome) -> anyhow::Error {
    anyhow!("The ostree helper answered with the wrong kind of result: {outcome:?}")
}

/// What a cached status depends on: libostree bumps the mtime of `ostree/deploy` whenever it writes
/// the deployment list (`_ostree_sysroot_bump_mtime`, which `ostree_sysroot_load_if_changed` checks),
/// and a staged deployment is recorded in `/run/ostree/staged-deployment`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StatusStamp {
    deploy_dir: Option<(i64, i64, u64)>,
    staged: Option<(i64, i64, u64)>,
}

impl StatusStamp {
    fn read(options: &OstreeBackendOptions) -> Self {
        let stamp = |p: &Path| {
            std::fs::metadata(p).ok().map(|m| {
                use std::os::unix::fs::MetadataExt;
                (m.mtime(), m.mtime_nsec(), m.ino())
            })
        };
        Self {
            deploy_dir: stamp(&options.sysroot.join("ostree/deploy")),
            staged: (options.sysroot == Path::new("/"))
                .then(|| stamp(Path::new("/run/ostree/staged-deployment")))
                .flatten(),
        }
    }
}

impl OsBackend for OstreeBackend {
    fn name(&self) -> &'static str {
        "ostree"
    }

    async fn status(&self) -> Result<OsStatus> {
        // Starting a helper for every status would cost tens of ms each time; the status only changes
        // when the deployments do.
        let cached = self.options.helper.is_some();
        let stamp = StatusStamp::read(&self.options);
        if cached {
            if let Some((s, status)) = self.status_cache.lock().unwrap().as_ref() {
                if *s == stamp {
                    return Ok(status.clone());
                }
            }
        }
        let status = match self.run(Operation::Status, None).await? {
            Outcome::Status(s) => s,
            other => return Err(unexpected(other)),
        };
        if cached {
            *self.status_cache.lock().unwrap() = Some((stamp, status.clone()));
        }
        Ok(status)
    }

    async fn prefetch(&self, image: &str, progress: Option<ProgressFn>) -> Result<PrefetchReport> {
        let operation = Operation::Prefetch {
            image: image.to_string(),
        };
        match self.run(operation, progress).await? {
            Outcome::Prefetch(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn stage(&self, change: &OsChange) -> Result<StageOutcome> {
        refuse_package_changes(change)?;
        let operation = Operation::Stage {
            change: change.clone(),
        };
        let outcome = self.run(operation, None).await;
        self.forget_status();
        match outcome? {
            Outcome::Stage(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    async fn cleanup(&self) -> Result<CleanupReport> {
        let outcome = self.run(Operation::Cleanup, None).await;
        self.forget_status();
        match outcome? {
            Outcome::Cleanup(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// The deployment list reordered (super::rollback::rollback_order) and written with
    /// `ostree_sysroot_write_deployments`, as `ostree admin set-default` does.
    async fn rollback(&self, to: &Deployment) -> Result<RollbackOutcome> {
        let outcome = self.run(Operation::Rollback { to: to.clone() }, None).await;
        self.forget_status();
        match outcome? {
            Outcome::Rollback(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    async fn prune(&self) -> Result<PruneReport> {
        let outcome = self.run(Operation::PruneDeployments, None).await;
        self.forget_status();
        let deployments_removed = match outcome? {
            Outcome::PruneDeployments(removed) => removed,
            other => return Err(unexpected(other)),
        };
        Ok(PruneReport {
            deployments_removed,
            cleanup: self.cleanup().await?,
        })
    }
}

/// What an operation reports to, and what stops it.
pub(crate) struct ExecContext {
    pub progress: Option<ProgressFn>,
    /// Called every [`helper::HEARTBEAT_EVERY`] from the thread doing the ostree work (in a helper).
    pub heartbeat: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Becomes true to stop a pull.
    pub cancel: watch::Receiver<bool>,
}

/// Run one operation with libostree in this process, on a thread of its own.
pub(crate) async fn execute(
    options: Arc<OstreeBackendOptions>,
    simulated: Option<Arc<DeploymentKey>>,
    operation: Operation,
    ctx: ExecContext,
) -> Result<Outcome> {
    let ns = options.is_booted_host();
    let ExecContext {
        progress,
        heartbeat,
        cancel,
    } = ctx;
    let (name, writes) = match &operation {
        Operation::Status => ("ostree-status", false),
        Operation::Deployments => ("ostree-status", false),
        Operation::Prefetch { .. } => ("ostree-prefetch", true),
        Operation::Stage { .. } => ("ostree-stage", true),
        Operation::Cleanup => ("ostree-cleanup", true),
        Operation::Rollback { .. } => ("ostree-rollback", true),
        Operation::PruneDeployments => ("ostree-prune", true),
    };
    run_on_ostree_thread(name, writes && ns, move || async move {
        if let Some(beat) = heartbeat {
            tokio::spawn(async move {
                loop {
                    beat();
                    tokio::time::sleep(helper::HEARTBEAT_EVERY).await;
                }
            });
        }
        let sysroot = load_sysroot(&options.sysroot, writes && ns)?;
        let _lock = match writes {
            true => Some(SysrootWriteLock::acquire(&sysroot).await?),
            false => None,
        };
        match operation {
            Operation::Status => {
                let view = SysrootView::new(&sysroot, simulated.as_deref());
                Ok(Outcome::Status(view.status(&sysroot.repo())?))
            }
            Operation::Deployments => Ok(Outcome::Deployments(
                sysroot
                    .deployments()
                    .iter()
                    .map(DeploymentKey::of)
                    .collect(),
            )),
            Operation::Prefetch { image } => {
                let pull = PullOptions {
                    concurrency: options.pull_concurrency,
                    cancel,
                };
                let (report, _) = import::import_image(
                    &sysroot.repo(),
                    &repo_path(&options),
                    &image,
                    &options.node_root,
                    &pull,
                    progress,
                )
                .await?;
                Ok(Outcome::Prefetch(report))
            }
            Operation::Stage { change } => Ok(Outcome::Stage(
                stage_locked(&sysroot, &options, simulated.as_deref(), &change).await?,
            )),
            Operation::Cleanup => Ok(Outcome::Cleanup(cleanup_locked(&sysroot)?)),
            Operation::Rollback { to } => Ok(Outcome::Rollback(rollback_locked(
                &sysroot,
                simulated.as_deref(),
                &to,
            )?)),
            Operation::PruneDeployments => Ok(Outcome::PruneDeployments(prune_locked(
                &sysroot,
                simulated.as_deref(),
            )?)),
        }
    })
    .await
}

fn rollback_locked(
    sysroot: &ostree::Sysroot,
    simulated: Option<&DeploymentKey>,
    to: &Deployment,
) -> Result<RollbackOutcome> {
    let view = SysrootView::new(sysroot, simulated);
    let Some(at) = view.deployments.iter().position(|d| {
        d.osname() == to.stateroot.as_str()
            && d.csum() == to.checksum.as_str()
            && d.deployserial() == to.serial
    }) else {
        bail!(
            "Cannot roll back to deployment {}: it is not in the sysroot any more",
            to.id()
        );
    };
    let Some(order) = rollback_order(&view.slots(), at) else {
        return Ok(RollbackOutcome::AlreadyDefault);
    };
    let list = same_objects(order.iter().map(|i| &view.deployments[*i]));
    sysroot
        .write_deployments(&list, gio::Cancellable::NONE)
        .with_context(|| format!("Making deployment {} the default", to.id()))?;
    tracing::info!(deployment = %to.id(), image = to.image.as_deref().unwrap_or("-"), "the previous deployment is the default for the next boot");
    Ok(RollbackOutcome::Switched)
}

/// The same deployment objects, for `ostree_sysroot_write_deployments`. Not `Deployment::clone`: the
/// bindings' inherent `clone` is `ostree_deployment_clone`, a copy, and libostree 2022.7 (Debian 12)
/// finds the booted deployment in the new list by pointer (`deployment == self->booted_deployment` in
/// ostree_sysroot_write_deployments_with_options; later releases use ostree_deployment_equal), so a
/// list of copies is refused with "Attempting to remove booted deployment" on a booted host.
fn same_objects<'a>(list: impl Iterator<Item = &'a ostree::Deployment>) -> Vec<ostree::Deployment> {
    list.map(<ostree::Deployment as Clone>::clone).collect()
}

fn prune_locked(
    sysroot: &ostree::Sysroot,
    simulated: Option<&DeploymentKey>,
) -> Result<Vec<String>> {
    let view = SysrootView::new(sysroot, simulated);
    let Some(keep) = prune_keep(&view.slots()) else {
        return Ok(Vec::new());
    };
    let removed: Vec<String> = (0..view.deployments.len())
        .filter(|i| !keep.contains(i))
        .map(|i| DeploymentKey::of(&view.deployments[i]).to_string())
        .collect();
    let list = same_objects(keep.iter().map(|i| &view.deployments[*i]));
    sysroot
        .write_deployments(&list, gio::Cancellable::NONE)
        .context("Removing deployments older than the rollback")?;
    tracing::info!(removed = %removed.join(" "), "removed deployments older than the rollback");
    Ok(removed)
}

/// The sysroot's repo by path (what the preflight reports and each layer worker opens).
fn repo_path(options: &OstreeBackendOptions) -> PathBuf {
    options.sysroot.join("ostree/repo")
}

fn cleanup_locked(sysroot: &ostree::Sysroot) -> Result<CleanupReport> {
    let locked = ostree_ext::sysroot::SysrootLock::from_assumed_locked(sysroot);
    let pruned =
        ostree_ext::container::deploy::prune(&locked).context("Pruning unreferenced images")?;
    sysroot
        .cleanup(gio::Cancellable::NONE)
        .context("Cleaning up the sysroot")?;
    let report = CleanupReport {
        images_removed: pruned.n_images,
        layers_removed: pruned.n_layers,
        objects_removed: pruned.n_objects_pruned,
        bytes_freed: pruned.objsize,
    };
    tracing::info!(
        images_removed = report.images_removed,
        layers_removed = report.layers_removed,
        objects_removed = report.objects_removed,
        bytes_freed = report.bytes_freed,
        "cleaned up images and deployments"
    );
    Ok(report)
}

fn refuse_package_changes(change: &OsChange) -> Result<()> {
    if let Some(kt) = change.kernel_type.filter(|k| *k != KernelType::Default) {
        bail!(
            "kernelType {kt} needs the rpm-ostree backend (RHCOS/FCOS hosts); the ostree backend cannot replace the kernel"
        );
    }
    if let Some(ext) = change.extensions.as_ref().filter(|e| !e.is_empty()) {
        bail!(
            "Extensions ({}) need the rpm-ostree backend (RHCOS/FCOS hosts); the ostree backend cannot install packages",
            ext.join(", ")
        );
    }
    Ok(())
}

#[context("Loading ostree sysroot {}", path.display())]
fn load_sysroot(path: &Path, mount_namespace: bool) -> Result<ostree::Sysroot> {
    let sysroot = ostree::Sysroot::new(Some(&gio::File::for_path(path)));
    if mount_namespace {
        // libostree then remounts /sysroot and /boot read-write itself when it needs to write.
        sysroot.set_mount_namespace_in_use();
    }
    sysroot.load(gio::Cancellable::NONE)?;
    Ok(sysroot)
}

/// The sysroot's exclusive lock (the one rpm-ostree, bootc and `ostree admin` take), released on drop.
struct SysrootWriteLock(ostree::Sysroot);

impl SysrootWriteLock {
    async fn acquire(sysroot: &ostree::Sysroot) -> Result<Self> {
        let mut waited = false;
        loop {
            if sysroot.try_lock().context("Locking the sysroot")? {
                // Another writer may have changed it while we waited.
                sysroot
                    .load(gio::Cancellable::NONE)
                    .context("Reloading the sysroot")?;
                return Ok(Self(sysroot.clone()));
            }
            if !waited {
                tracing::info!("waiting for the sysroot lock held by another ostree client");
                waited = true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for SysrootWriteLock {
    fn drop(&mut self) {
        self.0.unlock();
    }
}

/// The sysroot's deployments and which is which (with a simulated booted one in tests).
struct SysrootView {
    deployments: Vec<ostree::Deployment>,
    roles: RoleIndices,
    /// Booted for real (libostree found it through /run/ostree-booted and the `ostree=` karg).
    really_booted: bool,
}

impl SysrootView {
    fn new(sysroot: &ostree::Sysroot, simulated: Option<&DeploymentKey>) -> Self {
        let deployments = sysroot.deployments();
        let real_booted = sysroot.booted_deployment();
        let flags: Vec<(bool, bool)> = match (simulated, &real_booted) {
            (_, Some(b)) => deployments
                .iter()
                .map(|d| (d.equal(b), d.is_staged()))
                .collect(),
            (Some(key), None) => {
                let booted_at = deployments
                    .iter()
                    .position(|d| DeploymentKey::of(d) == *key);
                deployments
                    .iter()
                    .enumerate()
                    // What this backend deployed in front of the simulated booted one is what would be staged.
                    .map(|(i, _)| (Some(i) == booted_at, booted_at.is_some_and(|b| i < b)))
                    .collect()
            }
            (None, None) => deployments.iter().map(|d| (false, d.is_staged())).collect(),
        };
        Self {
            roles: role_indices(&flags),
            deployments,
            really_booted: real_booted.is_some(),
        }
    }

    /// What a rollback or prune decides on (super::rollback).
    fn slots(&self) -> Vec<Slot> {
        let ours = self
            .get(self.roles.booted.or(self.roles.pending))
            .map(|d| d.osname().to_string());
        self.deployments
            .iter()
            .enumerate()
            .map(|(i, d)| Slot {
                booted: Some(i) == self.roles.booted,
                // Really staged (a simulated boot's "staged" deployments are written out already).
                staged: d.is_staged(),
                pinned: d.is_pinned(),
                ours: ours.as_deref().is_none_or(|o| o == d.osname().as_str()),
            })
            .collect()
    }

    fn get(&self, i: Option<usize>) -> Option<&ostree::Deployment> {
        i.and_then(|i| self.deployments.get(i))
    }

    fn status(&self, repo: &ostree::Repo) -> Result<OsStatus> {
        let describe = |i| {
            self.get(i)
                .map(|d| describe_deployment(repo, d))
                .transpose()
        };
        Ok(OsStatus {
            booted: describe(self.roles.booted)?,
            staged: describe(self.roles.staged)?,
            pending: describe(self.roles.pending)?,
            rollback: describe(self.roles.rollback)?,
        })
    }
}

/// Image reference, digest, version and kernel arguments of a deployment.
fn describe_deployment(repo: &ostree::Repo, d: &ostree::Deployment) -> Result<Deployment> {
    let checksum = d.csum().to_string();
    let image_reference = d
        .origin()
        .and_then(|o| o.string("origin", ORIGIN_CONTAINER).ok())
        .map(|s| s.to_string());
    let image = image_reference
        .as_deref()
        .and_then(|r| OstreeImageReference::try_from(r).ok())
        .map(|r| pull_spec(&r));
    let (image_digest, version) = match store::query_image_commit(repo, &checksum) {
        Ok(state) => (
            Some(state.manifest_digest.to_string()),
            state.version().map(str::to_string),
        ),
        // Not a container image commit (e.g. deployed from a plain ostree ref).
        Err(_) => (None, commit_version(repo, &checksum)),
    };
    let kernel_arguments = d
        .bootconfig()
        .and_then(|b| b.get("options"))
        .map(|o| user_kargs(&o))
        .unwrap_or_default();
    Ok(Deployment {
        stateroot: d.osname().to_string(),
        checksum,
        serial: d.deployserial(),
        image,
        image_reference,
        image_digest,
        version,
        kernel_arguments,
        requested_packages: Vec::new(),
        requested_base_removals: Vec::new(),
    })
}

fn commit_version(repo: &ostree::Repo, checksum: &str) -> Option<String> {
    let (commit, _) = repo.load_commit(checksum).ok()?;
    let meta = glib::VariantDict::new(Some(&commit.child_value(0)));
    meta.lookup::<String>("version").ok().flatten()
}

/// The `osImageURL` form: registry images without transport, others with it.
fn pull_spec(r: &OstreeImageReference) -> String {
    match r.imgref.transport {
        Transport::Registry => r.imgref.name.clone(),
        _ => r.imgref.to_string(),
    }
}

/// What a stage would deploy.
struct Target {
    commit: String,
    digest: Option<String>,
    origin: glib::KeyFile,
    kargs: Vec<String>,
}

impl Target {
    fn matches(&self, d: &Deployment) -> bool {
        let same_content = match (&self.digest, &d.image_digest) {
            (Some(a), Some(b)) => a == b,
            _ => self.commit == d.checksum,
        };
        same_content && self.kargs == d.kernel_arguments
    }
}

async fn stage_locked(
    sysroot: &ostree::Sysroot,
    options: &OstreeBackendOptions,
    simulated: Option<&DeploymentKey>,
    change: &OsChange,
) -> Result<StageOutcome> {
    let repo = sysroot.repo();
    let view = SysrootView::new(sysroot, simulated);
    let status = view.status(&repo)?;
    let base_index = view.roles.booted.or(view.roles.pending);
    let base = status.base().cloned();
    let stateroot = base
        .as_ref()
        .map(|b| b.stateroot.clone())
        .unwrap_or_else(|| options.stateroot.clone());
    let kargs = match &base {
        Some(b) => crate::plan::kargs::apply(&b.kernel_arguments, &change.kargs),
        None => change.kargs.add.clone(),
    };

    let target = match &change.image {
        Some(image) => {
            let imgref = parse_image(image)?;
            let state = match store::query_image(&repo, &imgref.imgref)
                .context("Looking up the prefetched image")?
            {
                Some(state) => state,
                None => {
                    tracing::info!(image, "image not prefetched; pulling it now");
                    let pull = PullOptions::uncancellable(options.pull_concurrency);
                    import::import_image(
                        &repo,
                        &repo_path(options),
                        image,
                        &options.node_root,
                        &pull,
                        None,
                    )
                    .await?
                    .1
                }
            };
            let origin = glib::KeyFile::new();
            origin.set_string("origin", ORIGIN_CONTAINER, &imgref.to_string());
            Target {
                commit: state.merge_commit.clone(),
                digest: Some(state.manifest_digest.to_string()),
                origin,
                kargs,
            }
        }
        None => {
            let (Some(b), Some(d)) = (&base, view.get(base_index)) else {
                bail!(
                    "Cannot change kernel arguments: nothing is deployed yet and no OS image was given"
                );
            };
            let origin = d
                .origin()
                .ok_or_else(|| anyhow!("Deployment {} has no origin", b.id()))?;
            Target {
                commit: b.checksum.clone(),
                digest: b.image_digest.clone(),
                origin,
                kargs,
            }
        }
    };

    if let Some(staged) = status.staged.as_ref().filter(|d| target.matches(d)) {
        tracing::info!(deployment = %staged.id(), "the staged deployment already has this image and kernel arguments");
        return Ok(StageOutcome::Unchanged(Role::Staged, staged.clone()));
    }
    if let Some(booted) = status.booted.as_ref().filter(|d| target.matches(d)) {
        if status.staged.is_some() {
            // Booting the current system again means dropping what was staged for the next boot.
            let keep: Vec<ostree::Deployment> = view
                .deployments
                .iter()
                .enumerate()
                .filter(|(i, _)| {
                    Some(*i) != view.roles.staged && view.roles.booted.is_none_or(|b| *i >= b)
                })
                .map(|(_, d)| d.clone())
                .collect();
            sysroot
                .write_deployments(&keep, gio::Cancellable::NONE)
                .context("Removing the staged deployment")?;
            tracing::info!("removed the staged deployment: the booted one already matches");
        }
        return Ok(StageOutcome::Unchanged(Role::Booted, booted.clone()));
    }
    if status.booted.is_none() {
        if let Some(pending) = status.pending.as_ref().filter(|d| target.matches(d)) {
            return Ok(StageOutcome::Unchanged(Role::Pending, pending.clone()));
        }
    }

    let merge = view
        .get(base_index)
        .cloned()
        .or_else(|| sysroot.merge_deployment(Some(&stateroot)));
    let kargs_refs: Vec<&str> = target.kargs.iter().map(String::as_str).collect();
    let opts = ostree::SysrootDeployTreeOpts {
        override_kernel_argv: Some(&kargs_refs),
        ..Default::default()
    };
    let cancellable = gio::Cancellable::NONE;
    let new = if view.really_booted {
        // Finalized at shutdown by ostree-finalize-staged.service.
        sysroot
            .stage_tree_with_options(
                Some(&stateroot),
                &target.commit,
                Some(&target.origin),
                merge.as_ref(),
                &opts,
                cancellable,
            )
            .context("Staging the deployment")?
    } else {
        let new = sysroot
            .deploy_tree_with_options(
                Some(&stateroot),
                &target.commit,
                Some(&target.origin),
                merge.as_ref(),
                Some(&opts),
                cancellable,
            )
            .context("Deploying")?;
        match view.get(view.roles.booted) {
            // Simulated boot: the new one goes in front of the "booted" one and its rollback, replacing
            // whatever was "staged" before, as staging does on a host.
            Some(booted) => {
                let mut list = vec![new.clone(), booted.clone()];
                list.extend(view.get(view.roles.rollback).cloned());
                sysroot
                    .write_deployments(&list, cancellable)
                    .context("Writing the deployments")?;
            }
            None => {
                sysroot
                    .simple_write_deployment(
                        Some(&stateroot),
                        &new,
                        merge.as_ref(),
                        ostree::SysrootSimpleWriteDeploymentFlags::NONE,
                        cancellable,
                    )
                    .context("Writing the deployments")?;
            }
        }
        sysroot
            .cleanup(cancellable)
            .context("Cleaning up old deployments")?;
        new
    };
    let mut deployment = describe_deployment(&repo, &new)?;
    // A freshly made deployment object may not carry its boot config yet; it was given these.
    if deployment.kernel_arguments.is_empty() {
        deployment.kernel_arguments = target.kargs.clone();
    }
    tracing::info!(
        deployment = %deployment.id(),
        image = deployment.image.as_deref().unwrap_or("-"),
        digest = deployment.image_digest.as_deref().unwrap_or("-"),
        kargs = %deployment.kernel_arguments.join(" "),
        staged = view.really_booted,
        "new deployment for the next boot"
    );
    Ok(StageOutcome::Staged(deployment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_default_is_pending_and_next_is_rollback() {
        let r = role_indices(&[(false, false), (false, false)]);
        assert_eq!(
            r,
            RoleIndices {
                booted: None,
                staged: None,
                pending: Some(0),
                rollback: Some(1)
            }
        );
    }

    #[test]
    fn booted_host_with_staged_deployment() {
        // [staged, booted, rollback]
        let r = role_indices(&[(false, true), (true, false), (false, false)]);
        assert_eq!(
            r,
            RoleIndices {
                booted: Some(1),
                staged: Some(0),
                pending: None,
                rollback: Some(2)
            }
        );
    }

    #[test]
    fn booted_host_without_changes() {
        let r = role_indices(&[(true, false), (false, false)]);
        assert_eq!(
            r,
            RoleIndices {
                booted: Some(0),
                staged: None,
                pending: None,
                rollback: Some(1)
            }
        );
    }

    #[test]
    fn deployed_without_staging_on_a_booted_host_is_pending() {
        let r = role_indices(&[(false, false), (true, false), (false, false)]);
        assert_eq!(
            r,
            RoleIndices {
                booted: Some(1),
                staged: None,
                pending: Some(0),
                rollback: Some(2)
            }
        );
    }

    #[test]
    fn empty_sysroot_has_no_roles() {
        assert_eq!(role_indices(&[]), RoleIndices::default());
    }

    #[test]
    fn package_changes_name_the_backend_that_can_do_them() {
        let rt = OsChange {
            kernel_type: Some(KernelType::Realtime),
            ..Default::default()
        };
        let err = refuse_package_changes(&rt).unwrap_err().to_string();
        assert!(
            err.contains("realtime") && err.contains("rpm-ostree backend"),
            "{err}"
        );
        let ext = OsChange {
            extensions: Some(vec!["usbguard".into()]),
            ..Default::default()
        };
        let err = refuse_package_changes(&ext).unwrap_err().to_string();
        assert!(
            err.contains("usbguard") && err.contains("rpm-ostree backend"),
            "{err}"
        );
        let default = OsChange {
            kernel_type: Some(KernelType::Default),
            extensions: Some(vec![]),
            ..Default::default()
        };
        assert!(refuse_package_changes(&default).is_ok());
    }
}
