//! Disk preflight: before any layer is fetched, the space the missing layers need is compared with the
//! space the repo's filesystem has, so a pull that cannot fit fails at once with both numbers instead of
//! filling the disk.

use std::fmt;
use std::path::Path;

use anyhow::{Context, Result};

use super::layer_stream::Compression;

/// How many times larger than its compressed blob a layer is once unpacked into the repo. OS trees
/// compress about 2.5-3x with gzip (an FCOS/RHCOS image: ~0.8-1.2 GB of layers, ~2.3-3.5 GB
/// unpacked); zstd a bit better. Deliberately on the high side: a wrong "fits" fills the disk.
fn expansion(compression: Option<Compression>) -> f64 {
    match compression {
        Some(Compression::Gzip) | None => 3.0,
        Some(Compression::Zstd) => 3.5,
        Some(Compression::None) => 1.0,
    }
}

/// What a pull will write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpaceNeeded {
    /// Compressed bytes of the layers to fetch.
    pub download: u64,
    /// Estimated bytes of those layers unpacked.
    pub unpacked: u64,
}

impl SpaceNeeded {
    /// `layers`: (compressed size, compression) of each layer to fetch.
    pub(crate) fn estimate(layers: impl IntoIterator<Item = (u64, Option<Compression>)>) -> Self {
        let mut need = Self {
            download: 0,
            unpacked: 0,
        };
        for (size, compression) in layers {
            need.download += size;
            need.unpacked += (size as f64 * expansion(compression)).ceil() as u64;
        }
        need
    }

    /// What the check asks for: the download plus the unpacked estimate. Layers are streamed, so the
    /// compressed bytes are not stored; counting them anyway keeps room for an estimate that was low
    /// and for the deployment the image becomes (its /etc copy, the kernel and initramfs in /boot).
    pub(crate) fn total(&self) -> u64 {
        self.download + self.unpacked
    }
}

/// Free space on the repo's filesystem as ostree may use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FreeSpace {
    /// Available to us (`f_bavail`), in bytes.
    pub available: u64,
    /// Kept free by ostree (`min-free-space-percent`/`-size` of the repo config): ostree refuses to
    /// write into it, so it does not count.
    pub reserved: u64,
}

impl FreeSpace {
    pub(crate) fn usable(&self) -> u64 {
        self.available.saturating_sub(self.reserved)
    }
}

/// Not enough space: both numbers, for the Degraded reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotEnoughSpace {
    pub needed: SpaceNeeded,
    pub free: FreeSpace,
    pub path: String,
}

impl fmt::Display for NotEnoughSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "needs about {} ({} to download, ~{} unpacked) but {} has {} free",
            human_bytes(self.needed.total()),
            human_bytes(self.needed.download),
            human_bytes(self.needed.unpacked),
            self.path,
            human_bytes(self.free.usable()),
        )?;
        if self.free.reserved > 0 {
            write!(
                f,
                " ({} more kept free by ostree's min-free-space)",
                human_bytes(self.free.reserved.min(self.free.available))
            )?;
        }
        Ok(())
    }
}

/// The pure check.
pub(crate) fn check(
    needed: SpaceNeeded,
    free: FreeSpace,
    path: &Path,
) -> Result<(), NotEnoughSpace> {
    if needed.total() <= free.usable() {
        return Ok(());
    }
    Err(NotEnoughSpace {
        needed,
        free,
        path: path.display().to_string(),
    })
}

/// `statvfs` of `path`, with ostree's reserve from the repo config (`core.min-free-space-size`, else
/// `core.min-free-space-percent`, default 3%; ostree.repo-config(5)).
pub(crate) fn free_space(
    path: &Path,
    repo_config: Option<&ostree_ext::glib::KeyFile>,
) -> Result<FreeSpace> {
    let st = rustix::fs::statvfs(path).with_context(|| format!("statvfs {}", path.display()))?;
    let frsize = st.f_frsize;
    let total = st.f_blocks.saturating_mul(frsize);
    let available = st.f_bavail.saturating_mul(frsize);
    let get = |key: &str| {
        repo_config
            .and_then(|c| c.string("core", key).ok())
            .map(|s| s.to_string())
    };
    // A non-zero size takes priority over the percentage (ostree.repo-config(5)).
    let reserved = match get("min-free-space-size").and_then(|s| parse_size(&s)) {
        Some(size) if size > 0 => size,
        _ => {
            let percent = get("min-free-space-percent")
                .and_then(|p| p.trim().parse::<u64>().ok())
                .unwrap_or(3)
                .min(99);
            total / 100 * percent
        }
    };
    Ok(FreeSpace {
        available,
        reserved,
    })
}

/// ostree's `min-free-space-size` syntax: a number with a `MB`, `GB` or `TB` suffix.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "MB" => 1u64 << 20,
        "GB" => 1u64 << 30,
        "TB" => 1u64 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// `312.4 MB`: decimal units, as registries and `podman images` show sizes.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_counts_download_and_unpacked_bytes() {
        let need = SpaceNeeded::estimate([
            (100, Some(Compression::Gzip)),
            (10, Some(Compression::None)),
            (20, Some(Compression::Zstd)),
        ]);
        assert_eq!(need.download, 130);
        assert_eq!(need.unpacked, 300 + 10 + 70);
        assert_eq!(need.total(), 510);
    }

    #[test]
    fn not_enough_space_names_both_numbers_and_the_path() {
        let needed = SpaceNeeded {
            download: 540_000_000,
            unpacked: 1_620_000_000,
        };
        let free = FreeSpace {
            available: 1_300_000_000,
            reserved: 100_000_000,
        };
        let err = check(needed, free, Path::new("/sysroot/ostree/repo")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "needs about 2.2 GB (540.0 MB to download, ~1.6 GB unpacked) but /sysroot/ostree/repo has 1.2 GB free (100.0 MB more kept free by ostree's min-free-space)"
        );
        let plenty = FreeSpace {
            available: 3_000_000_000,
            reserved: 100_000_000,
        };
        assert!(check(needed, plenty, Path::new("/")).is_ok());
    }

    #[test]
    fn ostree_min_free_space_sizes_parse() {
        assert_eq!(parse_size("500MB"), Some(500 << 20));
        assert_eq!(parse_size("2GB"), Some(2 << 30));
        assert_eq!(parse_size("7 XB"), None);
    }

    #[test]
    fn free_space_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let kf = ostree_ext::glib::KeyFile::new();
        kf.set_string("core", "min-free-space-size", "1MB");
        let free = free_space(dir.path(), Some(&kf)).unwrap();
        assert_eq!(free.reserved, 1 << 20);
        assert!(free.available > 0);
    }
}
