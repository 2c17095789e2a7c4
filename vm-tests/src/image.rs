//! Building what the VMs boot, always reproducible from scratch:
//! - the **base**: mmdebstrap of Debian bookworm, converted to the ostree layout, committed to a bare
//!   repo on the host (`vmtest/base`). Cached under `work/base/<key>`, the key hashing the package
//!   list, the hooks and [`BASE_FORMAT`]. Exported in `work/base.json` / `work/base.env` so the host
//!   can encapsulate it into OCI images.
//! - an **image**: the base plus a layer commit (`--tree=ref=<base> --tree=dir=<overlay>`) with the
//!   harness's guest files and a test's overlay, deployed with `ostree admin deploy` into a sysroot
//!   directory and written to an ext4 disk with `mkfs.ext4 -d`. No mounts, loop devices or KVM.
//! - an **update repo**: an archive-mode repo with the base (cached), into which tests commit new
//!   layers for the guest to pull over HTTP.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use fn_error_context::context;
use serde::{Deserialize, Serialize};

use crate::cmd::CommandExt;
use crate::layout;
use crate::overlay::{self, Overlay};
use crate::workspace::{KeyHasher, Workspace};

/// Bump when the conversion or commit steps change in a way the hooks do not show.
pub const BASE_FORMAT: &str = "vmtest-base-2";
/// Bump when the image steps (deploy, mkfs) change.
pub const IMAGE_FORMAT: &str = "vmtest-image-1";
/// Bump when the container-image install ([`OsImageSpec`]) changes.
pub const OS_IMAGE_FORMAT: &str = "vmtest-os-image-1";
pub const SUITE: &str = "bookworm";
/// The ostree stateroot ("os") of every image.
pub const OSNAME: &str = "debian";
pub const BASE_REF: &str = "vmtest/base";
pub const IMAGE_REF: &str = "vmtest/image";
/// Kernel arguments every image boots with.
pub const DEFAULT_KARGS: &[&str] = &["root=/dev/vda", "rw", "console=ttyS0,115200", "panic=-1"];

/// The base recipe: what mmdebstrap installs and the hooks it runs.
#[derive(Debug, Clone)]
pub struct BaseRecipe {
    pub packages: Vec<String>,
    pub setup_hook: PathBuf,
    pub customize_hook: PathBuf,
}

/// Debian package names: lowercase letters, digits, `+ - .`, at least two characters.
fn valid_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

/// Parse `packages.txt`: one name per line, `#` comments.
pub fn parse_packages(text: &str) -> Result<Vec<String>> {
    let mut packages = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let name = line.split('#').next().unwrap_or("").trim();
        if name.is_empty() {
            continue;
        }
        if !valid_package_name(name) {
            bail!(
                "packages.txt line {}: {name:?} is not a Debian package name",
                n + 1
            );
        }
        packages.push(name.to_string());
    }
    if packages.is_empty() {
        bail!("packages.txt lists no packages");
    }
    Ok(packages)
}

impl BaseRecipe {
    /// `image/packages.txt`, `image/setup-hook.sh`, `image/customize-hook.sh` of the workspace.
    pub fn from_workspace(ws: &Workspace) -> Result<Self> {
        let dir = ws.recipe_dir();
        let list = dir.join("packages.txt");
        let text =
            fs::read_to_string(&list).with_context(|| format!("Reading {}", list.display()))?;
        let recipe = Self {
            packages: parse_packages(&text)?,
            setup_hook: dir.join("setup-hook.sh"),
            customize_hook: dir.join("customize-hook.sh"),
        };
        for hook in [&recipe.setup_hook, &recipe.customize_hook] {
            if !hook.is_file() {
                bail!("base image hook {} is missing", hook.display());
            }
        }
        Ok(recipe)
    }

    /// The cache key: everything that decides what the base contains.
    pub fn key(&self) -> Result<String> {
        let mut h = KeyHasher::new(BASE_FORMAT);
        h.field("suite", SUITE.as_bytes());
        h.field("packages", self.packages.join("\n").as_bytes());
        h.file("setup-hook", &self.setup_hook)?;
        h.file("customize-hook", &self.customize_hook)?;
        Ok(h.finish())
    }
}

/// A built base commit in a bare repo on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseImage {
    pub key: String,
    /// Bare repo (absolute path) holding the commit.
    pub repo: PathBuf,
    #[serde(rename = "ref")]
    pub ostree_ref: String,
    pub commit: String,
    pub kernel_version: String,
    pub suite: String,
    pub packages: Vec<String>,
}

fn ostree(repo: &Path) -> Command {
    let mut cmd = Command::new("ostree");
    cmd.arg(format!("--repo={}", repo.display()));
    cmd
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, text + "\n").with_context(|| format!("Writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("Writing {}", path.display()))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).with_context(|| format!("Reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("Parsing {}", path.display()))
}

/// Whether `repo` has `commit` (a cache entry whose repo was damaged is rebuilt).
fn repo_has_commit(repo: &Path, commit: &str) -> bool {
    ostree(repo)
        .args(["show", "--print-metadata-key=ostree.bootable", commit])
        .run_checked()
        .is_ok()
}

/// ostree marks deployment roots immutable (`chattr +i`); clear that on the deployments of a sysroot
/// (`<sysroot>/ostree/deploy/<os>/deploy/<checkout>`) so they can be removed.
fn clear_immutable_deployments(sysroot: &Path) -> Result<()> {
    let Ok(stateroots) = fs::read_dir(sysroot.join("ostree/deploy")) else {
        return Ok(());
    };
    let mut checkouts = Vec::new();
    for stateroot in stateroots.flatten() {
        if let Ok(deployments) = fs::read_dir(stateroot.path().join("deploy")) {
            checkouts.extend(
                deployments
                    .flatten()
                    .map(|d| d.path())
                    .filter(|p| p.is_dir()),
            );
        }
    }
    if !checkouts.is_empty() {
        Command::new("chattr")
            .arg("-i")
            .args(&checkouts)
            .run_checked()?;
    }
    Ok(())
}

/// Remove `dir` if it exists, clearing ostree's immutable flags where needed.
pub fn remove_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    clear_immutable_deployments(&dir.join("sysroot"))?;
    if fs::remove_dir_all(dir).is_err() {
        Command::new("chattr")
            .args(["-R", "-f", "-i"])
            .arg(dir)
            .status()
            .context("Running chattr -R -i")?;
        fs::remove_dir_all(dir).with_context(|| format!("Removing {}", dir.display()))?;
    }
    Ok(())
}

/// Remove the entries of `parent` whose names start with `prefix`, except `keep`.
fn remove_siblings(parent: &Path, prefix: &str, keep: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(parent) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path != keep && name.starts_with(prefix) && path.is_dir() {
            tracing::info!(path = %path.display(), "removing an outdated build");
            remove_dir(&path)?;
        }
    }
    Ok(())
}

/// The base described by `recipe`: from the cache, or built now (`rebuild` forces a build).
#[context("Building the base image")]
pub fn ensure_base(ws: &Workspace, recipe: &BaseRecipe, rebuild: bool) -> Result<BaseImage> {
    let key = recipe.key()?;
    let dir = ws.base_dir().join(&key);
    let manifest = dir.join("base.json");
    if !rebuild && manifest.is_file() {
        let base: BaseImage = read_json(&manifest)?;
        if repo_has_commit(&base.repo, &base.commit) {
            tracing::info!(key, commit = %base.commit, "base image from cache");
            export_base(ws, &base)?;
            return Ok(base);
        }
        tracing::warn!(key, "cached base is damaged; rebuilding");
    }
    let started = Instant::now();
    remove_siblings(&ws.base_dir(), "", &PathBuf::new())?;
    let partial = ws.base_dir().join(format!("{key}.partial"));
    fs::create_dir_all(&partial).with_context(|| format!("Creating {}", partial.display()))?;

    let rootfs = partial.join("rootfs");
    let log = partial.join("mmdebstrap.log");
    tracing::info!(log = %log.display(), "mmdebstrap {SUITE} (about a minute)");
    // mmdebstrap's root mode mounts /proc, /sys and /dev inside the tree; a private mount namespace
    // keeps those mounts off the host and makes them vanish with the process, even if it is killed.
    Command::new("unshare")
        .args(["--mount", "--propagation=private", "--", "mmdebstrap"])
        .args(["--variant=minbase", "--mode=root", "--format=directory"])
        // Only what packages.txt names and its dependencies (recommends would add ~60 MB: CNI
        // plugins, perl, timesyncd).
        .arg("--aptopt=APT::Install-Recommends \"false\"")
        .arg(format!("--include={}", recipe.packages.join(",")))
        .args(
            ["doc", "man", "locale", "info"]
                .map(|d| format!("--dpkgopt=path-exclude=/usr/share/{d}/*")),
        )
        .arg(format!(
            "--setup-hook=sh {} \"$1\"",
            recipe.setup_hook.display()
        ))
        .arg(format!(
            "--customize-hook=sh {} \"$1\"",
            recipe.customize_hook.display()
        ))
        .arg(SUITE)
        .arg(&rootfs)
        .run_logged(&log)?;
    let debootstrapped = started.elapsed();

    let kernel_version = layout::convert(&rootfs)?;
    let repo = partial.join("repo");
    ostree(&repo).args(["init", "--mode=bare"]).run_checked()?;
    let commit = ostree(&repo)
        .arg("commit")
        .arg(format!("--branch={BASE_REF}"))
        .arg(format!("--subject=vm-tests base ({SUITE}, key {key})"))
        .args(["--bootable", "--consume", "--no-bindings"])
        .arg(format!("--tree=dir={}", rootfs.display()))
        .run_stdout()?;
    remove_dir(&rootfs)?;

    remove_dir(&dir)?;
    fs::rename(&partial, &dir).with_context(|| format!("Moving the base to {}", dir.display()))?;
    let base = BaseImage {
        key: key.clone(),
        repo: dir.join("repo"),
        ostree_ref: BASE_REF.to_string(),
        commit,
        kernel_version,
        suite: SUITE.to_string(),
        packages: recipe.packages.clone(),
    };
    write_json(&manifest, &base)?;
    export_base(ws, &base)?;
    tracing::info!(
        key,
        commit = %base.commit,
        mmdebstrap_s = debootstrapped.as_secs_f64(),
        total_s = started.elapsed().as_secs_f64(),
        "base image built"
    );
    Ok(base)
}

/// `work/base.json` and `work/base.env`: where the base commit is, for host-side tooling
/// (ostree-ext encapsulation into OCI images).
fn export_base(ws: &Workspace, base: &BaseImage) -> Result<()> {
    fs::create_dir_all(&ws.work_dir)?;
    write_json(&ws.work_dir.join("base.json"), base)?;
    let env = format!(
        "# vm-tests base commit (generated; do not edit)\n\
         VMTEST_BASE_REPO={}\nVMTEST_BASE_REF={}\nVMTEST_BASE_COMMIT={}\nVMTEST_BASE_KERNEL={}\n",
        base.repo.display(),
        base.ostree_ref,
        base.commit,
        base.kernel_version
    );
    fs::write(ws.work_dir.join("base.env"), env)?;
    Ok(())
}

/// What to put on top of the base and how to boot it.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Short name used in paths (`smoke`, `daemon`).
    pub name: String,
    /// Files on top of the harness's guest files.
    pub overlay: Overlay,
    /// Kernel arguments after [`DEFAULT_KARGS`].
    pub kargs: Vec<String>,
    pub disk_size_mib: u64,
    /// Install from a container image instead of deploying the layer commit directly.
    pub os_image: Option<OsImageSpec>,
}

impl ImageSpec {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            overlay: Overlay::new(),
            kargs: Vec::new(),
            disk_size_mib: 4096,
            os_image: None,
        }
    }
}

/// Install the disk the way an image-mode node is installed: the layer commit is encapsulated into an
/// OCI image (ostree-ext), and the disk's deployment is an ostree-ext deploy of that image whose origin
/// names the registry pull spec **as the guest sees it** (`<registry>/<repository>@sha256:…`). The guest
/// then knows which image it runs, and later images built on top of this one share its layers: an
/// update fetches only the layers it adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsImageSpec {
    /// `host:port` of the registry from inside the guest, e.g. `10.0.2.100:5000`.
    pub guest_registry: String,
    /// Repository name in that registry, e.g. `os`.
    pub repository: String,
    /// Tag in the image's OCI layout.
    pub tag: String,
    /// The image's `org.opencontainers.image.version` label.
    pub version: String,
}

/// The OS image a disk was installed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsImage {
    /// testbed `ImageLab` directory whose `oci/` layout holds the image (for pushes and derived images).
    pub lab: PathBuf,
    pub tag: String,
    /// `sha256:…` of the manifest.
    pub manifest_digest: String,
    /// What the guest's deployment origin and a MachineConfig's `osImageURL` say:
    /// `<guest registry>/<repository>@<digest>`.
    pub pullspec: String,
    pub version: String,
}

/// A pristine disk image (never booted; VMs boot copies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskImage {
    pub name: String,
    pub key: String,
    pub disk: PathBuf,
    /// The sysroot's repo on the host (bare), holding base and layer commits.
    pub repo: PathBuf,
    pub base_commit: String,
    /// The deployed layer commit: what `ostree admin status` shows as booted on first boot.
    pub commit: String,
    #[serde(rename = "ref")]
    pub ostree_ref: String,
    pub kernel_version: String,
    pub kargs: Vec<String>,
    /// Set when the disk was installed from a container image ([`ImageSpec::os_image`]); `commit` is
    /// then ostree-ext's merge commit of that image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_image: Option<OsImage>,
}

/// The harness's own guest files: readiness marker and command agent.
pub fn harness_overlay(ws: &Workspace) -> Overlay {
    Overlay::new()
        .tree(ws.guest_dir())
        .enable("vmtest-ready.service", "multi-user.target")
        .enable("vmtest-agent.service", "multi-user.target")
        .enable("vmtest-hold-finalize.service", "multi-user.target")
}

/// The disk image for `spec` on top of `base`: from the cache, or built now.
#[context("Building image {:?}", spec.name)]
pub fn ensure_image(
    ws: &Workspace,
    base: &BaseImage,
    spec: &ImageSpec,
    rebuild: bool,
) -> Result<DiskImage> {
    if spec.name.is_empty()
        || !spec
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!(
            "image name {:?} must be letters, digits, '-' or '_'",
            spec.name
        );
    }
    let started = Instant::now();
    let staging = ws.scratch("overlay-")?;
    harness_overlay(ws)
        .extend(&spec.overlay)
        .materialize(staging.path())?;
    let kargs: Vec<String> = DEFAULT_KARGS
        .iter()
        .map(|s| s.to_string())
        .chain(spec.kargs.iter().cloned())
        .collect();
    let mut h = KeyHasher::new(IMAGE_FORMAT);
    h.field("base", base.commit.as_bytes());
    h.field("overlay", overlay::tree_hash(staging.path())?.as_bytes());
    h.field("kargs", kargs.join(" ").as_bytes());
    h.field("size", &spec.disk_size_mib.to_le_bytes());
    if let Some(os) = &spec.os_image {
        h.field("os-image", OS_IMAGE_FORMAT.as_bytes());
        h.field("guest-registry", os.guest_registry.as_bytes());
        h.field("repository", os.repository.as_bytes());
        h.field("tag", os.tag.as_bytes());
        h.field("version", os.version.as_bytes());
    }
    let key = h.finish();

    let prefix = format!("{}-", spec.name);
    let dir = ws.images_dir().join(format!("{prefix}{key}"));
    let manifest = dir.join("image.json");
    if !rebuild && manifest.is_file() {
        let image: DiskImage = read_json(&manifest)?;
        if image.disk.is_file() {
            tracing::info!(name = %spec.name, key, "image from cache");
            return Ok(image);
        }
    }
    remove_siblings(&ws.images_dir(), &prefix, &PathBuf::new())?;
    let partial = ws.images_dir().join(format!("{prefix}{key}.partial"));
    remove_dir(&partial)?;
    fs::create_dir_all(&partial)?;

    let sysroot = partial.join("sysroot");
    let repo = sysroot.join("ostree/repo");
    fs::create_dir_all(&sysroot)?;
    Command::new("ostree")
        .args(["admin", "init-fs"])
        .arg(&sysroot)
        .run_checked()?;
    Command::new("ostree")
        .args(["admin", "os-init", OSNAME])
        .arg(format!("--sysroot={}", sysroot.display()))
        .run_checked()?;
    // Same filesystem, both bare: objects are hardlinked, not copied.
    ostree(&repo)
        .arg("pull-local")
        .arg(&base.repo)
        .arg(&base.ostree_ref)
        .run_checked()?;
    let layer_started = Instant::now();
    let commit = ostree(&repo)
        .arg("commit")
        .arg(format!("--branch={IMAGE_REF}"))
        .arg(format!("--subject=vm-tests image {} ({key})", spec.name))
        .args(["--bootable", "--no-bindings"])
        .arg(format!("--tree=ref={}", base.commit))
        .arg(format!("--tree=dir={}", staging.path().display()))
        .run_stdout()?;
    let layer_time = layer_started.elapsed();
    let (deployed, os_image) = match &spec.os_image {
        None => {
            let mut deploy = Command::new("ostree");
            deploy
                .args(["admin", "deploy", IMAGE_REF])
                .arg(format!("--sysroot={}", sysroot.display()))
                .arg(format!("--os={OSNAME}"));
            for karg in &kargs {
                deploy.arg(format!("--karg={karg}"));
            }
            deploy.run_checked()?;
            (commit.clone(), None)
        }
        Some(os) => {
            let lab = partial.join("lab");
            let (deployed, image) =
                install_from_container_image(&sysroot, &repo, &lab, os, &kargs)?;
            let image = OsImage {
                lab: dir.join("lab"),
                ..image
            };
            (deployed, Some(image))
        }
    };
    let disk = partial.join("disk.img");
    Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "root", "-d"])
        .arg(&sysroot)
        .arg(&disk)
        .arg(format!("{}M", spec.disk_size_mib))
        .run_checked()?;

    // The disk holds the deployment now; keep only the repo (for update layers on top of this one).
    clear_immutable_deployments(&sysroot)?;
    fs::remove_dir_all(sysroot.join("ostree/deploy"))?;
    remove_dir(&dir)?;
    fs::rename(&partial, &dir)?;
    let image = DiskImage {
        name: spec.name.clone(),
        key: key.clone(),
        disk: dir.join("disk.img"),
        repo: dir.join("sysroot/ostree/repo"),
        base_commit: base.commit.clone(),
        commit: deployed,
        ostree_ref: IMAGE_REF.to_string(),
        kernel_version: base.kernel_version.clone(),
        kargs,
        os_image,
    };
    write_json(&manifest, &image)?;
    tracing::info!(
        name = %spec.name,
        key,
        commit = %image.commit,
        layer_commit_s = layer_time.as_secs_f64(),
        total_s = started.elapsed().as_secs_f64(),
        "image built"
    );
    Ok(image)
}

/// Encapsulate the sysroot repo's [`IMAGE_REF`] into an OCI image in the testbed lab at `lab`, then
/// deploy that image into `sysroot` as an installer would, recording the guest's pull spec as its origin.
/// Returns the deployed (merge) commit and the image (whose `lab` is where it was built).
fn install_from_container_image(
    sysroot: &Path,
    repo: &Path,
    lab_dir: &Path,
    os: &OsImageSpec,
    kargs: &[String],
) -> Result<(String, OsImage)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("Building a runtime for ostree-ext")?;
    let lab = testbed::ImageLab::open(lab_dir)?;
    let started = Instant::now();
    let built = runtime.block_on(lab.encapsulate_commit(
        repo,
        IMAGE_REF,
        &os.tag,
        Some(&os.version),
        true,
    ))?;
    let encapsulated = started.elapsed();
    let pullspec = format!(
        "{}/{}@{}",
        os.guest_registry, os.repository, built.manifest_digest
    );
    let started = Instant::now();
    let (deployed, digest) = runtime.block_on(testbed::sysroot::deploy_container_image(
        sysroot,
        OSNAME,
        &format!("ostree-unverified-image:{}", lab.oci_ref(&os.tag)),
        Some(&format!("ostree-unverified-registry:{pullspec}")),
        kargs,
    ))?;
    if digest != built.manifest_digest {
        bail!(
            "the deployed image has digest {digest}, but the encapsulated one is {}",
            built.manifest_digest
        );
    }
    tracing::info!(
        pullspec,
        layer_bytes = built.total_layer_bytes(),
        encapsulate_s = encapsulated.as_secs_f64(),
        deploy_s = started.elapsed().as_secs_f64(),
        "installed from a container image"
    );
    Ok((
        deployed,
        OsImage {
            lab: lab_dir.to_path_buf(),
            tag: os.tag.clone(),
            manifest_digest: built.manifest_digest,
            pullspec,
            version: os.version.clone(),
        },
    ))
}

/// An archive-mode repo the guest pulls updates from over HTTP (through a guestfwd port).
#[derive(Debug, Clone)]
pub struct UpdateRepo {
    pub path: PathBuf,
}

impl UpdateRepo {
    /// The archive repo of `base` (cached next to it; building it compresses the whole base once).
    #[context("Preparing the update repo")]
    pub fn ensure(ws: &Workspace, base: &BaseImage) -> Result<Self> {
        let path = ws.base_dir().join(&base.key).join("archive");
        let done = path.join(".vmtest-complete");
        if !done.is_file() {
            let started = Instant::now();
            let partial = path.with_extension("partial");
            remove_dir(&partial)?;
            ostree(&partial)
                .args(["init", "--mode=archive"])
                .run_checked()?;
            ostree(&partial)
                .arg("pull-local")
                .arg(&base.repo)
                .arg(&base.ostree_ref)
                .run_checked()?;
            fs::write(partial.join(".vmtest-complete"), &base.commit)?;
            remove_dir(&path)?;
            fs::rename(&partial, &path)?;
            tracing::info!(
                seconds = started.elapsed().as_secs_f64(),
                "update repo built"
            );
        }
        Ok(Self { path })
    }

    /// Bring an image's layer commit in, so new layers can be committed on top of it.
    pub fn import(&self, image: &DiskImage) -> Result<()> {
        ostree(&self.path)
            .arg("pull-local")
            .arg(&image.repo)
            .arg(&image.commit)
            .run_checked()?;
        Ok(())
    }

    /// Commit `overlay` on top of `parent` as `branch`; returns the new commit.
    #[context("Committing update layer {branch}")]
    pub fn commit_layer(
        &self,
        ws: &Workspace,
        parent: &str,
        overlay: &Overlay,
        branch: &str,
    ) -> Result<String> {
        let staging = ws.scratch("update-")?;
        overlay.materialize(staging.path())?;
        ostree(&self.path)
            .arg("commit")
            .arg(format!("--branch={branch}"))
            .arg(format!("--subject=vm-tests update {branch}"))
            .args(["--bootable", "--no-bindings"])
            .arg(format!("--tree=ref={parent}"))
            .arg(format!("--tree=dir={}", staging.path().display()))
            .run_stdout()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_lists_are_validated() {
        let list =
            parse_packages("# comment\nsystemd\n\n  dbus # the bus\nlibglib2.0-0\n").unwrap();
        assert_eq!(list, ["systemd", "dbus", "libglib2.0-0"]);
        let err = parse_packages("systemd\nrm -rf /\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "packages.txt line 2: \"rm -rf /\" is not a Debian package name"
        );
        assert!(parse_packages("Systemd\n").is_err(), "uppercase");
        assert!(
            parse_packages("a,b\n").is_err(),
            "a comma would split mmdebstrap's --include"
        );
        assert_eq!(
            parse_packages("# nothing\n").unwrap_err().to_string(),
            "packages.txt lists no packages"
        );
    }

    #[test]
    fn base_key_follows_packages_and_hooks() {
        let tmp = tempfile::tempdir().unwrap();
        let hook = tmp.path().join("h.sh");
        fs::write(&hook, "echo 1").unwrap();
        let recipe = BaseRecipe {
            packages: vec!["systemd".into()],
            setup_hook: hook.clone(),
            customize_hook: hook.clone(),
        };
        let k1 = recipe.key().unwrap();
        assert_eq!(k1, recipe.key().unwrap());
        let mut more = recipe.clone();
        more.packages.push("dbus".into());
        assert_ne!(k1, more.key().unwrap());
        fs::write(&hook, "echo 2").unwrap();
        assert_ne!(k1, recipe.key().unwrap());
    }

    #[test]
    fn the_checked_in_recipe_is_valid() {
        let ws = Workspace::from_env();
        let recipe = BaseRecipe::from_workspace(&ws).unwrap();
        for needed in [
            "systemd",
            "ostree-boot",
            "dracut",
            "linux-image-amd64",
            "skopeo",
            "dbus",
        ] {
            assert!(recipe.packages.iter().any(|p| p == needed), "{needed}");
        }
    }

    #[test]
    fn bad_image_names_are_refused_before_anything_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspace::new(env!("CARGO_MANIFEST_DIR"), tmp.path().join("work"));
        let base = BaseImage {
            key: "k".into(),
            repo: tmp.path().join("repo"),
            ostree_ref: BASE_REF.into(),
            commit: "c".into(),
            kernel_version: "6.1".into(),
            suite: SUITE.into(),
            packages: vec![],
        };
        let err = ensure_image(&ws, &base, &ImageSpec::new("../x"), false).unwrap_err();
        assert!(
            format!("{err:#}").contains("must be letters, digits"),
            "{err:#}"
        );
        assert!(!ws.work_dir.exists(), "nothing written");
    }

    #[test]
    fn the_harness_overlay_stages_cleanly() {
        let ws = Workspace::from_env();
        let staging = tempfile::tempdir().unwrap();
        harness_overlay(&ws).materialize(staging.path()).unwrap();
        let s = staging.path();
        assert!(s.join("usr/libexec/vmtest/ready").is_file());
        assert!(
            s.join("usr/lib/systemd/system/multi-user.target.wants/vmtest-agent.service")
                .exists()
        );
    }
}
