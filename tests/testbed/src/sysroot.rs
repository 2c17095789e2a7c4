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

/// Deploy a container image into the sysroot at `sysroot` (initialized, with `stateroot` created) as a
/// node installer does: ostree-ext imports every layer into the sysroot's repo (so later images that
/// share layers fetch only what is new) and writes a deployment, the new default, with `kargs`.
/// `source` is where the image is read from now (e.g. `ostree-unverified-image:oci:/lab/oci:v1`);
/// `target`, when given, is the reference recorded in the deployment's origin and the repo's image ref:
/// what the booted node will believe it runs (e.g. the registry pull spec as the node sees it).
/// Returns the deployed commit (ostree-ext's merge commit) and the image's manifest digest.
#[context("Deploying {source} into {}", sysroot.display())]
pub async fn deploy_container_image(
    sysroot: &Path,
    stateroot: &str,
    source: &str,
    target: Option<&str>,
    kargs: &[String],
) -> Result<(String, String)> {
    use ostree_ext::container::OstreeImageReference;
    use ostree_ext::ostree::{self, gio};

    let source: OstreeImageReference = source
        .try_into()
        .with_context(|| format!("Parsing image reference {source}"))?;
    let target: Option<OstreeImageReference> = target
        .map(|t| {
            t.try_into()
                .with_context(|| format!("Parsing image reference {t}"))
        })
        .transpose()?;
    let root = ostree::Sysroot::new(Some(&gio::File::for_path(sysroot)));
    root.load(gio::Cancellable::NONE)
        .context("Loading the sysroot")?;
    let kargs: Vec<&str> = kargs.iter().map(String::as_str).collect();
    let mut opts = ostree_ext::container::deploy::DeployOpts::default();
    opts.kargs = Some(&kargs);
    opts.target_imgref = target.as_ref();
    let state = ostree_ext::container::deploy::deploy(&root, stateroot, &source, Some(opts))
        .await
        .context("ostree-ext deploy")?;
    Ok((
        state.merge_commit.clone(),
        state.manifest_digest.to_string(),
    ))
}
