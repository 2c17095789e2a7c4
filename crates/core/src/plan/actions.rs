//! Post-config actions: the default NodeDisruptionPolicy merged with the cluster's, longest-prefix file
//! matching, collapsing, and the legacy (first boot) table (`mco-protocol.md` §4).

use serde::{Deserialize, Serialize};

use crate::config::paths::{REGISTRIES_CONF, is_under};
use crate::config::policy::{FilePolicy, PolicyAction, UnitPolicy};
use crate::config::{MachineConfiguration, NodeDisruptionPolicy};

/// An action the daemon runs after writing a config, as reported in a plan.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Action {
    Reboot,
    Drain,
    None,
    DaemonReload,
    Reload { unit: String },
    Restart { unit: String },
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Reboot => f.write_str("Reboot"),
            Action::Drain => f.write_str("Drain"),
            Action::None => f.write_str("None"),
            Action::DaemonReload => f.write_str("DaemonReload"),
            Action::Reload { unit } => write!(f, "Reload {unit}"),
            Action::Restart { unit } => write!(f, "Restart {unit}"),
        }
    }
}

/// The effective cluster policy: defaults merged with the MachineConfiguration's `nodeDisruptionPolicy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPolicy {
    pub files: Vec<FilePolicy>,
    pub units: Vec<UnitPolicy>,
    pub ssh_key: Vec<PolicyAction>,
}

fn reload(unit: &str) -> PolicyAction {
    PolicyAction::Reload(unit.into())
}
fn restart(unit: &str) -> PolicyAction {
    PolicyAction::Restart(unit.into())
}

impl Default for ClusterPolicy {
    /// `apihelpers.defaultClusterPolicies`.
    fn default() -> Self {
        let file = |path: &str, actions: Vec<PolicyAction>| FilePolicy {
            path: path.into(),
            actions,
        };
        ClusterPolicy {
            files: vec![
                file("/var/lib/kubelet/config.json", vec![PolicyAction::None]),
                file(
                    "/etc/machine-config-daemon/no-reboot/containers-gpg.pub",
                    vec![reload("crio.service")],
                ),
                file("/etc/containers/policy.json", vec![reload("crio.service")]),
                file(REGISTRIES_CONF, vec![PolicyAction::Special]),
                file("/etc/containers/registries.d", vec![reload("crio.service")]),
                file("/etc/crio/policies", vec![reload("crio.service")]),
                file("/etc/nmstate/openshift", vec![PolicyAction::None]),
                file(
                    "/etc/pki/ca-trust/source/anchors/openshift-config-user-ca-bundle.crt",
                    vec![
                        restart("coreos-update-ca-trust.service"),
                        restart("crio.service"),
                    ],
                ),
                file(
                    "/etc/kubernetes/credential-providers",
                    vec![restart("kubelet.service")],
                ),
                file(
                    "/etc/systemd/system/kubelet.service.d/40-kubelet-crio-image-credential-provider.conf",
                    vec![PolicyAction::DaemonReload, restart("kubelet.service")],
                ),
                file("/etc/iri-registry", vec![restart("iri-registry.service")]),
                file(
                    "/usr/local/bin/load-registry-image.sh",
                    vec![restart("iri-registry.service")],
                ),
                file(
                    "/etc/pki/ca-trust/source/anchors/iri-root-ca.crt",
                    vec![restart("coreos-update-ca-trust.service")],
                ),
            ],
            units: vec![UnitPolicy {
                name: "iri-registry.service".into(),
                actions: vec![PolicyAction::DaemonReload, restart("iri-registry.service")],
            }],
            ssh_key: vec![PolicyAction::None],
        }
    }
}

/// Where the effective policy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySource {
    /// The operator's `status.nodeDisruptionPolicyStatus.clusterPolicies` (as the MCD uses).
    OperatorStatus,
    /// Our built-in defaults merged with `spec.nodeDisruptionPolicy` (no operator status).
    DefaultsMergedWithSpec,
}

impl std::fmt::Display for PolicySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PolicySource::OperatorStatus => {
                "the operator's status.nodeDisruptionPolicyStatus.clusterPolicies"
            }
            PolicySource::DefaultsMergedWithSpec => {
                "built-in defaults merged with spec.nodeDisruptionPolicy"
            }
        })
    }
}

impl ClusterPolicy {
    /// The policy to plan with: the operator's merge when it is current for `spec` (the operator
    /// knows the defaults of the cluster's version), else ours.
    pub fn effective(policy: &MachineConfiguration) -> (Self, PolicySource) {
        match policy.current_cluster_policies() {
            Some(cp) => (
                ClusterPolicy {
                    files: cp.files.clone(),
                    units: cp.units.clone(),
                    ssh_key: cp.ssh_key.clone(),
                },
                PolicySource::OperatorStatus,
            ),
            None => (
                ClusterPolicy::merged(&policy.node_disruption_policy),
                PolicySource::DefaultsMergedWithSpec,
            ),
        }
    }

    /// Defaults with the user's entries on top: an entry for the same path or unit replaces the default.
    pub fn merged(user: &NodeDisruptionPolicy) -> Self {
        let mut p = ClusterPolicy::default();
        for f in &user.files {
            match p.files.iter_mut().find(|d| d.path == f.path) {
                Some(d) => d.actions = f.actions.clone(),
                None => p.files.push(f.clone()),
            }
        }
        for u in &user.units {
            match p.units.iter_mut().find(|d| d.name == u.name) {
                Some(d) => d.actions = u.actions.clone(),
                None => p.units.push(u.clone()),
            }
        }
        if let Some(ssh) = &user.ssh_key {
            p.ssh_key = ssh.clone();
        }
        p
    }

    /// The policy with the longest path equal to `file` or a parent directory of it.
    pub fn file_policy(&self, file: &str) -> Option<&FilePolicy> {
        self.files
            .iter()
            .filter(|p| is_under(file, &p.path))
            .max_by_key(|p| p.path.trim_end_matches('/').len())
    }

    pub fn unit_policy(&self, unit: &str) -> Option<&UnitPolicy> {
        self.units.iter().find(|p| p.name == unit)
    }
}

/// Why each changed path/unit led to its actions (for the human summary and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub actions: Vec<PolicyAction>,
    /// One line per changed item: `"/etc/x: Reload crio.service (policy /etc/containers/registries.d)"`.
    pub explanations: Vec<String>,
}

/// Evaluate the NDP for changed files, units (names) and passwd (`mco-protocol.md` §4.2).
pub fn evaluate(
    policy: &ClusterPolicy,
    files: &[&str],
    units: &[&str],
    passwd_changed: bool,
) -> Evaluation {
    let mut actions = Vec::new();
    let mut explanations = Vec::new();
    for path in files {
        match policy.file_policy(path) {
            Some(p) => {
                explanations.push(format!(
                    "{path}: {} (policy {})",
                    describe(&p.actions),
                    p.path
                ));
                actions.extend(p.actions.iter().cloned());
            }
            None => {
                explanations.push(format!("{path}: Reboot (no disruption policy matches)"));
                actions.push(PolicyAction::Reboot);
            }
        }
    }
    for unit in units {
        match policy.unit_policy(unit) {
            Some(p) => {
                explanations.push(format!("unit {unit}: {} (policy)", describe(&p.actions)));
                actions.extend(p.actions.iter().cloned());
            }
            None => {
                explanations.push(format!(
                    "unit {unit}: Reboot (no disruption policy matches)"
                ));
                actions.push(PolicyAction::Reboot);
            }
        }
    }
    if passwd_changed {
        explanations.push(format!(
            "core user SSH keys/password: {} (sshkey policy)",
            describe(&policy.ssh_key)
        ));
        actions.extend(policy.ssh_key.iter().cloned());
    }
    Evaluation {
        actions: collapse(actions),
        explanations,
    }
}

/// Any Reboot → `[Reboot]`; `None` dropped beside other actions; `DaemonReload` first (units were already
/// written, and restarts after it must see them); exact duplicates dropped.
pub fn collapse(actions: Vec<PolicyAction>) -> Vec<PolicyAction> {
    if actions.contains(&PolicyAction::Reboot) {
        return vec![PolicyAction::Reboot];
    }
    if actions.is_empty() || actions.iter().all(|a| *a == PolicyAction::None) {
        return vec![PolicyAction::None];
    }
    let mut out: Vec<PolicyAction> = Vec::new();
    if actions.contains(&PolicyAction::DaemonReload) {
        out.push(PolicyAction::DaemonReload);
    }
    for a in actions {
        if a != PolicyAction::None && !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

fn describe(actions: &[PolicyAction]) -> String {
    actions
        .iter()
        .map(|a| to_action(a).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Map a policy action to the reported action; `Special` is a crio reload.
pub fn to_action(a: &PolicyAction) -> Action {
    match a {
        PolicyAction::Reboot => Action::Reboot,
        PolicyAction::Drain => Action::Drain,
        PolicyAction::None => Action::None,
        PolicyAction::DaemonReload => Action::DaemonReload,
        PolicyAction::Reload(u) => Action::Reload { unit: u.clone() },
        PolicyAction::Restart(u) => Action::Restart { unit: u.clone() },
        PolicyAction::Special => Action::Reload {
            unit: "crio.service".into(),
        },
    }
}

/// First-boot actions, which do not use the NDP (it needs the API): `mco-protocol.md` §4.4.
pub fn legacy(files: &[&str], units_changed: bool) -> Vec<PolicyAction> {
    const NONE: &[&str] = &[
        "/etc/kubernetes/kubelet-ca.crt",
        "/var/lib/kubelet/config.json",
    ];
    const CRIO_RELOAD: &[&str] = &[
        REGISTRIES_CONF,
        "/etc/machine-config-daemon/no-reboot/containers-gpg.pub",
        "/etc/containers/policy.json",
    ];
    const USER_CA: &str = "/etc/pki/ca-trust/source/anchors/openshift-config-user-ca-bundle.crt";
    if units_changed {
        return vec![PolicyAction::Reboot];
    }
    let mut actions = Vec::new();
    for path in files {
        if NONE.contains(path) || is_under(path, "/etc/nmstate/openshift") {
            actions.push(PolicyAction::None);
        } else if *path == REGISTRIES_CONF {
            actions.push(PolicyAction::Special);
        } else if CRIO_RELOAD.contains(path) || is_under(path, "/etc/containers/registries.d") {
            actions.push(reload("crio.service"));
        } else if *path == USER_CA {
            actions.push(restart("crio.service"));
        } else {
            return vec![PolicyAction::Reboot];
        }
    }
    collapse(actions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::policy::PolicyAction as P;

    fn eval(files: &[&str]) -> Vec<PolicyAction> {
        evaluate(&ClusterPolicy::default(), files, &[], false).actions
    }

    /// Each default policy row, hit by its exact path (or a file inside its directory).
    #[test]
    fn every_default_path() {
        let crio = || reload("crio.service");
        let rows: Vec<(&str, Vec<PolicyAction>)> = vec![
            ("/var/lib/kubelet/config.json", vec![P::None]),
            (
                "/etc/machine-config-daemon/no-reboot/containers-gpg.pub",
                vec![crio()],
            ),
            ("/etc/containers/policy.json", vec![crio()]),
            ("/etc/containers/registries.conf", vec![P::Special]),
            ("/etc/containers/registries.d/quay.yaml", vec![crio()]),
            ("/etc/crio/policies/x.json", vec![crio()]),
            ("/etc/nmstate/openshift/cluster.yml", vec![P::None]),
            (
                "/etc/pki/ca-trust/source/anchors/openshift-config-user-ca-bundle.crt",
                vec![
                    restart("coreos-update-ca-trust.service"),
                    restart("crio.service"),
                ],
            ),
            (
                "/etc/kubernetes/credential-providers/ecr.yaml",
                vec![restart("kubelet.service")],
            ),
            (
                "/etc/systemd/system/kubelet.service.d/40-kubelet-crio-image-credential-provider.conf",
                vec![P::DaemonReload, restart("kubelet.service")],
            ),
            (
                "/etc/iri-registry/config.yml",
                vec![restart("iri-registry.service")],
            ),
            (
                "/usr/local/bin/load-registry-image.sh",
                vec![restart("iri-registry.service")],
            ),
            (
                "/etc/pki/ca-trust/source/anchors/iri-root-ca.crt",
                vec![restart("coreos-update-ca-trust.service")],
            ),
            ("/etc/chrony.conf", vec![P::Reboot]),
            ("/etc/containers/registries.dx", vec![P::Reboot]),
        ];
        for (path, want) in rows {
            assert_eq!(eval(&[path]), want, "{path}");
        }
        let units = evaluate(
            &ClusterPolicy::default(),
            &[],
            &["iri-registry.service"],
            false,
        )
        .actions;
        assert_eq!(
            units,
            vec![P::DaemonReload, restart("iri-registry.service")]
        );
        assert_eq!(
            evaluate(&ClusterPolicy::default(), &[], &["foo.service"], false).actions,
            vec![P::Reboot]
        );
        assert_eq!(
            evaluate(&ClusterPolicy::default(), &[], &[], true).actions,
            vec![P::None]
        );
    }

    #[test]
    fn longest_prefix_wins() {
        let user = NodeDisruptionPolicy {
            files: vec![
                FilePolicy {
                    path: "/etc".into(),
                    actions: vec![P::Drain],
                },
                FilePolicy {
                    path: "/etc/myapp".into(),
                    actions: vec![restart("myapp.service")],
                },
                FilePolicy {
                    path: "/etc/myapp/static".into(),
                    actions: vec![P::None],
                },
            ],
            ..Default::default()
        };
        let p = ClusterPolicy::merged(&user);
        assert_eq!(
            p.file_policy("/etc/myapp/static/x").unwrap().path,
            "/etc/myapp/static"
        );
        assert_eq!(p.file_policy("/etc/myapp/conf").unwrap().path, "/etc/myapp");
        assert_eq!(p.file_policy("/etc/myappx").unwrap().path, "/etc");
        assert_eq!(
            p.file_policy("/etc/containers/policy.json").unwrap().path,
            "/etc/containers/policy.json"
        );
        assert!(p.file_policy("/var/x").is_none());
    }

    #[test]
    fn user_entry_replaces_default() {
        let user = NodeDisruptionPolicy {
            files: vec![FilePolicy {
                path: REGISTRIES_CONF.into(),
                actions: vec![P::Drain],
            }],
            units: vec![UnitPolicy {
                name: "iri-registry.service".into(),
                actions: vec![P::None],
            }],
            ssh_key: Some(vec![P::Drain]),
        };
        let p = ClusterPolicy::merged(&user);
        assert_eq!(p.files.len(), ClusterPolicy::default().files.len());
        assert_eq!(
            p.file_policy(REGISTRIES_CONF).unwrap().actions,
            vec![P::Drain]
        );
        assert_eq!(
            p.unit_policy("iri-registry.service").unwrap().actions,
            vec![P::None]
        );
        assert_eq!(evaluate(&p, &[], &[], true).actions, vec![P::Drain]);
    }

    #[test]
    fn collapse_rules() {
        assert_eq!(
            collapse(vec![reload("a.service"), P::Reboot, P::None]),
            vec![P::Reboot]
        );
        assert_eq!(collapse(vec![P::None, P::None]), vec![P::None]);
        assert_eq!(collapse(vec![]), vec![P::None]);
        assert_eq!(
            collapse(vec![P::None, reload("a.service")]),
            vec![reload("a.service")]
        );
        assert_eq!(
            collapse(vec![
                restart("kubelet.service"),
                P::DaemonReload,
                restart("kubelet.service")
            ]),
            vec![P::DaemonReload, restart("kubelet.service")]
        );
        assert_eq!(
            collapse(vec![
                reload("crio.service"),
                P::Drain,
                reload("crio.service")
            ]),
            vec![reload("crio.service"), P::Drain]
        );
        // a file with no policy beside policed ones still reboots
        assert_eq!(
            eval(&["/etc/containers/policy.json", "/etc/motd"]),
            vec![P::Reboot]
        );
    }

    #[test]
    fn legacy_table() {
        assert_eq!(
            legacy(&["/var/lib/kubelet/config.json"], false),
            vec![P::None]
        );
        assert_eq!(legacy(&["/etc/nmstate/openshift/x"], false), vec![P::None]);
        assert_eq!(legacy(&[REGISTRIES_CONF], false), vec![P::Special]);
        assert_eq!(
            legacy(&["/etc/containers/registries.d/x"], false),
            vec![reload("crio.service")]
        );
        assert_eq!(
            legacy(
                &["/etc/pki/ca-trust/source/anchors/openshift-config-user-ca-bundle.crt"],
                false
            ),
            vec![restart("crio.service")]
        );
        assert_eq!(legacy(&["/etc/motd"], false), vec![P::Reboot]);
        assert_eq!(legacy(&[], true), vec![P::Reboot]);
        assert_eq!(legacy(&[], false), vec![P::None]);
    }
}
