//! The files a test layers on top of the base OS commit: the daemon binary, its units, test units.
//!
//! An overlay is described in the image's own terms (`/usr/...`, `/etc/...`) and materialized into a
//! staging directory in ostree's layout: `/etc` goes to `usr/etc` (ostree's default config, merged into
//! `/etc` at deploy time). Anything outside `/usr` and `/etc` is refused: an ostree commit does not
//! carry it. Every path is validated before anything is written.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};

use crate::workspace::KeyHasher;

/// Why an overlay cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OverlayError {
    #[error("overlay path {0:?} must be a relative path without '..' or '.' parts")]
    BadPath(String),
    #[error(
        "overlay path {0:?} is outside /usr and /etc: an ostree commit carries only /usr (and /etc as /usr/etc)"
    )]
    OutsideCommit(String),
    #[error("{0:?} is not a systemd unit name (like foo.service)")]
    BadUnit(String),
    #[error("{0} is neither a regular file, a directory nor a symlink")]
    SpecialFile(String),
}

#[derive(Debug, Clone)]
enum Item {
    /// A directory tree laid out like the image (`usr/...`, `etc/...`).
    Tree(PathBuf),
    /// One file copied from the host.
    File {
        dest: String,
        source: PathBuf,
        mode: u32,
    },
    /// One file with the given bytes.
    Contents {
        dest: String,
        bytes: Vec<u8>,
        mode: u32,
    },
    /// `usr/lib/systemd/system/<target>.<wants|requires>/<unit>`, like `systemctl enable` would make
    /// for `WantedBy=` / `RequiredBy=`.
    Enable {
        unit: String,
        target: String,
        required: bool,
    },
}

/// Files to add on top of a commit, applied in the order they were added (later ones win).
#[derive(Debug, Clone, Default)]
pub struct Overlay {
    items: Vec<Item>,
}

/// Where an image path lives in the ostree commit: `etc/x` becomes `usr/etc/x`.
pub fn commit_path(image_path: &str) -> Result<PathBuf, OverlayError> {
    let trimmed = image_path.trim_start_matches('/');
    let path = Path::new(trimmed);
    let parts: Vec<&str> = path
        .components()
        .map(|c| match c {
            Component::Normal(p) => p.to_str().ok_or(()),
            _ => Err(()),
        })
        .collect::<Result<_, ()>>()
        .map_err(|()| OverlayError::BadPath(image_path.to_string()))?;
    if parts.is_empty() || trimmed.split('/').any(|p| p == "." || p == "..") {
        return Err(OverlayError::BadPath(image_path.to_string()));
    }
    match parts[0] {
        "usr" => Ok(path.to_path_buf()),
        "etc" => Ok(Path::new("usr").join(path)),
        _ => Err(OverlayError::OutsideCommit(image_path.to_string())),
    }
}

fn check_unit_name(name: &str) -> Result<(), OverlayError> {
    let kinds = [
        ".service", ".socket", ".target", ".timer", ".path", ".mount",
    ];
    let ok = !name.contains('/')
        && !name.starts_with('.')
        && kinds
            .iter()
            .any(|k| name.len() > k.len() && name.ends_with(k));
    if ok {
        Ok(())
    } else {
        Err(OverlayError::BadUnit(name.to_string()))
    }
}

impl Overlay {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a directory laid out like the image root (only `usr/` and `etc/` inside).
    pub fn tree(mut self, dir: impl Into<PathBuf>) -> Self {
        self.items.push(Item::Tree(dir.into()));
        self
    }

    /// Copy one host file to `dest` (an image path like `/usr/bin/machine-config-daemon`).
    pub fn file(mut self, dest: &str, source: impl Into<PathBuf>, mode: u32) -> Self {
        self.items.push(Item::File {
            dest: dest.to_string(),
            source: source.into(),
            mode,
        });
        self
    }

    /// Write `bytes` to `dest` (an image path).
    pub fn contents(mut self, dest: &str, bytes: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.items.push(Item::Contents {
            dest: dest.to_string(),
            bytes: bytes.into(),
            mode,
        });
        self
    }

    /// Enable `unit` for `target` (`multi-user.target`), as `systemctl enable` would.
    pub fn enable(mut self, unit: &str, target: &str) -> Self {
        self.items.push(Item::Enable {
            unit: unit.to_string(),
            target: target.to_string(),
            required: false,
        });
        self
    }

    /// Enable `unit` for a `RequiredBy=target` install section (a `<target>.requires/` link).
    pub fn require(mut self, unit: &str, target: &str) -> Self {
        self.items.push(Item::Enable {
            unit: unit.to_string(),
            target: target.to_string(),
            required: true,
        });
        self
    }

    /// Append another overlay's items after this one's.
    pub fn extend(mut self, other: &Overlay) -> Self {
        self.items.extend(other.items.iter().cloned());
        self
    }

    /// Check every path (walking trees) without writing anything.
    pub fn validate(&self) -> Result<()> {
        for item in &self.items {
            match item {
                Item::Tree(dir) => {
                    walk(dir, &mut |rel, _| {
                        commit_path(rel)?;
                        Ok(())
                    })?;
                }
                Item::File { dest, source, .. } => {
                    commit_path(dest)?;
                    let meta = fs::metadata(source)
                        .with_context(|| format!("Overlay source {}", source.display()))?;
                    if !meta.is_file() {
                        return Err(OverlayError::SpecialFile(source.display().to_string()).into());
                    }
                }
                Item::Contents { dest, .. } => {
                    commit_path(dest)?;
                }
                Item::Enable { unit, target, .. } => {
                    check_unit_name(unit)?;
                    check_unit_name(target)?;
                }
            }
        }
        Ok(())
    }

    /// Write the overlay into `staging` (an empty directory) in ostree's layout.
    pub fn materialize(&self, staging: &Path) -> Result<()> {
        self.validate()?;
        for item in &self.items {
            match item {
                Item::Tree(dir) => {
                    walk(dir, &mut |rel, source| {
                        let dest = staging.join(commit_path(rel)?);
                        copy_entry(source, &dest)
                    })?;
                }
                Item::File { dest, source, mode } => {
                    let dest = staging.join(commit_path(dest)?);
                    ensure_parent(&dest)?;
                    fs::copy(source, &dest).with_context(|| {
                        format!("Copying {} to {}", source.display(), dest.display())
                    })?;
                    fs::set_permissions(&dest, fs::Permissions::from_mode(*mode))?;
                }
                Item::Contents { dest, bytes, mode } => {
                    let dest = staging.join(commit_path(dest)?);
                    ensure_parent(&dest)?;
                    fs::write(&dest, bytes)
                        .with_context(|| format!("Writing {}", dest.display()))?;
                    fs::set_permissions(&dest, fs::Permissions::from_mode(*mode))?;
                }
                Item::Enable {
                    unit,
                    target,
                    required,
                } => {
                    let kind = if *required { "requires" } else { "wants" };
                    let link = staging
                        .join("usr/lib/systemd/system")
                        .join(format!("{target}.{kind}"))
                        .join(unit);
                    ensure_parent(&link)?;
                    let _ = fs::remove_file(&link);
                    symlink(format!("../{unit}"), &link)
                        .with_context(|| format!("Enabling {unit} for {target}"))?;
                }
            }
        }
        Ok(())
    }
}

fn ensure_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("Creating {}", parent.display()))?;
    }
    Ok(())
}

/// Copy one file, symlink or (empty) directory; parents are created as needed.
fn copy_entry(source: &Path, dest: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(source)?;
    ensure_parent(dest)?;
    if meta.file_type().is_symlink() {
        let target = fs::read_link(source)?;
        let _ = fs::remove_file(dest);
        symlink(&target, dest).with_context(|| format!("Linking {}", dest.display()))?;
    } else if meta.is_dir() {
        fs::create_dir_all(dest)?;
        fs::set_permissions(
            dest,
            fs::Permissions::from_mode(meta.permissions().mode() & 0o7777),
        )?;
    } else {
        let _ = fs::remove_file(dest);
        fs::copy(source, dest)
            .with_context(|| format!("Copying {} to {}", source.display(), dest.display()))?;
    }
    Ok(())
}

/// Visit every entry under `root` (parents before children, names sorted) with its relative path.
fn walk(root: &Path, visit: &mut dyn FnMut(&str, &Path) -> Result<()>) -> Result<()> {
    fn inner(
        root: &Path,
        dir: &Path,
        visit: &mut dyn FnMut(&str, &Path) -> Result<()>,
    ) -> Result<()> {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .with_context(|| format!("Reading overlay directory {}", dir.display()))?
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .expect("walked paths are under the root")
                .to_str()
                .ok_or_else(|| OverlayError::BadPath(path.display().to_string()))?
                .to_string();
            let ty = entry.file_type()?;
            if !(ty.is_file() || ty.is_dir() || ty.is_symlink()) {
                return Err(OverlayError::SpecialFile(path.display().to_string()).into());
            }
            visit(&rel, &path)?;
            if ty.is_dir() {
                inner(root, &path, visit)?;
            }
        }
        Ok(())
    }
    if !root.is_dir() {
        anyhow::bail!("overlay directory {} does not exist", root.display());
    }
    inner(root, root, visit)
}

/// A content hash of a staged tree: paths, types, modes, link targets and file bytes.
pub fn tree_hash(root: &Path) -> Result<String> {
    let mut h = KeyHasher::new("tree");
    walk(root, &mut |rel, path| {
        let meta = fs::symlink_metadata(path)?;
        h.field("path", rel.as_bytes());
        h.field("mode", &meta.permissions().mode().to_le_bytes());
        if meta.file_type().is_symlink() {
            h.field("link", fs::read_link(path)?.as_os_str().as_encoded_bytes());
        } else if meta.is_file() {
            h.field("data", &fs::read(path)?);
        }
        Ok(())
    })?;
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_empty(dir: &Path) -> bool {
        fs::read_dir(dir).unwrap().next().is_none()
    }

    #[test]
    fn etc_maps_to_usr_etc_and_usr_stays() {
        assert_eq!(
            commit_path("/etc/foo.conf").unwrap(),
            PathBuf::from("usr/etc/foo.conf")
        );
        assert_eq!(
            commit_path("usr/bin/x").unwrap(),
            PathBuf::from("usr/bin/x")
        );
        assert_eq!(commit_path("etc").unwrap(), PathBuf::from("usr/etc"));
    }

    #[test]
    fn paths_outside_the_commit_or_escaping_are_refused() {
        assert_eq!(
            commit_path("/var/lib/x"),
            Err(OverlayError::OutsideCommit("/var/lib/x".into()))
        );
        assert_eq!(
            commit_path("boot/vmlinuz"),
            Err(OverlayError::OutsideCommit("boot/vmlinuz".into()))
        );
        for bad in ["usr/../etc/x", "", "/", "usr/./x"] {
            assert_eq!(
                commit_path(bad),
                Err(OverlayError::BadPath(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn materializes_files_trees_and_enablement() {
        let host = tempfile::tempdir().unwrap();
        let host_file = host.path().join("binary");
        fs::write(&host_file, "ELF").unwrap();

        let tree = tempfile::tempdir().unwrap();
        fs::create_dir_all(tree.path().join("etc/app")).unwrap();
        fs::write(tree.path().join("etc/app/conf"), "k=v").unwrap();
        fs::create_dir_all(tree.path().join("usr/bin")).unwrap();
        symlink("tool", tree.path().join("usr/bin/alias")).unwrap();
        let staging = tempfile::tempdir().unwrap();
        Overlay::new()
            .tree(tree.path())
            .file("/usr/bin/tool", &host_file, 0o755)
            .contents("/usr/lib/systemd/system/t.service", "[Service]\n", 0o644)
            .enable("t.service", "multi-user.target")
            .require("t.service", "firstboot.target")
            .materialize(staging.path())
            .unwrap();
        let s = staging.path();
        assert_eq!(
            fs::read_to_string(s.join("usr/etc/app/conf")).unwrap(),
            "k=v"
        );
        assert!(!s.join("etc").exists());
        assert_eq!(
            fs::read_link(s.join("usr/bin/alias")).unwrap(),
            PathBuf::from("tool")
        );
        let mode = fs::metadata(s.join("usr/bin/tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        let wants = s.join("usr/lib/systemd/system/multi-user.target.wants/t.service");
        assert_eq!(
            fs::read_link(&wants).unwrap(),
            PathBuf::from("../t.service")
        );
        assert!(wants.exists(), "the enablement link resolves to the unit");
        let requires = s.join("usr/lib/systemd/system/firstboot.target.requires/t.service");
        assert_eq!(
            fs::read_link(&requires).unwrap(),
            PathBuf::from("../t.service")
        );
    }

    #[test]
    fn a_bad_entry_anywhere_writes_nothing() {
        let tree = tempfile::tempdir().unwrap();
        fs::create_dir_all(tree.path().join("usr/bin")).unwrap();
        fs::write(tree.path().join("usr/bin/ok"), "x").unwrap();
        fs::create_dir_all(tree.path().join("var/lib")).unwrap();
        let staging = tempfile::tempdir().unwrap();
        let err = Overlay::new()
            .contents("/usr/share/first", "written first?", 0o644)
            .tree(tree.path())
            .materialize(staging.path())
            .unwrap_err();
        assert_eq!(
            err.downcast_ref::<OverlayError>(),
            Some(&OverlayError::OutsideCommit("var".into()))
        );
        assert!(
            is_empty(staging.path()),
            "nothing may be written on a bad overlay"
        );
    }

    #[test]
    fn bad_unit_names_and_missing_sources_are_refused() {
        let staging = tempfile::tempdir().unwrap();
        let err = Overlay::new()
            .enable("../evil.service", "multi-user.target")
            .materialize(staging.path())
            .unwrap_err();
        assert_eq!(
            err.downcast_ref::<OverlayError>(),
            Some(&OverlayError::BadUnit("../evil.service".into()))
        );
        let err = Overlay::new()
            .file("/usr/bin/x", "/nonexistent/binary", 0o755)
            .materialize(staging.path())
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/binary"),
            "{err:#}"
        );
        let err = Overlay::new()
            .tree("/nonexistent/tree")
            .materialize(staging.path())
            .unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(is_empty(staging.path()));
    }

    #[test]
    fn tree_hash_follows_content_and_mode() {
        let a = tempfile::tempdir().unwrap();
        fs::create_dir_all(a.path().join("usr/bin")).unwrap();
        fs::write(a.path().join("usr/bin/x"), "1").unwrap();
        let first = tree_hash(a.path()).unwrap();
        assert_eq!(first, tree_hash(a.path()).unwrap());
        fs::write(a.path().join("usr/bin/x"), "2").unwrap();
        let second = tree_hash(a.path()).unwrap();
        assert_ne!(first, second);
        fs::set_permissions(
            a.path().join("usr/bin/x"),
            fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        assert_ne!(second, tree_hash(a.path()).unwrap());
    }
}
