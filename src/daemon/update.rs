//! Executes an update phase by phase (prefetch → drain → host → stage → reboot | actions → verify →
//! complete), recording each completed phase in the journal. Shared by the daemon and first boot (which has
//! no API server: `cluster` is `None`, so there is no drain and nothing to report).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use k8s_openapi::api::core::v1::Node;
use tokio::sync::{mpsc, watch};

use super::ca_trust;
use super::decide::{self, InFlight, NodeView};
use super::env::NodeEnv;
use super::gate::GateResult;
use super::journal::{self, Journal};
use super::state::Phase;
use crate::cluster::drain::{BlockedPod, DrainObserver, drain_not_required};
use crate::cluster::mcn::{AppliedPart, ConditionChange, ConditionType as Cond, Status};
use crate::cluster::{
    AnnotationWriter, Cluster, DrainOptions, Drainer, EventReason, McnWriter, NodeEvent, NodeState,
};
use crate::config::MachineConfig;
use crate::host::{self, ApplyOptions, Root};
use crate::metrics::Metrics;
use crate::os::{OsBackend, OsChange, Prepared, PullError, StageOutcome};
use crate::plan::Action;
use crate::systemd::ServiceManager;

/// How the node is drained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DrainMode {
    /// Cordon and evict ourselves (Eviction API, PodDisruptionBudgets respected).
    #[default]
    #[value(name = "self")]
    SelfDrain,
    /// Ask the MCO drain controller (`desiredDrain` / `lastAppliedDrain`).
    Controller,
}

/// The Kubernetes side of an update: reporting, and the drain.
#[derive(Debug)]
pub struct ClusterSide<C> {
    pub cluster: Arc<C>,
    pub annotations: AnnotationWriter<C>,
    pub mcn: Arc<McnWriter<C>>,
    /// The latest Node from the watch.
    pub nodes: watch::Receiver<Option<Node>>,
    pub drain_mode: DrainMode,
    pub drain_options: DrainOptions,
    /// The latest `ControllerConfig/machine-config-controller` (see [`super::certsync`]).
    pub controller_config: Option<watch::Receiver<Option<kube::api::DynamicObject>>>,
}

impl<C: Cluster + 'static> ClusterSide<C> {
    pub fn new(
        cluster: Arc<C>,
        pool: &str,
        nodes: watch::Receiver<Option<Node>>,
        drain_mode: DrainMode,
        drain_options: DrainOptions,
    ) -> Self {
        ClusterSide {
            annotations: AnnotationWriter::new(cluster.clone()),
            mcn: Arc::new(McnWriter::new(cluster.clone(), pool)),
            cluster,
            nodes,
            drain_mode,
            drain_options,
            controller_config: None,
        }
    }

    /// Sync the node with the cluster's ControllerConfig from this watch.
    pub fn with_controller_config(
        mut self,
        updates: watch::Receiver<Option<kube::api::DynamicObject>>,
    ) -> Self {
        self.controller_config = Some(updates);
        self
    }

    pub fn node(&self) -> Option<Node> {
        self.nodes.borrow().clone()
    }

    /// Events are best effort: a failed one is logged, never fails the update.
    pub async fn event(&self, event: NodeEvent) {
        if let Err(e) = self.cluster.emit_event(&event).await {
            tracing::warn!(error = %format!("{e:#}"), reason = event.reason.as_str(), "could not record an event");
        }
    }

    /// MachineConfigNode conditions are best effort too (the annotations are the protocol).
    pub async fn conditions(&self, changes: &[ConditionChange]) {
        let Some(node) = self.node() else { return };
        if let Err(e) = self.mcn.update(&node, changes).await {
            tracing::warn!(error = %format!("{e:#}"), "could not update the MachineConfigNode");
        }
    }

    pub async fn state(&self, state: NodeState, reason: &str) -> anyhow::Result<()> {
        let node = self.node();
        self.annotations
            .set_state(state, reason, node.as_ref())
            .await?;
        Ok(())
    }

    /// The node is Degraded or Unreconcilable (as last seen by the watch).
    pub fn degraded(&self) -> bool {
        self.node().is_some_and(|n| {
            matches!(
                NodeState::parse(crate::cluster::annotations::get(
                    &n,
                    crate::cluster::annotations::STATE
                )),
                Some(NodeState::Degraded | NodeState::Unreconcilable)
            )
        })
    }

    /// Undo a cordon this daemon asked for, whichever update asked for it: called whenever the node
    /// reaches Done with nothing left to do. The ownership lives on the Node, apart from the journal: in
    /// `self` mode the `cordoned-by` annotation (only our own cordon is undone), in `controller` mode a
    /// `desiredDrain=drain-…` request not yet followed by an uncordon — the MCD's `completeUpdate`
    /// (`pkg/daemon/daemon.go`) asks for `uncordon-<config>` on every completion.
    pub async fn release_cordon(&self, metrics: &Arc<Metrics>, config: &str) -> anyhow::Result<()> {
        use crate::cluster::annotations::{CORDONED_BY, DESIRED_DRAIN, get};
        let Some(node) = self.node() else {
            return Ok(());
        };
        let drainer = self.drainer(metrics, None);
        let result = match self.drain_mode {
            DrainMode::SelfDrain if get(&node, CORDONED_BY).is_some() => {
                drainer.uncordon().await.map(|_| ())
            }
            DrainMode::Controller
                if get(&node, DESIRED_DRAIN).is_some_and(|d| d.starts_with("drain-")) =>
            {
                drainer.controller_uncordon(config).await
            }
            _ => return Ok(()),
        };
        if let Err(e) = result {
            self.event(NodeEvent::warning(
                EventReason::FailedToUncordon,
                e.to_string(),
            ))
            .await;
            return Err(anyhow::Error::new(e).context("uncordoning the node"));
        }
        Ok(())
    }

    /// A drainer; `blocked` receives every pod a disruption budget keeps on the node.
    fn drainer(
        &self,
        metrics: &Arc<Metrics>,
        blocked: Option<mpsc::UnboundedSender<BlockedPod>>,
    ) -> Drainer<C> {
        Drainer::new(self.cluster.clone(), self.drain_options.clone())
            .with_observer(Arc::new(DrainMetrics {
                metrics: metrics.clone(),
                blocked,
            }))
            .with_mcn(self.mcn.clone())
    }

    /// While a drain is blocked, the node's `reason` says by which pods and budgets (the state stays
    /// `Working`), so `oc describe node` answers "why is this node not updating?". A Degraded node keeps
    /// its reason (`to_reason` false): the events and the MCN Drained condition say it. Runs until dropped.
    async fn report_blocked(
        &self,
        mut blocked: mpsc::UnboundedReceiver<BlockedPod>,
        reported: &AtomicBool,
        to_reason: bool,
    ) {
        let mut pods: std::collections::BTreeMap<String, BlockedPod> = Default::default();
        while let Some(b) = blocked.recv().await {
            if !to_reason {
                continue;
            }
            pods.insert(b.pod.clone(), b);
            let why = format!(
                "Draining node {}: {}",
                self.cluster.node_name(),
                pods.values()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            let changes = crate::cluster::annotations::AnnotationChanges::new().set(
                crate::cluster::annotations::REASON,
                crate::cluster::annotations::truncate_reason(&why),
            );
            match self.annotations.write(changes, None).await {
                Ok(_) => reported.store(true, Ordering::SeqCst),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "could not report the blocked drain")
                }
            }
        }
        std::future::pending::<()>().await;
    }
}

/// Drain progress into `mcd_drain_blocked_seconds`, and blocked pods to the reporter.
struct DrainMetrics {
    metrics: Arc<Metrics>,
    blocked: Option<mpsc::UnboundedSender<BlockedPod>>,
}

impl DrainObserver for DrainMetrics {
    fn pod_blocked(&self, blocked: &BlockedPod) {
        let since = k8s_openapi::jiff::Timestamp::strptime("%Y-%m-%dT%H:%M:%SZ", &blocked.since)
            .or_else(|_| blocked.since.parse::<k8s_openapi::jiff::Timestamp>());
        if let Ok(since) = since {
            let secs = k8s_openapi::jiff::Timestamp::now().as_second() - since.as_second();
            self.metrics.drain_blocked_seconds.set(secs.max(0) as f64);
        }
        tracing::warn!(pod = %blocked.pod, pdb = blocked.pdb.as_deref().unwrap_or(""), since = %blocked.since, "{blocked}");
        if let Some(tx) = &self.blocked {
            let _ = tx.send(blocked.clone());
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The node is at the target; the journal is gone.
    Completed,
    /// A reboot was requested; the daemon waits to be stopped.
    RebootRequested,
    /// Stopped at a safe point (SIGTERM); the journal resumes it.
    Interrupted,
    /// A newer target (or the forcefile) arrived while a drain or an image pull waited: let go at once so
    /// the daemon plans again (the journal stays until the new plan replaces it).
    Superseded,
    /// Given up for good (the new OS did not boot, twice); the reason is in the journal.
    Failed(String),
    /// The new deployment failed its health gate; the rollback is recorded and carried out next.
    RollingBack,
}

/// Everything an update touches.
pub struct Executor<'a, C, O, S> {
    pub root: &'a Arc<Root>,
    pub os: &'a O,
    pub systemd: &'a S,
    pub env: &'a NodeEnv,
    pub metrics: &'a Arc<Metrics>,
    pub cluster: Option<&'a ClusterSide<C>>,
    pub stop: watch::Receiver<bool>,
    pub node_name: &'a str,
    /// The previous boot's `ostree-finalize-staged` error, named when the node did not boot what was staged.
    pub finalize_failure: Option<&'a str>,
    /// Deadlines of the health gate after a boot into a new deployment.
    pub gate: super::gate::GateOptions,
}

impl<C, O, S> std::fmt::Debug for Executor<'_, C, O, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("node", &self.node_name)
            .field("root", &self.root.path())
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// How a step that waits on the outside world (a drain, an image pull) ended.
enum Waited {
    Done,
    Stopped,
    Superseded,
}

impl<C, O, S> Executor<'_, C, O, S>
where
    C: Cluster + 'static,
    O: OsBackend,
    S: ServiceManager,
{
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves when a stop is requested.
    async fn until_stopped(&self) {
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|s| *s).await;
    }

    /// Resolves when the update in flight is superseded (the same rule as the daemon's decision): the
    /// node's desiredConfig/desiredImage moved away from its target, or the forcefile appeared. Node
    /// changes are seen at once, the forcefile within 2 s; so a new target is not left waiting behind a
    /// drain that a budget blocks for up to the drain timeout.
    async fn until_superseded(&self, j: &Journal) {
        let Some(side) = self.cluster else {
            return std::future::pending().await;
        };
        let boot_id = self.env.boot_id().unwrap_or_default();
        let in_flight = InFlight {
            progress: &j.progress,
            reboot_underway: j.progress.reboot_underway(&boot_id),
        };
        let mut nodes = side.nodes.clone();
        let mut poll = tokio::time::interval(Duration::from_secs(2));
        loop {
            let desired = nodes
                .borrow_and_update()
                .as_ref()
                .and_then(|n| NodeView::of(n).desired());
            if decide::superseded(in_flight, desired.as_ref(), self.env.forcefile()) {
                tracing::info!(
                    target = %j.progress.target,
                    desired = %desired.map(|d| d.to_string()).unwrap_or_default(),
                    "a newer target or the forcefile supersedes the update in flight; letting go"
                );
                return;
            }
            tokio::select! {
                changed = nodes.changed() => {
                    if changed.is_err() {
                        return std::future::pending().await;
                    }
                }
                _ = poll.tick() => {}
            }
        }
    }

    fn save(&self, j: &Journal) -> anyhow::Result<()> {
        journal::save(self.root, j)
    }

    /// Run the update from its last completed phase.
    pub async fn run(&self, j: &mut Journal) -> anyhow::Result<Outcome> {
        let target = j.target_config()?;
        loop {
            if self.stopped() {
                return Ok(Outcome::Interrupted);
            }
            let Some(next) = j.progress.next_phase() else {
                self.complete(j).await?;
                return Ok(Outcome::Completed);
            };
            let started = Instant::now();
            let span = tracing::info_span!("phase", phase = next.as_str(), config = %j.progress.target.config);
            let _enter = span.enter();
            crash_point(&format!("daemon::before-{next}"));
            match next {
                Phase::Planned => {
                    unreachable!("Planned is where an update starts, never a next phase")
                }
                Phase::Prefetched | Phase::Drained => {
                    let waited = if next == Phase::Prefetched {
                        self.prefetch(j).await?
                    } else {
                        self.drain(j).await?
                    };
                    match waited {
                        Waited::Done => {}
                        Waited::Stopped => return Ok(Outcome::Interrupted),
                        Waited::Superseded => return Ok(Outcome::Superseded),
                    }
                }
                Phase::HostApplied => self.apply_host(j, &target).await?,
                Phase::Staged => self.stage(j, &target).await?,
                Phase::Rebooting => {
                    j.progress.rebooting(&self.env.boot_id()?, now_secs())?;
                    self.save(j)?;
                    crash_point("daemon::after-reboot-recorded");
                    self.request_reboot(j).await?;
                    // The phase was recorded before the request; this point kills the daemon after it.
                    crash_point("daemon::after-rebooting");
                    return Ok(Outcome::RebootRequested);
                }
                Phase::ActionsDone => self.post_actions(j).await?,
                Phase::Verified => {
                    if j.progress.rebooted(&self.env.boot_id()?) == Some(false) {
                        // Restarted in the boot the reboot was requested in: it has not happened yet.
                        tracing::info!("the requested reboot has not happened yet; asking again");
                        self.request_reboot(j).await?;
                        return Ok(Outcome::RebootRequested);
                    }
                    match self.verify(j, &target).await? {
                        Verdict::Good => {}
                        Verdict::Restage => {
                            self.save(j)?;
                            continue;
                        }
                        Verdict::Failed(reason) => {
                            self.save(j)?;
                            return Ok(Outcome::Failed(reason));
                        }
                    }
                }
                Phase::Healthy => match self.health_gate(j).await? {
                    GateResult::Passed => {}
                    GateResult::RollBack => return Ok(Outcome::RollingBack),
                    GateResult::Stopped => return Ok(Outcome::Interrupted),
                    GateResult::NoRollback(reason) => {
                        j.progress.fail(reason.clone());
                        self.save(j)?;
                        return Ok(Outcome::Failed(reason));
                    }
                },
            }
            crash_point(&format!("daemon::after-{next}"));
            j.progress.advance(next)?;
            self.save(j)?;
            self.metrics.observe_phase(next.as_str(), started.elapsed());
            tracing::info!(
                took_ms = started.elapsed().as_millis() as u64,
                "phase {next} done"
            );
        }
    }

    /// What the OS backend must do for this update (`None`: leave the OS alone). An on-cluster-layering
    /// image (`desiredImage`) has kernel type and extensions built in.
    fn os_change(&self, j: &Journal, target: &MachineConfig) -> Option<OsChange> {
        OsChange::from_plan(&j.plan, target)
            .map(|c| c.for_layered_image(j.progress.target.image.is_some()))
    }

    /// Get the OS change ready while the node still serves: pull the image (ostree) or stage the locked
    /// deployment (rpm-ostree). Stops early when stopped or superseded.
    async fn prefetch(&self, j: &Journal) -> anyhow::Result<Waited> {
        let Some(change) = self.os_change(j, &j.target_config()?) else {
            return Ok(Waited::Done);
        };
        let image = change.image.clone();
        tracing::info!(
            image = image.as_deref().unwrap_or(""),
            backend = self.os.name(),
            "preparing the OS change while the node still serves"
        );
        // The backend reports per-layer progress as tracing events itself.
        tokio::select! {
            r = super::mcn_status::prepare_reporting(self.cluster, self.metrics, self.os, &change) => {
                match r {
                    Ok(Prepared::Prefetched(report)) => {
                        self.metrics.bytes_prefetched.inc_by(report.bytes_fetched);
                        tracing::info!(image = %report.image, bytes = report.bytes_fetched, layers = report.layers_fetched, "prefetched");
                        Ok(Waited::Done)
                    }
                    Ok(Prepared::Staged(outcome)) => {
                        tracing::info!(deployment = %outcome.deployment().id(), unchanged = outcome.is_unchanged(), "staged before the drain; finalized after it");
                        Ok(Waited::Done)
                    }
                    Ok(Prepared::Nothing) => Ok(Waited::Done),
                    Err(e) => {
                        self.metrics.pivot_errors.inc();
                        Err(match image.as_deref() {
                            Some(image) => pull_error(e, image),
                            None => e.context("preparing the OS change failed"),
                        })
                    }
                }
            }
            _ = self.until_stopped() => Ok(Waited::Stopped),
            _ = self.until_superseded(j) => Ok(Waited::Superseded),
        }
    }

    /// `state=Working`, then cordon and drain when the plan says so.
    async fn drain(&self, j: &mut Journal) -> anyhow::Result<Waited> {
        let Some(side) = self.cluster else {
            return Ok(Waited::Done);
        };
        // As the MCD's update() (`pkg/daemon/update.go`): Working only when the node is not Degraded or
        // Unreconcilable, so a retry keeps the state and its reason until Done (no flapping of the pool).
        let degraded = side.degraded();
        if !degraded {
            side.state(NodeState::Working, "").await?;
            self.metrics.set_state("Working", "");
        }
        let node = side.node();
        if !j.plan.drain || node.as_ref().is_some_and(drain_not_required) {
            let why = if j.plan.drain {
                "not required: single-replica control plane"
            } else {
                "not required for this change"
            };
            side.conditions(&[ConditionChange::child(
                Cond::UpdateExecuted,
                Cond::Drained,
                Status::False,
                format!("Drain {why}"),
            )])
            .await;
            return Ok(Waited::Done);
        }
        // Whatever happens next (SIGTERM, a drain timeout, a newer config that needs no drain replacing
        // this one, an unreconcilable one), the node is uncordoned when it next reaches Done: the cordon's
        // owner is recorded on the Node (`release_cordon`). Kept in the journal for reading.
        if !j.progress.cordoned_by_us {
            j.progress.cordoned_by_us = true;
            self.save(j)?;
        }
        let (blocked_tx, blocked_rx) = mpsc::unbounded_channel();
        let drainer = side.drainer(self.metrics, Some(blocked_tx));
        let reported = AtomicBool::new(false);
        let config = j.progress.target.config.clone();
        let result = tokio::select! {
            r = async {
                match side.drain_mode {
                    DrainMode::SelfDrain => drainer.drain().await,
                    DrainMode::Controller => drainer.controller_drain(&config).await,
                }
            } => r,
            _ = side.report_blocked(blocked_rx, &reported, !degraded) => unreachable!("the reporter never ends"),
            _ = self.until_stopped() => return Ok(Waited::Stopped),
            _ = self.until_superseded(j) => {
                self.metrics.drain_blocked_seconds.set(0.0);
                return Ok(Waited::Superseded);
            }
        };
        self.metrics.drain_blocked_seconds.set(0.0);
        match result {
            Ok(report) => {
                tracing::info!(
                    evicted = report.evicted.len(),
                    skipped = report.skipped.len(),
                    "node drained"
                );
                if reported.load(Ordering::SeqCst) {
                    // No longer blocked. Written unconditionally: the watched node may lag behind.
                    side.annotations
                        .write(
                            crate::cluster::annotations::AnnotationChanges::new()
                                .set(crate::cluster::annotations::REASON, ""),
                            None,
                        )
                        .await?;
                }
                Ok(Waited::Done)
            }
            Err(e) => {
                side.event(NodeEvent::warning(
                    EventReason::FailedToDrain,
                    e.to_string(),
                ))
                .await;
                Err(anyhow::Error::new(e))
            }
        }
    }

    async fn apply_host(&self, j: &Journal, target: &MachineConfig) -> anyhow::Result<()> {
        if let Some(side) = self.cluster {
            side.conditions(&[ConditionChange::applying(&j.plan)]).await;
        }
        let (root, from, target, plan) = (
            self.root.clone(),
            j.from_config()?,
            target.clone(),
            j.plan.clone(),
        );
        let report = tokio::task::spawn_blocking(move || {
            host::apply(
                &root,
                &from,
                &target,
                &plan,
                ApplyOptions {
                    dry_run: false,
                    write_odc: false,
                },
            )
        })
        .await
        .context("the host apply task panicked")?;
        let report = match report {
            Ok(r) => r,
            Err(e) => {
                if let Some(side) = self.cluster {
                    side.conditions(&[ConditionChange::apply_failed(
                        &j.plan,
                        AppliedPart::Files,
                        &e.to_string(),
                    )])
                    .await;
                }
                anyhow::bail!("writing the config to the node failed: {e}");
            }
        };
        tracing::info!(operations = report.operations.len(), "host part written");
        Ok(())
    }

    async fn stage(&self, j: &Journal, target: &MachineConfig) -> anyhow::Result<()> {
        let Some(change) = self.os_change(j, target) else {
            return Ok(());
        };
        if let Some(side) = self.cluster {
            side.event(NodeEvent::normal(
                EventReason::OSUpdateStarted,
                describe_change(&change),
            ))
            .await;
        }
        let outcome = match self.os.stage(&change).await {
            Ok(o) => o,
            Err(e) => {
                if let Some(side) = self.cluster {
                    side.conditions(&[ConditionChange::apply_failed(
                        &j.plan,
                        AppliedPart::Os,
                        &format!("{e:#}"),
                    )])
                    .await;
                }
                self.metrics.pivot_errors.inc();
                return Err(pull_error(
                    e,
                    change.image.as_deref().unwrap_or("the booted image"),
                ));
            }
        };
        self.metrics.pivot_errors.set(0);
        let msg = match &outcome {
            StageOutcome::Staged(d) => format!(
                "Staged deployment {} ({})",
                d.id(),
                d.image.as_deref().unwrap_or("same image")
            ),
            StageOutcome::Unchanged(role, d) => {
                format!("The {role} deployment {} already matches", d.id())
            }
        };
        tracing::info!("{msg}");
        if let Some(side) = self.cluster {
            side.event(NodeEvent::normal(EventReason::OSUpdateStaged, msg))
                .await;
        }
        Ok(())
    }

    async fn request_reboot(&self, j: &Journal) -> anyhow::Result<()> {
        let reason = format!("update to {}", j.progress.target);
        if let Some(side) = self.cluster {
            side.conditions(&[
                ConditionChange::applied(&j.plan),
                ConditionChange::child(
                    Cond::UpdatePostActionComplete,
                    Cond::RebootedNode,
                    Status::Unknown,
                    "Upgrade requires a reboot. Currently doing this as the post update action.",
                ),
            ])
            .await;
            side.event(NodeEvent::normal(
                EventReason::Reboot,
                format!("Node will reboot into config {}", j.progress.target.config),
            ))
            .await;
            side.annotations
                .write(
                    crate::cluster::annotations::AnnotationChanges::new()
                        .set(crate::cluster::annotations::POST_CONFIG_ACTION, "Rebooting"),
                    side.node().as_ref(),
                )
                .await?;
        }
        if j.progress.os_image.is_none() && !j.plan.touches_os() {
            tracing::info!("rebooting: no OS deployment was staged");
        }
        // rpm-ostree: the locked staged deployment is released and rpm-ostreed reboots.
        if let Some(change) = self.os_change(j, &j.target_config()?) {
            if self.os.finalize(&change).await? {
                self.metrics.reboots_requested.inc();
                tracing::info!(reason = %reason, backend = self.os.name(), "reboot requested from the OS backend");
                return Ok(());
            }
        }
        // Ordered after ostree-finalize-staged whenever this is an ostree host.
        let after_finalize = self.root.path().join("run/ostree-booted").exists();
        self.metrics.reboots_requested.inc();
        if let Err(e) = self.systemd.reboot(&reason, after_finalize).await {
            self.metrics.reboots_failed.inc();
            return Err(e.context("failed to reboot"));
        }
        tracing::info!(reason = %reason, "reboot requested");
        Ok(())
    }

    /// Restart a unit. A host without `coreos-update-ca-trust.service` (RHEL workers, Debian) refreshes
    /// the trust store with the tool it has instead, as the MCD falls back to `update-ca-trust`.
    async fn restart(&self, unit: &str) -> anyhow::Result<()> {
        match self.systemd.restart_unit(unit).await {
            Err(e)
                if unit == ca_trust::UPDATE_CA_TRUST_UNIT
                    && crate::systemd::is_no_such_unit(&e) =>
            {
                tracing::info!(unit = %unit, "the unit does not exist on this host; refreshing the trust store directly");
                let root = self.root.clone();
                let tool = tokio::task::spawn_blocking(move || ca_trust::refresh(&root))
                    .await
                    .context("the trust store task panicked")??;
                tracing::info!(tool = %tool, "trust store refreshed");
                Ok(())
            }
            other => other,
        }
    }

    /// Rebootless: run the post-config actions in order (daemon-reload first, as the plan orders them).
    async fn post_actions(&self, j: &Journal) -> anyhow::Result<()> {
        for action in &j.plan.actions {
            let (result, ok, failed, what) = match action {
                Action::None | Action::Drain | Action::Reboot => continue,
                Action::DaemonReload => (
                    self.systemd.daemon_reload().await,
                    EventReason::ServiceReload,
                    EventReason::FailedServiceReload,
                    "systemd daemon-reload".to_string(),
                ),
                Action::Reload { unit } => (
                    self.systemd.reload_unit(unit).await,
                    EventReason::ServiceReload,
                    EventReason::FailedServiceReload,
                    format!("reload of {unit}"),
                ),
                Action::Restart { unit } => (
                    self.restart(unit).await,
                    EventReason::ServiceRestart,
                    EventReason::FailedServiceRestart,
                    format!("restart of {unit}"),
                ),
            };
            match result {
                Ok(()) => {
                    tracing::info!("post-config action: {what} done");
                    if let Some(side) = self.cluster {
                        side.event(NodeEvent::normal(
                            ok,
                            format!("{what} done for config {}", j.progress.target.config),
                        ))
                        .await;
                    }
                }
                Err(e) => {
                    if let Some(side) = self.cluster {
                        side.event(NodeEvent::warning(failed, format!("{e:#}")))
                            .await;
                    }
                    return Err(e.context(format!("post-config action {what} failed")));
                }
            }
        }
        if let Some(side) = self.cluster {
            side.conditions(&[
                ConditionChange::applied(&j.plan),
                ConditionChange::new(
                    Cond::UpdatePostActionComplete,
                    Status::True,
                    "UpdatePostActionComplete",
                    "Completed the post update actions without a reboot",
                ),
            ])
            .await;
        }
        Ok(())
    }

    /// Record the new config on disk, drop the journal, report Done and uncordon.
    ///
    /// A first-boot update ends differently: its config is the stripped encapsulated MachineConfig (the
    /// MCS's `appendEncapsulated` empties `spec.config`), so it is never the node's on-disk config, and
    /// nothing is reported; the daemon's bootstrap validates the node against the full rendered config
    /// and records that one.
    async fn complete(&self, j: &Journal) -> anyhow::Result<()> {
        let received = MachineConfig::from_value(j.target.clone())
            .map_err(|e| anyhow::anyhow!("the journal's target config: {e}"))?;
        let reported = received.clone();
        if !j.progress.first_boot {
            let image = j.progress.target.image.clone();
            let root = self.root.clone();
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                host::odc::write_current_config(&root, &received)?;
                host::odc::write_current_image(&root, image.as_deref())
            })
            .await
            .context("the ODC task panicked")??;
        }
        crash_point("daemon::complete-after-odc");
        if let Some(side) = self.cluster {
            side.release_cordon(self.metrics, &j.progress.target.config)
                .await?;
        }
        journal::remove(self.root)?;
        crash_point("daemon::complete-after-journal");
        if j.progress.first_boot {
            tracing::info!(config = %j.progress.target.config, "first boot's OS part is in place; the bootstrap validates the node next");
            return Ok(());
        }
        self.metrics.updates_completed.inc();
        self.metrics.set_update_state(&j.progress.target.config, "");
        let Some(side) = self.cluster else {
            return Ok(());
        };
        let node = side.node();
        let desired_image_empty = node
            .as_ref()
            .and_then(|n| {
                crate::cluster::annotations::get(n, crate::cluster::annotations::DESIRED_IMAGE)
            })
            .is_none_or(str::is_empty);
        side.annotations
            .write(
                crate::cluster::annotations::AnnotationChanges::new().done(
                    &j.progress.target.config,
                    j.progress.target.image.as_deref(),
                    desired_image_empty,
                ),
                node.as_ref(),
            )
            .await?;
        self.metrics.set_state("Done", "");
        side.conditions(&[
            ConditionChange::new(
                Cond::Resumed,
                Status::True,
                "Resumed",
                format!(
                    "In desired config {}. Resumed normal operations.",
                    j.progress.target.config
                ),
            ),
            ConditionChange::new(
                Cond::Updated,
                Status::True,
                "Updated",
                format!("Node {} Updated", self.node_name),
            ),
        ])
        .await;
        side.event(NodeEvent::normal(
            EventReason::NodeDone,
            format!(
                "Setting node {}, currentConfig {} to Done",
                self.node_name, j.progress.target.config
            ),
        ))
        .await;
        tracing::info!(config = %j.progress.target.config, image = j.progress.target.image.as_deref().unwrap_or(""), "update complete: Done");
        super::mcn_status::report_irreconcilable(side, self.root, &reported).await;
        if j.progress.health_gate {
            crash_point("daemon::complete-before-prune");
            self.prune_after_gate(j).await;
        }
        Ok(())
    }
}

/// The points a crash test can only reach when the health gate fails: the rollback, step by step.
pub fn rollback_crash_points() -> Vec<String> {
    [
        "daemon::gate-failed",
        "daemon::rollback-after-switch",
        "daemon::rollback-after-reboot-recorded",
        "daemon::rollback-after-reboot-requested",
        "daemon::rollback-after-restore",
        "daemon::rollback-after-report",
    ]
    .map(String::from)
    .to_vec()
}

/// Points where the crash tests SIGKILL the daemon (with the `failpoints` feature and
/// `FAILPOINTS='daemon::before-drained=return'`).
pub fn crash_points() -> Vec<String> {
    let phases = [
        Phase::Prefetched,
        Phase::Drained,
        Phase::HostApplied,
        Phase::Staged,
        Phase::Rebooting,
        Phase::ActionsDone,
        Phase::Verified,
        Phase::Healthy,
    ];
    let mut points: Vec<String> = phases
        .iter()
        .flat_map(|p| [format!("daemon::before-{p}"), format!("daemon::after-{p}")])
        .collect();
    points.extend(
        [
            "daemon::after-reboot-recorded",
            "daemon::gate-started",
            "daemon::complete-after-odc",
            "daemon::complete-after-journal",
            "daemon::complete-before-prune",
        ]
        .map(String::from),
    );
    points
}

#[cfg(feature = "failpoints")]
pub(super) fn crash_point(name: &str) {
    if fail::eval(name, |_| ()).is_some() {
        crate::host::failpoints::die_now(name);
    }
}

#[cfg(not(feature = "failpoints"))]
pub(super) fn crash_point(_name: &str) {}

pub(super) enum Verdict {
    Good,
    Restage,
    Failed(String),
}

fn describe_change(c: &OsChange) -> String {
    let mut parts = Vec::new();
    if let Some(i) = &c.image {
        parts.push(format!("image {i}"));
    }
    if !c.kargs.is_empty() {
        parts.push(format!(
            "kernel arguments -[{}] +[{}]",
            c.kargs.remove.join(" "),
            c.kargs.add.join(" ")
        ));
    }
    if let Some(k) = c.kernel_type {
        parts.push(format!("kernel type {k}"));
    }
    if c.extensions.is_some() {
        parts.push("extensions".into());
    }
    format!("Staging {}", parts.join(", "))
}

/// One sentence for an image problem; a `PullError` already is one.
fn pull_error(e: anyhow::Error, image: &str) -> anyhow::Error {
    if e.downcast_ref::<PullError>().is_some() {
        e
    } else {
        e.context(format!("staging OS image {image} failed"))
    }
}

/// How long a pending reboot may take before the daemon reports it (systemd stops us well before).
pub const REBOOT_GRACE: Duration = Duration::from_secs(600);
