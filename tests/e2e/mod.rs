//! End-to-end harness: the real daemon binary against kube-sim, a real registry with OS images built from
//! scratch, a sandbox ostree sysroot, a node root in a temp dir and a private D-Bus with testbed's systemd
//! service. A reboot is simulated: the harness stops the daemon once it asked systemd for one, writes a new
//! boot id and starts it again with the sysroot's new default deployment standing for the booted one
//! (`--test-only-simulated-boot`).
#![allow(dead_code)]

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
    pub boots: usize,
    pub extra_env: Vec<(String, String)>,
    pub extra_args: Vec<String>,
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
        .map(|(p, c)| json!({"path": p, "mode": 420, "contents": {"source": machine_config_daemon::config::dataurl::encode_base64(c.as_bytes())}}))
        .collect();
    let mut cfg = json!({"ignition": {"version": "3.4.0"}, "storage": {"files": files}});
    if !keys.is_empty() {
        cfg["passwd"] = json!({"users": [{"name": "core", "sshAuthorizedKeys": keys}]});
    }
    cfg
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
        lab
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

    fn boot_id_file(&self) -> PathBuf {
        self.work.path().join("boot_id")
    }

    fn new_boot(&mut self) {
        self.boots += 1;
        std::fs::write(
            self.boot_id_file(),
            format!("boot-{}-{}\n", self.boots, std::process::id()),
        )
        .unwrap();
    }

    pub fn log_path(&self) -> PathBuf {
        self.work.path().join(format!("daemon-{}.log", self.runs))
    }

    pub fn start(&mut self) {
        assert!(self.daemon.is_none(), "the daemon is already running");
        self.runs += 1;
        let log = std::fs::File::create(self.log_path()).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args([
            "start",
            "--node-name",
            NODE,
            "--metrics-listen",
            "127.0.0.1:0",
            "--drain-timeout",
            "60s",
        ])
        .arg("--kubeconfig")
        .arg(self.sim.kubeconfig_path().unwrap())
        .arg("--root")
        .arg(self.node.path())
        .arg("--sysroot")
        .arg(self.sysroot.path())
        .arg("--test-only-simulated-boot")
        .arg(self.boot_id_file())
        .args(&self.extra_args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", self.bus.address())
        .env(
            "MCD_LOG",
            std::env::var("E2E_LOG").unwrap_or_else(|_| "info,machine_config_daemon=debug".into()),
        )
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        self.daemon = Some(cmd.spawn().unwrap());
    }

    /// SIGTERM and wait (as systemd stops the service).
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.daemon.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "the daemon did not stop within 30 s of SIGTERM:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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

    /// Poll until `pred` holds on the node (or a reboot request appears, when `stop_on_reboot`).
    pub async fn wait_for(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Lab) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(self) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; node annotations: {}\nsystemd calls: {:?}\n{}",
                    serde_json::to_string_pretty(&self.node_obj()["metadata"]["annotations"])
                        .unwrap(),
                    self.systemd.calls(),
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
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

    pub async fn wait_reboot_request(&mut self, n: usize) {
        self.wait_for(
            &format!("reboot request #{n}"),
            Duration::from_secs(90),
            move |lab| lab.systemd.reboots().len() >= n,
        )
        .await;
    }

    pub fn file(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.node.path().join(path.trim_start_matches('/'))).ok()
    }

    /// The image of the deployment the sysroot boots next.
    pub fn default_deployment_image(&self) -> String {
        let out = Command::new(BIN)
            .args(["status", "-o", "json", "--sysroot"])
            .arg(self.sysroot.path())
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        let status = &v["status"];
        let d = if status["pending"].is_object() {
            &status["pending"]
        } else {
            &status["booted"]
        };
        d["image"].as_str().unwrap_or("").to_string()
    }

    pub fn events(&self) -> Vec<String> {
        self.sim
            .list_objects("v1", "Event")
            .iter()
            .filter_map(|e| e["reason"].as_str().map(str::to_string))
            .collect()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.node.path().join(rel)
    }
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
