//! End-to-end harness: the real daemon binary against kube-sim, a real registry with OS images built from
//! scratch, a sandbox ostree sysroot, a node root in a temp dir and a private D-Bus with testbed's systemd
//! service. A reboot is simulated: the harness stops the daemon once it asked systemd for one, writes a new
//! boot id and starts it again with the sysroot's new default deployment standing for the booted one
//! (`--test-only-simulated-boot`).
//!
//! Also used by `benches/daemon.rs` (through `#[path]`), so everything here is plain library code.
#![allow(dead_code)]

pub mod firstboot;
pub mod gate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube_sim::{KubeSim, SimOptions};
use serde_json::{Value, json};
use testbed::dbus::PrivateBus;
use testbed::systemd::FakeSystemd;
use testbed::{
    BaseSpec, BuiltImage, FileSpec, ImageLab, LayerSpec, NodeRoot, Registry, SandboxSysroot,
    SysrootSnapshot,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_machine-config-daemon");
pub const NODE: &str = "node1";
pub const MCFG: &str = "machineconfiguration.openshift.io/v1";
pub const P: &str = "machineconfiguration.openshift.io/";

pub struct Lab {
    pub sim: KubeSim,
    pub bus: PrivateBus,
    pub systemd: FakeSystemd,
    pub images: ImageLab,
    pub registry: Registry,
    pub built: BTreeMap<String, BuiltImage>,
    pub sysroot: SandboxSysroot,
    pub node: NodeRoot,
    pub work: tempfile::TempDir,
    daemon: Option<Child>,
    runs: usize,
    /// Simulated boots so far (the install counts as the first).
    pub boots: usize,
    pub extra_env: Vec<(String, String)>,
    pub extra_args: Vec<String>,
    /// `--drain-timeout` of the daemon (60s unless a test changes it).
    pub drain_timeout: String,
    /// `ConfigDriftMonitorStarted` events when the daemon was last started.
    monitors_at_start: usize,
    /// The simulated kubelet does not report the node Ready after the next boots (a kubelet that never
    /// comes up).
    pub kubelet_withheld: bool,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A MachineConfig document.
pub fn mc(name: &str, image: Option<&str>, kargs: &[&str], config: Value) -> Value {
    let mut spec = json!({"kernelArguments": kargs, "config": config});
    if let Some(i) = image {
        spec["osImageURL"] = i.into();
    }
    json!({"apiVersion": MCFG, "kind": "MachineConfig", "metadata": {"name": name}, "spec": spec})
}

/// An Ignition 3.4 config with `files` (path → contents) and core's SSH keys.
pub fn ignition(files: &[(&str, &str)], keys: &[&str]) -> Value {
    let files: Vec<Value> = files
        .iter()
        .map(|(p, c)| json!({"path": p, "mode": 420, "overwrite": true, "contents": {"source": machine_config_daemon::config::dataurl::encode_base64(c.as_bytes())}}))
        .collect();
    let mut cfg = json!({"ignition": {"version": "3.4.0"}, "storage": {"files": files}});
    if !keys.is_empty() {
        cfg["passwd"] = json!({"users": [{"name": "core", "sshAuthorizedKeys": keys}]});
    }
    cfg
}

/// A pod on `node` (Running and Ready, 1 s grace period). `owner` is `(kind, name)` of its controller.
pub fn pod(ns: &str, name: &str, node: &str, owner: Option<(&str, &str)>, labels: Value) -> Value {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}"), "labels": labels},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "registry.example/app:1"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    });
    if let Some((kind, owner)) = owner {
        let api = if kind == "Node" { "v1" } else { "apps/v1" };
        p["metadata"]["ownerReferences"] = json!([{"apiVersion": api, "kind": kind, "name": owner,
            "uid": format!("uid-{owner}"), "controller": true}]);
    }
    p
}

/// A pod on the node guarded by a budget that allows no disruption.
pub fn guarded_pod(lab: &Lab) {
    lab.sim
        .put_object(pod(
            "shop",
            "db-0",
            "node1",
            Some(("StatefulSet", "db")),
            json!({"app": "db"}),
        ))
        .unwrap();
    lab.sim
        .put_object(json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "db-pdb", "namespace": "shop"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}},
        }))
        .unwrap();
}

pub fn relax_budget(lab: &Lab) {
    lab.sim
        .merge_patch_object(
            "policy/v1",
            "PodDisruptionBudget",
            Some("shop"),
            "db-pdb",
            &json!({"spec": {"minAvailable": 0}}),
        )
        .unwrap();
}

pub async fn wait_blocked(lab: &mut Lab) {
    lab.wait_for(
        "the drain to report the blocking PDB",
        Duration::from_secs(30),
        |lab| {
            lab.event_messages("Drain")
                .iter()
                .any(|m| m.contains("shop/db-0") && m.contains("db-pdb"))
        },
    )
    .await;
}

/// A mirror (static) pod, as the kubelet creates for a manifest in /etc/kubernetes/manifests.
pub fn mirror_pod(ns: &str, name: &str, node: &str) -> Value {
    let mut p = pod(ns, name, node, Some(("Node", node)), json!({}));
    p["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "0123abcd"});
    p
}

/// Every file, directory and symlink under a tree: path → (mode, contents or link target).
pub type TreeSnapshot = BTreeMap<PathBuf, (u32, Vec<u8>)>;

pub fn snapshot_tree(root: &Path) -> TreeSnapshot {
    use std::os::unix::fs::MetadataExt;
    let mut out = TreeSnapshot::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let body = if meta.file_type().is_symlink() {
                std::fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if meta.is_file() {
                std::fs::read(&p).unwrap_or_default()
            } else {
                stack.push(p);
                Vec::new()
            };
            out.insert(rel, (meta.mode(), body));
        }
    }
    out
}

/// The paths where two snapshots differ (for a readable assertion message).
pub fn tree_diff(a: &TreeSnapshot, b: &TreeSnapshot) -> Vec<String> {
    let mut diff = Vec::new();
    for (p, v) in a {
        match b.get(p) {
            None => diff.push(format!("removed {}", p.display())),
            Some(w) if w != v => diff.push(format!("changed {}", p.display())),
            _ => {}
        }
    }
    for p in b.keys() {
        if !a.contains_key(p) {
            diff.push(format!("added {}", p.display()));
        }
    }
    diff
}

/// A condition of the MachineConfigNode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// An Event as `kubectl get events` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub reason: String,
    pub kind: String,
    pub message: String,
}

impl Lab {
    /// Images `base` (and whatever the test derives later), a sysroot with `initial` applied and booted,
    /// the node annotated Done at it, and the daemon not yet started.
    pub async fn new(initial: &dyn Fn(&Lab) -> Value) -> Lab {
        let work = tempfile::tempdir().unwrap();
        let kubeconfig = work.path().join("kubeconfig");
        let sim = KubeSim::start(SimOptions {
            kubeconfig: Some(kubeconfig),
            ..Default::default()
        })
        .await
        .unwrap();
        let bus = PrivateBus::start().unwrap();
        let systemd = FakeSystemd::start(&bus).await.unwrap();
        let images = ImageLab::new().unwrap();
        let mut spec = BaseSpec::new("base", "1.0");
        spec.files.push(FileSpec::new("usr/etc/motd", "base\n"));
        let base = images.build_base(&spec).await.unwrap();
        let registry = Registry::start().unwrap();
        registry.push(&images, "base", "os").unwrap();
        let sysroot = SandboxSysroot::create("default").unwrap();
        let node = NodeRoot::new().unwrap();
        node.trust_insecure_registry(&registry).unwrap();
        node.write("etc/passwd", "root:x:0:0:root:/root:/bin/sh\ncore:x:1000:1000:CoreOS Admin:/var/home/core:/bin/bash\n").unwrap();
        node.write("etc/group", "root:x:0:\ncore:x:1000:\n")
            .unwrap();
        node.write(
            "etc/shadow",
            "root:*:19000:0:99999:7:::\ncore:*:19000:0:99999:7:::\n",
        )
        .unwrap();
        let mut lab = Lab {
            sim,
            bus,
            systemd,
            images,
            registry,
            built: BTreeMap::from([("base".to_string(), base)]),
            sysroot,
            node,
            work,
            daemon: None,
            runs: 0,
            boots: 0,
            extra_env: Vec::new(),
            extra_args: Vec::new(),
            drain_timeout: "60s".into(),
            monitors_at_start: 0,
            kubelet_withheld: false,
        };
        // Install: the first config applied with the CLI, as an installer would, then "booted".
        let first = initial(&lab);
        let name = first["metadata"]["name"].as_str().unwrap().to_string();
        lab.put_mc(&first);
        let file = lab.work.path().join("initial.json");
        std::fs::write(&file, serde_json::to_vec(&first).unwrap()).unwrap();
        let out = Command::new(BIN)
            .args(["apply", "--root"])
            .arg(lab.node.path())
            .arg("--sysroot")
            .arg(lab.sysroot.path())
            .arg("--desired")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "install failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        lab.new_boot();
        lab.sim
            .load_yaml(&format!(
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: {NODE}\n  labels:\n    node-role.kubernetes.io/worker: \"\"\n    kubernetes.io/hostname: {NODE}\n  annotations:\n    {P}currentConfig: {name}\n    {P}desiredConfig: {name}\n    {P}state: Done\nspec: {{}}\nstatus:\n  conditions:\n  - type: Ready\n    status: \"True\"\n"
            ))
            .unwrap();
        lab.kubelet_reports_ready();
        lab
    }

    /// A lab installed at config `name`: the base image with `files` and core's SSH `keys`.
    pub async fn at_base(name: &str, files: &[(&str, &str)], keys: &[&str]) -> Lab {
        Lab::new(&|lab| mc(name, Some(&lab.image("base")), &[], ignition(files, keys))).await
    }

    /// `tag` derived from base with `layer`, pushed; returns the pullspec by digest.
    pub fn derive(&mut self, tag: &str, layer: LayerSpec) -> String {
        let img = self
            .images
            .derive("base", tag, &[layer], Some(tag))
            .unwrap();
        self.registry.push(&self.images, tag, "os").unwrap();
        let spec = self.registry.image_by_digest("os", &img.manifest_digest);
        self.built.insert(tag.into(), img);
        spec
    }

    pub fn image(&self, tag: &str) -> String {
        self.registry
            .image_by_digest("os", &self.built[tag].manifest_digest)
    }

    pub fn put_mc(&self, mc: &Value) {
        let name = mc["metadata"]["name"].as_str().unwrap();
        if self
            .sim
            .get_object(MCFG, "MachineConfig", None, name)
            .is_some()
        {
            self.sim
                .delete_object(MCFG, "MachineConfig", None, name)
                .unwrap();
        }
        self.sim.put_object(mc.clone()).unwrap();
    }

    pub fn node_obj(&self) -> Value {
        self.sim.get_object("v1", "Node", None, NODE).unwrap()
    }

    pub fn annotation(&self, key: &str) -> Option<String> {
        self.node_obj()["metadata"]["annotations"][format!("{P}{key}")]
            .as_str()
            .map(str::to_string)
    }

    pub fn annotate(&self, changes: &[(&str, Option<&str>)]) {
        let map: serde_json::Map<String, Value> = changes
            .iter()
            .map(|(k, v)| {
                (
                    format!("{P}{k}"),
                    v.map_or(Value::Null, |s| Value::String(s.into())),
                )
            })
            .collect();
        self.sim
            .merge_patch_object(
                "v1",
                "Node",
                None,
                NODE,
                &json!({"metadata": {"annotations": map}}),
            )
            .unwrap();
    }

    /// Point the node at a new config (and image), as the MCO controller does.
    pub fn set_desired(&self, config: &str, image: Option<&str>) {
        self.annotate(&[("desiredConfig", Some(config)), ("desiredImage", image)]);
    }

    pub fn unschedulable(&self) -> bool {
        self.node_obj()["spec"]["unschedulable"]
            .as_bool()
            .unwrap_or(false)
    }

    /// The bodies of every PATCH of our Node the daemon sent (in order).
    pub fn node_patches(&self) -> Vec<Value> {
        self.sim
            .requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.resource == "nodes")
            .filter_map(|r| r.body.as_deref())
            .filter_map(|b| serde_json::from_str(b).ok())
            .collect()
    }

    /// Whether the daemon ever cordoned the node (a PATCH setting `spec.unschedulable`).
    pub fn ever_cordoned(&self) -> bool {
        self.node_patches()
            .iter()
            .any(|p| p["spec"]["unschedulable"] == json!(true))
    }

    /// `namespace/name` of every pod an eviction was requested for.
    pub fn evictions(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .sim
            .requests()
            .iter()
            .filter(|r| r.resource == "pods/eviction" && r.method == "POST")
            .filter_map(|r| {
                // /api/v1/namespaces/<ns>/pods/<name>/eviction
                let parts: Vec<&str> = r.path_and_query.split('/').collect();
                let ns = parts.iter().position(|p| *p == "namespaces")?;
                Some(format!("{}/{}", parts.get(ns + 1)?, parts.get(ns + 3)?))
            })
            .collect();
        out.dedup();
        out
    }

    /// Requests counted by kube-sim for `"<verb> <resource>"`; the resource may leave out its group
    /// (`"get machineconfigs"`).
    pub fn counters_for(&self, key: &str) -> u64 {
        self.sim
            .counters()
            .iter()
            .filter(|(k, _)| {
                k.as_str() == key
                    || k.strip_prefix(key)
                        .is_some_and(|rest| rest.starts_with('.'))
            })
            .map(|(_, v)| v)
            .sum()
    }

    pub fn pod_exists(&self, ns: &str, name: &str) -> bool {
        self.sim.get_object("v1", "Pod", Some(ns), name).is_some()
    }

    pub fn mcn(&self) -> Option<Value> {
        self.sim.get_object(MCFG, "MachineConfigNode", None, NODE)
    }

    pub fn mcn_condition(&self, ty: &str) -> Option<Condition> {
        let mcn = self.mcn()?;
        let c = mcn["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == ty)?
            .clone();
        let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
        Some(Condition {
            status: s("status"),
            reason: s("reason"),
            message: s("message"),
        })
    }

    pub fn boot_id_file(&self) -> PathBuf {
        self.work.path().join("boot_id")
    }

    fn new_boot(&mut self) {
        self.boots += 1;
        std::fs::write(
            self.boot_id_file(),
            format!("boot-{}-{}\n", self.boots, std::process::id()),
        )
        .unwrap();
        // A new previous boot: whatever its ostree-finalize-staged logged is no longer the last one.
        let _ = std::fs::remove_file(self.finalize_log());
        if !self.kubelet_withheld {
            self.kubelet_reports_ready();
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.work.path().join(format!("daemon-{}.log", self.runs))
    }

    pub fn kubeconfig(&self) -> &Path {
        self.sim.kubeconfig_path().unwrap()
    }

    pub fn start(&mut self) {
        assert!(self.daemon.is_none(), "the daemon is already running");
        self.runs += 1;
        self.monitors_at_start = self.event_messages("ConfigDriftMonitorStarted").len();
        let log = std::fs::File::create(self.log_path()).unwrap();
        let mut cmd = Command::new(daemon_bin());
        cmd.args([
            "start",
            "--node-name",
            NODE,
            "--metrics-listen",
            "127.0.0.1:0",
            "--drain-timeout",
            &self.drain_timeout,
        ])
        .arg("--kubeconfig")
        .arg(self.kubeconfig());
        self.on_this_node(&mut cmd);
        cmd.args(&self.extra_args)
            .env(
                "MCD_LOG",
                std::env::var("E2E_LOG")
                    .unwrap_or_else(|_| "info,machine_config_daemon=debug".into()),
            )
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("FAILPOINTS")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        self.daemon = Some(cmd.spawn().unwrap());
    }

    /// The running daemon's process id.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    pub fn running(&self) -> bool {
        self.daemon.is_some()
    }

    /// SIGTERM and wait (as systemd stops the service). Returns the exit code and how long it took.
    pub fn stop_timed(&mut self) -> Option<(Option<i32>, Duration)> {
        let mut child = self.daemon.take()?;
        let asked = Instant::now();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = asked + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some((status.code(), asked.elapsed()));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "the daemon did not stop within 30 s of SIGTERM:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM and wait (as systemd stops the service).
    pub fn stop(&mut self) -> Option<i32> {
        self.stop_timed().and_then(|(code, _)| code)
    }

    /// SIGKILL (a crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The daemon exited by itself (e.g. a crash point fired).
    pub fn exited(&mut self) -> bool {
        match self.daemon.as_mut().map(|c| c.try_wait().unwrap()) {
            Some(Some(_)) => {
                self.daemon = None;
                true
            }
            _ => false,
        }
    }

    /// Simulate the reboot the daemon asked for: stop it, new boot id, start it again.
    pub fn reboot(&mut self) {
        self.stop();
        self.new_boot();
        self.start();
    }

    /// A reboot without the daemon running (it crashed after asking for one).
    pub fn reboot_stopped(&mut self) {
        assert!(self.daemon.is_none());
        self.new_boot();
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for i in 1..=self.runs {
            let p = self.work.path().join(format!("daemon-{i}.log"));
            out.push_str(&format!(
                "---- daemon run {i} ----\n{}",
                std::fs::read_to_string(p).unwrap_or_default()
            ));
        }
        out
    }

    /// `GET /healthz` of the running daemon (its listen address is in its log): the body, or `None`
    /// before it serves.
    pub fn healthz(&self) -> Option<String> {
        use std::io::{Read, Write};
        let log = strip_ansi(&std::fs::read_to_string(self.log_path()).ok()?);
        let line = log
            .lines()
            .find(|l| l.contains("/metrics and /healthz on "))?;
        let addr = line
            .split("/metrics and /healthz on ")
            .nth(1)?
            .split_whitespace()
            .next()?;
        let mut s = std::net::TcpStream::connect(addr).ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.split("\r\n\r\n").nth(1).map(str::to_string)
    }

    /// Everything an admin would look at, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "node annotations: {}\nunschedulable: {}\nsystemd calls: {:?}\nevents: {:?}\n{}",
            serde_json::to_string_pretty(&self.node_obj()["metadata"]["annotations"]).unwrap(),
            self.unschedulable(),
            self.systemd.calls(),
            self.events_full(),
            self.logs()
        )
    }

    /// Poll until `pred` holds.
    pub async fn wait_for(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Lab) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(self) {
                return;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}\n{}", self.describe());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_state(&mut self, state: &str, config: &str) {
        let (s, c) = (state.to_string(), config.to_string());
        self.wait_for(
            &format!("state={state} at {config}"),
            Duration::from_secs(90),
            move |lab| {
                lab.annotation("state").as_deref() == Some(s.as_str())
                    && (s != "Done"
                        || lab.annotation("currentConfig").as_deref() == Some(c.as_str()))
            },
        )
        .await;
    }

    /// Wait until the MachineConfigNode condition `ty` has `status` (conditions follow the annotations).
    pub async fn wait_condition(&mut self, ty: &str, status: &str) {
        let (t, st) = (ty.to_string(), status.to_string());
        self.wait_for(
            &format!("MCN {ty}={status}"),
            Duration::from_secs(30),
            move |lab| lab.mcn_condition(&t).is_some_and(|c| c.status == st),
        )
        .await;
    }

    /// The daemon started and found the node at its config (it starts the drift monitor last).
    pub async fn wait_settled(&mut self) {
        let before = self.monitors_at_start;
        self.wait_for(
            "the daemon to settle (drift monitor started)",
            Duration::from_secs(60),
            move |lab| lab.event_messages("ConfigDriftMonitorStarted").len() > before,
        )
        .await;
    }

    /// An update to `config` completed: Done there, and the `NodeDone` event (written last) is out.
    pub async fn wait_updated(&mut self, config: &str) {
        self.wait_state("Done", config).await;
        let c = config.to_string();
        self.wait_for(
            &format!("the NodeDone event for {config}"),
            Duration::from_secs(10),
            move |lab| {
                lab.event_messages("NodeDone")
                    .iter()
                    .any(|m| m.contains(&format!("currentConfig {c} ")))
            },
        )
        .await;
    }

    pub async fn wait_reboot_request(&mut self, n: usize) {
        self.wait_for(
            &format!("reboot request #{n}"),
            Duration::from_secs(90),
            move |lab| lab.systemd.reboots().len() >= n,
        )
        .await;
    }

    /// The arguments and environment that point a daemon command at this lab's node: its root, its
    /// sysroot, the simulated boot and the private system bus.
    fn on_this_node(&self, cmd: &mut Command) {
        cmd.arg("--root")
            .arg(self.node.path())
            .arg("--sysroot")
            .arg(self.sysroot.path())
            .arg("--test-only-simulated-boot")
            .arg(self.boot_id_file())
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.bus.address());
    }

    /// Play the host until the node is Done at `config`: boot after every reboot the daemon asks for, and
    /// start the daemon again (without failpoints) after the crash point `point` killed it; `on_crash`
    /// inspects the node right after that kill. Panics if the daemon exits any other way, or after 90 s.
    /// Returns whether `point` fired. The daemon must be running (or just killed) and is left running.
    pub async fn run_through_crash(
        &mut self,
        config: &str,
        point: &str,
        mut on_crash: impl FnMut(&Lab),
    ) -> bool {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut handled_reboots = self.systemd.reboots().len();
        let mut fired = false;
        loop {
            assert!(
                Instant::now() < deadline,
                "{point}: no convergence to {config}\n{}",
                self.describe()
            );
            // A requested reboot happens whether or not the daemon survived asking for it.
            let reboot_requested = self.systemd.reboots().len() > handled_reboots;
            if reboot_requested || self.exited() {
                if self.running() {
                    self.stop();
                }
                if !fired && self.logs().contains(&format!("failpoint {point}: killing")) {
                    fired = true;
                    on_crash(self);
                    self.extra_env.retain(|(k, _)| k != "FAILPOINTS");
                } else {
                    assert!(
                        reboot_requested,
                        "{point}: the daemon exited, not by the crash point\n{}",
                        self.describe()
                    );
                }
                if reboot_requested {
                    handled_reboots = self.systemd.reboots().len();
                    self.reboot_stopped();
                }
                self.start();
                continue;
            }
            // Done is written last (after the uncordon); a restart after the journal is gone settles.
            // A first boot starts out Done at its config (node-annotations.json says so): it has
            // converged once its bootstrap recorded the config.
            if self.annotation("state").as_deref() == Some("Done")
                && self.annotation("currentConfig").as_deref() == Some(config)
                && !self
                    .path("etc/machine-config-daemon/update-in-progress.json")
                    .exists()
                && !self
                    .path("etc/machine-config-daemon/node-annotations.json")
                    .exists()
            {
                return fired;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait until the daemon process exits by itself; panics after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.exited() {
            if Instant::now() > deadline {
                panic!("the daemon did not exit\n{}", self.describe());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn file(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.node.path().join(path.trim_start_matches('/'))).ok()
    }

    pub fn write_file(&self, path: &str, contents: &str) {
        self.node.write(path, contents).unwrap();
    }

    /// `machine-config-daemon status -o json` of the sandbox sysroot (nothing is booted from it: the
    /// default deployment is `pending`, the next one `rollback`).
    pub fn os_status(&self) -> Value {
        let out = Command::new(BIN)
            .args(["status", "-o", "json", "--sysroot"])
            .arg(self.sysroot.path())
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        v["status"].clone()
    }

    /// The image of the deployment the sysroot boots next.
    pub fn default_deployment_image(&self) -> String {
        let status = self.os_status();
        let d = if status["pending"].is_object() {
            &status["pending"]
        } else {
            &status["booted"]
        };
        d["image"].as_str().unwrap_or("").to_string()
    }

    /// The images of the sysroot's deployments, default first.
    pub fn deployment_images(&self) -> Vec<String> {
        let status = self.os_status();
        ["pending", "booted", "rollback"]
            .iter()
            .filter_map(|r| status[r]["image"].as_str().map(str::to_string))
            .collect()
    }

    pub fn sysroot_snapshot(&self) -> SysrootSnapshot {
        self.sysroot.snapshot().unwrap()
    }

    /// Drop the deployment the next boot would use, as a failed `ostree-finalize-staged` or a power cut
    /// before it ran would: the next boot comes up on the previous deployment.
    pub fn lose_staged_deployment(&self) {
        let out = Command::new("ostree")
            .args(["admin", "undeploy", "0"])
            .arg(format!("--sysroot={}", self.sysroot.path().display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ostree admin undeploy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn events(&self) -> Vec<String> {
        self.events_full().into_iter().map(|e| e.reason).collect()
    }

    pub fn events_full(&self) -> Vec<Event> {
        let mut events = self.sim.list_objects("v1", "Event");
        events.sort_by_key(|e| {
            e["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|r| r.parse::<u64>().ok())
                .unwrap_or(0)
        });
        events
            .iter()
            .map(|e| Event {
                reason: e["reason"].as_str().unwrap_or_default().to_string(),
                kind: e["type"].as_str().unwrap_or_default().to_string(),
                message: e["message"].as_str().unwrap_or_default().to_string(),
            })
            .collect()
    }

    /// Messages of the events with this reason.
    pub fn event_messages(&self, reason: &str) -> Vec<String> {
        self.events_full()
            .into_iter()
            .filter(|e| e.reason == reason)
            .map(|e| e.message)
            .collect()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.node.path().join(rel.trim_start_matches('/'))
    }

    /// Systemd calls other than the reboot (reloads, restarts, daemon-reloads).
    pub fn service_calls(&self) -> Vec<String> {
        self.systemd
            .calls()
            .into_iter()
            .filter(|c| !c.starts_with("StartTransientUnit machine-config-daemon-reboot.service"))
            .collect()
    }
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// `text` without terminal colour sequences (`ESC [ … m`), as the daemon's log has them.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The daemon binary the lab runs: `E2E_DAEMON_BIN` runs another build (a copy on tmpfs for memory
/// figures, or an older build to show a test fails there).
pub fn daemon_bin() -> String {
    std::env::var("E2E_DAEMON_BIN").unwrap_or_else(|_| BIN.to_string())
}

// ---------------------------------------------------------------------------------------------
// Cluster-provided certificates and image-mode status (ControllerConfig, MachineConfigNode CRDs).

/// A `ControllerConfig/machine-config-controller` with the fields its CRD requires and `spec`'s
/// (the byte fields given as plain bytes here; base64-encoded in the object).
pub fn controller_config(
    kubelet_ca: Option<&str>,
    registry_cas: &[(&str, &str)],
    internal_pull_secret: Option<&str>,
) -> Value {
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
    };
    let bundles: Vec<Value> = registry_cas
        .iter()
        .map(|(file, pem)| json!({"file": file, "data": b64(pem)}))
        .collect();
    json!({"apiVersion": MCFG, "kind": "ControllerConfig",
    "metadata": {"name": "machine-config-controller"},
    "spec": {
        "additionalTrustBundle": null, "baseOSContainerImage": "quay.io/openshift/os@sha256:00",
        "cloudProviderCAData": null, "cloudProviderConfig": "", "clusterDNSIP": "172.30.0.10",
        "dns": {"spec": {"baseDomain": "example.com"}}, "images": {},
        "infra": {"spec": {}, "status": {}}, "ipFamilies": "IPv4",
        "kubeAPIServerServingCAData": kubelet_ca.map(b64), "network": null, "proxy": null,
        "releaseImage": "quay.io/openshift/release@sha256:00", "rootCAData": null,
        "imageRegistryBundleData": bundles,
        "internalRegistryPullSecret": internal_pull_secret.map(b64),
    }})
}

impl Lab {
    /// Serve the MachineConfigNode CRD of `feature_set` (e.g. TechPreviewNoUpgrade, with the
    /// image-mode fields): the objects move to a new kube-sim started with it. Before `start`.
    pub async fn use_feature_set(&mut self, feature_set: kube_sim::FeatureSet) {
        assert!(self.daemon.is_none(), "switch before starting the daemon");
        let sim = KubeSim::start(SimOptions {
            kubeconfig: Some(self.work.path().join(format!("kubeconfig-{feature_set:?}"))),
            feature_set,
            ..Default::default()
        })
        .await
        .unwrap();
        for (api, kind) in [
            ("v1", "Node"),
            (MCFG, "MachineConfig"),
            ("operator.openshift.io/v1", "MachineConfiguration"),
            (MCFG, "ControllerConfig"),
        ] {
            for mut obj in self.sim.list_objects(api, kind) {
                if let Some(meta) = obj["metadata"].as_object_mut() {
                    for k in [
                        "resourceVersion",
                        "uid",
                        "creationTimestamp",
                        "managedFields",
                        "generation",
                    ] {
                        meta.remove(k);
                    }
                }
                sim.put_object(obj).unwrap();
            }
        }
        self.sim = sim;
    }

    /// Create or replace the ControllerConfig (a new resourceVersion). Returns it.
    pub fn put_controller_config(&self, cc: &Value) -> String {
        self.sim.put_object(cc.clone()).unwrap()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string()
    }
}
