//! A node for daemon scenarios: the guest image with the real daemon and units, installed from its own
//! OS image; kube-sim on the host with the Node and the MachineConfigs; the registry with the images.
//!
//! The guest reaches exactly two host ports, through guestfwd: the registry (`10.0.2.100:5000`) and
//! kube-sim (`10.0.2.100:6443`). Everything the daemon is told (pull specs, the API server URL) is that
//! view; the host side drives kube-sim with `kubectl` and reads the guest through the harness's command
//! channel.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use serde_json::{Value, json};

use super::{Run, Suite};
use crate::cluster::{self, KubeSim, MCFG, NodeView};
use crate::image::{DiskImage, ImageSpec, OsImageSpec};
use crate::osimages::{self, OsRegistry};
use crate::ostree_status::Status;
use crate::overlay::Overlay;
use crate::qemu::{GuestForward, HOST_ADDR_IN_GUEST};
use crate::vm::{Exit, Vm, VmConfig};
use crate::workspace::Workspace;

/// The Node's name (the daemon gets it from `NODE_NAME` in its environment file).
pub const NODE: &str = "vmtest-node";
/// kube-sim's port in the guest's view.
pub const GUEST_API_PORT: u16 = 6443;
/// The config the node is installed with.
pub const INSTALLED_CONFIG: &str = "rendered-worker-1";
/// Where the guest's stand-in for CRI-O records its starts and reloads.
pub const CRIO_EVENTS: &str = "/run/crio-events";
/// The units whose journal a run keeps.
const JOURNAL_UNITS: &str = "-u machine-config-daemon -u machine-config-daemon-firstboot \
                             -u ostree-finalize-staged -u machine-config-daemon-reboot -u crio";
/// From asking for an update to the guest's reboot: pull, drain, stage under emulation.
const REBOOT_WAIT: Duration = Duration::from_secs(600);
/// Where the daemon's environment file lives on Debian.
const ENV_FILE: &str = "/etc/default/machine-config-daemon";
const KUBECONFIG: &str = "/etc/kubernetes/kubeconfig";

/// The daemon binary (a release build; `vm-tests/run` builds it and sets this).
const DAEMON_BIN_ENV: &str = "VMTEST_DAEMON_BIN";
/// The kube-sim binary (`vm-tests/run` builds it and sets this).
const KUBE_SIM_BIN_ENV: &str = "VMTEST_KUBE_SIM_BIN";

fn binary_from_env(var: &str, what: &str) -> Result<PathBuf> {
    let path = std::env::var_os(var).map(PathBuf::from).with_context(|| {
        format!("{var} is not set: run the suite with vm-tests/run, which builds {what}")
    })?;
    ensure!(
        path.is_file(),
        "{var}={} does not exist (build {what} first)",
        path.display()
    );
    Ok(path)
}

/// The registries.conf the image ships and the installed config carries: the guest's registry is plain
/// HTTP.
pub fn registries_conf() -> String {
    format!(
        "# vm-tests: the host's registry, through guestfwd, speaks plain HTTP.\n\
         [[registry]]\nlocation = \"{}\"\ninsecure = true\n",
        osimages::guest_registry()
    )
}

/// A CRI-O stand-in: a long-running service whose reload is recorded, so a test sees the daemon's
/// D-Bus ReloadUnit reach it.
const CRIO_UNIT: &str = "\
# vm-tests stand-in for CRI-O: the daemon reloads crio.service after registries.conf changes.
[Unit]
Description=vm-tests CRI-O stand-in

[Service]
Type=simple
ExecStart=/bin/sh -c 'echo start >> /run/crio-events; exec sleep infinity'
ExecReload=/bin/sh -c 'echo reload >> /run/crio-events'

[Install]
WantedBy=multi-user.target
";

/// The guest image: the harness layer plus the daemon binary, the real units from `systemd/`, their
/// configuration, and a `core` user; installed from its own OS image (`10.0.2.100:5000/os@…`).
pub fn image_spec(ws: &Workspace) -> Result<ImageSpec> {
    let repo = ws
        .source_dir
        .parent()
        .context("vm-tests has no parent directory")?
        .to_path_buf();
    let units = repo.join("systemd");
    let unit = |name: &str| (format!("/usr/lib/systemd/system/{name}"), units.join(name));
    let env = format!(
        "# vm-tests: the node's name in kube-sim and how to reach the API server.\n\
         NODE_NAME={NODE}\n\
         MCD_ARGS=--kubeconfig {KUBECONFIG} --drain-timeout 5m\n\
         MCD_FIRSTBOOT_ARGS=\n\
         MCD_LOG=info,machine_config_daemon=debug\n"
    );
    let mut overlay = Overlay::new().file(
        "/usr/bin/machine-config-daemon",
        binary_from_env(DAEMON_BIN_ENV, "the daemon (cargo build --release)")?,
        0o755,
    );
    for name in [
        "machine-config-daemon.service",
        "machine-config-daemon-firstboot.service",
        "firstboot-osupdate.target",
    ] {
        let (dest, source) = unit(name);
        overlay = overlay.file(&dest, source, 0o644);
    }
    let overlay = overlay
        .file(
            "/usr/lib/systemd/system-preset/80-machine-config-daemon.preset",
            units.join("80-machine-config-daemon.preset"),
            0o644,
        )
        .file(
            "/usr/lib/tmpfiles.d/machine-config-daemon.conf",
            units.join("machine-config-daemon.tmpfiles.conf"),
            0o644,
        )
        // What the Debian package adds for Debian's sshd to read authorized_keys.d/ignition.
        .file(
            "/etc/ssh/sshd_config.d/50-machine-config-daemon.conf",
            repo.join("packaging/debian/sshd-authorized-keys.conf"),
            0o644,
        )
        // What `systemctl preset` makes of the preset file and the units' [Install] sections.
        .enable("machine-config-daemon.service", "multi-user.target")
        .enable("firstboot-osupdate.target", "multi-user.target")
        .require(
            "machine-config-daemon-firstboot.service",
            "firstboot-osupdate.target",
        )
        .contents(ENV_FILE, env, 0o644)
        .contents(
            KUBECONFIG,
            cluster::guest_kubeconfig(&format!("http://{HOST_ADDR_IN_GUEST}:{GUEST_API_PORT}")),
            0o600,
        )
        .contents("/etc/containers/registries.conf", registries_conf(), 0o644)
        .contents("/usr/lib/systemd/system/crio.service", CRIO_UNIT, 0o644)
        .enable("crio.service", "multi-user.target")
        // The user a MachineConfig's SSH keys are for (/home is /var/home on ostree systems).
        .contents(
            "/usr/lib/sysusers.d/vmtest-core.conf",
            "u core 1000 \"CoreOS Admin\" /var/home/core /bin/bash\n",
            0o644,
        )
        .contents(
            "/usr/lib/tmpfiles.d/vmtest-core.conf",
            "d /var/home/core 0700 core core -\n",
            0o644,
        );
    Ok(ImageSpec {
        overlay,
        os_image: Some(OsImageSpec {
            guest_registry: osimages::guest_registry(),
            repository: osimages::REPOSITORY.into(),
            tag: "node".into(),
            version: "1.0".into(),
        }),
        ..ImageSpec::new("daemon")
    })
}

/// One file of a MachineConfig: path, contents, mode.
pub type McFile<'a> = (&'a str, &'a str, u32);

/// A MachineConfig with an Ignition 3.4 config (files as base64 data URLs, core's SSH keys).
pub fn machine_config(
    name: &str,
    image: Option<&str>,
    kargs: &[&str],
    files: &[McFile<'_>],
    ssh_keys: &[&str],
) -> Value {
    let files: Vec<Value> = files
        .iter()
        .map(|(path, contents, mode)| {
            json!({
                "path": path,
                "mode": mode,
                "overwrite": true,
                "contents": {"source": format!(
                    "data:text/plain;charset=utf-8;base64,{}",
                    base64::engine::general_purpose::STANDARD.encode(contents)
                )},
            })
        })
        .collect();
    let mut config = json!({"ignition": {"version": "3.4.0"}, "storage": {"files": files}});
    if !ssh_keys.is_empty() {
        config["passwd"] = json!({"users": [{"name": "core", "sshAuthorizedKeys": ssh_keys}]});
    }
    let mut spec = json!({"config": config, "kernelArguments": kargs});
    if let Some(image) = image {
        spec["osImageURL"] = image.into();
    }
    json!({
        "apiVersion": MCFG,
        "kind": "MachineConfig",
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// The config the node is installed with: the OS image it boots and the registries.conf it has.
pub fn installed_config(image: &str) -> Value {
    machine_config(
        INSTALLED_CONFIG,
        Some(image),
        &[],
        &[("/etc/containers/registries.conf", &registries_conf(), 0o644)],
        &[],
    )
}

/// Everything a daemon scenario works with.
#[derive(Debug)]
pub struct Node {
    pub vm: Vm,
    pub kube: KubeSim,
    /// Pull spec of the image the disk was installed from (the guest's view).
    pub installed_image: String,
    pub image: DiskImage,
    /// The harness plays the kubelet: after each boot it reports the node Ready (with this boot's
    /// heartbeat), unless withheld (a kubelet that never comes up).
    pub kubelet_withheld: bool,
}

/// How the scenario wants the node set up before its first boot.
#[derive(Debug, Default)]
pub struct Setup {
    /// Objects kube-sim starts with besides the MachineConfigs (e.g. pods on the node).
    pub objects: Vec<Value>,
    /// MachineConfigs to create besides the installed one.
    pub configs: Vec<Value>,
    /// The Node as the kubelet registered it: `None` gives a node at the installed config, Done.
    pub node: Option<Value>,
}

/// The daemon image (built once per suite).
pub fn daemon_image(suite: &mut Suite) -> Result<DiskImage> {
    let spec = image_spec(&suite.ws)?;
    suite.image(&spec)
}

/// The suite's registry, with the image the daemon disk was installed from pushed to it.
pub fn registry(suite: &mut Suite) -> Result<&mut OsRegistry> {
    let image = daemon_image(suite)?;
    let installed = image
        .os_image
        .context("the daemon image was not installed from an OS image")?;
    let os = suite.os_registry(&installed)?;
    os.installed()?;
    Ok(os)
}

impl Node {
    /// kube-sim with the node and configs, a VM from a fresh copy of the image; not booted yet.
    pub fn create(suite: &mut Suite, run: &mut Run, setup: Setup) -> Result<Self> {
        let image = daemon_image(suite)?;
        let (installed_image, registry) = {
            let os = registry(suite)?;
            (os.installed()?, os.forward())
        };
        let mut objects = vec![
            setup.node.unwrap_or_else(|| {
                cluster::node_object(NODE, Some(INSTALLED_CONFIG), INSTALLED_CONFIG)
            }),
            installed_config(&installed_image),
        ];
        objects.extend(setup.configs);
        objects.extend(setup.objects);
        let kube = KubeSim::start(
            &binary_from_env(KUBE_SIM_BIN_ENV, "kube-sim")?,
            &run.dir,
            NODE,
            &objects,
        )?;
        let config = VmConfig {
            forwards: vec![
                registry,
                GuestForward {
                    guest_port: GUEST_API_PORT,
                    host_port: kube.port(),
                },
            ],
            // The daemon's updates (pull, drain, stage under emulation) come before its reboot.
            shutdown_timeout: Duration::from_secs(600),
            ..VmConfig::default()
        };
        let vm = Vm::create(&image, &run.dir, config)?;
        Ok(Self {
            vm,
            kube,
            installed_image,
            image,
            kubelet_withheld: false,
        })
    }

    /// Boot what the boot entries say, to the harness's ready marker; then the kubelet reports the node
    /// Ready (unless withheld), as a kubelet does right after it starts.
    pub fn boot(&mut self) -> Result<()> {
        self.vm.boot()?;
        if !self.kubelet_withheld {
            self.kube.kubelet_ready()?;
        }
        Ok(())
    }

    /// Poll the Node (every second) until `pred` holds. Fails at once if the VM goes down, and after
    /// `timeout` with the node's annotations in the message.
    pub fn wait_node(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&NodeView) -> bool,
    ) -> Result<NodeView> {
        let deadline = Instant::now() + timeout;
        loop {
            let node = self.kube.node()?;
            if pred(&node) {
                return Ok(node);
            }
            if let Some(exit) = self.vm.check_exit()? {
                bail!(
                    "the VM went down ({exit:?}) while waiting for {what}; node annotations: {:?}",
                    node.mco_annotations()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after {} s waiting for {what}; node annotations: {:?}",
                    timeout.as_secs(),
                    node.mco_annotations()
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Wait until the node reports `state=Done` at `config`.
    pub fn wait_done(&mut self, config: &str, timeout: Duration) -> Result<NodeView> {
        self.wait_node(&format!("state=Done at {config}"), timeout, |n| {
            n.done_at(config)
        })
    }

    /// Wait for an event with `reason` beyond the first `seen` events; polls every 250 ms.
    pub fn wait_event(&mut self, reason: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.kube.event_reasons()?.iter().any(|r| r == reason) {
                return Ok(());
            }
            if let Some(exit) = self.vm.check_exit()? {
                bail!("the VM went down ({exit:?}) before a {reason} event");
            }
            if Instant::now() > deadline {
                bail!(
                    "no {reason} event within {} s; events: {:?}",
                    timeout.as_secs(),
                    self.kube.event_reasons()?
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Wait for the guest to reboot by itself (the daemon's update). Fails early, with the reason, if
    /// the daemon reports the node Degraded or Unreconcilable instead, and after `REBOOT_WAIT`.
    pub fn wait_daemon_reboot(&mut self) -> Result<()> {
        let deadline = Instant::now() + REBOOT_WAIT;
        let mut next_look = Instant::now();
        // A node Degraded before (after a rollback) stays Degraded through the next update, as the MCD
        // does: only a new reason is a failure.
        let before = self.kube.node()?;
        let reason_before = before.annotation("reason").unwrap_or_default().to_string();
        let degraded_before = before.state() == Some("Degraded");
        loop {
            match self.vm.check_exit()? {
                Some(Exit::Reboot) => return Ok(()),
                Some(other) => bail!("the guest went down ({other:?}) instead of rebooting"),
                None => {}
            }
            if Instant::now() >= next_look {
                let node = self.kube.node()?;
                let same_as_before = degraded_before
                    && node.state() == Some("Degraded")
                    && node.annotation("reason").unwrap_or_default() == reason_before;
                if let Some(state @ ("Degraded" | "Unreconcilable")) =
                    node.state().filter(|_| !same_as_before)
                {
                    bail!(
                        "the daemon reported {state} instead of rebooting: {}",
                        node.annotation("reason").unwrap_or_default()
                    );
                }
                next_look = Instant::now() + Duration::from_secs(2);
            }
            if Instant::now() > deadline {
                bail!(
                    "the guest did not reboot within {} s; node annotations: {:?}",
                    REBOOT_WAIT.as_secs(),
                    self.kube.node()?.mco_annotations()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The daemon reboots the node by itself: wait for the guest's reboot, then boot what the boot
    /// entries now say (the harness is the bootloader).
    pub fn follow_daemon_reboot(&mut self, run: &mut Run, label: &str) -> Result<()> {
        run.step(label, || self.wait_daemon_reboot())?;
        run.step("boot after the reboot", || self.boot())
    }

    /// The daemon's view of the OS (`machine-config-daemon status -o json` in the guest).
    pub fn os_status(&mut self) -> Result<Value> {
        let text = self.vm.exec_ok("machine-config-daemon status -o json")?;
        let doc: Value = serde_json::from_str(&text)
            .with_context(|| format!("Parsing the daemon's status JSON: {text}"))?;
        Ok(doc["status"].clone())
    }

    /// `ostree admin status` in the guest.
    pub fn ostree_status(&mut self) -> Result<Status> {
        self.vm.ostree_status()
    }

    /// The booted deployment runs `image` (by manifest digest, as the daemon and ostree record it).
    pub fn assert_booted_image(&mut self, image: &str) -> Result<Value> {
        let status = self.os_status()?;
        let booted = &status["booted"];
        ensure!(
            booted["imageDigest"].as_str() == Some(OsRegistry::digest_of(image)),
            "the booted deployment is not {image}: {}",
            serde_json::to_string_pretty(&status)?
        );
        ensure!(
            booted["image"].as_str() == Some(image),
            "the booted deployment's origin names {:?}, not {image}",
            booted["image"]
        );
        Ok(status)
    }

    /// A file in the guest (`None` when it does not exist).
    pub fn guest_file(&mut self, path: &str) -> Result<Option<String>> {
        let out = self.vm.exec(&format!("cat {path}"))?;
        Ok((out.status == 0).then_some(out.stdout))
    }

    /// How many boots the guest's journal knows of (persistent journal).
    pub fn journal_boots(&mut self) -> Result<usize> {
        let out = self
            .vm
            .exec_ok("journalctl --list-boots --no-pager -q | wc -l")?;
        out.trim()
            .parse()
            .with_context(|| format!("journalctl --list-boots counted {out:?}"))
    }

    /// Save the daemon's journal (all boots) and kube-sim's objects into the run directory; best
    /// effort, for reading after a failure (or a pass).
    pub fn collect_logs(&mut self, run: &Run) {
        self.kube.dump();
        if !self.vm.is_running() {
            // The guest's persistent journal, read from its disk (what a power cut left of it).
            if let Err(e) = self.journal_from_disk(run) {
                tracing::warn!(error = %format!("{e:#}"), "could not read the journal from the disk");
            }
            return;
        }
        let script = format!("journalctl --no-pager -o short-monotonic {JOURNAL_UNITS}");
        match self.vm.exec(&script) {
            Ok(out) => {
                let _ = std::fs::write(run.dir.join("guest-daemon-journal.txt"), out.stdout);
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "could not read the guest journal"),
        }
        // The same with every structured field (the daemon logs `error=…` etc. as journal fields).
        let script = "journalctl --no-pager -o json -u machine-config-daemon \
                      -u machine-config-daemon-firstboot";
        if let Ok(out) = self.vm.exec(script) {
            let _ = std::fs::write(run.dir.join("guest-daemon-journal.json"), out.stdout);
        }
        if let Ok(out) = self.vm.exec("journalctl -b --no-pager -o short-monotonic") {
            let _ = std::fs::write(run.dir.join("guest-journal-this-boot.txt"), out.stdout);
        }
    }

    fn journal_from_disk(&self, run: &Run) -> Result<()> {
        let files = run.dir.join("guest-journal-files");
        self.vm
            .disk()?
            .rdump("/ostree/deploy/debian/var/log/journal", &files)?;
        let out = std::process::Command::new("journalctl")
            .arg("-D")
            .arg(files.join("journal"))
            .args(["--no-pager", "-o", "short-monotonic"])
            .args(JOURNAL_UNITS.split_whitespace())
            .output()
            .context("Running journalctl -D")?;
        std::fs::write(run.dir.join("guest-daemon-journal.txt"), out.stdout)?;
        Ok(())
    }

    /// Power off and record the boots.
    pub fn finish(mut self, run: &mut Run) -> Result<()> {
        self.collect_logs(run);
        run.step("power off", || self.vm.poweroff())?;
        run.record_boots(self.vm.boots());
        Ok(())
    }
}

/// Run `body` on a node; on failure keep kube-sim's objects and the guest's journal in the run
/// directory (the VM is still up unless it was the VM that failed).
pub fn with_node(
    run: &mut Run,
    mut node: Node,
    body: impl FnOnce(&mut Node, &mut Run) -> Result<()>,
) -> Result<()> {
    match body(&mut node, run) {
        Ok(()) => node.finish(run),
        Err(e) => {
            node.collect_logs(run);
            run.record_boots(node.vm.boots());
            Err(e)
        }
    }
}

/// Boot counts and exits, for messages.
pub fn boot_history(vm: &Vm) -> Vec<Option<Exit>> {
    vm.boots().iter().map(|b| b.exit).collect()
}
