//! What the daemon reads about the running system besides the API and the OS backend: the boot id (to tell
//! whether a requested reboot happened), the kernel command line, and the forcefile.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::paths::FORCEFILE;
use crate::os::OsStatus;

/// Where the running kernel's facts come from.
#[derive(Debug, Clone)]
pub struct NodeEnv {
    /// The node root (forcefile lives under it).
    root: PathBuf,
    boot_id_file: PathBuf,
    cmdline: CmdlineSource,
}

/// The kernel command line to verify kernel arguments against.
#[derive(Debug, Clone)]
pub enum CmdlineSource {
    /// `/proc/cmdline` (a real node).
    Proc(PathBuf),
    /// The booted deployment's boot entry (test-only: a sandbox sysroot whose default deployment stands
    /// for the booted one has no kernel of its own).
    BootedDeployment,
}

impl NodeEnv {
    /// A real node: `/proc/sys/kernel/random/boot_id`, `/proc/cmdline`.
    pub fn host(root: &Path) -> Self {
        NodeEnv {
            root: root.to_path_buf(),
            boot_id_file: "/proc/sys/kernel/random/boot_id".into(),
            cmdline: CmdlineSource::Proc("/proc/cmdline".into()),
        }
    }

    /// Test-only: the boot id from a file the test harness rewrites on each simulated boot, the kernel
    /// arguments from the booted deployment.
    pub fn simulated(root: &Path, boot_id_file: &Path) -> Self {
        NodeEnv {
            root: root.to_path_buf(),
            boot_id_file: boot_id_file.to_path_buf(),
            cmdline: CmdlineSource::BootedDeployment,
        }
    }

    pub fn boot_id(&self) -> anyhow::Result<String> {
        let id = std::fs::read_to_string(&self.boot_id_file)
            .with_context(|| format!("reading the boot id from {}", self.boot_id_file.display()))?;
        Ok(id.trim().to_string())
    }

    /// The running kernel's arguments, as tokens.
    pub fn cmdline(&self, status: &OsStatus) -> anyhow::Result<Vec<String>> {
        match &self.cmdline {
            CmdlineSource::Proc(path) => {
                let line = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Ok(crate::config::kargs::split(line.trim())
                    .unwrap_or_else(|_| line.split_whitespace().map(str::to_string).collect()))
            }
            CmdlineSource::BootedDeployment => Ok(status
                .booted
                .as_ref()
                .map(|d| d.kernel_arguments.clone())
                .unwrap_or_default()),
        }
    }

    fn forcefile_path(&self) -> PathBuf {
        self.root.join(FORCEFILE.trim_start_matches('/'))
    }

    /// `/run/machine-config-daemon-force` exists.
    pub fn forcefile(&self) -> bool {
        self.forcefile_path().exists()
    }

    /// The forcefile is consumed once the forced update is planned (as the MCD does).
    pub fn remove_forcefile(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(self.forcefile_path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).context("removing the forcefile"),
        }
    }
}
