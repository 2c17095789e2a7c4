//! Running the real tools (ostree, skopeo) with errors that show what failed.

use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

/// Run `cmd` to completion; on a non-zero exit the error carries the command line and its stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<Output> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("Spawning {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}
