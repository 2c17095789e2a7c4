//! End-to-end harness for the rpm-ostree backend: the real daemon binary (`start --backend rpm-ostree`)
//! against kube-sim, a private D-Bus with testbed's systemd service and the rpm-ostreed double
//! (`testbed::rpm_ostreed`), a node root in a temp dir, and a real registry for the extensions container.
//! A reboot is simulated: the harness stops the daemon once rpm-ostreed (after `FinalizeDeployment`) or
//! systemd was asked to reboot, lets the double finalize and boot as ostree would, writes a new boot id
//! and starts the daemon again.
//!
//! Used by `tests/daemon_rpm_ostree.rs` and `benches/daemon.rs` next to `tests/e2e/mod.rs` (whose
//! `mc`, `ignition` and constants it shares).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube_sim::{KubeSim, SimOptions};
use serde_json::{Value, json};
use testbed::rpm_ostreed::{FakeDeployment, FakeImage, FakeRpmOstreed, RpmOstreedState, repos};
use testbed::systemd::FakeSystemd;
use testbed::{ImageLab, NodeRoot, PrivateBus, Registry};

use machine_config_daemon::os::KernelType;

use super::e2e::{BIN, MCFG, NODE, P};

/// OS images the double's registry serves: `quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:<c…>`.
pub fn os_image(c: char) -> String {
    format!(
        "quay.io/openshift-release-dev/ocp-v4.0-art-dev@{}",
        digest(c)
    )
}

pub fn digest(c: char) -> String {
    format!("sha256:{}", std::iter::repeat_n(c, 64).collect::<String>())
}

fn kernel_type_of(s: &str) -> KernelType {
    match s {
        "realtime" => KernelType::Realtime,
        "64k-pages" => KernelType::SixtyFourKPages,
        _ => KernelType::Default,
    }
}

/// Every package the MCO's extensions and kernel types layer (what a full extensions container has).
pub const ALL_EXTENSION_PACKAGES: &[&str] = &[
    "kernel-rt-core",
    "kernel-rt-modules",
    "kernel-rt-modules-extra",
    "kernel-64k-core",
    "kernel-64k-modules",
    "kernel-64k-modules-core",
    "kernel-64k-modules-extra",
    "usbguard",
    "krb5-workstation",
    "libkadm5",
    "sysstat",
];

pub struct RpmLab {
    pub sim: KubeSim,
    pub bus: PrivateBus,
    pub systemd: FakeSystemd,
    pub rpm: FakeRpmOstreed,
    pub node: NodeRoot,
    pub images: ImageLab,
    pub registry: Registry,
    pub work: tempfile::TempDir,
    daemon: Option<Child>,
    runs: usize,
    pub boots: usize,
    pub extra_env: Vec<(String, String)>,
}

impl Drop for RpmLab {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl RpmLab {
    /// A node booted (by the double) into `initial`'s image with its kernel arguments and the packages
    /// its kernel type and extensions layer, `initial`'s files written, the Node annotated Done at it;
    /// the daemon not yet started. Images `os_image('1'..='4')` are in the double's registry.
    pub async fn new(initial: &Value) -> RpmLab {
        let work = tempfile::tempdir().unwrap();
        let sim = KubeSim::start(SimOptions {
            kubeconfig: Some(work.path().join("kubeconfig")),
            ..Default::default()
        })
        .await
        .unwrap();
        let bus = PrivateBus::start().unwrap();
        let systemd = FakeSystemd::start(&bus).await.unwrap();
        let node = NodeRoot::new().unwrap();
        node.write("etc/passwd", "root:x:0:0:root:/root:/bin/sh\ncore:x:1000:1000:CoreOS Admin:/var/home/core:/bin/bash\n").unwrap();
        node.write("etc/group", "root:x:0:\ncore:x:1000:\n")
            .unwrap();
        node.write(
            "etc/shadow",
            "root:*:19000:0:99999:7:::\ncore:*:19000:0:99999:7:::\n",
        )
        .unwrap();
        let images = ImageLab::new().unwrap();
        let registry = Registry::start().unwrap();
        node.trust_insecure_registry(&registry).unwrap();

        let mut state = RpmOstreedState::default();
        for (c, v) in [
            ('1', "418.94.1"),
            ('2', "418.94.2"),
            ('3', "418.94.3"),
            ('4', "418.94.4"),
        ] {
            state
                .images
                .insert(os_image(c), FakeImage::rhcos(&digest(c), v));
        }
        state.node_root = Some(node.path().to_path_buf());
        let spec = &initial["spec"];
        let image = spec["osImageURL"].as_str().unwrap().to_string();
        let info = state.images[&image].clone();
        let kargs: Vec<&str> = spec["kernelArguments"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let kernel_type = spec["kernelType"].as_str().unwrap_or("default");
        let extensions: Vec<String> = spec["extensions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let kt = kernel_type_of(kernel_type);
        let packages = machine_config_daemon::os::rpm_ostree::expected_packages(kt, &extensions);
        let removals: Vec<String> = if kt == KernelType::Default {
            Vec::new()
        } else {
            testbed::rpm_ostreed::BASE_KERNEL_PACKAGES
                .iter()
                .map(|s| s.to_string())
                .collect()
        };
        let booted = FakeDeployment::booted(&image, &info, &kargs).layered(&packages, &removals);
        state.deployments.push(booted);
        let rpm = FakeRpmOstreed::start(bus.address(), state).await.unwrap();

        let mut lab = RpmLab {
            sim,
            bus,
            systemd,
            rpm,
            node,
            images,
            registry,
            work,
            daemon: None,
            runs: 0,
            boots: 0,
            extra_env: Vec::new(),
        };
        // Install: the host part of the first config, as an installer would; the OS is the double's.
        let name = initial["metadata"]["name"].as_str().unwrap().to_string();
        lab.put_mc(initial);
        let file = lab.work.path().join("initial.json");
        std::fs::write(&file, serde_json::to_vec(initial).unwrap()).unwrap();
        let out = Command::new(BIN)
            .args(["apply", "--root"])
            .arg(lab.node.path())
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

    /// An extensions container with `packages` (and repo metadata unless `with_metadata` is false),
    /// pushed to the lab's registry; returns its pull spec by digest.
    pub fn extensions_image(&self, tag: &str, packages: &[&str], with_metadata: bool) -> String {
        let built = self
            .images
            .build_plain(tag, &[repos::extensions_layer(packages, with_metadata)])
            .unwrap();
        self.registry
            .push(&self.images, tag, "rhel-coreos-extensions")
            .unwrap();
        self.registry
            .image_by_digest("rhel-coreos-extensions", &built.manifest_digest)
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

    pub fn set_desired(&self, config: &str, image: Option<&str>) {
        let map = json!({
            format!("{P}desiredConfig"): config,
            format!("{P}desiredImage"): image,
        });
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

    /// A harmless Node change: the daemon syncs at once instead of waiting out its error backoff.
    pub fn poke(&self) {
        let stamp = format!(
            "{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        self.sim
            .merge_patch_object(
                "v1",
                "Node",
                None,
                NODE,
                &json!({"metadata": {"labels": {"e2e.test/poke": stamp}}}),
            )
            .unwrap();
    }

    pub fn unschedulable(&self) -> bool {
        self.node_obj()["spec"]["unschedulable"]
            .as_bool()
            .unwrap_or(false)
    }

    /// Whether the daemon ever cordoned the node.
    pub fn ever_cordoned(&self) -> bool {
        self.sim
            .requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.resource == "nodes")
            .filter_map(|r| r.body.as_deref())
            .filter_map(|b| serde_json::from_str::<Value>(b).ok())
            .any(|p| p["spec"]["unschedulable"] == json!(true))
    }

    pub fn event_messages(&self, reason: &str) -> Vec<String> {
        self.sim
            .list_objects("v1", "Event")
            .iter()
            .filter(|e| e["reason"] == reason)
            .filter_map(|e| e["message"].as_str().map(str::to_string))
            .collect()
    }

    pub fn mcn_condition_status(&self, ty: &str) -> Option<String> {
        let mcn = self.sim.get_object(MCFG, "MachineConfigNode", None, NODE)?;
        mcn["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == ty)
            .and_then(|c| c["status"].as_str().map(str::to_string))
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
        self.kubelet_reports_ready();
    }

    /// Play the kubelet starting in this boot: Ready with a fresh heartbeat (see `Lab::kubelet_reports_ready`).
    pub fn kubelet_reports_ready(&self) {
        if self.sim.get_object("v1", "Node", None, NODE).is_none() {
            return;
        }
        let now = k8s_openapi::jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        self.sim
            .merge_patch_object(
                "v1",
                "Node",
                None,
                NODE,
                &serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "True",
                    "lastHeartbeatTime": now, "lastTransitionTime": now}]}}),
            )
            .unwrap();
    }

    pub fn start(&mut self) {
        assert!(self.daemon.is_none(), "the daemon is already running");
        self.runs += 1;
        let log = std::fs::File::create(self.work.path().join(format!("daemon-{}.log", self.runs)))
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args([
            "start",
            "--node-name",
            NODE,
            "--metrics-listen",
            "127.0.0.1:0",
            "--drain-timeout",
            "60s",
            "--backend",
            "rpm-ostree",
        ])
        .arg("--kubeconfig")
        .arg(self.sim.kubeconfig_path().unwrap())
        .arg("--root")
        .arg(self.node.path())
        .arg("--test-only-simulated-boot")
        .arg(self.boot_id_file())
        .env("DBUS_SYSTEM_BUS_ADDRESS", self.bus.address())
        .env(
            "MCD_LOG",
            std::env::var("E2E_LOG").unwrap_or_else(|_| "info,machine_config_daemon=debug".into()),
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

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        let Some(mut child) = self.daemon.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
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

    /// Reboots requested so far, from rpm-ostreed (`FinalizeDeployment`) and from systemd.
    pub fn reboot_requests(&self) -> usize {
        self.rpm.state().reboots.len() + self.systemd.reboots().len()
    }

    /// The reboot the daemon asked for: stop it, shut down and boot (the double finalizes an unlocked
    /// staged deployment, drops a locked one), new boot id, start it again.
    pub async fn reboot(&mut self) {
        self.stop();
        self.rpm.reboot().await.unwrap();
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

    pub fn describe(&self) -> String {
        let st = self.rpm.state();
        format!(
            "node annotations: {}\nunschedulable: {}\nrpm-ostreed calls: {:#?}\ndeployments: {:#?}\nsystemd calls: {:?}\n{}",
            serde_json::to_string_pretty(&self.node_obj()["metadata"]["annotations"]).unwrap(),
            self.unschedulable(),
            st.calls,
            st.deployments,
            self.systemd.calls(),
            self.logs()
        )
    }

    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&RpmLab) -> bool,
    ) {
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

    pub async fn wait_reboot_request(&mut self, n: usize) {
        self.wait_for(
            &format!("reboot request #{n}"),
            Duration::from_secs(90),
            move |lab| lab.reboot_requests() >= n,
        )
        .await;
    }

    /// Done at `config`, and the NodeDone event out.
    pub async fn wait_updated(&mut self, config: &str) {
        let c = config.to_string();
        self.wait_for(
            &format!("Done at {config}"),
            Duration::from_secs(90),
            move |lab| {
                lab.annotation("state").as_deref() == Some("Done")
                    && lab.annotation("currentConfig").as_deref() == Some(c.as_str())
                    && lab
                        .event_messages("NodeDone")
                        .iter()
                        .any(|m| m.contains(&format!("currentConfig {c} ")))
            },
        )
        .await;
    }

    /// Every non-empty `reason` the daemon wrote, oldest first (the current one may already be the next
    /// retry's). A patch carries `state` only when it changes.
    pub fn degraded_reasons(&self) -> Vec<String> {
        let key_reason = format!("{P}reason");
        self.sim
            .requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.resource == "nodes")
            .filter_map(|r| r.body.as_deref())
            .filter_map(|b| serde_json::from_str::<Value>(b).ok())
            .filter_map(|p| {
                p["metadata"]["annotations"][&key_reason]
                    .as_str()
                    .map(str::to_string)
            })
            .filter(|r| !r.is_empty())
            .collect()
    }

    /// Wait until the daemon reported Degraded with a reason containing `containing`; returns that reason.
    pub async fn wait_degraded(&mut self, containing: &str) -> String {
        let needle = containing.to_string();
        self.wait_for(
            &format!("Degraded with a reason containing {containing:?}"),
            Duration::from_secs(90),
            move |lab| {
                lab.annotation("state").as_deref() != Some("Done")
                    && lab.degraded_reasons().iter().any(|r| r.contains(&needle))
            },
        )
        .await;
        self.degraded_reasons()
            .into_iter()
            .find(|r| r.contains(containing))
            .unwrap_or_default()
    }

    /// The daemon has started and settled at its config (the drift monitor is the last thing it starts).
    pub async fn wait_settled(&mut self) {
        let before = self.event_messages("ConfigDriftMonitorStarted").len();
        self.wait_for(
            "the daemon to settle",
            Duration::from_secs(60),
            move |lab| lab.event_messages("ConfigDriftMonitorStarted").len() > before,
        )
        .await;
    }

    pub fn file(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.node.path().join(path.trim_start_matches('/'))).ok()
    }

    /// `machine-config-daemon status -o FORMAT --backend rpm-ostree` on this node's bus.
    pub fn status(&self, format: &str) -> String {
        let out = Command::new(BIN)
            .args(["status", "--backend", "rpm-ostree", "-o", format])
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.bus.address())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}
