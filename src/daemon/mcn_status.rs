//! Image-mode reporting around an update: the OS image pull (the MachineConfigNode condition
//! `ImagePulledFromRegistry`, as the MCD reports it around its rebase in `updateLayeredOSToPullspec`,
//! MCO `pkg/daemon/update.go`; plus, ours, its progress: a metric, throttled Events and the condition's
//! message), and the irreconcilable-differences report written once the node is at its config
//! (`CheckReportIrreconcilableDifferences`, MCO `pkg/daemon/irreconcilable_diff_reporter.go`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::update::ClusterSide;
use crate::cluster::mcn::{ConditionChange, ConditionType, Status};
use crate::cluster::{Cluster, EventReason, NodeEvent};
use crate::config::MachineConfig;
use crate::host::Root;
use crate::metrics::Metrics;
use crate::os::{FetchProgress, OsBackend, OsChange, Prepared, ProgressFn};

/// The install-time config the MCS served this node (the base of the irreconcilable report).
pub const INSTALL_TIME_CONFIG: &str = "/etc/mcs-machine-config-content.json";

/// How often the progress is looked at, and the throttle of what is published.
const LOOK_EVERY: Duration = Duration::from_millis(500);
const PUBLISH_STEP_PERCENT: u64 = 10;
const PUBLISH_AT_LEAST_EVERY: Duration = Duration::from_secs(30);

/// Download progress of one pull, summed over its layers.
#[derive(Debug, Default, Clone)]
pub struct PullProgress {
    /// Per layer (index in the manifest): bytes fetched, bytes in all.
    layers: BTreeMap<usize, (u64, u64)>,
    pub layers_total: usize,
    pub bytes_total: u64,
}

impl PullProgress {
    pub fn record(&mut self, p: &FetchProgress) {
        self.layers.insert(p.layer_index, (p.fetched, p.total));
        self.layers_total = p.layers_to_fetch;
        self.bytes_total = p.bytes_to_fetch;
    }

    pub fn bytes_done(&self) -> u64 {
        self.layers.values().map(|(f, _)| f).sum()
    }

    pub fn layers_done(&self) -> usize {
        self.layers.values().filter(|(f, t)| f >= t).count()
    }

    pub fn percent(&self) -> u64 {
        self.bytes_done()
            .saturating_mul(100)
            .checked_div(self.bytes_total)
            .unwrap_or(0)
            .min(100)
    }

    /// `57.3 of 200.1 MB (28%), 0 of 1 layers` (kB below a megabyte)
    pub fn describe(&self) -> String {
        let (unit, per) = if self.bytes_total >= 1_000_000 {
            ("MB", 1_000_000.0)
        } else {
            ("kB", 1_000.0)
        };
        let scaled = |b: u64| b as f64 / per;
        format!(
            "{:.1} of {:.1} {unit} ({}%), {} of {} layers",
            scaled(self.bytes_done()),
            scaled(self.bytes_total),
            self.percent(),
            self.layers_done(),
            self.layers_total
        )
    }
}

/// When to publish progress: each new 10% step, or after 30 s with something new.
#[derive(Debug)]
struct Throttle {
    step: u64,
    at: Instant,
    bytes: u64,
}

impl Throttle {
    fn due(&mut self, p: &PullProgress) -> bool {
        let step = p.percent() / PUBLISH_STEP_PERCENT;
        let bytes = p.bytes_done();
        let due = bytes > 0
            && (step > self.step
                || (self.at.elapsed() >= PUBLISH_AT_LEAST_EVERY && bytes != self.bytes));
        if due {
            self.step = step;
            self.at = Instant::now();
            self.bytes = bytes;
        }
        due
    }
}

fn pulling(image: &str, detail: Option<&str>) -> ConditionChange {
    let message = match detail {
        Some(d) => format!("Pulling OS image {image} from registry: {d}"),
        None => format!("Pulling OS image {image} from registry"),
    };
    ConditionChange::new(
        ConditionType::ImagePulledFromRegistry,
        Status::Unknown,
        "ImagePulledFromRegistry",
        message,
    )
}

/// Get `change` ready with `os` before the drain ([`OsBackend::prepare`]: pull the image, or stage
/// it locked), reporting the pull: the condition Unknown while pulling (with the progress in its
/// message), then True or False with the reason; the `mcd_image_pull_bytes_*` metrics; and an
/// `OSImagePullProgress` Event at most once per 10% or 30 s. A change without an image is only
/// prepared.
pub async fn prepare_reporting<C, O>(
    side: Option<&ClusterSide<C>>,
    metrics: &Arc<Metrics>,
    os: &O,
    change: &OsChange,
) -> anyhow::Result<Prepared>
where
    C: Cluster + 'static,
    O: OsBackend,
{
    let Some(image) = change.image.as_deref() else {
        return os.prepare(change, None).await;
    };
    let progress = Arc::new(Mutex::new(PullProgress::default()));
    let callback: ProgressFn = {
        let (progress, metrics) = (progress.clone(), metrics.clone());
        Arc::new(move |p: &FetchProgress| {
            let mut g = progress.lock().unwrap_or_else(|e| e.into_inner());
            g.record(p);
            metrics.image_pull_bytes_done.set(g.bytes_done() as i64);
            metrics.image_pull_bytes_total.set(g.bytes_total as i64);
            metrics.image_pull_layers_done.set(g.layers_done() as i64);
            metrics.image_pull_layers_total.set(g.layers_total as i64);
        })
    };
    if let Some(side) = side {
        side.conditions(&[pulling(image, None)]).await;
    }
    let pull = os.prepare(change, Some(callback));
    tokio::pin!(pull);
    let mut look = tokio::time::interval(LOOK_EVERY);
    let mut throttle = Throttle {
        step: 0,
        at: Instant::now(),
        bytes: 0,
    };
    let result = loop {
        tokio::select! {
            r = &mut pull => break r,
            _ = look.tick() => {
                let Some(side) = side else { continue };
                let snapshot = progress.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if !throttle.due(&snapshot) {
                    continue;
                }
                let detail = snapshot.describe();
                tracing::info!(image, progress = %detail, "pulling the OS image");
                side.event(NodeEvent::normal(
                    EventReason::OSImagePullProgress,
                    format!("Pulling OS image {image}: {detail}"),
                ))
                .await;
                side.conditions(&[pulling(image, Some(&detail))]).await;
            }
        }
    };
    metrics.image_pull_bytes_done.set(0);
    metrics.image_pull_bytes_total.set(0);
    metrics.image_pull_layers_done.set(0);
    metrics.image_pull_layers_total.set(0);
    if let Some(side) = side {
        let change = match &result {
            Ok(prepared) => ConditionChange::new(
                ConditionType::ImagePulledFromRegistry,
                Status::True,
                "ImagePulledFromRegistry",
                if matches!(prepared, Prepared::Prefetched(r) if r.already_present) {
                    format!("OS image {image} was already on the node")
                } else {
                    format!("Successfully pulled OS image {image} from registry")
                },
            ),
            Err(e) => ConditionChange::new(
                ConditionType::ImagePulledFromRegistry,
                Status::False,
                "ImagePulledFromRegistry",
                format!("Failed to pull OS image {image} from registry: {e:#}"),
            ),
        };
        side.conditions(&[change]).await;
    }
    result
}

/// Keep what the MachineConfigNode mirrors of the node's annotations (`status.configVersion`,
/// `configImage`, `spec`) current: the last condition of an update is written before the watch
/// delivers the node with its final annotations. Writes only when something differs.
pub async fn mirror_annotations<C: Cluster + 'static>(
    side: &ClusterSide<C>,
    node: &k8s_openapi::api::core::v1::Node,
) {
    if let Err(e) = side.mcn.update(node, &[]).await {
        tracing::debug!(error = %format!("{e:#}"), "could not update the MachineConfigNode (will retry)");
    }
}

/// Write `status.irreconcilableChanges`: how the storage sections of `target` differ from the
/// node's install-time config. Best effort, as the MCD's (errors are logged); without the
/// install-time config there is nothing to compare with.
pub async fn report_irreconcilable<C: Cluster + 'static>(
    side: &ClusterSide<C>,
    root: &Arc<Root>,
    target: &MachineConfig,
) {
    let Some(node) = side.node() else { return };
    let base = match root.read_optional(INSTALL_TIME_CONFIG) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            tracing::debug!(
                path = INSTALL_TIME_CONFIG,
                "no install-time config; irreconcilable differences are not reported"
            );
            return;
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "could not read {INSTALL_TIME_CONFIG}");
            return;
        }
    };
    let base = match install_time_config(&base) {
        Ok(mc) => mc,
        Err(e) => {
            tracing::warn!(path = INSTALL_TIME_CONFIG, error = %e, "not a MachineConfig; irreconcilable differences are not reported");
            return;
        }
    };
    let changes = crate::plan::irreconcilable::report(&base, target);
    let count = changes.len();
    match side.mcn.set_irreconcilable(&node, changes).await {
        Ok(true) => tracing::info!(
            config = %target.name,
            differences = count,
            "reported the irreconcilable differences from the install-time config"
        ),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "could not report the irreconcilable differences")
        }
    }
}

/// The MCS writes the MachineConfig as JSON; `apiVersion`/`kind` may be absent.
fn install_time_config(bytes: &[u8]) -> anyhow::Result<MachineConfig> {
    let mut doc: serde_json::Value = serde_json::from_slice(bytes)?;
    let obj = doc
        .as_object_mut()
        .ok_or_else(|| anyhow::anyhow!("not a JSON object"))?;
    obj.entry("apiVersion")
        .or_insert("machineconfiguration.openshift.io/v1".into());
    obj.entry("kind").or_insert("MachineConfig".into());
    MachineConfig::from_value(doc).map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(layer: usize, fetched: u64, total: u64) -> FetchProgress {
        FetchProgress {
            image: "i".into(),
            layer_index: layer,
            layer_digest: format!("sha256:{layer}"),
            fetched,
            total,
            layers_to_fetch: 2,
            bytes_to_fetch: 200_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn progress_sums_layers_and_publishes_per_ten_percent() {
        let mut p = PullProgress::default();
        let mut t = Throttle {
            step: 0,
            at: Instant::now(),
            bytes: 0,
        };
        assert!(!t.due(&p), "nothing fetched yet");
        p.record(&fp(1, 5_000_000, 150_000_000));
        assert!(!t.due(&p), "2%: below the first step");
        p.record(&fp(1, 25_000_000, 150_000_000));
        assert!(t.due(&p), "12%");
        assert!(!t.due(&p), "same step");
        p.record(&fp(0, 50_000_000, 50_000_000));
        assert_eq!(p.percent(), 37);
        assert_eq!(p.layers_done(), 1);
        assert_eq!(p.describe(), "75.0 of 200.0 MB (37%), 1 of 2 layers");
        let mut small = PullProgress::default();
        small.record(&FetchProgress {
            fetched: 1_500,
            total: 3_000,
            bytes_to_fetch: 3_000,
            layers_to_fetch: 1,
            ..fp(0, 0, 0)
        });
        assert_eq!(small.describe(), "1.5 of 3.0 kB (50%), 0 of 1 layers");
        assert!(t.due(&p));
        // At most one publication per step, however often it is asked.
        let published = (0..100)
            .filter(|i| {
                p.record(&fp(1, 25_000_000 + i * 1_000_000, 150_000_000));
                t.due(&p)
            })
            .count();
        assert_eq!(published, 5, "37% → 87%: 40, 50, 60, 70, 80");
    }

    /// Pulls by calling the progress callback, recording the pull metrics as it goes.
    struct FakePull {
        metrics: Arc<Metrics>,
        seen: Mutex<Vec<(i64, i64)>>,
    }

    impl OsBackend for FakePull {
        fn name(&self) -> &'static str {
            "fake"
        }
        async fn status(&self) -> anyhow::Result<crate::os::OsStatus> {
            Ok(Default::default())
        }
        async fn prefetch(
            &self,
            image: &str,
            progress: Option<ProgressFn>,
        ) -> anyhow::Result<crate::os::PrefetchReport> {
            let cb = progress.expect("a progress callback");
            for (layer, fetched) in [(0, 60_000_000), (0, 100_000_000), (1, 50_000_000)] {
                cb(&FetchProgress {
                    total: 100_000_000,
                    fetched,
                    layer_index: layer,
                    ..fp(layer, 0, 0)
                });
                self.seen.lock().unwrap().push((
                    self.metrics.image_pull_bytes_done.get(),
                    self.metrics.image_pull_bytes_total.get(),
                ));
            }
            Ok(crate::os::PrefetchReport {
                image: image.into(),
                ..Default::default()
            })
        }
        async fn stage(&self, _: &crate::os::OsChange) -> anyhow::Result<crate::os::StageOutcome> {
            anyhow::bail!("not used")
        }
        async fn cleanup(&self) -> anyhow::Result<crate::os::CleanupReport> {
            Ok(Default::default())
        }
        async fn rollback(
            &self,
            _: &crate::os::Deployment,
        ) -> anyhow::Result<crate::os::RollbackOutcome> {
            anyhow::bail!("not used")
        }
        async fn prune(&self) -> anyhow::Result<crate::os::PruneReport> {
            anyhow::bail!("not used")
        }
    }

    #[tokio::test]
    async fn pull_progress_is_a_metric_while_it_runs() {
        let metrics = Arc::new(Metrics::new());
        let os = FakePull {
            metrics: metrics.clone(),
            seen: Mutex::new(Vec::new()),
        };
        let side: Option<&ClusterSide<crate::cluster::KubeCluster>> = None;
        let change = crate::os::OsChange {
            image: Some("quay.io/os@sha256:x".into()),
            ..Default::default()
        };
        prepare_reporting(side, &metrics, &os, &change)
            .await
            .unwrap();
        assert_eq!(
            *os.seen.lock().unwrap(),
            vec![
                (60_000_000, 200_000_000),
                (100_000_000, 200_000_000),
                (150_000_000, 200_000_000)
            ]
        );
        assert_eq!(metrics.image_pull_bytes_done.get(), 0, "no pull running");
        assert_eq!(metrics.image_pull_bytes_total.get(), 0);
        let text = metrics.encode();
        assert!(text.contains("mcd_image_pull_bytes_done 0"), "{text}");
    }

    #[test]
    fn install_time_config_without_type_fields_parses() {
        let mc = install_time_config(
            br#"{"metadata":{"name":"rendered-worker-0"},"spec":{"config":{"ignition":{"version":"3.4.0"},"storage":{"disks":[{"device":"/dev/sdb"}]}}}}"#,
        )
        .unwrap();
        assert_eq!(mc.name, "rendered-worker-0");
        assert!(install_time_config(b"[]").is_err());
    }
}
