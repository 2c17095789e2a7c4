//! Which health checks gate an update: after the node boots a new deployment (an OS image, kernel
//! arguments, kernel type or extensions change), the daemon runs them before it reports Done, and rolls
//! back to the current deployment when a required one fails or the node does not report Ready.
//!
//! The plan can only name the checks the desired config itself writes; the image's own checks are in the
//! image (listed by directory).

use serde::{Deserialize, Serialize};

use crate::config::MachineConfig;
use crate::config::paths::{CONFIG_HEALTH_CHECKS, GREENBOOT_HEALTH_CHECKS, IMAGE_HEALTH_CHECKS};

/// Required checks fail the gate; wanted checks only warn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CheckKind {
    Required,
    Wanted,
}

impl CheckKind {
    /// The directory name under each health directory.
    pub fn dir_name(self) -> &'static str {
        match self {
            CheckKind::Required => "required.d",
            CheckKind::Wanted => "wanted.d",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Required => "required",
            CheckKind::Wanted => "wanted",
        }
    }
}

impl std::fmt::Display for CheckKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The directories of `kind`'s checks, in the order their checks run: the image's and the config's
/// (merged by file name, the config's winning), then greenboot's.
pub fn check_dirs(kind: CheckKind) -> [String; 3] {
    [
        format!("{IMAGE_HEALTH_CHECKS}/{}", kind.dir_name()),
        format!("{CONFIG_HEALTH_CHECKS}/{}", kind.dir_name()),
        format!("{GREENBOOT_HEALTH_CHECKS}/{}", kind.dir_name()),
    ]
}

/// What the health gate will run after the reboot of this plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthGate {
    /// Directories whose executables (greenboot's: `*.sh` files) must all exit 0.
    pub required_dirs: Vec<String>,
    /// Directories whose checks only warn when they fail.
    pub wanted_dirs: Vec<String>,
    /// Checks the desired config itself writes into those directories, by path.
    pub config_checks: Vec<ConfigCheck>,
    /// The node's `Ready` condition must be reported after the boot.
    pub node_ready: bool,
}

/// A check the desired config writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigCheck {
    pub path: String,
    pub kind: CheckKind,
}

impl HealthGate {
    /// The gate for an update to `desired`, with warnings for checks it writes that would never run.
    pub fn for_config(desired: &MachineConfig) -> (HealthGate, Vec<String>) {
        let mut config_checks = Vec::new();
        let mut warnings = Vec::new();
        for file in &desired.ignition.files {
            for kind in [CheckKind::Required, CheckKind::Wanted] {
                let [_, ours, greenboot] = check_dirs(kind);
                let Some(dir) = [&ours, &greenboot]
                    .into_iter()
                    .find(|d| parent_is(&file.path, d))
                else {
                    continue;
                };
                let runs = if *dir == greenboot {
                    // greenboot runs `bash <script>` for `*.sh` only (usr/libexec/greenboot/greenboot,
                    // script_runner: `find "$scripts_dir" -name '*.sh'`).
                    let ok = file.path.ends_with(".sh");
                    if !ok {
                        warnings.push(format!(
                            "{}: greenboot's check directories run only *.sh files; the health gate skips it",
                            file.path
                        ));
                    }
                    ok
                } else {
                    let ok = file.mode & 0o111 != 0;
                    if !ok {
                        warnings.push(format!(
                            "{}: mode {:04o} is not executable; the health gate skips it",
                            file.path, file.mode
                        ));
                    }
                    ok
                };
                if runs {
                    config_checks.push(ConfigCheck {
                        path: file.path.clone(),
                        kind,
                    });
                }
            }
        }
        config_checks.sort_by(|a, b| (a.kind, &a.path).cmp(&(b.kind, &b.path)));
        (
            HealthGate {
                required_dirs: check_dirs(CheckKind::Required).to_vec(),
                wanted_dirs: check_dirs(CheckKind::Wanted).to_vec(),
                config_checks,
                node_ready: true,
            },
            warnings,
        )
    }

    /// One line for `plan -o text`.
    pub fn summary(&self) -> String {
        let named = |kind: CheckKind| {
            self.config_checks
                .iter()
                .filter(|c| c.kind == kind)
                .map(|c| c.path.rsplit('/').next().unwrap_or(&c.path).to_string())
                .collect::<Vec<_>>()
        };
        let (required, wanted) = (named(CheckKind::Required), named(CheckKind::Wanted));
        let mut line = format!(
            "after the reboot, required checks in {}",
            self.required_dirs.join(", ")
        );
        if !required.is_empty() {
            line.push_str(&format!(" (this config adds {})", required.join(", ")));
        }
        line.push_str(" must pass");
        if self.node_ready {
            line.push_str(" and the node must report Ready");
        }
        line.push_str("; wanted checks only warn");
        if !wanted.is_empty() {
            line.push_str(&format!(" (this config adds {})", wanted.join(", ")));
        }
        line.push_str("; a failure rolls back to the current deployment");
        line
    }
}

/// `path` is a file directly in `dir`.
fn parent_is(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(files: &[(&str, u32)]) -> MachineConfig {
        let files: Vec<serde_json::Value> = files
            .iter()
            .map(|(p, mode)| serde_json::json!({"path": p, "mode": mode, "contents": {"source": "data:,exit%200"}}))
            .collect();
        MachineConfig::from_value(serde_json::json!({
            "apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
            "metadata": {"name": "rendered-2"},
            "spec": {"config": {"ignition": {"version": "3.4.0"}, "storage": {"files": files}}}
        }))
        .unwrap()
    }

    #[test]
    fn the_configs_own_checks_are_named_and_unrunnable_ones_warned_about() {
        let mc = config(&[
            (
                "/etc/machine-config-daemon/health.d/required.d/10-kubelet",
                0o755,
            ),
            ("/etc/machine-config-daemon/health.d/wanted.d/50-ntp", 0o700),
            (
                "/etc/machine-config-daemon/health.d/required.d/20-disabled",
                0o644,
            ),
            ("/etc/greenboot/check/required.d/30-dns.sh", 0o644),
            ("/etc/greenboot/check/required.d/README", 0o644),
            (
                "/etc/machine-config-daemon/health.d/required.d/sub/x",
                0o755,
            ),
            ("/etc/motd", 0o644),
        ]);
        let (gate, warnings) = HealthGate::for_config(&mc);
        assert_eq!(
            gate.config_checks,
            vec![
                ConfigCheck {
                    path: "/etc/greenboot/check/required.d/30-dns.sh".into(),
                    kind: CheckKind::Required
                },
                ConfigCheck {
                    path: "/etc/machine-config-daemon/health.d/required.d/10-kubelet".into(),
                    kind: CheckKind::Required
                },
                ConfigCheck {
                    path: "/etc/machine-config-daemon/health.d/wanted.d/50-ntp".into(),
                    kind: CheckKind::Wanted
                },
            ]
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("20-disabled") && warnings[0].contains("0644"));
        assert!(warnings[1].contains("README") && warnings[1].contains("*.sh"));
        let line = gate.summary();
        assert!(
            line.contains("/usr/lib/machine-config-daemon/health.d/required.d")
                && line.contains("this config adds 30-dns.sh, 10-kubelet")
                && line.contains("Ready")
                && line.contains("rolls back"),
            "{line}"
        );
    }
}
