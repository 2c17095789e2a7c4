//! A double of rpm-ostreed (`org.projectatomic.rpmostree1`), rebuilt from coreos/rpm-ostree's source for
//! the part of its D-Bus API the daemon's rpm-ostree backend uses. rpm-ostree is not packaged for
//! Debian, so this is what `src/os/rpm_ostree` is tested against; every behaviour carries a comment
//! naming the rpm-ostree (or ostree) file and function it mirrors, and `tests/os_rpm_ostree.rs` checks
//! its introspected signatures against the interface XML (`src/daemon/org.projectatomic.rpmostree1.xml`).
//!
//! - `iface.rs`: the `Sysroot` and `OS` objects (methods, properties, deployment and boot-config dicts);
//! - `txn.rs`: one transaction at a time on a peer-to-peer server, open until every peer has left,
//!   busy error for a different call, an identical call joins;
//! - `deploy.rs`: what Rebase/UpdateDeployment/KernelArgs/Cleanup/FinalizeDeployment/Rollback do to the
//!   deployments, with rpm-ostree's error texts;
//! - `repos.rs`: package layering needs an enabled rpm-md repo under the node root;
//! - `kargs.rs`: libostree's kernel-argument editing;
//! - `errors.rs`: the D-Bus error names.
//!
//! Not modelled: files, RPM contents, SELinux, polkit (every caller is root), D-Bus activation and the
//! idle exit (tests [`FakeRpmOstreed::crash`] and [`FakeRpmOstreed::restart`] it instead), ostree
//! remotes and non-container refspecs.

mod deploy;
pub mod errors;
mod iface;
pub mod kargs;
pub mod repos;
mod txn;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result};

pub use deploy::{image_commit, pull_spec};

pub const BUS_NAME: &str = "org.projectatomic.rpmostree1";
pub const SYSROOT_PATH: &str = "/org/projectatomic/rpmostree1/Sysroot";
/// rpm-ostree: src/daemon/rpmostreed-types.h BASE_DBUS_PATH.
pub const BASE_PATH: &str = "/org/projectatomic/rpmostree1";
/// The OS object of the default stateroot `rhcos`.
pub const OS_PATH: &str = "/org/projectatomic/rpmostree1/rhcos";

/// rpm-ostree: rust/src/daemon.rs append_to_object_path — `[A-Za-z0-9_]` kept, `/` and `-` become `_`,
/// anything else `_XX` (hex).
pub fn os_object_path(osname: &str) -> String {
    let mut p = format!("{BASE_PATH}/");
    for c in osname.bytes() {
        match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' => p.push(c as char),
            b'/' | b'-' => p.push('_'),
            c => p.push_str(&format!("_{c:02X}")),
        }
    }
    p
}

/// What the registry serves for a pull spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeImage {
    /// `sha256:…` of the manifest.
    pub digest: String,
    /// The `org.opencontainers.image.version` label.
    pub version: String,
    /// Package names in the image's rpmdb (what `override remove` may remove).
    pub packages: Vec<String>,
    pub timestamp: u64,
}

/// The kernel packages of an RHCOS image (the MCO's default kernel list, pkg/daemon/update.go
/// getKernelPackagesForTargetRelease).
pub const BASE_KERNEL_PACKAGES: &[&str] = &[
    "kernel",
    "kernel-core",
    "kernel-modules",
    "kernel-modules-core",
    "kernel-modules-extra",
];

impl FakeImage {
    /// An RHCOS-like image: `digest` and version, with the default kernel packages in its rpmdb.
    pub fn rhcos(digest: &str, version: &str) -> Self {
        Self {
            digest: digest.to_string(),
            version: version.to_string(),
            packages: BASE_KERNEL_PACKAGES.iter().map(|s| s.to_string()).collect(),
            timestamp: 1_700_000_000,
        }
    }
}

/// One deployment as rpm-ostreed tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeDeployment {
    pub osname: String,
    pub serial: i32,
    /// The deployed commit: the image's, or a layered commit on top of it.
    pub checksum: String,
    /// The image's commit.
    pub base_checksum: String,
    /// The origin's refspec, e.g. `ostree-unverified-registry:quay.io/x@sha256:…`.
    pub refspec: String,
    pub image_digest: String,
    pub version: String,
    pub timestamp: u64,
    pub base_packages: Vec<String>,
    /// Kernel arguments, without the `ostree=` libostree adds to a written boot entry.
    pub kargs: Vec<String>,
    pub requested_packages: BTreeSet<String>,
    pub requested_base_removals: BTreeSet<String>,
    /// Requested packages actually layered (those not already in the image).
    pub layered_packages: Vec<String>,
    pub staged: bool,
    /// ostree_deployment_is_finalization_locked: not finalized at shutdown.
    pub finalization_locked: bool,
    pub booted: bool,
}

impl FakeDeployment {
    /// A booted deployment of `image` (a pull spec) with `kargs`.
    pub fn booted(image: &str, info: &FakeImage, kargs: &[&str]) -> Self {
        let base = image_commit(&info.digest);
        Self {
            osname: "rhcos".into(),
            serial: 0,
            checksum: base.clone(),
            base_checksum: base,
            refspec: format!("ostree-unverified-registry:{image}"),
            image_digest: info.digest.clone(),
            version: info.version.clone(),
            timestamp: info.timestamp,
            base_packages: info.packages.clone(),
            kargs: kargs.iter().map(|s| s.to_string()).collect(),
            requested_packages: BTreeSet::new(),
            requested_base_removals: BTreeSet::new(),
            layered_packages: Vec::new(),
            staged: false,
            finalization_locked: false,
            booted: true,
        }
    }

    /// With `packages` layered and `removals` overridden (as `rpm-ostree install` / `override remove`
    /// leave it): a layered commit on top of the image's.
    pub fn layered(mut self, packages: &[String], removals: &[String]) -> Self {
        self.requested_packages = packages.iter().cloned().collect();
        self.requested_base_removals = removals.iter().cloned().collect();
        self.layered_packages = packages
            .iter()
            .filter(|p| !self.base_packages.contains(p))
            .cloned()
            .collect();
        self.checksum = self.layered_checksum();
        self
    }

    /// rpm-ostree: rust/src/deployment_utils.rs deployment_generate_id_impl, `osname-checksum.serial`.
    pub fn id(&self) -> String {
        format!("{}-{}.{}", self.osname, self.checksum, self.serial)
    }

    /// The pull spec the origin points at.
    pub fn image(&self) -> String {
        pull_spec(&self.refspec).unwrap_or_default()
    }
}

/// One transaction the double opened, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnRecord {
    pub method: String,
    pub title: String,
    /// The unique bus name of the caller that opened it.
    pub client: String,
    /// Identical calls that joined it.
    pub joined: usize,
    /// `Finished(success, error_message)`, once done.
    pub result: Option<(bool, String)>,
}

/// Everything the double knows; tests read and change it through [`FakeRpmOstreed::state`].
#[derive(Debug)]
pub struct RpmOstreedState {
    /// In `ostree_sysroot_get_deployments` order: staged first, then booted, then rollback.
    pub deployments: Vec<FakeDeployment>,
    /// What the registry has: pull spec → image. A tag may be re-pointed to simulate a moved tag.
    pub images: HashMap<String, FakeImage>,
    /// The host's `/`, where `etc/yum.repos.d/*.repo` (and the repos' `baseurl`s) are read.
    pub node_root: Option<PathBuf>,
    /// Refspecs `Rebase`/`UpdateDeployment` pulled for `download-only`.
    pub downloaded: Vec<String>,
    /// Every refspec the daemon pulled (an `UpdateDeployment` without `no-pull-base` pulls too).
    pub pulls: Vec<String>,
    /// Every method call, `"Method {parameters}"`, in order.
    pub calls: Vec<String>,
    pub registered_clients: Vec<String>,
    /// `systemctl reboot` requests (after `FinalizeDeployment` or the `reboot` option).
    pub reboots: Vec<String>,
    /// rpmostreed_daemon_is_rebooting: no new transactions once a reboot was initiated.
    pub rebooting: bool,
    /// Another process (e.g. `ostree admin`) holds the sysroot lock.
    pub sysroot_lock_holder: Option<String>,
    pub transactions: Vec<TxnRecord>,
    /// How long each method's transaction works before it finishes (default `default_delay`).
    pub delays: HashMap<String, Duration>,
    pub default_delay: Duration,
    /// The next transaction of this method fails with this message.
    pub fail_next: HashMap<String, String>,
    /// rpm-ostreed dies while running the next transaction of this method (after `Start`).
    pub crash_during: Option<String>,
    /// FORCE_CLOSE_TXN_TIMEOUT_SECS (30 s): a finished transaction whose peers stay is closed after this.
    pub force_close_after: Duration,
    pub forced_closes: usize,
    /// `GetOS("")` calls: that handler replies and then returns FALSE (rpmostreed-sysroot.cxx handle_get_os).
    pub get_os_default_calls: usize,
}

impl Default for RpmOstreedState {
    fn default() -> Self {
        Self {
            deployments: Vec::new(),
            images: HashMap::new(),
            node_root: None,
            downloaded: Vec::new(),
            pulls: Vec::new(),
            calls: Vec::new(),
            registered_clients: Vec::new(),
            reboots: Vec::new(),
            rebooting: false,
            sysroot_lock_holder: None,
            transactions: Vec::new(),
            delays: HashMap::new(),
            default_delay: Duration::from_millis(20),
            fail_next: HashMap::new(),
            crash_during: None,
            force_close_after: Duration::from_secs(30),
            forced_closes: 0,
            get_os_default_calls: 0,
        }
    }
}

impl RpmOstreedState {
    pub fn booted(&self) -> Option<&FakeDeployment> {
        self.deployments.iter().find(|d| d.booted)
    }

    pub fn staged(&self) -> Option<&FakeDeployment> {
        self.deployments.iter().find(|d| d.staged)
    }

    /// Method names of the calls so far.
    pub fn methods(&self) -> Vec<String> {
        self.calls
            .iter()
            .map(|c| c.split(' ').next().unwrap_or_default().to_string())
            .collect()
    }

    /// A shutdown and boot: ostree-finalize-staged writes an unlocked staged deployment as the new
    /// default and the old booted one stays as rollback (ostree: ostree-sysroot-deploy.c
    /// _ostree_sysroot_finalize_staged → ostree_sysroot_simple_write_deployment, which drops the older
    /// rollback); a locked one is not finalized ("Not finalizing; deployment is locked for
    /// finalization") and, living in /run, is gone after the boot. Then the first deployment boots.
    pub fn boot(&mut self) {
        let staged = self.deployments.iter().position(|d| d.staged);
        if let Some(i) = staged {
            let mut d = self.deployments.remove(i);
            if !d.finalization_locked {
                // simple_write_deployment without RETAIN flags keeps the booted (= merge) deployment
                // and other osnames' ones, and drops the rest of this osname.
                let osname = d.osname.clone();
                self.deployments.retain(|x| x.booted || x.osname != osname);
                d.staged = false;
                self.deployments.insert(0, d);
            }
        }
        for (i, d) in self.deployments.iter_mut().enumerate() {
            d.booted = i == 0;
            d.staged = false;
        }
        self.rebooting = false;
        self.registered_clients.clear();
    }
}

/// The daemon's shared parts.
pub(crate) struct Inner {
    pub(crate) state: Mutex<RpmOstreedState>,
    pub(crate) active: Mutex<Option<Arc<txn::Txn>>>,
    /// Where the transaction sockets go (owned by [`FakeRpmOstreed`], so it goes with it).
    pub(crate) dir: PathBuf,
    pub(crate) osname: String,
    /// The bus connection while the double is "running".
    pub(crate) bus: Mutex<Option<zbus::Connection>>,
    /// Bumped by a crash: work in flight from before it never completes.
    pub(crate) generation: std::sync::atomic::AtomicU64,
    pub(crate) bus_address: String,
}

impl Inner {
    /// The process dies: work in flight never completes, every connection breaks, the name leaves the bus.
    pub(crate) async fn crash(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let active = self.active.lock().unwrap().clone();
        if let Some(t) = active {
            self.force_close(&t).await;
        }
        let conn = self.bus.lock().unwrap().take();
        if let Some(c) = conn {
            let _ = c.close().await;
        }
        self.state.lock().unwrap().registered_clients.clear();
        // Gone once the bus has noticed (a call before that gets NoReply instead of ServiceUnknown).
        if let Ok(conn) = zbus::connection::Builder::address(self.bus_address.as_str())
            .build()
            .await
        {
            if let Ok(dbus) = zbus::fdo::DBusProxy::new(&conn).await {
                let name = zbus::names::BusName::try_from(BUS_NAME).expect("valid name");
                for _ in 0..500 {
                    if !dbus.name_has_owner(name.clone()).await.unwrap_or(false) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("osname", &self.osname)
            .finish_non_exhaustive()
    }
}

/// The open transaction, as a test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveTransaction {
    pub method: String,
    pub title: String,
    pub address: String,
    /// `Start` was called.
    pub started: bool,
    pub finished: Option<(bool, String)>,
    pub peers: usize,
}

/// The running double. Dropping it leaves the bus.
#[derive(Debug)]
pub struct FakeRpmOstreed {
    inner: Arc<Inner>,
    bus_address: String,
    _dir: tempfile::TempDir,
}

/// The connection's served interfaces hold `Inner`, and `Inner` holds the connection: without this the
/// cycle kept the connection and the temporary directory alive after the test.
impl Drop for FakeRpmOstreed {
    fn drop(&mut self) {
        self.inner
            .bus
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}

impl FakeRpmOstreed {
    /// Serve on the bus at `bus_address` as `org.projectatomic.rpmostree1`, starting from `state`.
    pub async fn start(bus_address: &str, state: RpmOstreedState) -> Result<Self> {
        let osname = state
            .booted()
            .or(state.deployments.first())
            .map(|d| d.osname.clone())
            .unwrap_or_else(|| "rhcos".into());
        let dir = tempfile::Builder::new()
            .prefix("testbed-rpmostreed-")
            .tempdir()?;
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            active: Mutex::new(None),
            dir: dir.path().to_path_buf(),
            osname,
            bus: Mutex::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
            bus_address: bus_address.to_string(),
        });
        let me = Self {
            inner,
            bus_address: bus_address.to_string(),
            _dir: dir,
        };
        me.serve().await?;
        Ok(me)
    }

    async fn serve(&self) -> Result<()> {
        let conn = zbus::connection::Builder::address(self.bus_address.as_str())
            .name(BUS_NAME)
            .serve_at(SYSROOT_PATH, iface::SysrootIface::new(self.inner.clone()))
            .serve_at(
                os_object_path(&self.inner.osname),
                iface::OsIface::new(self.inner.clone()),
            )
            .build()
            .await
            .context("Serving org.projectatomic.rpmostree1 on the private bus")?;
        *self.inner.bus.lock().unwrap() = Some(conn);
        Ok(())
    }

    pub fn state(&self) -> MutexGuard<'_, RpmOstreedState> {
        self.inner.state.lock().unwrap()
    }

    /// The transaction rpm-ostreed has open (`ActiveTransaction` non-empty), if any.
    pub fn active_transaction(&self) -> Option<ActiveTransaction> {
        let active = self.inner.active.lock().unwrap();
        active.as_ref().map(|t| ActiveTransaction {
            method: t.method.clone(),
            title: t.title.lock().unwrap().clone(),
            address: t.address.clone(),
            started: t.started.load(std::sync::atomic::Ordering::SeqCst),
            finished: t.finished.lock().unwrap().clone(),
            peers: t.peers.lock().unwrap().len(),
        })
    }

    /// Wait until no transaction is open (or `timeout`); whether none is.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.active_transaction().is_some() {
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// rpm-ostreed dies: it leaves the bus and every transaction connection breaks mid-way.
    pub async fn crash(&self) {
        self.inner.crash().await;
    }

    /// Started again (D-Bus activation after a crash or idle exit): the deployments are what is on disk.
    pub async fn restart(&self) -> Result<()> {
        self.serve().await
    }

    /// Whether the double is on the bus.
    pub fn running(&self) -> bool {
        self.inner.bus.lock().unwrap().is_some()
    }

    /// A reboot: the daemon goes away, deployments are finalized as at shutdown (see
    /// [`RpmOstreedState::boot`]), and it comes back on the bus.
    pub async fn reboot(&self) -> Result<()> {
        if self.running() {
            self.crash().await;
        }
        self.inner.state.lock().unwrap().boot();
        self.restart().await
    }
}
