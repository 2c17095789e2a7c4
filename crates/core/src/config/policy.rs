//! `operator.openshift.io/v1` MachineConfiguration: node disruption policies and irreconcilable overrides.
//!
//! Validation follows the CRD's rules (service names, standalone Reboot/None, list sizes) so a policy the
//! API server would reject is rejected here too, with the field named.
//!
//! The operator's `status.nodeDisruptionPolicyStatus.clusterPolicies` (its merge of the cluster's
//! defaults with `spec`) is kept too: the MCD takes its policies from there, once
//! `status.observedGeneration` has caught up with `metadata.generation`
//! (`calculatePostConfigChangeNodeDisruptionAction` in MCO `pkg/daemon/update.go`).

use serde::Deserialize;
use serde_json::Value;

use super::InvalidInput;
use super::ignition::check_unit_name;
use super::machineconfig::parse_document;

pub const API_VERSION: &str = "operator.openshift.io/v1";
pub const KIND: &str = "MachineConfiguration";

/// One post-config action of a node disruption policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PolicyAction {
    Reboot,
    Drain,
    None,
    DaemonReload,
    Reload(String),
    Restart(String),
    /// Internal (default for registries.conf): reload crio, drain only for unsafe changes.
    Special,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePolicy {
    pub path: String,
    pub actions: Vec<PolicyAction>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitPolicy {
    pub name: String,
    pub actions: Vec<PolicyAction>,
}

/// `spec.nodeDisruptionPolicy` (user entries, before merging with the defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeDisruptionPolicy {
    pub files: Vec<FilePolicy>,
    pub units: Vec<UnitPolicy>,
    pub ssh_key: Option<Vec<PolicyAction>>,
}

/// Sections of `spec.config.storage` an admin allowed to change (they are reported, not applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageOverride {
    Disks,
    FileSystems,
    Raid,
}

/// `status.nodeDisruptionPolicyStatus.clusterPolicies`: the effective policies as the operator merged
/// them (defaults of the cluster's version + `spec.nodeDisruptionPolicy`). Actions may be `Special`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterPolicies {
    pub files: Vec<FilePolicy>,
    pub units: Vec<UnitPolicy>,
    pub ssh_key: Vec<PolicyAction>,
}

/// What the operator wrote in `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorStatus {
    /// `status.observedGeneration` (0 when absent, as Go's zero value).
    pub observed_generation: i64,
    pub cluster_policies: Option<ClusterPolicies>,
}

/// A validated MachineConfiguration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineConfiguration {
    pub name: String,
    /// `metadata.generation` (0 when absent).
    pub generation: i64,
    pub node_disruption_policy: NodeDisruptionPolicy,
    pub storage_overrides: Vec<StorageOverride>,
    /// `None` when no operator wrote a status.
    pub status: Option<OperatorStatus>,
}

impl MachineConfiguration {
    /// The operator's cluster policies, when it wrote them for this generation of `spec`.
    pub fn current_cluster_policies(&self) -> Option<&ClusterPolicies> {
        let status = self.status.as_ref()?;
        (status.observed_generation == self.generation)
            .then_some(status.cluster_policies.as_ref())
            .flatten()
    }

    /// The operator wrote cluster policies, but for an older generation of `spec`.
    pub fn cluster_policies_stale(&self) -> bool {
        self.status.as_ref().is_some_and(|s| {
            s.cluster_policies.is_some() && s.observed_generation != self.generation
        })
    }

    /// Drop the operator's status: plan with the built-in defaults merged with `spec`.
    pub fn without_status(mut self) -> Self {
        self.status = None;
        self
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: RawMeta,
    #[serde(default)]
    spec: RawSpec,
    #[serde(default)]
    status: Option<RawStatus>,
}

#[derive(Debug, Default, Deserialize)]
struct RawMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    generation: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStatus {
    #[serde(default)]
    observed_generation: Option<i64>,
    #[serde(default)]
    node_disruption_policy_status: Option<RawPolicyStatus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPolicyStatus {
    #[serde(default)]
    cluster_policies: Option<RawPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    #[serde(default)]
    node_disruption_policy: Option<RawPolicy>,
    #[serde(default)]
    irreconcilable_validation_overrides: Option<RawOverrides>,
}

#[derive(Debug, Default, Deserialize)]
struct RawOverrides {
    #[serde(default)]
    storage: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct RawPolicy {
    #[serde(default)]
    files: Option<Vec<RawFilePolicy>>,
    #[serde(default)]
    units: Option<Vec<RawUnitPolicy>>,
    #[serde(default)]
    sshkey: Option<RawSshPolicy>,
}

#[derive(Debug, Deserialize)]
struct RawFilePolicy {
    path: String,
    actions: Vec<RawAction>,
}

#[derive(Debug, Deserialize)]
struct RawUnitPolicy {
    name: String,
    actions: Vec<RawAction>,
}

#[derive(Debug, Deserialize)]
struct RawSshPolicy {
    actions: Vec<RawAction>,
}

#[derive(Debug, Deserialize)]
struct RawAction {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    reload: Option<RawService>,
    #[serde(default)]
    restart: Option<RawService>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawService {
    service_name: String,
}

impl MachineConfiguration {
    pub fn from_slice(bytes: &[u8]) -> Result<Self, InvalidInput> {
        Self::from_value(parse_document(bytes)?)
    }

    pub fn from_value(doc: Value) -> Result<Self, InvalidInput> {
        let raw: Raw = serde_path_to_error::deserialize(&doc).map_err(|e| {
            let path = e.path().to_string();
            InvalidInput::new(
                if path == "." { String::new() } else { path },
                e.into_inner().to_string(),
            )
        })?;
        match raw.api_version.as_deref() {
            Some(API_VERSION) => {}
            other => {
                return Err(InvalidInput::new(
                    "apiVersion",
                    format!("must be {API_VERSION}, got {:?}", other.unwrap_or("")),
                ));
            }
        }
        if raw.kind.as_deref() != Some(KIND) {
            return Err(InvalidInput::new(
                "kind",
                format!(
                    "must be {KIND}, got {:?}",
                    raw.kind.as_deref().unwrap_or("")
                ),
            ));
        }
        let policy = raw.spec.node_disruption_policy.unwrap_or_default();
        let (files, units, ssh_key) = policy_lists(policy, "spec.nodeDisruptionPolicy", 50, false)?;
        let status = match raw.status {
            None => None,
            Some(st) => {
                let cluster_policies = match st
                    .node_disruption_policy_status
                    .and_then(|p| p.cluster_policies)
                {
                    None => None,
                    Some(p) => {
                        let (files, units, ssh_key) = policy_lists(
                            p,
                            "status.nodeDisruptionPolicyStatus.clusterPolicies",
                            100,
                            true,
                        )?;
                        Some(ClusterPolicies {
                            files,
                            units,
                            // The operator always writes sshkey; without it, SSH key changes need nothing.
                            ssh_key: ssh_key.unwrap_or_else(|| vec![PolicyAction::None]),
                        })
                    }
                };
                Some(OperatorStatus {
                    observed_generation: st.observed_generation.unwrap_or(0),
                    cluster_policies,
                })
            }
        };
        let mut storage_overrides = Vec::new();
        let raw_overrides = raw
            .spec
            .irreconcilable_validation_overrides
            .and_then(|o| o.storage)
            .unwrap_or_default();
        for (i, s) in raw_overrides.iter().enumerate() {
            let o = match s.as_str() {
                "Disks" => StorageOverride::Disks,
                "FileSystems" => StorageOverride::FileSystems,
                "Raid" => StorageOverride::Raid,
                other => {
                    return Err(InvalidInput::new(
                        format!("spec.irreconcilableValidationOverrides.storage[{i}]"),
                        format!("must be Disks, FileSystems or Raid, got {other:?}"),
                    ));
                }
            };
            if !storage_overrides.contains(&o) {
                storage_overrides.push(o);
            }
        }
        Ok(MachineConfiguration {
            name: raw.metadata.name.unwrap_or_default(),
            generation: raw.metadata.generation.unwrap_or(0),
            node_disruption_policy: NodeDisruptionPolicy {
                files,
                units,
                ssh_key,
            },
            storage_overrides,
            status,
        })
    }
}

type PolicyLists = (Vec<FilePolicy>, Vec<UnitPolicy>, Option<Vec<PolicyAction>>);

/// Files, units and the SSH key entry of a policy (`spec.nodeDisruptionPolicy`, or the status's
/// `clusterPolicies`, where `Special` is allowed and the lists are longer).
fn policy_lists(
    policy: RawPolicy,
    base: &str,
    max: usize,
    special: bool,
) -> Result<PolicyLists, InvalidInput> {
    let raw_files = policy.files.unwrap_or_default();
    if raw_files.len() > max {
        return Err(InvalidInput::new(
            format!("{base}.files"),
            format!("must have at most {max} entries"),
        ));
    }
    let mut files = Vec::new();
    for (i, f) in raw_files.into_iter().enumerate() {
        let at = format!("{base}.files[{i}]");
        if !f.path.starts_with('/') || f.path.split('/').any(|c| c == "..") {
            return Err(InvalidInput::new(
                format!("{at}.path"),
                format!("must be an absolute path, got {:?}", f.path),
            ));
        }
        if files.iter().any(|p: &FilePolicy| p.path == f.path) {
            return Err(InvalidInput::new(
                format!("{at}.path"),
                format!("duplicate path {:?}", f.path),
            ));
        }
        let actions = actions(f.actions, &format!("{at}.actions"), special)?;
        files.push(FilePolicy {
            path: f.path,
            actions,
        });
    }
    let raw_units = policy.units.unwrap_or_default();
    if raw_units.len() > max {
        return Err(InvalidInput::new(
            format!("{base}.units"),
            format!("must have at most {max} entries"),
        ));
    }
    let mut units = Vec::new();
    for (i, u) in raw_units.into_iter().enumerate() {
        let at = format!("{base}.units[{i}]");
        check_unit_name(&u.name).map_err(|why| InvalidInput::new(format!("{at}.name"), why))?;
        if units.iter().any(|p: &UnitPolicy| p.name == u.name) {
            return Err(InvalidInput::new(
                format!("{at}.name"),
                format!("duplicate unit {:?}", u.name),
            ));
        }
        let actions = actions(u.actions, &format!("{at}.actions"), special)?;
        units.push(UnitPolicy {
            name: u.name,
            actions,
        });
    }
    let ssh_key = match policy.sshkey {
        None => None,
        Some(s) => Some(actions(
            s.actions,
            &format!("{base}.sshkey.actions"),
            special,
        )?),
    };
    Ok((files, units, ssh_key))
}

fn actions(
    raw: Vec<RawAction>,
    field: &str,
    special: bool,
) -> Result<Vec<PolicyAction>, InvalidInput> {
    if raw.is_empty() {
        return Err(InvalidInput::new(field, "must have at least one action"));
    }
    if raw.len() > 10 {
        return Err(InvalidInput::new(field, "must have at most 10 actions"));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, a) in raw.into_iter().enumerate() {
        let at = format!("{field}[{i}]");
        let service = |s: Option<RawService>, key: &str| -> Result<String, InvalidInput> {
            let s = s.ok_or_else(|| {
                InvalidInput::new(
                    format!("{at}.{key}"),
                    format!("is required when type is {}", a.kind),
                )
            })?;
            check_service_name(&s.service_name)
                .map_err(|why| InvalidInput::new(format!("{at}.{key}.serviceName"), why))?;
            Ok(s.service_name)
        };
        let action = match a.kind.as_str() {
            "Reboot" => PolicyAction::Reboot,
            "Drain" => PolicyAction::Drain,
            "None" => PolicyAction::None,
            "DaemonReload" => PolicyAction::DaemonReload,
            "Reload" => PolicyAction::Reload(service(a.reload, "reload")?),
            "Restart" => PolicyAction::Restart(service(a.restart, "restart")?),
            // Only the operator's status uses it (NodeDisruptionPolicyStatusActionType).
            "Special" if special => PolicyAction::Special,
            other => {
                return Err(InvalidInput::new(
                    format!("{at}.type"),
                    format!(
                        "must be one of Reboot, Drain, Reload, Restart, DaemonReload, None; got {other:?}"
                    ),
                ));
            }
        };
        out.push(action);
    }
    if out.len() > 1 && out.contains(&PolicyAction::Reboot) {
        return Err(InvalidInput::new(
            field,
            "Reboot action can only be specified standalone",
        ));
    }
    if out.len() > 1 && out.contains(&PolicyAction::None) {
        return Err(InvalidInput::new(
            field,
            "None action can only be specified standalone",
        ));
    }
    Ok(out)
}

/// The CRD's rule for `serviceName`: `NAME.SERVICETYPE`, at most 255 characters.
fn check_service_name(name: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err("must be at most 255 characters".into());
    }
    check_unit_name(name).map_err(|_| {
        format!("{name:?} is invalid: expected NAME.SERVICETYPE, e.g. crio.service (letters, digits, ':', '-', '_', '.', '\\')")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "apiVersion: operator.openshift.io/v1\nkind: MachineConfiguration\nmetadata:\n  name: cluster\n";

    fn parse(body: &str) -> Result<MachineConfiguration, String> {
        MachineConfiguration::from_slice(format!("{HEAD}{body}").as_bytes())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn full_policy() {
        let mc = parse(
            "spec:\n  nodeDisruptionPolicy:\n    files:\n    - path: /etc/chrony.conf\n      actions:\n      - type: Restart\n        restart:\n          serviceName: chronyd.service\n    units:\n    - name: foo.service\n      actions:\n      - type: DaemonReload\n      - type: Reload\n        reload:\n          serviceName: foo.service\n    sshkey:\n      actions:\n      - type: Drain\n  irreconcilableValidationOverrides:\n    storage: [Disks, Raid]\n",
        )
        .unwrap();
        assert_eq!(mc.name, "cluster");
        let p = &mc.node_disruption_policy;
        assert_eq!(
            p.files[0].actions,
            vec![PolicyAction::Restart("chronyd.service".into())]
        );
        assert_eq!(
            p.units[0].actions,
            vec![
                PolicyAction::DaemonReload,
                PolicyAction::Reload("foo.service".into())
            ]
        );
        assert_eq!(p.ssh_key, Some(vec![PolicyAction::Drain]));
        assert_eq!(
            mc.storage_overrides,
            vec![StorageOverride::Disks, StorageOverride::Raid]
        );
        // An empty spec is a valid "no user policy".
        assert_eq!(
            parse("spec: {}\n").unwrap().node_disruption_policy,
            NodeDisruptionPolicy::default()
        );
    }

    #[test]
    fn operator_status() {
        let mc = parse(
            "  generation: 4\nspec: {}\nstatus:\n  observedGeneration: 3\n  nodeDisruptionPolicyStatus:\n    clusterPolicies:\n      files:\n      - path: /etc/containers/registries.conf\n        actions: [{type: Special}]\n      units:\n      - name: kubelet.service\n        actions: [{type: Restart, restart: {serviceName: kubelet.service}}]\n      sshkey:\n        actions: [{type: None}]\n",
        )
        .unwrap();
        assert_eq!(mc.generation, 4);
        let status = mc.status.as_ref().unwrap();
        assert_eq!(status.observed_generation, 3);
        let cp = status.cluster_policies.as_ref().unwrap();
        assert_eq!(cp.files[0].actions, vec![PolicyAction::Special]);
        assert_eq!(
            cp.units[0].actions,
            vec![PolicyAction::Restart("kubelet.service".into())]
        );
        assert!(mc.cluster_policies_stale());
        assert_eq!(mc.current_cluster_policies(), None);
        assert!(mc.clone().without_status().status.is_none());
        // Special is the operator's: a user cannot ask for it in spec.
        let e = parse("spec:\n  nodeDisruptionPolicy:\n    files:\n    - path: /etc/x\n      actions: [{type: Special}]\n")
            .unwrap_err();
        assert!(
            e.starts_with("spec.nodeDisruptionPolicy.files[0].actions[0].type: must be one of"),
            "{e}"
        );
        let e = parse("status:\n  nodeDisruptionPolicyStatus:\n    clusterPolicies:\n      units:\n      - name: x\n        actions: [{type: None}]\n")
            .unwrap_err();
        assert!(
            e.starts_with("status.nodeDisruptionPolicyStatus.clusterPolicies.units[0].name:"),
            "{e}"
        );
    }

    #[test]
    fn invalid_policies_name_the_field() {
        let p = |files: &str| {
            parse(&format!(
                "spec:\n  nodeDisruptionPolicy:\n    files:\n{files}"
            ))
        };
        let cases = [
            (
                "    - path: /etc/x\n      actions:\n      - type: Reload\n",
                "spec.nodeDisruptionPolicy.files[0].actions[0].reload: is required when type is Reload",
            ),
            (
                "    - path: /etc/x\n      actions:\n      - type: Restart\n        restart:\n          serviceName: crio\n",
                "spec.nodeDisruptionPolicy.files[0].actions[0].restart.serviceName: \"crio\" is invalid",
            ),
            (
                "    - path: /etc/x\n      actions:\n      - type: Reboot\n      - type: Drain\n",
                "spec.nodeDisruptionPolicy.files[0].actions: Reboot action can only be specified standalone",
            ),
            (
                "    - path: /etc/x\n      actions:\n      - type: None\n      - type: Drain\n",
                "spec.nodeDisruptionPolicy.files[0].actions: None action can only be specified standalone",
            ),
            (
                "    - path: /etc/x\n      actions:\n      - type: Explode\n",
                "spec.nodeDisruptionPolicy.files[0].actions[0].type: must be one of",
            ),
            (
                "    - path: etc/x\n      actions:\n      - type: None\n",
                "spec.nodeDisruptionPolicy.files[0].path: must be an absolute path",
            ),
            (
                "    - path: /etc/x\n      actions: []\n",
                "spec.nodeDisruptionPolicy.files[0].actions: must have at least one action",
            ),
            (
                "    - path: /etc/x\n",
                "spec.nodeDisruptionPolicy.files[0]: missing field `actions`",
            ),
        ];
        for (files, want) in cases {
            let e = p(files).unwrap_err();
            assert!(e.starts_with(want), "got {e:?}, want {want:?}");
        }
        assert!(
            parse("spec:\n  irreconcilableValidationOverrides:\n    storage: [Links]\n")
                .unwrap_err()
                .contains("must be Disks")
        );
        assert!(
            MachineConfiguration::from_slice(b"apiVersion: v1\nkind: MachineConfiguration\n")
                .unwrap_err()
                .to_string()
                .starts_with("apiVersion:")
        );
        assert!(
            MachineConfiguration::from_slice(
                b"apiVersion: operator.openshift.io/v1\nkind: MachineConfig\n"
            )
            .unwrap_err()
            .to_string()
            .starts_with("kind:")
        );
    }
}
