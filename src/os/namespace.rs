//! Writing to a booted host's sysroot. `/sysroot` (and often `/boot`) are mounted read-only there; like
//! rpm-ostree and bootc, the daemon makes them writable only inside a private mount namespace, so the rest of
//! the system never sees a writable `/sysroot`. Only the calling thread (and what it spawns) enters it.
//!
//! Exercised for real by the VM tests (a booted ostree host); a sandbox sysroot never needs it.

use anyhow::{Context, Result};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};

/// Enter a new mount namespace, stop mount events propagating back to the host, and remount `/sysroot`
/// and `/boot` read-write in it (when they are mount points).
pub(crate) fn enter_private_mount_namespace() -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNS)
        .context("Entering a private mount namespace (needs CAP_SYS_ADMIN)")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("Making the mount namespace private")?;
    for target in ["/sysroot", "/boot"] {
        if !is_mount_point(target)? {
            continue;
        }
        // A remount changes the flags of this mount only, and only in our namespace.
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_RELATIME,
            None::<&str>,
        )
        .with_context(|| format!("Remounting {target} read-write"))?;
        tracing::debug!(target, "remounted read-write in private mount namespace");
    }
    Ok(())
}

/// Whether `path` is listed as a mount point in this namespace's mountinfo.
fn is_mount_point(path: &str) -> Result<bool> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").context("Reading /proc/self/mountinfo")?;
    Ok(mountinfo_has_mount_point(&info, path))
}

fn mountinfo_has_mount_point(mountinfo: &str, path: &str) -> bool {
    // Field 5 (index 4) is the mount point.
    mountinfo.lines().any(|l| l.split(' ').nth(4) == Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_mount_points_in_mountinfo() {
        let info = "22 1 253:0 / / rw,relatime shared:1 - xfs /dev/vda4 rw\n\
                    30 22 253:0 /sysroot /sysroot ro,relatime shared:5 - xfs /dev/vda4 ro\n";
        assert!(mountinfo_has_mount_point(info, "/sysroot"));
        assert!(!mountinfo_has_mount_point(info, "/boot"));
    }
}
