//! core's SSH keys and password hash in the write-set.

use super::*;

impl<'a> Builder<'_, 'a> {
    /// core's keys in `~core/.ssh/authorized_keys.d/ignition` (§6): 0600, directories 0700, owned by core.
    pub(super) fn ssh_keys(&mut self) -> Result<(), BuildError> {
        let users = &self.inputs.desired.ignition.users;
        let core_index = users.iter().position(|u| u.name == "core");
        let keys = core_index
            .map(|i| users[i].ssh_authorized_keys.clone())
            .unwrap_or_default();
        if keys.is_empty() && !self.inputs.ssh_keys_changed {
            return Ok(());
        }
        let field = match core_index {
            Some(i) => format!("spec.config.passwd.users[{i}].sshAuthorizedKeys"),
            None => "spec.config.passwd.users".to_string(),
        };
        let Some(core) = self.accounts.user("core").cloned() else {
            // One wording, said once: `host::apply` logs the write-set's warnings.
            self.ws.warnings.push(
                "core's SSH keys were not written: there is no user core in the node's /etc/passwd"
                    .into(),
            );
            return Ok(());
        };
        let (uid, gid) = (core.uid, core.gid);
        let private_dir = |fix_existing| Action::Mkdir {
            mode: 0o700,
            uid,
            gid,
            fix_existing,
        };
        let home = self.resolve("/home/core", Source::Desired, &field)?;
        match &home.entry {
            Entry::Missing => {
                self.mkdirs(&home);
                self.planned_dirs.insert(home.rel.clone());
                self.push(
                    Phase::Prepare,
                    "/home/core",
                    &home,
                    private_dir(false),
                    Reason::SshDir,
                );
            }
            Entry::Dir(_) => {}
            _ => {
                return Err(in_the_way(
                    Source::Desired,
                    &field,
                    "\"/home/core\" exists on the node and is not a directory",
                ));
            }
        }
        for dir in ["/home/core/.ssh", "/home/core/.ssh/authorized_keys.d"] {
            let r = self.resolve(dir, Source::Desired, &field)?;
            let replace = match &r.entry {
                Entry::Missing => false,
                Entry::Dir(m) => m.uid != uid,
                _ => true,
            };
            if replace {
                // Not core's (OCPBUGS-11832): start over rather than write keys into someone else's dir.
                self.push(Phase::Prepare, dir, &r, Action::RemoveTree, Reason::SshDir);
                self.removed_trees.push(r.rel.clone());
            }
            let ok =
                matches!(&r.entry, Entry::Dir(m) if !replace && m.mode == 0o700 && m.gid == gid);
            if !ok {
                self.planned_dirs.insert(r.rel.clone());
                self.push(Phase::Prepare, dir, &r, private_dir(true), Reason::SshDir);
            }
        }
        let r = self.resolve(CORE_SSH_KEYS, Source::Desired, &field)?;
        if matches!(r.entry, Entry::Dir(_) | Entry::Other(_)) {
            return Err(in_the_way(
                Source::Desired,
                &field,
                format!("{CORE_SSH_KEYS:?} exists on the node and is not a regular file"),
            ));
        }
        let contents = authorized_keys(&keys);
        if !self.same_file(&r, &contents, 0o600, uid, gid)? {
            let action = Action::Write {
                contents: Contents(Cow::Owned(contents)),
                mode: 0o600,
                uid,
                gid,
            };
            self.push(Phase::Changes, CORE_SSH_KEYS, &r, action, Reason::SshKeys);
        }
        Ok(())
    }

    /// core's password hash in the root's `/etc/shadow` (a removed hash locks the password: `*`).
    pub(super) fn password(&mut self) -> Result<(), BuildError> {
        let hash = self
            .inputs
            .desired
            .ignition
            .core_user()
            .and_then(|u| u.password_hash.as_deref());
        let hash = match hash {
            Some(h) => h,
            None if self.inputs.password_changed => "*",
            None => return Ok(()),
        };
        if self.accounts.user("core").is_none() {
            self.ws.warnings.push(
                "core's password was not set: there is no user core in the node's /etc/passwd"
                    .into(),
            );
            return Ok(());
        }
        let r = self.resolve(SHADOW, Source::Desired, "spec.config.passwd.users")?;
        let Entry::File(meta) = r.entry else {
            return Err(BuildError::Failed(anyhow::anyhow!(
                "{} is not a regular file; cannot set core's password",
                self.root.display(SHADOW)
            )));
        };
        let shadow = accounts::read_shadow(self.root)?.unwrap_or_default();
        if accounts::shadow_password(&shadow, "core") == Some(hash) {
            return Ok(());
        }
        let updated = accounts::shadow_with_password(&shadow, "core", hash);
        let action = Action::Write {
            contents: Contents(Cow::Owned(updated.into_bytes())),
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
        };
        self.push(Phase::Changes, SHADOW, &r, action, Reason::Password);
        Ok(())
    }
}
