//! On-disk validation: does the root hold what a MachineConfig says? Every mismatch is reported, not just
//! the first (`mco-protocol.md` §7). Contents are compared, never printed.

use std::fmt;

use serde::Serialize;

use super::accounts::Accounts;
use super::root::{Entry, PathError, Root};
use super::units::{self, DEV_NULL};
use super::writeset::authorized_keys;
use crate::config::MachineConfig;
use crate::config::paths::{CORE_SSH_KEYS, FORCEFILE};

/// Files that are written outside the MachineConfig flow (the cert writer, the pull-secret merger) and
/// are therefore not validated (`getFilesToIgnore`, §4.2).
pub use crate::config::paths::VALIDATION_IGNORED as IGNORED_FILES;

/// What kind of mismatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MismatchKind {
    Missing,
    Content,
    Mode,
    NotAFile,
    ShouldNotExist,
    NotMasked,
    NotEnabled,
    NotDisabled,
    UnitNotFound,
    Unreachable,
}

/// One difference between the config and the disk.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Mismatch {
    pub kind: MismatchKind,
    /// The path concerned (for units, the unit file path).
    pub path: String,
    /// One sentence, MCD-style: `content mismatch for file "/etc/x"`.
    pub message: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Compare the root with `mc`: files (content, mode), units (content, mask, enablement), dropins and
/// core's SSH keys. Errors are I/O failures; differences are in the returned list.
pub fn validate(root: &Root, mc: &MachineConfig) -> anyhow::Result<Vec<Mismatch>> {
    let mut v = Validator {
        root,
        out: Vec::new(),
    };
    for f in &mc.ignition.files {
        if IGNORED_FILES.contains(&f.path.as_str()) || f.path == FORCEFILE {
            continue;
        }
        let label = format!("file {:?}", f.path);
        v.file(&f.path, &label, &f.contents, Some(f.mode))?;
    }
    for u in &mc.ignition.units {
        let path = units::unit_path(&u.name);
        let label = format!("unit {:?}", u.name);
        if u.mask {
            let r = v.resolve(&path, &label)?;
            if r.is_some_and(|r| !r.entry.is_symlink_to(DEV_NULL)) {
                v.push(
                    MismatchKind::NotMasked,
                    &path,
                    format!("unit {:?} is not masked", u.name),
                );
            }
        } else if let Some(contents) = &u.contents {
            v.file(&path, &label, contents.as_bytes(), None)?;
        }
        for d in &u.dropins {
            let dpath = units::dropin_path(&u.name, &d.name);
            let dlabel = format!("dropin {:?} of unit {:?}", d.name, u.name);
            match &d.contents {
                Some(c) => v.file(&dpath, &dlabel, c.as_bytes(), None)?,
                None => {
                    if v.resolve(&dpath, &dlabel)?
                        .is_some_and(|r| r.entry.exists())
                    {
                        v.push(
                            MismatchKind::ShouldNotExist,
                            &dpath,
                            format!("{dlabel} should not exist"),
                        );
                    }
                }
            }
        }
        if let Some(enabled) = u.enabled.filter(|_| !u.mask) {
            v.enablement(&u.name, u.contents.as_deref(), enabled)?;
        }
    }
    let core = mc
        .ignition
        .core_user()
        .filter(|u| !u.ssh_authorized_keys.is_empty());
    let core = match core {
        Some(u) if Accounts::load(root)?.user("core").is_some() => Some(u),
        _ => None,
    };
    if let Some(core) = core {
        let label = format!("file {CORE_SSH_KEYS:?}");
        v.file(
            CORE_SSH_KEYS,
            &label,
            &authorized_keys(&core.ssh_authorized_keys),
            Some(0o600),
        )?;
    }
    Ok(v.out)
}

/// What [`validate`] looks at for `mc`, and what it cannot check on `root` (one sentence each), so a
/// report never says "matches" about something it did not look at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Coverage {
    pub files: usize,
    pub units: usize,
    pub dropins: usize,
    pub ssh_keys: bool,
    pub not_checked: Vec<String>,
}

/// The [`Coverage`] of validating `mc` on `root`.
pub fn coverage(root: &Root, mc: &MachineConfig) -> anyhow::Result<Coverage> {
    let files = mc
        .ignition
        .files
        .iter()
        .filter(|f| !IGNORED_FILES.contains(&f.path.as_str()) && f.path != FORCEFILE)
        .count();
    let units = mc
        .ignition
        .units
        .iter()
        .filter(|u| u.mask || u.contents.is_some() || u.enabled.is_some())
        .count();
    let dropins = mc.ignition.units.iter().map(|u| u.dropins.len()).sum();
    let wants_keys = mc
        .ignition
        .core_user()
        .is_some_and(|u| !u.ssh_authorized_keys.is_empty());
    let has_core = Accounts::load(root)?.user("core").is_some();
    let mut not_checked = Vec::new();
    if wants_keys && !has_core {
        not_checked
            .push("core's SSH keys: there is no user core in the node's /etc/passwd".to_string());
    }
    Ok(Coverage {
        files,
        units,
        dropins,
        ssh_keys: wants_keys && has_core,
        not_checked,
    })
}

struct Validator<'r> {
    root: &'r Root,
    out: Vec<Mismatch>,
}

impl Validator<'_> {
    fn push(&mut self, kind: MismatchKind, path: &str, message: String) {
        self.out.push(Mismatch {
            kind,
            path: path.to_string(),
            message,
        });
    }

    /// Resolve, turning a path that cannot be reached safely into a mismatch (`None`).
    fn resolve(
        &mut self,
        path: &str,
        label: &str,
    ) -> anyhow::Result<Option<super::root::Resolved>> {
        match self.root.resolve(path) {
            Ok(r) => Ok(Some(r)),
            Err(PathError::Io { .. }) => {
                // An unreadable directory: report it rather than stop checking the rest.
                self.push(
                    MismatchKind::Unreachable,
                    path,
                    format!("cannot check {label}: a parent directory cannot be read"),
                );
                Ok(None)
            }
            Err(e) => {
                self.push(
                    MismatchKind::Unreachable,
                    path,
                    format!("cannot check {label}: {e}"),
                );
                Ok(None)
            }
        }
    }

    fn file(
        &mut self,
        path: &str,
        label: &str,
        contents: &[u8],
        mode: Option<u32>,
    ) -> anyhow::Result<()> {
        let Some(r) = self.resolve(path, label)? else {
            return Ok(());
        };
        let meta = match &r.entry {
            Entry::File(m) => *m,
            Entry::Missing => {
                self.push(
                    MismatchKind::Missing,
                    path,
                    format!("{label} does not exist"),
                );
                return Ok(());
            }
            Entry::Symlink { target, .. } if target.as_os_str() == DEV_NULL => {
                self.push(
                    MismatchKind::NotAFile,
                    path,
                    format!("{label} is masked (a symlink to /dev/null), expected a regular file"),
                );
                return Ok(());
            }
            _ => {
                self.push(
                    MismatchKind::NotAFile,
                    path,
                    format!("{label} is not a regular file"),
                );
                return Ok(());
            }
        };
        let same = meta.size == contents.len() as u64
            && self
                .root
                .read_rel(&r.rel)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", self.root.display(path)))?
                == contents;
        if !same {
            self.push(
                MismatchKind::Content,
                path,
                format!("content mismatch for {label}"),
            );
        }
        if let Some(mode) = mode.filter(|m| *m != meta.mode) {
            self.push(
                MismatchKind::Mode,
                path,
                format!(
                    "mode mismatch for {label}: expected {mode:04o}, found {:04o}",
                    meta.mode
                ),
            );
        }
        Ok(())
    }

    /// `systemctl is-enabled`, offline: for enabled, every `[Install]` link must point at the unit; for
    /// disabled, none may exist.
    fn enablement(
        &mut self,
        name: &str,
        contents: Option<&str>,
        enabled: bool,
    ) -> anyhow::Result<()> {
        let path = units::unit_path(name);
        let file = match contents {
            Some(c) => Some(units::UnitFile {
                path: path.clone(),
                contents: c.to_string(),
            }),
            None => units::find_unit_file(self.root, name, false)?,
        };
        let Some(file) = file else {
            if enabled {
                self.push(
                    MismatchKind::UnitNotFound,
                    &path,
                    format!("unit {name:?} not enabled: no unit file found (or it is masked)"),
                );
            }
            return Ok(());
        };
        let info = units::parse_install(&file.contents);
        let links = units::install_links(name, &file.path, &info);
        if enabled {
            let missing = links.iter().any(|l| match self.root.resolve(&l.path) {
                Ok(r) => !matches!(&r.entry, Entry::Symlink { target, .. }
                    if target.file_name() == std::path::Path::new(&l.target).file_name()),
                Err(_) => true,
            });
            if missing {
                self.push(
                    MismatchKind::NotEnabled,
                    &path,
                    format!("unit {name:?} not enabled"),
                );
            }
        } else {
            let mut present = false;
            if let Some(link) = units::link_name(name, &info) {
                present |= !units::existing_dependency_links(self.root, &link)?.is_empty();
            }
            present |= links
                .iter()
                .filter(|l| !l.path.contains(".wants/") && !l.path.contains(".requires/"))
                .any(|l| {
                    self.root
                        .resolve(&l.path)
                        .is_ok_and(|r| matches!(r.entry, Entry::Symlink { .. }))
                });
            if present {
                self.push(
                    MismatchKind::NotDisabled,
                    &path,
                    format!("unit {name:?} enabled but should be disabled"),
                );
            }
        }
        Ok(())
    }
}
