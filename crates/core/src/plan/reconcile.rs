//! Which changes a running node cannot make (`mco-protocol.md` §3). Each finding names the field and
//! says in one sentence why, so `state=Unreconcilable` tells an admin what to undo.

use serde::{Deserialize, Serialize};

use crate::config::paths::FORCEFILE;
use crate::config::policy::StorageOverride;
use crate::config::{KernelType, MachineConfig, extensions};

/// One difference the node cannot apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Unreconcilable {
    pub field: String,
    pub reason: String,
    /// Not a change a running node refuses but a config it cannot apply at all (an extension it does
    /// not know): the MCD rejects it while applying the OS changes (`pkg/daemon/update.go`
    /// `applyExtensions` → `ValidateMachineConfigExtensions`), so the node reports a failed update
    /// (`Degraded`, retried) rather than `Unreconcilable`. Nothing is touched either way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub update_error: bool,
}

fn finding(field: &str, reason: impl Into<String>) -> Unreconcilable {
    Unreconcilable {
        field: field.to_string(),
        reason: reason.into(),
        update_error: false,
    }
}

/// All unreconcilable differences between `old` and `new` (empty = reconcilable).
/// `overrides` are the storage sections an admin allowed to differ; `arch` is the node's CPU architecture.
pub fn check(
    old: &MachineConfig,
    new: &MachineConfig,
    overrides: &[StorageOverride],
    arch: &str,
) -> Vec<Unreconcilable> {
    let mut out = Vec::new();
    let (o, n) = (&old.ignition.fixed, &new.ignition.fixed);
    let storage = [
        (
            "spec.config.storage.disks",
            &o.disks,
            &n.disks,
            Some(StorageOverride::Disks),
            "disks are partitioned only at install time; reprovision the node to change them",
        ),
        (
            "spec.config.storage.filesystems",
            &o.filesystems,
            &n.filesystems,
            Some(StorageOverride::FileSystems),
            "filesystems are created only at install time; reprovision the node to change them",
        ),
        (
            "spec.config.storage.raid",
            &o.raid,
            &n.raid,
            Some(StorageOverride::Raid),
            "RAID arrays are created only at install time; reprovision the node to change them",
        ),
        (
            "spec.config.storage.luks",
            &o.luks,
            &n.luks,
            None,
            "LUKS volumes are created only at install time; reprovision the node to change them",
        ),
        (
            "spec.config.storage.directories",
            &o.directories,
            &n.directories,
            None,
            "directories cannot be managed on a running node; create them with a file inside or a tmpfiles.d entry",
        ),
    ];
    for (field, a, b, override_key, reason) in storage {
        if a != b && !override_key.is_some_and(|k| overrides.contains(&k)) {
            out.push(finding(field, reason));
        }
    }
    if o.links != n.links && !n.links.is_null() {
        out.push(finding(
            "spec.config.storage.links",
            "links cannot be changed on a running node (only removing all of them is allowed)",
        ));
    }
    if o.kernel_arguments != n.kernel_arguments {
        out.push(finding(
            "spec.config.kernelArguments",
            "the Ignition kernelArguments section applies only at first boot; use the MachineConfig's spec.kernelArguments",
        ));
    }
    if o.groups != n.groups {
        out.push(finding(
            "spec.config.passwd.groups",
            "groups cannot be changed on a running node",
        ));
    }
    if old.ignition.users != new.ignition.users {
        for (i, u) in new.ignition.users.iter().enumerate() {
            if u.name != "core" {
                out.push(finding(
                    &format!("spec.config.passwd.users[{i}]"),
                    format!("user {:?} cannot be managed on a running node; only core's sshAuthorizedKeys and passwordHash can", u.name),
                ));
            } else if !u.other_fields.is_empty() {
                out.push(finding(
                    &format!("spec.config.passwd.users[{i}]"),
                    format!("only sshAuthorizedKeys and passwordHash of core can change on a running node, not {}", u.other_fields.join(", ")),
                ));
            }
        }
    }
    for (i, f) in new.ignition.files.iter().enumerate() {
        if f.append {
            out.push(finding(
                &format!("spec.config.storage.files[{i}].append"),
                format!(
                    "appending to {} is not supported on a running node; give the whole contents",
                    f.path
                ),
            ));
        }
        if f.path == FORCEFILE {
            out.push(finding(
                &format!("spec.config.storage.files[{i}].path"),
                format!(
                    "{FORCEFILE} is the daemon's forcefile and cannot be written by a MachineConfig"
                ),
            ));
        }
    }
    if old.fips != new.fips {
        out.push(finding(
            "spec.fips",
            format!("FIPS mode is set at install time and cannot change from {} to {} on a running node", old.fips, new.fips),
        ));
    }
    for (i, e) in new.extensions.iter().enumerate() {
        if extensions::packages(e).is_none() {
            out.push(Unreconcilable {
                update_error: true,
                ..finding(
                    &format!("spec.extensions[{i}]"),
                    format!(
                        "unknown extension {e:?} (supported: {})",
                        extensions::supported_names()
                    ),
                )
            });
        }
    }
    if new.kernel_type == KernelType::SixtyFourKPages && arch != "aarch64" {
        out.push(finding(
            "spec.kernelType",
            format!("64k-pages is only supported on aarch64, this node is {arch}"),
        ));
    }
    out
}
