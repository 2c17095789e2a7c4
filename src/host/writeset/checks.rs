//! What the write-set checks before anything is written: a killed apply's temp files, privileges, space.

use super::*;
use crate::host::{exec, root};

impl<'a> Builder<'_, 'a> {
    /// Temp files a killed apply left next to any path this one looked at.
    pub(super) fn temp_leftovers(&mut self) -> Result<(), BuildError> {
        let mut leftovers = Vec::new();
        let mut resolved: Vec<&Resolved> = self.resolved.values().collect();
        resolved.sort_by(|a, b| a.rel.cmp(&b.rel));
        for r in resolved {
            if !r.missing_dirs.is_empty() {
                continue;
            }
            let Some(name) = r.rel.file_name() else {
                continue;
            };
            let temp_rel = r.rel.with_file_name(exec::temp_name(name));
            let dir = self
                .root
                .open_dir_rel(r.rel.parent().unwrap_or(Path::new("")))
                .map_err(|e| BuildError::Failed(e.into()))?;
            let entry = root::stat_nofollow(&dir, temp_rel.file_name().expect("has a name"))
                .map_err(|e| BuildError::Failed(e.into()))?;
            if entry.is_file_like() {
                leftovers.push(Op {
                    path: format!("/{}", temp_rel.display()),
                    rel: temp_rel,
                    action: Action::Remove,
                    reason: Reason::TempLeftover,
                    dev: r.existing_dev,
                });
            }
        }
        leftovers.extend(std::mem::take(&mut self.ws.prepare));
        self.ws.prepare = leftovers;
        Ok(())
    }

    /// Without root privileges only our own uid/gid can be set: fail before writing anything.
    pub(super) fn check_privileges(&self) -> Result<(), BuildError> {
        let (euid, egid) = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        if euid == 0 {
            return Ok(());
        }
        for op in self.ws.ops() {
            let owner = match &op.action {
                Action::Write { uid, gid, .. } | Action::Mkdir { uid, gid, .. } => {
                    Some((*uid, *gid))
                }
                _ => None,
            };
            if let Some((uid, gid)) = owner.filter(|o| *o != (euid, egid)) {
                return Err(BuildError::Failed(anyhow::anyhow!(
                    "{} must be owned by {uid}:{gid}, which needs root privileges (running as uid {euid}); nothing was written",
                    self.root.display(&op.path)
                )));
            }
        }
        Ok(())
    }

    /// Enough space for every staged byte on each filesystem, checked before the first write.
    pub(super) fn check_space(&self) -> Result<(), BuildError> {
        const OVERHEAD: u64 = 4096;
        let mut need: BTreeMap<u64, (u64, &Op<'_>)> = BTreeMap::new();
        for op in self.ws.ops() {
            let bytes = match &op.action {
                Action::Write { contents, .. } => contents.0.len() as u64,
                Action::Copy { size, .. } => *size,
                Action::Remove | Action::RemoveTree => continue,
                _ => 0,
            };
            let e = need.entry(op.dev).or_insert((0, op));
            e.0 += bytes + OVERHEAD;
        }
        for (need, op) in need.values() {
            let dir = self
                .resolved
                .values()
                .find(|r| r.existing_dev == op.dev)
                .map(|r| r.existing_dir.clone())
                .unwrap_or_default();
            let free = self
                .root
                .free_bytes(&dir)
                .map_err(|e| BuildError::Failed(e.into()))?;
            if *need > free {
                return Err(BuildError::Failed(anyhow::anyhow!(
                    "not enough free space: the update writes {need} bytes to the filesystem holding {} but only {free} are available; nothing was written",
                    self.root.display(&format!("/{}", dir.display()))
                )));
            }
        }
        Ok(())
    }
}
