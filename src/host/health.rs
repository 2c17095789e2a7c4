//! Health checks after a new deployment booted, and the record of the last health gate.
//!
//! Checks are executables in `required.d/` and `wanted.d/` of
//! - `/usr/lib/machine-config-daemon/health.d/` (shipped by the OS image),
//! - `/etc/machine-config-daemon/health.d/` (from a MachineConfig, or the admin): a file of the same name
//!   replaces the image's check, a symlink to `/dev/null` disables it (as systemd masks units),
//! - `/etc/greenboot/check/` for compatibility with greenboot: `*.sh` files run with `bash`, as
//!   greenboot's `script_runner` does (usr/libexec/greenboot/greenboot: `find -name '*.sh' | sort`,
//!   `bash "$script"`).
//!
//! Each directory set runs in name order, ours before greenboot's. Required checks are strict like
//! greenboot's `required.d`: after the first failure the rest are skipped (greenboot's "was skipped due to
//! a previous failure"); wanted checks all run and only warn. Unlike greenboot, every check has a timeout,
//! after which its whole process group is killed, and the last lines of its output are kept as evidence.
//!
//! The record lives under `/var` ([`crate::config::paths::HEALTH_GATE_STATE`]), which every deployment
//! shares: after a rollback the previous deployment's `/etc` knows nothing of the failed boot.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::Root;
use crate::config::paths::{
    CONFIG_HEALTH_CHECKS, GREENBOOT_HEALTH_CHECKS, HEALTH_GATE_STATE, IMAGE_HEALTH_CHECKS,
};
pub use crate::plan::CheckKind;

/// Lines of a check's output kept (the last ones).
pub const OUTPUT_LINES: usize = 20;
/// Bytes of one kept line.
const LINE_BYTES: usize = 240;

/// One check to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The file name (what the evidence names).
    pub name: String,
    /// Where an admin finds it, e.g. `/usr/lib/machine-config-daemon/health.d/required.d/10-kubelet`.
    pub shown: String,
    /// The file to run on this machine.
    pub path: PathBuf,
    pub kind: CheckKind,
    /// greenboot's scripts run with `bash <script>`.
    pub with_bash: bool,
}

/// A file in a check directory that does not run, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotRun {
    pub path: String,
    pub why: String,
}

/// Every check of a boot, in the order they run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checks {
    pub required: Vec<Check>,
    pub wanted: Vec<Check>,
    pub not_run: Vec<NotRun>,
}

/// Find the checks: `image_root` is where the booted image's `/usr` is (the node root on a host),
/// `node_root` where its `/etc` is.
pub fn discover(image_root: &Path, node_root: &Path) -> anyhow::Result<Checks> {
    let mut checks = Checks::default();
    for kind in [CheckKind::Required, CheckKind::Wanted] {
        let mut found = ours(image_root, node_root, kind, &mut checks.not_run)?;
        found.extend(greenboot(node_root, kind, &mut checks.not_run)?);
        match kind {
            CheckKind::Required => checks.required = found,
            CheckKind::Wanted => checks.wanted = found,
        }
    }
    Ok(checks)
}

/// Directory entries (name, path), sorted by name; hidden files and subdirectories are not checks.
fn entries(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut out = Vec::new();
    for e in read {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = e.path();
        if std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        out.push((name, path));
    }
    out.sort();
    Ok(out)
}

fn is_masked(path: &Path) -> bool {
    std::fs::read_link(path).is_ok_and(|t| t == Path::new("/dev/null"))
}

fn ours(
    image_root: &Path,
    node_root: &Path,
    kind: CheckKind,
    not_run: &mut Vec<NotRun>,
) -> anyhow::Result<Vec<Check>> {
    use std::os::unix::fs::PermissionsExt;
    let image_dir = format!("{IMAGE_HEALTH_CHECKS}/{}", kind.dir_name());
    let config_dir = format!("{CONFIG_HEALTH_CHECKS}/{}", kind.dir_name());
    let mut by_name: std::collections::BTreeMap<String, (String, PathBuf)> = Default::default();
    for (logical, root) in [(&image_dir, image_root), (&config_dir, node_root)] {
        let dir = root.join(logical.trim_start_matches('/'));
        for (name, path) in entries(&dir)? {
            by_name.insert(name.clone(), (format!("{logical}/{name}"), path));
        }
    }
    let mut out = Vec::new();
    for (name, (shown, path)) in by_name {
        if is_masked(&path) {
            not_run.push(NotRun {
                path: shown,
                why: "masked (a symlink to /dev/null)".into(),
            });
            continue;
        }
        let executable = std::fs::metadata(&path)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        if !executable {
            not_run.push(NotRun {
                path: shown,
                why: "not an executable file".into(),
            });
            continue;
        }
        out.push(Check {
            name,
            shown,
            path,
            kind,
            with_bash: false,
        });
    }
    Ok(out)
}

fn greenboot(
    node_root: &Path,
    kind: CheckKind,
    not_run: &mut Vec<NotRun>,
) -> anyhow::Result<Vec<Check>> {
    let logical = format!("{GREENBOOT_HEALTH_CHECKS}/{}", kind.dir_name());
    let dir = node_root.join(logical.trim_start_matches('/'));
    let mut out = Vec::new();
    for (name, path) in entries(&dir)? {
        let shown = format!("{logical}/{name}");
        if !name.ends_with(".sh") {
            not_run.push(NotRun {
                path: shown,
                why: "greenboot runs only *.sh files".into(),
            });
            continue;
        }
        out.push(Check {
            name,
            shown,
            path,
            kind,
            with_bash: true,
        });
    }
    Ok(out)
}

/// How one check ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "result")]
pub enum CheckOutcome {
    Passed,
    /// Exited non-zero, or was killed by a signal.
    Failed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
    },
    /// Still running when its timeout passed: its process group was killed.
    TimedOut {
        after_seconds: u64,
    },
    /// It could not be started at all.
    CouldNotRun {
        error: String,
    },
    /// Not run: an earlier required check failed.
    Skipped,
}

impl CheckOutcome {
    pub fn passed(&self) -> bool {
        matches!(self, CheckOutcome::Passed)
    }
}

impl std::fmt::Display for CheckOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckOutcome::Passed => f.write_str("passed"),
            CheckOutcome::Failed {
                exit_code: Some(c), ..
            } => write!(f, "exited with status {c}"),
            CheckOutcome::Failed {
                signal: Some(s), ..
            } => write!(f, "was killed by signal {s}"),
            CheckOutcome::Failed { .. } => f.write_str("failed"),
            CheckOutcome::TimedOut { after_seconds } => {
                write!(f, "did not finish within its {after_seconds} s timeout")
            }
            CheckOutcome::CouldNotRun { error } => write!(f, "could not be run: {error}"),
            CheckOutcome::Skipped => f.write_str("was skipped after an earlier required failure"),
        }
    }
}

/// What one check did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    pub path: String,
    pub kind: CheckKind,
    #[serde(flatten)]
    pub outcome: CheckOutcome,
    pub millis: u64,
    /// The last lines of its stdout and stderr, in the order it wrote them (one pipe for both; at most
    /// [`OUTPUT_LINES`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output: Vec<String>,
}

impl CheckResult {
    /// `path exited with status 1; its last output: a | b`.
    pub fn describe(&self, lines: usize) -> String {
        let mut s = format!("{} {}", self.path, self.outcome);
        let tail: Vec<&str> = self
            .output
            .iter()
            .rev()
            .take(lines)
            .rev()
            .map(String::as_str)
            .collect();
        if !tail.is_empty() {
            s.push_str(&format!("; its last output: {}", tail.join(" | ")));
        }
        s
    }
}

/// The last lines of a stream (bounded in lines and line length).
#[derive(Debug, Default)]
struct Tail {
    lines: std::collections::VecDeque<String>,
}

impl Tail {
    fn push(&mut self, line: &str) {
        let line = line.trim_end_matches(['\r', '\n']);
        let mut kept: String = line.chars().take(LINE_BYTES).collect();
        if kept.len() < line.len() {
            kept.push('…');
        }
        self.lines.push_back(kept);
        while self.lines.len() > OUTPUT_LINES {
            self.lines.pop_front();
        }
    }
}

async fn collect(stream: impl AsyncRead + Unpin, tail: Arc<Mutex<Tail>>) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => tail
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(&String::from_utf8_lossy(&buf)),
        }
    }
}

/// Run one check with `timeout`. Never fails: a check that cannot run is a failed check.
pub async fn run_check(check: &Check, timeout: Duration) -> CheckResult {
    let started = Instant::now();
    let mut cmd = if check.with_bash {
        let mut c = tokio::process::Command::new("bash");
        c.arg(&check.path);
        c
    } else {
        tokio::process::Command::new(&check.path)
    };
    let tail = Arc::new(Mutex::new(Tail::default()));
    // One pipe for stdout and stderr (as `2>&1`): the lines keep the order the check wrote them in.
    let (reader, writer) = match output_pipe() {
        Ok(p) => p,
        Err(e) => {
            return result_of(
                check,
                started,
                CheckOutcome::CouldNotRun {
                    error: format!("creating its output pipe: {e}"),
                },
                &tail,
            );
        }
    };
    cmd.current_dir("/")
        .env("MCD_HEALTH_CHECK", check.kind.as_str())
        .stdin(Stdio::null())
        .stdout(writer.0)
        .stderr(writer.1)
        // Its own process group, so a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // A daemon that dies (kill -9) takes its check with it.
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
    let result = |outcome, tail: &Arc<Mutex<Tail>>| result_of(check, started, outcome, tail);
    let spawned = cmd.spawn();
    // The command holds the pipe's write ends: the reader sees EOF only once they are gone.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return result(
                CheckOutcome::CouldNotRun {
                    error: e.to_string(),
                },
                &tail,
            );
        }
    };
    // Whatever the check left running in its group goes when it ends, times out, or its caller gives
    // up on it (the Ready deadline passed first): a background child would keep the pipes open.
    let group = GroupKill(
        child
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(id as i32)),
    );
    let output = tokio::spawn(collect(reader, tail.clone()));
    let outcome = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => {
            use std::os::unix::process::ExitStatusExt;
            if status.success() {
                CheckOutcome::Passed
            } else {
                CheckOutcome::Failed {
                    exit_code: status.code(),
                    signal: status.signal(),
                }
            }
        }
        Ok(Err(e)) => CheckOutcome::CouldNotRun {
            error: format!("waiting for it: {e}"),
        },
        Err(_) => CheckOutcome::TimedOut {
            after_seconds: timeout.as_secs(),
        },
    };
    drop(group);
    let _ = child.wait().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), output).await;
    result(outcome, &tail)
}

fn result_of(
    check: &Check,
    started: Instant,
    outcome: CheckOutcome,
    tail: &Arc<Mutex<Tail>>,
) -> CheckResult {
    CheckResult {
        path: check.shown.clone(),
        kind: check.kind,
        outcome,
        millis: started.elapsed().as_millis() as u64,
        output: tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lines
            .iter()
            .cloned()
            .collect(),
    }
}

/// A pipe whose write end goes to both stdout and stderr of a check.
fn output_pipe() -> std::io::Result<(tokio::net::unix::pipe::Receiver, (Stdio, Stdio))> {
    let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let stdout = Stdio::from(writer.try_clone()?);
    let receiver = tokio::net::unix::pipe::Receiver::from_owned_fd(reader)?;
    Ok((receiver, (stdout, Stdio::from(writer))))
}

/// Kills a check's process group when dropped.
struct GroupKill(Option<rustix::process::Pid>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    }
}

/// Run `checks` in order: required ones strictly (the rest are skipped after a failure), wanted ones
/// all. `each` sees every result as it comes.
pub async fn run_all(
    checks: &[Check],
    timeout: Duration,
    mut each: impl FnMut(&CheckResult),
) -> Vec<CheckResult> {
    let mut results = Vec::new();
    let mut failed = false;
    for check in checks {
        let r = if failed && check.kind == CheckKind::Required {
            CheckResult {
                path: check.shown.clone(),
                kind: check.kind,
                outcome: CheckOutcome::Skipped,
                millis: 0,
                output: Vec::new(),
            }
        } else {
            run_check(check, timeout).await
        };
        failed |= check.kind == CheckKind::Required && !r.outcome.passed();
        each(&r);
        results.push(r);
    }
    results
}

/// The deployment a gate was about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRef {
    /// `<checksum>.<serial>`.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
}

impl DeploymentRef {
    pub fn of(d: &crate::os::Deployment) -> Self {
        DeploymentRef {
            id: d.id(),
            image: d.image.clone(),
            image_digest: d.image_digest.clone(),
        }
    }

    /// How the evidence names it: the image (by digest when known), else the deployment.
    pub fn describe(&self) -> String {
        match (&self.image, &self.image_digest) {
            (Some(i), Some(d)) if !i.contains(d.as_str()) => format!("{i} ({d})"),
            (Some(i), _) => i.clone(),
            (None, _) => format!("deployment {}", self.id),
        }
    }
}

/// The node's `Ready` condition as the gate saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "result")]
pub enum ReadyOutcome {
    /// Ready=True was reported after the boot.
    Ready { after_seconds: u64 },
    /// Not reported within the deadline.
    DeadlinePassed { deadline_seconds: u64 },
}

/// Where the gate stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "verdict")]
pub enum Verdict {
    Running,
    Passed,
    Failed { reason: String },
}

/// The rollback after a failed gate, step by step (each step is recorded before the next begins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RollbackStep {
    /// The gate failed; the previous deployment is to become the default.
    Decided,
    /// The previous deployment is the default; a reboot into it is requested in `reboot_boot_id`.
    Rebooting,
    /// The previous deployment booted; the config's files are back at the old config and the node
    /// reported Degraded with the evidence.
    Reported,
    /// Over: healthy and uncordoned, or left as it is with the reason said.
    Finished,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollback {
    pub step: RollbackStep,
    /// The deployment the node goes back to.
    pub to: DeploymentRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_boot_id: Option<String>,
    /// Reboots asked for to get back (a second one only when the first came up on the failed deployment).
    #[serde(default)]
    pub reboots: u32,
    /// Unix seconds when the previous deployment was found booted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booted_back_at: Option<u64>,
    /// The node was uncordoned on the previous deployment, healthy.
    #[serde(default)]
    pub uncordoned: bool,
    /// Why the node stays as it is (the previous deployment is not healthy either, or it cannot be booted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stuck: Option<String>,
}

/// The last health gate: what was checked after which boot, the verdict, and the rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GateRecord {
    /// The update's target and origin (config names and `desiredImage`s).
    pub target_config: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_image: Option<String>,
    pub from_config: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_image: Option<String>,
    /// The update attempt (its journal's `startedAt`): a later attempt at the same target is a new gate.
    pub update_started_at: u64,
    /// The boot the gate ran in, and the deployment it checked.
    pub boot_id: String,
    pub deployment: DeploymentRef,
    /// The deployment booted before (the known-good one a failure rolls back to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<DeploymentRef>,
    /// Unix seconds.
    pub started_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    #[serde(default)]
    pub checks: Vec<CheckResult>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_run: Vec<NotRun>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<ReadyOutcome>,
    #[serde(flatten)]
    pub verdict: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
    /// After a pass: older rollback deployments were pruned.
    #[serde(default)]
    pub pruned: bool,
    /// After a failure: a later update (another target, or the forcefile) took over, so the failed
    /// target no longer blocks anything.
    #[serde(default)]
    pub released: bool,
}

impl GateRecord {
    /// The failed target: not tried again until the node's desired config or image changes, or the
    /// forcefile is touched.
    pub fn failed_target(&self) -> Option<(&str, Option<&str>)> {
        matches!(self.verdict, Verdict::Failed { .. })
            .then(|| (self.target_config.as_str(), self.target_image.as_deref()))
    }

    /// A rollback is under way (not finished).
    pub fn rolling_back(&self) -> bool {
        self.rollback
            .as_ref()
            .is_some_and(|r| r.step < RollbackStep::Finished)
    }

    /// One paragraph for `status`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let when = |secs: u64| {
            k8s_openapi::jiff::Timestamp::from_second(secs as i64)
                .map(|t| t.to_string())
                .unwrap_or_else(|_| secs.to_string())
        };
        let verdict = match &self.verdict {
            Verdict::Running => "running".to_string(),
            Verdict::Passed => "passed".to_string(),
            Verdict::Failed { reason } => format!("FAILED: {reason}"),
        };
        out.push_str(&format!(
            "Last health gate: {verdict}\n  {:>10} {} (config {}) at {}\n",
            "Checked:",
            self.deployment.describe(),
            self.target_config,
            when(self.started_at)
        ));
        for c in &self.checks {
            out.push_str(&format!(
                "  {:>10} {} {} ({} ms)\n",
                format!("{}:", c.kind),
                c.path,
                c.outcome,
                c.millis
            ));
        }
        for n in &self.not_run {
            out.push_str(&format!("  {:>10} {} ({})\n", "not run:", n.path, n.why));
        }
        match &self.ready {
            Some(ReadyOutcome::Ready { after_seconds }) => out.push_str(&format!(
                "  {:>10} the node reported Ready {after_seconds} s into the gate\n",
                "Ready:"
            )),
            Some(ReadyOutcome::DeadlinePassed { deadline_seconds }) => out.push_str(&format!(
                "  {:>10} not reported within {deadline_seconds} s\n",
                "Ready:"
            )),
            None => {}
        }
        if let Some(r) = &self.rollback {
            let state = match r.step {
                RollbackStep::Decided => "decided",
                RollbackStep::Rebooting => "rebooting into it",
                RollbackStep::Reported => "booted back, waiting for the node to be healthy",
                RollbackStep::Finished if r.uncordoned => "booted back, healthy, uncordoned",
                RollbackStep::Finished => "booted back",
            };
            out.push_str(&format!(
                "  {:>10} to {}: {state}\n",
                "Rollback:",
                r.to.describe()
            ));
            if let Some(why) = &r.stuck {
                out.push_str(&format!("  {:>10} {why}\n", "Note:"));
            }
        }
        out
    }
}

/// The last gate's record, if any.
pub fn load(root: &Root) -> anyhow::Result<Option<GateRecord>> {
    let Some(bytes) = root.read_optional(HEALTH_GATE_STATE)? else {
        return Ok(None);
    };
    let record = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is corrupt; move it away (the daemon then forgets the last health gate)",
            root.display(HEALTH_GATE_STATE)
        )
    })?;
    Ok(Some(record))
}

/// Record the gate durably (before anything it decided is acted on).
pub fn save(root: &Root, record: &GateRecord) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(record).context("serializing the health gate record")?;
    super::odc::write_state_file(root, HEALTH_GATE_STATE, bytes, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(root: &Path, path: &str, body: &str, mode: u32) {
        let p = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    const REQ_IMAGE: &str = "/usr/lib/machine-config-daemon/health.d/required.d";
    const REQ_ETC: &str = "/etc/machine-config-daemon/health.d/required.d";

    #[test]
    fn checks_are_found_merged_by_name_masked_and_sorted() {
        let (image, node) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (i, n) = (image.path(), node.path());
        write(i, &format!("{REQ_IMAGE}/20-kubelet"), "#!/bin/sh\n", 0o755);
        write(i, &format!("{REQ_IMAGE}/10-driver"), "#!/bin/sh\n", 0o755);
        write(i, &format!("{REQ_IMAGE}/30-masked"), "#!/bin/sh\n", 0o755);
        write(i, &format!("{REQ_IMAGE}/.hidden"), "#!/bin/sh\n", 0o755);
        write(i, &format!("{REQ_IMAGE}/README"), "docs\n", 0o644);
        // The config replaces the image's 20-kubelet and masks 30-masked.
        write(
            n,
            &format!("{REQ_ETC}/20-kubelet"),
            "#!/bin/sh\nexit 0\n",
            0o700,
        );
        write(n, &format!("{REQ_ETC}/15-ours"), "#!/bin/sh\n", 0o755);
        std::os::unix::fs::symlink("/dev/null", n.join(&REQ_ETC[1..]).join("30-masked")).unwrap();
        write(
            n,
            "/etc/greenboot/check/required.d/00-dns.sh",
            "true\n",
            0o644,
        );
        write(n, "/etc/greenboot/check/required.d/notes.txt", "", 0o644);
        write(
            n,
            "/etc/machine-config-daemon/health.d/wanted.d/50-ntp",
            "#!/bin/sh\n",
            0o755,
        );
        let checks = discover(i, n).unwrap();
        let shown: Vec<&str> = checks.required.iter().map(|c| c.shown.as_str()).collect();
        assert_eq!(
            shown,
            [
                format!("{REQ_IMAGE}/10-driver"),
                format!("{REQ_ETC}/15-ours"),
                format!("{REQ_ETC}/20-kubelet"),
                "/etc/greenboot/check/required.d/00-dns.sh".to_string(),
            ]
        );
        assert!(checks.required[3].with_bash && !checks.required[0].with_bash);
        assert_eq!(checks.wanted.len(), 1);
        let not_run: Vec<(&str, &str)> = checks
            .not_run
            .iter()
            .map(|n| (n.path.rsplit('/').next().unwrap(), n.why.as_str()))
            .collect();
        assert_eq!(
            not_run,
            [
                ("30-masked", "masked (a symlink to /dev/null)"),
                ("README", "not an executable file"),
                ("notes.txt", "greenboot runs only *.sh files"),
            ]
        );
        // No directories at all: no checks, no error.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            discover(empty.path(), empty.path()).unwrap(),
            Checks::default()
        );
    }

    fn check(dir: &Path, name: &str, body: &str, kind: CheckKind) -> Check {
        let path = dir.join(name);
        write(dir, name, body, 0o755);
        Check {
            name: name.into(),
            shown: format!("/x/{name}"),
            path,
            kind,
            with_bash: false,
        }
    }

    #[tokio::test]
    async fn a_check_passes_fails_or_times_out_with_its_last_output() {
        let dir = tempfile::tempdir().unwrap();
        let ok = check(
            dir.path(),
            "ok",
            "#!/bin/sh\necho fine\n",
            CheckKind::Required,
        );
        let r = run_check(&ok, Duration::from_secs(10)).await;
        assert_eq!(
            (r.outcome, r.output),
            (CheckOutcome::Passed, vec!["fine".to_string()])
        );

        let bad = check(
            dir.path(),
            "bad",
            "#!/bin/sh\ni=0\nwhile [ $i -lt 50 ]; do echo line $i; i=$((i+1)); done\necho 'nvidia driver missing' >&2\nexit 3\n",
            CheckKind::Required,
        );
        let r = run_check(&bad, Duration::from_secs(10)).await;
        assert_eq!(
            r.outcome,
            CheckOutcome::Failed {
                exit_code: Some(3),
                signal: None
            }
        );
        assert_eq!(r.output.len(), OUTPUT_LINES, "bounded");
        assert_eq!(r.output.last().unwrap(), "nvidia driver missing");
        let d = r.describe(2);
        assert_eq!(
            d,
            "/x/bad exited with status 3; its last output: line 49 | nvidia driver missing"
        );

        // Hangs, with a child that keeps the pipe open: killed with its group at the timeout.
        let hang = check(
            dir.path(),
            "hang",
            "#!/bin/sh\necho waiting for the kubelet\nsleep 600 &\nsleep 600\n",
            CheckKind::Required,
        );
        let started = Instant::now();
        let r = run_check(&hang, Duration::from_secs(1)).await;
        assert_eq!(r.outcome, CheckOutcome::TimedOut { after_seconds: 1 });
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(r.output, ["waiting for the kubelet"]);
        assert!(
            r.describe(5)
                .contains("did not finish within its 1 s timeout")
        );

        let long = check(
            dir.path(),
            "long",
            &format!("#!/bin/sh\necho {}\n", "x".repeat(1000)),
            CheckKind::Required,
        );
        let r = run_check(&long, Duration::from_secs(10)).await;
        assert_eq!(
            r.output[0].chars().count(),
            LINE_BYTES + 1,
            "one long line, cut"
        );

        let missing = Check {
            path: dir.path().join("nope"),
            ..ok.clone()
        };
        let r = run_check(&missing, Duration::from_secs(1)).await;
        assert!(
            matches!(r.outcome, CheckOutcome::CouldNotRun { .. }),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn stdout_and_stderr_lines_keep_the_order_the_check_wrote_them_in() {
        let dir = tempfile::tempdir().unwrap();
        let c = check(
            dir.path(),
            "mixed",
            "#!/bin/sh\nfor i in 1 2 3 4 5 6 7 8; do echo out$i; echo err$i >&2; done\nexit 1\n",
            CheckKind::Required,
        );
        let r = run_check(&c, Duration::from_secs(10)).await;
        let want: Vec<String> = (1..=8)
            .flat_map(|i| [format!("out{i}"), format!("err{i}")])
            .collect();
        assert_eq!(r.output, want);
    }

    #[tokio::test]
    async fn required_checks_stop_at_the_first_failure_wanted_ones_all_run() {
        let dir = tempfile::tempdir().unwrap();
        let checks = vec![
            check(dir.path(), "a", "#!/bin/sh\nexit 1\n", CheckKind::Required),
            check(dir.path(), "b", "#!/bin/sh\nexit 0\n", CheckKind::Required),
            check(dir.path(), "w1", "#!/bin/sh\nexit 1\n", CheckKind::Wanted),
            check(dir.path(), "w2", "#!/bin/sh\nexit 0\n", CheckKind::Wanted),
        ];
        let mut seen = 0;
        let results = run_all(&checks, Duration::from_secs(10), |_| seen += 1).await;
        assert_eq!(seen, 4);
        let outcomes: Vec<bool> = results.iter().map(|r| r.outcome.passed()).collect();
        assert_eq!(outcomes, [false, false, false, true]);
        assert_eq!(results[1].outcome, CheckOutcome::Skipped);
        // greenboot's scripts run with bash, executable or not.
        write(dir.path(), "g.sh", "[[ 1 == 1 ]] && echo bash\n", 0o644);
        let g = Check {
            name: "g.sh".into(),
            shown: "/etc/greenboot/check/required.d/g.sh".into(),
            path: dir.path().join("g.sh"),
            kind: CheckKind::Required,
            with_bash: true,
        };
        let r = run_check(&g, Duration::from_secs(10)).await;
        assert_eq!(
            (r.outcome, r.output),
            (CheckOutcome::Passed, vec!["bash".to_string()])
        );
    }

    #[test]
    fn the_record_round_trips_and_names_the_failed_target() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        assert!(load(&root).unwrap().is_none());
        let record = GateRecord {
            target_config: "rendered-2".into(),
            target_image: None,
            from_config: "rendered-1".into(),
            from_image: None,
            update_started_at: 1,
            boot_id: "b".into(),
            deployment: DeploymentRef {
                id: "abc.0".into(),
                image: Some("r/os@sha256:2".into()),
                image_digest: Some("sha256:2".into()),
            },
            previous: None,
            started_at: 1_700_000_000,
            finished_at: None,
            checks: vec![CheckResult {
                path: "/x/a".into(),
                kind: CheckKind::Required,
                outcome: CheckOutcome::Failed {
                    exit_code: Some(1),
                    signal: None,
                },
                millis: 5,
                output: vec!["boom".into()],
            }],
            not_run: vec![],
            ready: None,
            verdict: Verdict::Failed { reason: "x".into() },
            rollback: None,
            pruned: false,
            released: false,
        };
        save(&root, &record).unwrap();
        let back = load(&root).unwrap().unwrap();
        assert_eq!(back, record);
        assert_eq!(back.failed_target(), Some(("rendered-2", None)));
        let text = back.to_text();
        assert!(
            text.contains("FAILED: x") && text.contains("/x/a exited with status 1"),
            "{text}"
        );
        let json = std::fs::read_to_string(dir.path().join(&HEALTH_GATE_STATE[1..])).unwrap();
        assert!(json.contains("\"verdict\": \"failed\""), "{json}");
    }
}
