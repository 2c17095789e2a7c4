//! The node root: a directory handle every host access goes through, and the safe resolution of managed
//! paths inside it.
//!
//! Paths are walked one component at a time with `O_NOFOLLOW`: a symlinked parent is refused, except the
//! one symlink ostree puts in every root on purpose (`/home -> var/home`), which is resolved inside the
//! root — never through the host's `/`. A final component that is a symlink is reported, not followed.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use cap_std_ext::cap_std::fs::Dir;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// Top-level names that ostree makes relative symlinks into `/var`, and that we resolve inside the root.
/// Only `/home` can hold managed paths (`/etc`, `/var`, `/home`), so it is the only one honoured.
const KNOWN_ROOT_SYMLINKS: &[&str] = &["home"];

/// Metadata of an existing entry (never of a symlink's target).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub dev: u64,
}

/// What is at a path, as `lstat` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Missing,
    File(Meta),
    Symlink {
        target: PathBuf,
        meta: Meta,
    },
    Dir(Meta),
    /// A socket, FIFO or device.
    Other(Meta),
}

impl Entry {
    pub fn exists(&self) -> bool {
        !matches!(self, Entry::Missing)
    }
    pub fn meta(&self) -> Option<&Meta> {
        match self {
            Entry::Missing => None,
            Entry::File(m) | Entry::Dir(m) | Entry::Other(m) | Entry::Symlink { meta: m, .. } => {
                Some(m)
            }
        }
    }
    /// A regular file or a symlink: something a backup can hold.
    pub fn is_file_like(&self) -> bool {
        matches!(self, Entry::File(_) | Entry::Symlink { .. })
    }
    pub fn is_symlink_to(&self, to: &str) -> bool {
        matches!(self, Entry::Symlink { target, .. } if target.as_os_str() == OsStr::new(to))
    }
}

/// A managed absolute path resolved inside the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The path as a MachineConfig names it (`/home/core/.ssh/x`).
    pub logical: String,
    /// Where it really is, relative to the root (`var/home/core/.ssh/x`).
    pub rel: PathBuf,
    pub entry: Entry,
    /// Ancestors that do not exist yet, relative to the root, outermost first.
    pub missing_dirs: Vec<PathBuf>,
    /// The deepest existing ancestor directory (relative to the root) and its device.
    pub existing_dir: PathBuf,
    pub existing_dev: u64,
}

/// Why a path cannot be used inside the root.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("parent directory {parent:?} is a symlink (to {target:?}); refusing to follow it")]
    SymlinkedParent { parent: String, target: String },
    #[error(
        "{parent:?} is a symlink to {target:?}, which does not stay inside the root; refusing to follow it"
    )]
    EscapingSymlink { parent: String, target: String },
    #[error("parent {parent:?} exists and is not a directory")]
    ParentNotDir { parent: String },
    #[error("{path:?} is not a clean absolute path")]
    NotAbsolute { path: String },
    #[error("cannot inspect {path:?}: {source}")]
    Io { path: String, source: io::Error },
}

/// The node's root directory.
#[derive(Debug)]
pub struct Root {
    dir: Dir,
    path: PathBuf,
}

impl Root {
    /// Open `path` (normally `/`) as the root every host operation is confined to.
    pub fn open(path: &Path) -> anyhow::Result<Root> {
        // A real (not O_PATH) descriptor: syncfs and fsync on the root itself must work.
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening root directory {}", path.display()))?;
        let dir = Dir::from_std_file(std::fs::File::from(fd));
        Ok(Root {
            dir,
            path: path.to_path_buf(),
        })
    }

    /// The root as given on the command line (for messages and inotify).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// A root-relative path for messages: `ROOT/etc/x`.
    pub fn display(&self, logical: &str) -> String {
        let base = self.path.display().to_string();
        if base == "/" {
            logical.to_string()
        } else {
            format!("{}{logical}", base.trim_end_matches('/'))
        }
    }

    /// Resolve a clean absolute `logical` path inside the root (see the module docs).
    pub fn resolve(&self, logical: &str) -> Result<Resolved, PathError> {
        let comps = split_logical(logical)?;
        let (last, ancestors) = comps
            .split_last()
            .expect("split_logical never returns empty");
        let io_err = |source| PathError::Io {
            path: logical.to_string(),
            source,
        };

        // The components to walk: the known ostree symlink is replaced by its target.
        let mut walk: Vec<OsString> = Vec::new();
        for (i, name) in ancestors.iter().enumerate() {
            if i == 0 && KNOWN_ROOT_SYMLINKS.contains(name) {
                if let Entry::Symlink { target, .. } =
                    stat_nofollow(&self.dir, OsStr::new(name)).map_err(io_err)?
                {
                    walk.extend(known_symlink_target(name, &target)?);
                    continue;
                }
            }
            walk.push(OsString::from(name));
        }

        let mut dir = self.dir.try_clone().map_err(io_err)?;
        let mut rel = PathBuf::new();
        let mut existing_dir = PathBuf::new();
        let mut existing_dev = rustix::fs::fstat(&dir)
            .map_err(|e| io_err(e.into()))?
            .st_dev;
        let mut missing_dirs = Vec::new();
        let mut missing = false;
        for name in &walk {
            rel.push(name);
            if missing {
                missing_dirs.push(rel.clone());
                continue;
            }
            match stat_nofollow(&dir, name).map_err(io_err)? {
                Entry::Missing => {
                    missing = true;
                    missing_dirs.push(rel.clone());
                }
                Entry::Dir(meta) => {
                    dir = open_dir_nofollow(&dir, name).map_err(io_err)?;
                    existing_dir = rel.clone();
                    existing_dev = meta.dev;
                }
                Entry::Symlink { target, .. } => {
                    return Err(PathError::SymlinkedParent {
                        parent: logical_prefix(logical, &rel, &walk),
                        target: target.display().to_string(),
                    });
                }
                Entry::File(_) | Entry::Other(_) => {
                    return Err(PathError::ParentNotDir {
                        parent: logical_prefix(logical, &rel, &walk),
                    });
                }
            }
        }
        rel.push(last);
        let entry = if missing {
            Entry::Missing
        } else {
            stat_nofollow(&dir, OsStr::new(last)).map_err(io_err)?
        };
        Ok(Resolved {
            logical: logical.to_string(),
            rel,
            entry,
            missing_dirs,
            existing_dir,
            existing_dev,
        })
    }

    /// Open a directory by its resolved relative path, refusing symlinks on the way (`""` is the root).
    pub fn open_dir_rel(&self, rel: &Path) -> io::Result<Dir> {
        let mut dir = self.dir.try_clone()?;
        for comp in rel.components() {
            let Component::Normal(name) = comp else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a clean relative path", rel.display()),
                ));
            };
            dir = open_dir_nofollow(&dir, name)?;
        }
        Ok(dir)
    }

    /// The directory holding `rel` and the final name.
    pub fn open_parent_rel<'p>(&self, rel: &'p Path) -> io::Result<(Dir, &'p OsStr)> {
        let name = rel.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} has no file name", rel.display()),
            )
        })?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        Ok((self.open_dir_rel(parent)?, name))
    }

    /// Read a regular file at a resolved path without following a final symlink.
    pub fn read_rel(&self, rel: &Path) -> io::Result<Vec<u8>> {
        let (dir, name) = self.open_parent_rel(rel)?;
        let fd = rustix::fs::openat(
            &dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        )?;
        let mut file = std::fs::File::from(fd);
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        Ok(buf)
    }

    /// Read a regular file by its logical path; `None` when it is missing, a symlink, or behind a
    /// symlinked parent (things that are not the root's own file are not read).
    pub fn read_optional(&self, logical: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let resolved = match self.resolve(logical) {
            Ok(r) => r,
            Err(PathError::Io { source, .. }) => {
                return Err(source).with_context(|| format!("reading {}", self.display(logical)));
            }
            Err(_) => return Ok(None),
        };
        match resolved.entry {
            Entry::File(_) => self
                .read_rel(&resolved.rel)
                .map(Some)
                .with_context(|| format!("reading {}", self.display(logical))),
            _ => Ok(None),
        }
    }

    /// Names and kinds of the entries of a directory (empty when it is missing or not a real directory).
    pub fn list_dir(&self, logical: &str) -> anyhow::Result<Vec<(String, Entry)>> {
        let resolved = match self.resolve(logical) {
            Ok(r) => r,
            Err(PathError::Io { source, .. }) => {
                return Err(source).with_context(|| format!("listing {}", self.display(logical)));
            }
            Err(_) => return Ok(Vec::new()),
        };
        if !matches!(resolved.entry, Entry::Dir(_)) {
            return Ok(Vec::new());
        }
        let dir = self
            .open_dir_rel(&resolved.rel)
            .with_context(|| format!("listing {}", self.display(logical)))?;
        let mut out = Vec::new();
        for entry in dir
            .entries()
            .with_context(|| format!("listing {}", self.display(logical)))?
        {
            let entry = entry.with_context(|| format!("listing {}", self.display(logical)))?;
            let name = entry.file_name();
            let Some(name_str) = name.to_str() else {
                continue;
            };
            let kind = stat_nofollow(&dir, &name)
                .with_context(|| format!("inspecting {}/{name_str}", self.display(logical)))?;
            out.push((name_str.to_string(), kind));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Bytes available on the filesystem holding `rel_dir` (the unprivileged figure: conservative).
    pub fn free_bytes(&self, rel_dir: &Path) -> io::Result<u64> {
        fail::fail_point!("host::free-space", |arg: Option<String>| Ok(arg
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)));
        let dir = self.open_dir_rel(rel_dir)?;
        let st = rustix::fs::fstatvfs(&dir)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }
}

/// Split a clean absolute path into its components (at least one).
fn split_logical(logical: &str) -> Result<Vec<&str>, PathError> {
    let bad = || PathError::NotAbsolute {
        path: logical.to_string(),
    };
    let rest = logical.strip_prefix('/').ok_or_else(bad)?;
    let comps: Vec<&str> = rest.split('/').collect();
    if comps
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == ".." || c.contains('\0'))
    {
        return Err(bad());
    }
    Ok(comps)
}

/// The target of `/home` (or another known symlink) as components inside the root: relative, no `..`.
fn known_symlink_target(name: &str, target: &Path) -> Result<Vec<OsString>, PathError> {
    let escaping = || PathError::EscapingSymlink {
        parent: format!("/{name}"),
        target: target.display().to_string(),
    };
    let mut out = Vec::new();
    for comp in target.components() {
        match comp {
            Component::Normal(c) => out.push(c.to_os_string()),
            Component::CurDir => {}
            _ => return Err(escaping()),
        }
    }
    if out.is_empty() {
        return Err(escaping());
    }
    Ok(out)
}

/// The logical spelling of the ancestor at `rel` for messages (`/home/core` rather than `var/home/core`).
fn logical_prefix(logical: &str, rel: &Path, walk: &[OsString]) -> String {
    let depth = rel.components().count();
    let logical_depth = logical.trim_start_matches('/').split('/').count() - 1;
    // When /home was expanded the walk is longer than the logical ancestors: report the real path.
    if walk.len() != logical_depth {
        return format!("/{}", rel.display());
    }
    let parts: Vec<&str> = logical
        .trim_start_matches('/')
        .split('/')
        .take(depth)
        .collect();
    format!("/{}", parts.join("/"))
}

/// `lstat` of one name in a directory.
pub(crate) fn stat_nofollow(dir: &Dir, name: &OsStr) -> io::Result<Entry> {
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(Entry::Missing),
        Err(e) => return Err(e.into()),
    };
    let meta = Meta {
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size as u64,
        dev: st.st_dev,
    };
    Ok(match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => Entry::File(meta),
        FileType::Directory => Entry::Dir(meta),
        FileType::Symlink => {
            let target = rustix::fs::readlinkat(dir, name, Vec::new())?;
            Entry::Symlink {
                target: PathBuf::from(OsStr::from_bytes(target.as_bytes())),
                meta,
            }
        }
        _ => Entry::Other(meta),
    })
}

/// Open a subdirectory without following a symlink.
pub(crate) fn open_dir_nofollow(dir: &Dir, name: &OsStr) -> io::Result<Dir> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(Dir::from_std_file(std::fs::File::from(fd)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root() -> (tempfile::TempDir, Root) {
        let td = tempfile::tempdir().unwrap();
        let root = Root::open(td.path()).unwrap();
        (td, root)
    }

    #[test]
    fn resolves_plain_and_missing_paths() {
        let (td, root) = root();
        std::fs::create_dir_all(td.path().join("etc/a")).unwrap();
        std::fs::write(td.path().join("etc/a/f"), b"x").unwrap();
        let r = root.resolve("/etc/a/f").unwrap();
        assert_eq!(r.rel, Path::new("etc/a/f"));
        assert!(matches!(r.entry, Entry::File(m) if m.size == 1));
        assert!(r.missing_dirs.is_empty());
        assert_eq!(r.existing_dir, Path::new("etc/a"));

        let r = root.resolve("/etc/b/c/f").unwrap();
        assert_eq!(r.entry, Entry::Missing);
        assert_eq!(
            r.missing_dirs,
            vec![PathBuf::from("etc/b"), PathBuf::from("etc/b/c")]
        );
        assert_eq!(r.existing_dir, Path::new("etc"));
    }

    #[test]
    fn refuses_symlinked_parents() {
        let (td, root) = root();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(td.path().join("etc")).unwrap();
        symlink(outside.path(), td.path().join("etc/evil")).unwrap();
        symlink("../../..", td.path().join("etc/up")).unwrap();
        std::fs::create_dir_all(td.path().join("etc/real")).unwrap();
        symlink("real", td.path().join("etc/inner")).unwrap();
        for p in ["/etc/evil/x", "/etc/up/x", "/etc/inner/x"] {
            let e = root.resolve(p).unwrap_err();
            assert!(
                matches!(&e, PathError::SymlinkedParent { parent, .. } if parent == &p[..p.len() - 2]),
                "{p}: {e}"
            );
        }
        // A final symlink is reported, not followed.
        let r = root.resolve("/etc/evil").unwrap();
        assert!(matches!(r.entry, Entry::Symlink { .. }));
        std::fs::write(td.path().join("etc/file"), b"").unwrap();
        assert!(matches!(
            root.resolve("/etc/file/x").unwrap_err(),
            PathError::ParentNotDir { .. }
        ));
        assert!(matches!(
            root.resolve("/etc/../x").unwrap_err(),
            PathError::NotAbsolute { .. }
        ));
    }

    #[test]
    fn home_symlink_resolves_inside_the_root() {
        let (td, root) = root();
        std::fs::create_dir_all(td.path().join("var/home/core")).unwrap();
        symlink("var/home", td.path().join("home")).unwrap();
        let r = root.resolve("/home/core/.ssh/k").unwrap();
        assert_eq!(r.rel, Path::new("var/home/core/.ssh/k"));
        assert_eq!(r.missing_dirs, vec![PathBuf::from("var/home/core/.ssh")]);

        // Absolute or escaping targets are refused, never followed to the host.
        for target in ["/var/home", "../var/home", "var/../../x"] {
            std::fs::remove_file(td.path().join("home")).unwrap();
            symlink(target, td.path().join("home")).unwrap();
            let e = root.resolve("/home/core/x").unwrap_err();
            assert!(
                matches!(e, PathError::EscapingSymlink { .. }),
                "{target}: {e}"
            );
        }
        // A symlink inside the target is still refused.
        std::fs::remove_file(td.path().join("home")).unwrap();
        std::fs::create_dir_all(td.path().join("var/elsewhere")).unwrap();
        symlink("elsewhere", td.path().join("var/h")).unwrap();
        symlink("var/h", td.path().join("home")).unwrap();
        assert!(matches!(
            root.resolve("/home/core/x").unwrap_err(),
            PathError::SymlinkedParent { .. }
        ));
    }
}
