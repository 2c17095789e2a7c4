//! The Kubernetes manifests in packaging/manifests grant machine-config-daemon exactly what its code
//! uses, and nothing broader.
//!
//! [`API_ACCESS`] is the one list of every API request `src/cluster` makes. It is checked from both
//! sides:
//! - against the code: the real client (`KubeCluster`, through the daemon's own drain, annotation,
//!   MachineConfigNode and watch code) runs against kube-sim, which logs every request; the requests
//!   of each drain mode must be exactly the list's entries for that mode. A [`Cluster`] method added
//!   to the trait fails to compile here (see [`Recording`]) until it is exercised and listed;
//! - against the manifests: an RBAC evaluator (rules, resourceNames, Role vs ClusterRole scope)
//!   checks every identity and mode the manifests support, and that no rule grants anything not in
//!   the list (no `*`, no extra verb, no cluster-wide grant of a namespaced need).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use kube_sim::{KubeSim, SimOptions};
use machine_config_daemon::cluster::annotations::{DESIRED_DRAIN, LAST_APPLIED_DRAIN, NodeState};
use machine_config_daemon::cluster::{
    AnnotationWriter, Cluster, Credentials, DrainOptions, Drainer, EventReason, Eviction,
    KubeCluster, McnWriter, NodeEvent, connect, watch_controller_config, watch_node,
};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Modes {
    /// Both drain modes.
    Both,
    /// Only when the daemon drains by itself (`self` mode).
    SelfDrain,
}

/// One kind of request: verb, API group, resource (with subresource), and its scope.
#[derive(Debug, Clone, Copy)]
struct Access {
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    /// The namespace of a namespaced request; `None`: cluster-scoped, or across all namespaces.
    namespace: Option<&'static str>,
    /// The only object name the daemon ever asks for, if there is one.
    name: Option<&'static str>,
    modes: Modes,
    /// Where in src/cluster the request is made.
    #[allow(dead_code)]
    by: &'static str,
}

const MCO: &str = "machineconfiguration.openshift.io";

/// Every API request of machine-config-daemon, read from src/cluster (the `Cluster` trait and
/// `watch_node`). Node annotation writes use the same identity as everything else.
const API_ACCESS: &[Access] = &[
    Access {
        verb: "get",
        group: "",
        resource: "nodes",
        namespace: None,
        name: None,
        modes: Modes::Both,
        by: "Cluster::get_node (before a drain; polling lastAppliedDrain in controller mode)",
    },
    Access {
        verb: "list",
        group: "",
        resource: "nodes",
        namespace: None,
        name: None,
        modes: Modes::Both,
        by: "watch_node: the watcher's LIST, fieldSelector metadata.name=<node>",
    },
    Access {
        verb: "watch",
        group: "",
        resource: "nodes",
        namespace: None,
        name: None,
        modes: Modes::Both,
        by: "watch_node: the WATCH after the LIST",
    },
    Access {
        verb: "patch",
        group: "",
        resource: "nodes",
        namespace: None,
        name: None,
        modes: Modes::Both,
        by: "patch_node_annotations (merge patch); set_unschedulable (cordon, self mode)",
    },
    Access {
        verb: "get",
        group: MCO,
        resource: "machineconfigs",
        namespace: None,
        name: None,
        modes: Modes::Both,
        by: "get_machine_config (the rendered config named by desiredConfig)",
    },
    Access {
        verb: "get",
        group: "operator.openshift.io",
        resource: "machineconfigurations",
        namespace: None,
        name: Some("cluster"),
        modes: Modes::Both,
        by: "get_machine_configuration",
    },
    Access {
        verb: "get",
        group: MCO,
        resource: "machineconfignodes",
        namespace: None,
        name: None,
        modes: Modes::Both,
        by: "get_machine_config_node; create_machine_config_node after a 409",
    },
    Access {
        verb: "create",
        group: MCO,
        resource: "machineconfignodes",
        namespace: None,
        name: None,
        modes: Modes::Both,
        by: "create_machine_config_node",
    },
    Access {
        verb: "patch",
        group: MCO,
        resource: "machineconfignodes",
        namespace: None,
        name: None,
        modes: Modes::Both,
        by: "apply_machine_config_node_spec (server-side apply of spec: desired config and image)",
    },
    Access {
        verb: "get",
        group: "apiextensions.k8s.io",
        resource: "customresourcedefinitions",
        namespace: None,
        name: Some("machineconfignodes.machineconfiguration.openshift.io"),
        modes: Modes::Both,
        by: "get_custom_resource_definition (which MachineConfigNode schema is served)",
    },
    Access {
        verb: "list",
        group: MCO,
        resource: "controllerconfigs",
        namespace: None,
        name: Some("machine-config-controller"),
        modes: Modes::Both,
        by: "watch_controller_config: the watcher's LIST, fieldSelector metadata.name=machine-config-controller",
    },
    Access {
        verb: "watch",
        group: MCO,
        resource: "controllerconfigs",
        namespace: None,
        name: Some("machine-config-controller"),
        modes: Modes::Both,
        by: "watch_controller_config: the WATCH after the LIST",
    },
    Access {
        verb: "patch",
        group: MCO,
        resource: "machineconfignodes/status",
        namespace: None,
        name: None,
        modes: Modes::Both,
        by: "apply_machine_config_node_status (server-side apply)",
    },
    Access {
        verb: "create",
        group: "",
        resource: "events",
        namespace: Some("default"),
        name: None,
        modes: Modes::Both,
        by: "emit_event (events about the node live in \"default\")",
    },
    Access {
        verb: "list",
        group: "",
        resource: "pods",
        namespace: None,
        name: None,
        modes: Modes::SelfDrain,
        by: "list_pods_on_node (fieldSelector spec.nodeName=<node>, all namespaces)",
    },
    Access {
        verb: "get",
        group: "",
        resource: "pods",
        namespace: None,
        name: None,
        modes: Modes::SelfDrain,
        by: "get_pod (any namespace)",
    },
    Access {
        verb: "create",
        group: "",
        resource: "pods/eviction",
        namespace: None,
        name: None,
        modes: Modes::SelfDrain,
        by: "evict_pod (any namespace)",
    },
];

/// What the Node authorizer grants a kubelet identity (`NodeRules()` in Kubernetes'
/// `plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go`), restricted to what this daemon
/// uses; NodeRestriction then limits node writes to its own Node and evictions to its own pods.
const NODE_AUTHORIZER: &[(&str, &str, &str)] = &[
    ("get", "", "nodes"),
    ("list", "", "nodes"),
    ("watch", "", "nodes"),
    ("patch", "", "nodes"),
    ("get", "", "pods"),
    ("list", "", "pods"),
    ("create", "", "pods/eviction"),
    ("create", "", "events"),
];

fn needed(mode: Modes) -> Vec<Access> {
    API_ACCESS
        .iter()
        .filter(|a| a.modes == Modes::Both || mode == Modes::SelfDrain)
        .copied()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The manifests, parsed into the Kubernetes API types.

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

/// Every object of a file, in order.
fn objects(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Parse `obj` as `T` and make sure nothing was lost on the way: a misspelt field (which the API
/// server would drop or reject) fails here.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(obj: &Value, file: &str) -> T {
    let t: T = serde_json::from_value(obj.clone())
        .unwrap_or_else(|e| panic!("{file}: {} is not valid: {e}", obj["kind"]));
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(
        &back, obj,
        "{file}: {} {} has fields the API does not know",
        obj["kind"], obj["metadata"]["name"]
    );
    t
}

#[derive(Default)]
struct Rbac {
    cluster_roles: BTreeMap<String, ClusterRole>,
    roles: BTreeMap<(String, String), Role>,
    cluster_bindings: Vec<ClusterRoleBinding>,
    bindings: Vec<RoleBinding>,
}

impl Rbac {
    fn load(files: &[&str]) -> Rbac {
        let mut rbac = Rbac::default();
        for file in files {
            for obj in objects(&manifests_dir().join(file)) {
                match obj["kind"].as_str().unwrap() {
                    "ClusterRole" => {
                        let r: ClusterRole = typed(&obj, file);
                        rbac.cluster_roles
                            .insert(r.metadata.name.clone().unwrap(), r);
                    }
                    "Role" => {
                        let r: Role = typed(&obj, file);
                        let key = (
                            r.metadata
                                .namespace
                                .clone()
                                .expect("a Role has a namespace"),
                            r.metadata.name.clone().unwrap(),
                        );
                        rbac.roles.insert(key, r);
                    }
                    "ClusterRoleBinding" => rbac.cluster_bindings.push(typed(&obj, file)),
                    "RoleBinding" => rbac.bindings.push(typed(&obj, file)),
                    "Namespace" => drop(typed::<Namespace>(&obj, file)),
                    "ServiceAccount" => drop(typed::<ServiceAccount>(&obj, file)),
                    other => panic!("{file}: unexpected kind {other}"),
                }
            }
        }
        rbac
    }

    /// Every (rule, namespace the grant is limited to) bound to `subject`.
    fn grants(&self, subject: &Subject) -> Vec<(PolicyRule, Option<String>)> {
        let mut out = Vec::new();
        for b in &self.cluster_bindings {
            if !b.subjects.iter().flatten().any(|s| subject.is(s)) {
                continue;
            }
            assert_eq!(b.role_ref.kind, "ClusterRole");
            let role = self
                .cluster_roles
                .get(&b.role_ref.name)
                .unwrap_or_else(|| panic!("binding to missing ClusterRole {}", b.role_ref.name));
            for r in role.rules.iter().flatten() {
                out.push((r.clone(), None));
            }
        }
        for b in &self.bindings {
            if !b.subjects.iter().flatten().any(|s| subject.is(s)) {
                continue;
            }
            let ns = b
                .metadata
                .namespace
                .clone()
                .expect("a RoleBinding has a namespace");
            let rules = match b.role_ref.kind.as_str() {
                "Role" => self.roles[&(ns.clone(), b.role_ref.name.clone())]
                    .rules
                    .clone(),
                _ => self.cluster_roles[&b.role_ref.name].rules.clone(),
            };
            for r in rules.into_iter().flatten() {
                out.push((r, Some(ns.clone())));
            }
        }
        out
    }

    /// Whether RBAC allows `a` to `subject` (with `a`'s fixed name, if it has one).
    fn allows(&self, subject: &Subject, a: &Access) -> bool {
        self.grants(subject)
            .iter()
            .any(|(rule, scope)| rule_allows(rule, scope.as_deref(), a))
    }
}

fn rule_allows(rule: &PolicyRule, scope: Option<&str>, a: &Access) -> bool {
    let has = |list: &Option<Vec<String>>, v: &str| list.iter().flatten().any(|x| x == v);
    let names_ok = match &rule.resource_names {
        None => true,
        Some(n) if n.is_empty() => true,
        Some(n) => a.name.is_some_and(|name| n.iter().any(|x| x == name)),
    };
    let scope_ok = match scope {
        None => true,
        Some(ns) => a.namespace == Some(ns),
    };
    has(&rule.api_groups, a.group)
        && has(&rule.resources, a.resource)
        && rule.verbs.iter().any(|v| v == a.verb)
        && names_ok
        && scope_ok
}

enum Subject {
    ServiceAccount { namespace: String, name: String },
    Group(String),
}

impl Subject {
    fn is(&self, s: &k8s_openapi::api::rbac::v1::Subject) -> bool {
        match self {
            Subject::ServiceAccount { namespace, name } => {
                s.kind == "ServiceAccount"
                    && &s.name == name
                    && s.namespace.as_deref() == Some(namespace)
            }
            Subject::Group(g) => s.kind == "Group" && &s.name == g,
        }
    }
}

/// Nothing broader than the list: every (verb, group, resource) a rule bound to `subject` grants is
/// one of `allowed`, as narrow in namespace and name.
fn assert_nothing_broader(rbac: &Rbac, subject: &Subject, allowed: &[Access], what: &str) {
    for (rule, scope) in rbac.grants(subject) {
        assert!(
            rule.non_resource_urls.as_ref().is_none_or(|u| u.is_empty()),
            "{what}: non-resource URLs granted"
        );
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    for word in [group, resource, verb] {
                        assert!(!word.contains('*'), "{what}: wildcard in {rule:?}");
                    }
                    let need = allowed
                        .iter()
                        .find(|a| a.verb == verb && a.group == group && a.resource == resource)
                        .unwrap_or_else(|| {
                            panic!("{what}: grants {verb} {resource} ({group:?}), which the daemon never does")
                        });
                    if let Some(ns) = need.namespace {
                        assert_eq!(
                            scope.as_deref(),
                            Some(ns),
                            "{what}: {verb} {resource} is only needed in namespace {ns}, granted wider"
                        );
                    }
                    if let Some(name) = need.name {
                        assert_eq!(
                            rule.resource_names.as_deref(),
                            Some(&[name.to_string()][..]),
                            "{what}: {verb} {resource} is only needed for {name:?}"
                        );
                    }
                }
            }
        }
    }
}

fn service_account() -> Subject {
    Subject::ServiceAccount {
        namespace: "machine-config-daemon".into(),
        name: "machine-config-daemon".into(),
    }
}

#[test]
fn service_account_controller_mode_gets_exactly_what_it_uses() {
    let rbac = Rbac::load(&["rbac-roles.yaml", "rbac-serviceaccount.yaml"]);
    let sa = service_account();
    let need = needed(Modes::Both);
    for a in &need {
        assert!(rbac.allows(&sa, a), "controller mode lacks {a:?}");
    }
    for a in API_ACCESS.iter().filter(|a| a.modes == Modes::SelfDrain) {
        assert!(!rbac.allows(&sa, a), "controller mode needs no {a:?}");
    }
    assert_nothing_broader(&rbac, &sa, &need, "service account, controller mode");
}

#[test]
fn service_account_self_drain_gets_exactly_what_it_uses() {
    let rbac = Rbac::load(&[
        "rbac-roles.yaml",
        "rbac-serviceaccount.yaml",
        "rbac-serviceaccount-self-drain.yaml",
    ]);
    let sa = service_account();
    let need = needed(Modes::SelfDrain);
    for a in &need {
        assert!(rbac.allows(&sa, a), "self-drain mode lacks {a:?}");
    }
    assert_nothing_broader(&rbac, &sa, &need, "service account, self-drain mode");
    // Events only in "default", not in another namespace.
    let elsewhere = Access {
        namespace: Some("kube-system"),
        ..API_ACCESS
            .iter()
            .find(|a| a.resource == "events")
            .copied()
            .unwrap()
    };
    assert!(!rbac.allows(&sa, &elsewhere));
}

#[test]
fn kubelet_identity_gets_the_rest_from_the_node_authorizer() {
    let rbac = Rbac::load(&["rbac-roles.yaml", "rbac-nodes.yaml"]);
    let nodes = Subject::Group("system:nodes".into());
    let by_node_authorizer = |a: &Access| {
        NODE_AUTHORIZER
            .iter()
            .any(|(v, g, r)| *v == a.verb && *g == a.group && *r == a.resource)
    };
    for a in needed(Modes::SelfDrain) {
        assert!(
            by_node_authorizer(&a) || rbac.allows(&nodes, &a),
            "the kubelet identity lacks {a:?}"
        );
    }
    // RBAC adds only what the Node authorizer does not give.
    let rbac_part: Vec<Access> = API_ACCESS
        .iter()
        .filter(|a| !by_node_authorizer(a))
        .copied()
        .collect();
    assert_nothing_broader(&rbac, &nodes, &rbac_part, "group system:nodes");
}

#[test]
fn manifests_have_no_wildcards_and_round_trip_the_api_types() {
    for file in [
        "rbac-roles.yaml",
        "rbac-nodes.yaml",
        "rbac-serviceaccount.yaml",
        "rbac-serviceaccount-self-drain.yaml",
    ] {
        let text = std::fs::read_to_string(manifests_dir().join(file)).unwrap();
        let rbac = Rbac::load(&[file]);
        for role in rbac.cluster_roles.values() {
            for r in role.rules.iter().flatten() {
                let words = r.verbs.iter().chain(r.resources.iter().flatten());
                for w in words.chain(r.api_groups.iter().flatten()) {
                    assert!(!w.contains('*'), "{file}: wildcard {w}");
                }
            }
        }
        assert!(!text.contains("'*'") && !text.contains("\"*\""), "{file}");
    }
    // Every file of the directory is one of the above or the example.
    let mut files: Vec<String> = std::fs::read_dir(manifests_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "examples",
            "rbac-nodes.yaml",
            "rbac-roles.yaml",
            "rbac-serviceaccount-self-drain.yaml",
            "rbac-serviceaccount.yaml"
        ]
    );
}

#[test]
fn example_daemonset_matches_the_mcd_deployment() {
    let objs = objects(&manifests_dir().join("examples/daemonset.yaml"));
    assert_eq!(objs.len(), 1);
    let ds: DaemonSet = typed(&objs[0], "examples/daemonset.yaml");
    let spec = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(spec.host_pid, Some(true));
    assert_eq!(spec.termination_grace_period_seconds, Some(600));
    assert_eq!(
        spec.service_account_name.as_deref(),
        Some("machine-config-daemon")
    );
    assert_eq!(
        ds.metadata.namespace.as_deref(),
        Some("machine-config-daemon"),
        "the ServiceAccount's namespace"
    );
    let c = &spec.containers[0];
    assert_eq!(
        c.security_context.as_ref().and_then(|s| s.privileged),
        Some(true)
    );
    let node_name = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NODE_NAME")
        .expect("NODE_NAME is set");
    assert_eq!(
        node_name
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str()),
        Some("spec.nodeName"),
        "NODE_NAME comes from the downward API"
    );
    let root = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.host_path.as_ref().is_some_and(|h| h.path == "/"))
        .expect("the host's / is mounted");
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == root.name)
        .expect("and used by the container");
    assert_eq!(mount.mount_path, "/rootfs");

    // Once the daemon has a `start` command, the example's command line must be one it accepts,
    // with the pod's environment (an option clap reads from a variable the pod sets is given).
    let cmd = docgen::command();
    let args: Vec<String> = c.args.clone().unwrap_or_default();
    if let Some(sub) = cmd.find_subcommand(&args[0]) {
        let pod_env: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        let mut argv = vec![docgen::BIN.to_string()];
        argv.extend(args.iter().cloned());
        for arg in sub.get_arguments() {
            let from_pod = arg
                .get_env()
                .is_some_and(|v| pod_env.iter().any(|e| v == *e));
            if let (true, Some(long)) = (from_pod, arg.get_long()) {
                argv.extend([format!("--{long}"), "value-from-the-pod".to_string()]);
            }
        }
        if let Err(e) = cmd.clone().try_get_matches_from(argv) {
            panic!(
                "examples/daemonset.yaml: `{}` is rejected:\n{e}",
                args.join(" ")
            );
        }
    } else {
        eprintln!(
            "note: the CLI has no `{}` command yet; the DaemonSet's arguments are not checked",
            args[0]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The code side: every request the real client makes, per drain mode.

/// Delegates every [`Cluster`] method to the real client and records which ran. A method added to
/// the trait is a compile error here: exercise it in the flows below and list what it requests in
/// [`API_ACCESS`] (and the manifests).
struct Recording {
    inner: KubeCluster,
    called: Mutex<BTreeSet<&'static str>>,
}

const CLUSTER_METHODS: &[&str] = &[
    "get_node",
    "patch_node_annotations",
    "set_unschedulable",
    "get_machine_config",
    "get_machine_configuration",
    "list_pods_on_node",
    "get_pod",
    "evict_pod",
    "emit_event",
    "get_machine_config_node",
    "create_machine_config_node",
    "apply_machine_config_node_status",
    "apply_machine_config_node_spec",
    "get_custom_resource_definition",
];

impl Recording {
    fn mark(&self, m: &'static str) {
        self.called.lock().unwrap().insert(m);
    }
}

impl Cluster for Recording {
    fn node_name(&self) -> &str {
        self.inner.node_name()
    }
    async fn get_node(&self) -> anyhow::Result<Node> {
        self.mark("get_node");
        self.inner.get_node().await
    }
    async fn patch_node_annotations(
        &self,
        changes: &BTreeMap<String, Option<String>>,
    ) -> anyhow::Result<Node> {
        self.mark("patch_node_annotations");
        self.inner.patch_node_annotations(changes).await
    }
    async fn set_unschedulable(&self, unschedulable: bool) -> anyhow::Result<Node> {
        self.mark("set_unschedulable");
        self.inner.set_unschedulable(unschedulable).await
    }
    async fn get_machine_config(&self, name: &str) -> anyhow::Result<Value> {
        self.mark("get_machine_config");
        self.inner.get_machine_config(name).await
    }
    async fn get_machine_configuration(&self) -> anyhow::Result<Option<Value>> {
        self.mark("get_machine_configuration");
        self.inner.get_machine_configuration().await
    }
    async fn list_pods_on_node(&self) -> anyhow::Result<Vec<Pod>> {
        self.mark("list_pods_on_node");
        self.inner.list_pods_on_node().await
    }
    async fn get_pod(&self, namespace: &str, name: &str) -> anyhow::Result<Option<Pod>> {
        self.mark("get_pod");
        self.inner.get_pod(namespace, name).await
    }
    async fn evict_pod(&self, namespace: &str, name: &str) -> anyhow::Result<Eviction> {
        self.mark("evict_pod");
        self.inner.evict_pod(namespace, name).await
    }
    async fn emit_event(&self, event: &NodeEvent) -> anyhow::Result<()> {
        self.mark("emit_event");
        self.inner.emit_event(event).await
    }
    async fn get_machine_config_node(&self) -> anyhow::Result<Option<Value>> {
        self.mark("get_machine_config_node");
        self.inner.get_machine_config_node().await
    }
    async fn create_machine_config_node(&self, mcn: &Value) -> anyhow::Result<Value> {
        self.mark("create_machine_config_node");
        self.inner.create_machine_config_node(mcn).await
    }
    async fn apply_machine_config_node_status(&self, status: &Value) -> anyhow::Result<Value> {
        self.mark("apply_machine_config_node_status");
        self.inner.apply_machine_config_node_status(status).await
    }
    async fn apply_machine_config_node_spec(&self, spec: &Value) -> anyhow::Result<Value> {
        self.mark("apply_machine_config_node_spec");
        self.inner.apply_machine_config_node_spec(spec).await
    }
    async fn get_custom_resource_definition(&self, name: &str) -> anyhow::Result<Option<Value>> {
        self.mark("get_custom_resource_definition");
        self.inner.get_custom_resource_definition(name).await
    }
}

const NODE: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: node1
  labels: {kubernetes.io/hostname: node1, node-role.kubernetes.io/worker: ""}
  annotations:
    machineconfiguration.openshift.io/currentConfig: rendered-worker-1
    machineconfiguration.openshift.io/desiredConfig: rendered-worker-2
"#;

/// The ControllerConfig the daemon watches (the fields its CRD requires).
const CONTROLLER_CONFIG: &str = r#"
apiVersion: machineconfiguration.openshift.io/v1
kind: ControllerConfig
metadata: {name: machine-config-controller}
spec:
  additionalTrustBundle: null
  baseOSContainerImage: quay.io/openshift/os@sha256:00
  cloudProviderCAData: null
  cloudProviderConfig: ""
  clusterDNSIP: 172.30.0.10
  dns: {spec: {baseDomain: example.com}}
  images: {}
  infra: {spec: {}, status: {}}
  ipFamilies: IPv4
  kubeAPIServerServingCAData: null
  network: null
  proxy: null
  releaseImage: quay.io/openshift/release@sha256:00
  rootCAData: null
"#;

/// Two pods to evict (one in another namespace) and a DaemonSet pod a drain leaves alone.
const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: apps}
spec: {nodeName: node1, terminationGracePeriodSeconds: 0, containers: [{name: c, image: x}]}
status: {phase: Running, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: data}
spec: {nodeName: node1, terminationGracePeriodSeconds: 0, containers: [{name: c, image: x}]}
status: {phase: Running, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: agent-1
  namespace: apps
  ownerReferences: [{apiVersion: apps/v1, kind: DaemonSet, name: agent, uid: 1f6935d7-0000-0000-0000-000000000001, controller: true}]
spec: {nodeName: node1, containers: [{name: c, image: x}]}
status: {phase: Running, conditions: [{type: Ready, status: "True"}]}
"#;

struct Env {
    sim: KubeSim,
    cluster: Arc<Recording>,
    client: kube::Client,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let sim = KubeSim::start(SimOptions {
        kubeconfig: Some(kubeconfig.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for ns in ["apps", "data"] {
        sim.put_object(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
            .unwrap();
    }
    sim.load_yaml(NODE).unwrap();
    sim.load_yaml(PODS).unwrap();
    sim.load_yaml(CONTROLLER_CONFIG).unwrap();
    for example in [
        "rendered-worker-2.yaml",
        "machineconfiguration-cluster.yaml",
    ] {
        let text = std::fs::read_to_string(repo.join("examples").join(example)).unwrap();
        sim.load_yaml(&text).unwrap();
    }
    let client = connect(&Credentials::Kubeconfig(kubeconfig)).await.unwrap();
    let cluster = Arc::new(Recording {
        inner: KubeCluster::new(client.clone(), "node1"),
        called: Mutex::new(BTreeSet::new()),
    });
    sim.reset_counters();
    Env {
        sim,
        cluster,
        client,
        _dir: dir,
    }
}

fn fast() -> DrainOptions {
    DrainOptions {
        timeout: Duration::from_secs(30),
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        poll_interval: Duration::from_millis(50),
        controller_poll_interval: Duration::from_millis(50),
        controller_drain_timeout: Duration::from_secs(30),
        controller_uncordon_timeout: Duration::from_secs(30),
        ..Default::default()
    }
}

/// What every daemon does regardless of the drain mode: watch the node, read the configs, keep
/// the MachineConfigNode, write annotations and events.
async fn common_flow(e: &Env) {
    let mut watch = watch_node(e.client.clone(), "node1");
    let node = tokio::time::timeout(Duration::from_secs(10), watch.wait_for(|_| true))
        .await
        .unwrap()
        .unwrap();
    let c = &e.cluster;
    c.get_machine_config("rendered-worker-2").await.unwrap();
    assert!(c.get_machine_configuration().await.unwrap().is_some());
    let mut cc = watch_controller_config(e.client.clone(), "node1", None);
    tokio::time::timeout(
        Duration::from_secs(10),
        cc.updates.wait_for(|o| o.is_some()),
    )
    .await
    .unwrap()
    .unwrap();
    let mcn = McnWriter::new(c.clone(), "worker");
    mcn.ensure(&node).await.unwrap();
    // The spec follows the desired config (here: rewritten as it is).
    let stored = c.get_machine_config_node().await.unwrap().unwrap();
    c.apply_machine_config_node_spec(&stored["spec"])
        .await
        .unwrap();
    let writer = AnnotationWriter::new(c.clone());
    writer
        .set_state(NodeState::Working, "", Some(&node))
        .await
        .unwrap();
    c.emit_event(&NodeEvent::normal(EventReason::NodeDone, "test"))
        .await
        .unwrap();
}

/// One served request: (verb, group, resource, namespace, name).
type Served = (String, String, String, Option<String>, Option<String>);

/// Every request kube-sim served.
fn requests(sim: &KubeSim) -> BTreeSet<Served> {
    sim.requests()
        .iter()
        .filter(|r| !r.resource.is_empty())
        .map(|r| {
            let path = r.path_and_query.split('?').next().unwrap();
            let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
            let (group, rest) = match parts[0] {
                "api" => ("", &parts[2..]),
                "apis" => (parts[1], &parts[3..]),
                other => panic!("unexpected API path {other}: {path}"),
            };
            let (ns, rest) = match rest {
                ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
                _ => (None, rest),
            };
            let resource = match rest {
                [plural] | [plural, _] => plural.to_string(),
                [plural, _, sub] => format!("{plural}/{sub}"),
                _ => panic!("unexpected resource path {path}"),
            };
            // As the API server's RequestInfo: a LIST or WATCH with the field selector
            // metadata.name=<name> is a request for that name (what resourceNames can allow).
            let selected = r.path_and_query.split_once('?').and_then(|(_, q)| {
                q.split('&').find_map(|kv| {
                    let v = kv.strip_prefix("fieldSelector=")?;
                    let v = v.replace("%3D", "=").replace("%3d", "=");
                    v.strip_prefix("metadata.name=").map(str::to_string)
                })
            });
            let name = rest.get(1).map(|n| n.to_string()).or(selected);
            (r.verb.clone(), group.to_string(), resource, ns, name)
        })
        .collect()
}

/// Check the served requests against the list for `mode`: every request is listed (with its
/// namespace and name limits), and every listed request was made.
fn assert_requests_match(sim: &KubeSim, mode: Modes) {
    let label = match mode {
        Modes::Both => "controller drain",
        Modes::SelfDrain => "self drain",
    };
    let seen = requests(sim);
    let expected = needed(mode);
    for (verb, group, resource, ns, name) in &seen {
        let entry = expected
            .iter()
            .find(|a| a.verb == verb && a.group == group && a.resource == resource)
            .unwrap_or_else(|| {
                panic!("{label} made {verb} {resource} ({group:?}), which API_ACCESS does not list for it")
            });
        if let Some(want) = entry.namespace {
            assert_eq!(ns.as_deref(), Some(want), "{verb} {resource}");
        }
        if let Some(want) = entry.name {
            assert_eq!(name.as_deref(), Some(want), "{verb} {resource}");
        }
    }
    for a in &expected {
        assert!(
            seen.iter()
                .any(|(v, g, r, _, _)| v == a.verb && g == a.group && r == a.resource),
            "{label} never made {} {}; is API_ACCESS stale?",
            a.verb,
            a.resource
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_drain_requests_are_exactly_the_listed_ones() {
    let e = env().await;
    common_flow(&e).await;
    let c = &e.cluster;
    let drainer =
        Drainer::new(c.clone(), fast()).with_mcn(Arc::new(McnWriter::new(c.clone(), "worker")));
    let report = drainer.drain().await.unwrap();
    assert_eq!(report.evicted.len(), 2, "{report:?}");
    assert!(drainer.uncordon().await.unwrap());
    // The trait's remaining methods, and the MachineConfigNode's create-when-it-exists path.
    assert!(c.get_pod("apps", "agent-1").await.unwrap().is_some());
    assert!(matches!(
        c.evict_pod("apps", "web-1").await.unwrap(),
        Eviction::Gone
    ));
    let mcn = c.get_machine_config_node().await.unwrap().unwrap();
    c.create_machine_config_node(&mcn).await.unwrap();

    assert_requests_match(&e.sim, Modes::SelfDrain);
    let called = c.called.lock().unwrap().clone();
    let all: BTreeSet<&str> = CLUSTER_METHODS.iter().copied().collect();
    assert_eq!(called, all, "every Cluster method is exercised");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_drain_requests_are_exactly_the_listed_ones() {
    let e = env().await;
    common_flow(&e).await;
    let c = &e.cluster;
    // Play the MCO drain controller: apply whatever drain/uncordon the daemon asks for.
    let controller = {
        let sim = &e.sim;
        async move {
            let mut applied = 0;
            while applied < 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let node = sim.get_object("v1", "Node", None, "node1").unwrap();
                let ann = &node["metadata"]["annotations"];
                let desired = ann[DESIRED_DRAIN].as_str().unwrap_or_default().to_string();
                if !desired.is_empty() && ann[LAST_APPLIED_DRAIN].as_str() != Some(&desired) {
                    sim.merge_patch_object(
                        "v1",
                        "Node",
                        None,
                        "node1",
                        &json!({"metadata": {"annotations": {LAST_APPLIED_DRAIN: desired}}}),
                    )
                    .unwrap();
                    applied += 1;
                }
            }
        }
    };
    let drainer = Drainer::new(c.clone(), fast());
    let daemon = async {
        drainer.controller_drain("rendered-worker-2").await.unwrap();
        drainer
            .controller_uncordon("rendered-worker-2")
            .await
            .unwrap();
    };
    tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(controller, daemon);
    })
    .await
    .expect("the controller handshake finishes");

    assert_requests_match(&e.sim, Modes::Both);
    let pods_untouched = e
        .sim
        .list_objects("v1", "Pod")
        .iter()
        .all(|p| p["metadata"]["deletionTimestamp"].is_null());
    assert!(pods_untouched, "controller mode never evicts");
}
