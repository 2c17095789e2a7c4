//! The host part of an update: write a MachineConfig's files, units, SSH keys and password onto a node
//! root — atomically, reversibly (originals kept and restored) and verifiably (on-disk validation, drift
//! monitor) — all through one root directory handle, so nothing escapes the root.
//!
//! Functional core, small shell: [`writeset::build`] reads the root and computes every operation,
//! validated, before [`exec`] performs them. The daemon uses the [`Host`] trait; its tests can put a
//! recording implementation in its place.

pub mod accounts;
pub mod certs;
pub mod drift;
mod exec;
pub mod failpoints;
pub mod health;
pub mod odc;
pub mod root;
pub mod units;
pub mod validate;
pub mod writeset;

use std::os::fd::OwnedFd;

use anyhow::Context;
use rustix::fs::{FlockOperation, Mode, OFlags};
use serde::Serialize;

use crate::config::MachineConfig;
use crate::plan::Plan;
pub use drift::{DriftMonitor, DriftOptions, DriftReport};
pub use odc::OdcError;
pub use root::Root;
pub use validate::{Mismatch, MismatchKind};
pub use writeset::{HostInvalid, OpSummary, Source, WriteSet};

/// How to apply.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions {
    /// Compute and report, write nothing.
    pub dry_run: bool,
    /// Record the desired config as the on-disk config (`currentconfig`) once everything is written.
    pub write_odc: bool,
}

/// What an apply did (or, for a dry run, would do).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyReport {
    pub operations: Vec<OpSummary>,
    pub warnings: Vec<String>,
    /// Something was written.
    pub written: bool,
}

/// Why an apply did not happen or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The config cannot go on this node as it is; nothing was written.
    #[error(transparent)]
    Invalid(HostInvalid),
    /// The plan is unreconcilable; nothing was written.
    #[error("the update from {from} to {to} cannot be applied to a running node")]
    Unreconcilable { from: String, to: String },
    /// Writing failed (or the node lacks space or privileges, then before anything was written).
    #[error(transparent)]
    Failed(anyhow::Error),
}

impl From<writeset::BuildError> for ApplyError {
    fn from(e: writeset::BuildError) -> Self {
        match e {
            writeset::BuildError::Invalid(i) => ApplyError::Invalid(i),
            writeset::BuildError::Failed(e) => ApplyError::Failed(e),
        }
    }
}

/// Apply the host part of `plan` (files, units, SSH keys, password, backups and restores, optionally the
/// ODC) to `root`. Never reboots, reloads services or touches the OS image.
pub fn apply(
    root: &Root,
    current: &MachineConfig,
    desired: &MachineConfig,
    plan: &Plan,
    opts: ApplyOptions,
) -> Result<ApplyReport, ApplyError> {
    if !plan.reconcilable {
        return Err(ApplyError::Unreconcilable {
            from: current.name.clone(),
            to: desired.name.clone(),
        });
    }
    let _lock = if opts.dry_run {
        None
    } else {
        Some(lock(root).map_err(ApplyError::Failed)?)
    };
    let ws = writeset::build(
        root,
        writeset::Inputs {
            current,
            desired,
            ssh_keys_changed: plan.ssh_keys,
            password_changed: plan.password,
            write_odc: opts.write_odc,
        },
    )?;
    for w in &ws.warnings {
        tracing::warn!(config = %desired.name, "{w}");
    }
    let report = ApplyReport {
        operations: ws.summary(),
        warnings: ws.warnings.clone(),
        written: !opts.dry_run && !ws.is_empty(),
    };
    if opts.dry_run || ws.is_empty() {
        return Ok(report);
    }
    exec::execute(root, &ws).map_err(ApplyError::Failed)?;
    tracing::info!(
        config = %desired.name,
        operations = ws.len(),
        "wrote the host part of the config"
    );
    Ok(report)
}

/// Compare the root with `config`; every mismatch is listed.
pub fn validate(root: &Root, config: &MachineConfig) -> anyhow::Result<Vec<Mismatch>> {
    validate::validate(root, config)
}

/// Hold an exclusive lock on the root for one apply; a second apply fails instead of interleaving.
fn lock(root: &Root) -> anyhow::Result<OwnedFd> {
    let fd = rustix::fs::openat(
        root.dir(),
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .context("opening the root to lock it")?;
    match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(fd),
        Err(rustix::io::Errno::WOULDBLOCK) => anyhow::bail!(
            "another apply is writing to {}; try again when it has finished",
            root.path().display()
        ),
        Err(e) => Err(e).context("locking the root"),
    }
}

/// The node's host filesystem as the daemon's driver uses it.
pub trait Host {
    /// [`apply`].
    fn apply(
        &self,
        current: &MachineConfig,
        desired: &MachineConfig,
        plan: &Plan,
        opts: ApplyOptions,
    ) -> Result<ApplyReport, ApplyError>;
    /// [`validate`].
    fn validate(&self, config: &MachineConfig) -> anyhow::Result<Vec<Mismatch>>;
    /// [`odc::read_current_config`].
    fn current_config(&self) -> Result<Option<MachineConfig>, OdcError>;
    /// [`odc::write_current_config`].
    fn set_current_config(&self, config: &MachineConfig) -> anyhow::Result<()>;
    /// [`odc::read_current_image`].
    fn current_image(&self) -> anyhow::Result<Option<String>>;
    /// [`odc::write_current_image`].
    fn set_current_image(&self, image: Option<&str>) -> anyhow::Result<()>;
}

impl Host for Root {
    fn apply(
        &self,
        current: &MachineConfig,
        desired: &MachineConfig,
        plan: &Plan,
        opts: ApplyOptions,
    ) -> Result<ApplyReport, ApplyError> {
        apply(self, current, desired, plan, opts)
    }
    fn validate(&self, config: &MachineConfig) -> anyhow::Result<Vec<Mismatch>> {
        validate(self, config)
    }
    fn current_config(&self) -> Result<Option<MachineConfig>, OdcError> {
        odc::read_current_config(self)
    }
    fn set_current_config(&self, config: &MachineConfig) -> anyhow::Result<()> {
        odc::write_current_config(self, config)
    }
    fn current_image(&self) -> anyhow::Result<Option<String>> {
        odc::read_current_image(self)
    }
    fn set_current_image(&self, image: Option<&str>) -> anyhow::Result<()> {
        odc::write_current_image(self, image)
    }
}
