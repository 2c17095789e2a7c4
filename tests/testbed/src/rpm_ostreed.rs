//! A test service for the subset of rpm-ostreed's D-Bus API (`org.projectatomic.rpmostree1`) the daemon
//! uses, served on a [`crate::PrivateBus`]. It follows the contract described in rpm-ostree's D-Bus
//! interface: `Sysroot.RegisterClient/GetOS/Deployments`, `OS.Rebase/KernelArgs/UpdateDeployment/
//! Cleanup/GetDeploymentBootConfig`, each mutating call returning the address of a private peer-to-peer
//! server for one `Transaction` (`Start`, then `Message`/`PercentProgress`/`TaskBegin`/`TaskEnd` and
//! `Finished(success, error_message)`), and "Transaction in progress" while another one runs.
//!
//! It keeps deployments in memory; images are a table (pull spec → digest/version) the test fills.
//! It is a stand-in for rpm-ostree (not packaged for Debian): it proves our client speaks that
//! contract, not that rpm-ostree behaves exactly like it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, Result};
use zbus::object_server::SignalEmitter;
use zbus::{OwnedObjectPath, OwnedVariant, Variant, fdo, interface};

pub const OS_PATH: &str = "/org/projectatomic/rpmostree1/rhcos";

/// One deployment as rpm-ostreed describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeDeployment {
    pub osname: String,
    pub serial: i32,
    pub checksum: String,
    pub version: Option<String>,
    pub image_reference: Option<String>,
    pub image_digest: Option<String>,
    pub kargs: Vec<String>,
    pub requested_packages: Vec<String>,
    pub base_removals: Vec<String>,
    pub booted: bool,
    pub staged: bool,
}

impl FakeDeployment {
    /// A booted deployment of `image` (pull spec) with `kargs`.
    pub fn booted(image: &str, image_info: &FakeImage, kargs: &[&str]) -> Self {
        Self {
            osname: "rhcos".into(),
            serial: 0,
            checksum: checksum_for(&image_info.digest),
            version: Some(image_info.version.clone()),
            image_reference: Some(format!("ostree-unverified-registry:{image}")),
            image_digest: Some(image_info.digest.clone()),
            kargs: kargs.iter().map(|s| s.to_string()).collect(),
            requested_packages: vec![],
            base_removals: vec![],
            booted: true,
            staged: false,
        }
    }

    pub fn id(&self) -> String {
        format!("{}-{}.{}", self.osname, self.checksum, self.serial)
    }

    fn to_dict(&self) -> HashMap<String, OwnedVariant> {
        let mut d: HashMap<String, OwnedVariant> = HashMap::new();
        let mut put = |k: &str, v: Variant<'_>| {
            d.insert(
                k.to_string(),
                OwnedVariant::try_from(v).expect("plain value"),
            );
        };
        put("id", Variant::from(self.id()));
        put("osname", Variant::from(self.osname.clone()));
        put("serial", Variant::from(self.serial));
        put("checksum", Variant::from(self.checksum.clone()));
        put("booted", Variant::from(self.booted));
        put("staged", Variant::from(self.staged));
        put(
            "requested-packages",
            Variant::from(self.requested_packages.clone()),
        );
        put(
            "requested-base-removals",
            Variant::from(self.base_removals.clone()),
        );
        if let Some(v) = &self.version {
            put("version", Variant::from(v.clone()));
        }
        if let Some(r) = &self.image_reference {
            put("container-image-reference", Variant::from(r.clone()));
        }
        if let Some(r) = &self.image_digest {
            put("container-image-reference-digest", Variant::from(r.clone()));
        }
        d
    }
}

/// What the registry has for a pull spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeImage {
    pub digest: String,
    pub version: String,
}

fn checksum_for(digest: &str) -> String {
    let hex: String = digest.trim_start_matches("sha256:").chars().collect();
    format!("{hex:0<64}")[..64].to_string()
}

/// The service's whole state; tests read and change it through [`FakeRpmOstreed::state`].
#[derive(Debug, Default)]
pub struct RpmOstreedState {
    /// In rpm-ostree's order: staged first, then booted, then rollback.
    pub deployments: Vec<FakeDeployment>,
    pub images: HashMap<String, FakeImage>,
    /// Images pulled by `Rebase` with `download-only`.
    pub downloaded: Vec<String>,
    /// The next this-many mutating calls answer "Transaction in progress".
    pub busy_replies: u32,
    /// Every method call, e.g. `Rebase ostree-unverified-registry:…`, in order.
    pub calls: Vec<String>,
    pub registered_clients: Vec<String>,
}

impl RpmOstreedState {
    fn merge_deployment(&self) -> Option<&FakeDeployment> {
        self.deployments
            .iter()
            .find(|d| d.staged)
            .or_else(|| self.deployments.iter().find(|d| d.booted))
    }

    /// Replace the staged deployment (as rpm-ostree does) with `new`.
    fn stage(&mut self, mut new: FakeDeployment) {
        self.deployments.retain(|d| !d.staged);
        new.booted = false;
        new.staged = true;
        new.serial = self
            .deployments
            .iter()
            .filter(|d| d.checksum == new.checksum)
            .map(|d| d.serial + 1)
            .max()
            .unwrap_or(0);
        self.deployments.insert(0, new);
    }
}

/// A pending transaction's effect on the state.
#[derive(Debug)]
enum Op {
    Rebase {
        refspec: String,
        download_only: bool,
    },
    KernelArgs {
        append: Vec<String>,
        delete: Vec<String>,
    },
    UpdateDeployment {
        install: Vec<String>,
        uninstall: Vec<String>,
        override_remove: Vec<String>,
        override_reset: Vec<String>,
    },
    Cleanup {
        elements: Vec<String>,
    },
}

impl Op {
    fn title(&self) -> &'static str {
        match self {
            Op::Rebase { .. } => "rebase",
            Op::KernelArgs { .. } => "kargs",
            Op::UpdateDeployment { .. } => "update",
            Op::Cleanup { .. } => "cleanup",
        }
    }

    /// Apply to the state; `Err` is the transaction's error message.
    fn apply(self, s: &mut RpmOstreedState) -> std::result::Result<(), String> {
        match self {
            Op::Rebase {
                refspec,
                download_only,
            } => {
                let image = refspec
                    .strip_prefix("ostree-unverified-registry:")
                    .ok_or_else(|| format!("error: Unsupported refspec {refspec}"))?
                    .to_string();
                let info = s.images.get(&image).cloned().ok_or_else(|| {
                    format!("error: reading manifest in {image}: manifest unknown")
                })?;
                if download_only {
                    s.downloaded.push(image);
                    return Ok(());
                }
                let base = s
                    .merge_deployment()
                    .cloned()
                    .ok_or("error: No booted deployment")?;
                if base.image_digest.as_deref() == Some(&info.digest)
                    && base.image_reference.as_deref() == Some(&refspec)
                {
                    return Ok(()); // "No changes."
                }
                let new = FakeDeployment {
                    checksum: checksum_for(&info.digest),
                    version: Some(info.version),
                    image_reference: Some(refspec),
                    image_digest: Some(info.digest),
                    ..base
                };
                s.stage(new);
                Ok(())
            }
            Op::KernelArgs { append, delete } => {
                let mut new = s
                    .merge_deployment()
                    .cloned()
                    .ok_or("error: No booted deployment")?;
                for arg in &delete {
                    let pos = new
                        .kargs
                        .iter()
                        .position(|k| k == arg)
                        .ok_or_else(|| format!("error: No karg '{arg}' found"))?;
                    new.kargs.remove(pos);
                }
                new.kargs.extend(append);
                s.stage(new);
                Ok(())
            }
            Op::UpdateDeployment {
                install,
                uninstall,
                override_remove,
                override_reset,
            } => {
                let mut new = s
                    .merge_deployment()
                    .cloned()
                    .ok_or("error: No booted deployment")?;
                for p in &uninstall {
                    let pos = new
                        .requested_packages
                        .iter()
                        .position(|k| k == p)
                        .ok_or_else(|| {
                            format!("error: Package/capability '{p}' is not currently requested")
                        })?;
                    new.requested_packages.remove(pos);
                }
                new.requested_packages.extend(install);
                new.base_removals.retain(|p| !override_reset.contains(p));
                new.base_removals.extend(override_remove);
                s.stage(new);
                Ok(())
            }
            Op::Cleanup { elements } => {
                if elements.iter().any(|e| e == "pending-deploy") {
                    s.deployments.retain(|d| !d.staged);
                }
                if elements.iter().any(|e| e == "rollback-deploy") {
                    let booted = s.deployments.iter().position(|d| d.booted);
                    if let Some(b) = booted {
                        if b + 1 < s.deployments.len() {
                            s.deployments.remove(b + 1);
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

type Shared = Arc<Mutex<RpmOstreedState>>;

struct SysrootIface {
    state: Shared,
}

#[interface(name = "org.projectatomic.rpmostree1.Sysroot")]
impl SysrootIface {
    fn register_client(&self, options: HashMap<String, OwnedVariant>) {
        let id = options
            .get("id")
            .and_then(|v| String::try_from(v.try_clone().ok()?).ok())
            .unwrap_or_default();
        let mut s = self.state.lock().unwrap();
        s.calls.push(format!("RegisterClient {id}"));
        s.registered_clients.push(id);
    }

    #[zbus(name = "GetOS")]
    fn get_os(&self, _name: &str) -> OwnedObjectPath {
        OwnedObjectPath::try_from(OS_PATH).expect("valid path")
    }

    #[zbus(property)]
    fn deployments(&self) -> Vec<HashMap<String, OwnedVariant>> {
        self.state
            .lock()
            .unwrap()
            .deployments
            .iter()
            .map(FakeDeployment::to_dict)
            .collect()
    }

    #[zbus(property)]
    fn booted(&self) -> OwnedObjectPath {
        OwnedObjectPath::try_from(OS_PATH).expect("valid path")
    }
}

struct OsIface {
    state: Shared,
    dir: Arc<tempfile::TempDir>,
    counter: AtomicU32,
}

fn strv(options: &HashMap<String, OwnedVariant>, key: &str) -> Vec<String> {
    options
        .get(key)
        .and_then(|v| Vec::<String>::try_from(v.try_clone().ok()?).ok())
        .unwrap_or_default()
}

impl OsIface {
    /// Answer "busy" if asked to, else open a private server for this transaction and return its address.
    async fn begin(&self, call: String, op: Op) -> fdo::Result<String> {
        {
            let mut s = self.state.lock().unwrap();
            s.calls.push(call);
            if s.busy_replies > 0 {
                s.busy_replies -= 1;
                return Err(fdo::Error::Failed(
                    "Transaction in progress: deploy --lock-finalization\n You can cancel the current transaction with `rpm-ostree cancel`".into(),
                ));
            }
        }
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let path = self.dir.path().join(format!("transaction-{n}.sock"));
        let listener =
            tokio::net::UnixListener::bind(&path).map_err(|e| fdo::Error::Failed(e.to_string()))?;
        let state = self.state.clone();
        tokio::spawn(async move {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            let iface = TransactionIface {
                state,
                op: Mutex::new(Some(op)),
                done: Mutex::new(Some(done_tx)),
            };
            let Ok(std_stream) = stream.into_std() else {
                return;
            };
            let conn = zbus::connection::Builder::unix_stream(std_stream)
                .server(zbus::Guid::generate())
                .p2p()
                .serve_at("/", iface)
                .build()
                .await;
            if let Ok(conn) = conn {
                let _ = done_rx.await;
                // Let the client read Finished before the server goes away.
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                drop(conn);
            }
        });
        Ok(format!("unix:path={}", path.display()))
    }
}

#[interface(name = "org.projectatomic.rpmostree1.OS")]
impl OsIface {
    async fn rebase(
        &self,
        options: HashMap<String, OwnedVariant>,
        refspec: String,
        _packages: Vec<String>,
    ) -> fdo::Result<String> {
        let download_only = options
            .get("download-only")
            .and_then(|v| bool::try_from(v).ok())
            .unwrap_or(false);
        let call = format!(
            "Rebase{} {refspec}",
            if download_only {
                " --download-only"
            } else {
                ""
            }
        );
        self.begin(
            call,
            Op::Rebase {
                refspec,
                download_only,
            },
        )
        .await
    }

    async fn kernel_args(
        &self,
        existing_kernel_arg_string: String,
        append: Vec<String>,
        _replace: Vec<String>,
        delete: Vec<String>,
        _options: HashMap<String, OwnedVariant>,
    ) -> fdo::Result<String> {
        let call = format!(
            "KernelArgs existing={existing_kernel_arg_string:?} append={append:?} delete={delete:?}"
        );
        self.begin(call, Op::KernelArgs { append, delete }).await
    }

    async fn update_deployment(
        &self,
        modifiers: HashMap<String, OwnedVariant>,
        _options: HashMap<String, OwnedVariant>,
    ) -> fdo::Result<String> {
        let op = Op::UpdateDeployment {
            install: strv(&modifiers, "install-packages"),
            uninstall: strv(&modifiers, "uninstall-packages"),
            override_remove: strv(&modifiers, "override-remove-packages"),
            override_reset: strv(&modifiers, "override-reset-packages"),
        };
        let call = format!("UpdateDeployment {op:?}");
        self.begin(call, op).await
    }

    async fn cleanup(&self, elements: Vec<String>) -> fdo::Result<String> {
        let call = format!("Cleanup {elements:?}");
        self.begin(call, Op::Cleanup { elements }).await
    }

    fn get_deployment_boot_config(
        &self,
        id: String,
        is_pending: bool,
    ) -> fdo::Result<HashMap<String, OwnedVariant>> {
        let s = self.state.lock().unwrap();
        let d = if id.is_empty() {
            if is_pending {
                s.merge_deployment()
            } else {
                s.deployments.iter().find(|d| d.booted)
            }
        } else {
            s.deployments.iter().find(|d| d.id() == id)
        }
        .ok_or_else(|| fdo::Error::Failed(format!("Deployment {id} not found")))?;
        let options = format!(
            "{} ostree=/ostree/boot.1/{}/{}/0",
            d.kargs.join(" "),
            d.osname,
            d.checksum
        );
        let mut out = HashMap::new();
        out.insert(
            "options".to_string(),
            OwnedVariant::try_from(Variant::from(options)).expect("string"),
        );
        Ok(out)
    }
}

struct TransactionIface {
    state: Shared,
    op: Mutex<Option<Op>>,
    done: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

#[interface(name = "org.projectatomic.rpmostree1.Transaction")]
impl TransactionIface {
    async fn start(&self, #[zbus(signal_emitter)] emitter: SignalEmitter<'_>) -> bool {
        let Some(op) = self.op.lock().unwrap().take() else {
            return false;
        };
        let state = self.state.clone();
        let done = self.done.lock().unwrap().take();
        let emitter = emitter.into_owned();
        // Like rpm-ostreed: reply to Start, then run and report.
        tokio::spawn(async move {
            let title = op.title();
            let _ = Self::task_begin(&emitter, title).await;
            let _ = Self::message(&emitter, &format!("Running {title}")).await;
            let _ = Self::percent_progress(&emitter, "Working", 50).await;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let result = op.apply(&mut state.lock().unwrap());
            let _ = Self::task_end(&emitter, title).await;
            let _ = match &result {
                Ok(()) => Self::finished(&emitter, true, "").await,
                Err(e) => Self::finished(&emitter, false, e).await,
            };
            if let Some(done) = done {
                let _ = done.send(());
            }
        });
        true
    }

    #[zbus(signal)]
    async fn message(emitter: &SignalEmitter<'_>, text: &str) -> zbus::Result<()>;
    #[zbus(signal)]
    async fn task_begin(emitter: &SignalEmitter<'_>, text: &str) -> zbus::Result<()>;
    #[zbus(signal)]
    async fn task_end(emitter: &SignalEmitter<'_>, text: &str) -> zbus::Result<()>;
    #[zbus(signal)]
    async fn percent_progress(
        emitter: &SignalEmitter<'_>,
        text: &str,
        percentage: u32,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    async fn finished(
        emitter: &SignalEmitter<'_>,
        success: bool,
        error_message: &str,
    ) -> zbus::Result<()>;
}

/// The running service. Dropping it leaves the bus.
#[derive(Debug)]
pub struct FakeRpmOstreed {
    _conn: zbus::Connection,
    state: Shared,
    _dir: Arc<tempfile::TempDir>,
}

impl FakeRpmOstreed {
    /// Serve on the bus at `bus_address` as `org.projectatomic.rpmostree1`, starting from `state`.
    pub async fn start(bus_address: &str, state: RpmOstreedState) -> Result<Self> {
        let state: Shared = Arc::new(Mutex::new(state));
        let dir = Arc::new(
            tempfile::Builder::new()
                .prefix("testbed-rpmostreed-")
                .tempdir()?,
        );
        let conn = zbus::connection::Builder::address(bus_address)
            .name("org.projectatomic.rpmostree1")
            .serve_at(
                "/org/projectatomic/rpmostree1/Sysroot",
                SysrootIface {
                    state: state.clone(),
                },
            )
            .serve_at(
                OS_PATH,
                OsIface {
                    state: state.clone(),
                    dir: dir.clone(),
                    counter: AtomicU32::new(0),
                },
            )
            .build()
            .await
            .context("Serving org.projectatomic.rpmostree1 on the private bus")?;
        Ok(Self {
            _conn: conn,
            state,
            _dir: dir,
        })
    }

    pub fn state(&self) -> MutexGuard<'_, RpmOstreedState> {
        self.state.lock().unwrap()
    }
}
