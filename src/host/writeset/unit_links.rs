//! Unit enablement in the write-set: the links `systemctl --root enable|disable` would make or remove.

use super::*;

impl<'a> Builder<'_, 'a> {
    /// Enable and disable units as `systemctl --root enable|disable` would.
    pub(super) fn enablement(&mut self) -> Result<(), BuildError> {
        let (current, desired) = (self.inputs.current, self.inputs.desired);
        for (i, u) in desired.ignition.units.iter().enumerate() {
            if u.mask {
                continue;
            }
            let field = format!("spec.config.systemd.units[{i}].enabled");
            let was_enabled = current
                .ignition
                .unit(&u.name)
                .is_some_and(|c| c.enabled == Some(true) && !c.mask);
            match u.enabled {
                Some(true) => self.enable(&u.name, &field)?,
                Some(false) => self.disable(&u.name, &field)?,
                // The config stopped managing enablement: undo what the previous one did.
                None if was_enabled => self.disable(&u.name, &field)?,
                None => {}
            }
        }
        for u in &current.ignition.units {
            if desired.ignition.unit(&u.name).is_none() && u.enabled == Some(true) && !u.mask {
                self.disable(&u.name, "spec.config.systemd.units")?;
            }
        }
        Ok(())
    }

    /// The unit file `name` will have after this apply, for its `[Install]` section.
    pub(super) fn unit_file(&mut self, name: &str) -> Result<Option<UnitFile>, BuildError> {
        let desired = self.inputs.desired.ignition.unit(name);
        if let Some(c) = desired
            .filter(|u| !u.mask)
            .and_then(|u| u.contents.as_ref())
        {
            return Ok(Some(UnitFile {
                path: units::unit_path(name),
                contents: c.clone(),
            }));
        }
        let desired_writes = desired.is_some_and(|u| u.mask || u.contents.is_some());
        let current_wrote = self
            .inputs
            .current
            .ignition
            .unit(name)
            .is_some_and(|u| u.mask || u.contents.is_some());
        Ok(units::find_unit_file(
            self.root,
            name,
            current_wrote && !desired_writes,
        )?)
    }

    pub(super) fn enable(&mut self, name: &str, field: &str) -> Result<(), BuildError> {
        if !self.done_units.insert(format!("enable {name}")) {
            return Ok(());
        }
        let Some(file) = self.unit_file(name)? else {
            self.ws.warnings.push(format!(
                "unit {name} is to be enabled but no unit file for it exists on the node; not enabling it"
            ));
            return Ok(());
        };
        let info = units::parse_install(&file.contents);
        let links = units::install_links(name, &file.path, &info);
        if let Some(link) = units::link_name(name, &info) {
            // Re-enable: dependency links the new [Install] section no longer asks for go.
            for stale in units::existing_dependency_links(self.root, &link)? {
                if !links.iter().any(|l| l.path == stale) {
                    self.remove_link(&stale, field)?;
                }
            }
        }
        for link in links {
            let r = self.resolve(&link.path, Source::Desired, field)?;
            match &r.entry {
                Entry::Missing => {}
                Entry::Symlink { target, .. } if target.as_os_str() == link.target.as_str() => {
                    continue;
                }
                Entry::Symlink { .. } => {}
                _ => {
                    return Err(in_the_way(
                        Source::Desired,
                        field,
                        format!(
                            "cannot enable {name}: {:?} exists on the node and is not a symlink",
                            link.path
                        ),
                    ));
                }
            }
            if self.planned_links.insert(link.path.clone()) {
                self.mkdirs(&r);
                let action = Action::Symlink {
                    target: link.target.clone(),
                };
                self.push(Phase::Changes, &link.path, &r, action, Reason::Enable);
            }
        }
        for also in info.also {
            self.enable(&also, field)?;
        }
        Ok(())
    }

    pub(super) fn disable(&mut self, name: &str, field: &str) -> Result<(), BuildError> {
        if !self.done_units.insert(format!("disable {name}")) {
            return Ok(());
        }
        let info = match self.unit_file(name)? {
            Some(f) => units::parse_install(&f.contents),
            None => match self
                .inputs
                .current
                .ignition
                .unit(name)
                .and_then(|u| u.contents.as_ref())
            {
                Some(c) => units::parse_install(c),
                None => units::InstallInfo::default(),
            },
        };
        let mut names = vec![name.to_string()];
        names.extend(units::link_name(name, &info).filter(|l| l != name));
        for link in names {
            for path in units::existing_dependency_links(self.root, &link)? {
                self.remove_link(&path, field)?;
            }
        }
        for alias in info.alias.iter().filter(|a| *a != name) {
            let path = units::unit_path(alias);
            let is_link = self
                .root
                .resolve(&path)
                .is_ok_and(|r| matches!(r.entry, Entry::Symlink { .. }));
            if is_link {
                self.remove_link(&path, field)?;
            }
        }
        for also in info.also {
            self.disable(&also, field)?;
        }
        Ok(())
    }

    pub(super) fn remove_link(&mut self, path: &str, field: &str) -> Result<(), BuildError> {
        if self.planned_links.insert(path.to_string()) {
            let r = self.resolve(path, Source::Desired, field)?;
            self.push(Phase::Changes, path, &r, Action::Remove, Reason::Disable);
        }
        Ok(())
    }
}
