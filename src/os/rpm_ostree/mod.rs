//! The RHCOS/FCOS backend: rpm-ostreed over D-Bus (`org.projectatomic.rpmostree1`), as the rpm-ostree
//! CLI and zincati use it. rpm-ostreed owns the sysroot there: staging, finalization, layered packages,
//! SELinux and the mount namespace are its business.
//!
//! The daemon's update is split as zincati does it: while the node still serves, [`OsBackend::prepare`]
//! stages the whole next deployment (image, kernel type, extensions, kernel arguments) with
//! `lock-finalization`, so a reboot before we are ready boots the old one; after the drain
//! [`OsBackend::finalize`] only calls `FinalizeDeployment` with the expected image digest, and
//! rpm-ostreed reboots. Every failure removes the pending deployment we staged.
//!
//! Verified only against `testbed::rpm_ostreed`, a double rebuilt from coreos/rpm-ostree's source; see
//! `tests/os_rpm_ostree.rs`.

mod dbus;
mod extensions;
mod packages;
mod transaction;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use zbus::proxy::CacheProperties;
use zbus::{Connection, Variant};

use super::{
    CleanupReport, Deployment, OsBackend, OsChange, OsStatus, PrefetchReport, Prepared, ProgressFn,
    PruneReport, Role, RollbackOutcome, StageOutcome, ostree_image_reference, role_indices,
    user_kargs,
};
pub use dbus::{BUS_NAME, BUSY_ERROR, SYSROOT_PATH};
use dbus::{Dict, Options, OsProxy, SysrootProxy, get_bool, get_i32, get_str, get_strv};
pub use extensions::{
    CONTENT_BASE_DIR as EXTENSIONS_CONTENT_DIR, REPO_FILE as EXTENSIONS_REPO_FILE,
};
pub use packages::expected_packages;
use packages::{Layering, Modifiers};
pub use transaction::BusyRetry;
use transaction::Ran;

/// How this client registers itself (rpm-ostree shows it while a transaction runs).
const CLIENT_ID: &str = "machine-config-daemon";
/// A transaction we joined instead of ran, or one that another client's changes overtook: re-read the
/// deployments and try again, this many times.
const REPLANS: usize = 5;

/// rpm-ostree backend. Cheap to clone (the connection is shared).
#[derive(Debug, Clone)]
pub struct RpmOstreeBackend {
    conn: Connection,
    busy_retry: BusyRetry,
    /// The node's `/`: the extensions repo goes under its `run/` and `etc/yum.repos.d/`, the pull secret
    /// and registries.conf for the extensions image come from it.
    node_root: PathBuf,
}

/// Whether rpm-ostreed is running or activatable on the system bus.
pub async fn rpm_ostreed_on_system_bus() -> bool {
    let check = async {
        let conn = Connection::system().await?;
        let dbus = zbus::fdo::DBusProxy::new(&conn).await?;
        let name = zbus::names::BusName::try_from(BUS_NAME)?;
        if dbus.name_has_owner(name).await? {
            return Ok::<_, zbus::Error>(true);
        }
        Ok(dbus
            .list_activatable_names()
            .await?
            .iter()
            .any(|n| n.as_str() == BUS_NAME))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), check).await,
        Ok(Ok(true))
    )
}

/// What the next deployment must be for a change.
#[derive(Debug, Clone)]
struct Target {
    /// `ostree-unverified-registry:…` when the image changes.
    image: Option<String>,
    layering: Layering,
    kargs: Vec<String>,
}

impl Target {
    fn new(booted: &Deployment, change: &OsChange) -> Self {
        Self {
            image: change
                .image
                .as_deref()
                .map(|i| i.trim_start_matches("docker://").to_string()),
            layering: Layering::target(booted, change),
            kargs: crate::plan::kargs::apply(&booted.kernel_arguments, &change.kargs),
        }
    }

    fn image_of(&self, d: &Deployment) -> bool {
        self.image.as_deref().is_none_or(|w| has_image(d, w))
    }

    fn matches(&self, d: &Deployment) -> bool {
        self.image_of(d) && self.layering.matches(d) && same_kargs(&d.kernel_arguments, &self.kargs)
    }
}

/// Why one staging attempt stopped.
enum Attempt {
    Done(Box<StageOutcome>),
    /// We joined another client's transaction: read the deployments again.
    Replan,
}

fn opt(v: impl Into<Variant<'static>>) -> Variant<'static> {
    v.into()
}

impl RpmOstreeBackend {
    /// Connect to rpm-ostreed on the system bus. rpm-ostreed need not be running yet: every operation
    /// registers first and reports a missing daemon as its error.
    pub async fn connect_system(node_root: &Path) -> Result<Self> {
        let conn = Connection::system()
            .await
            .context("Connecting to the system bus")?;
        Ok(Self::from_connection(conn, node_root))
    }

    /// Connect through the bus at `address` (e.g. a test's private `dbus-daemon`); the node root is `/`
    /// until [`Self::with_node_root`].
    pub async fn connect(address: &str) -> Result<Self> {
        let conn = zbus::connection::Builder::address(address)
            .build()
            .await
            .with_context(|| format!("Connecting to the D-Bus bus at {address}"))?;
        Ok(Self::from_connection(conn, Path::new("/")))
    }

    fn from_connection(conn: Connection, node_root: &Path) -> Self {
        Self {
            conn,
            busy_retry: BusyRetry::default(),
            node_root: node_root.to_path_buf(),
        }
    }

    /// Change how "transaction in progress" is retried.
    pub fn with_busy_retry(mut self, retry: BusyRetry) -> Self {
        self.busy_retry = retry;
        self
    }

    /// Where the node's `/` is (a directory in tests).
    pub fn with_node_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.node_root = root.into();
        self
    }

    async fn sysroot(&self) -> Result<SysrootProxy<'static>> {
        Ok(SysrootProxy::builder(&self.conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await?)
    }

    /// `RegisterClient` (the CLI does it on every start: rpmostree-clientlib.cxx app_load_sysroot_impl),
    /// then the booted OS object from the `Booted` property (as rpmostree_load_os_proxies does;
    /// `GetOS("")`'s handler completes the call and returns FALSE).
    async fn os(&self) -> Result<OsProxy<'static>> {
        let sysroot = self.sysroot().await?;
        let mut opts = Options::new();
        opts.insert("id", opt(CLIENT_ID));
        sysroot
            .register_client(opts)
            .await
            .map_err(|e| anyhow!("Registering with rpm-ostreed: {}", dbus::describe(&e)))?;
        let path = sysroot
            .booted()
            .await
            .map_err(|e| anyhow!("Reading rpm-ostreed's booted OS: {}", dbus::describe(&e)))?;
        if path.as_str() == "/" {
            bail!("rpm-ostreed reports no booted deployment");
        }
        Ok(OsProxy::builder(&self.conn)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await?)
    }

    async fn read_status(&self, os: &OsProxy<'_>) -> Result<OsStatus> {
        let raw = self
            .sysroot()
            .await?
            .deployments()
            .await
            .map_err(|e| anyhow!("Reading rpm-ostree deployments: {}", dbus::describe(&e)))?;
        let mut deployments = Vec::with_capacity(raw.len());
        let mut flags = Vec::with_capacity(raw.len());
        for (index, dict) in raw.iter().enumerate() {
            let mut d = deployment_from_dict(dict)?;
            // An index into the deployment list (rpmostreed-deployment-utils.cxx
            // rpmostreed_deployment_get_for_index), not the deployment id.
            let bootconfig = os
                .get_deployment_boot_config(&index.to_string(), false)
                .await
                .map_err(|e| {
                    anyhow!(
                        "Reading the boot config of deployment {index}: {}",
                        dbus::describe(&e)
                    )
                })?;
            d.kernel_arguments = get_str(&bootconfig, "options")
                .map(|o| user_kargs(&o))
                .unwrap_or_default();
            flags.push((get_bool(dict, "booted"), get_bool(dict, "staged")));
            deployments.push(d);
        }
        let roles = role_indices(&flags);
        let pick = |i: Option<usize>| i.and_then(|i| deployments.get(i).cloned());
        Ok(OsStatus {
            booted: pick(roles.booted),
            staged: pick(roles.staged),
            pending: pick(roles.pending),
            rollback: pick(roles.rollback),
        })
    }

    async fn txn<F, Fut>(&self, title: &str, call: F) -> Result<Ran>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = zbus::Result<String>>,
    {
        transaction::run(&self.conn, self.busy_retry, title, call).await
    }

    /// `rpm-ostree cleanup --pending`.
    async fn cleanup_pending(&self, os: &OsProxy<'_>) -> Result<()> {
        self.txn("cleanup --pending", || os.cleanup(&["pending-deploy"]))
            .await?;
        Ok(())
    }

    /// Stage `change` (finalization locked), re-planning when another client's transaction intervened.
    async fn stage_locked(&self, change: &OsChange) -> Result<StageOutcome> {
        for _ in 0..REPLANS {
            match self.stage_once(change).await? {
                Attempt::Done(outcome) => return Ok(*outcome),
                Attempt::Replan => continue,
            }
        }
        bail!("rpm-ostree: other clients kept changing the deployments while we staged; try again")
    }

    async fn stage_once(&self, change: &OsChange) -> Result<Attempt> {
        let os = self.os().await?;
        let status = self.read_status(&os).await?;
        let booted = status
            .booted
            .clone()
            .ok_or_else(|| anyhow!("rpm-ostree reports no booted deployment"))?;
        let target = Target::new(&booted, change);
        if let Some(staged) = status.staged.as_ref().filter(|d| target.matches(d)) {
            return Ok(Attempt::Done(Box::new(StageOutcome::Unchanged(
                Role::Staged,
                staged.clone(),
            ))));
        }
        if target.matches(&booted) {
            if status.staged.is_some() {
                self.cleanup_pending(&os).await?;
            }
            return Ok(Attempt::Done(Box::new(StageOutcome::Unchanged(
                Role::Booted,
                booted,
            ))));
        }
        let rebase = target.image.clone().filter(|w| !has_image(&booted, w));
        let modifiers = Modifiers::between(&Layering::of(&booted), &target.layering);
        // The repo is needed whenever rpm-ostree resolves layered packages: a rebase keeps them, an
        // update installs them (MCO: "if the yum repo isn't there rpm-ostree will fail if there are
        // layered packages", pkg/daemon/update.go applyLayeredOSChanges).
        let needs_repo =
            target.layering.needs_repo() && (rebase.is_some() || !modifiers.is_empty());
        let repo = if needs_repo {
            let packages: Vec<&str> = target
                .layering
                .packages
                .iter()
                .map(String::as_str)
                .collect();
            let Some(image) = change.extensions_image.as_deref() else {
                bail!(
                    "Cannot layer {}: the config has no baseOSExtensionsContainerImage to install them from",
                    packages.join(", ")
                );
            };
            Some(extensions::ExtensionsRepo::create(&self.node_root, image).await?)
        } else {
            None
        };
        // From the booted deployment, as the MCD does ("Always clean up pending", removePendingDeployment).
        let staged = async {
            if status.staged.is_some() || status.pending.is_some() {
                self.cleanup_pending(&os).await?;
            }
            self.stage_steps(&os, change, &target, rebase.as_deref(), &modifiers)
                .await
        }
        .await;
        if let Some(repo) = repo {
            repo.remove();
        }
        match staged {
            Ok(attempt) => Ok(attempt),
            Err(e) => {
                // Nothing half-staged: whatever is pending now came from the steps above.
                if let Err(c) = self.cleanup_pending(&os).await {
                    tracing::warn!(error = %format!("{c:#}"), "could not remove the partly staged deployment");
                    return Err(anyhow!(
                        "{e:#}; removing the partly staged deployment failed too: {c:#}"
                    ));
                }
                Err(e)
            }
        }
    }

    async fn stage_steps(
        &self,
        os: &OsProxy<'_>,
        change: &OsChange,
        target: &Target,
        rebase: Option<&str>,
        modifiers: &Modifiers,
    ) -> Result<Attempt> {
        let cmd = "machine-config-daemon stage";
        if let Some(image) = rebase {
            let refspec = ostree_image_reference(image);
            let ran = self
                .txn("rebase", || {
                    let mut opts = Options::new();
                    opts.insert("initiating-command-line", opt(cmd));
                    opts.insert("lock-finalization", opt(true));
                    if change.layered_image {
                        // The image has its packages built in: drop client-side layering and overrides.
                        opts.insert("no-layering", opt(true));
                        opts.insert("no-overrides", opt(true));
                    }
                    os.rebase(opts, &refspec, &[])
                })
                .await?;
            if ran == Ran::Joined {
                return Ok(Attempt::Replan);
            }
        }
        // Rebasing to a layered image already dropped all layering (no-layering, no-overrides).
        let dropped_by_rebase = change.layered_image && rebase.is_some();
        if !modifiers.is_empty() && !dropped_by_rebase {
            tracing::info!(modifiers = %modifiers, "changing layered packages (kernelType / extensions)");
            let list = |v: &[String]| Variant::from(v.to_vec());
            let ran = self
                .txn("update (packages)", || {
                    let mut m = Options::new();
                    for (key, l) in [
                        ("install-packages", &modifiers.install),
                        ("uninstall-packages", &modifiers.uninstall),
                        ("override-remove-packages", &modifiers.override_remove),
                        ("override-reset-packages", &modifiers.override_reset),
                    ] {
                        if !l.is_empty() {
                            m.insert(key, list(l));
                        }
                    }
                    let mut opts = Options::new();
                    opts.insert("initiating-command-line", opt(cmd));
                    opts.insert("lock-finalization", opt(true));
                    // Without it UpdateDeployment is an upgrade that pulls the base again
                    // (rpmostreed-transaction-types.cxx deploy_transaction_execute, "if (!no_pull_base)").
                    opts.insert("no-pull-base", opt(true));
                    os.update_deployment(m, opts)
                })
                .await?;
            if ran == Ran::Joined {
                return Ok(Attempt::Replan);
            }
        }
        // The next boot's kernel arguments, as `rpm-ostree kargs` reads them: ("", is_pending = true).
        let bootconfig = os.get_deployment_boot_config("", true).await.map_err(|e| {
            anyhow!(
                "Reading the next boot's kernel arguments: {}",
                dbus::describe(&e)
            )
        })?;
        let existing = get_str(&bootconfig, "options").unwrap_or_default();
        let current = user_kargs(&existing);
        if !same_kargs(&current, &target.kargs) {
            let delete = minus(&current, &target.kargs);
            let append = minus(&target.kargs, &current);
            let delete_refs: Vec<&str> = delete.iter().map(String::as_str).collect();
            let append_refs: Vec<&str> = append.iter().map(String::as_str).collect();
            tracing::info!(delete = %delete.join(" "), append = %append.join(" "), "changing kernel arguments");
            let ran = self
                .txn("kargs", || {
                    let mut opts = Options::new();
                    opts.insert("initiating-command-line", opt(cmd));
                    opts.insert("lock-finalization", opt(true));
                    os.kernel_args(&existing, &append_refs, &[], &delete_refs, opts)
                })
                .await?;
            if ran == Ran::Joined {
                return Ok(Attempt::Replan);
            }
        }
        let status = self.read_status(os).await?;
        let staged = status.staged.ok_or_else(|| {
            anyhow!("rpm-ostree finished but no deployment is staged for the next boot")
        })?;
        if !target.matches(&staged) {
            bail!(
                "rpm-ostree staged deployment {} does not have what was asked (image {}, packages {}, kernel arguments {})",
                staged.id(),
                staged.image.as_deref().unwrap_or("?"),
                staged.requested_packages.join(" "),
                staged.kernel_arguments.join(" ")
            );
        }
        Ok(Attempt::Done(Box::new(StageOutcome::Staged(staged))))
    }

    /// The expected checksum `FinalizeDeployment` checks: for a container deployment the image digest
    /// (rpmostreed-transaction-types.cxx finalize_deployment_transaction_execute, "we expect the
    /// container digest, not the checksum of the ostree merge commit").
    fn expected_digest(change: &OsChange, staged: &Deployment) -> Option<String> {
        change
            .image
            .as_deref()
            .and_then(|i| i.split_once('@').map(|(_, d)| d.to_string()))
            .or_else(|| staged.image_digest.clone())
    }
}

/// rpm-ostree's deployment dict (rust/src/daemon.rs deployment_populate_variant and
/// rpmostreed-deployment-utils.cxx rpmostreed_deployment_generate_variant).
fn deployment_from_dict(dict: &Dict) -> Result<Deployment> {
    let checksum = get_str(dict, "checksum")
        .ok_or_else(|| anyhow!("rpm-ostree deployment without checksum"))?;
    let image_reference = get_str(dict, "container-image-reference");
    let image = image_reference.as_deref().map(pull_spec_of_reference);
    Ok(Deployment {
        stateroot: get_str(dict, "osname").unwrap_or_default(),
        checksum,
        serial: get_i32(dict, "serial").unwrap_or(0),
        image,
        image_reference,
        image_digest: get_str(dict, "container-image-reference-digest"),
        version: get_str(dict, "version"),
        kernel_arguments: Vec::new(),
        requested_packages: get_strv(dict, "requested-packages"),
        requested_base_removals: get_strv(dict, "requested-base-removals"),
    })
}

/// `ostree-unverified-registry:quay.io/x@sha256:…` → `quay.io/x@sha256:…` (what the MCD compares with
/// osImageURL, pkg/daemon/rpm-ostree.go GetBootedOSImageURL).
fn pull_spec_of_reference(r: &str) -> String {
    for prefix in [
        "ostree-unverified-registry:",
        "ostree-image-signed:docker://",
        "ostree-unverified-image:docker://",
    ] {
        if let Some(rest) = r.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    r.to_string()
}

/// Same kernel arguments regardless of order (rpm-ostree decides where appended arguments go).
fn same_kargs(a: &[String], b: &[String]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    b.sort();
    a == b
}

/// Multiset difference `a - b`.
fn minus(a: &[String], b: &[String]) -> Vec<String> {
    let mut rest = b.to_vec();
    a.iter()
        .filter(|t| match rest.iter().position(|r| r == *t) {
            Some(i) => {
                rest.remove(i);
                false
            }
            None => true,
        })
        .cloned()
        .collect()
}

/// Whether deployment `d` runs `image` (a pull spec: compared as the MCD does, or by digest).
fn has_image(d: &Deployment, image: &str) -> bool {
    if d.image.as_deref() == Some(pull_spec_of_reference(image).as_str()) {
        return true;
    }
    match (image.split_once('@'), &d.image_digest) {
        (Some((_, digest)), Some(have)) => {
            digest == have && d.image.as_deref().is_some_and(|i| same_repo(i, image))
        }
        _ => false,
    }
}

/// `reg/os@sha256:…` and `reg/os:tag` name the same repository.
fn same_repo(a: &str, b: &str) -> bool {
    fn repo(s: &str) -> &str {
        let s = s.split('@').next().unwrap_or(s);
        match s.rsplit_once(':') {
            Some((r, tag)) if !tag.contains('/') => r,
            _ => s,
        }
    }
    repo(a) == repo(b)
}

impl OsBackend for RpmOstreeBackend {
    fn name(&self) -> &'static str {
        "rpm-ostree"
    }

    async fn status(&self) -> Result<OsStatus> {
        let os = self.os().await?;
        self.read_status(&os).await
    }

    /// `rpm-ostree rebase --download-only`, unless the first deployment already has the image: rpm-ostreed
    /// refuses a rebase to the refspec it has ("Old and new refs are equal", change_origin_refspec,
    /// checked before download-only is looked at). Layer and byte counts are not reported over D-Bus.
    async fn prefetch(&self, image: &str, _progress: Option<ProgressFn>) -> Result<PrefetchReport> {
        let refspec = ostree_image_reference(image);
        let report = PrefetchReport {
            image: image.to_string(),
            image_digest: image
                .split_once('@')
                .map(|(_, d)| d.to_string())
                .unwrap_or_default(),
            ..Default::default()
        };
        for _ in 0..REPLANS {
            let os = self.os().await?;
            let status = self.read_status(&os).await?;
            let first = status
                .staged
                .as_ref()
                .or(status.pending.as_ref())
                .or(status.booted.as_ref());
            if first.and_then(|d| d.image_reference.as_deref()) == Some(refspec.as_str()) {
                return Ok(PrefetchReport {
                    already_present: true,
                    ..report
                });
            }
            let ran = self
                .txn("rebase --download-only", || {
                    let mut opts = Options::new();
                    opts.insert("download-only", opt(true));
                    opts.insert(
                        "initiating-command-line",
                        opt("machine-config-daemon prefetch"),
                    );
                    os.rebase(opts, &refspec, &[])
                })
                .await?;
            if let Ran::Ours(_) = ran {
                return Ok(report);
            }
        }
        bail!("rpm-ostree: other clients kept running the same download; try again")
    }

    /// The next deployment, staged with its finalization locked: it only boots after
    /// [`OsBackend::finalize`]. A no-op when the staged or booted deployment already matches.
    async fn stage(&self, change: &OsChange) -> Result<StageOutcome> {
        self.stage_locked(change).await
    }

    async fn prepare(&self, change: &OsChange, _progress: Option<ProgressFn>) -> Result<Prepared> {
        Ok(Prepared::Staged(self.stage_locked(change).await?))
    }

    /// `FinalizeDeployment` with the expected image digest, after which rpm-ostreed reboots. Restages
    /// first if the staged deployment went missing (e.g. `rpm-ostree cleanup -p` by someone else).
    async fn finalize(&self, change: &OsChange) -> Result<bool> {
        for _ in 0..2 {
            let os = self.os().await?;
            let status = self.read_status(&os).await?;
            let booted = status
                .booted
                .clone()
                .ok_or_else(|| anyhow!("rpm-ostree reports no booted deployment"))?;
            let target = Target::new(&booted, change);
            let Some(staged) = status.staged.clone().filter(|d| target.matches(d)) else {
                if target.matches(&booted) {
                    if status.staged.is_some() {
                        self.cleanup_pending(&os).await?;
                    }
                    return Ok(false);
                }
                tracing::warn!(
                    "the staged deployment is gone or changed; staging again before the reboot"
                );
                self.stage_locked(change).await?;
                continue;
            };
            let checksum = Self::expected_digest(change, &staged).ok_or_else(|| {
                anyhow!("the staged deployment {} has no image digest", staged.id())
            })?;
            let result = self
                .txn("finalize-deployment", || {
                    let mut opts = Options::new();
                    opts.insert("checksum", opt(checksum.clone()));
                    opts.insert("allow-unlocked", opt(true));
                    opts.insert(
                        "initiating-command-line",
                        opt("machine-config-daemon finalize"),
                    );
                    os.finalize_deployment(opts)
                })
                .await;
            return match result {
                Ok(_) => {
                    tracing::info!(deployment = %staged.id(), digest = %checksum, "finalized; rpm-ostreed reboots");
                    Ok(true)
                }
                // A reboot is on its way already (we asked before and are asked again).
                Err(e) if format!("{e:#}").contains(dbus::REBOOT_INITIATED) => Ok(true),
                Err(e) => Err(e),
            };
        }
        bail!("rpm-ostree: the staged deployment keeps disappearing; not rebooting")
    }

    /// `rpm-ostree cleanup --base`: temporary data and unreferenced objects (rpm-ostree prunes images
    /// itself after each transaction and reports no counts).
    async fn cleanup(&self) -> Result<CleanupReport> {
        let os = self.os().await?;
        self.txn("cleanup --base", || os.cleanup(&["base"])).await?;
        Ok(CleanupReport::default())
    }

    /// rpm-ostree's `Rollback` without `reboot` (the daemon reboots after recording it). rpm-ostreed's
    /// rollback moves the rollback deployment to the front; with no rollback deployment but a pending
    /// one it puts the booted one back on top, so a second call would undo the first
    /// (rpmostreed-transaction-types.cxx rollback_transaction_execute): it is only called while `to` is
    /// the rollback deployment. A staged deployment makes it fail ("Staged deployment (remove with
    /// cleanup -p)"), so one is removed first.
    async fn rollback(&self, to: &Deployment) -> Result<RollbackOutcome> {
        let same = |d: &Deployment| {
            d.stateroot == to.stateroot && d.checksum == to.checksum && d.serial == to.serial
        };
        for _ in 0..REPLANS {
            let os = self.os().await?;
            let status = self.read_status(&os).await?;
            if status.staged.is_none() && status.pending.as_ref().is_some_and(same) {
                return Ok(RollbackOutcome::AlreadyDefault);
            }
            if status.staged.is_some() {
                self.cleanup_pending(&os).await?;
                continue;
            }
            match status.rollback.as_ref() {
                Some(r) if same(r) => {}
                other => bail!(
                    "Cannot roll back to deployment {}: rpm-ostree's rollback deployment is {}",
                    to.id(),
                    other.map(Deployment::id).unwrap_or_else(|| "none".into())
                ),
            }
            let ran = self
                .txn("rollback", || {
                    let mut opts = Options::new();
                    opts.insert("reboot", opt(false));
                    os.rollback(opts)
                })
                .await?;
            if let Ran::Ours(_) = ran {
                tracing::info!(deployment = %to.id(), "rpm-ostree rolled back: the previous deployment boots next");
                return Ok(RollbackOutcome::Switched);
            }
        }
        bail!(
            "rpm-ostree: other clients kept changing the deployments while we rolled back; try again"
        )
    }

    /// rpm-ostree keeps no deployments older than the rollback one (finalization writes the new one,
    /// the booted one and pinned ones only; ostree_sysroot_simple_write_deployment) and can only remove
    /// every rollback deployment (`cleanup -r`), which would drop the previous one too: so only
    /// `cleanup --base`.
    async fn prune(&self) -> Result<PruneReport> {
        Ok(PruneReport {
            deployments_removed: Vec::new(),
            cleanup: self.cleanup().await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn kargs_diff_is_a_multiset_difference() {
        assert_eq!(minus(&v(&["a", "b", "a"]), &v(&["a"])), v(&["b", "a"]));
        assert!(same_kargs(&v(&["b", "a"]), &v(&["a", "b"])));
        assert!(!same_kargs(&v(&["a", "a"]), &v(&["a"])));
    }

    #[test]
    fn image_comparison_accepts_the_digest_form() {
        let d = Deployment {
            stateroot: "rhcos".into(),
            checksum: "c".into(),
            serial: 0,
            image: Some("quay.io/o/os:4.16".into()),
            image_reference: Some("ostree-unverified-registry:quay.io/o/os:4.16".into()),
            image_digest: Some("sha256:aa".into()),
            version: None,
            kernel_arguments: vec![],
            requested_packages: vec![],
            requested_base_removals: vec![],
        };
        assert!(has_image(&d, "quay.io/o/os:4.16"));
        assert!(has_image(&d, "quay.io/o/os@sha256:aa"));
        assert!(!has_image(&d, "quay.io/o/os@sha256:bb"));
        assert!(!has_image(&d, "quay.io/other/os@sha256:aa"));
        assert!(same_repo(
            "127.0.0.1:5000/os:v1",
            "127.0.0.1:5000/os@sha256:x"
        ));
        assert_eq!(
            RpmOstreeBackend::expected_digest(&OsChange::default(), &d).as_deref(),
            Some("sha256:aa")
        );
    }
}
