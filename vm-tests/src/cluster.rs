//! The cluster side of daemon scenarios: the `kube-sim` binary (a Kubernetes API server simulator) on the
//! host's 127.0.0.1, seen by the guest only through a guestfwd port, and driven from the host with
//! `kubectl` as an admin (or the MCO controller) would: annotate the node, create MachineConfigs, read
//! the node's annotations, its events and pods.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::cmd::CommandExt;

/// Every MCO annotation key starts with this.
pub const PREFIX: &str = "machineconfiguration.openshift.io/";
pub const MCFG: &str = "machineconfiguration.openshift.io/v1";

/// A running kube-sim, killed on drop.
#[derive(Debug)]
pub struct KubeSim {
    child: Child,
    port: u16,
    dir: PathBuf,
    kubeconfig: PathBuf,
    node: String,
}

/// The node as `kubectl get node -o json` shows it, with the fields the scenarios look at.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub raw: Value,
}

impl NodeView {
    /// A `machineconfiguration.openshift.io/<key>` annotation.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.raw["metadata"]["annotations"][format!("{PREFIX}{key}")].as_str()
    }

    pub fn state(&self) -> Option<&str> {
        self.annotation("state")
    }

    pub fn unschedulable(&self) -> bool {
        self.raw["spec"]["unschedulable"].as_bool().unwrap_or(false)
    }

    /// `state=Done` at `config`.
    pub fn done_at(&self, config: &str) -> bool {
        self.state() == Some("Done") && self.annotation("currentConfig") == Some(config)
    }

    /// The MCO annotations, without their prefix, for messages.
    pub fn mco_annotations(&self) -> BTreeMap<String, String> {
        self.raw["metadata"]["annotations"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| {
                        Some((k.strip_prefix(PREFIX)?.to_string(), v.as_str()?.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One event, as `kubectl get events` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub reason: String,
    pub message: String,
    pub kind: String,
}

impl KubeSim {
    /// Start `bin` on a free 127.0.0.1 port with `objects` loaded (status kept as written, as a kubelet
    /// would have reported it). Logs and the kubeconfig go into `dir`.
    pub fn start(bin: &Path, dir: &Path, node: &str, objects: &[Value]) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let load = dir.join("kube-sim-objects.yaml");
        let mut text = String::new();
        for obj in objects {
            // JSON is YAML: one document per object.
            let _ = writeln!(text, "---\n{}", serde_json::to_string(obj)?);
        }
        fs::write(&load, text)?;
        let kubeconfig = dir.join("kubeconfig");
        let stdout = dir.join("kube-sim.out");
        let mut child = Command::new(bin)
            .args(["--port", "0", "--kubeconfig"])
            .arg(&kubeconfig)
            .arg("--load")
            .arg(&load)
            .env("KUBE_SIM_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout)?)
            .stderr(fs::File::create(dir.join("kube-sim.log"))?)
            .spawn()
            .with_context(|| format!("Starting {}", bin.display()))?;
        // It prints its URL once it listens.
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            let printed = fs::read_to_string(&stdout).unwrap_or_default();
            if let Some(port) = printed
                .lines()
                .find_map(|l| l.trim().strip_prefix("http://127.0.0.1:"))
                .and_then(|p| p.parse::<u16>().ok())
            {
                break port;
            }
            if let Some(status) = child.try_wait()? {
                let log = fs::read_to_string(dir.join("kube-sim.log")).unwrap_or_default();
                bail!("kube-sim exited ({status}): {}", log.trim());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("kube-sim did not print its address within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        tracing::info!(port, "kube-sim listening on 127.0.0.1");
        Ok(Self {
            child,
            port,
            dir: dir.to_path_buf(),
            kubeconfig,
            node: node.to_string(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn node_name(&self) -> &str {
        &self.node
    }

    fn kubectl_command(&self) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// Run kubectl; returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_command().args(args).run_stdout()
    }

    /// `kubectl apply -f -` with `obj` (create or update).
    pub fn apply(&self, obj: &Value) -> Result<()> {
        let mut child = self
            .kubectl_command()
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("Starting kubectl apply")?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(serde_json::to_string(obj)?.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "kubectl apply of {} failed: {}",
                obj["metadata"]["name"],
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    pub fn node(&self) -> Result<NodeView> {
        let text = self.kubectl(&["get", "node", &self.node, "-o", "json"])?;
        Ok(NodeView {
            raw: serde_json::from_str(&text).context("Parsing kubectl's node JSON")?,
        })
    }

    /// Set (`Some`) or remove (`None`) MCO annotations on the node, as the MCO controller does.
    pub fn annotate(&self, changes: &[(&str, Option<&str>)]) -> Result<()> {
        let mut args = vec![
            "annotate".to_string(),
            "--overwrite".into(),
            "node".into(),
            self.node.clone(),
        ];
        for (key, value) in changes {
            args.push(match value {
                Some(v) => format!("{PREFIX}{key}={v}"),
                None => format!("{PREFIX}{key}-"),
            });
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.kubectl(&args)?;
        Ok(())
    }

    /// Play the kubelet that just started on the node: its Ready condition with a heartbeat of now
    /// (kubernetes pkg/kubelet/nodestatus/setters.go ReadyCondition), through the status subresource.
    pub fn kubelet_ready(&self) -> Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let now = rfc3339(now);
        let patch = json!({"status": {"conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        }]}});
        self.kubectl(&[
            "patch",
            "node",
            &self.node,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ])?;
        Ok(())
    }

    /// Events about the node (oldest first).
    pub fn events(&self) -> Result<Vec<Event>> {
        let text = self.kubectl(&["get", "events", "-A", "-o", "json"])?;
        let list: Value = serde_json::from_str(&text)?;
        let mut events: Vec<(String, Event)> = list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|e| {
                        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
                        (
                            s(&e["metadata"]["resourceVersion"]),
                            Event {
                                reason: s(&e["reason"]),
                                message: s(&e["message"]),
                                kind: s(&e["type"]),
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        events.sort_by_key(|(rv, _)| rv.parse::<u64>().unwrap_or(0));
        Ok(events.into_iter().map(|(_, e)| e).collect())
    }

    /// The reasons of the node's events, oldest first.
    pub fn event_reasons(&self) -> Result<Vec<String>> {
        Ok(self.events()?.into_iter().map(|e| e.reason).collect())
    }

    /// `namespace/name` of the pods bound to the node.
    pub fn pods_on_node(&self) -> Result<Vec<String>> {
        let text = self.kubectl(&[
            "get",
            "pods",
            "-A",
            "--field-selector",
            &format!("spec.nodeName={}", self.node),
            "-o",
            "json",
        ])?;
        let list: Value = serde_json::from_str(&text)?;
        let mut pods: Vec<String> = list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|p| {
                        format!(
                            "{}/{}",
                            p["metadata"]["namespace"].as_str().unwrap_or_default(),
                            p["metadata"]["name"].as_str().unwrap_or_default()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        pods.sort();
        Ok(pods)
    }

    /// Write what kube-sim holds (node, events, pods, MachineConfigs) into the run directory.
    pub fn dump(&self) {
        for (file, args) in [
            ("kube-node.yaml", vec!["get", "node", "-o", "yaml"]),
            ("kube-events.txt", vec!["get", "events", "-A"]),
            ("kube-pods.txt", vec!["get", "pods", "-A", "-o", "wide"]),
            (
                "kube-machineconfigs.yaml",
                vec!["get", "machineconfigs", "-o", "yaml"],
            ),
        ] {
            let text = match self.kubectl(&args) {
                Ok(t) => t,
                Err(e) => format!("{e:#}"),
            };
            let _ = fs::write(self.dir.join(file), text);
        }
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Unix seconds as RFC 3339 UTC (`2024-05-01T12:00:00Z`), the API's time format.
fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A kubeconfig for the guest: the API server at `server` (e.g. `http://10.0.2.100:6443`).
pub fn guest_kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n    server: {server}\n\
         users:\n- name: node\n  user: {{}}\ncontexts:\n- name: node\n  context:\n    cluster: kube-sim\n    user: node\n\
         current-context: node\n"
    )
}

/// A worker Node as the kubelet registered it, with `desiredConfig` and (when given) `currentConfig`
/// as the MCO's bootstrap sets them, but no `state`: only the daemon writes `state=Done`, so a scenario
/// that sees it knows the daemon verified the node (an empty state counts as Done to the MCO).
pub fn node_object(name: &str, current: Option<&str>, desired: &str) -> Value {
    let mut annotations = serde_json::Map::new();
    annotations.insert(format!("{PREFIX}desiredConfig"), desired.into());
    if let Some(c) = current {
        annotations.insert(format!("{PREFIX}currentConfig"), c.into());
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "node-role.kubernetes.io/worker": "",
            },
            "annotations": annotations,
        },
        "spec": {},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]},
    })
}

/// A running, ready pod on `node` (as the kubelet would report it). `daemonset` makes it owned by a
/// DaemonSet, which a drain leaves alone.
pub fn ready_pod(namespace: &str, name: &str, node: &str, daemonset: Option<&str>) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "nodeName": node,
            // The simulated kubelet finishes terminations after the grace period.
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "app", "image": "registry.example/app:1"}],
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "True"},
                {"type": "ContainersReady", "status": "True"},
                {"type": "PodScheduled", "status": "True"},
            ],
        },
    });
    if let Some(ds) = daemonset {
        pod["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": "DaemonSet", "name": ds,
            "uid": "00000000-0000-0000-0000-0000000000d5", "controller": true,
        }]);
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_view_reads_mco_annotations() {
        let node = NodeView {
            raw: node_object("n1", Some("rendered-1"), "rendered-2"),
        };
        assert_eq!(node.annotation("desiredConfig"), Some("rendered-2"));
        assert_eq!(node.annotation("currentConfig"), Some("rendered-1"));
        assert!(
            !node.done_at("rendered-1"),
            "Done is the daemon's to write, not the fixture's"
        );
        assert!(!node.unschedulable());
        let fresh = NodeView {
            raw: node_object("n1", None, "rendered-fb"),
        };
        assert_eq!(fresh.state(), None);
        assert_eq!(
            fresh.mco_annotations(),
            BTreeMap::from([("desiredConfig".to_string(), "rendered-fb".to_string())])
        );
    }

    #[test]
    fn guest_kubeconfig_points_at_the_forwarded_server() {
        let text = guest_kubeconfig("http://10.0.2.100:6443");
        assert!(text.contains("server: http://10.0.2.100:6443\n"), "{text}");
        assert!(text.contains("current-context: node"), "{text}");
    }

    #[test]
    fn api_times_are_rfc3339_utc() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_714_564_800), "2024-05-01T12:00:00Z");
    }
}
