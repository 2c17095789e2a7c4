//! What the daemon reads about the running system besides the API and the OS backend: the boot id (to tell
//! whether a requested reboot happened), the kernel command line, the FIPS state, the previous boot's
//! `ostree-finalize-staged` failure, and the forcefile.

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
    /// `/proc/sys/crypto/fips_enabled` (the MCD's `fipsFile`, `pkg/daemon/update.go`).
    fips_file: PathBuf,
    previous_boot: PreviousBootSource,
    /// Where the booted image's `/usr` is (its health checks).
    image_root: ImageRootSource,
}

/// Where the booted OS image's files (`/usr`) are.
#[derive(Debug, Clone)]
pub enum ImageRootSource {
    /// The node root (a real node: `/usr` is the booted deployment's).
    NodeRoot,
    /// Test-only: the booted deployment's checkout in this sandbox sysroot (the node root of a sandbox has
    /// no `/usr` of its own); the node root when there is no checkout (the rpm-ostree double).
    BootedDeployment(PathBuf),
}

/// Where the previous boot's `ostree-finalize-staged.service` log comes from.
#[derive(Debug, Clone)]
pub enum PreviousBootSource {
    /// `journalctl -b -1 -o cat _UID=0 -u ostree-finalize-staged.service`, as rpm-ostree's client does
    /// (`QueryPreviousDeploymentError`, rpmostree-client-go `client.go`).
    Journal,
    /// Test-only: a file holding what that command would print for the previous simulated boot.
    File(PathBuf),
}

/// The unit that writes a staged deployment out at shutdown.
pub const FINALIZE_UNIT: &str = "ostree-finalize-staged.service";

/// The first `error:` line of the unit's log, as rpm-ostree's client reads it (`parseDeploymentError`).
pub fn finalize_error(log: &str) -> Option<String> {
    log.lines()
        .find(|l| l.starts_with("error:"))
        .map(str::to_string)
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
            fips_file: "/proc/sys/crypto/fips_enabled".into(),
            previous_boot: PreviousBootSource::Journal,
            image_root: ImageRootSource::NodeRoot,
        }
    }

    /// Test-only: the boot id from a file the test harness rewrites on each simulated boot, the kernel
    /// arguments from the booted deployment, the FIPS state from `<root>/proc/sys/crypto/fips_enabled`,
    /// and the previous boot's finalize log from `<boot id file>.finalize-log` (the harness writes them).
    pub fn simulated(root: &Path, boot_id_file: &Path) -> Self {
        let mut log = boot_id_file.as_os_str().to_owned();
        log.push(".finalize-log");
        NodeEnv {
            root: root.to_path_buf(),
            boot_id_file: boot_id_file.to_path_buf(),
            cmdline: CmdlineSource::BootedDeployment,
            fips_file: root.join("proc/sys/crypto/fips_enabled"),
            previous_boot: PreviousBootSource::File(log.into()),
            image_root: ImageRootSource::NodeRoot,
        }
    }

    /// Test-only: the booted image's `/usr` is the booted deployment's checkout in `sysroot`.
    pub fn with_sandbox_sysroot(mut self, sysroot: &Path) -> Self {
        self.image_root = ImageRootSource::BootedDeployment(sysroot.to_path_buf());
        self
    }

    /// The directory holding the booted image's `/usr` (where its health checks are).
    pub fn image_root(&self, status: &OsStatus) -> PathBuf {
        if let (ImageRootSource::BootedDeployment(sysroot), Some(d)) =
            (&self.image_root, status.booted.as_ref())
        {
            let checkout = sysroot
                .join("ostree/deploy")
                .join(&d.stateroot)
                .join("deploy")
                .join(d.id());
            if checkout.is_dir() {
                return checkout;
            }
        }
        self.root.clone()
    }

    /// When this boot began, in Unix seconds: `btime` of `/proc/stat` on a node; test-only, when the
    /// harness wrote the boot id file of the simulated boot.
    pub fn boot_time(&self) -> anyhow::Result<i64> {
        if matches!(self.cmdline, CmdlineSource::BootedDeployment) {
            let modified = std::fs::metadata(&self.boot_id_file)
                .and_then(|m| m.modified())
                .with_context(|| format!("reading {}", self.boot_id_file.display()))?;
            return Ok(modified
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs() as i64);
        }
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        stat.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
            .context("/proc/stat has no btime line")
    }

    /// Is the running kernel in FIPS mode? `None` when the file does not exist (not Linux, or no crypto
    /// API): the MCD then skips its FIPS checks (`processFips`, `pkg/daemon/update.go`).
    pub fn fips(&self) -> anyhow::Result<Option<bool>> {
        let text = match std::fs::read_to_string(&self.fips_file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", self.fips_file.display()));
            }
        };
        match text.trim() {
            "1" => Ok(Some(true)),
            "0" => Ok(Some(false)),
            other => anyhow::bail!(
                "{} holds {other:?}, expected 0 or 1",
                self.fips_file.display()
            ),
        }
    }

    /// The previous boot's `ostree-finalize-staged.service` error, if it failed. A log that cannot be read
    /// is an error for the caller to log; it never blocks an update.
    pub fn previous_finalize_error(&self) -> anyhow::Result<Option<String>> {
        let log = match &self.previous_boot {
            PreviousBootSource::Journal => {
                let out = std::process::Command::new("journalctl")
                    .args(["-b", "-1", "-o", "cat", "_UID=0", "-u", FINALIZE_UNIT])
                    .output()
                    .context("running journalctl for the previous boot's ostree-finalize-staged")?;
                if !out.status.success() {
                    // No previous boot in the journal (the first boot, or a volatile journal).
                    return Ok(None);
                }
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
            PreviousBootSource::File(path) => match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            },
        };
        Ok(finalize_error(&log))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finalize_error_is_the_first_error_line() {
        let log = "Finalizing staged deployment\nerror: Installing kernel: No space left on device\nerror: later\n";
        assert_eq!(
            finalize_error(log).as_deref(),
            Some("error: Installing kernel: No space left on device")
        );
        assert_eq!(
            finalize_error("Finalizing staged deployment\nBootloader updated\n"),
            None
        );
    }

    #[test]
    fn fips_from_the_proc_file() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("boot_id");
        let env = NodeEnv::simulated(dir.path(), &boot);
        assert_eq!(env.fips().unwrap(), None, "no file: no FIPS check");
        std::fs::create_dir_all(dir.path().join("proc/sys/crypto")).unwrap();
        std::fs::write(dir.path().join("proc/sys/crypto/fips_enabled"), "1\n").unwrap();
        assert_eq!(env.fips().unwrap(), Some(true));
        std::fs::write(dir.path().join("proc/sys/crypto/fips_enabled"), "0\n").unwrap();
        assert_eq!(env.fips().unwrap(), Some(false));
        std::fs::write(dir.path().join("proc/sys/crypto/fips_enabled"), "yes").unwrap();
        assert!(
            env.fips()
                .unwrap_err()
                .to_string()
                .contains("expected 0 or 1")
        );
    }
}
