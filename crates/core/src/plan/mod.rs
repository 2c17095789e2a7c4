//! The pure core: given the current and desired MachineConfig (and what is booted, and the cluster's
//! disruption policy), compute exactly what an update would do on a node — or why it cannot be done.
//!
//! No I/O here: everything is a function of its arguments, so every rule is unit-tested.

pub mod actions;
pub mod diff;
pub mod health;
pub mod irreconcilable;
pub mod kargs;
pub mod reconcile;
pub mod registries;
mod render;
pub mod ssh;

use serde::{Deserialize, Serialize};

use crate::config::paths::REGISTRIES_CONF;
use crate::config::policy::PolicyAction;
use crate::config::{KernelType, MachineConfig, MachineConfiguration};
pub use actions::{Action, ClusterPolicy, PolicySource};
pub use diff::Changes;
pub use health::{CheckKind, HealthGate};
pub use kargs::KernelArgsChange;
pub use reconcile::Unreconcilable;
pub use ssh::{SshKey, SshKeysChange};

/// A `{from, to}` change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change<T> {
    pub from: Option<T>,
    pub to: T,
}

/// Extensions to install and remove.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtensionsChange {
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

/// Everything an update would do on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub from_config: String,
    pub to_config: String,
    pub reconcilable: bool,
    pub unreconcilable: Vec<Unreconcilable>,
    pub os_image: Option<Change<String>>,
    pub kernel_arguments: KernelArgsChange,
    pub kernel_type: Option<Change<KernelType>>,
    pub extensions: ExtensionsChange,
    pub files: Changes,
    pub units: Changes,
    pub ssh_keys: bool,
    /// core's SSH keys added and removed (by fingerprint), and how many remain.
    pub ssh_key_changes: SshKeysChange,
    pub password: bool,
    /// Post-config actions in execution order (empty when unreconcilable).
    pub actions: Vec<Action>,
    pub drain: bool,
    pub reboot: bool,
    /// The forcefile asked for a full re-apply and a reboot.
    pub forced: bool,
    /// Why the actions and the drain decision are what they are, one line per reason.
    pub explanations: Vec<String>,
    pub warnings: Vec<String>,
    /// The health checks that run after the reboot into the new deployment before the node reports Done
    /// (a failure rolls back); `None` when the update boots no new deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_gate: Option<HealthGate>,
    /// The policy actions before mapping (keeps `Special` for the executor).
    #[serde(skip)]
    pub policy_actions: Vec<PolicyAction>,
}

impl Plan {
    /// Nothing at all to do.
    pub fn is_noop(&self) -> bool {
        self.reconcilable
            && self.os_image.is_none()
            && self.kernel_arguments.is_empty()
            && self.kernel_type.is_none()
            && self.extensions.add.is_empty()
            && self.extensions.remove.is_empty()
            && self.files.is_empty()
            && self.units.is_empty()
            && !self.ssh_keys
            && !self.password
            && !self.forced
    }

    /// The host part (files, units, SSH keys, password) has something to write.
    pub fn touches_host(&self) -> bool {
        !self.files.is_empty() || !self.units.is_empty() || self.ssh_keys || self.password
    }

    /// The OS part (image, kernel arguments, kernel type, extensions) has something to stage.
    pub fn touches_os(&self) -> bool {
        self.os_image.is_some()
            || !self.kernel_arguments.is_empty()
            || self.kernel_type.is_some()
            || !self.extensions.add.is_empty()
            || !self.extensions.remove.is_empty()
    }
}

/// Inputs beyond the two configs.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// The node's CPU architecture (`std::env::consts::ARCH` naming).
    pub arch: String,
    /// `/run/machine-config-daemon-force` exists.
    pub force: bool,
    /// First boot: no API server, so the legacy action table is used instead of the NDP.
    pub first_boot: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            arch: std::env::consts::ARCH.to_string(),
            force: false,
            first_boot: false,
        }
    }
}

/// Plan an update from `current` to `desired` with the cluster's MachineConfiguration.
/// `booted_image`, when known, is the image the node runs; it wins over `current`'s `osImageURL`.
pub fn plan(
    current: &MachineConfig,
    desired: &MachineConfig,
    booted_image: Option<&str>,
    policy: &MachineConfiguration,
) -> Plan {
    plan_with(
        current,
        desired,
        booted_image,
        policy,
        &PlanOptions::default(),
    )
}

/// [`plan`] with explicit options.
pub fn plan_with(
    current: &MachineConfig,
    desired: &MachineConfig,
    booted_image: Option<&str>,
    policy: &MachineConfiguration,
    opts: &PlanOptions,
) -> Plan {
    let unreconcilable = reconcile::check(current, desired, &policy.storage_overrides, &opts.arch);
    let mut warnings = desired.warnings.clone();
    let mut explanations = Vec::new();

    let os_image = desired.os_image().and_then(|to| {
        let from = booted_image.or(current.os_image());
        (from != Some(to)).then(|| Change {
            from: from.map(str::to_string),
            to: to.to_string(),
        })
    });
    let kernel_arguments = kargs::diff(&current.kernel_arguments, &desired.kernel_arguments);
    let kernel_type = (current.kernel_type != desired.kernel_type).then_some(Change {
        from: Some(current.kernel_type),
        to: desired.kernel_type,
    });
    let extensions = ExtensionsChange {
        add: desired
            .extensions
            .iter()
            .filter(|e| !current.extensions.contains(e))
            .cloned()
            .collect(),
        remove: current
            .extensions
            .iter()
            .filter(|e| !desired.extensions.contains(e))
            .cloned()
            .collect(),
    };
    let (old_ign, new_ign) = (&current.ignition, &desired.ignition);
    let files = diff::files(old_ign, new_ign);
    let units = diff::units(old_ign, new_ign);
    let ssh_keys = diff::ssh_keys(old_ign, new_ign);
    let ssh_key_changes = ssh::diff(old_ign, new_ign);
    if ssh_keys && ssh_key_changes.locks_out() {
        let removed: Vec<String> = ssh_key_changes.remove.iter().map(SshKey::label).collect();
        warnings.push(format!(
            "core's SSH keys: this update removes every key ({}) and leaves none: nobody can log in as core with an SSH key afterwards",
            removed.join(", ")
        ));
    }
    let password = diff::password(old_ign, new_ign);

    let mut os_reasons = Vec::new();
    if opts.force {
        os_reasons.push(
            "the forcefile /run/machine-config-daemon-force requests a full re-apply".to_string(),
        );
    }
    if let Some(c) = &os_image {
        os_reasons.push(format!("the OS image changes to {}", c.to));
    }
    if !kernel_arguments.is_empty() {
        os_reasons.push("kernel arguments change".into());
    }
    if let Some(c) = &kernel_type {
        os_reasons.push(format!("the kernel type changes to {}", c.to));
    }
    if !extensions.add.is_empty() || !extensions.remove.is_empty() {
        os_reasons.push("extensions change".into());
    }

    let policy_actions = if !unreconcilable.is_empty() {
        Vec::new()
    } else if !os_reasons.is_empty() {
        explanations.extend(os_reasons.iter().map(|r| format!("Reboot: {r}")));
        vec![PolicyAction::Reboot]
    } else if files.is_empty() && units.is_empty() && !ssh_keys && !password {
        vec![PolicyAction::None]
    } else if opts.first_boot {
        let paths: Vec<&str> = files.all().collect();
        explanations.push(
            "first boot: legacy post-config actions (no API server for the disruption policy)"
                .into(),
        );
        actions::legacy(&paths, !units.is_empty())
    } else {
        let (cluster, _) = ClusterPolicy::effective(policy);
        let paths: Vec<&str> = files.all().collect();
        let touched = diff::touched_units(&units);
        let unit_names: Vec<&str> = touched.iter().map(String::as_str).collect();
        let eval = actions::evaluate(&cluster, &paths, &unit_names, ssh_keys || password);
        explanations.extend(eval.explanations);
        eval.actions
    };

    let mut drain = policy_actions
        .iter()
        .any(|a| matches!(a, PolicyAction::Reboot | PolicyAction::Drain));
    if policy_actions.contains(&PolicyAction::Special) && !drain {
        let content = |mc: &MachineConfig| {
            mc.ignition
                .file(REGISTRIES_CONF)
                .map(|f| f.contents.clone())
                .unwrap_or_default()
        };
        match registries::classify(&content(current), &content(desired)) {
            Ok(v) if v.safe => explanations.push(format!(
                "no drain: the registries.conf change is safe ({})",
                v.reason
            )),
            Ok(v) => {
                drain = true;
                explanations.push(format!(
                    "drain: the registries.conf change is unsafe ({})",
                    v.reason
                ));
            }
            Err(e) => {
                drain = true;
                warnings.push(format!("{e}; crio may fail to reload it"));
                explanations.push("drain: registries.conf could not be parsed, so the change is treated as unsafe".into());
            }
        }
    } else if drain && policy_actions.contains(&PolicyAction::Drain) {
        explanations.push("drain: a disruption policy asks for it".into());
    }

    let reboot = policy_actions == [PolicyAction::Reboot];
    // A new deployment boots when the OS part changes (a forced re-apply of the booted image makes none);
    // first boot has no known-good deployment of this config to go back to.
    let new_deployment = os_image.is_some()
        || !kernel_arguments.is_empty()
        || kernel_type.is_some()
        || !extensions.add.is_empty()
        || !extensions.remove.is_empty();
    let health_gate = (unreconcilable.is_empty() && reboot && new_deployment && !opts.first_boot)
        .then(|| {
            let (gate, gate_warnings) = HealthGate::for_config(desired);
            warnings.extend(gate_warnings);
            gate
        });

    Plan {
        from_config: current.name.clone(),
        to_config: desired.name.clone(),
        reconcilable: unreconcilable.is_empty(),
        unreconcilable,
        os_image,
        kernel_arguments,
        kernel_type,
        extensions,
        files,
        units,
        ssh_keys,
        ssh_key_changes,
        password,
        actions: policy_actions.iter().map(actions::to_action).collect(),
        reboot,
        drain,
        forced: opts.force,
        explanations,
        warnings,
        health_gate,
        policy_actions,
    }
}

#[cfg(test)]
mod tests;
