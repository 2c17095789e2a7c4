//! The packages a deployment should layer for a kernel type and a set of extensions, as the MCD does
//! it on RHCOS (openshift/machine-config-operator pkg/daemon/update.go): the kernel swap is
//! `override remove` of the default kernel + install of kernel-rt/64k (switchKernel), undone by
//! `override reset` + uninstall (queueRevertKernelSwap); extensions install what the config wants and
//! uninstall only MCO-managed packages that are no longer wanted (generateExtensionsArgs).

use std::collections::BTreeSet;

use crate::os::{Deployment, KernelType, OsChange};

/// getKernelPackagesForTargetRelease: the default kernel, removed by override for kernel-rt/64k.
pub const DEFAULT_KERNEL: &[&str] = &[
    "kernel",
    "kernel-core",
    "kernel-modules",
    "kernel-modules-core",
    "kernel-modules-extra",
];
/// "explicitly does *not* include kernel-rt as that is a meta-package".
pub const REALTIME_KERNEL: &[&str] = &[
    "kernel-rt-core",
    "kernel-rt-modules",
    "kernel-rt-modules-extra",
];
pub const SIXTYFOURK_KERNEL: &[&str] = &[
    "kernel-64k-core",
    "kernel-64k-modules",
    "kernel-64k-modules-core",
    "kernel-64k-modules-extra",
];

fn kernel_packages(kt: KernelType) -> &'static [&'static str] {
    match kt {
        KernelType::Default => &[],
        KernelType::Realtime => REALTIME_KERNEL,
        KernelType::SixtyFourKPages => SIXTYFOURK_KERNEL,
    }
}

/// The kernel a deployment layers.
pub fn kernel_type_of(packages: &[String]) -> KernelType {
    if packages.iter().any(|p| p == "kernel-rt-core") {
        KernelType::Realtime
    } else if packages.iter().any(|p| p == "kernel-64k-core") {
        KernelType::SixtyFourKPages
    } else {
        KernelType::Default
    }
}

/// Every package an MCO extension installs (only these are ever uninstalled).
fn mco_extension_packages() -> BTreeSet<&'static str> {
    crate::config::extensions::SUPPORTED
        .iter()
        .flat_map(|(_, pkgs)| pkgs.iter().copied())
        .collect()
}

/// The packages a config's kernel type and extensions layer on RHCOS (what the MCD checks after the
/// reboot, pkg/daemon/update.go verifyExtensionPackages; unknown extensions are the plan's business).
pub fn expected_packages(kernel_type: KernelType, extensions: &[String]) -> Vec<String> {
    let mut out: Vec<String> = kernel_packages(kernel_type)
        .iter()
        .map(|s| s.to_string())
        .collect();
    for e in extensions {
        if let Some(pkgs) = crate::config::extensions::packages(e) {
            out.extend(pkgs.iter().map(|s| s.to_string()));
        }
    }
    out
}

/// The layered packages and base removals the next deployment should have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layering {
    pub packages: BTreeSet<String>,
    pub removals: BTreeSet<String>,
}

impl Layering {
    pub fn of(d: &Deployment) -> Self {
        Self {
            packages: d.requested_packages.iter().cloned().collect(),
            removals: d.requested_base_removals.iter().cloned().collect(),
        }
    }

    /// What `change` asks for, starting from `booted`'s layering.
    pub fn target(booted: &Deployment, change: &OsChange) -> Self {
        let mut t = Self::of(booted);
        if change.layered_image {
            // The on-cluster-layering image has its kernel and extensions built in.
            return Self::default();
        }
        let current_kt = kernel_type_of(&booted.requested_packages);
        if let Some(kt) = change.kernel_type.filter(|kt| *kt != current_kt) {
            for p in kernel_packages(current_kt) {
                t.packages.remove(*p);
            }
            if kt == KernelType::Default {
                // queueRevertKernelSwap resets every kernel override.
                t.removals
                    .retain(|r| !(r == "kernel" || r.starts_with("kernel-")));
            } else {
                if current_kt == KernelType::Default {
                    t.removals
                        .extend(DEFAULT_KERNEL.iter().map(|s| s.to_string()));
                }
                t.packages
                    .extend(kernel_packages(kt).iter().map(|s| s.to_string()));
            }
        }
        if let Some(wanted) = &change.extensions {
            let managed = mco_extension_packages();
            t.packages
                .retain(|p| !managed.contains(p.as_str()) || wanted.contains(p));
            t.packages.extend(wanted.iter().cloned());
        }
        t
    }

    /// Whether `d` has this layering.
    pub fn matches(&self, d: &Deployment) -> bool {
        *self == Self::of(d)
    }

    /// Packages that need a repository (anything layered: on a rebase rpm-ostree resolves all of them again).
    pub fn needs_repo(&self) -> bool {
        !self.packages.is_empty()
    }
}

/// The `UpdateDeployment` modifiers from `from` to `to`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Modifiers {
    pub install: Vec<String>,
    pub uninstall: Vec<String>,
    pub override_remove: Vec<String>,
    pub override_reset: Vec<String>,
}

impl Modifiers {
    pub fn between(from: &Layering, to: &Layering) -> Self {
        let diff = |a: &BTreeSet<String>, b: &BTreeSet<String>| a.difference(b).cloned().collect();
        Self {
            install: diff(&to.packages, &from.packages),
            uninstall: diff(&from.packages, &to.packages),
            override_remove: diff(&to.removals, &from.removals),
            override_reset: diff(&from.removals, &to.removals),
        }
    }

    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

impl std::fmt::Display for Modifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        for (what, list) in [
            ("install", &self.install),
            ("uninstall", &self.uninstall),
            ("override remove", &self.override_remove),
            ("override reset", &self.override_reset),
        ] {
            if !list.is_empty() {
                parts.push(format!("{what} {}", list.join(" ")));
            }
        }
        f.write_str(&parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn deployment(packages: &[&str], removals: &[&str]) -> Deployment {
        Deployment {
            stateroot: "rhcos".into(),
            checksum: "c".into(),
            serial: 0,
            image: None,
            image_reference: None,
            image_digest: None,
            version: None,
            kernel_arguments: vec![],
            requested_packages: v(packages),
            requested_base_removals: v(removals),
        }
    }

    fn change(kt: Option<KernelType>, ext: Option<&[&str]>) -> OsChange {
        OsChange {
            kernel_type: kt,
            extensions: ext.map(v),
            ..Default::default()
        }
    }

    #[test]
    fn realtime_kernel_swaps_packages_like_the_mcd() {
        let booted = deployment(&[], &[]);
        let t = Layering::target(&booted, &change(Some(KernelType::Realtime), None));
        let m = Modifiers::between(&Layering::of(&booted), &t);
        assert_eq!(m.override_remove, {
            let mut k = v(DEFAULT_KERNEL);
            k.sort();
            k
        });
        assert_eq!(m.install, v(REALTIME_KERNEL));
        // And back: reset the overrides, uninstall the realtime kernel.
        let rt = deployment(REALTIME_KERNEL, DEFAULT_KERNEL);
        let m = Modifiers::between(
            &Layering::of(&rt),
            &Layering::target(&rt, &change(Some(KernelType::Default), None)),
        );
        assert_eq!(m.uninstall, v(REALTIME_KERNEL));
        assert_eq!(m.override_reset.len(), DEFAULT_KERNEL.len());
        assert!(m.install.is_empty() && m.override_remove.is_empty());
        // Realtime → 64k keeps the overrides.
        let m = Modifiers::between(
            &Layering::of(&rt),
            &Layering::target(&rt, &change(Some(KernelType::SixtyFourKPages), None)),
        );
        assert_eq!(m.install, v(SIXTYFOURK_KERNEL));
        assert!(m.override_reset.is_empty() && m.override_remove.is_empty());
    }

    #[test]
    fn only_mco_managed_packages_are_uninstalled() {
        // An admin layered `htop` by hand; usbguard came from an extension.
        let booted = deployment(&["htop", "usbguard", "kernel-rt-core"], &[]);
        let t = Layering::target(
            &booted,
            &change(None, Some(&["krb5-workstation", "libkadm5"])),
        );
        let m = Modifiers::between(&Layering::of(&booted), &t);
        assert_eq!(m.install, v(&["krb5-workstation", "libkadm5"]));
        assert_eq!(m.uninstall, v(&["usbguard"]));
        assert!(t.packages.contains("htop") && t.packages.contains("kernel-rt-core"));
    }

    #[test]
    fn a_layered_image_drops_client_side_layering() {
        let booted = deployment(&["usbguard"], DEFAULT_KERNEL);
        let mut c = change(Some(KernelType::Realtime), Some(&["usbguard"]));
        c = c.for_layered_image(true);
        assert_eq!(Layering::target(&booted, &c), Layering::default());
        assert!(!Layering::default().needs_repo());
    }
}
