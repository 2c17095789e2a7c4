//! The D-Bus errors rpm-ostreed answers with, by name and text.
//!
//! rpm-ostree: src/daemon/rpmostreed-os.cxx os_throw_dbus_invocation_error hands the GError to
//! `g_dbus_method_invocation_take_error`; GDBus sends a GError of an unregistered domain as
//! `org.gtk.GDBus.UnmappedGError.Quark.<escaped quark>.Code<n>` with the GError message as the text.
//! `G_IO_ERROR` is not registered, so `glnx_throw` (G_IO_ERROR_FAILED) becomes `…Code0` and
//! G_IO_ERROR_BUSY (GIOErrorEnum 26) `…Code26`.

use zbus::message::{Header, Message};
use zbus::names::ErrorName;

/// `G_IO_ERROR_FAILED`: what `glnx_throw` raises (most rpm-ostreed errors).
pub const G_IO_ERROR_FAILED: &str =
    "org.gtk.GDBus.UnmappedGError.Quark._g_2dio_2derror_2dquark.Code0";
/// `G_IO_ERROR_NOT_FOUND` (rpm-ostree: rpmostreed-sysroot.cxx handle_get_os, unknown OS name).
pub const G_IO_ERROR_NOT_FOUND: &str =
    "org.gtk.GDBus.UnmappedGError.Quark._g_2dio_2derror_2dquark.Code1";
/// `G_IO_ERROR_BUSY`: another transaction is open (rpm-ostree: rpmostreed-sysroot.cxx
/// rpmostreed_sysroot_prep_for_txn) or the sysroot lock is held (rpmostreed-transaction.cxx
/// transaction_initable_init, "System transaction in progress").
pub const G_IO_ERROR_BUSY: &str =
    "org.gtk.GDBus.UnmappedGError.Quark._g_2dio_2derror_2dquark.Code26";
/// rpm-ostree: src/daemon/rpmostreed-errors.cxx dbus_error_entries, RPM_OSTREED_ERROR_FAILED (raised by
/// rpmostreed-deployment-utils.cxx rpmostreed_deployment_get_for_index).
pub const RPMOSTREED_ERROR_FAILED: &str = "org.projectatomic.rpmostreed.Error.Failed";

/// One error reply: a D-Bus error name and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonError {
    pub name: &'static str,
    pub message: String,
}

impl DaemonError {
    /// `glnx_throw (error, …)`.
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            name: G_IO_ERROR_FAILED,
            message: message.into(),
        }
    }

    pub fn busy(message: impl Into<String>) -> Self {
        Self {
            name: G_IO_ERROR_BUSY,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

impl std::error::Error for DaemonError {}

impl From<zbus::Error> for DaemonError {
    fn from(e: zbus::Error) -> Self {
        Self::failed(e.to_string())
    }
}

impl zbus::DBusError for DaemonError {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<Message> {
        Message::error(call, self.name).build(&(self.message.as_str(),))
    }

    fn name(&self) -> ErrorName<'_> {
        ErrorName::from_static_str_unchecked(self.name)
    }

    fn description(&self) -> Option<&str> {
        Some(&self.message)
    }
}
