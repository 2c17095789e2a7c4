//! systemd units offline: where unit files live, what `[Install]` says, and which symlinks
//! `systemctl --root=ROOT enable` would create — so enablement works at first boot and in a sandbox root,
//! without a running systemd.

use super::root::{Entry, Root};

/// Where MachineConfig units, dropins, masks and enablement symlinks are written.
pub const UNIT_DIR: &str = crate::config::paths::SYSTEMD_UNIT_DIR;
/// Unit directories searched for a unit the config does not write, highest priority first.
pub const SEARCH_DIRS: &[&str] = &[
    UNIT_DIR,
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
];
/// Subdirectories of [`UNIT_DIR`] that hold dependency symlinks.
pub const DEPENDENCY_DIR_SUFFIXES: &[&str] = &[".wants", ".requires", ".upholds"];
/// A masked unit is a symlink to this.
pub const DEV_NULL: &str = "/dev/null";

pub fn unit_path(name: &str) -> String {
    format!("{UNIT_DIR}/{name}")
}

pub fn dropin_path(unit: &str, dropin: &str) -> String {
    format!("{UNIT_DIR}/{unit}.d/{dropin}")
}

/// The `[Install]` section of a unit file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstallInfo {
    pub wanted_by: Vec<String>,
    pub required_by: Vec<String>,
    pub upheld_by: Vec<String>,
    pub alias: Vec<String>,
    pub also: Vec<String>,
    pub default_instance: Option<String>,
}

impl InstallInfo {
    /// No `[Install]` entries: the unit is "static" and enabling it does nothing.
    pub fn is_static(&self) -> bool {
        self.wanted_by.is_empty()
            && self.required_by.is_empty()
            && self.upheld_by.is_empty()
            && self.alias.is_empty()
            && self.also.is_empty()
    }
}

/// Parse the `[Install]` section (continuation lines, comments, and an empty assignment resetting a list
/// are handled as systemd does).
pub fn parse_install(text: &str) -> InstallInfo {
    let mut info = InstallInfo::default();
    let mut in_install = false;
    let mut logical_lines = Vec::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if pending.is_empty() && (line.starts_with('#') || line.starts_with(';')) {
            continue;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        logical_lines.push(std::mem::take(&mut pending));
    }
    if !pending.is_empty() {
        logical_lines.push(pending);
    }
    for line in logical_lines {
        if line.starts_with('[') {
            in_install = line == "[Install]";
            continue;
        }
        if !in_install {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        let list = match key {
            "WantedBy" => &mut info.wanted_by,
            "RequiredBy" => &mut info.required_by,
            "UpheldBy" => &mut info.upheld_by,
            "Alias" => &mut info.alias,
            "Also" => &mut info.also,
            "DefaultInstance" => {
                info.default_instance = (!value.is_empty()).then(|| value.to_string());
                continue;
            }
            _ => continue,
        };
        if value.is_empty() {
            list.clear();
        } else {
            list.extend(value.split_whitespace().map(str::to_string));
        }
    }
    info
}

/// `foo@.service`.
pub fn is_template(name: &str) -> bool {
    name.split_once('@')
        .is_some_and(|(_, rest)| rest.starts_with('.'))
}

/// `foo@bar.service` → `foo@.service`.
pub fn template_of(name: &str) -> Option<String> {
    let (prefix, rest) = name.split_once('@')?;
    let dot = rest.rfind('.')?;
    (dot > 0).then(|| format!("{prefix}@{}", &rest[dot..]))
}

/// `foo@.service` + `bar` → `foo@bar.service`.
fn instantiate(template: &str, instance: &str) -> String {
    let (prefix, suffix) = template.split_once('@').expect("a template has an @");
    format!("{prefix}@{instance}{suffix}")
}

/// A symlink `systemctl enable` creates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Link {
    pub path: String,
    pub target: String,
}

/// The name enablement symlinks carry for `name` (an instance for a template with `DefaultInstance=`).
pub fn link_name(name: &str, info: &InstallInfo) -> Option<String> {
    if is_template(name) {
        info.default_instance
            .as_deref()
            .map(|i| instantiate(name, i))
    } else {
        Some(name.to_string())
    }
}

/// The symlinks `systemctl enable NAME` creates, for the unit file at `file_path` (`Also=` not included).
/// Entries with specifiers (`%i`) or that are not unit names are skipped.
pub fn install_links(name: &str, file_path: &str, info: &InstallInfo) -> Vec<Link> {
    let usable =
        |v: &str| !v.contains(['%', '/']) && crate::config::ignition::check_unit_name(v).is_ok();
    let mut links = Vec::new();
    if let Some(link) = link_name(name, info) {
        for (targets, suffix) in [
            (&info.wanted_by, ".wants"),
            (&info.required_by, ".requires"),
            (&info.upheld_by, ".upholds"),
        ] {
            for t in targets.iter().filter(|t| usable(t)) {
                links.push(Link {
                    path: format!("{UNIT_DIR}/{t}{suffix}/{link}"),
                    target: file_path.to_string(),
                });
            }
        }
    }
    for alias in info.alias.iter().filter(|a| usable(a) && *a != name) {
        links.push(Link {
            path: format!("{UNIT_DIR}/{alias}"),
            target: file_path.to_string(),
        });
    }
    links.sort();
    links.dedup();
    links
}

/// A unit file found in the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    pub path: String,
    pub contents: String,
}

/// Find `name` (or its template) in the root's unit directories, highest priority first. `skip_etc`
/// leaves out `/etc/systemd/system` (the file there is being removed by this update). A unit masked in
/// `/etc` is not found. Vendor aliases (symlinks to another unit in the same directory) are followed.
pub fn find_unit_file(root: &Root, name: &str, skip_etc: bool) -> anyhow::Result<Option<UnitFile>> {
    let mut candidates = vec![name.to_string()];
    candidates.extend(template_of(name));
    for dir in SEARCH_DIRS {
        if skip_etc && *dir == UNIT_DIR {
            continue;
        }
        for candidate in &candidates {
            let mut current = candidate.clone();
            for _ in 0..4 {
                let path = format!("{dir}/{current}");
                let Ok(resolved) = root.resolve(&path) else {
                    break;
                };
                match &resolved.entry {
                    Entry::File(_) => {
                        let bytes = root.read_rel(&resolved.rel)?;
                        return Ok(Some(UnitFile {
                            path,
                            contents: String::from_utf8_lossy(&bytes).into_owned(),
                        }));
                    }
                    Entry::Symlink { target, .. } if target.as_os_str() == DEV_NULL => {
                        return Ok(None);
                    }
                    Entry::Symlink { target, .. } => {
                        match target.file_name().and_then(|n| n.to_str()) {
                            Some(next) if next != current => current = next.to_string(),
                            _ => break,
                        }
                    }
                    _ => break,
                }
            }
        }
    }
    Ok(None)
}

/// Existing dependency symlinks in `/etc/systemd/system/*.{wants,requires,upholds}/` named `link`.
pub fn existing_dependency_links(root: &Root, link: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for (dir_name, entry) in root.list_dir(UNIT_DIR)? {
        if !matches!(entry, Entry::Dir(_))
            || !DEPENDENCY_DIR_SUFFIXES
                .iter()
                .any(|s| dir_name.ends_with(s))
        {
            continue;
        }
        let path = format!("{UNIT_DIR}/{dir_name}/{link}");
        if root
            .resolve(&path)
            .is_ok_and(|r| matches!(r.entry, Entry::Symlink { .. }))
        {
            out.push(path);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_section() {
        let info = parse_install(
            "[Unit]\nWantedBy=not-this.target\n[Service]\nExecStart=/bin/true \\\n  --flag\n\n[Install]\n# c\nWantedBy=multi-user.target \\\n   graphical.target\nRequiredBy=a.target\nRequiredBy=\nRequiredBy=b.target\nAlias=foo-alias.service\nAlso=helper.socket\nUpheldBy=c.target\n",
        );
        assert_eq!(
            info.wanted_by,
            vec!["multi-user.target", "graphical.target"]
        );
        assert_eq!(info.required_by, vec!["b.target"]);
        assert_eq!(info.upheld_by, vec!["c.target"]);
        assert_eq!(info.alias, vec!["foo-alias.service"]);
        assert_eq!(info.also, vec!["helper.socket"]);
        assert!(parse_install("[Unit]\n[Service]\n").is_static());
    }

    #[test]
    fn links_like_systemctl_enable() {
        let info = parse_install(
            "[Install]\nWantedBy=multi-user.target\nRequiredBy=b.target\nAlias=x-alias.service\nWantedBy=%i.target\n",
        );
        let links = install_links("x.service", "/usr/lib/systemd/system/x.service", &info);
        let paths: Vec<&str> = links.iter().map(|l| l.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "/etc/systemd/system/b.target.requires/x.service",
                "/etc/systemd/system/multi-user.target.wants/x.service",
                "/etc/systemd/system/x-alias.service",
            ]
        );
        assert!(
            links
                .iter()
                .all(|l| l.target == "/usr/lib/systemd/system/x.service")
        );
    }

    #[test]
    fn templates() {
        assert!(is_template("getty@.service"));
        assert!(!is_template("getty@tty1.service"));
        assert_eq!(
            template_of("getty@tty1.service").as_deref(),
            Some("getty@.service")
        );
        assert_eq!(template_of("plain.service"), None);
        let info = parse_install("[Install]\nWantedBy=getty.target\nDefaultInstance=tty1\n");
        let links = install_links(
            "getty@.service",
            "/usr/lib/systemd/system/getty@.service",
            &info,
        );
        assert_eq!(
            links[0].path,
            "/etc/systemd/system/getty.target.wants/getty@tty1.service"
        );
        let links = install_links(
            "getty@tty2.service",
            "/usr/lib/systemd/system/getty@.service",
            &info,
        );
        assert_eq!(
            links[0].path,
            "/etc/systemd/system/getty.target.wants/getty@tty2.service"
        );
        let no_default = parse_install("[Install]\nWantedBy=getty.target\n");
        assert!(install_links("getty@.service", "/x", &no_default).is_empty());
    }
}
