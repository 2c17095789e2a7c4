//! A sandbox ostree sysroot in a temp dir (`ostree admin init-fs --modern` + `os-init`): real libostree,
//! nothing booted from it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use fn_error_context::context;

use crate::cmd::run;

#[derive(Debug)]
pub struct SandboxSysroot {
    _temp: Option<tempfile::TempDir>,
    root: PathBuf,
    stateroot: String,
}

/// What a user would compare to see whether an operation changed the sysroot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysrootSnapshot {
    /// `<checksum>.<serial>` directories of the stateroot, sorted.
    pub deployments: Vec<String>,
    /// `(file name, contents)` of the BLS entries of the current boot loader config, sorted.
    pub boot_entries: Vec<(String, String)>,
}

impl SandboxSysroot {
    /// A fresh sysroot with one stateroot (`default` is what ostree-ext/bootc use).
    #[context("Creating sandbox sysroot")]
    pub fn create(stateroot: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("testbed-sysroot-")
            .tempdir()?;
        let mut s = Self::create_at(dir.path(), stateroot)?;
        s._temp = Some(dir);
        Ok(s)
    }

    /// A sysroot kept in `dir` (for the CLI and demos); an existing one is reused.
    #[context("Creating sandbox sysroot in {}", dir.display())]
    pub fn create_at(dir: &Path, stateroot: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        if !dir.join("ostree/repo/config").exists() {
            run(Command::new("ostree")
                .args(["admin", "init-fs", "--modern"])
                .arg(dir))?;
        }
        if !dir.join("ostree/deploy").join(stateroot).exists() {
            run(Command::new("ostree")
                .args(["admin", "os-init", stateroot])
                .arg(format!("--sysroot={}", dir.display())))?;
        }
        Ok(Self {
            _temp: None,
            root: dir.to_path_buf(),
            stateroot: stateroot.to_string(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn stateroot(&self) -> &str {
        &self.stateroot
    }

    /// `ostree/deploy/<stateroot>/deploy`.
    pub fn deploy_dir(&self) -> PathBuf {
        self.path()
            .join("ostree/deploy")
            .join(&self.stateroot)
            .join("deploy")
    }

    /// The checked-out tree of a deployment (`<checksum>.<serial>`).
    pub fn deployment_root(&self, id: &str) -> PathBuf {
        self.deploy_dir().join(id)
    }

    /// Deployment directories (`<checksum>.<serial>`), sorted.
    pub fn deployments(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let dir = self.deploy_dir();
        if !dir.exists() {
            return Ok(out);
        }
        for e in std::fs::read_dir(&dir).with_context(|| format!("Reading {}", dir.display()))? {
            let e = e?;
            if e.file_type()?.is_dir() {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    /// BLS entries under `boot/loader/entries` (the active boot version).
    pub fn boot_entries(&self) -> Result<Vec<(String, String)>> {
        let dir = self.path().join("boot/loader/entries");
        let mut out = Vec::new();
        if !dir.exists() {
            return Ok(out);
        }
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let contents = std::fs::read_to_string(e.path())?;
            out.push((e.file_name().to_string_lossy().into_owned(), contents));
        }
        out.sort();
        Ok(out)
    }

    /// The `options` line of each boot entry, in boot order (newest first, as the entries' sort keys say).
    pub fn boot_options(&self) -> Result<Vec<String>> {
        let mut entries: Vec<(String, String)> = self
            .boot_entries()?
            .into_iter()
            .map(|(_, text)| {
                let field = |k: &str| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
                        .unwrap_or_default()
                };
                (field("version "), field("options "))
            })
            .collect();
        // ostree writes a higher `version` for the default (first) entry.
        entries.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(entries.into_iter().map(|(_, o)| o).collect())
    }

    pub fn snapshot(&self) -> Result<SysrootSnapshot> {
        Ok(SysrootSnapshot {
            deployments: self.deployments()?,
            boot_entries: self.boot_entries()?,
        })
    }
}

impl Drop for SandboxSysroot {
    fn drop(&mut self) {
        // ostree makes each deployment root immutable (`chattr +i`); without clearing that, removing the
        // temp dir fails silently and every sysroot a test creates stays behind in /tmp.
        if self._temp.is_some() {
            clear_immutable_deployments(&self.deploy_dir());
        }
    }
}

/// Clear the immutable attribute of the deployment roots under a stateroot's `deploy` dir (best effort),
/// so the sysroot can be removed.
pub fn clear_immutable_deployments(deploy_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(deploy_dir) else {
        return;
    };
    let dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    if !dirs.is_empty() {
        let _ = Command::new("chattr")
            .arg("-i")
            .args(&dirs)
            .stderr(std::process::Stdio::null())
            .status();
    }
}
