//! kube-sim: a Kubernetes API server simulator that behaves like kube-apiserver 1.32 for every
//! request machine-config-daemon, kube-rs and kubectl make (see `reference/apiserver-golden/`).
//!
//! Start it in-process with [`KubeSim::start`] (tests), or run the `kube-sim` binary
//! (`kube-sim --port 0 --kubeconfig OUT --load FILE.yaml…`, which prints its URL).
//!
//! The custom resources are the openshift/api CRDs in `crds/` (MachineConfig, MachineConfigNode,
//! MachineConfigPool, MachineConfiguration, ControllerConfig), validated as the real server does for
//! structural schemas; the MachineConfigNode CRD is the variant of [`SimOptions::feature_set`] (Default,
//! or TechPreviewNoUpgrade with the image-mode fields). The CRD objects are served read-only under
//! `apiextensions.k8s.io/v1`.
//!
//! Besides the Kubernetes API it serves a control API under `/_sim/` (a path no real server
//! serves) with the same operations as the [`KubeSim`] handle: inject failures, add latency, drop
//! watches, compact the watch history, mark pods ready, read request counters and the request log.

mod api;
mod controllers;
mod defaults;
mod discovery;
mod faults;
mod http;
mod managed;
mod patch;
mod resources;
mod selectors;
mod status;
mod store;
mod table;
mod validate;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use tokio::sync::Notify;

pub use faults::{FaultHits, FaultReport, FaultRule, RequestRecord};
pub use resources::FeatureSet;

use api::{Core, CoreOptions};
use store::State;

/// How to start a simulator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// 0 picks a free port.
    pub port: u16,
    /// Where to write a kubeconfig for the server (none when `None`).
    pub kubeconfig: Option<PathBuf>,
    /// YAML files (multi-document) with objects to create at start; status is kept as written.
    pub load: Vec<PathBuf>,
    /// Require `Authorization: Bearer <token>` on API requests.
    pub token: Option<String>,
    /// Play kubelet: finish terminating pods once their grace period is over.
    pub kubelet: bool,
    /// How many watch events are kept; a watch from an older RV gets 410 Expired.
    pub history_window: usize,
    /// Watch timeout when the client sends none (the real server picks 30–60 min).
    pub default_watch_timeout: Duration,
    /// Interval of BOOKMARK events on long watches.
    pub bookmark_interval: Duration,
    /// Which variant of the feature-set-dependent CRDs is installed (the MachineConfigNode one).
    pub feature_set: FeatureSet,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            port: 0,
            kubeconfig: None,
            load: Vec::new(),
            token: None,
            kubelet: true,
            history_window: 1000,
            default_watch_timeout: Duration::from_secs(1800),
            bookmark_interval: Duration::from_secs(60),
            feature_set: FeatureSet::Default,
        }
    }
}

/// A running simulator. Dropping it stops the server.
#[derive(Debug)]
pub struct KubeSim {
    core: Arc<Core>,
    addr: SocketAddr,
    kubeconfig: Option<PathBuf>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl KubeSim {
    /// Bind 127.0.0.1, seed the default namespaces and `opts.load`, and serve in the background.
    pub async fn start(opts: SimOptions) -> Result<KubeSim> {
        let mut state = State::new(opts.history_window.max(1));
        state.history_limit = opts.history_window.max(1);
        let (drop_tx, _) = tokio::sync::watch::channel(0u64);
        let core = Arc::new(Core {
            registry: resources::Registry::with_feature_set(opts.feature_set),
            state: Mutex::new(state),
            controls: Mutex::new(faults::Controls {
                log_limit: 10_000,
                ..Default::default()
            }),
            opts: CoreOptions {
                token: opts.token.clone(),
                default_watch_timeout: opts.default_watch_timeout,
                bookmark_interval: opts.bookmark_interval,
            },
            drop_tx,
            kubelet_wake: Notify::new(),
        });
        for ns in ["default", "kube-node-lease", "kube-public", "kube-system"] {
            core.seed(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))?;
        }
        for crd in core.registry.crds.clone() {
            core.seed(resources::installed_crd(&crd))?;
        }
        for file in &opts.load {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("Reading {}", file.display()))?;
            load_yaml_str(&core, &text).with_context(|| format!("Loading {}", file.display()))?;
        }
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.port))
            .await
            .with_context(|| format!("Binding 127.0.0.1:{}", opts.port))?;
        let addr = listener.local_addr()?;
        let server_addr = addr.to_string();
        let app_core = core.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let core = app_core.clone();
            let server_addr = server_addr.clone();
            async move { http::handle(core, server_addr, req).await }
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "kube-sim server stopped");
            }
        });
        let mut tasks = vec![server];
        if opts.kubelet {
            tasks.push(tokio::spawn(kubelet_loop(core.clone())));
        }
        let sim = KubeSim {
            core,
            addr,
            kubeconfig: opts.kubeconfig.clone(),
            shutdown: Some(tx),
            tasks,
        };
        if let Some(path) = &opts.kubeconfig {
            write_kubeconfig(path, &sim.url(), opts.token.as_deref())?;
        }
        Ok(sim)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn kubeconfig_path(&self) -> Option<&Path> {
        self.kubeconfig.as_deref()
    }

    /// Create or replace objects from multi-document YAML (status kept as written).
    pub fn load_yaml(&self, text: &str) -> Result<usize> {
        load_yaml_str(&self.core, text)
    }

    /// Create or replace one object (status kept as written); returns the stored copy.
    pub fn put_object(&self, obj: Value) -> Result<Value> {
        self.core.seed(obj)
    }

    /// The stored object, if any. `namespace` is ignored for cluster-scoped kinds.
    pub fn get_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let rt = self.core.registry.find_kind(api_version, kind)?;
        let ns = if rt.namespaced { namespace } else { None };
        let state = self.core.lock();
        state
            .get(&rt.storage, &store::object_key(ns, name))
            .map(|o| self.core.render(&rt, o))
    }

    /// Every stored object of a kind (in all namespaces), in key order.
    pub fn list_objects(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let Some(rt) = self.core.registry.find_kind(api_version, kind) else {
            return Vec::new();
        };
        let state = self.core.lock();
        state
            .list(&rt.storage)
            .map(|(_, o)| self.core.render(&rt, o))
            .collect()
    }

    /// Apply a JSON merge patch to a stored object as the cluster would (new RV, watch event,
    /// PDB recomputation); status is patched too. Returns the stored copy.
    pub fn merge_patch_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        patch: &Value,
    ) -> Result<Value> {
        let rt = self
            .core
            .registry
            .find_kind(api_version, kind)
            .with_context(|| format!("kube-sim does not serve {kind} ({api_version})"))?;
        let ns = if rt.namespaced { namespace } else { None };
        let mut state = self.core.lock();
        let key = store::object_key(ns, name);
        let mut obj = state
            .get(&rt.storage, &key)
            .cloned()
            .with_context(|| format!("{kind} {key} not found"))?;
        patch::merge_patch(&mut obj, patch);
        if rt.has_generation {
            let old = state.get(&rt.storage, &key).expect("exists");
            if old.get("spec") != obj.get("spec") {
                let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
                obj["metadata"]["generation"] = serde_json::json!(g + 1);
            }
        }
        let stored = state.replace(&rt.storage, obj);
        let ns = stored["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        controllers::reconcile_pdbs(&mut state, &ns);
        Ok(stored)
    }

    /// Delete a stored object at once (no grace period).
    pub fn delete_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let rt = self.core.registry.find_kind(api_version, kind)?;
        let ns = if rt.namespaced { namespace } else { None };
        let mut state = self.core.lock();
        let removed = state.remove(&rt.storage, &store::object_key(ns, name));
        if let Some(ns) = namespace {
            controllers::reconcile_pdbs(&mut state, ns);
        }
        removed
    }

    /// The kubelet reports the pod Ready (phase Running) or not ready.
    pub fn set_pod_ready(&self, namespace: &str, name: &str, ready: bool) -> Result<Value> {
        controllers::set_pod_ready(&mut self.core.lock(), &format!("{namespace}/{name}"), ready)
            .with_context(|| format!("pod {namespace}/{name} not found"))
    }

    /// Fail the next `rule.count` matching requests with `rule.status`.
    pub fn inject_fault(&self, rule: FaultRule) {
        inject(&self.core, rule);
    }

    pub fn clear_faults(&self) {
        self.core
            .controls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .faults
            .clear();
    }

    /// What the injected faults and the other controls did since the last [`Self::reset_fault_report`]:
    /// requests failed per rule, watches dropped, 410 answers after compaction, requests delayed.
    pub fn fault_report(&self) -> FaultReport {
        self.core
            .controls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .report
            .clone()
    }

    /// Start counting afresh (rules still in force stay, with zero hits).
    pub fn reset_fault_report(&self) {
        self.core
            .controls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reset_report();
    }

    /// End every open watch (cleanly, as a server restart or load balancer would).
    pub fn drop_watches(&self) {
        drop_watches(&self.core);
    }

    /// Forget the watch history: a watch from any RV older than now gets 410 Expired.
    pub fn compact(&self) {
        self.core.lock().compact();
    }

    /// Delay every API request by `latency`.
    pub fn set_latency(&self, latency: Duration) {
        self.core
            .controls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .latency = latency;
    }

    /// `"<verb> <resource>"` → number of requests (e.g. `"patch nodes"`, `"create pods/eviction"`).
    pub fn counters(&self) -> std::collections::BTreeMap<String, u64> {
        self.core
            .controls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .counters
            .clone()
    }

    /// Sum of the counters whose verb is `verb` (any resource).
    pub fn count_verb(&self, verb: &str) -> u64 {
        self.counters()
            .iter()
            .filter(|(k, _)| k.split(' ').next() == Some(verb))
            .map(|(_, v)| v)
            .sum()
    }

    /// Reset counters and the request log.
    pub fn reset_counters(&self) {
        let mut c = self.core.controls.lock().unwrap_or_else(|e| e.into_inner());
        c.counters.clear();
        c.log.clear();
    }

    /// Every request served (most recent last, bounded).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.core
            .controls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log
            .clone()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.core.lock().rv
    }

    /// Stop serving (also happens on drop).
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        drop_watches(&self.core);
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        drop_watches(&self.core);
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub(crate) fn inject(core: &Core, rule: FaultRule) {
    core.controls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .inject(rule);
}

pub(crate) fn drop_watches(core: &Core) {
    core.drop_tx.send_modify(|g| *g += 1);
}

pub(crate) fn load_yaml_str(core: &Core, text: &str) -> Result<usize> {
    use serde::Deserialize;
    let mut n = 0;
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = Value::deserialize(doc).context("Parsing YAML")?;
        if v.is_null() {
            continue;
        }
        let items =
            if v["kind"].as_str().is_some_and(|k| k.ends_with("List")) && v["items"].is_array() {
                v["items"].as_array().cloned().unwrap_or_default()
            } else {
                vec![v]
            };
        for item in items {
            core.seed(item)?;
            n += 1;
        }
    }
    Ok(n)
}

/// The kubelet: finish terminating pods when their grace period ends.
async fn kubelet_loop(core: Arc<Core>) {
    loop {
        let next = {
            let mut state = core.lock();
            controllers::finalize_due_pods(&mut state, tokio::time::Instant::now())
        };
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = core.kubelet_wake.notified() => {}
        }
    }
}

fn write_kubeconfig(path: &Path, url: &str, token: Option<&str>) -> Result<()> {
    let user = match token {
        Some(t) => serde_json::json!({"token": t}),
        None => serde_json::json!({}),
    };
    let cfg = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kube-sim", "cluster": {"server": url}}],
        "users": [{"name": "kube-sim", "user": user}],
        "contexts": [{"name": "kube-sim", "context": {"cluster": "kube-sim", "user": "kube-sim", "namespace": "default"}}],
        "current-context": "kube-sim",
    });
    let text = serde_yaml::to_string(&cfg)?;
    std::fs::write(path, text).with_context(|| format!("Writing kubeconfig {}", path.display()))
}
