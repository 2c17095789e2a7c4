//! What each transaction does to the deployments: rpm-ostreed's deploy, kernel-argument, cleanup and
//! finalize transactions, reduced to the state the double keeps (no files, no RPMs).
//!
//! rpm-ostree: src/daemon/rpmostreed-transaction-types.cxx (deploy_transaction_execute,
//! change_origin_refspec, kernel_arg_transaction_execute, cleanup_transaction_execute,
//! finalize_deployment_transaction_execute) and src/daemon/rpmostree-sysroot-upgrader.cxx
//! (rpmostree_sysroot_upgrader_new / _deploy).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use zbus::OwnedVariant as OwnedValue;

use super::kargs::KernelArgs;
use super::{FakeDeployment, RpmOstreedState, repos};

/// `a{sv}` options/modifiers as rpm-ostreed reads them (`vardict_lookup_bool` & co.).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dict {
    pub bools: BTreeMap<String, bool>,
    pub strs: BTreeMap<String, String>,
    pub strvs: BTreeMap<String, Vec<String>>,
    /// Keys of any other type (kept so that two calls compare equal only when they are).
    pub other: BTreeMap<String, String>,
}

impl Dict {
    pub fn parse(map: &HashMap<String, OwnedValue>) -> Self {
        let mut d = Dict::default();
        for (k, v) in map {
            if let Ok(b) = bool::try_from(v) {
                d.bools.insert(k.clone(), b);
            } else if let Ok(s) = v.try_clone().map(String::try_from) {
                match s {
                    Ok(s) => {
                        d.strs.insert(k.clone(), s);
                    }
                    Err(_) => match v.try_clone().map(Vec::<String>::try_from) {
                        Ok(Ok(sv)) => {
                            d.strvs.insert(k.clone(), sv);
                        }
                        _ => {
                            d.other.insert(k.clone(), format!("{v:?}"));
                        }
                    },
                }
            } else {
                d.other.insert(k.clone(), format!("{v:?}"));
            }
        }
        d
    }

    /// rpm-ostree: rpmostreed-transaction-types.cxx vardict_lookup_bool.
    pub fn bool(&self, key: &str, default: bool) -> bool {
        self.bools.get(key).copied().unwrap_or(default)
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.strs.get(key).map(String::as_str)
    }

    /// rpm-ostree: vardict_lookup_strv_canonical — an empty list counts as absent.
    pub fn strv(&self, key: &str) -> Option<&[String]> {
        self.strvs
            .get(key)
            .map(Vec::as_slice)
            .filter(|v| !v.is_empty())
    }
}

/// A transaction's work, fixed when the method is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `Rebase`, `UpdateDeployment` (and `Deploy`/`Upgrade`, which the backend does not use).
    Deploy {
        refspec: Option<String>,
        modifiers: Dict,
        options: Dict,
        /// rpm-ostree: rpmostreed-os.cxx os_handle_rebase passes RPMOSTREE_TRANSACTION_DEPLOY_FLAG_ALLOW_DOWNGRADE,
        /// os_handle_update_deployment passes no flags.
        default_allow_downgrade: bool,
    },
    KernelArgs {
        existing: String,
        added: Vec<String>,
        replaced: Vec<String>,
        deleted: Vec<String>,
        options: Dict,
    },
    Cleanup {
        base: bool,
        pending: bool,
        rollback: bool,
        repomd: bool,
    },
    Finalize {
        options: Dict,
    },
    /// `Rollback`: only `reboot` is read (rpmostreed-os.cxx os_handle_rollback).
    Rollback {
        reboot: bool,
    },
}

/// What a finished transaction says: messages for `Message` signals; `Err` is `Finished(false, …)`.
pub type Outcome = Result<Vec<String>, String>;

/// The container refspec schemes ostree-ext parses (rpm-ostree: rust/src/core.rs refspec_classify
/// uses `OstreeImageReference::try_from`).
const CONTAINER_PREFIXES: &[&str] = &[
    "ostree-unverified-registry:",
    "ostree-unverified-image:",
    "ostree-image-signed:",
    "ostree-remote-image:",
    "ostree-remote-registry:",
];

pub fn is_container_refspec(refspec: &str) -> bool {
    CONTAINER_PREFIXES.iter().any(|p| refspec.starts_with(p))
}

/// `ostree-unverified-registry:quay.io/x@sha256:…` → `quay.io/x@sha256:…` (the key of the image table).
pub fn pull_spec(refspec: &str) -> Option<String> {
    if let Some(rest) = refspec.strip_prefix("ostree-unverified-registry:") {
        return Some(rest.to_string());
    }
    for p in CONTAINER_PREFIXES {
        if let Some(rest) = refspec.strip_prefix(p) {
            // `ostree-remote-image:REMOTE:docker://…`, `ostree-image-signed:docker://…`
            let rest = rest.split_once("docker://").map(|(_, r)| r).unwrap_or(rest);
            return Some(rest.to_string());
        }
    }
    None
}

fn checksum_of(parts: &[&str]) -> String {
    let joined = parts.join("\n");
    ostree_ext::glib::compute_checksum_for_data(
        ostree_ext::glib::ChecksumType::Sha256,
        joined.as_bytes(),
    )
    .map(|s| s.to_string())
    .unwrap_or_default()
}

/// The commit a container image imports as (stands in for ostree-ext's merge commit).
pub fn image_commit(digest: &str) -> String {
    checksum_of(&["image", digest])
}

impl RpmOstreedState {
    /// ostree: ostree_sysroot_get_deployments order is kept in `deployments`.
    pub(crate) fn booted_index(&self) -> Option<usize> {
        self.deployments.iter().position(|d| d.booted)
    }

    /// ostree: ostree-sysroot.c ostree_sysroot_get_merge_deployment — the booted deployment when
    /// booted into `osname`, else the first one of `osname`.
    pub(crate) fn merge_deployment(&self, osname: &str) -> Option<&FakeDeployment> {
        match self.booted_index().map(|i| &self.deployments[i]) {
            Some(b) if b.osname == osname => Some(b),
            _ => self.deployments.iter().find(|d| d.osname == osname),
        }
    }

    /// rpm-ostree: src/daemon/rpmostree-sysroot-core.cxx rpmostree_syscore_get_origin_merge_deployment —
    /// the first deployment of `osname` (staged, else pending, else booted).
    pub(crate) fn origin_merge_deployment(&self, osname: &str) -> Option<&FakeDeployment> {
        self.deployments.iter().find(|d| d.osname == osname)
    }

    /// Resolve an image reference as a pull would; records the pull.
    fn pull(&mut self, refspec: &str) -> Result<super::FakeImage, String> {
        let spec = pull_spec(refspec)
            .ok_or_else(|| format!("the double only pulls container images, not {refspec}"))?;
        self.pulls.push(refspec.to_string());
        // The wording after the image is the double's own (the real error comes from skopeo).
        self.images.get(&spec).cloned().ok_or_else(|| {
            format!("Creating importer: failed to invoke method OpenImage: reading manifest in {spec}: manifest unknown")
        })
    }

    /// A new deployment from `base`, replacing any staged one (rpm-ostree:
    /// rpmostree-sysroot-upgrader.cxx rpmostree_sysroot_upgrader_deploy stages when booted;
    /// ostree_sysroot_stage_tree replaces the previous staged deployment).
    fn stage(&mut self, mut new: FakeDeployment, locked: bool) {
        self.deployments.retain(|d| !d.staged);
        let booted = self.booted_index().is_some();
        new.booted = false;
        new.staged = booted;
        new.finalization_locked = booted && locked;
        new.serial = self
            .deployments
            .iter()
            .filter(|d| d.checksum == new.checksum)
            .map(|d| d.serial + 1)
            .max()
            .unwrap_or(0);
        if booted {
            self.deployments.insert(0, new);
        } else {
            // Not booted: ostree_sysroot_deploy_tree + simple_write_deployment make it the default.
            self.deployments.insert(0, new);
        }
    }

    pub(crate) fn execute(&mut self, osname: &str, op: Op) -> Outcome {
        match op {
            Op::Deploy {
                refspec,
                modifiers,
                options,
                default_allow_downgrade: _,
            } => self.deploy(osname, refspec, &modifiers, &options),
            Op::KernelArgs {
                existing,
                added,
                replaced,
                deleted,
                options,
            } => self.kernel_args(osname, &existing, &added, &replaced, &deleted, &options),
            Op::Cleanup {
                base: _,
                pending,
                rollback,
                repomd: _,
            } => Ok(self.cleanup(osname, pending, rollback)),
            Op::Finalize { options } => self.finalize(osname, &options),
            Op::Rollback { reboot } => self.rollback(osname, reboot),
        }
    }

    /// rpm-ostree: rpmostreed-transaction-types.cxx rollback_transaction_execute, with pending and
    /// rollback as ostree-sysroot.c ostree_sysroot_query_deployments_for finds them (the first of
    /// `osname` before the booted one, the first after it).
    fn rollback(&mut self, osname: &str, reboot: bool) -> Outcome {
        let booted = self.booted_index();
        let (mut pending, mut rollback, mut found_booted) = (None, None, false);
        for (i, d) in self.deployments.iter().enumerate() {
            if d.osname != osname {
                continue;
            }
            if Some(i) == booted {
                found_booted = true;
                continue;
            }
            if !found_booted && pending.is_none() {
                pending = Some(i);
            } else if found_booted && rollback.is_none() {
                rollback = Some(i);
            }
        }
        if rollback.is_none() && pending.is_none() {
            return Err("No rollback deployment found".into());
        }
        if pending.is_some_and(|p| self.deployments[p].staged) {
            return Err("Staged deployment (remove with cleanup -p)".into());
        }
        // "If there isn't a rollback deployment, but there *is* a pending deployment, then we want
        // "rpm-ostree rollback" to put the currently booted deployment back on top."
        let Some(target) = rollback.or(booted) else {
            return Err("the double needs a booted deployment to roll back".into());
        };
        let first = self.deployments[target].clone();
        let messages = vec![format!(
            "Moving '{}.{}' to be first deployment",
            first.checksum, first.serial
        )];
        // "if default changed write it" (ostree_sysroot_write_deployments with the reordered list).
        if target != 0 {
            let moved = self.deployments.remove(target);
            self.deployments.insert(0, moved);
        }
        if reboot {
            // check_sd_inhibitor_locks is not modelled.
            self.request_reboot();
        }
        Ok(messages)
    }

    /// rpm-ostree: rpmostreed-transaction-types.cxx deploy_transaction_execute (the container path).
    fn deploy(
        &mut self,
        osname: &str,
        refspec: Option<String>,
        modifiers: &Dict,
        options: &Dict,
    ) -> Outcome {
        let refspec = refspec.or_else(|| modifiers.str("set-refspec").map(str::to_string));
        let download_only = options.bool("download-only", false);
        let no_pull_base = options.bool("no-pull-base", false);
        let idempotent = options.bool("idempotent-layering", false);
        // "Also check for conflicting options -- this is after all a public API."
        if refspec.is_none() && options.bool("skip-purge", false) {
            return Err("Can't specify skip-purge if not setting a new refspec".into());
        }
        if refspec.is_some() && no_pull_base {
            return Err("Can't specify no-pull-base if setting a new refspec or revision".into());
        }
        if options.bool("cache-only", false) && download_only {
            return Err("Can't specify cache-only and download-only".into());
        }
        if options.bool("dry-run", false) && download_only {
            return Err("Can't specify dry-run and download-only".into());
        }
        if modifiers.strv("override-replace-packages").is_some() {
            return Err("Non-local replacement overrides not implemented yet".into());
        }
        let override_remove = modifiers.strv("override-remove-packages");
        let override_reset = modifiers.strv("override-reset-packages");
        if options.bool("no-overrides", false)
            && (override_remove.is_some() || override_reset.is_some())
        {
            return Err("Can't specify no-overrides if setting override modifiers".into());
        }
        if options.bool("apply-live", false) && options.bool("reboot", false) {
            return Err("Cannot specify `apply-live` and `reboot`".into());
        }

        // rpm-ostree: rpmostree-sysroot-upgrader.cxx rpmostree_sysroot_upgrader_new.
        let Some(merge) = self.origin_merge_deployment(osname).cloned() else {
            return Err(format!("No previous deployment for OS '{osname}'"));
        };
        if self.merge_deployment(osname).is_none() {
            return Err(format!("No previous deployment for OS '{osname}'"));
        }
        let mut new = merge.clone();
        let mut changed = false;
        let mut messages = Vec::new();

        if let Some(r) = &refspec {
            // rpm-ostree: change_origin_refspec.
            let r = r.strip_prefix("ostree://").unwrap_or(r);
            if !is_container_refspec(r) {
                return Err(format!(
                    "the double only rebases to container images, not {r}"
                ));
            }
            if new.refspec == r {
                return Err(format!("Old and new refs are equal: {r}"));
            }
            new.refspec = r.to_string();
        }

        // Package removals, then installs (rpmostree_origin_remove_packages / _add_packages,
        // rust/src/treefile.rs).
        if options.bool("no-layering", false) {
            changed |= !new.requested_packages.is_empty();
            new.requested_packages.clear();
        } else if let Some(uninstall) = modifiers.strv("uninstall-packages") {
            for p in uninstall {
                if new.requested_packages.remove(p) {
                    changed = true;
                } else if !idempotent {
                    return Err(format!(
                        "Package/capability '{p}' is not currently requested"
                    ));
                }
            }
        }
        if let Some(install) = modifiers.strv("install-packages") {
            for p in install {
                if new.requested_packages.contains(p) {
                    if !idempotent {
                        return Err(format!("Package/capability '{p}' is already requested"));
                    }
                } else {
                    new.requested_packages.insert(p.clone());
                    changed = true;
                }
            }
        }
        if options.bool("no-overrides", false) {
            changed |= !new.requested_base_removals.is_empty();
            new.requested_base_removals.clear();
        } else if let Some(reset) = override_reset {
            for p in reset {
                if !new.requested_base_removals.remove(p) {
                    return Err(format!("No overrides for package '{p}'"));
                }
            }
            changed = true;
        }

        // "if (!no_pull_base)": pull the origin's image; a tag may have moved (an upgrade).
        let mut image = super::FakeImage {
            digest: new.image_digest.clone(),
            version: new.version.clone(),
            packages: new.base_packages.clone(),
            timestamp: new.timestamp,
        };
        if !no_pull_base {
            image = self.pull(&new.refspec)?;
            if image.digest != merge.image_digest {
                changed = true;
            }
        }

        if let Some(remove) = override_remove {
            for p in remove {
                // "Package \"%s\" not found" when the base does not have it.
                if !image.packages.contains(p) {
                    return Err(format!("Package \"{p}\" not found"));
                }
                // rust/src/treefile.rs add_packages_override_remove.
                if !new.requested_base_removals.insert(p.clone()) {
                    return Err(format!("Override already exists for package '{p}'"));
                }
            }
            changed = true;
        }

        // rpmostree_sysroot_upgrader_prep_layering: requested packages not in the base come from the
        // enabled repos (rpmostree-core.cxx "Packages not found").
        let to_layer: Vec<String> = new
            .requested_packages
            .iter()
            .filter(|p| !image.packages.contains(p))
            .cloned()
            .collect();
        if !to_layer.is_empty() {
            let root = self.node_root.clone().unwrap_or_else(|| "/".into());
            let available = repos::available_packages(&root)?;
            let missing: Vec<&str> = to_layer
                .iter()
                .filter(|p| !available.contains(*p))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(format!("Packages not found: {}", missing.join(", ")));
            }
        }

        // Container base, nothing changed and no rebase: "No change." and no new deployment.
        if !changed && refspec.is_none() {
            messages.push(
                if !no_pull_base {
                    "No upgrade available."
                } else {
                    "No change."
                }
                .into(),
            );
            return Ok(messages);
        }
        if options.bool("dry-run", false) {
            return Ok(messages);
        }
        if download_only {
            self.downloaded.push(new.refspec.clone());
            messages.push(
                if changed {
                    "Update downloaded."
                } else {
                    "No changes."
                }
                .into(),
            );
            return Ok(messages);
        }
        new.image_digest = image.digest.clone();
        new.version = image.version.clone();
        new.timestamp = image.timestamp;
        new.base_packages = image.packages.clone();
        new.base_checksum = image_commit(&image.digest);
        new.layered_packages = to_layer;
        new.checksum = new.layered_checksum();
        self.stage(new, options.bool("lock-finalization", false));
        if options.bool("reboot", false) {
            self.request_reboot();
        }
        Ok(messages)
    }

    /// rpm-ostree: rpmostreed-transaction-types.cxx kernel_arg_transaction_execute /
    /// kernel_arg_apply_patching: the existing string is the starting point.
    fn kernel_args(
        &mut self,
        osname: &str,
        existing: &str,
        added: &[String],
        replaced: &[String],
        deleted: &[String],
        options: &Dict,
    ) -> Outcome {
        let Some(merge) = self.origin_merge_deployment(osname).cloned() else {
            return Err(format!("No previous deployment for OS '{osname}'"));
        };
        let final_string = options.str("final-kernel-args");
        let (kargs, changed) = match final_string {
            Some(f) => (KernelArgs::parse(f), f != existing),
            None => {
                let mut k = KernelArgs::parse(existing);
                let existing_v = k.to_vec();
                let mut changed = false;
                for a in deleted {
                    k.delete(a)?;
                    changed = true;
                }
                for a in replaced {
                    k.replace(a)?;
                    changed = true;
                }
                for a in added {
                    k.append(a);
                    changed = true;
                }
                for a in options.strv("append-if-missing").unwrap_or_default() {
                    if !k.contains(a) {
                        k.append(a);
                        changed = true;
                    }
                }
                for a in options.strv("delete-if-present").unwrap_or_default() {
                    if existing_v.contains(a) {
                        k.delete(a)?;
                        changed = true;
                    }
                }
                (k, changed)
            }
        };
        if !changed {
            return Ok(vec!["No changes.".into()]);
        }
        let mut new = merge;
        // libostree sets `ostree=` itself when it writes the boot entry.
        new.kargs = kargs
            .to_vec()
            .into_iter()
            .filter(|a| !a.starts_with("ostree="))
            .collect();
        self.stage(new, options.bool("lock-finalization", false));
        if options.bool("reboot", false) {
            self.request_reboot();
        }
        Ok(Vec::new())
    }

    /// rpm-ostree: cleanup_transaction_execute + rpmostree-sysroot-core.cxx
    /// rpmostree_syscore_filter_deployments (pending = before the booted one, rollback = after).
    fn cleanup(&mut self, osname: &str, pending: bool, rollback: bool) -> Vec<String> {
        if !(pending || rollback) {
            return Vec::new();
        }
        let before = self.deployments.len();
        let mut found_booted = false;
        self.deployments.retain(|d| {
            if d.booted {
                found_booted = true;
                return true;
            }
            if d.osname != osname {
                return true;
            }
            !((!found_booted && pending) || (found_booted && rollback))
        });
        if self.deployments.len() == before {
            vec!["Deployments unchanged.".into()]
        } else {
            Vec::new()
        }
    }

    /// rpm-ostree: finalize_deployment_transaction_execute.
    fn finalize(&mut self, osname: &str, options: &Dict) -> Outcome {
        let Some(first) = self.deployments.first_mut() else {
            return Err("No deployments found".into());
        };
        if !first.staged {
            return Err("No pending staged deployment found".into());
        }
        if first.osname != osname {
            return Err(format!("Staged deployment is not for osname '{osname}'"));
        }
        // For a container deployment the expected checksum is the image digest, "not the checksum of
        // the ostree merge commit".
        let checksum = first.image_digest.clone();
        let expected = options.str("checksum");
        if expected.is_none() && !options.bool("allow-missing-checksum", false) {
            return Err("Missing expected checksum".into());
        }
        if let Some(e) = expected.filter(|e| *e != checksum) {
            return Err(format!(
                "Expected staged base checksum {e}, but found {checksum}"
            ));
        }
        if !first.finalization_locked {
            if !options.bool("allow-unlocked", false) {
                return Err("Staged deployment already unlocked".into());
            }
        } else {
            first.finalization_locked = false;
        }
        self.request_reboot();
        Ok(vec![format!(
            "Finalized deployment; rebooting into {checksum}"
        )])
    }

    /// rpm-ostree: src/daemon/rpmostreed-daemon.cxx rpmostreed_daemon_reboot → idle_initiate_reboot
    /// spawns `systemctl reboot`; new transactions are refused from now on.
    pub(crate) fn request_reboot(&mut self) {
        self.rebooting = true;
        self.reboots.push("systemctl reboot".into());
    }

    /// A deployment dict's `packages`, sorted (rust/src/daemon.rs inserts the origin's sets sorted).
    pub(crate) fn sorted(set: &BTreeSet<String>) -> Vec<String> {
        set.iter().cloned().collect()
    }
}

impl FakeDeployment {
    /// A layered deployment is a new commit on top of the image's; without layering it is the image's.
    pub(crate) fn layered_checksum(&self) -> String {
        if self.requested_packages.is_empty() && self.requested_base_removals.is_empty() {
            return self.base_checksum.clone();
        }
        let packages: Vec<&str> = self.requested_packages.iter().map(String::as_str).collect();
        let removals: Vec<&str> = self
            .requested_base_removals
            .iter()
            .map(String::as_str)
            .collect();
        checksum_of(&[
            &self.base_checksum,
            &packages.join(","),
            &removals.join(","),
        ])
    }
}

/// The title a deploy transaction shows once it runs (rpm-ostree: deploy_transaction_execute, "Now set
/// the transaction title before doing any work"): the initiating command line when given.
pub(crate) fn deploy_title(refspec: Option<&str>, modifiers: &Dict, options: &Dict) -> String {
    if let Some(cmd) = options.str("initiating-command-line") {
        return cmd.to_string();
    }
    let install = modifiers.strv("install-packages");
    let uninstall = modifiers.strv("uninstall-packages");
    let no_pull_base = options.bool("no-pull-base", false);
    let is_override = no_pull_base
        && (modifiers.strv("override-reset-packages").is_some()
            || modifiers.strv("override-remove-packages").is_some()
            || modifiers.strv("override-replace-packages").is_some()
            || options.bool("no-overrides", false));
    let mut title = String::from(if no_pull_base && !is_override && install.is_some() {
        "install"
    } else if no_pull_base && !is_override {
        "uninstall"
    } else if is_override {
        "override"
    } else if refspec.is_some() || modifiers.str("set-refspec").is_some() {
        "rebase"
    } else if modifiers.str("set-revision").is_some() {
        "deploy"
    } else {
        "upgrade"
    });
    if options.bool("cache-only", false) {
        title.push_str(" (cache only)");
    } else if options.bool("download-only", false) {
        title.push_str(" (download only)");
    }
    if let Some(u) = uninstall {
        title.push_str(&format!("; uninstall: {}", u.len()));
    }
    if let Some(i) = install {
        title.push_str(&format!("; install: {}", i.len()));
    }
    title
}
