//! Carry out a [`WriteSet`] on the root: the only code here that changes the node's filesystem.
//!
//! Every new file (and symlink) is first written to a temp name next to its destination and made
//! durable with one `syncfs` per filesystem; then the backups, the changes and the on-disk config are
//! renamed into place phase by phase, with a `syncfs` after each. A crash at any point leaves each
//! managed path wholly old or wholly new; the next apply removes the temp files and finishes. `syncfs`
//! instead of an fsync per file keeps the cost of durability per phase, not per file.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cap_std_ext::cap_std::fs::Dir;
use rustix::fs::{AtFlags, Mode, OFlags};

use super::failpoints::crash_point;
use super::root::{Entry, Root, open_dir_nofollow, stat_nofollow};
use super::writeset::{Action, Op, WriteSet};

/// The temp name used while writing `name`: deterministic, so a rerun after a crash finds and
/// removes what the killed apply left.
pub fn temp_name(name: &OsStr) -> OsString {
    const SUFFIX: &str = ".mcd-tmp";
    if name.len() + SUFFIX.len() < 255 {
        let mut t = OsString::from(".");
        t.push(name);
        t.push(SUFFIX);
        t
    } else {
        // FNV-1a: stable across runs and versions, unlike std's hasher.
        let hash = name.as_bytes().iter().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
        });
        OsString::from(format!(".mcd-tmp-{hash:016x}"))
    }
}

/// Run every operation of `ws`, in order. On error, temp files of the failed phase are removed and the
/// error names the path; paths already committed stay committed (a rerun converges).
pub fn execute(root: &Root, ws: &WriteSet<'_>) -> anyhow::Result<()> {
    let mut ex = Executor {
        root,
        dirs: HashMap::new(),
        by_dev: HashMap::new(),
    };
    for op in &ws.prepare {
        crash_point!("host::prepare");
        ex.direct(op)
            .with_context(|| format!("preparing {}", root.display(&op.path)))?;
    }
    // The prepare phase may have replaced directories: do not reuse handles opened before.
    ex.dirs.clear();
    // Stage every new file of every phase, one barrier, then commit phase by phase with a barrier
    // after each: backups are durable before any change lands, changes before the ODC says so.
    let phases = [&ws.backups, &ws.changes, &ws.odc];
    ex.stage_all(phases.iter().flat_map(|p| p.iter()))?;
    for ops in phases {
        if ops.is_empty() {
            continue;
        }
        for op in ops.iter() {
            crash_point!("host::commit");
            ex.commit(op)
                .with_context(|| format!("committing {}", root.display(&op.path)))?;
        }
        crash_point!("host::sync");
        ex.sync()?;
    }
    if !ws.cleanup.is_empty() {
        for op in &ws.cleanup {
            crash_point!("host::cleanup");
            ex.direct(op)
                .with_context(|| format!("removing {}", root.display(&op.path)))?;
        }
        crash_point!("host::sync");
        ex.sync()?;
    }
    Ok(())
}

struct Executor<'r> {
    root: &'r Root,
    /// Open parent directories by relative path.
    dirs: HashMap<PathBuf, Dir>,
    /// One open directory per filesystem written to, for `syncfs`.
    by_dev: HashMap<u64, Dir>,
}

impl Executor<'_> {
    /// Write every staged operation to its temp name, then make them durable. On error the temp
    /// files written so far are removed.
    fn stage_all<'o, 'a: 'o>(
        &mut self,
        ops: impl Iterator<Item = &'o Op<'a>>,
    ) -> anyhow::Result<()> {
        let mut staged: Vec<&Op<'_>> = Vec::new();
        for op in ops.filter(|op| op.action.is_staged()) {
            crash_point!("host::stage");
            if let Err(e) = self.stage(op) {
                self.unstage(&staged);
                let _ = self.unstage_one(op);
                return Err(e).with_context(|| format!("writing {}", self.root.display(&op.path)));
            }
            staged.push(op);
        }
        crash_point!("host::sync");
        if let Err(e) = self.sync() {
            self.unstage(&staged);
            return Err(e);
        }
        Ok(())
    }

    fn parent(&mut self, rel: &Path) -> io::Result<(Dir, OsString)> {
        let name = rel
            .file_name()
            .ok_or_else(|| io::Error::other(format!("{} has no file name", rel.display())))?
            .to_os_string();
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let dir = match self.dirs.get(&parent) {
            Some(d) => d.try_clone()?,
            None => {
                let d = self.root.open_dir_rel(&parent)?;
                let dev = rustix::fs::fstat(&d)?.st_dev;
                if let std::collections::hash_map::Entry::Vacant(e) = self.by_dev.entry(dev) {
                    e.insert(d.try_clone()?);
                }
                self.dirs.insert(parent, d.try_clone()?);
                d
            }
        };
        Ok((dir, name))
    }

    /// Write the new content to the temp name next to the destination.
    fn stage(&mut self, op: &Op<'_>) -> anyhow::Result<()> {
        let (dir, name) = self.parent(&op.rel)?;
        let tmp = temp_name(&name);
        remove_entry(&dir, &tmp)?;
        match &op.action {
            Action::Write {
                contents,
                mode,
                uid,
                gid,
            } => write_new(&dir, &tmp, &contents.0, *mode, *uid, *gid)?,
            Action::Copy { from, from_rel, .. } => {
                let (src_dir, src_name) = self.root.open_parent_rel(from_rel)?;
                match stat_nofollow(&src_dir, src_name)? {
                    Entry::File(meta) => {
                        let fd = rustix::fs::openat(
                            &src_dir,
                            src_name,
                            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                            Mode::empty(),
                        )?;
                        let mut bytes = Vec::with_capacity(meta.size as usize);
                        std::fs::File::from(fd).read_to_end(&mut bytes)?;
                        write_new(&dir, &tmp, &bytes, meta.mode, meta.uid, meta.gid)?;
                    }
                    Entry::Symlink { target, .. } => {
                        rustix::fs::symlinkat(target.as_os_str(), &dir, &tmp)?;
                    }
                    _ => bail!("{from} is no longer a file or symlink"),
                }
            }
            Action::Symlink { target } => rustix::fs::symlinkat(target.as_str(), &dir, &tmp)?,
            other => bail!("{other:?} is not a staged operation"),
        }
        Ok(())
    }

    fn unstage(&mut self, staged: &[&Op<'_>]) {
        for op in staged {
            let _ = self.unstage_one(op);
        }
    }

    fn unstage_one(&mut self, op: &Op<'_>) -> io::Result<()> {
        let (dir, name) = self.parent(&op.rel)?;
        remove_entry(&dir, &temp_name(&name))
    }

    fn commit(&mut self, op: &Op<'_>) -> anyhow::Result<()> {
        match &op.action {
            a if a.is_staged() => {
                let (dir, name) = self.parent(&op.rel)?;
                rustix::fs::renameat(&dir, temp_name(&name), &dir, &name)?;
            }
            Action::Remove => {
                let (dir, name) = self.parent(&op.rel)?;
                remove_entry(&dir, &name)?;
            }
            _ => self.direct(op)?,
        }
        Ok(())
    }

    /// Operations that happen in one step: directories, tree removals, cleanup removals.
    fn direct(&mut self, op: &Op<'_>) -> anyhow::Result<()> {
        // Fresh handles: these operations may create or replace directories.
        let (dir, name) = self.root.open_parent_rel(&op.rel)?;
        let dev = rustix::fs::fstat(&dir)?.st_dev;
        if let std::collections::hash_map::Entry::Vacant(e) = self.by_dev.entry(dev) {
            e.insert(dir.try_clone()?);
        }
        match &op.action {
            Action::Mkdir {
                mode,
                uid,
                gid,
                fix_existing,
            } => match stat_nofollow(&dir, name)? {
                Entry::Missing => {
                    // Created under a temp name, owned and chmod-ed, then renamed: a crash never leaves a
                    // directory with the wrong mode that a rerun would take as the admin's.
                    let tmp = temp_name(name);
                    match stat_nofollow(&dir, &tmp)? {
                        Entry::Missing => {}
                        Entry::Dir(_) => dir.remove_dir_all(&tmp)?,
                        _ => remove_entry(&dir, &tmp)?,
                    }
                    rustix::fs::mkdirat(&dir, &tmp, Mode::from_raw_mode(0o700))?;
                    set_owner_and_mode(&open_dir_nofollow(&dir, &tmp)?, *mode, *uid, *gid)?;
                    rustix::fs::renameat(&dir, &tmp, &dir, name)?;
                }
                Entry::Dir(m) => {
                    if *fix_existing && (m.mode != *mode || m.uid != *uid || m.gid != *gid) {
                        set_owner_and_mode(&open_dir_nofollow(&dir, name)?, *mode, *uid, *gid)?;
                    }
                }
                _ => bail!("{} exists and is not a directory", op.path),
            },
            Action::RemoveTree => match stat_nofollow(&dir, name)? {
                Entry::Missing => {}
                Entry::Dir(_) => dir.remove_dir_all(name)?,
                _ => remove_entry(&dir, name)?,
            },
            Action::Remove => remove_entry(&dir, name)?,
            other => bail!("{other:?} cannot run outside a staged phase"),
        }
        Ok(())
    }

    /// Make everything written so far durable: one `syncfs` per filesystem touched.
    fn sync(&mut self) -> anyhow::Result<()> {
        for dir in self.by_dev.values() {
            rustix::fs::syncfs(dir).context("syncing the filesystem")?;
        }
        Ok(())
    }
}

/// Create `name` (which must not exist) with `bytes`, then owner and mode (chown first: it clears
/// set-id bits).
fn write_new(
    dir: &Dir,
    name: &OsStr,
    bytes: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
) -> io::Result<()> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    let mut file = std::fs::File::from(fd);
    fail::fail_point!("host::enospc", |_| Err(rustix::io::Errno::NOSPC.into()));
    let half = bytes.len() / 2;
    file.write_all(&bytes[..half])?;
    crash_point!("host::mid-write");
    file.write_all(&bytes[half..])?;
    set_owner_and_mode(&file, mode, uid, gid)
}

fn set_owner_and_mode(fd: impl rustix::fd::AsFd, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
    let root = rustix::process::geteuid().is_root();
    let (euid, egid) = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    // As root always: a setgid parent may have given the new file another group.
    if root || (uid, gid) != (euid, egid) {
        rustix::fs::fchown(
            &fd,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )?;
    }
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    Ok(())
}

/// Remove a file or symlink; already gone is fine.
fn remove_entry(dir: &Dir, name: &OsStr) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_hidden_stable_and_short() {
        assert_eq!(temp_name(OsStr::new("chrony.conf")), ".chrony.conf.mcd-tmp");
        let long = "x".repeat(250);
        let t = temp_name(OsStr::new(&long));
        assert!(t.len() < 255 && t.to_str().unwrap().starts_with(".mcd-tmp-"));
        assert_eq!(t, temp_name(OsStr::new(&long)));
    }
}
