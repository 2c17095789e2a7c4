//! Turning a Debian rootfs (as mmdebstrap leaves it) into a tree `ostree commit` accepts and
//! `ostree admin deploy` boots:
//! - kernel and initramfs move to `usr/lib/modules/$KVER/{vmlinuz,initramfs.img}`, `/boot` is emptied;
//! - `dev proc sys run tmp var` are emptied (device nodes cannot be committed; `/var` is per-machine
//!   state that systemd-tmpfiles recreates);
//! - `etc` becomes `usr/etc` (ostree's default config, merged into `/etc` on deploy);
//! - `sysroot/` and `ostree -> sysroot/ostree` are added;
//! - `home root opt srv mnt media` become symlinks into `/var` (or `/run`), created at boot by a
//!   tmpfiles.d snippet.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use anyhow::{Context, Result, bail};
use fn_error_context::context;

/// Top-level directories that hold runtime state and are emptied before committing.
const EMPTIED: &[&str] = &["dev", "proc", "sys", "run", "tmp", "var", "boot"];

/// Top-level directories that become symlinks into `/var` (or `/run`).
const VAR_LINKS: &[(&str, &str)] = &[
    ("home", "var/home"),
    ("root", "var/roothome"),
    ("opt", "var/opt"),
    ("srv", "var/srv"),
    ("mnt", "var/mnt"),
    ("media", "run/media"),
];

/// Recreates the targets of [`VAR_LINKS`] at boot.
const TMPFILES: &str = "# vm-tests: targets of the /home, /root, ... symlinks of the ostree layout\n\
d /var/home 0755 root root -\n\
d /var/roothome 0700 root root -\n\
d /var/opt 0755 root root -\n\
d /var/srv 0755 root root -\n\
d /var/mnt 0755 root root -\n\
d /run/media 0755 root root -\n";

/// The one kernel version under `usr/lib/modules`.
pub fn kernel_version(root: &Path) -> Result<String> {
    let modules = root.join("usr/lib/modules");
    let mut versions: Vec<String> = fs::read_dir(&modules)
        .with_context(|| format!("Reading {}", modules.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    versions.sort();
    match versions.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("the rootfs has no kernel under usr/lib/modules"),
        many => bail!(
            "the rootfs has several kernels ({}); expected one",
            many.join(", ")
        ),
    }
}

fn empty_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        fs::create_dir_all(dir)?;
        return Ok(());
    }
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() && !path.is_symlink() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        }
        .with_context(|| format!("Removing {}", path.display()))?;
    }
    Ok(())
}

/// Convert `root` in place; returns the kernel version.
#[context("Converting {} to the ostree layout", root.display())]
pub fn convert(root: &Path) -> Result<String> {
    if root.join("usr/etc").exists() {
        bail!("{} already has usr/etc: converted twice?", root.display());
    }
    let kver = kernel_version(root)?;
    let moddir = root.join("usr/lib/modules").join(&kver);
    for (from, to) in [
        (format!("vmlinuz-{kver}"), "vmlinuz"),
        (format!("initrd.img-{kver}"), "initramfs.img"),
    ] {
        let src = root.join("boot").join(&from);
        if !src.is_file() {
            bail!("/boot/{from} is missing: was the initramfs generated?");
        }
        fs::rename(&src, moddir.join(to)).with_context(|| format!("Moving /boot/{from}"))?;
    }
    // The Debian kernel's convenience links at the top level now dangle.
    for link in ["vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"] {
        let path = root.join(link);
        if path.is_symlink() {
            fs::remove_file(&path)?;
        }
    }
    for dir in EMPTIED {
        empty_dir(&root.join(dir))?;
    }
    fs::rename(root.join("etc"), root.join("usr/etc")).context("Moving etc to usr/etc")?;
    fs::create_dir_all(root.join("sysroot"))?;
    symlink("sysroot/ostree", root.join("ostree"))?;
    for (name, target) in VAR_LINKS {
        let path = root.join(name);
        if path.is_dir() && !path.is_symlink() {
            fs::remove_dir_all(&path)?;
        }
        symlink(target, &path).with_context(|| format!("Linking /{name} to {target}"))?;
    }
    let tmpfiles = root.join("usr/lib/tmpfiles.d");
    fs::create_dir_all(&tmpfiles)?;
    fs::write(tmpfiles.join("vmtest-ostree-layout.conf"), TMPFILES)?;
    Ok(kver)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A miniature of what mmdebstrap produces.
    fn fake_rootfs(root: &Path) {
        for d in [
            "boot",
            "dev",
            "etc/systemd",
            "home/u",
            "root",
            "usr/lib/modules/6.1.0-9",
            "var/lib/dpkg",
            "tmp",
            "opt",
            "srv",
            "mnt",
            "media",
            "proc",
            "sys",
            "run",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(root.join("boot/vmlinuz-6.1.0-9"), "K").unwrap();
        fs::write(root.join("boot/initrd.img-6.1.0-9"), "I").unwrap();
        fs::write(root.join("boot/config-6.1.0-9"), "C").unwrap();
        fs::write(root.join("etc/hostname"), "vmtest").unwrap();
        fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
        fs::write(root.join("dev/null-ish"), "").unwrap();
        symlink("boot/vmlinuz-6.1.0-9", root.join("vmlinuz")).unwrap();
        symlink("usr/bin", root.join("bin")).unwrap();
    }

    #[test]
    fn converts_a_debian_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_rootfs(root);
        assert_eq!(convert(root).unwrap(), "6.1.0-9");
        let m = root.join("usr/lib/modules/6.1.0-9");
        assert_eq!(fs::read_to_string(m.join("vmlinuz")).unwrap(), "K");
        assert_eq!(fs::read_to_string(m.join("initramfs.img")).unwrap(), "I");
        assert!(fs::read_dir(root.join("boot")).unwrap().next().is_none());
        assert!(fs::read_dir(root.join("var")).unwrap().next().is_none());
        assert!(fs::read_dir(root.join("dev")).unwrap().next().is_none());
        assert_eq!(
            fs::read_to_string(root.join("usr/etc/hostname")).unwrap(),
            "vmtest"
        );
        assert!(!root.join("etc").exists());
        assert!(!root.join("vmlinuz").is_symlink());
        assert_eq!(
            fs::read_link(root.join("bin")).unwrap(),
            Path::new("usr/bin")
        );
        assert_eq!(
            fs::read_link(root.join("ostree")).unwrap(),
            Path::new("sysroot/ostree")
        );
        assert_eq!(
            fs::read_link(root.join("root")).unwrap(),
            Path::new("var/roothome")
        );
        assert!(root.join("sysroot").is_dir());
        let tmpfiles =
            fs::read_to_string(root.join("usr/lib/tmpfiles.d/vmtest-ostree-layout.conf")).unwrap();
        assert!(tmpfiles.contains("d /var/roothome 0700"));
    }

    #[test]
    fn refuses_trees_it_cannot_boot() {
        let tmp = tempfile::tempdir().unwrap();
        fake_rootfs(tmp.path());
        fs::remove_file(tmp.path().join("boot/initrd.img-6.1.0-9")).unwrap();
        let err = format!("{:#}", convert(tmp.path()).unwrap_err());
        assert!(err.contains("initrd.img-6.1.0-9 is missing"), "{err}");

        let tmp = tempfile::tempdir().unwrap();
        fake_rootfs(tmp.path());
        fs::create_dir_all(tmp.path().join("usr/lib/modules/6.1.0-10")).unwrap();
        let err = format!("{:#}", convert(tmp.path()).unwrap_err());
        assert!(err.contains("several kernels"), "{err}");
        assert!(
            tmp.path().join("etc/hostname").exists(),
            "nothing was moved"
        );
    }
}
