//! OS images for the guest to update to, and the registry it pulls them from.
//!
//! The images start from the one the disk was installed from ([`crate::image::OsImage`]: the VM's own
//! base + daemon layer commit, encapsulated with ostree-ext). Derived images add layers with `ocidir`
//! (testbed's `ImageLab::derive`), as `FROM <os image>` + `RUN …` would. Everything is pushed to Debian's
//! `docker-registry` on the host's 127.0.0.1; the guest reaches it only through a guestfwd port, so the
//! pull specs it is given are its own view: `10.0.2.100:<guest port>/os@sha256:…`.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use testbed::{BaseSpec, ImageLab, LayerSpec, Registry};

use crate::image::OsImage;
use crate::qemu::{GuestForward, HOST_ADDR_IN_GUEST};
use crate::workspace::Workspace;

/// Repository name the OS images are pushed under.
pub const REPOSITORY: &str = "os";
/// The registry's port in the guest's view (fixed, so images built for the guest stay valid).
pub const GUEST_REGISTRY_PORT: u16 = 5000;

/// `10.0.2.100:5000`: the registry as the guest reaches it.
pub fn guest_registry() -> String {
    format!("{HOST_ADDR_IN_GUEST}:{GUEST_REGISTRY_PORT}")
}

/// A registry with the installed image and what the scenarios derived from it, for one suite run.
#[derive(Debug)]
pub struct OsRegistry {
    registry: Registry,
    lab: ImageLab,
    _dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    installed: OsImage,
    /// tag → guest pull spec, for what was pushed already.
    pushed: HashMap<String, String>,
}

/// Hardlink the blobs of the OCI layout `from` into `to` and copy its index: new images can then be
/// derived in `to` (ocidir writes new blobs and rewrites the index) without touching the cached layout.
fn link_oci_layout(from: &Path, to: &Path) -> Result<()> {
    let blobs = to.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    for entry in fs::read_dir(from.join("blobs/sha256"))
        .with_context(|| format!("Reading {}", from.display()))?
    {
        let entry = entry?;
        fs::hard_link(entry.path(), blobs.join(entry.file_name()))
            .with_context(|| format!("Linking {}", entry.path().display()))?;
    }
    for file in ["oci-layout", "index.json"] {
        fs::copy(from.join(file), to.join(file))
            .with_context(|| format!("Copying {file} of {}", from.display()))?;
    }
    Ok(())
}

impl OsRegistry {
    /// Start a registry (storage under `work/tmp`) and a scratch lab holding the installed image.
    pub fn start(ws: &Workspace, installed: &OsImage) -> Result<Self> {
        let dir = ws.scratch("osimages-")?;
        let lab_dir = dir.path().join("lab");
        link_oci_layout(&installed.lab.join("oci"), &lab_dir.join("oci"))?;
        let lab = ImageLab::open(&lab_dir)?;
        let registry = Registry::start_in(&dir.path().join("registry"), 0, None)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Self {
            registry,
            lab,
            _dir: dir,
            runtime,
            installed: installed.clone(),
            pushed: HashMap::new(),
        })
    }

    /// The guestfwd that makes the registry `10.0.2.100:5000` in the guest.
    pub fn forward(&self) -> GuestForward {
        GuestForward {
            guest_port: GUEST_REGISTRY_PORT,
            host_port: self.registry.port(),
        }
    }

    /// Push `tag` of the lab (once) and return its guest pull spec by digest.
    pub fn publish(&mut self, tag: &str) -> Result<String> {
        if let Some(spec) = self.pushed.get(tag) {
            return Ok(spec.clone());
        }
        let built = self.lab.describe(tag)?;
        self.registry.push(&self.lab, tag, REPOSITORY)?;
        let spec = format!(
            "{}/{REPOSITORY}@{}",
            guest_registry(),
            built.manifest_digest
        );
        self.pushed.insert(tag.to_string(), spec.clone());
        Ok(spec)
    }

    /// The image the disk was installed from, pushed: what the node boots at first.
    pub fn installed(&mut self) -> Result<String> {
        let tag = self.installed.tag.clone();
        let spec = self.publish(&tag)?;
        if spec != self.installed.pullspec {
            bail!(
                "the registry serves the installed image as {spec}, but the disk records {}",
                self.installed.pullspec
            );
        }
        Ok(spec)
    }

    /// `to` = the installed image plus `layer` (once per suite), pushed; returns its guest pull spec.
    pub fn derive(&mut self, to: &str, layer: LayerSpec, version: &str) -> Result<String> {
        if !self.pushed.contains_key(to) {
            self.lab
                .derive(&self.installed.tag, to, &[layer], Some(version))?;
        }
        self.publish(to)
    }

    /// A small image that is not an OS image (no `ostree.bootable` label), as an application image
    /// mistaken for an OS image would be.
    pub fn not_bootable(&mut self, tag: &str) -> Result<String> {
        if !self.pushed.contains_key(tag) {
            let mut spec = BaseSpec::new(tag, "0.1");
            spec.bootable = false;
            self.runtime.block_on(self.lab.build_base(&spec))?;
        }
        self.publish(tag)
    }

    /// Manifest digest (`sha256:…`) of a guest pull spec published here.
    pub fn digest_of(spec: &str) -> &str {
        spec.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
    }
}
