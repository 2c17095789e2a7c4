//! The service loop: watch our Node, decide, execute, report — with backoff on errors, the drift monitor
//! after Done, `sd_notify` readiness and watchdog, and a clean stop on SIGTERM at a safe point.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Node;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::decide::{Decision, NodeView, decide};
use super::env::NodeEnv;
use super::journal::{self, Journal, with_target_image};
use super::state::{Phase, Progress, Target};
use super::update::{ClusterSide, Executor, Outcome};
use super::verify;
use crate::cluster::annotations::{self as ann, AnnotationChanges};
use crate::cluster::mcn::{ConditionChange, ConditionType as Cond, Status};
use crate::cluster::{Cluster, ClusterError, EventReason, NodeEvent, NodeState};
use crate::config::{MachineConfig, MachineConfiguration};
use crate::host::{self, DriftMonitor, DriftOptions, DriftReport, Root};
use crate::metrics::Metrics;
use crate::os::OsBackend;
use crate::plan::{self, PlanOptions};
use crate::systemd::ServiceManager;

/// Backoff between retries of a failed sync (the MCD's queue: 5 s up to 60 s).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(60),
        }
    }
}

/// What one sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Synced {
    /// Nothing to do yet (no desiredConfig).
    Waiting,
    /// The node is at its config (Done), or reported as Degraded by the checks; nothing to retry.
    Settled,
    /// An update completed.
    Updated,
    /// The config cannot be applied; wait for a new one.
    Unreconcilable,
    /// A reboot is on its way; no more syncs in this boot.
    RebootRequested,
    /// Stopped at a safe point.
    Interrupted,
}

/// The daemon.
pub struct Daemon<C, O, S> {
    pub node_name: String,
    pub root: Arc<Root>,
    pub os: O,
    pub systemd: S,
    pub env: NodeEnv,
    pub metrics: Arc<Metrics>,
    pub side: ClusterSide<C>,
    pub stop: watch::Receiver<bool>,
    pub backoff: Backoff,
    pub drift_debounce: Duration,
    /// The target last verified as on disk and booted; skip re-verifying it until drift says otherwise.
    verified: Option<Target>,
    drift: Option<(DriftMonitor, mpsc::Receiver<DriftReport>)>,
    /// The last reason we reported Degraded for, to log transitions once.
    last_wait: Option<String>,
}

impl<C, O, S> std::fmt::Debug for Daemon<C, O, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("node", &self.node_name)
            .field("root", &self.root.path())
            .finish_non_exhaustive()
    }
}

enum Wake {
    Node,
    Retry,
    Drift(Option<DriftReport>),
    Stop,
    Tick,
}

impl Wake {
    fn name(&self) -> &'static str {
        match self {
            Wake::Node => "node",
            Wake::Retry => "retry",
            Wake::Drift(_) => "drift",
            Wake::Stop => "stop",
            Wake::Tick => "tick",
        }
    }
}

impl<C, O, S> Daemon<C, O, S>
where
    C: Cluster + 'static,
    O: OsBackend,
    S: ServiceManager,
{
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node_name: String,
        root: Arc<Root>,
        os: O,
        systemd: S,
        env: NodeEnv,
        metrics: Arc<Metrics>,
        side: ClusterSide<C>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Daemon {
            node_name,
            root,
            os,
            systemd,
            env,
            metrics,
            side,
            stop,
            backoff: Backoff::default(),
            drift_debounce: Duration::from_secs(1),
            verified: None,
            drift: None,
            last_wait: None,
        }
    }

    fn executor(&self) -> Executor<'_, C, O, S> {
        Executor {
            root: &self.root,
            os: &self.os,
            systemd: &self.systemd,
            env: &self.env,
            metrics: &self.metrics,
            cluster: Some(&self.side),
            stop: self.stop.clone(),
            node_name: &self.node_name,
        }
    }

    /// Run until stopped. `nodes` is the watch of our Node (the same channel `side.nodes` reads).
    pub async fn run(mut self, mut nodes: watch::Receiver<Option<Node>>) -> anyhow::Result<()> {
        let mut stop = self.stop.clone();
        // The first sync runs at once (the MCD's checkStateOnFirstRun): the node may already want a change.
        let mut retry_at: Option<Instant> = Some(Instant::now());
        let mut delay = self.backoff.initial;
        let mut reboot_pending = false;
        let mut ready = false;
        // The watchdog wants a sign of life at least every WatchdogSec/2; the loop turns every 10 s.
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        let mut mcn_ready = false;
        // A new ControllerConfig is synced like a node change (see `certsync`).
        let mut controller_config = self.side.controller_config.clone();
        loop {
            let wake = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => Wake::Stop,
                r = nodes.changed() => {
                    if r.is_err() {
                        anyhow::bail!("the watch of node {} ended", self.node_name);
                    }
                    Wake::Node
                }
                _ = changed_or_pending(&mut controller_config) => Wake::Node,
                report = recv_drift(&mut self.drift) => Wake::Drift(report),
                _ = sleep_until(retry_at) => Wake::Retry,
                _ = tick.tick() => Wake::Tick,
            };
            tracing::trace!(wake = wake.name(), "woke");
            match wake {
                Wake::Stop => break,
                Wake::Tick => {
                    self.metrics.beat();
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    // An admin who touched the forcefile should not have to wait for a node change or
                    // restart the daemon: it is looked for on every tick (one stat every 10 s). A retry
                    // already scheduled will see it (and keeps its backoff).
                    if reboot_pending || retry_at.is_some() || !self.env.forcefile() {
                        continue;
                    }
                    tracing::info!(
                        forcefile = crate::config::paths::FORCEFILE,
                        "the forcefile appeared: syncing to re-apply the config"
                    );
                }
                Wake::Drift(report) => {
                    if let Some(report) = report {
                        self.on_drift(report).await;
                    } else {
                        self.drift = None;
                    }
                    continue;
                }
                Wake::Node | Wake::Retry => {}
            }
            self.metrics.beat();
            if reboot_pending {
                continue;
            }
            tracing::debug!(retry = matches!(wake, Wake::Retry), "syncing");
            if !ready {
                // Ready once the node is known, before the first sync: that sync may be an hour-long drain.
                ready = true;
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            }
            if !mcn_ready {
                if let Some(node) = self.side.node() {
                    match self.side.mcn.ensure(&node).await {
                        Ok(()) => mcn_ready = true,
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "could not create the MachineConfigNode (will retry)")
                        }
                    }
                }
            }
            // Keep the watchdog fed while a long sync (a drain, an image pull) runs; the sync has its own
            // timeouts, so a hang still ends in an error.
            let metrics = self.metrics.clone();
            let result = {
                let sync = self.sync();
                tokio::pin!(sync);
                loop {
                    tokio::select! {
                        r = &mut sync => break r,
                        _ = tick.tick() => {
                            metrics.beat();
                            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                        }
                    }
                }
            };
            match result {
                Ok(outcome) => {
                    retry_at = None;
                    delay = self.backoff.initial;
                    match outcome {
                        Synced::RebootRequested => reboot_pending = true,
                        Synced::Interrupted => break,
                        _ => {}
                    }
                }
                Err(e) => {
                    let reason = one_line(&e);
                    tracing::error!(error = %reason, retry_in_s = delay.as_secs(), "sync failed; the node is Degraded until it succeeds");
                    self.degrade(&reason).await;
                    retry_at = Some(Instant::now() + delay);
                    delay = (delay * 2).min(self.backoff.max);
                }
            }
            let status = match self
                .side
                .node()
                .and_then(|n| ann::get(&n, ann::STATE).map(str::to_string))
            {
                Some(s) => s,
                None => "starting".into(),
            };
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&status)]);
        }
        tracing::info!("stopping");
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        if let Some((monitor, _)) = self.drift.take() {
            monitor.stop();
        }
        Ok(())
    }

    /// Observe, decide, act.
    pub async fn sync(&mut self) -> anyhow::Result<Synced> {
        let Some(node) = self.side.node() else {
            return Ok(Synced::Waiting);
        };
        super::certsync::sync_controller_config(&self.side, &self.root, &node).await?;
        super::mcn_status::mirror_annotations(&self.side, &node).await;
        let journal = journal::load(&self.root)?;
        let boot_id = self.env.boot_id()?;
        self.after_reboot_bookkeeping(&node, journal.as_ref(), &boot_id)
            .await?;
        let view = node_view(&node);
        let odc = self.read_odc()?;
        let on_disk = odc.as_ref().map(|(mc, image)| Target {
            config: mc.name.clone(),
            image: image.clone(),
        });
        let forcefile = self.env.forcefile();
        let decision = decide(
            &view,
            on_disk.as_ref(),
            journal.as_ref().map(|j| &j.progress),
            forcefile,
        );
        tracing::debug!("decided: {decision:?}");
        match decision {
            Decision::Wait { why } => {
                if self.last_wait.as_deref() != Some(why.as_str()) {
                    tracing::info!("waiting: {why}");
                    self.last_wait = Some(why);
                }
                Ok(Synced::Waiting)
            }
            Decision::Failed { target, reason } => {
                // Same report as any Degraded: annotations, metric and the MCN NodeDegraded condition.
                self.report_degraded(&reason).await?;
                tracing::error!(target = %target, "update failed for good: {reason}");
                Ok(Synced::Settled)
            }
            Decision::Settled { current } => self.settle(current, odc.map(|(mc, _)| mc)).await,
            Decision::Start { from, to, forced } => {
                let carry = journal.as_ref().is_some_and(|j| j.progress.cordoned_by_us);
                if journal.is_some() {
                    journal::remove(&self.root)?;
                }
                self.start(from, to, forced, carry, odc.map(|(mc, _)| mc))
                    .await
            }
            Decision::Replace { from, to } => {
                let carry = journal.as_ref().is_some_and(|j| j.progress.cordoned_by_us);
                tracing::info!(to = %to, "the update in flight was superseded before it changed the node; replanning");
                journal::remove(&self.root)?;
                self.start(from, to, false, carry, odc.map(|(mc, _)| mc))
                    .await
            }
            Decision::Resume => {
                let mut j = journal.expect("Resume is only decided with a journal");
                tracing::info!(target = %j.progress.target, phase = %j.progress.phase, "resuming the update in flight");
                self.execute(&mut j).await
            }
        }
    }

    /// `post-config-action=Rebooting` from before this boot: report the reboot and clear it (§2.2).
    async fn after_reboot_bookkeeping(
        &self,
        node: &Node,
        journal: Option<&Journal>,
        boot_id: &str,
    ) -> anyhow::Result<()> {
        if ann::get(node, ann::POST_CONFIG_ACTION) != Some("Rebooting") {
            return Ok(());
        }
        let same_boot = journal.is_some_and(|j| {
            j.progress.phase == Phase::Rebooting && j.progress.rebooted(boot_id) == Some(false)
        });
        if same_boot {
            return Ok(());
        }
        self.side
            .conditions(&[ConditionChange::child(
                Cond::UpdatePostActionComplete,
                Cond::RebootedNode,
                Status::True,
                "Node has rebooted",
            )])
            .await;
        self.side
            .annotations
            .write(
                AnnotationChanges::new().set(ann::POST_CONFIG_ACTION, ""),
                Some(node),
            )
            .await?;
        Ok(())
    }

    fn read_odc(&self) -> anyhow::Result<Option<(MachineConfig, Option<String>)>> {
        let config =
            host::odc::read_current_config(&self.root).map_err(|e| anyhow::anyhow!("{e}"))?;
        let Some(config) = config else {
            return Ok(None);
        };
        let image = host::odc::read_current_image(&self.root)?;
        Ok(Some((config, image)))
    }

    /// A MachineConfig from the API, validated; the errors are the sentences an admin sees.
    async fn fetch_config(&self, name: &str) -> anyhow::Result<MachineConfig> {
        // A node annotation goes into the request path only when it can be an object name at all.
        if let Some(why) = crate::config::machineconfig::invalid_object_name(name) {
            let shown: String = name.chars().take(80).collect();
            let cut = if shown.len() < name.len() { "…" } else { "" };
            anyhow::bail!(
                "{shown:?}{cut} cannot be a MachineConfig name: {why}; check the node's desiredConfig and currentConfig annotations"
            );
        }
        let raw = match self.side.cluster.get_machine_config(name).await {
            Ok(raw) => raw,
            Err(e)
                if e.downcast_ref::<ClusterError>()
                    .is_some_and(|c| matches!(c, ClusterError::MachineConfigNotFound(_))) =>
            {
                anyhow::bail!(
                    "MachineConfig {name} does not exist; check the node's desiredConfig annotation and the pool's rendered config"
                )
            }
            Err(e) => return Err(e.context(format!("reading MachineConfig {name}"))),
        };
        MachineConfig::from_value(raw)
            .map_err(|e| anyhow::anyhow!("MachineConfig {name} is invalid: {e}"))
    }

    /// The operator's policy status when it writes one (waiting, as the MCD does, for it to observe
    /// the latest spec), else our merge of spec with the built-in defaults.
    async fn fetch_policy(&self) -> anyhow::Result<MachineConfiguration> {
        let wait = crate::cluster::policy_source::PolicyWait::default();
        let (policy, _source) =
            crate::cluster::policy_source::fetch_policy(&*self.side.cluster, wait).await?;
        Ok(policy)
    }

    async fn start(
        &mut self,
        from: Target,
        to: Target,
        forced: bool,
        carry_cordon: bool,
        odc: Option<MachineConfig>,
    ) -> anyhow::Result<Synced> {
        self.stop_drift().await;
        self.verified = None;
        let desired_received = self.fetch_config(&to.config).await?;
        let desired = with_target_image(desired_received.clone(), to.image.as_deref())?;
        let current_received = match odc {
            Some(mc) if mc.name == from.config => mc,
            _ if from.config.is_empty() => MachineConfig::empty(),
            _ => self.fetch_config(&from.config).await?,
        };
        let current = with_target_image(current_received.clone(), from.image.as_deref())?;
        let policy = self.fetch_policy().await?;
        let status = self.os.status().await.context("reading the OS status")?;
        let booted_image = status.booted.as_ref().and_then(|d| d.image.clone());
        let plan = plan::plan_with(
            &current,
            &desired,
            booted_image.as_deref(),
            &policy,
            &PlanOptions {
                force: forced,
                ..Default::default()
            },
        );
        for w in &plan.warnings {
            tracing::warn!(config = %to.config, "{w}");
        }
        if !plan.reconcilable {
            let reason = format!(
                "can't reconcile config {} with {}: {}",
                from.config,
                to.config,
                plan.unreconcilable
                    .iter()
                    .map(|u| format!("{}: {}", u.field, u.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            tracing::error!("{reason}");
            self.side.state(NodeState::Unreconcilable, &reason).await?;
            self.metrics.set_state("Unreconcilable", &reason);
            self.side
                .event(NodeEvent::warning(
                    EventReason::FailedToReconcile,
                    reason.clone(),
                ))
                .await;
            self.side
                .conditions(&[ConditionChange::new(
                    Cond::UpdatePrepared,
                    Status::Unknown,
                    "UpdatePrepared",
                    reason,
                )])
                .await;
            return Ok(Synced::Unreconcilable);
        }
        if forced {
            self.env.remove_forcefile()?;
        }
        tracing::info!(from = %from, to = %to, actions = %plan.actions.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "), drain = plan.drain, reboot = plan.reboot, "starting an update");
        for line in &plan.explanations {
            tracing::info!("plan: {line}");
        }
        let mut progress = Progress::planned(from, to, plan.reboot, now_secs());
        progress.os_image = desired.os_image().map(str::to_string);
        progress.cordoned_by_us = carry_cordon;
        let mut j = Journal::new(progress, plan, &current_received, &desired_received);
        journal::save(&self.root, &j)?;
        self.side
            .conditions(&[
                ConditionChange::new(
                    Cond::Updated,
                    Status::False,
                    "Updated",
                    format!("Node {} needs an update", self.node_name),
                ),
                ConditionChange::new(
                    Cond::UpdatePrepared,
                    Status::True,
                    "UpdatePrepared",
                    format!("Update prepared. Action: {}", describe_actions(&j.plan)),
                ),
            ])
            .await;
        self.execute(&mut j).await
    }

    async fn execute(&mut self, j: &mut Journal) -> anyhow::Result<Synced> {
        self.stop_drift().await;
        let outcome = self.executor().run(j).await;
        match outcome? {
            Outcome::Completed => {
                self.verified = Some(j.progress.target.clone());
                self.start_drift(&j.target_config()?).await;
                Ok(Synced::Updated)
            }
            Outcome::RebootRequested => Ok(Synced::RebootRequested),
            Outcome::Interrupted => Ok(Synced::Interrupted),
            Outcome::Failed(reason) => {
                self.report_degraded(&reason).await?;
                Ok(Synced::Settled)
            }
        }
    }

    /// The node is at its config: check it really is (booted image, kernel arguments, files) and report
    /// Done, or Degraded with what differs. Cheap when nothing changed since the last check.
    async fn settle(
        &mut self,
        current: Target,
        odc: Option<MachineConfig>,
    ) -> anyhow::Result<Synced> {
        let node = self.side.node();
        let state_done = node
            .as_ref()
            .is_some_and(|n| matches!(ann::get(n, ann::STATE), Some("Done")));
        if self.verified.as_ref() == Some(&current) && state_done && self.drift.is_some() {
            return Ok(Synced::Settled);
        }
        let received = match odc {
            Some(mc) if mc.name == current.config => mc,
            _ => self.fetch_config(&current.config).await?,
        };
        let config = with_target_image(received, current.image.as_deref())?;
        let status = self.os.status().await.context("reading the OS status")?;
        let mut problems = Vec::new();
        if let Some(p) = verify::os_problem(&config, status.booted.as_ref()) {
            problems.push(p);
        }
        let missing = verify::missing_kargs(&config, &self.env.cmdline(&status)?);
        if !missing.is_empty() {
            problems.push(format!(
                "kernel arguments missing from the running kernel: {}",
                missing.join(" ")
            ));
        }
        let (root, c) = (self.root.clone(), config.clone());
        let mismatches = tokio::task::spawn_blocking(move || host::validate(&root, &c))
            .await
            .context("the validation task panicked")??;
        if !mismatches.is_empty() {
            problems.push(verify::describe_mismatches(&config.name, &mismatches));
        }
        self.start_drift(&config).await;
        if !problems.is_empty() {
            let reason = format!(
                "{}; fix it, or touch {} to re-apply config {}",
                problems.join("; "),
                crate::config::paths::FORCEFILE,
                config.name
            );
            self.verified = None;
            self.report_degraded(&reason).await?;
            return Ok(Synced::Settled);
        }
        let desired_image_empty = node
            .as_ref()
            .and_then(|n| ann::get(n, ann::DESIRED_IMAGE))
            .is_none_or(str::is_empty);
        let wrote = self
            .side
            .annotations
            .write(
                AnnotationChanges::new().done(
                    &current.config,
                    current.image.as_deref(),
                    desired_image_empty,
                ),
                node.as_ref(),
            )
            .await?;
        if wrote.is_some() {
            tracing::info!(config = %current.config, "node is at its config: Done");
            super::mcn_status::report_irreconcilable(&self.side, &self.root, &config).await;
            self.side
                .conditions(&[
                    ConditionChange::new(Cond::NodeDegraded, Status::False, "NodeDegraded", ""),
                    ConditionChange::new(
                        Cond::Updated,
                        Status::True,
                        "Updated",
                        format!("Node {} Updated", self.node_name),
                    ),
                ])
                .await;
        }
        self.metrics.set_state("Done", "");
        self.verified = Some(current);
        Ok(Synced::Settled)
    }

    /// Degraded with `reason`: the node annotations (an error if they cannot be written, so a sync
    /// retries), the metric and the MCN NodeDegraded condition.
    async fn report_degraded(&self, reason: &str) -> anyhow::Result<()> {
        self.metrics.set_state("Degraded", reason);
        self.side.state(NodeState::Degraded, reason).await?;
        self.side
            .conditions(&[ConditionChange::new(
                Cond::NodeDegraded,
                Status::True,
                "NodeDegraded",
                reason.to_string(),
            )])
            .await;
        Ok(())
    }

    /// [`Self::report_degraded`] outside a sync: a failed write is logged.
    async fn degrade(&self, reason: &str) {
        if let Err(e) = self.report_degraded(reason).await {
            tracing::error!(error = %format!("{e:#}"), "could not report Degraded");
        }
    }

    async fn start_drift(&mut self, config: &MachineConfig) {
        if self.drift.is_some() {
            return;
        }
        let opts = DriftOptions {
            debounce: self.drift_debounce,
        };
        let started = Root::open(self.root.path())
            .and_then(|root| DriftMonitor::start(root, config.clone(), opts));
        match started {
            Ok(pair) => {
                self.drift = Some(pair);
                self.side
                    .event(NodeEvent::normal(
                        EventReason::ConfigDriftMonitorStarted,
                        format!(
                            "Config Drift Monitor started, watching against {}",
                            config.name
                        ),
                    ))
                    .await;
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not start the drift monitor")
            }
        }
    }

    async fn stop_drift(&mut self) {
        if let Some((monitor, _)) = self.drift.take() {
            monitor.stop();
            self.side
                .event(NodeEvent::normal(
                    EventReason::ConfigDriftMonitorStopped,
                    "Config Drift Monitor stopped",
                ))
                .await;
        }
    }

    /// Drift appeared (Degraded, with every mismatch) or went away (back to Done by itself).
    async fn on_drift(&mut self, report: DriftReport) {
        if report.mismatches.is_empty() {
            tracing::info!(config = %report.config, "the on-disk drift is gone");
            self.verified = None;
            if let Err(e) = self.sync().await {
                self.degrade(&one_line(&e)).await;
            }
            return;
        }
        let reason = verify::describe_mismatches(&report.config, &report.mismatches);
        tracing::warn!(config = %report.config, "config drift detected: {reason}");
        self.verified = None;
        self.metrics.drift_detected();
        self.side
            .event(NodeEvent::warning(
                EventReason::ConfigDriftDetected,
                reason.clone(),
            ))
            .await;
        self.degrade(&format!(
            "{reason}; restore the file(s) (the node returns to Done by itself) or touch {} to re-apply",
            crate::config::paths::FORCEFILE
        ))
        .await;
    }
}

fn describe_actions(plan: &plan::Plan) -> String {
    plan.actions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The annotations the decision depends on.
pub fn node_view(node: &Node) -> NodeView {
    let get = |k: &str| ann::get(node, k).map(str::to_string);
    NodeView {
        desired_config: get(ann::DESIRED_CONFIG),
        desired_image: get(ann::DESIRED_IMAGE),
        current_config: get(ann::CURRENT_CONFIG),
        current_image: get(ann::CURRENT_IMAGE),
        state: get(ann::STATE),
    }
}

/// An error chain as one line (`what: why: cause`), as the `reason` annotation shows it.
pub fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves on the next change; never when there is no watch or it ended.
async fn changed_or_pending<T>(rx: &mut Option<watch::Receiver<T>>) {
    if let Some(r) = rx {
        if r.changed().await.is_ok() {
            return;
        }
    }
    std::future::pending().await
}

async fn recv_drift(
    drift: &mut Option<(DriftMonitor, mpsc::Receiver<DriftReport>)>,
) -> Option<DriftReport> {
    match drift {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}
