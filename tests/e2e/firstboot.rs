//! First-boot fixtures: what the machine-config-server serves (MCO `pkg/server/server.go`), what Ignition
//! writes, and the first-boot command as its unit runs it.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use super::{Lab, P, daemon_bin};

/// The encapsulated MachineConfig the machine-config-server serves for a first boot: the rendered config
/// with `spec.config` emptied to a bare Ignition version (`appendEncapsulated`, MCO `pkg/server/server.go`);
/// `osImageURL`, `kernelArguments`, `extensions`, `kernelType` and `fips` stay.
pub fn encapsulated(rendered: &Value) -> Value {
    let mut mc = rendered.clone();
    mc["spec"]["config"] = json!({"ignition": {"version": "3.4.0"}});
    mc
}

/// `/etc/machine-config-daemon/node-annotations.json` as the machine-config-server writes it
/// (`getNodeAnnotation`, MCO `pkg/server/server.go`).
pub fn node_annotations_file(config: &str, image: Option<&str>) -> Value {
    let mut a = json!({
        format!("{P}currentConfig"): config,
        format!("{P}desiredConfig"): config,
        format!("{P}firstPivotConfig"): config,
        format!("{P}state"): "Done",
    });
    if let Some(i) = image {
        a[format!("{P}currentImage")] = i.into();
        a[format!("{P}desiredImage")] = i.into();
    }
    a
}

impl Lab {
    /// What `journalctl -b -1 -u ostree-finalize-staged.service` shows in this simulated boot.
    pub(super) fn finalize_log(&self) -> PathBuf {
        self.work.path().join("boot_id.finalize-log")
    }

    /// The previous boot's `ostree-finalize-staged.service` failed and logged `log` (the daemon reads
    /// it as `journalctl -b -1 -o cat -u ostree-finalize-staged.service` would print it).
    pub fn finalize_failed_in_previous_boot(&self, log: &str) {
        std::fs::write(self.finalize_log(), log).unwrap();
    }

    /// The node's kernel runs in FIPS mode (`/proc/sys/crypto/fips_enabled` of the simulated node).
    pub fn set_fips(&self, on: bool) {
        self.write_file(
            "proc/sys/crypto/fips_enabled",
            if on { "1\n" } else { "0\n" },
        );
    }

    /// A freshly installed node about to boot for the first time, as the cluster delivers it: the base
    /// image booted, no on-disk config, the full rendered `target` in the cluster, its files, units and
    /// users written by Ignition, the machine-config-server's stripped encapsulated config and
    /// `node-annotations.json`, and a Node object as the kubelet registers it (no MCO annotations).
    pub fn prepare_first_boot(&self, target: &Value) {
        self.prepare_first_boot_served(target, &encapsulated(target));
    }

    /// [`Self::prepare_first_boot`] with `served` as the encapsulated config (an older server served the
    /// full rendered config).
    pub fn prepare_first_boot_served(&self, target: &Value, served: &Value) {
        for f in ["currentconfig", "currentimage"] {
            let _ = std::fs::remove_file(self.path(&format!("etc/machine-config-daemon/{f}")));
        }
        self.put_mc(target);
        self.ignite(target);
        self.write_file(
            "etc/ignition-machine-config-encapsulated.json",
            &serde_json::to_string(served).unwrap(),
        );
        let name = target["metadata"]["name"].as_str().unwrap();
        self.write_file(
            "etc/machine-config-daemon/node-annotations.json",
            &serde_json::to_string(&node_annotations_file(name, None)).unwrap(),
        );
        let keys = [
            "currentConfig",
            "desiredConfig",
            "state",
            "reason",
            "currentImage",
            "desiredImage",
        ];
        let registered: Vec<(&str, Option<&str>)> = keys.iter().map(|k| (*k, None)).collect();
        self.annotate(&registered);
    }

    /// Ignition's part of a first boot: `config`'s files, units and users written into the node root
    /// (by the daemon's own writer, from an empty config: there is no Ignition in this harness).
    pub fn ignite(&self, config: &Value) {
        use machine_config_daemon::config::MachineConfig;
        let root = machine_config_daemon::host::Root::open(self.node.path()).unwrap();
        let empty = MachineConfig::empty();
        let mut host_only = config.clone();
        for os in [
            "osImageURL",
            "kernelArguments",
            "kernelType",
            "extensions",
            "fips",
        ] {
            if let Some(spec) = host_only["spec"].as_object_mut() {
                spec.remove(os);
            }
        }
        let target = MachineConfig::from_value(host_only).unwrap();
        let plan = machine_config_daemon::plan::plan(&empty, &target, None, &Default::default());
        machine_config_daemon::host::apply(
            &root,
            &empty,
            &target,
            &plan,
            machine_config_daemon::host::ApplyOptions {
                dry_run: false,
                write_odc: false,
            },
        )
        .unwrap();
    }

    /// Run `firstboot-complete-machineconfig` as its unit does, with no API server, optionally with a
    /// crash point armed. `true` when it finished, `false` when the crash point killed it; panics if it
    /// failed any other way.
    pub fn run_firstboot(&self, failpoint: Option<&str>) -> bool {
        let mut cmd = Command::new(daemon_bin());
        cmd.arg("firstboot-complete-machineconfig");
        self.on_this_node(&mut cmd);
        cmd.env_remove("KUBECONFIG").env_remove("FAILPOINTS");
        if let Some(p) = failpoint {
            cmd.env("FAILPOINTS", format!("{p}=return"));
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let Some(p) = failpoint
            && stderr.contains(&format!("failpoint {p}: killing"))
        {
            return false;
        }
        assert!(
            out.status.success(),
            "firstboot failed: {}{stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
        true
    }
}
