//! `firstboot-complete-machineconfig`: install-time layering with no API server, as the MCD's
//! `RunFirstbootCompleteMachineconfig` (`pkg/daemon/daemon.go`). The machine-config-server's encapsulated
//! MachineConfig has `spec.config` emptied (`appendEncapsulated`, `pkg/server/server.go`: Ignition already
//! wrote the files, units and users), so this applies its OS part (image, kernel arguments, kernel type,
//! extensions), keeps the file as `.bak`, and reboots once. An older server's full MachineConfig works the
//! same way (its host part is written again, unchanged).
//!
//! The update it journals is marked first-boot: after the reboot the daemon (`start`) verifies the OS part,
//! and never records the encapsulated config as the node's on-disk config; its bootstrap validates the
//! node against the full rendered config and records that one (see `bootstrap.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

use super::env::NodeEnv;
use super::journal::{self, Journal};
use super::state::{Progress, Target};
use super::update::{Executor, Outcome, REBOOT_GRACE};
use crate::cluster::KubeCluster;
use crate::config::paths::ENCAPSULATED_CONFIG;
use crate::config::{ImageRef, MachineConfig, MachineConfiguration};
use crate::host::Root;
use crate::metrics::Metrics;
use crate::os::{BackendKind, OsBackend, OstreeBackend, OstreeBackendOptions, select_backend};
use crate::plan::{self, PlanOptions};
use crate::systemd::Systemd;

#[derive(Debug, Clone)]
pub struct FirstbootOptions {
    /// Default: `<root>/etc/ignition-machine-config-encapsulated.json`.
    pub machineconfig_file: Option<PathBuf>,
    pub root: PathBuf,
    pub sysroot: PathBuf,
    pub backend: BackendKind,
    /// Test-only: treat the sysroot's default deployment as booted; boot id from this file.
    pub test_only_simulated_boot: Option<PathBuf>,
}

/// How first boot ended, for the exit code.
#[derive(Debug, PartialEq, Eq)]
pub enum FirstbootOutcome {
    /// Nothing to apply (no file, or the node already matches).
    NothingToDo(String),
    /// Applied; a reboot was requested.
    Rebooting,
    /// The config is invalid for this node (exit 2): `FILE: field: message`.
    Invalid(String),
    /// It cannot be applied on this node (exit 3).
    Unreconcilable(String),
}

pub async fn run(opts: FirstbootOptions) -> anyhow::Result<FirstbootOutcome> {
    let root = Arc::new(Root::open(&opts.root)?);
    let file = opts
        .machineconfig_file
        .clone()
        .unwrap_or_else(|| opts.root.join(ENCAPSULATED_CONFIG.trim_start_matches('/')));
    let os_options = OstreeBackendOptions::sandbox(&opts.sysroot, &opts.root);
    let (os, env) = match &opts.test_only_simulated_boot {
        Some(boot_id) => (
            crate::os::AnyBackend::Ostree(
                OstreeBackend::test_only_simulated_boot(os_options, boot_id).await?,
            ),
            NodeEnv::simulated(&opts.root, boot_id),
        ),
        None => (
            select_backend(opts.backend, os_options).await?,
            NodeEnv::host(&opts.root),
        ),
    };

    // An interrupted first boot resumes its journal (the file was already renamed to .bak).
    let mut j = match journal::load(&root)? {
        Some(j) if j.progress.rebooted(&env.boot_id()?) == Some(true) => {
            return Ok(FirstbootOutcome::NothingToDo(
                "the first-boot update already rebooted; the daemon verifies it".into(),
            ));
        }
        Some(j) => j,
        None => match prepare(&root, &file, &os, &env).await? {
            Prepared::Journal(j) => *j,
            Prepared::Done(outcome) => return Ok(outcome),
        },
    };

    let systemd = Systemd::system()
        .await
        .context("systemd is needed for the reboot")?;
    let metrics = Arc::new(Metrics::new());
    let (stop_tx, stop) = watch::channel(false);
    // SIGTERM (the unit being stopped, e.g. by the reboot) ends the run at a safe point.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::spawn(async move {
        if term.recv().await.is_some() {
            let _ = stop_tx.send(true);
        }
    });
    let mut stopped = stop.clone();
    let executor: Executor<'_, KubeCluster, _, _> = Executor {
        root: &root,
        os: &os,
        systemd: &systemd,
        env: &env,
        metrics: &metrics,
        cluster: None,
        stop,
        node_name: "",
        finalize_failure: None,
        // First boot is not gated (no API server, no known-good deployment of the config).
        gate: Default::default(),
    };
    match executor.run(&mut j).await? {
        Outcome::RebootRequested => {
            if opts.test_only_simulated_boot.is_none() {
                // Stay until the shutdown stops us, as the MCD does: a oneshot unit that returned now
                // would count as finished, and the units ordered after it (the daemon) would start in
                // a system that is going down, and could ask for the same reboot once more.
                let waited = tokio::time::timeout(REBOOT_GRACE, stopped.wait_for(|s| *s)).await;
                if waited.is_err() {
                    anyhow::bail!(
                        "the reboot requested {} s ago has not happened; see `journalctl -u machine-config-daemon-reboot`",
                        REBOOT_GRACE.as_secs()
                    );
                }
            }
            Ok(FirstbootOutcome::Rebooting)
        }
        Outcome::Completed => Ok(FirstbootOutcome::NothingToDo(
            "the node already runs the config".into(),
        )),
        // No cluster, so nothing supersedes first boot; kept for completeness.
        Outcome::Interrupted | Outcome::Superseded => {
            anyhow::bail!("interrupted; run again to resume")
        }
        Outcome::Failed(reason) => anyhow::bail!("{reason}"),
        Outcome::RollingBack => anyhow::bail!("first boot has no health gate to fail"),
    }
}

enum Prepared {
    Journal(Box<Journal>),
    Done(FirstbootOutcome),
}

async fn prepare<O: OsBackend>(
    root: &Root,
    file: &Path,
    os: &O,
    env: &NodeEnv,
) -> anyhow::Result<Prepared> {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Prepared::Done(FirstbootOutcome::NothingToDo(format!(
                "{} does not exist",
                file.display()
            ))));
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let desired = match MachineConfig::from_slice(&bytes) {
        Ok(mc) => mc,
        Err(e) => {
            return Ok(Prepared::Done(FirstbootOutcome::Invalid(format!(
                "{}: {e}",
                file.display()
            ))));
        }
    };
    let status = os.status().await.context("reading the OS status")?;
    let base = status.base().cloned();
    // The MCD's first-boot "old" config: empty (`mco-empty-mc`), plus the booted image, the requested
    // kargs already running (so they are not appended twice: `setRunningKargs`) and the node's FIPS state
    // (`setNodeFipsIntoMC`: FIPS on in the target on a FIPS node is no change).
    let mut current = MachineConfig::empty();
    current.fips = env.fips()?.unwrap_or(false);
    if let Some(d) = &base {
        current.os_image_url = d.image.as_deref().and_then(|i| ImageRef::parse(i).ok());
        let mut running = d.kernel_arguments.clone();
        for k in &desired.kernel_arguments {
            if let Some(pos) = running.iter().position(|r| r == k) {
                running.remove(pos);
                current.kernel_arguments.push(k.clone());
            }
        }
    }
    let booted_image = base.as_ref().and_then(|d| d.image.clone());
    let opts = PlanOptions {
        first_boot: true,
        ..Default::default()
    };
    let plan = plan::plan_with(
        &current,
        &desired,
        booted_image.as_deref(),
        &MachineConfiguration::default(),
        &opts,
    );
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    if !plan.reconcilable {
        let why = plan
            .unreconcilable
            .iter()
            .map(|u| format!("{}: {}", u.field, u.reason))
            .collect::<Vec<_>>()
            .join("; ");
        return Ok(Prepared::Done(FirstbootOutcome::Unreconcilable(format!(
            "{}: {why}",
            file.display()
        ))));
    }
    if plan.is_noop() {
        std::fs::remove_file(file).with_context(|| format!("removing {}", file.display()))?;
        return Ok(Prepared::Done(FirstbootOutcome::NothingToDo(format!(
            "the node already runs {}; removed {}",
            desired.name,
            file.display()
        ))));
    }
    tracing::info!(config = %desired.name, actions = %plan.actions.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "), "first boot: applying the encapsulated config, then rebooting once");
    // First boot always ends in one reboot: the kubelet has not started yet, so nothing is disrupted.
    let mut progress = Progress::planned(
        Target {
            config: String::new(),
            image: None,
        },
        Target {
            config: desired.name.clone(),
            image: None,
        },
        true,
        now_secs(),
    );
    progress.os_image = desired.os_image().map(str::to_string);
    progress.first_boot = true;
    let j = Journal::new(progress, plan, &MachineConfig::empty(), &desired);
    journal::save(root, &j)?;
    // The journal holds the config now; keep the file as .bak, as the MCD does.
    let mut bak = file.as_os_str().to_owned();
    bak.push(".bak");
    std::fs::rename(file, &bak).with_context(|| format!("renaming {} to .bak", file.display()))?;
    Ok(Prepared::Journal(Box::new(j)))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}
