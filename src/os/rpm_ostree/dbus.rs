//! rpm-ostreed's D-Bus interface as the backend calls it (signatures from coreos/rpm-ostree
//! `src/daemon/org.projectatomic.rpmostree1.xml`), and the errors it answers with.

use std::collections::{BTreeMap, HashMap};

use zbus::{DBusError, OwnedObjectPath, OwnedVariant, Variant};

/// rpm-ostreed's well-known bus name.
pub const BUS_NAME: &str = "org.projectatomic.rpmostree1";
pub const SYSROOT_PATH: &str = "/org/projectatomic/rpmostree1/Sysroot";

/// `G_IO_ERROR_BUSY` as GDBus sends an unregistered GError domain: another transaction is open
/// (rpmostreed-sysroot.cxx rpmostreed_sysroot_prep_for_txn, "Transaction in progress: …") or another
/// process holds the sysroot lock (rpmostreed-transaction.cxx transaction_initable_init, "System
/// transaction in progress").
pub const BUSY_ERROR: &str = "org.gtk.GDBus.UnmappedGError.Quark._g_2dio_2derror_2dquark.Code26";

/// rpmostreed-sysroot.cxx rpmostreed_sysroot_prep_for_txn once a transaction asked for a reboot.
pub const REBOOT_INITIATED: &str = "Reboot initiated, cannot start new transaction";

/// `a{sv}` options, in a fixed key order: rpm-ostreed joins an identical call to the open transaction
/// by comparing the parameters (rpmostreed-transaction.cxx rpmostreed_transaction_is_compatible,
/// `g_variant_equal`, which is order-sensitive for a dict).
pub type Options<'a> = BTreeMap<&'a str, Variant<'a>>;

pub type Dict = HashMap<String, OwnedVariant>;

#[zbus::proxy(
    interface = "org.projectatomic.rpmostree1.Sysroot",
    default_service = "org.projectatomic.rpmostree1",
    default_path = "/org/projectatomic/rpmostree1/Sysroot"
)]
pub trait Sysroot {
    fn register_client(&self, options: Options<'_>) -> zbus::Result<()>;
    /// The booted OS object (what the rpm-ostree CLI reads, rpmostree-clientlib.cxx
    /// rpmostree_load_os_proxies); "/" when nothing is booted.
    #[zbus(property)]
    fn booted(&self) -> zbus::Result<OwnedObjectPath>;
    #[zbus(property)]
    fn deployments(&self) -> zbus::Result<Vec<Dict>>;
    #[zbus(property)]
    fn active_transaction_path(&self) -> zbus::Result<String>;
}

#[zbus::proxy(
    interface = "org.projectatomic.rpmostree1.OS",
    default_service = "org.projectatomic.rpmostree1"
)]
pub trait Os {
    fn rebase(
        &self,
        options: Options<'_>,
        refspec: &str,
        packages: &[&str],
    ) -> zbus::Result<String>;
    fn update_deployment(
        &self,
        modifiers: Options<'_>,
        options: Options<'_>,
    ) -> zbus::Result<String>;
    fn kernel_args(
        &self,
        existing_kernel_arg_string: &str,
        kernel_args_added: &[&str],
        kernel_args_replaced: &[&str],
        kernel_args_removed: &[&str],
        options: Options<'_>,
    ) -> zbus::Result<String>;
    fn cleanup(&self, elements: &[&str]) -> zbus::Result<String>;
    fn finalize_deployment(&self, options: Options<'_>) -> zbus::Result<String>;
    /// Options: only `reboot` (b) is read (rpmostreed-os.cxx os_handle_rollback).
    fn rollback(&self, options: Options<'_>) -> zbus::Result<String>;
    /// `deployid` is an index into `Deployments` ("0", "1", …); "" with `is_pending` is the deployment
    /// the next boot uses (rpmostreed-os.cxx os_handle_get_deployment_boot_config).
    fn get_deployment_boot_config(&self, deployid: &str, is_pending: bool) -> zbus::Result<Dict>;
}

#[zbus::proxy(
    interface = "org.projectatomic.rpmostree1.Transaction",
    default_service = "org.projectatomic.rpmostree1",
    default_path = "/"
)]
pub trait Transaction {
    /// `false`: the transaction was already started by another client (we joined it).
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

/// The D-Bus error name of a method error reply.
pub fn error_name(e: &zbus::Error) -> Option<String> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.to_string()),
        zbus::Error::FDO(fdo) => Some(fdo.name().to_string()),
        _ => None,
    }
}

/// What rpm-ostreed (or the bus) said, without the error name.
pub fn error_text(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(_, Some(msg), _) => msg.clone(),
        zbus::Error::FDO(fdo) => fdo
            .description()
            .map(str::to_string)
            .unwrap_or_else(|| fdo.to_string()),
        other => other.to_string(),
    }
}

/// The bus has no `org.projectatomic.rpmostree1` and cannot start one.
pub fn is_not_running(e: &zbus::Error) -> bool {
    matches!(
        error_name(e).as_deref(),
        Some("org.freedesktop.DBus.Error.ServiceUnknown")
            | Some("org.freedesktop.DBus.Error.NameHasNoOwner")
            | Some("org.freedesktop.DBus.Error.NoReply")
    )
}

/// One sentence for a failed call: rpm-ostreed's own text, and a hint when it is not there at all.
pub fn describe(e: &zbus::Error) -> String {
    if is_not_running(e) {
        format!(
            "rpm-ostreed is not running on the system bus ({}: {}); check `systemctl status rpm-ostreed`",
            error_name(e).unwrap_or_default(),
            error_text(e)
        )
    } else {
        error_text(e)
    }
}

pub fn get_str(dict: &Dict, key: &str) -> Option<String> {
    dict.get(key)
        .and_then(|v| String::try_from(v.try_clone().ok()?).ok())
}

pub fn get_bool(dict: &Dict, key: &str) -> bool {
    dict.get(key)
        .and_then(|v| bool::try_from(v).ok())
        .unwrap_or(false)
}

pub fn get_strv(dict: &Dict, key: &str) -> Vec<String> {
    dict.get(key)
        .and_then(|v| Vec::<String>::try_from(v.try_clone().ok()?).ok())
        .unwrap_or_default()
}

pub fn get_i32(dict: &Dict, key: &str) -> Option<i32> {
    dict.get(key).and_then(|v| i32::try_from(v).ok())
}
