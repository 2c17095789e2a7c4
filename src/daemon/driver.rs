//! The service loop: watch our Node, decide, execute, report — with backoff on errors, the drift monitor
//! after Done, `sd_notify` readiness and watchdog, and a clean stop on SIGTERM at a safe point.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Node;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::decide::{Decision, InFlight, NodeView, decide};
use super::env::NodeEnv;
use super::journal::{self, Journal, with_target_image};
use super::state::{Phase, Progress, Target};
use super::update::{ClusterSide, Executor, Outcome};
use super::{bootstrap, verify};
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
    /// Something changed what comes next (the update in flight was superseded, first boot finished):
    /// sync again at once.
    Again,
}

/// A sync failure retried without reporting Degraded: nothing was decided or written yet (the bootstrap's
/// read of the node's rendered config). The reason goes to the log and `/healthz`.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct RetryQuietly(pub anyhow::Error);

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
    /// How long a requested reboot may take before the daemon reports it and asks again.
    pub reboot_grace: Duration,
    /// Deadlines of the health gate after a boot into a new deployment.
    pub gate: super::gate::GateOptions,
    /// The target last verified as on disk and booted; skip re-verifying it until drift says otherwise.
    pub(super) verified: Option<Target>,
    pub(super) drift: Option<(DriftMonitor, mpsc::Receiver<DriftReport>)>,
    /// The config the drift monitor watches against (to check a report is still true).
    drift_config: Option<MachineConfig>,
    /// The last reason we reported Degraded for, to log transitions once.
    last_wait: Option<String>,
    /// The checks of the first sync after start ran (the previous boot's finalize failure).
    first_run_done: bool,
    /// The previous boot's `ostree-finalize-staged` error, named as a possible root cause when the node
    /// did not boot what was staged (as the MCD appends it to validation errors).
    pub(super) finalize_failure: Option<String>,
    /// The bootstrap just recorded the node's config: the next settle reports Done (`NodeDone`) even
    /// though node-annotations.json already said Done.
    pub(super) bootstrapped: bool,
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
            reboot_grace: super::update::REBOOT_GRACE,
            gate: Default::default(),
            verified: None,
            drift: None,
            drift_config: None,
            last_wait: None,
            first_run_done: false,
            finalize_failure: None,
            bootstrapped: false,
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
            finalize_failure: self.finalize_failure.as_deref(),
            gate: self.gate,
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
                if !matches!(wake, Wake::Retry) {
                    continue;
                }
                // The reboot asked for `reboot_grace` ago has not happened (a failed or blocked reboot
                // unit): say so, and let the update in flight ask again instead of waiting forever.
                let reason = format!(
                    "the reboot requested {} s ago has not happened; see `journalctl -u {}`; asking again",
                    self.reboot_grace.as_secs(),
                    crate::systemd::REBOOT_UNIT
                );
                tracing::error!("{reason}");
                self.degrade(&reason).await;
                reboot_pending = false;
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
                    self.metrics.set_sync_problem(None);
                    match outcome {
                        Synced::RebootRequested => {
                            reboot_pending = true;
                            retry_at = Some(Instant::now() + self.reboot_grace);
                        }
                        Synced::Interrupted => break,
                        Synced::Again => retry_at = Some(Instant::now()),
                        _ => {}
                    }
                }
                Err(e) => {
                    let reason = one_line(&e);
                    self.metrics.set_sync_problem(Some(&reason));
                    if e.downcast_ref::<RetryQuietly>().is_some() {
                        tracing::warn!(error = %reason, retry_in_s = delay.as_secs(), "sync failed; retrying");
                    } else {
                        tracing::error!(error = %reason, retry_in_s = delay.as_secs(), "sync failed; the node is Degraded until it succeeds");
                        self.degrade(&reason).await;
                    }
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
        if !self.first_run_done {
            self.report_finalize_failure(&node).await;
            self.first_run_done = true;
        }
        let node = self.load_node_annotations(node).await?;
        super::certsync::sync_controller_config(&self.side, &self.root, &node).await?;
        super::mcn_status::mirror_annotations(&self.side, &node).await;
        let journal = journal::load(&self.root)?;
        let boot_id = self.env.boot_id()?;
        self.after_reboot_bookkeeping(&node, journal.as_ref(), &boot_id)
            .await?;
        // A rollback after a failed health gate is carried through before anything else is decided.
        if let Some(outcome) = self.continue_rollback(journal.as_ref(), &boot_id).await? {
            return Ok(outcome);
        }
        let forcefile = self.env.forcefile();
        // A new node's first start (the MCS's node-annotations.json is still there): validate the node
        // against its full rendered config before anything else, once first boot's own update is done.
        if journal.is_none()
            && bootstrap::pending(&self.root)?
            && let Some(outcome) = self.bootstrap(&node, forcefile).await?
        {
            return Ok(outcome);
        }
        let view = NodeView::of(&node);
        let odc = self.read_odc()?;
        let on_disk = odc.as_ref().map(|(mc, image)| Target {
            config: mc.name.clone(),
            image: image.clone(),
        });
        let in_flight = journal.as_ref().map(|j| InFlight {
            progress: &j.progress,
            reboot_underway: j.progress.reboot_underway(&boot_id),
        });
        let decision = decide(&view, on_disk.as_ref(), in_flight, forcefile);
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
                // Without its journal the failed gate still remembers the target it rolled back from.
                if !forced && let Some(reason) = self.failed_gate_blocks(&to)? {
                    self.report_degraded(&reason).await?;
                    return Ok(Synced::Settled);
                }
                let current = odc.map(|(mc, _)| mc).filter(|mc| mc.name == from.config);
                self.start(from, current, to, forced).await
            }
            Decision::Supersede { to, forced } => {
                let j = journal.expect("Supersede is only decided with a journal");
                // The old journal stays until the new plan's journal replaces it: if the new target
                // cannot be read or applied, the next sync still knows what is on disk.
                let (from, on_disk) = self.on_disk_of(&j).await?;
                tracing::info!(
                    superseded = %j.progress.target,
                    phase = %j.progress.phase,
                    failed = j.progress.failed.is_some(),
                    from = %from,
                    to = %to,
                    forced,
                    "the update in flight gives way to a newer target; planning from what is on disk"
                );
                self.start(from, Some(on_disk), to, forced).await
            }
            Decision::DropFirstBoot => {
                tracing::info!(
                    "the forcefile retries the failed first-boot update as a forced update"
                );
                journal::remove(&self.root)?;
                Ok(Synced::Again)
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

    pub(super) fn read_odc(&self) -> anyhow::Result<Option<(MachineConfig, Option<String>)>> {
        let config =
            host::odc::read_current_config(&self.root).map_err(|e| anyhow::anyhow!("{e}"))?;
        let Some(config) = config else {
            return Ok(None);
        };
        let image = host::odc::read_current_image(&self.root)?;
        Ok(Some((config, image)))
    }

    /// A MachineConfig from the API, validated; the errors are the sentences an admin sees.
    pub(super) async fn fetch_config(&self, name: &str) -> anyhow::Result<MachineConfig> {
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
    pub(super) async fn fetch_policy(&self) -> anyhow::Result<MachineConfiguration> {
        let wait = crate::cluster::policy_source::PolicyWait::default();
        let (policy, _source) =
            crate::cluster::policy_source::fetch_policy(&*self.side.cluster, wait).await?;
        Ok(policy)
    }

    /// What the node has on disk, given an update in flight that gives way: before it wrote anything,
    /// the config it started from; after, the target's files, units and users with the OS part of
    /// whichever config the booted deployment and kernel really run.
    async fn on_disk_of(&self, j: &Journal) -> anyhow::Result<(Target, MachineConfig)> {
        // Rolled back after a failed health gate: the starting config's OS and files again.
        if !j.progress.phase.node_modified() || j.progress.rolled_back {
            return Ok((j.progress.from.clone(), j.from_config()?));
        }
        let status = self.os.status().await.context("reading the OS status")?;
        let target = j.target_config()?;
        let os_is_target = verify::os_problem(&target, status.booted.as_ref()).is_none()
            && verify::missing_kargs(&target, &self.env.cmdline(&status)?).is_empty();
        if os_is_target {
            let received = MachineConfig::from_value(j.target.clone())
                .map_err(|e| anyhow::anyhow!("the journal's target config: {e}"))?;
            return Ok((j.progress.target.clone(), received));
        }
        Ok((
            Target {
                config: j.progress.target.config.clone(),
                image: j.progress.from.image.clone(),
            },
            j.target_files_with_starting_os()?,
        ))
    }

    /// Plan and run an update from `from` (whose config is `current` when the caller has it) to `to`.
    async fn start(
        &mut self,
        from: Target,
        current: Option<MachineConfig>,
        to: Target,
        forced: bool,
    ) -> anyhow::Result<Synced> {
        self.stop_drift().await;
        self.verified = None;
        let desired_received = self.fetch_config(&to.config).await?;
        let desired = with_target_image(desired_received.clone(), to.image.as_deref())?;
        let current_received = match current {
            Some(mc) => mc,
            None if from.config.is_empty() => MachineConfig::empty(),
            None => self.fetch_config(&from.config).await?,
        };
        let mut current = with_target_image(current_received.clone(), from.image.as_deref())?;
        // The MCD's checkFIPS (`pkg/daemon/update.go`): the node's FIPS state stands for the current
        // config's, so FIPS on in the target on a FIPS node is no change, and any other change is refused.
        if let Some(fips) = self.env.fips()? {
            current.fips = fips;
        }
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
        if !plan.reconcilable && plan.unreconcilable.iter().all(|u| u.update_error) {
            // A failed update (Degraded, retried with backoff), as the MCD reports it; nothing touched.
            anyhow::bail!(
                "config {} cannot be applied, nothing was changed: {}",
                to.config,
                plan.unreconcilable
                    .iter()
                    .map(|u| format!("{}: {}", u.field, u.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
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
        self.release_failed_gate(&to, forced)?;
        tracing::info!(from = %from, to = %to, actions = %plan.actions.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "), drain = plan.drain, reboot = plan.reboot, "starting an update");
        for line in &plan.explanations {
            tracing::info!("plan: {line}");
        }
        let mut progress = Progress::planned(from, to, plan.reboot, now_secs());
        progress.os_image = desired.os_image().map(str::to_string);
        progress.health_gate = plan.health_gate.is_some();
        progress.started_on = status.booted.as_ref().map(|d| d.id());
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
            // First boot's OS part is done; the bootstrap takes over at once.
            Outcome::Completed if j.progress.first_boot => Ok(Synced::Again),
            Outcome::Completed => {
                self.verified = Some(j.progress.target.clone());
                self.start_drift(&j.target_config()?).await;
                Ok(Synced::Updated)
            }
            Outcome::RebootRequested => Ok(Synced::RebootRequested),
            Outcome::Interrupted => Ok(Synced::Interrupted),
            Outcome::Superseded | Outcome::RollingBack => Ok(Synced::Again),
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
        self.prune_if_pending().await;
        let problems = self.check_node(&config, current.image.is_some()).await?;
        self.start_drift(&config).await;
        if let Some(reason) = problems {
            self.verified = None;
            self.report_degraded(&reason).await?;
            return Ok(Synced::Settled);
        }
        // Done with nothing left to do: undo our cordon, whichever update (finished, abandoned or
        // superseded) made it.
        self.side
            .release_cordon(&self.metrics, &current.config)
            .await?;
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
        let bootstrapped = std::mem::take(&mut self.bootstrapped);
        if wrote.is_some() || bootstrapped {
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
        if bootstrapped {
            // The end of a new node's bootstrap, as the MCD's updateConfigAndState reports it (written
            // last, as at the end of an update).
            self.side
                .event(NodeEvent::normal(
                    EventReason::NodeDone,
                    format!(
                        "Setting node {}, currentConfig {} to Done",
                        self.node_name, current.config
                    ),
                ))
                .await;
        }
        self.metrics.set_state("Done", "");
        self.verified = Some(current);
        Ok(Synced::Settled)
    }

    /// Does the node run `config`: the booted image, the kernel arguments, files, units and users (the
    /// MCD's `validateOnDiskStateOrImage`)? `None` when it does, else the Degraded reason.
    pub(super) async fn check_node(
        &self,
        config: &MachineConfig,
        layered_image: bool,
    ) -> anyhow::Result<Option<String>> {
        let status = self.os.status().await.context("reading the OS status")?;
        let mut problems = Vec::new();
        if let Some(p) = verify::os_problem(config, status.booted.as_ref()) {
            problems.push(p);
        }
        // An on-cluster-layering image has its kernel type and extensions built in.
        if !layered_image {
            problems.extend(verify::packages_problem(config, status.booted.as_ref()));
        }
        let missing = verify::missing_kargs(config, &self.env.cmdline(&status)?);
        if !missing.is_empty() {
            problems.push(format!(
                "kernel arguments missing from the running kernel: {}",
                missing.join(" ")
            ));
        }
        if !problems.is_empty()
            && let Some(f) = &self.finalize_failure
        {
            problems.push(format!(
                "possible root cause: the previous boot's ostree-finalize-staged failed: {f}"
            ));
        }
        let (root, c) = (self.root.clone(), config.clone());
        let mismatches = tokio::task::spawn_blocking(move || host::validate(&root, &c))
            .await
            .context("the validation task panicked")??;
        if !mismatches.is_empty() {
            problems.push(verify::describe_mismatches(&config.name, &mismatches));
        }
        if problems.is_empty() {
            return Ok(None);
        }
        Ok(Some(format!(
            "{}; fix it, or touch {} to re-apply config {}",
            problems.join("; "),
            crate::config::paths::FORCEFILE,
            config.name
        )))
    }

    /// Degraded with `reason`: the node annotations (an error if they cannot be written, so a sync
    /// retries), the metric and the MCN NodeDegraded condition.
    pub(super) async fn report_degraded(&self, reason: &str) -> anyhow::Result<()> {
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

    pub(super) async fn start_drift(&mut self, config: &MachineConfig) {
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
                self.drift_config = Some(config.clone());
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
        self.drift_config = None;
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
    async fn on_drift(&mut self, mut report: DriftReport) {
        // A report waits in the channel while a sync runs; that sync may have fixed or re-validated the
        // files since. Only what is still true counts (else a stale report flaps Done to Degraded).
        if !report.mismatches.is_empty()
            && let Some(config) = self.drift_config.clone()
        {
            let root = self.root.clone();
            match tokio::task::spawn_blocking(move || host::validate(&root, &config)).await {
                Ok(Ok(now)) => report.mismatches = now,
                Ok(Err(e)) => {
                    tracing::warn!(error = %format!("{e:#}"), "re-validating a drift report")
                }
                Err(e) => tracing::warn!(error = %e, "the validation task panicked"),
            }
            if report.mismatches.is_empty() {
                tracing::debug!(config = %report.config, "a drift report that is no longer true; ignored");
                return;
            }
        }
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
