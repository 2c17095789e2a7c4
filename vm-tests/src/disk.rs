//! Reading an ext4 disk image from the host with `debugfs`: no mount, no loop device.
//!
//! Like a real bootloader, debugfs does not replay the ext4 journal, so after a power cut the harness
//! sees what grub would see.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::bls::{self, BootEntry};
use crate::cmd::CommandExt;

/// An ext4 image file, read-only.
#[derive(Debug, Clone)]
pub struct Disk {
    image: PathBuf,
}

/// stderr lines debugfs prints on every run.
fn is_noise(line: &str) -> bool {
    line.trim().is_empty() || line.starts_with("debugfs ")
}

impl Disk {
    pub fn open(image: impl Into<PathBuf>) -> Result<Self> {
        let image = image.into();
        if !image.is_file() {
            bail!("disk image {} does not exist", image.display());
        }
        Ok(Self { image })
    }

    pub fn path(&self) -> &Path {
        &self.image
    }

    /// Run one debugfs request; debugfs exits 0 even when a path is missing, so any stderr line
    /// other than its banner is an error.
    fn request(&self, request: &str) -> Result<Vec<u8>> {
        let output = Command::new("debugfs")
            .arg("-R")
            .arg(request)
            .arg(&self.image)
            .run_checked()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let problems: Vec<&str> = stderr.lines().filter(|l| !is_noise(l)).collect();
        if !problems.is_empty() {
            bail!(
                "debugfs `{request}` on {}: {}",
                self.image.display(),
                problems.join("; ")
            );
        }
        Ok(output.stdout)
    }

    /// Names in a directory (without `.` and `..`).
    pub fn list_dir(&self, path: &str) -> Result<Vec<String>> {
        let out = self.request(&format!("ls -p {path}"))?;
        // `ls -p` prints `/inode/mode/uid/gid/name/size/` per entry.
        let names = String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|line| {
                line.trim()
                    .strip_prefix('/')?
                    .split('/')
                    .nth(4)
                    .map(str::to_string)
            })
            .filter(|name| !name.is_empty() && name != "." && name != "..")
            .collect();
        Ok(names)
    }

    /// A small text file.
    pub fn read_to_string(&self, path: &str) -> Result<String> {
        let out = self.request(&format!("cat {path}"))?;
        String::from_utf8(out).with_context(|| format!("{path} in the disk image is not UTF-8"))
    }

    /// Copy a file out of the image (kernel, initramfs).
    pub fn dump(&self, path: &str, dest: &Path) -> Result<()> {
        let _ = std::fs::remove_file(dest);
        self.request(&format!("dump {path} {}", dest.display()))?;
        let size = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
        if size == 0 {
            bail!("{path} in {} is empty or missing", self.image.display());
        }
        Ok(())
    }

    /// Write `contents` as a new file at the absolute `dest` (its directory must exist, the file must
    /// not), owned by root with `mode`: what Ignition does to the deployment's `/etc` on a first boot.
    /// The VM must be off.
    pub fn write_file(&self, dest: &str, contents: &[u8], mode: u32) -> Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::PermissionsExt as _;
        let (dir, name) = dest
            .rsplit_once('/')
            .filter(|(d, n)| d.starts_with('/') && !n.is_empty())
            .with_context(|| format!("{dest:?} is not an absolute file path"))?;
        let dir = if dir.is_empty() { "/" } else { dir };
        if self.list_dir(dir)?.iter().any(|n| n == name) {
            bail!("{dest} already exists in {}", self.image.display());
        }
        // debugfs `write` takes the mode (and owner: root, as we are) from the source file.
        let mut source = tempfile::NamedTempFile::new()?;
        source.write_all(contents)?;
        source.flush()?;
        std::fs::set_permissions(source.path(), std::fs::Permissions::from_mode(mode))?;
        let script = format!("cd {dir}\nwrite {} {name}\n", source.path().display());
        let mut child = Command::new("debugfs")
            .args(["-w", "-f", "-"])
            .arg(&self.image)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("Starting debugfs -w")?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(script.as_bytes())?;
        let output = child.wait_with_output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let problems: Vec<&str> = stderr.lines().filter(|l| !is_noise(l)).collect();
        if !output.status.success() || !problems.is_empty() {
            bail!(
                "debugfs could not write {dest} into {}: {}",
                self.image.display(),
                problems.join("; ")
            );
        }
        let back = self.request(&format!("cat {dest}"))?;
        if back != contents {
            bail!(
                "{dest} in {} does not read back as written",
                self.image.display()
            );
        }
        Ok(())
    }

    /// Create the directory `path` (its parent must exist), owned by root with `mode`, unless it exists:
    /// what Ignition does for a file's parent directories. The VM must be off.
    pub fn mkdir(&self, path: &str, mode: u32) -> Result<()> {
        use std::io::Write as _;
        let (parent, name) = path
            .rsplit_once('/')
            .filter(|(d, n)| (d.is_empty() || d.starts_with('/')) && !n.is_empty())
            .with_context(|| format!("{path:?} is not an absolute directory path"))?;
        let parent = if parent.is_empty() { "/" } else { parent };
        if self.list_dir(parent)?.iter().any(|n| n == name) {
            return Ok(());
        }
        let script = format!("mkdir {path}\nsif {path} mode 0{:o}\n", 0o040000 | mode);
        let mut child = Command::new("debugfs")
            .args(["-w", "-f", "-"])
            .arg(&self.image)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("Starting debugfs -w")?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(script.as_bytes())?;
        let output = child.wait_with_output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let problems: Vec<&str> = stderr.lines().filter(|l| !is_noise(l)).collect();
        if !output.status.success() || !problems.is_empty() {
            bail!(
                "debugfs could not create {path} in {}: {}",
                self.image.display(),
                problems.join("; ")
            );
        }
        Ok(())
    }

    /// Copy a directory tree out of the image into `dest` (created; the tree lands in
    /// `dest/<last component of path>`).
    pub fn rdump(&self, path: &str, dest: &Path) -> Result<()> {
        std::fs::create_dir_all(dest)?;
        self.request(&format!("rdump {path} {}", dest.display()))?;
        Ok(())
    }

    /// The target of a symlink (not followed).
    pub fn read_link(&self, path: &str) -> Result<String> {
        let out = self.request(&format!("stat {path}"))?;
        let text = String::from_utf8_lossy(&out);
        // Short targets live in the inode ("Fast link dest:"), long ones in a data block, which
        // `cat` on the link itself prints (debugfs does not follow the last path component).
        if let Some(rest) = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Fast link dest:"))
        {
            return Ok(rest.trim().trim_matches('"').to_string());
        }
        if !text.contains("Type: symlink") {
            bail!("{path} in {} is not a symlink", self.image.display());
        }
        let target = self.read_to_string(path)?;
        Ok(target.trim_end_matches('\0').to_string())
    }

    /// Every BLS entry under `/boot/loader/entries` (`/boot/loader` is ostree's swapped symlink).
    pub fn boot_entries(&self) -> Result<Vec<BootEntry>> {
        let dir = "/boot/loader/entries";
        let mut entries = Vec::new();
        for name in self.list_dir(dir)? {
            if !name.ends_with(".conf") {
                continue;
            }
            let text = self.read_to_string(&format!("{dir}/{name}"))?;
            entries.push(bls::parse_entry(&name, &text)?);
        }
        Ok(entries)
    }

    /// The deployment an entry boots, as `<checksum>.<serial>`, resolved through the `ostree=`
    /// symlink (`/ostree/boot.N/<os>/<bootcsum>/<n>` → `../../../deploy/<os>/deploy/<csum>.<serial>`).
    pub fn deployment_of(&self, entry: &BootEntry) -> Result<String> {
        let target = entry
            .ostree_target()
            .with_context(|| format!("boot entry {} has no ostree= argument", entry.file_name))?;
        let link = self.read_link(target)?;
        let name = link.rsplit('/').next().unwrap_or_default();
        if !link.contains("/deploy/") || name.split('.').count() != 2 {
            bail!("{target} points to {link:?}, not to an ostree deployment");
        }
        Ok(name.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A small real ext4 image made with `mkfs.ext4 -d` (no root needed).
    fn image_from(tree: &Path, dir: &Path) -> PathBuf {
        let image = dir.join("t.img");
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(tree)
            .arg(&image)
            .arg("16M")
            .run_checked()
            .expect("mkfs.ext4 (e2fsprogs) is needed for this test");
        image
    }

    #[test]
    fn reads_entries_files_and_links_from_a_real_image() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("tree");
        let entries = tree.join("boot/loader.1/entries");
        std::fs::create_dir_all(&entries).unwrap();
        symlink("loader.1", tree.join("boot/loader")).unwrap();
        std::fs::write(
            entries.join("ostree-1-debian.conf"),
            "version 1\nlinux /ostree/k\ninitrd /ostree/i\noptions ostree=/ostree/boot.1/debian/b/0 rw\n",
        )
        .unwrap();
        std::fs::create_dir_all(tree.join("boot/ostree")).unwrap();
        std::fs::write(tree.join("boot/ostree/k"), "kernel-bytes").unwrap();
        let csum = "a".repeat(64);
        let deploy = tree.join(format!("ostree/deploy/debian/deploy/{csum}.0"));
        std::fs::create_dir_all(&deploy).unwrap();
        std::fs::create_dir_all(tree.join("ostree/boot.1/debian/b")).unwrap();
        let long_target = format!("../../../deploy/debian/deploy/{csum}.0");
        symlink(&long_target, tree.join("ostree/boot.1/debian/b/0")).unwrap();
        symlink("short", tree.join("shortlink")).unwrap();
        let disk = Disk::open(image_from(&tree, tmp.path())).unwrap();

        let found = disk.boot_entries().unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].version, 1);
        let dest = tmp.path().join("k.out");
        disk.dump(&BootEntry::path_on_root(&found[0].linux), &dest)
            .unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "kernel-bytes");
        assert_eq!(disk.read_link("/shortlink").unwrap(), "short");
        assert_eq!(
            disk.read_link("/ostree/boot.1/debian/b/0").unwrap(),
            long_target
        );
        assert_eq!(disk.deployment_of(&found[0]).unwrap(), format!("{csum}.0"));

        let etc = format!("/ostree/deploy/debian/deploy/{csum}.0");
        disk.write_file(&format!("{etc}/first.json"), b"{}\n", 0o600)
            .unwrap();
        assert_eq!(
            disk.read_to_string(&format!("{etc}/first.json")).unwrap(),
            "{}\n"
        );
        let stat =
            String::from_utf8(disk.request(&format!("stat {etc}/first.json")).unwrap()).unwrap();
        assert!(stat.contains("Mode:  0600"), "{stat}");
        let err = disk
            .write_file(&format!("{etc}/first.json"), b"again", 0o600)
            .unwrap_err()
            .to_string();
        assert!(err.contains("already exists"), "{err}");
        assert!(disk.write_file("/no/such/dir/x", b"x", 0o644).is_err());

        let out = tmp.path().join("out");
        disk.rdump("/boot/ostree", &out).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("ostree/k")).unwrap(),
            "kernel-bytes"
        );
    }

    #[test]
    fn missing_paths_and_images_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("tree");
        std::fs::create_dir_all(tree.join("boot")).unwrap();
        let disk = Disk::open(image_from(&tree, tmp.path())).unwrap();
        let err = disk
            .read_to_string("/boot/nothing.conf")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/boot/nothing.conf"), "{err}");
        assert!(disk.boot_entries().is_err(), "no loader directory");
        let dest = tmp.path().join("nothing.out");
        assert!(disk.dump("/boot/nothing", &dest).is_err());
        let err = Disk::open(tmp.path().join("absent.img"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
        let not_ext4 = tmp.path().join("zero.img");
        std::fs::write(&not_ext4, vec![0u8; 65536]).unwrap();
        assert!(Disk::open(&not_ext4).unwrap().list_dir("/").is_err());
    }
}
