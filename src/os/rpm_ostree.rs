//! The RHCOS/FCOS backend: rpm-ostree's daemon over D-Bus (`org.projectatomic.rpmostree1`), as
//! `rpm-ostree rebase/kargs/update` do. rpm-ostreed owns the sysroot there: staging, finalization, layered
//! packages, SELinux and the mount namespace are its business.
//!
//! Every mutating method returns the address of a private (peer-to-peer) D-Bus server for one
//! transaction; we connect, call `Start`, follow `Message`/`PercentProgress`/`TaskBegin`/`TaskEnd` and wait
//! for `Finished(success, error)`. Only one transaction runs at a time: "Transaction in progress" is retried.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use zbus::proxy::CacheProperties;
use zbus::{Connection, OwnedObjectPath, OwnedVariant, Variant};

use super::{
    CleanupReport, Deployment, KernelType, OsBackend, OsChange, OsStatus, PrefetchReport,
    ProgressFn, Role, StageOutcome, ostree_image_reference, role_indices, user_kargs,
};

/// rpm-ostreed's well-known bus name.
pub const BUS_NAME: &str = "org.projectatomic.rpmostree1";
pub const SYSROOT_PATH: &str = "/org/projectatomic/rpmostree1/Sysroot";
/// How this client registers itself (rpm-ostree shows it in `rpm-ostree status` while a transaction runs).
const CLIENT_ID: &str = "machine-config-daemon";

type Options<'a> = HashMap<&'a str, Variant<'a>>;

#[zbus::proxy(
    interface = "org.projectatomic.rpmostree1.Sysroot",
    default_service = "org.projectatomic.rpmostree1",
    default_path = "/org/projectatomic/rpmostree1/Sysroot"
)]
trait Sysroot {
    fn register_client(&self, options: Options<'_>) -> zbus::Result<()>;
    #[zbus(name = "GetOS")]
    fn get_os(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    #[zbus(property)]
    fn deployments(&self) -> zbus::Result<Vec<HashMap<String, OwnedVariant>>>;
}

#[zbus::proxy(
    interface = "org.projectatomic.rpmostree1.OS",
    default_service = "org.projectatomic.rpmostree1"
)]
trait Os {
    fn rebase(
        &self,
        options: Options<'_>,
        refspec: &str,
        packages: &[&str],
    ) -> zbus::Result<String>;
    fn kernel_args(
        &self,
        existing_kernel_arg_string: &str,
        append: &[&str],
        replace: &[&str],
        delete: &[&str],
        options: Options<'_>,
    ) -> zbus::Result<String>;
    fn update_deployment(
        &self,
        modifiers: Options<'_>,
        options: Options<'_>,
    ) -> zbus::Result<String>;
    fn cleanup(&self, elements: &[&str]) -> zbus::Result<String>;
    fn get_deployment_boot_config(
        &self,
        id: &str,
        is_pending: bool,
    ) -> zbus::Result<HashMap<String, OwnedVariant>>;
}

#[zbus::proxy(
    interface = "org.projectatomic.rpmostree1.Transaction",
    default_service = "org.projectatomic.rpmostree1",
    default_path = "/"
)]
trait Transaction {
    fn start(&self) -> zbus::Result<bool>;
    #[zbus(signal)]
    fn message(&self, text: String) -> zbus::Result<()>;
    #[zbus(signal)]
    fn task_begin(&self, text: String) -> zbus::Result<()>;
    #[zbus(signal)]
    fn task_end(&self, text: String) -> zbus::Result<()>;
    #[zbus(signal)]
    fn percent_progress(&self, text: String, percentage: u32) -> zbus::Result<()>;
    #[zbus(signal)]
    fn finished(&self, success: bool, error_message: String) -> zbus::Result<()>;
}

/// How long to keep retrying while another client's transaction runs.
#[derive(Debug, Clone, Copy)]
pub struct BusyRetry {
    pub interval: Duration,
    pub max_wait: Duration,
}

impl Default for BusyRetry {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            max_wait: Duration::from_secs(600),
        }
    }
}

/// rpm-ostree backend. Cheap to clone (the connection is shared).
#[derive(Debug, Clone)]
pub struct RpmOstreeBackend {
    conn: Connection,
    busy_retry: BusyRetry,
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

impl RpmOstreeBackend {
    /// Connect to rpm-ostreed on the system bus.
    pub async fn connect_system() -> Result<Self> {
        let conn = Connection::system()
            .await
            .context("Connecting to the system bus")?;
        Self::from_connection(conn).await
    }

    /// Connect through the bus at `address` (e.g. a test's private `dbus-daemon`).
    pub async fn connect(address: &str) -> Result<Self> {
        let conn = zbus::connection::Builder::address(address)
            .build()
            .await
            .with_context(|| format!("Connecting to the D-Bus bus at {address}"))?;
        Self::from_connection(conn).await
    }

    async fn from_connection(conn: Connection) -> Result<Self> {
        let sysroot = SysrootProxy::new(&conn).await?;
        let mut opts = Options::new();
        opts.insert("id", Variant::from(CLIENT_ID));
        sysroot
            .register_client(opts)
            .await
            .context("Registering with rpm-ostreed")?;
        Ok(Self {
            conn,
            busy_retry: BusyRetry::default(),
        })
    }

    /// Change how "transaction in progress" is retried.
    pub fn with_busy_retry(mut self, retry: BusyRetry) -> Self {
        self.busy_retry = retry;
        self
    }

    async fn sysroot(&self) -> Result<SysrootProxy<'static>> {
        Ok(SysrootProxy::builder(&self.conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await?)
    }

    /// The booted OS's object (`GetOS("")`).
    async fn os(&self) -> Result<OsProxy<'static>> {
        let path = self
            .sysroot()
            .await?
            .get_os("")
            .await
            .context("Asking rpm-ostreed for the booted OS")?;
        Ok(OsProxy::builder(&self.conn)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await?)
    }

    async fn read_status(&self) -> Result<OsStatus> {
        let raw = self
            .sysroot()
            .await?
            .deployments()
            .await
            .context("Reading rpm-ostree deployments")?;
        let os = self.os().await?;
        let mut deployments = Vec::with_capacity(raw.len());
        let mut flags = Vec::with_capacity(raw.len());
        for dict in &raw {
            let mut d = deployment_from_dict(dict)?;
            let id = get_str(dict, "id").unwrap_or_default();
            let bootconfig = os
                .get_deployment_boot_config(&id, false)
                .await
                .with_context(|| format!("Reading boot config of {id}"))?;
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

    /// Call a transaction-starting method, retrying while another transaction is active, then follow the
    /// transaction to its end.
    async fn transaction<F, Fut>(&self, title: &str, call: F) -> Result<()>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = zbus::Result<String>>,
    {
        let deadline = tokio::time::Instant::now() + self.busy_retry.max_wait;
        let address = loop {
            match call().await {
                Ok(address) => break address,
                Err(e)
                    if is_transaction_in_progress(&e) && tokio::time::Instant::now() < deadline =>
                {
                    tracing::info!(title, error = %e, "rpm-ostree is busy with another transaction; retrying");
                    tokio::time::sleep(self.busy_retry.interval).await;
                }
                Err(e) => {
                    return Err(anyhow!(
                        "rpm-ostree {title} could not start: {}",
                        dbus_error_text(&e)
                    ));
                }
            }
        };
        follow_transaction(title, &address).await
    }
}

fn is_transaction_in_progress(e: &zbus::Error) -> bool {
    dbus_error_text(e).contains("Transaction in progress")
}

/// The human part of a D-Bus error (the message, without the error name).
fn dbus_error_text(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(_, Some(msg), _) => msg.clone(),
        zbus::Error::FDO(fdo) => match fdo.as_ref() {
            zbus::fdo::Error::Failed(m) => m.clone(),
            other => other.to_string(),
        },
        other => other.to_string(),
    }
}

/// Connect to a transaction's private server, start it and wait for `Finished`.
async fn follow_transaction(title: &str, address: &str) -> Result<()> {
    let conn = zbus::connection::Builder::address(address)
        .p2p()
        .build()
        .await
        .with_context(|| format!("Connecting to the rpm-ostree {title} transaction"))?;
    let txn = TransactionProxy::builder(&conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await?;
    let mut finished = txn.receive_finished().await?;
    let mut messages = txn.receive_message().await?;
    let mut percent = txn.receive_percent_progress().await?;
    let mut task_begin = txn.receive_task_begin().await?;
    let mut task_end = txn.receive_task_end().await?;
    if !txn
        .start()
        .await
        .with_context(|| format!("Starting the rpm-ostree {title} transaction"))?
    {
        // Already started by someone else (e.g. after a reconnect): keep following it.
        tracing::debug!(title, "transaction was already started");
    }
    loop {
        tokio::select! {
            Some(sig) = finished.next() => {
                let args = sig.args()?;
                if *args.success() {
                    tracing::info!(title, "rpm-ostree transaction finished");
                    return Ok(());
                }
                bail!("rpm-ostree {title} failed: {}", args.error_message());
            }
            Some(sig) = messages.next() => {
                if let Ok(a) = sig.args() { tracing::info!(title, message = %a.text(), "rpm-ostree"); }
            }
            Some(sig) = percent.next() => {
                if let Ok(a) = sig.args() { tracing::info!(title, task = %a.text(), percent = *a.percentage(), "rpm-ostree progress"); }
            }
            Some(sig) = task_begin.next() => {
                if let Ok(a) = sig.args() { tracing::debug!(title, task = %a.text(), "rpm-ostree task started"); }
            }
            Some(sig) = task_end.next() => {
                if let Ok(a) = sig.args() { tracing::debug!(title, task = %a.text(), "rpm-ostree task done"); }
            }
            else => bail!("rpm-ostree {title}: the transaction connection closed before it finished"),
        }
    }
}

fn get_str(dict: &HashMap<String, OwnedVariant>, key: &str) -> Option<String> {
    dict.get(key)
        .and_then(|v| String::try_from(v.try_clone().ok()?).ok())
}

fn get_bool(dict: &HashMap<String, OwnedVariant>, key: &str) -> bool {
    dict.get(key)
        .and_then(|v| bool::try_from(v).ok())
        .unwrap_or(false)
}

fn get_strv(dict: &HashMap<String, OwnedVariant>, key: &str) -> Vec<String> {
    dict.get(key)
        .and_then(|v| Vec::<String>::try_from(v.try_clone().ok()?).ok())
        .unwrap_or_default()
}

/// rpm-ostree's deployment dict (`id`, `osname`, `serial`, `checksum`, `version`,
/// `container-image-reference`, `container-image-reference-digest`, `requested-packages`, …).
fn deployment_from_dict(dict: &HashMap<String, OwnedVariant>) -> Result<Deployment> {
    let checksum = get_str(dict, "checksum")
        .ok_or_else(|| anyhow!("rpm-ostree deployment without checksum"))?;
    let image_reference = get_str(dict, "container-image-reference");
    let image = image_reference.as_deref().map(pull_spec_of_reference);
    Ok(Deployment {
        stateroot: get_str(dict, "osname").unwrap_or_default(),
        checksum,
        serial: dict
            .get("serial")
            .and_then(|v| i32::try_from(v).ok())
            .unwrap_or(0),
        image,
        image_reference,
        image_digest: get_str(dict, "container-image-reference-digest"),
        version: get_str(dict, "version"),
        kernel_arguments: Vec::new(),
        requested_packages: get_strv(dict, "requested-packages"),
    })
}

/// `ostree-unverified-registry:quay.io/x@sha256:…` → `quay.io/x@sha256:…` (what the MCD compares with osImageURL).
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

const KERNEL_PACKAGES: &[&str] = &[
    "kernel",
    "kernel-core",
    "kernel-modules",
    "kernel-modules-core",
    "kernel-modules-extra",
];
const RT_PACKAGES: &[&str] = &[
    "kernel-rt-core",
    "kernel-rt-modules",
    "kernel-rt-modules-extra",
];
const K64_PACKAGES: &[&str] = &[
    "kernel-64k-core",
    "kernel-64k-modules",
    "kernel-64k-modules-core",
    "kernel-64k-modules-extra",
];

fn kernel_packages(kt: KernelType) -> &'static [&'static str] {
    match kt {
        KernelType::Default => &[],
        KernelType::Realtime => RT_PACKAGES,
        KernelType::SixtyFourKPages => K64_PACKAGES,
    }
}

fn kernel_type_of(packages: &[String]) -> KernelType {
    if packages.iter().any(|p| p == "kernel-rt-core") {
        KernelType::Realtime
    } else if packages.iter().any(|p| p == "kernel-64k-core") {
        KernelType::SixtyFourKPages
    } else {
        KernelType::Default
    }
}

fn is_kernel_package(p: &str) -> bool {
    RT_PACKAGES.contains(&p) || K64_PACKAGES.contains(&p)
}

/// The `UpdateDeployment` modifiers that turn `current` packages into `kernel_type` + `extensions`
/// (the MCD's `rpm-ostree override remove kernel… --install kernel-rt-…` and `rpm-ostree update --install/--uninstall`).
#[derive(Debug, Default, PartialEq, Eq)]
struct PackageModifiers {
    install: Vec<String>,
    uninstall: Vec<String>,
    override_remove: Vec<String>,
    override_reset: Vec<String>,
}

impl PackageModifiers {
    fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

fn package_modifiers(
    current: &[String],
    kernel_type: Option<KernelType>,
    extensions: Option<&[String]>,
) -> PackageModifiers {
    let mut m = PackageModifiers::default();
    let current_kt = kernel_type_of(current);
    if let Some(kt) = kernel_type.filter(|kt| *kt != current_kt) {
        let old = kernel_packages(current_kt);
        m.uninstall.extend(old.iter().map(|s| s.to_string()));
        if current_kt == KernelType::Default {
            m.override_remove
                .extend(KERNEL_PACKAGES.iter().map(|s| s.to_string()));
        }
        if kt == KernelType::Default {
            m.override_reset
                .extend(KERNEL_PACKAGES.iter().map(|s| s.to_string()));
        } else {
            m.install
                .extend(kernel_packages(kt).iter().map(|s| s.to_string()));
        }
    }
    if let Some(wanted) = extensions {
        let current_ext: Vec<String> = current
            .iter()
            .filter(|p| !is_kernel_package(p))
            .cloned()
            .collect();
        m.install
            .extend(wanted.iter().filter(|p| !current_ext.contains(p)).cloned());
        m.uninstall
            .extend(current_ext.iter().filter(|p| !wanted.contains(p)).cloned());
    }
    m
}

impl OsBackend for RpmOstreeBackend {
    fn name(&self) -> &'static str {
        "rpm-ostree"
    }

    async fn status(&self) -> Result<OsStatus> {
        self.read_status().await
    }

    /// `rpm-ostree rebase --download-only`: rpm-ostreed pulls the image into its repo. Layer and byte
    /// counts are not reported over D-Bus; progress goes to the log.
    async fn prefetch(&self, image: &str, _progress: Option<ProgressFn>) -> Result<PrefetchReport> {
        let refspec = ostree_image_reference(image);
        let os = self.os().await?;
        self.transaction("rebase --download-only", || {
            let mut opts = Options::new();
            opts.insert("download-only", Variant::from(true));
            opts.insert(
                "initiating-command-line",
                Variant::from("machine-config-daemon prefetch"),
            );
            os.rebase(opts, &refspec, &[])
        })
        .await?;
        Ok(PrefetchReport {
            image: image.to_string(),
            image_digest: image
                .split_once('@')
                .map(|(_, d)| d.to_string())
                .unwrap_or_default(),
            ..Default::default()
        })
    }

    async fn stage(&self, change: &OsChange) -> Result<StageOutcome> {
        let status = self.read_status().await?;
        let base = status
            .base()
            .cloned()
            .ok_or_else(|| anyhow!("rpm-ostree reports no booted deployment"))?;
        let target_kargs = crate::plan::kargs::apply(&base.kernel_arguments, &change.kargs);
        let wanted_image = change
            .image
            .as_deref()
            .map(|i| i.trim_start_matches("docker://").to_string());
        let image_of = |d: &Deployment| wanted_image.as_ref().is_none_or(|w| has_image(d, w));
        let packages_of = |d: &Deployment| {
            package_modifiers(
                &d.requested_packages,
                change.kernel_type,
                change.extensions.as_deref(),
            )
            .is_empty()
        };
        let matches = |d: &Deployment| {
            image_of(d) && packages_of(d) && same_kargs(&d.kernel_arguments, &target_kargs)
        };

        if let Some(staged) = status.staged.as_ref().filter(|d| matches(d)) {
            return Ok(StageOutcome::Unchanged(Role::Staged, staged.clone()));
        }
        if let Some(booted) = status.booted.as_ref().filter(|d| matches(d)) {
            if status.staged.is_some() {
                let os = self.os().await?;
                self.transaction("cleanup --pending", || os.cleanup(&["pending-deploy"]))
                    .await?;
            }
            return Ok(StageOutcome::Unchanged(Role::Booted, booted.clone()));
        }

        let os = self.os().await?;
        let next = status.next_boot().cloned().unwrap_or(base.clone());
        if let Some(image) = wanted_image.as_deref().filter(|w| !has_image(&next, w)) {
            let refspec = ostree_image_reference(image);
            self.transaction("rebase", || {
                let mut opts = Options::new();
                opts.insert(
                    "initiating-command-line",
                    Variant::from("machine-config-daemon stage"),
                );
                os.rebase(opts, &refspec, &[])
            })
            .await?;
        }

        let next = self
            .read_status()
            .await?
            .next_boot()
            .cloned()
            .unwrap_or(base.clone());
        let mods = package_modifiers(
            &next.requested_packages,
            change.kernel_type,
            change.extensions.as_deref(),
        );
        if !mods.is_empty() {
            tracing::info!(
                install = %mods.install.join(" "),
                uninstall = %mods.uninstall.join(" "),
                override_remove = %mods.override_remove.join(" "),
                override_reset = %mods.override_reset.join(" "),
                "changing layered packages (kernelType / extensions)"
            );
            let as_variant = |v: &[String]| Variant::from(v.to_vec());
            self.transaction("update (packages)", || {
                let mut modifiers = Options::new();
                for (key, list) in [
                    ("install-packages", &mods.install),
                    ("uninstall-packages", &mods.uninstall),
                    ("override-remove-packages", &mods.override_remove),
                    ("override-reset-packages", &mods.override_reset),
                ] {
                    if !list.is_empty() {
                        modifiers.insert(key, as_variant(list));
                    }
                }
                os.update_deployment(modifiers, Options::new())
            })
            .await?;
        }

        let next = self
            .read_status()
            .await?
            .next_boot()
            .cloned()
            .unwrap_or(base.clone());
        if !same_kargs(&next.kernel_arguments, &target_kargs) {
            let delete = minus(&next.kernel_arguments, &target_kargs);
            let append = minus(&target_kargs, &next.kernel_arguments);
            let existing = next.kernel_arguments.join(" ");
            let delete_refs: Vec<&str> = delete.iter().map(String::as_str).collect();
            let append_refs: Vec<&str> = append.iter().map(String::as_str).collect();
            tracing::info!(delete = %delete.join(" "), append = %append.join(" "), "changing kernel arguments");
            self.transaction("kargs", || {
                os.kernel_args(&existing, &append_refs, &[], &delete_refs, Options::new())
            })
            .await?;
        }

        let status = self.read_status().await?;
        let staged = status.staged.ok_or_else(|| {
            anyhow!("rpm-ostree finished but no deployment is staged for the next boot")
        })?;
        Ok(StageOutcome::Staged(staged))
    }

    /// `rpm-ostree cleanup --base`: temporary data and unreferenced objects (rpm-ostree prunes images
    /// itself after each transaction and reports no counts).
    async fn cleanup(&self) -> Result<CleanupReport> {
        let os = self.os().await?;
        self.transaction("cleanup --base", || os.cleanup(&["base"]))
            .await?;
        Ok(CleanupReport::default())
    }
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
    fn realtime_kernel_swaps_packages_like_the_mcd() {
        let m = package_modifiers(&[], Some(KernelType::Realtime), None);
        assert_eq!(m.override_remove, v(KERNEL_PACKAGES));
        assert_eq!(m.install, v(RT_PACKAGES));
        // And back.
        let m = package_modifiers(&v(RT_PACKAGES), Some(KernelType::Default), None);
        assert_eq!(m.uninstall, v(RT_PACKAGES));
        assert_eq!(m.override_reset, v(KERNEL_PACKAGES));
        assert!(package_modifiers(&v(RT_PACKAGES), Some(KernelType::Realtime), None).is_empty());
    }

    #[test]
    fn extensions_are_diffed_against_layered_packages() {
        let m = package_modifiers(
            &v(&["usbguard", "kernel-rt-core"]),
            None,
            Some(&v(&["kerberos"])),
        );
        assert_eq!(m.install, v(&["kerberos"]));
        assert_eq!(m.uninstall, v(&["usbguard"]));
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
        };
        assert!(has_image(&d, "quay.io/o/os:4.16"));
        assert!(has_image(&d, "quay.io/o/os@sha256:aa"));
        assert!(!has_image(&d, "quay.io/o/os@sha256:bb"));
        assert!(!has_image(&d, "quay.io/other/os@sha256:aa"));
        assert!(same_repo(
            "127.0.0.1:5000/os:v1",
            "127.0.0.1:5000/os@sha256:x"
        ));
    }
}
