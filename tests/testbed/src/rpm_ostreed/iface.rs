//! The `Sysroot` and `OS` objects (signatures from rpm-ostree's
//! src/daemon/org.projectatomic.rpmostree1.xml).

use std::collections::HashMap;
use std::sync::Arc;

use zbus::interface;
use zbus::message::Header;
use zbus::{OwnedObjectPath, OwnedVariant as OwnedValue, Variant as Value};

use super::deploy::{Dict, Op};
use super::errors::{DaemonError, G_IO_ERROR_NOT_FOUND, RPMOSTREED_ERROR_FAILED};
use super::{FakeDeployment, Inner, RpmOstreedState, os_object_path};

fn ov<'a>(v: impl Into<Value<'a>>) -> OwnedValue {
    OwnedValue::try_from(v.into()).expect("a plain value")
}

/// A deployment as `Deployments` / `BootedDeployment` show it.
/// rpm-ostree: rust/src/daemon.rs deployment_populate_variant (+ _origin) and
/// src/daemon/rpmostreed-deployment-utils.cxx rpmostreed_deployment_generate_variant.
fn deployment_dict(d: &FakeDeployment) -> HashMap<String, OwnedValue> {
    let mut m = HashMap::new();
    let mut put = |k: &str, v: OwnedValue| {
        m.insert(k.to_string(), v);
    };
    put("id", ov(d.id()));
    put("osname", ov(d.osname.clone()));
    put("checksum", ov(d.checksum.clone()));
    put("serial", ov(d.serial));
    put("booted", ov(d.booted));
    put("staged", ov(d.staged));
    // "if deployment.is_staged() && /run/ostree/staged-deployment-locked exists".
    if d.staged && d.finalization_locked {
        put("finalization-locked", ov(true));
    }
    put("pinned", ov(false));
    put("unlocked", ov("none"));
    // deployment_populate_variant_origin: "inserted unconditionally, even if empty", sorted sets.
    put(
        "requested-packages",
        ov(RpmOstreedState::sorted(&d.requested_packages)),
    );
    put(
        "requested-base-removals",
        ov(RpmOstreedState::sorted(&d.requested_base_removals)),
    );
    put("regenerate-initramfs", ov(false));
    // rpmostreed_deployment_generate_variant: layered commits name their base.
    if d.checksum != d.base_checksum {
        put("base-checksum", ov(d.base_checksum.clone()));
        put("base-timestamp", ov(d.timestamp));
    }
    put("timestamp", ov(d.timestamp));
    put("packages", ov(d.layered_packages.clone()));
    // RefspecType::Container: the reference, then the image digest and version from
    // query_container_image_commit.
    put("container-image-reference", ov(d.refspec.clone()));
    put(
        "container-image-reference-digest",
        ov(d.image_digest.clone()),
    );
    if !d.version.is_empty() {
        put("version", ov(d.version.clone()));
    }
    m
}

fn empty_dict() -> HashMap<String, OwnedValue> {
    HashMap::new()
}

/// `org.projectatomic.rpmostree1.Sysroot` (rpm-ostree: src/daemon/rpmostreed-sysroot.cxx).
pub(crate) struct SysrootIface {
    inner: Arc<Inner>,
}

impl SysrootIface {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }
}

#[interface(name = "org.projectatomic.rpmostree1.Sysroot")]
impl SysrootIface {
    /// handle_register_client: the caller counts as a client (keeps the daemon from its idle exit).
    fn register_client(&self, options: HashMap<String, OwnedValue>) {
        let id = Dict::parse(&options)
            .str("id")
            .unwrap_or_default()
            .to_string();
        let mut s = self.inner.state.lock().unwrap();
        s.calls.push(format!("RegisterClient id={id}"));
        s.registered_clients.push(id);
    }

    /// handle_unregister_client.
    fn unregister_client(&self, _options: HashMap<String, OwnedValue>) {
        let mut s = self.inner.state.lock().unwrap();
        s.calls.push("UnregisterClient".into());
        s.registered_clients.pop();
    }

    /// handle_reload: the double's state is always current.
    fn reload(&self) {}

    /// handle_reload_config.
    fn reload_config(&self) {}

    /// handle_get_os. For "" the real handler completes the call with the booted OS and then returns
    /// FALSE (its broken path); the double answers and counts the call so tests can insist on the
    /// `Booted` property instead.
    #[zbus(name = "GetOS")]
    fn get_os(&self, name: &str) -> Result<OwnedObjectPath, DaemonError> {
        let mut s = self.inner.state.lock().unwrap();
        s.calls.push(format!("GetOS {name:?}"));
        if name.is_empty() {
            s.get_os_default_calls += 1;
            return Ok(booted_path(&s));
        }
        if name == self.inner.osname {
            return Ok(OwnedObjectPath::try_from(os_object_path(name)).expect("valid path"));
        }
        Err(DaemonError {
            name: G_IO_ERROR_NOT_FOUND,
            message: format!("OS name \"{name}\" not found"),
        })
    }

    /// sysroot_populate_deployments_unlocked: the booted OS object, "/" when nothing is booted.
    #[zbus(property)]
    fn booted(&self) -> OwnedObjectPath {
        booted_path(&self.inner.state.lock().unwrap())
    }

    #[zbus(property)]
    fn path(&self) -> String {
        "/".into()
    }

    /// rpmostreed_sysroot_set_txn: (method, sender, object path), all empty when idle.
    #[zbus(property)]
    fn active_transaction(&self) -> (String, String, String) {
        match self.inner.active.lock().unwrap().as_ref() {
            Some(t) => (
                t.method.clone(),
                t.client.clone(),
                os_object_path(&t.osname),
            ),
            None => Default::default(),
        }
    }

    #[zbus(property)]
    fn active_transaction_path(&self) -> String {
        self.inner
            .active
            .lock()
            .unwrap()
            .as_ref()
            .map(|t| t.address.clone())
            .unwrap_or_default()
    }

    #[zbus(property)]
    fn automatic_update_policy(&self) -> String {
        "none".into()
    }

    /// "Array of all deployments in boot order".
    #[zbus(property)]
    fn deployments(&self) -> Vec<HashMap<String, OwnedValue>> {
        self.inner
            .state
            .lock()
            .unwrap()
            .deployments
            .iter()
            .map(deployment_dict)
            .collect()
    }
}

fn booted_path(s: &RpmOstreedState) -> OwnedObjectPath {
    let p = s
        .booted()
        .map(|d| os_object_path(&d.osname))
        .unwrap_or_else(|| "/".into());
    OwnedObjectPath::try_from(p).expect("valid path")
}

/// `org.projectatomic.rpmostree1.OS` (rpm-ostree: src/daemon/rpmostreed-os.cxx).
pub(crate) struct OsIface {
    inner: Arc<Inner>,
}

impl OsIface {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    fn sender(header: &Header<'_>) -> Option<String> {
        header.sender().map(|s| s.to_string())
    }
}

/// A stable rendering of a call's parameters: the join rule compares them
/// (rpmostreed_transaction_is_compatible uses g_variant_equal on the whole parameter tuple; the double
/// compares dict entries regardless of their order, see the module notes).
fn render(d: &Dict) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (k, v) in &d.bools {
        parts.push(format!("{k}={v}"));
    }
    for (k, v) in &d.strs {
        parts.push(format!("{k}={v:?}"));
    }
    for (k, v) in &d.strvs {
        parts.push(format!("{k}={v:?}"));
    }
    for (k, v) in &d.other {
        parts.push(format!("{k}={v}"));
    }
    parts.sort();
    format!("{{{}}}", parts.join(", "))
}

#[interface(name = "org.projectatomic.rpmostree1.OS")]
impl OsIface {
    /// os_handle_rebase → os_merge_or_start_deployment_txn with ALLOW_DOWNGRADE; `refspec` becomes the
    /// `set-refspec` modifier.
    async fn rebase(
        &self,
        options: HashMap<String, OwnedValue>,
        refspec: String,
        packages: Vec<String>,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, DaemonError> {
        let options = Dict::parse(&options);
        if options.str("revision").is_some() {
            return Err(DaemonError::failed("the double does not deploy revisions"));
        }
        let params = format!("{refspec} {packages:?} {}", render(&options));
        let op = Op::Deploy {
            refspec: Some(refspec),
            modifiers: Dict::default(),
            options,
            default_allow_downgrade: true,
        };
        self.inner
            .begin(
                "Rebase",
                params,
                Self::sender(&header),
                "new-deployment".into(),
                op,
            )
            .await
    }

    /// os_handle_update_deployment → os_merge_or_start_deployment_txn with no default flags: without
    /// `no-pull-base` it is an upgrade.
    async fn update_deployment(
        &self,
        modifiers: HashMap<String, OwnedValue>,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, DaemonError> {
        let (modifiers, options) = (Dict::parse(&modifiers), Dict::parse(&options));
        if modifiers.str("set-revision").is_some() {
            return Err(DaemonError::failed("the double does not deploy revisions"));
        }
        let params = format!("{} {}", render(&modifiers), render(&options));
        let op = Op::Deploy {
            refspec: None,
            modifiers,
            options,
            default_allow_downgrade: false,
        };
        self.inner
            .begin(
                "UpdateDeployment",
                params,
                Self::sender(&header),
                "new-deployment".into(),
                op,
            )
            .await
    }

    /// os_handle_kernel_args: title from `initiating-command-line`, else "kargs".
    async fn kernel_args(
        &self,
        existing_kernel_arg_string: String,
        kernel_args_added: Vec<String>,
        kernel_args_replaced: Vec<String>,
        kernel_args_removed: Vec<String>,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, DaemonError> {
        let options = Dict::parse(&options);
        let params = format!(
            "{existing_kernel_arg_string:?} added={kernel_args_added:?} replaced={kernel_args_replaced:?} removed={kernel_args_removed:?} {}",
            render(&options)
        );
        let title = options
            .str("initiating-command-line")
            .unwrap_or("kargs")
            .to_string();
        let op = Op::KernelArgs {
            existing: existing_kernel_arg_string,
            added: kernel_args_added,
            replaced: kernel_args_replaced,
            deleted: kernel_args_removed,
            options,
        };
        self.inner
            .begin("KernelArgs", params, Self::sender(&header), title, op)
            .await
    }

    /// os_handle_cleanup: the element names are checked before any transaction.
    async fn cleanup(
        &self,
        elements: Vec<String>,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, DaemonError> {
        let (mut base, mut pending, mut rollback, mut repomd) = (false, false, false, false);
        // prep_for_txn runs first: the elements are only checked when a new transaction is made.
        let idle = self.inner.active.lock().unwrap().is_none();
        if idle {
            for e in &elements {
                match e.as_str() {
                    "base" => base = true,
                    "pending-deploy" => pending = true,
                    "rollback-deploy" => rollback = true,
                    "repomd" => repomd = true,
                    other => {
                        let mut s = self.inner.state.lock().unwrap();
                        s.calls.push(format!("Cleanup {elements:?}"));
                        return Err(DaemonError::failed(format!(
                            "Invalid cleanup type: {other}"
                        )));
                    }
                }
            }
        }
        let op = Op::Cleanup {
            base,
            pending,
            rollback,
            repomd,
        };
        self.inner
            .begin(
                "Cleanup",
                format!("{elements:?}"),
                Self::sender(&header),
                "cleanup".into(),
                op,
            )
            .await
    }

    /// os_handle_finalize_deployment: title from `initiating-command-line`, else "finalize-deployment".
    async fn finalize_deployment(
        &self,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, DaemonError> {
        let options = Dict::parse(&options);
        let title = options
            .str("initiating-command-line")
            .unwrap_or("finalize-deployment")
            .to_string();
        let params = render(&options);
        self.inner
            .begin(
                "FinalizeDeployment",
                params,
                Self::sender(&header),
                title,
                Op::Finalize { options },
            )
            .await
    }

    /// os_handle_rollback: only the `reboot` option is read; the transaction's title is "rollback"
    /// (rpmostreed_sysroot_set_txn_and_title).
    async fn rollback(
        &self,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, DaemonError> {
        let options = Dict::parse(&options);
        let reboot = options.bool("reboot", false);
        self.inner
            .begin(
                "Rollback",
                render(&options),
                Self::sender(&header),
                "rollback".into(),
                Op::Rollback { reboot },
            )
            .await
    }

    /// os_handle_get_deployment_boot_config: `deployid` is an index into the deployment list; "" means
    /// the pending (first) deployment when `is_pending`, else the merge (booted) one.
    fn get_deployment_boot_config(
        &self,
        deployid: &str,
        is_pending: bool,
    ) -> Result<HashMap<String, OwnedValue>, DaemonError> {
        let mut s = self.inner.state.lock().unwrap();
        s.calls
            .push(format!("GetDeploymentBootConfig {deployid:?} {is_pending}"));
        let osname = &self.inner.osname;
        let index = if deployid.is_empty() {
            let found = if is_pending {
                s.origin_merge_deployment(osname)
            } else {
                s.merge_deployment(osname)
            };
            let Some(found) = found else {
                return Err(DaemonError::failed(format!(
                    "No deployments found for os {osname}"
                )));
            };
            let id = found.id();
            s.deployments
                .iter()
                .position(|d| d.id() == id)
                .expect("found")
        } else {
            // rpmostreed-deployment-utils.cxx rpmostreed_deployment_get_for_index.
            if !deployid.bytes().all(|b| b.is_ascii_digit()) {
                return Err(DaemonError {
                    name: RPMOSTREED_ERROR_FAILED,
                    message: format!(
                        "Invalid deployment index {deployid}, must be a number and >= 0"
                    ),
                });
            }
            let i: usize = deployid.parse().unwrap_or(usize::MAX);
            if i >= s.deployments.len() {
                return Err(DaemonError {
                    name: RPMOSTREED_ERROR_FAILED,
                    message: format!(
                        "Out of range deployment index {i}, expected < {}",
                        s.deployments.len()
                    ),
                });
            }
            i
        };
        let d = &s.deployments[index];
        let mut m = HashMap::new();
        m.insert("staged".to_string(), ov(d.staged));
        let kargs = d.kargs.join(" ");
        if d.staged {
            // "We can only populate "options" in the staged path"; a staged deployment has no boot
            // entry yet, so no `ostree=` either.
            m.insert("options".to_string(), ov(kargs));
        } else {
            // ostree writes the boot entry (BLS): `ostree=/ostree/boot.N/OSNAME/BOOTCSUM/SERIAL`.
            let bootcsum = super::deploy::image_commit(&d.image_digest);
            let ostree = format!("ostree=/ostree/boot.1/{}/{bootcsum}/{}", d.osname, d.serial);
            let options = if kargs.is_empty() {
                ostree
            } else {
                format!("{kargs} {ostree}")
            };
            let n = s.deployments.len() - index;
            m.insert("options".to_string(), ov(options));
            m.insert(
                "title".to_string(),
                ov(format!("{} {} (ostree:{index})", d.osname, d.version)),
            );
            m.insert(
                "linux".to_string(),
                ov(format!("/ostree/{}-{bootcsum}/vmlinuz", d.osname)),
            );
            m.insert(
                "initrd".to_string(),
                ov(format!("/ostree/{}-{bootcsum}/initramfs.img", d.osname)),
            );
            m.insert("version".to_string(), ov(n.to_string()));
        }
        Ok(m)
    }

    #[zbus(property)]
    fn name(&self) -> String {
        self.inner.osname.clone()
    }

    /// rpmostreed-os.cxx rpmostreed_os_load_internals: booted, default and rollback deployment dicts.
    #[zbus(property)]
    fn booted_deployment(&self) -> HashMap<String, OwnedValue> {
        let s = self.inner.state.lock().unwrap();
        s.booted().map(deployment_dict).unwrap_or_else(empty_dict)
    }

    #[zbus(property)]
    fn default_deployment(&self) -> HashMap<String, OwnedValue> {
        let s = self.inner.state.lock().unwrap();
        s.origin_merge_deployment(&self.inner.osname)
            .map(deployment_dict)
            .unwrap_or_else(empty_dict)
    }

    #[zbus(property)]
    fn rollback_deployment(&self) -> HashMap<String, OwnedValue> {
        let s = self.inner.state.lock().unwrap();
        let after = s.booted_index().map(|b| b + 1).unwrap_or(usize::MAX);
        s.deployments
            .iter()
            .skip(after)
            .find(|d| d.osname == self.inner.osname)
            .map(deployment_dict)
            .unwrap_or_else(empty_dict)
    }
}
