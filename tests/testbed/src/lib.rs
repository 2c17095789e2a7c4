//! Real test infrastructure for machine-config-daemon: OS images built from scratch ([`ImageLab`]), Debian's
//! `docker-registry` on 127.0.0.1 ([`Registry`]), sandbox ostree sysroots ([`SandboxSysroot`]) and fake node
//! roots ([`NodeRoot`]). Everything lives in temp dirs and is removed (or killed) on drop.
//!
//! Needs root and the packages from `packaging/setup-dev.sh` (ostree, skopeo, docker-registry).

pub mod chunked;
mod cmd;
pub mod dbus;
pub mod figures;
pub mod image;
pub mod link;
pub mod registry;
pub mod rpm_ostreed;
pub mod sweep;
pub mod sysroot;
pub mod systemd;
pub mod tls;

use std::path::Path;

use anyhow::{Context, Result};

pub use chunked::{ChunkedImages, ChunkedSpec};
pub use dbus::PrivateBus;
pub use image::{BaseSpec, BlobInfo, BuiltImage, FileSpec, ImageLab, LayerSpec};
pub use link::{Link, LinkModel};
pub use registry::{AccessLogEntry, Credentials, LogMark, Registry};
pub use sysroot::{SandboxSysroot, SysrootSnapshot};

/// A directory standing in for a node's `/`: where the daemon finds `etc/containers/registries.conf`,
/// pull secrets (`run/ostree/auth.json`, `var/lib/kubelet/config.json`) and so on.
#[derive(Debug)]
pub struct NodeRoot {
    dir: tempfile::TempDir,
}

impl NodeRoot {
    pub fn new() -> Result<Self> {
        Ok(Self {
            dir: tempfile::Builder::new().prefix("testbed-node-").tempdir()?,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write `contents` at `rel` (relative to the root), creating parents.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> Result<()> {
        let p = self.dir.path().join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().expect("has parent"))?;
        std::fs::write(&p, contents).with_context(|| format!("Writing {}", p.display()))
    }

    /// Mark `registry` as plain HTTP in this root's `etc/containers/registries.conf`.
    pub fn trust_insecure_registry(&self, registry: &Registry) -> Result<()> {
        self.write("etc/containers/registries.conf", registry.registries_conf())
    }
}

/// Let other users read (and traverse) a tree: ostree-ext may run skopeo as `nobody`.
pub(crate) fn make_world_readable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    let wanted = if meta.is_dir() {
        mode | 0o055
    } else {
        mode | 0o044
    };
    if wanted != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted))?;
    }
    if meta.is_dir() {
        for e in std::fs::read_dir(path)? {
            make_world_readable(&e?.path())?;
        }
    }
    Ok(())
}
