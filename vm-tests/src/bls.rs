//! Boot Loader Specification entries, as ostree writes them to `/boot/loader/entries/*.conf`, and the
//! choice a bootloader makes among them. The harness is the bootloader: it boots the entry with the
//! highest `version` (what grub's blscfg and systemd-boot do), or the next one for a rollback boot.

/// One `/boot/loader/entries/*.conf` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    pub file_name: String,
    pub title: Option<String>,
    pub version: u64,
    /// Kernel path as written (relative to the boot partition, i.e. to `/boot` here).
    pub linux: String,
    pub initrd: String,
    pub options: String,
}

/// Why an entry or a choice of entries is unusable.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BlsError {
    #[error("boot entry {file} has no `{key}` line")]
    MissingKey { file: String, key: &'static str },
    #[error("boot entry {file} has version {value:?}, not a number")]
    BadVersion { file: String, value: String },
    #[error("the disk has no boot entries (is this an ostree-deployed image?)")]
    NoEntries,
    #[error("two boot entries share version {0}: the boot order is ambiguous")]
    DuplicateVersion(u64),
    #[error("there is no boot entry to select for {0:?}")]
    NotFound(EntrySelection),
}

/// Which entry to boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EntrySelection {
    /// The highest version: the default, as a bootloader picks it.
    #[default]
    Default,
    /// The second highest version: what a user picks in the menu to roll back.
    Rollback,
    /// The entry with exactly this version.
    Version(u64),
}

/// Parse one entry file. Unknown keys are ignored, as bootloaders do.
pub fn parse_entry(file_name: &str, text: &str) -> Result<BootEntry, BlsError> {
    let mut title = None;
    let mut version = None;
    let mut linux = None;
    let mut initrd = None;
    let mut options = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once(char::is_whitespace) {
            Some((k, v)) => (k, v.trim()),
            None => (line, ""),
        };
        let slot = match key {
            "title" => &mut title,
            "version" => &mut version,
            "linux" => &mut linux,
            "initrd" => &mut initrd,
            "options" => &mut options,
            _ => continue,
        };
        *slot = Some(value.to_string());
    }
    let need = |v: Option<String>, key: &'static str| {
        v.ok_or(BlsError::MissingKey {
            file: file_name.to_string(),
            key,
        })
    };
    let version_text = need(version, "version")?;
    let version = version_text
        .parse::<u64>()
        .map_err(|_| BlsError::BadVersion {
            file: file_name.to_string(),
            value: version_text.clone(),
        })?;
    Ok(BootEntry {
        file_name: file_name.to_string(),
        title,
        version,
        linux: need(linux, "linux")?,
        initrd: need(initrd, "initrd")?,
        options: need(options, "options")?,
    })
}

/// Pick the entry to boot.
pub fn select(entries: &[BootEntry], selection: EntrySelection) -> Result<&BootEntry, BlsError> {
    if entries.is_empty() {
        return Err(BlsError::NoEntries);
    }
    let mut sorted: Vec<&BootEntry> = entries.iter().collect();
    sorted.sort_by_key(|e| std::cmp::Reverse(e.version));
    if let Some(pair) = sorted.windows(2).find(|w| w[0].version == w[1].version) {
        return Err(BlsError::DuplicateVersion(pair[0].version));
    }
    let found = match selection {
        EntrySelection::Default => sorted.first(),
        EntrySelection::Rollback => sorted.get(1),
        EntrySelection::Version(v) => sorted.iter().find(|e| e.version == v),
    };
    found.copied().ok_or(BlsError::NotFound(selection))
}

impl BootEntry {
    /// The `ostree=` kernel argument: `/ostree/boot.N/<os>/<bootcsum>/<serial>`.
    pub fn ostree_target(&self) -> Option<&str> {
        self.options
            .split_whitespace()
            .find_map(|arg| arg.strip_prefix("ostree="))
    }

    /// Where the file named by a `linux`/`initrd` line is on the root filesystem. `/boot` is a plain
    /// directory of the root filesystem in these images, so entry paths are relative to `/boot`.
    pub fn path_on_root(entry_path: &str) -> String {
        if entry_path.starts_with("/boot/") {
            entry_path.to_string()
        } else {
            format!("/boot/{}", entry_path.trim_start_matches('/'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: &str = "title Debian GNU/Linux 12 (bookworm) (ostree:0)\n\
        version 2\n\
        options root=/dev/vda rw console=ttyS0 ostree=/ostree/boot.0/debian/abc/0\n\
        linux /ostree/debian-abc/vmlinuz-6.1.0-56-amd64\n\
        initrd /ostree/debian-abc/initramfs-6.1.0-56-amd64.img\n";

    fn entry(file: &str, version: u64) -> BootEntry {
        parse_entry(
            file,
            &NEW.replace("version 2", &format!("version {version}")),
        )
        .unwrap()
    }

    #[test]
    fn parses_an_ostree_entry() {
        let e = parse_entry("ostree-2-debian.conf", NEW).unwrap();
        assert_eq!(e.version, 2);
        assert_eq!(
            e.title.as_deref(),
            Some("Debian GNU/Linux 12 (bookworm) (ostree:0)")
        );
        assert_eq!(e.linux, "/ostree/debian-abc/vmlinuz-6.1.0-56-amd64");
        assert_eq!(e.ostree_target(), Some("/ostree/boot.0/debian/abc/0"));
        assert_eq!(
            BootEntry::path_on_root(&e.initrd),
            "/boot/ostree/debian-abc/initramfs-6.1.0-56-amd64.img"
        );
        assert_eq!(BootEntry::path_on_root("/boot/x"), "/boot/x");
    }

    #[test]
    fn broken_entries_are_clear_errors() {
        let no_linux = NEW.replace("linux ", "# linux ");
        assert_eq!(
            parse_entry("a.conf", &no_linux),
            Err(BlsError::MissingKey {
                file: "a.conf".into(),
                key: "linux"
            })
        );
        let bad_version = NEW.replace("version 2", "version two");
        assert_eq!(
            parse_entry("b.conf", &bad_version).unwrap_err().to_string(),
            "boot entry b.conf has version \"two\", not a number"
        );
    }

    #[test]
    fn default_is_highest_version_and_rollback_the_next() {
        let entries = vec![
            entry("ostree-1.conf", 1),
            entry("ostree-3.conf", 3),
            entry("ostree-2.conf", 2),
        ];
        assert_eq!(
            select(&entries, EntrySelection::Default).unwrap().version,
            3
        );
        assert_eq!(
            select(&entries, EntrySelection::Rollback).unwrap().version,
            2
        );
        assert_eq!(
            select(&entries, EntrySelection::Version(1))
                .unwrap()
                .file_name,
            "ostree-1.conf"
        );
    }

    #[test]
    fn impossible_choices_are_refused() {
        assert_eq!(
            select(&[], EntrySelection::Default),
            Err(BlsError::NoEntries)
        );
        let one = vec![entry("ostree-1.conf", 1)];
        assert_eq!(
            select(&one, EntrySelection::Rollback),
            Err(BlsError::NotFound(EntrySelection::Rollback))
        );
        let dup = vec![entry("a.conf", 1), entry("b.conf", 1)];
        assert_eq!(
            select(&dup, EntrySelection::Default),
            Err(BlsError::DuplicateVersion(1))
        );
    }
}
