//! The on-disk config (ODC): the last applied MachineConfig as JSON in
//! `/etc/machine-config-daemon/currentconfig`, and the OS image pullspec in `…/currentimage`
//! (`mco-protocol.md` §2.7). Written atomically through the same executor as everything else.

use std::borrow::Cow;

use anyhow::Context;

use super::exec;
use super::root::Root;
use super::writeset::{self, BuildError};
use crate::config::paths::{CURRENT_CONFIG, CURRENT_IMAGE};
use crate::config::{InvalidInput, MachineConfig};

/// The ODC could not be used.
#[derive(Debug, thiserror::Error)]
pub enum OdcError {
    /// It is there but is not a valid MachineConfig: `PATH: field: message`.
    #[error("{path}: {source}")]
    Invalid { path: String, source: InvalidInput },
    #[error(transparent)]
    Io(#[from] anyhow::Error),
}

/// The last applied config; `None` when the node has none yet.
pub fn read_current_config(root: &Root) -> Result<Option<MachineConfig>, OdcError> {
    let Some(bytes) = root.read_optional(CURRENT_CONFIG)? else {
        return Ok(None);
    };
    MachineConfig::from_slice(&bytes)
        .map(Some)
        .map_err(|source| OdcError::Invalid {
            path: root.display(CURRENT_CONFIG),
            source,
        })
}

/// Record `mc` as the last applied config (its `raw` JSON, mode 0600: it holds the password hash).
pub fn write_current_config(root: &Root, mc: &MachineConfig) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec(&mc.raw).context("serializing the config")?;
    write_state(root, CURRENT_CONFIG, bytes, 0o600)
}

/// The OS image of the last applied config; `None` when the file is missing or empty.
pub fn read_current_image(root: &Root) -> anyhow::Result<Option<String>> {
    Ok(root
        .read_optional(CURRENT_IMAGE)?
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|s| !s.is_empty()))
}

/// Record the OS image (`None` writes an empty file, as the MCD does for "no image").
pub fn write_current_image(root: &Root, image: Option<&str>) -> anyhow::Result<()> {
    write_state(
        root,
        CURRENT_IMAGE,
        image.unwrap_or("").as_bytes().to_vec(),
        0o644,
    )
}

/// Write one of the daemon's own state files atomically (temp file, fsync, rename, fsync the directory).
pub fn write_state_file(root: &Root, path: &str, bytes: Vec<u8>, mode: u32) -> anyhow::Result<()> {
    write_state(root, path, bytes, mode)
}

/// Remove one of the daemon's state files (a missing one is fine), durably.
pub fn remove_state_file(root: &Root, path: &str) -> anyhow::Result<()> {
    let resolved = root
        .resolve(path)
        .with_context(|| format!("resolving {}", root.display(path)))?;
    if !resolved.entry.exists() {
        return Ok(());
    }
    let (dir, name) = root
        .open_parent_rel(&resolved.rel)
        .with_context(|| format!("opening the directory of {}", root.display(path)))?;
    dir.remove_file(name)
        .with_context(|| format!("removing {}", root.display(path)))?;
    rustix::fs::fsync(&dir)
        .with_context(|| format!("syncing the directory of {}", root.display(path)))?;
    Ok(())
}

fn write_state(root: &Root, path: &str, bytes: Vec<u8>, mode: u32) -> anyhow::Result<()> {
    let ws = writeset::state_file(root, path, Cow::Owned(bytes), mode).map_err(|e| match e {
        BuildError::Failed(e) => e,
        BuildError::Invalid(i) => anyhow::anyhow!("{}: {}", root.display(path), i.message),
    })?;
    exec::execute(root, &ws).with_context(|| format!("writing {}", root.display(path)))
}
