//! Health-gate fixtures: the kubelet's Ready heartbeat after each simulated boot, and what an admin reads
//! about the last gate (`status`, `/metrics`, the record under /var).

use std::process::Command;

use serde_json::{Value, json};

use super::{BIN, Lab, NODE, strip_ansi};

impl Lab {
    /// Play the kubelet starting in this boot: the Node's Ready condition with a fresh heartbeat
    /// (kubernetes pkg/kubelet/nodestatus/setters.go ReadyCondition sets `lastHeartbeatTime` to now).
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
                &json!({"status": {"conditions": [{"type": "Ready", "status": "True",
                    "reason": "KubeletReady", "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": now, "lastTransitionTime": now}]}}),
            )
            .unwrap();
    }

    /// `GET path` of the running daemon's metrics listener (its address is in its log).
    pub fn http_get(&self, path: &str) -> Option<String> {
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
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.split("\r\n\r\n").nth(1).map(str::to_string)
    }

    /// The value of the metric sample starting with `prefix` (e.g. `mcd_rollbacks_total`).
    pub fn metric(&self, prefix: &str) -> Option<f64> {
        self.http_get("/metrics")?
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// The last health gate as the daemon recorded it.
    pub fn gate_record(&self) -> Option<Value> {
        let text = self.file("/var/lib/machine-config-daemon/health-gate.json")?;
        serde_json::from_str(&text).ok()
    }

    /// `machine-config-daemon status` of this node (`-o text` or `-o json`).
    pub fn status_output(&self, format: &str) -> String {
        let out = Command::new(BIN)
            .args(["status", "-o", format, "--sysroot"])
            .arg(self.sysroot.path())
            .arg("--root")
            .arg(self.node.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}
