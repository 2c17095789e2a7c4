//! The health gate after a boot into a new deployment, and the automatic rollback when it fails.
//!
//! After the new deployment booted and was verified (image, kernel arguments, files), and before Done:
//! the required checks ([`crate::host::health`]) must pass within their timeout, and the node's own
//! `Ready` condition must be reported after the boot within a deadline. The kubelet posts Ready=True with
//! `lastHeartbeatTime` = now (kubernetes pkg/kubelet/nodestatus/setters.go ReadyCondition) right after it
//! starts (pkg/kubelet/kubelet_node_status.go tryUpdateNodeStatus reports at once when it has never
//! reported), so a heartbeat at or after the boot means this boot's kubelet came up; a Ready condition
//! from before the reboot does not count.
//!
//! A failure rolls back: the previous deployment becomes the default, one reboot, and in that boot the
//! config's files go back to the starting config, the node reports Degraded with the evidence (Event
//! `RolledBack`, MCN `NodeDegraded`, `mcd_rollbacks`), and it is uncordoned once the previous deployment
//! is healthy too. Every step is recorded under `/var` (shared by all deployments) before the next one,
//! so a crash or power cut anywhere converges; the failed target is not tried again until the node's
//! desiredConfig/desiredImage changes or the forcefile is touched.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Node;
use tokio::sync::watch;

use super::driver::{Daemon, Synced};
use super::journal::{self, Journal, with_target_image};
use super::state::Target;
use super::update::{Executor, crash_point};
use crate::cluster::annotations::{self as ann, AnnotationChanges};
use crate::cluster::{Cluster, EventReason, NodeEvent};
use crate::config::paths::FORCEFILE;
use crate::host::health::{
    self, CheckKind, CheckResult, DeploymentRef, GateRecord, NotRun, ReadyOutcome, Rollback,
    RollbackStep, Verdict,
};
use crate::host::{self, ApplyOptions};
use crate::os::{Deployment, OsBackend, OsStatus};
use crate::plan::{self, Action, PlanOptions};
use crate::systemd::ServiceManager;

/// The default per-check timeout (`--health-check-timeout`).
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(300);
/// The default deadline for the node's Ready condition after the boot (`--health-ready-timeout`).
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(600);
/// Lines of a failed check's output in the Degraded reason (the record keeps more).
const REASON_LINES: usize = 5;
/// Reboots into the previous deployment before giving up (the second only when the first came back
/// on the failed deployment, e.g. a power cut before the boot loader was written).
const MAX_ROLLBACK_REBOOTS: u32 = 2;

/// Deadlines of the health gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateOptions {
    /// Each check is killed (with its process group) after this long and counts as failed.
    pub check_timeout: Duration,
    /// The node must report Ready within this long of the gate's start.
    pub ready_timeout: Duration,
}

impl Default for GateOptions {
    fn default() -> Self {
        GateOptions {
            check_timeout: DEFAULT_CHECK_TIMEOUT,
            ready_timeout: DEFAULT_READY_TIMEOUT,
        }
    }
}

/// How the gate of an update ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum GateResult {
    Passed,
    /// Failed, and the rollback is recorded: the daemon carries it out next.
    RollBack,
    /// Failed with nothing to roll back to: the update fails for good with this reason.
    NoRollback(String),
    /// Stopped (SIGTERM) mid-way; the gate resumes with its deadline after a restart.
    Stopped,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// What the checks and the Ready wait found.
struct Examined {
    checks: Vec<CheckResult>,
    not_run: Vec<NotRun>,
    ready: Option<ReadyOutcome>,
    /// The evidence of the first required failure or the missed deadline.
    failure: Option<String>,
}

/// Ready=True with a heartbeat from this boot (`boot_time`, Unix seconds; the API has second precision).
fn ready_since(node: &Node, boot_time: i64) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| {
            c.status == "True"
                && c.last_heartbeat_time
                    .as_ref()
                    .is_some_and(|t| t.0.as_second() >= boot_time)
        })
}

/// Wait for the node's Ready condition from this boot until `deadline` (Unix seconds).
async fn wait_ready(
    mut nodes: watch::Receiver<Option<Node>>,
    boot_time: i64,
    started_at: u64,
    deadline: u64,
) -> ReadyOutcome {
    loop {
        if nodes
            .borrow_and_update()
            .as_ref()
            .is_some_and(|n| ready_since(n, boot_time))
        {
            return ReadyOutcome::Ready {
                after_seconds: now_secs().saturating_sub(started_at),
            };
        }
        let left = Duration::from_secs(deadline.saturating_sub(now_secs()));
        tokio::select! {
            changed = nodes.changed() => {
                if changed.is_err() {
                    tokio::time::sleep(left).await;
                }
            }
            _ = tokio::time::sleep(left) => {
                return ReadyOutcome::DeadlinePassed {
                    deadline_seconds: deadline.saturating_sub(started_at),
                };
            }
        }
    }
}

/// Where the checks are found: the booted image's `/usr` and the node's `/etc`.
struct CheckRoots {
    image: PathBuf,
    node: PathBuf,
}

/// Run the checks and wait for Ready at the same time; a required failure or the deadline ends it at
/// once. `None` when stopped.
async fn examine(
    roots: CheckRoots,
    nodes: watch::Receiver<Option<Node>>,
    boot_time: i64,
    started_at: u64,
    opts: GateOptions,
    mut stop: watch::Receiver<bool>,
    warn: impl Fn(&CheckResult),
) -> anyhow::Result<Option<Examined>> {
    let found = tokio::task::spawn_blocking(move || health::discover(&roots.image, &roots.node))
        .await
        .context("the check discovery task panicked")??;
    tracing::info!(
        required = found.required.len(),
        wanted = found.wanted.len(),
        not_run = found.not_run.len(),
        check_timeout_s = opts.check_timeout.as_secs(),
        ready_timeout_s = opts.ready_timeout.as_secs(),
        "health gate: running the checks and waiting for the node to report Ready"
    );
    for n in &found.not_run {
        tracing::warn!(check = %n.path, "health check not run: {}", n.why);
    }
    let all: Vec<_> = found
        .required
        .iter()
        .chain(found.wanted.iter())
        .cloned()
        .collect();
    let checks = health::run_all(&all, opts.check_timeout, |r| {
        if r.outcome.passed() {
            tracing::info!(check = %r.path, kind = %r.kind, ms = r.millis, "health check passed");
        } else {
            tracing::warn!(check = %r.path, kind = %r.kind, ms = r.millis, "health check {}", r.describe(REASON_LINES));
            if r.kind == CheckKind::Wanted {
                warn(r);
            }
        }
    });
    let deadline = started_at + opts.ready_timeout.as_secs();
    let ready = wait_ready(nodes, boot_time, started_at, deadline);
    tokio::pin!(checks, ready);
    let (mut results, mut ready_outcome) = (None::<Vec<CheckResult>>, None);
    while results.is_none() || ready_outcome.is_none() {
        tokio::select! {
            r = &mut checks, if results.is_none() => {
                let failed = r.iter().any(|c| c.kind == CheckKind::Required && !c.outcome.passed());
                results = Some(r);
                if failed {
                    break;
                }
            }
            r = &mut ready, if ready_outcome.is_none() => {
                let missed = matches!(r, ReadyOutcome::DeadlinePassed { .. });
                ready_outcome = Some(r);
                if missed {
                    break;
                }
            }
            _ = stop.wait_for(|s| *s) => return Ok(None),
        }
    }
    let checks = results.unwrap_or_default();
    let failure = checks
        .iter()
        .find(|c| c.kind == CheckKind::Required && !c.outcome.passed())
        .map(|c| format!("required health check {}", c.describe(REASON_LINES)))
        .or_else(|| match &ready_outcome {
            Some(ReadyOutcome::DeadlinePassed { deadline_seconds }) => Some(format!(
                "the node did not report Ready within {deadline_seconds} s of the boot (the kubelet did not come up)"
            )),
            _ => None,
        });
    Ok(Some(Examined {
        checks,
        not_run: found.not_run,
        ready: ready_outcome,
        failure,
    }))
}

/// The gate record belongs to this update attempt.
fn same_update(r: &GateRecord, j: &Journal) -> bool {
    r.update_started_at == j.progress.started_at
        && r.target_config == j.progress.target.config
        && r.target_image == j.progress.target.image
}

/// The Degraded reason after a rollback.
fn rolled_back_reason(r: &GateRecord, failure: &str) -> String {
    let previous = r
        .rollback
        .as_ref()
        .map(|rb| rb.to.describe())
        .unwrap_or_else(|| "the previous deployment".into());
    format!(
        "rolled back: config {} on {} failed its health gate after the boot: {failure}; the node runs config {} on {previous} again. Fix the image or the check and roll out a new config or image, or touch {FORCEFILE} to try {} again",
        r.target_config,
        r.deployment.describe(),
        r.from_config,
        r.target_config
    )
}

fn failure_of(r: &GateRecord) -> String {
    match &r.verdict {
        Verdict::Failed { reason } => reason.clone(),
        _ => "the health gate failed".into(),
    }
}

/// A deployment of `status` by id.
fn find(status: &OsStatus, id: &str) -> Option<Deployment> {
    status
        .roles()
        .map(|(_, d)| d)
        .find(|d| d.id() == id)
        .cloned()
}

impl<C, O, S> Executor<'_, C, O, S>
where
    C: Cluster + 'static,
    O: OsBackend,
    S: ServiceManager,
{
    /// [`super::state::Phase::Healthy`]: run the gate on the booted deployment (resuming one a restart
    /// interrupted, with its deadline), and record its verdict and, when it failed, the rollback.
    pub(super) async fn health_gate(&self, j: &Journal) -> anyhow::Result<GateResult> {
        let Some(side) = self.cluster else {
            return Ok(GateResult::Passed);
        };
        let status = self.os.status().await.context("reading the OS status")?;
        let Some(booted) = status.booted.clone() else {
            return Ok(GateResult::Passed);
        };
        if j.progress.started_on.as_deref() == Some(booted.id().as_str()) {
            tracing::info!(deployment = %booted.id(), "the update booted no new deployment: no health gate");
            return Ok(GateResult::Passed);
        }
        let boot_id = self.env.boot_id()?;
        let mut record = match health::load(self.root)? {
            Some(r) if same_update(&r, j) && r.boot_id == boot_id => match &r.verdict {
                Verdict::Passed => return Ok(GateResult::Passed),
                Verdict::Failed { reason } if r.rollback.is_none() => {
                    return Ok(GateResult::NoRollback(reason.clone()));
                }
                Verdict::Failed { .. } => return Ok(GateResult::RollBack),
                Verdict::Running => {
                    tracing::info!(started_at = r.started_at, "resuming the health gate");
                    r
                }
            },
            _ => GateRecord {
                target_config: j.progress.target.config.clone(),
                target_image: j.progress.target.image.clone(),
                from_config: j.progress.from.config.clone(),
                from_image: j.progress.from.image.clone(),
                update_started_at: j.progress.started_at,
                boot_id,
                deployment: DeploymentRef::of(&booted),
                // The known-good one: booted when the update started (the rollback deployment).
                previous: j
                    .progress
                    .started_on
                    .as_deref()
                    .and_then(|id| find(&status, id))
                    .or_else(|| status.rollback.clone())
                    .as_ref()
                    .map(DeploymentRef::of),
                started_at: now_secs(),
                finished_at: None,
                checks: Vec::new(),
                not_run: Vec::new(),
                ready: None,
                verdict: Verdict::Running,
                rollback: None,
                pruned: false,
                released: false,
            },
        };
        health::save(self.root, &record)?;
        crash_point("daemon::gate-started");
        let warn_events = std::sync::Mutex::new(Vec::new());
        let examined = examine(
            CheckRoots {
                image: self.env.image_root(&status),
                node: self.root.path().to_path_buf(),
            },
            side.nodes.clone(),
            self.env.boot_time()?,
            record.started_at,
            self.gate,
            self.stop.clone(),
            |r| {
                warn_events
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(r.describe(REASON_LINES))
            },
        )
        .await?;
        let Some(e) = examined else {
            return Ok(GateResult::Stopped);
        };
        for w in warn_events.into_inner().unwrap_or_default() {
            side.event(NodeEvent::warning(
                EventReason::HealthCheckWarning,
                format!("Wanted health check {w} (only a warning)"),
            ))
            .await;
        }
        let now = now_secs();
        record.checks = e.checks;
        record.not_run = e.not_run;
        record.ready = e.ready;
        record.finished_at = Some(now);
        let Some(failure) = e.failure else {
            record.verdict = Verdict::Passed;
            health::save(self.root, &record)?;
            self.metrics
                .set_health_gate("passed", &record.target_config, now);
            let ready = match record.ready {
                Some(ReadyOutcome::Ready { after_seconds }) => {
                    format!(", Ready after {after_seconds} s")
                }
                _ => String::new(),
            };
            let msg = format!(
                "Health gate passed on {}: {} check(s) ran{ready}",
                record.deployment.describe(),
                record.checks.len()
            );
            tracing::info!("{msg}");
            side.event(NodeEvent::normal(EventReason::HealthGatePassed, msg))
                .await;
            return Ok(GateResult::Passed);
        };
        record.verdict = Verdict::Failed {
            reason: failure.clone(),
        };
        self.metrics
            .set_health_gate("failed", &record.target_config, now);
        let Some(previous) = record.previous.clone() else {
            health::save(self.root, &record)?;
            let reason = format!(
                "config {} on {} failed its health gate after the boot: {failure}; there is no previous deployment to roll back to. Fix the image or the check, or touch {FORCEFILE} to try again",
                record.target_config,
                record.deployment.describe()
            );
            return Ok(GateResult::NoRollback(reason));
        };
        record.rollback = Some(Rollback {
            step: RollbackStep::Decided,
            to: previous.clone(),
            reboot_boot_id: None,
            reboots: 0,
            booted_back_at: None,
            uncordoned: false,
            stuck: None,
        });
        health::save(self.root, &record)?;
        crash_point("daemon::gate-failed");
        let msg = format!(
            "Health gate failed on {} (config {}): {failure}; rolling back to {}",
            record.deployment.describe(),
            record.target_config,
            previous.describe()
        );
        tracing::error!("{msg}");
        side.event(NodeEvent::warning(
            EventReason::HealthGateFailed,
            msg.clone(),
        ))
        .await;
        // The node stays Working until it is back; the reason says why it reboots again.
        if let Err(e) = side
            .annotations
            .write(
                AnnotationChanges::new().set(ann::REASON, ann::truncate_reason(&msg)),
                None,
            )
            .await
        {
            tracing::warn!(error = %format!("{e:#}"), "could not write the reason");
        }
        Ok(GateResult::RollBack)
    }

    /// After Done on a deployment that passed its gate: remove deployments older than the previous
    /// one (kept for a rollback), once.
    pub(super) async fn prune_after_gate(&self, j: &Journal) {
        prune_once(self.root, self.os, Some(j)).await;
    }
}

/// Prune once after a passed gate (for `j`'s update, or whatever the record says when `None`).
async fn prune_once<O: OsBackend>(root: &crate::host::Root, os: &O, j: Option<&Journal>) {
    let record = match health::load(root) {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "reading the health gate record");
            return;
        }
    };
    if record.verdict != Verdict::Passed
        || record.pruned
        || j.is_some_and(|j| !same_update(&record, j))
    {
        return;
    }
    match os.prune().await {
        Ok(report) => {
            tracing::info!(removed = %report.deployments_removed.join(" "), images_removed = report.cleanup.images_removed, "pruned deployments older than the rollback one");
            let mut record = record;
            record.pruned = true;
            if let Err(e) = health::save(root, &record) {
                tracing::warn!(error = %format!("{e:#}"), "recording the prune");
            }
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "could not prune older deployments (tried again at the next sync)")
        }
    }
}

impl<C, O, S> Daemon<C, O, S>
where
    C: Cluster + 'static,
    O: OsBackend,
    S: ServiceManager,
{
    /// A prune a crash interrupted after Done.
    pub(super) async fn prune_if_pending(&self) {
        prune_once(&self.root, &self.os, None).await;
    }

    /// The last gate failed for exactly `to` and nothing released it (a new target or the forcefile):
    /// the reason to report instead of trying it again.
    pub(super) fn failed_gate_blocks(&self, to: &Target) -> anyhow::Result<Option<String>> {
        let Some(r) = health::load(&self.root)? else {
            return Ok(None);
        };
        if r.released || r.failed_target() != Some((to.config.as_str(), to.image.as_deref())) {
            return Ok(None);
        }
        Ok(Some(rolled_back_reason(&r, &failure_of(&r))))
    }

    /// A new update is planned: a failed gate's target no longer blocks anything (the node asked for
    /// something else, or the forcefile for the same again).
    pub(super) fn release_failed_gate(&self, to: &Target, forced: bool) -> anyhow::Result<()> {
        let Some(mut r) = health::load(&self.root)? else {
            return Ok(());
        };
        if r.released || r.failed_target().is_none() || r.rolling_back() {
            return Ok(());
        }
        if forced || r.failed_target() != Some((to.config.as_str(), to.image.as_deref())) {
            r.released = true;
            health::save(&self.root, &r)?;
        }
        Ok(())
    }

    /// The rollback is over (healthy, stuck, or overtaken by another boot): recorded once, never redone.
    fn finish_rollback(
        &self,
        mut record: health::GateRecord,
        mut rb: health::Rollback,
    ) -> anyhow::Result<Option<Synced>> {
        rb.step = RollbackStep::Finished;
        record.rollback = Some(rb);
        health::save(&self.root, &record)?;
        Ok(Some(Synced::Settled))
    }

    /// Carry a rollback forward, from wherever it stands (see the module docs). `Some` when it decided
    /// this sync; `None` when there is none or it is over (the failed journal then makes the node report
    /// Degraded until a new target or the forcefile).
    pub(super) async fn continue_rollback(
        &mut self,
        journal: Option<&Journal>,
        boot_id: &str,
    ) -> anyhow::Result<Option<Synced>> {
        let Some(mut record) = health::load(&self.root)? else {
            return Ok(None);
        };
        let Some(mut rb) = record.rollback.clone() else {
            return Ok(None);
        };
        if rb.step == RollbackStep::Finished {
            return Ok(None);
        }
        let journal = journal.filter(|j| same_update(&record, j));
        let status = self.os.status().await.context("reading the OS status")?;
        let booted = status.booted.as_ref().map(Deployment::id);
        let failure = failure_of(&record);
        let reason = rolled_back_reason(&record, &failure);
        if booted.as_deref() == Some(rb.to.id.as_str()) {
            if rb.step < RollbackStep::Reported {
                if let Some(j) = journal {
                    let mut j = j.clone();
                    self.restore_starting_config(&j).await?;
                    j.progress.fail(reason.clone());
                    j.progress.rolled_back = true;
                    journal::save(&self.root, &j)?;
                }
                crash_point("daemon::rollback-after-restore");
                // Degraded first: whoever sees the event finds the node already saying why.
                tracing::error!("{reason}");
                self.report_degraded(&reason).await?;
                self.side
                    .event(NodeEvent::warning(EventReason::RolledBack, reason.clone()))
                    .await;
                rb.step = RollbackStep::Reported;
                rb.booted_back_at = Some(now_secs());
                record.rollback = Some(rb.clone());
                health::save(&self.root, &record)?;
                self.metrics.rollbacks.inc();
                self.metrics
                    .set_health_gate("rolled_back", &record.target_config, now_secs());
                crash_point("daemon::rollback-after-report");
            }
            // Back on the known-good deployment: serve again once it is healthy.
            let examined = examine(
                CheckRoots {
                    image: self.env.image_root(&status),
                    node: self.root.path().to_path_buf(),
                },
                self.side.nodes.clone(),
                self.env.boot_time()?,
                rb.booted_back_at.unwrap_or_else(now_secs),
                self.gate,
                self.stop.clone(),
                |_| {},
            )
            .await?;
            let Some(e) = examined else {
                return Ok(Some(Synced::Interrupted));
            };
            match e.failure {
                None => {
                    self.side
                        .release_cordon(&self.metrics, &record.from_config)
                        .await?;
                    rb.uncordoned = true;
                    tracing::info!(deployment = %rb.to.id, "back on the previous deployment and healthy: uncordoned");
                }
                Some(why) => {
                    let stuck = format!(
                        "the previous deployment is not healthy either ({why}), so the node stays cordoned"
                    );
                    self.stay_degraded(journal, &format!("{reason}; {stuck}"))
                        .await?;
                    rb.stuck = Some(stuck);
                }
            }
            return self.finish_rollback(record, rb);
        }
        if booted.as_deref() != Some(record.deployment.id.as_str()) {
            // Someone booted something else: the rollback has nothing left to do.
            let stuck = format!(
                "the rollback to {} is over: the node booted deployment {} instead",
                rb.to.describe(),
                booted.unwrap_or_else(|| "(none)".into())
            );
            self.stay_degraded(journal, &format!("{reason}; {stuck}"))
                .await?;
            rb.stuck = Some(stuck);
            return self.finish_rollback(record, rb);
        }
        // Still on the failed deployment.
        if rb.step == RollbackStep::Rebooting && rb.reboot_boot_id.as_deref() == Some(boot_id) {
            tracing::info!(
                "the reboot into the previous deployment has not happened yet; asking again"
            );
            self.reboot_for_rollback(&record, &rb).await?;
            return Ok(Some(Synced::RebootRequested));
        }
        if rb.reboots >= MAX_ROLLBACK_REBOOTS {
            let stuck = format!(
                "the node came back on the failed deployment after {} reboots into {}; check the boot loader (`journalctl -b -1`)",
                rb.reboots,
                rb.to.describe()
            );
            self.stay_degraded(journal, &format!("{reason}; {stuck}"))
                .await?;
            rb.stuck = Some(stuck);
            rb.step = RollbackStep::Finished;
            record.rollback = Some(rb);
            health::save(&self.root, &record)?;
            return Ok(Some(Synced::Settled));
        }
        let Some(to) = find(&status, &rb.to.id) else {
            let stuck = format!(
                "the previous deployment {} is gone, so there is nothing to roll back to",
                rb.to.describe()
            );
            self.stay_degraded(journal, &format!("{failure}; {stuck}"))
                .await?;
            rb.stuck = Some(stuck);
            rb.step = RollbackStep::Finished;
            record.rollback = Some(rb);
            health::save(&self.root, &record)?;
            return Ok(Some(Synced::Settled));
        };
        let outcome = self
            .os
            .rollback(&to)
            .await
            .with_context(|| format!("rolling back to {}", rb.to.describe()))?;
        tracing::info!(outcome = ?outcome, deployment = %to.id(), "the previous deployment boots next");
        crash_point("daemon::rollback-after-switch");
        rb.step = RollbackStep::Rebooting;
        rb.reboot_boot_id = Some(boot_id.to_string());
        rb.reboots += 1;
        record.rollback = Some(rb.clone());
        health::save(&self.root, &record)?;
        crash_point("daemon::rollback-after-reboot-recorded");
        self.reboot_for_rollback(&record, &rb).await?;
        crash_point("daemon::rollback-after-reboot-requested");
        Ok(Some(Synced::RebootRequested))
    }

    async fn reboot_for_rollback(&self, record: &GateRecord, rb: &Rollback) -> anyhow::Result<()> {
        let reason = format!(
            "rollback of config {} to {}",
            record.target_config,
            rb.to.describe()
        );
        self.side
            .event(NodeEvent::normal(
                EventReason::Reboot,
                format!(
                    "Node will reboot into the previous deployment {} (config {} failed its health gate)",
                    rb.to.describe(),
                    record.target_config
                ),
            ))
            .await;
        let after_finalize = self.root.path().join("run/ostree-booted").exists();
        self.metrics.reboots_requested.inc();
        if let Err(e) = self.systemd.reboot(&reason, after_finalize).await {
            self.metrics.reboots_failed.inc();
            return Err(e.context("failed to reboot into the previous deployment"));
        }
        tracing::info!(reason = %reason, "reboot requested");
        Ok(())
    }

    /// The rollback cannot finish as planned: Degraded with `reason`, also for later syncs.
    async fn stay_degraded(&self, journal: Option<&Journal>, reason: &str) -> anyhow::Result<()> {
        if let Some(j) = journal {
            let mut j = j.clone();
            j.progress.fail(reason.to_string());
            journal::save(&self.root, &j)?;
        }
        tracing::error!("{reason}");
        self.report_degraded(reason).await
    }

    /// Back on the previous deployment: put the files, units and users back at the starting config
    /// (they were written for the target before the first reboot, into the /etc the previous deployment
    /// boots with) and run the post-config actions that change needs, except a reboot: the node is not
    /// rebooted a second time, a file whose policy is a reboot takes full effect at the next one.
    async fn restore_starting_config(&self, j: &Journal) -> anyhow::Result<()> {
        let on_disk = with_target_image(
            j.target_files_with_starting_os()?,
            j.progress.from.image.as_deref(),
        )?;
        let from = with_target_image(j.from_config()?, j.progress.from.image.as_deref())?;
        let policy = self.fetch_policy().await?;
        let plan = plan::plan_with(&on_disk, &from, None, &policy, &PlanOptions::default());
        if !plan.reconcilable || !plan.touches_host() {
            return Ok(());
        }
        let (root, current, desired, p) = (self.root.clone(), on_disk, from, plan.clone());
        let report = tokio::task::spawn_blocking(move || {
            host::apply(
                &root,
                &current,
                &desired,
                &p,
                ApplyOptions {
                    dry_run: false,
                    write_odc: false,
                },
            )
        })
        .await
        .context("the host apply task panicked")?
        .map_err(|e| {
            anyhow::anyhow!(
                "putting config {}'s files back failed: {e}",
                j.progress.from.config
            )
        })?;
        tracing::info!(operations = report.operations.len(), config = %j.progress.from.config, "the starting config's files are back");
        for action in &plan.actions {
            let result = match action {
                Action::DaemonReload => self.systemd.daemon_reload().await,
                Action::Reload { unit } => self.systemd.reload_unit(unit).await,
                Action::Restart { unit } => self.systemd.restart_unit(unit).await,
                Action::Reboot => {
                    tracing::warn!(
                        "the restored files' policy asks for a reboot; they take full effect at the next one (no second reboot)"
                    );
                    continue;
                }
                Action::None | Action::Drain => continue,
            };
            if let Err(e) = result {
                tracing::warn!(action = %action, error = %format!("{e:#}"), "a post-config action for the restored files failed");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn node(status: &str, heartbeat: Option<i64>) -> Node {
        Node {
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: status.into(),
                    last_heartbeat_time: heartbeat
                        .map(|s| Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_ready_heartbeat_from_this_boot_counts() {
        let boot = 1_700_000_000;
        assert!(ready_since(&node("True", Some(boot)), boot));
        assert!(ready_since(&node("True", Some(boot + 30)), boot));
        assert!(
            !ready_since(&node("True", Some(boot - 1)), boot),
            "from before the reboot"
        );
        assert!(!ready_since(&node("True", None), boot));
        assert!(!ready_since(&node("False", Some(boot + 30)), boot));
        assert!(!ready_since(&Node::default(), boot));
    }

    #[tokio::test]
    async fn the_ready_wait_ends_at_the_deadline_or_when_the_kubelet_reports() {
        let boot = now_secs() as i64 - 5;
        let (tx, rx) = watch::channel(Some(node("True", Some(boot - 100))));
        let started = now_secs();
        let r = wait_ready(rx.clone(), boot, started, started + 1).await;
        assert_eq!(
            r,
            ReadyOutcome::DeadlinePassed {
                deadline_seconds: 1
            }
        );
        let waiter = tokio::spawn(wait_ready(rx, boot, started, started + 60));
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(Some(node("True", Some(now_secs() as i64))))
            .unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(r, ReadyOutcome::Ready { .. }), "{r:?}");
    }
}
