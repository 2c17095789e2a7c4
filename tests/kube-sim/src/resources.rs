//! The resource types kube-sim serves: built-in ones described by hand, custom ones read from the
//! openshift/api CRDs shipped in `crds/`.

use std::sync::Arc;

use serde_json::Value;

use crate::status::ResourceName;

const MCN_DEFAULT: &str = include_str!(
    "../crds/0000_80_machine-config_01_machineconfignodes-SelfManagedHA-Default.crd.yaml"
);
const MCN_TECH_PREVIEW: &str = include_str!(
    "../crds/techpreview/0000_80_machine-config_01_machineconfignodes-SelfManagedHA-TechPreviewNoUpgrade.crd.yaml"
);

/// The CRDs served with every feature set; the MachineConfigNode one depends on it.
const CRDS: &[&str] = &[
    include_str!("../crds/0000_80_machine-config_01_machineconfigs.crd.yaml"),
    include_str!("../crds/0000_80_machine-config_01_machineconfigpools.crd.yaml"),
    include_str!("../crds/0000_80_machine-config_01_machineconfigurations.crd.yaml"),
    include_str!("../crds/0000_80_machine-config_01_controllerconfigs-Default.crd.yaml"),
];

/// The cluster's feature set, which decides which variant of a CRD is installed (openshift/api ships
/// one manifest per feature set, annotated `release.openshift.io/feature-set`). Only the
/// MachineConfigNode CRD differs among the ones kube-sim serves: TechPreviewNoUpgrade adds
/// `spec.configImage` and `status.configImage` (feature gate ImageModeStatusReporting).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FeatureSet {
    #[default]
    Default,
    TechPreviewNoUpgrade,
}

impl std::str::FromStr for FeatureSet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "Default" => Ok(FeatureSet::Default),
            "TechPreviewNoUpgrade" => Ok(FeatureSet::TechPreviewNoUpgrade),
            other => Err(format!(
                "unknown feature set {other:?} (Default or TechPreviewNoUpgrade)"
            )),
        }
    }
}

/// What a custom resource brings along from its CRD.
#[derive(Debug)]
pub struct CustomInfo {
    /// `openAPIV3Schema` of the served version.
    pub schema: Value,
    /// `additionalPrinterColumns`.
    pub printer_columns: Vec<Value>,
}

#[derive(Debug)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Subresources other than `status` that answer (e.g. `eviction` on pods).
    pub has_status: bool,
    pub has_eviction: bool,
    /// Several types can share one storage (core/v1 and events.k8s.io/v1 Events).
    pub storage: String,
    /// Whether `metadata.generation` is maintained (bumped on spec changes).
    pub has_generation: bool,
    pub custom: Option<CustomInfo>,
    pub storage_version_hash: String,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub fn is_custom(&self) -> bool {
        self.custom.is_some()
    }

    pub fn name(&self) -> ResourceName<'_> {
        ResourceName {
            plural: &self.plural,
            group: &self.group,
        }
    }

    /// `nodes`, `poddisruptionbudgets.policy`: the key used in counters.
    pub fn qualified(&self) -> String {
        self.name().qualified()
    }

    /// Verbs in the order the real server lists them (CRDs use a different, unsorted order).
    pub fn verbs(&self) -> Vec<&'static str> {
        if self.is_custom() {
            vec![
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "create",
                "update",
                "watch",
            ]
        } else if self.plural == "namespaces" {
            vec![
                "create", "delete", "get", "list", "patch", "update", "watch",
            ]
        } else {
            vec![
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        }
    }
}

/// Every type kube-sim serves.
#[derive(Debug, Clone)]
pub struct Registry {
    pub types: Vec<Arc<ResourceType>>,
    /// The CustomResourceDefinition objects behind the custom types, as installed (served read-only
    /// under apiextensions.k8s.io/v1).
    pub crds: Vec<Value>,
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    categories: &'static [&'static str],
    status: bool,
    storage: &'static str,
    generation: bool,
    hash: &'static str,
}

const BUILTINS: &[Builtin] = &[
    Builtin {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short: &["ev"],
        categories: &[],
        status: false,
        storage: "events",
        generation: false,
        hash: "r2yiGXH7wu8=",
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short: &["ns"],
        categories: &[],
        status: true,
        storage: "namespaces",
        generation: false,
        hash: "Q3oi5N2YM8M=",
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short: &["no"],
        categories: &[],
        status: true,
        storage: "nodes",
        generation: false,
        hash: "XwShjMxG9Fs=",
    },
    Builtin {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short: &["po"],
        categories: &["all"],
        status: true,
        storage: "pods",
        generation: false,
        hash: "xPOwRZ+Yhw8=",
    },
    Builtin {
        group: "apps",
        version: "v1",
        plural: "daemonsets",
        singular: "daemonset",
        kind: "DaemonSet",
        namespaced: true,
        short: &["ds"],
        categories: &["all"],
        status: true,
        storage: "daemonsets.apps",
        generation: true,
        hash: "dd7pWHUlMKQ=",
    },
    Builtin {
        group: "apps",
        version: "v1",
        plural: "replicasets",
        singular: "replicaset",
        kind: "ReplicaSet",
        namespaced: true,
        short: &["rs"],
        categories: &["all"],
        status: true,
        storage: "replicasets.apps",
        generation: true,
        hash: "P1RzHs8/mWQ=",
    },
    Builtin {
        group: "apps",
        version: "v1",
        plural: "statefulsets",
        singular: "statefulset",
        kind: "StatefulSet",
        namespaced: true,
        short: &["sts"],
        categories: &["all"],
        status: true,
        storage: "statefulsets.apps",
        generation: true,
        hash: "H+vl74LkKdo=",
    },
    Builtin {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short: &["ev"],
        categories: &[],
        status: false,
        storage: "events",
        generation: false,
        hash: "r2yiGXH7wu8=",
    },
    // Read-only here: the served custom types come from the embedded CRDs (see `FeatureSet`).
    Builtin {
        group: "apiextensions.k8s.io",
        version: "v1",
        plural: "customresourcedefinitions",
        singular: "customresourcedefinition",
        kind: "CustomResourceDefinition",
        namespaced: false,
        short: &["crd", "crds"],
        categories: &["api-extensions"],
        status: true,
        storage: "customresourcedefinitions.apiextensions.k8s.io",
        generation: true,
        hash: "",
    },
    Builtin {
        group: "policy",
        version: "v1",
        plural: "poddisruptionbudgets",
        singular: "poddisruptionbudget",
        kind: "PodDisruptionBudget",
        namespaced: true,
        short: &["pdb"],
        categories: &[],
        status: true,
        storage: "poddisruptionbudgets.policy",
        generation: true,
        hash: "EVWiDmWqyJw=",
    },
];

impl Registry {
    pub fn new() -> Self {
        Self::with_feature_set(FeatureSet::Default)
    }

    pub fn with_feature_set(feature_set: FeatureSet) -> Self {
        let mut types: Vec<Arc<ResourceType>> = BUILTINS
            .iter()
            .map(|b| {
                Arc::new(ResourceType {
                    group: b.group.into(),
                    version: b.version.into(),
                    plural: b.plural.into(),
                    singular: b.singular.into(),
                    kind: b.kind.into(),
                    namespaced: b.namespaced,
                    short_names: b.short.iter().map(|s| s.to_string()).collect(),
                    categories: b.categories.iter().map(|s| s.to_string()).collect(),
                    has_status: b.status,
                    has_eviction: b.plural == "pods",
                    storage: b.storage.into(),
                    has_generation: b.generation,
                    custom: None,
                    storage_version_hash: b.hash.into(),
                })
            })
            .collect();
        let mcn = match feature_set {
            FeatureSet::Default => MCN_DEFAULT,
            FeatureSet::TechPreviewNoUpgrade => MCN_TECH_PREVIEW,
        };
        let mut crds = Vec::new();
        for text in [CRDS[0], mcn].iter().chain(&CRDS[1..]) {
            let crd: Value = serde_yaml::from_str(text).expect("embedded CRD parses");
            types.push(Arc::new(parse_crd(&crd).expect("embedded CRD parses")));
            crds.push(crd);
        }
        Registry { types, crds }
    }

    /// Look a type up by its URL coordinates.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    /// The type whose `kind`/`apiVersion` an object declares (for loading YAML files).
    pub fn find_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.api_version() == api_version && t.kind == kind)
            .cloned()
    }

    /// Groups in the order they are listed by discovery (core group excluded).
    pub fn groups(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for t in &self.types {
            if !t.group.is_empty() && !out.contains(&t.group) {
                out.push(t.group.clone());
            }
        }
        out
    }

    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<ResourceType>> {
        self.types
            .iter()
            .filter(|t| t.group == group && t.version == version)
            .cloned()
            .collect()
    }

    pub fn versions_of(&self, group: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for t in &self.types {
            if t.group == group && !out.contains(&t.version) {
                out.push(t.version.clone());
            }
        }
        out
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

/// A CRD as the API server stores it once installed: its manifest plus the status the
/// apiextensions controllers write (names accepted, established, the stored version).
pub fn installed_crd(crd: &Value) -> Value {
    let mut obj = crd.clone();
    let storage: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .filter(|v| v["storage"] == Value::Bool(true))
                .map(|v| v["name"].clone())
                .collect()
        })
        .unwrap_or_default();
    obj["status"] = serde_json::json!({
        "acceptedNames": crd["spec"]["names"].clone(),
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": "1970-01-01T00:00:00Z"},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": "1970-01-01T00:00:00Z"},
        ],
        "storedVersions": storage,
    });
    obj
}

fn parse_crd(crd: &Value) -> anyhow::Result<ResourceType> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let version = spec["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["storage"] == Value::Bool(true)))
        .ok_or_else(|| anyhow::anyhow!("CRD without a storage version"))?;
    let str_list = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let group = spec["group"].as_str().unwrap_or_default().to_string();
    let plural = names["plural"].as_str().unwrap_or_default().to_string();
    Ok(ResourceType {
        storage: format!("{plural}.{group}"),
        group,
        version: version["name"].as_str().unwrap_or("v1").to_string(),
        singular: names["singular"].as_str().unwrap_or_default().to_string(),
        kind: names["kind"].as_str().unwrap_or_default().to_string(),
        namespaced: spec["scope"] == "Namespaced",
        short_names: str_list(&names["shortNames"]),
        categories: str_list(&names["categories"]),
        has_status: version["subresources"]["status"].is_object(),
        has_eviction: false,
        has_generation: true,
        custom: Some(CustomInfo {
            schema: version["schema"]["openAPIV3Schema"].clone(),
            printer_columns: version["additionalPrinterColumns"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        }),
        storage_version_hash: match plural.as_str() {
            "machineconfigs" => "BDX8m3QUIEc=".into(),
            "machineconfignodes" => "YYA98FKMxhE=".into(),
            _ => String::new(),
        },
        plural,
    })
}
