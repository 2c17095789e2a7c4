//! Prometheus metrics with the MCD's `mcd_*` names plus our own, and the `/metrics` + `/healthz` endpoint
//! (127.0.0.1:8797 by default, as the MCD, behind kube-rbac-proxy in a cluster).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpdateLabels {
    pub config: String,
    pub err: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OsLabels {
    pub os: String,
    pub version: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GateLabels {
    /// `passed`, `failed` or `rolled_back`.
    pub result: String,
    pub config: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    // The MCD's names and kinds (mco-protocol.md §9).
    pub host_os_and_version: Family<OsLabels, Gauge>,
    pub pivot_errors: Gauge,
    pub state: Family<StateLabels, Gauge<f64, AtomicU64>>,
    pub reboots_failed: Counter,
    pub update_state: Family<UpdateLabels, Gauge<f64, AtomicU64>>,
    pub config_drift: Gauge<f64, AtomicU64>,
    // Ours.
    pub phase_duration: Family<PhaseLabels, Histogram>,
    pub bytes_prefetched: Counter,
    pub drain_blocked_seconds: Gauge<f64, AtomicU64>,
    pub reboots_requested: Counter,
    pub updates_completed: Counter,
    /// The OS image pull in progress: compressed bytes downloaded and to download (both 0 when
    /// none is running).
    pub image_pull_bytes_done: Gauge,
    pub image_pull_bytes_total: Gauge,
    /// Unix seconds of the last health gate result, by result and config.
    pub health_gate: Family<GateLabels, Gauge<f64, AtomicU64>>,
    /// Rollbacks to the previous deployment after a failed health gate (counted when it booted).
    pub rollbacks: Counter,
    /// The same in layers.
    pub image_pull_layers_done: Gauge,
    pub image_pull_layers_total: Gauge,
    /// Unix seconds of the driver loop's last turn (for `/healthz`).
    heartbeat: AtomicI64,
    /// `cannot reach the API server at URL: cause` while the last request to it failed.
    api_problem: Mutex<Option<String>>,
    /// Why the last sync failed, while it is being retried (shown by `/healthz`).
    sync_problem: std::sync::Mutex<Option<String>>,
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::default(),
            host_os_and_version: Family::default(),
            pivot_errors: Gauge::default(),
            state: Family::default(),
            reboots_failed: Counter::default(),
            update_state: Family::default(),
            config_drift: Gauge::default(),
            phase_duration: Family::new_with_constructor(|| {
                Histogram::new([0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0])
            }),
            bytes_prefetched: Counter::default(),
            drain_blocked_seconds: Gauge::default(),
            reboots_requested: Counter::default(),
            sync_problem: std::sync::Mutex::new(None),
            updates_completed: Counter::default(),
            image_pull_bytes_done: Gauge::default(),
            image_pull_bytes_total: Gauge::default(),
            health_gate: Family::default(),
            rollbacks: Counter::default(),
            image_pull_layers_done: Gauge::default(),
            image_pull_layers_total: Gauge::default(),
            heartbeat: AtomicI64::new(0),
            api_problem: Mutex::new(None),
        };
        m.registry.register(
            "mcd_host_os_and_version",
            "os release and version of the host",
            m.host_os_and_version.clone(),
        );
        m.registry.register(
            "mcd_pivot_errors_total",
            "errors staging a new OS image (reset on success)",
            m.pivot_errors.clone(),
        );
        m.registry.register(
            "mcd_state",
            "timestamp of the last state change, by state and reason",
            m.state.clone(),
        );
        m.registry.register(
            "mcd_reboots_failed",
            "reboot requests that failed",
            m.reboots_failed.clone(),
        );
        m.registry.register(
            "mcd_update_state",
            "timestamp of the last update attempt, by config and error",
            m.update_state.clone(),
        );
        m.registry.register(
            "mcd_config_drift",
            "timestamp of the last detected on-disk config drift",
            m.config_drift.clone(),
        );
        m.registry.register(
            "mcd_phase_duration_seconds",
            "duration of each update phase",
            m.phase_duration.clone(),
        );
        m.registry.register(
            "mcd_prefetched_bytes",
            "bytes of OS image layers fetched",
            m.bytes_prefetched.clone(),
        );
        m.registry.register(
            "mcd_drain_blocked_seconds",
            "how long the current drain has been blocked by a PodDisruptionBudget (0 when not blocked)",
            m.drain_blocked_seconds.clone(),
        );
        m.registry.register(
            "mcd_reboots_requested",
            "reboots requested by the daemon",
            m.reboots_requested.clone(),
        );
        m.registry.register(
            "mcd_updates_completed",
            "updates that reached Done",
            m.updates_completed.clone(),
        );
        m.registry.register(
            "mcd_image_pull_bytes_done",
            "compressed bytes of the OS image layers downloaded so far by the pull in progress",
            m.image_pull_bytes_done.clone(),
        );
        m.registry.register(
            "mcd_image_pull_bytes_total",
            "compressed bytes of the OS image layers the pull in progress downloads (0: no pull)",
            m.image_pull_bytes_total.clone(),
        );
        m.registry.register(
            "mcd_health_gate",
            "Unix time of the last health gate after a boot into a new deployment, by result (passed, failed, rolled_back) and config",
            m.health_gate.clone(),
        );
        m.registry.register(
            "mcd_rollbacks",
            "rollbacks to the previous deployment after a failed health gate",
            m.rollbacks.clone(),
        );
        m.registry.register(
            "mcd_image_pull_layers_done",
            "OS image layers the pull in progress has downloaded and imported",
            m.image_pull_layers_done.clone(),
        );
        m.registry.register(
            "mcd_image_pull_layers_total",
            "OS image layers the pull in progress downloads (0: no pull)",
            m.image_pull_layers_total.clone(),
        );
        m
    }

    /// `mcd_health_gate{result,config}` = `at` (one series: the last result).
    pub fn set_health_gate(&self, result: &str, config: &str, at: u64) {
        self.health_gate.clear();
        self.health_gate
            .get_or_create(&GateLabels {
                result: result.into(),
                config: config.into(),
            })
            .set(at as f64);
    }

    /// `mcd_state{state,reason}` = now (the MCD's timestamp semantics).
    pub fn set_state(&self, state: &str, reason: &str) {
        self.state.clear();
        let reason: String = reason.chars().take(200).collect();
        self.state
            .get_or_create(&StateLabels {
                state: state.into(),
                reason,
            })
            .set(now_secs());
    }

    pub fn set_update_state(&self, config: &str, err: &str) {
        self.update_state.clear();
        self.update_state
            .get_or_create(&UpdateLabels {
                config: config.into(),
                err: err.into(),
            })
            .set(now_secs());
    }

    pub fn observe_phase(&self, phase: &str, took: Duration) {
        self.phase_duration
            .get_or_create(&PhaseLabels {
                phase: phase.into(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn drift_detected(&self) {
        self.config_drift.set(now_secs());
    }

    /// The last sync failed for `reason` and is retried (`None`: it succeeded).
    pub fn set_sync_problem(&self, reason: Option<&str>) {
        let reason = reason.map(|r| r.chars().take(2000).collect());
        *self.sync_problem.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }

    /// Why the last sync failed, while it is retried.
    pub fn sync_problem(&self) -> Option<String> {
        self.sync_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The driver loop is alive.
    pub fn beat(&self) {
        self.heartbeat.store(now_secs() as i64, Ordering::Relaxed);
    }

    /// The API server cannot be reached (`Some(why)`, one sentence), or answers again (`None`).
    pub fn set_api_problem(&self, problem: Option<String>) {
        *self.api_problem.lock().unwrap_or_else(|e| e.into_inner()) = problem;
    }

    /// Why the API server cannot be reached, while it cannot.
    pub fn api_problem(&self) -> Option<String> {
        self.api_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding to a String cannot fail");
        out
    }

    /// Healthy when the driver loop turned within `max_age`.
    pub fn healthy(&self, max_age: Duration) -> bool {
        let last = self.heartbeat.load(Ordering::Relaxed);
        last > 0 && (now_secs() as i64 - last) <= max_age.as_secs() as i64
    }
}

/// How long `/healthz` tolerates a silent driver loop (it beats at least every minute when idle).
pub const HEALTH_MAX_AGE: Duration = Duration::from_secs(180);

/// Serve `/metrics` and `/healthz` until the task is dropped. Returns the bound address (port 0 → chosen).
pub async fn serve(
    metrics: Arc<Metrics>,
    addr: SocketAddr,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics listener on {addr}"))?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let metrics = metrics.clone();
                    async move { Ok::<_, std::convert::Infallible>(respond(&metrics, &req)) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    Ok((bound, task))
}

fn respond<B>(metrics: &Metrics, req: &Request<B>) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        "/healthz" => match (metrics.api_problem(), metrics.healthy(HEALTH_MAX_AGE)) {
            // The most useful thing to say first: nothing works without the API server.
            (Some(problem), _) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{problem}\n"),
            ),
            // The loop is alive (200) even while a sync is retried; the body says why it is retried.
            (None, true) => (
                StatusCode::OK,
                "text/plain",
                match metrics.sync_problem() {
                    None => "ok\n".to_string(),
                    Some(why) => format!("ok; the last sync failed and is retried: {why}\n"),
                },
            ),
            (None, false) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "the update loop has not run recently\n".to_string(),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcd_names_are_exported() {
        let m = Metrics::new();
        m.set_state("Done", "");
        m.set_update_state("rendered-worker-1", "");
        m.host_os_and_version
            .get_or_create(&OsLabels {
                os: "debian".into(),
                version: "12".into(),
            })
            .set(1);
        m.observe_phase("drain", Duration::from_millis(20));
        let text = m.encode();
        for name in [
            "mcd_host_os_and_version{",
            "mcd_pivot_errors_total ",
            "mcd_state{state=\"Done\"",
            "mcd_reboots_failed_total",
            "mcd_update_state{config=\"rendered-worker-1\"",
            "mcd_config_drift ",
            "mcd_phase_duration_seconds_bucket{",
            "mcd_drain_blocked_seconds ",
        ] {
            assert!(text.contains(name), "{name} missing in:\n{text}");
        }
        // a new state replaces the old one rather than accumulating series
        m.set_state("Working", "");
        let text = m.encode();
        assert!(text.contains("state=\"Working\"") && !text.contains("state=\"Done\""));
    }

    #[tokio::test]
    async fn http_endpoints() {
        let m = Arc::new(Metrics::new());
        let (addr, task) = serve(m.clone(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        assert!(
            get("/healthz").await.starts_with("HTTP/1.1 503"),
            "no heartbeat yet"
        );
        m.beat();
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        m.set_sync_problem(Some("reading MachineConfig rendered-1: 503"));
        let health = get("/healthz").await;
        assert!(
            health.starts_with("HTTP/1.1 200")
                && health.ends_with("ok; the last sync failed and is retried: reading MachineConfig rendered-1: 503\n"),
            "{health}"
        );
        m.set_sync_problem(None);
        assert!(get("/healthz").await.ends_with("\r\n\r\nok\n"));
        let metrics = get("/metrics").await;
        assert!(
            metrics.starts_with("HTTP/1.1 200") && metrics.contains("mcd_pivot_errors"),
            "{metrics}"
        );
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        // An unreachable API server is what /healthz says, whatever the loop does.
        m.set_api_problem(Some(
            "cannot reach the API server at https://api:6443/: connection refused".into(),
        ));
        let health = get("/healthz").await;
        assert!(
            health.starts_with("HTTP/1.1 503")
                && health.ends_with(
                    "\r\n\r\ncannot reach the API server at https://api:6443/: connection refused\n"
                ),
            "{health}"
        );
        m.set_api_problem(None);
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        task.abort();
    }
}
