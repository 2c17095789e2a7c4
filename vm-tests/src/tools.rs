//! The host tools vm-tests needs, checked up front so a missing one is a loud, clear failure and never
//! a silently skipped suite.

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// A program on PATH the suite cannot run without.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    pub program: &'static str,
    /// The Debian package that ships it.
    pub package: &'static str,
    pub purpose: &'static str,
}

/// Everything the builder and harness spawn.
pub const REQUIRED: &[Tool] = &[
    Tool {
        program: "qemu-system-x86_64",
        package: "qemu-system-x86",
        purpose: "runs the test VMs",
    },
    Tool {
        program: "mmdebstrap",
        package: "mmdebstrap",
        purpose: "builds the guest base image",
    },
    Tool {
        program: "unshare",
        package: "util-linux",
        purpose: "keeps mmdebstrap's mounts in a private mount namespace",
    },
    Tool {
        program: "debugfs",
        package: "e2fsprogs",
        purpose: "reads boot entries from the disk image (the harness is the bootloader)",
    },
    Tool {
        program: "mkfs.ext4",
        package: "e2fsprogs",
        purpose: "writes the disk image",
    },
    Tool {
        program: "chattr",
        package: "e2fsprogs",
        purpose: "clears ostree's immutable flag when removing old builds",
    },
    Tool {
        program: "ostree",
        package: "ostree",
        purpose: "commits and deploys the guest OS",
    },
    Tool {
        program: "socat",
        package: "socat",
        purpose: "carries guest connections to 127.0.0.1 (QEMU guestfwd)",
    },
    Tool {
        program: "skopeo",
        package: "skopeo",
        purpose: "reads and pushes the OS images (ostree-ext's image proxy)",
    },
    Tool {
        program: "docker-registry",
        package: "docker-registry",
        purpose: "serves the OS images the guest pulls",
    },
    Tool {
        program: "kubectl",
        package: "kubectl",
        purpose: "drives kube-sim (the API server the guest's daemon talks to)",
    },
];

/// Whether `program` is an executable file in one of the `path` directories.
fn find_in_path(program: &str, path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The tools of `tools` that are not on `path`.
pub fn missing<'a>(tools: &'a [Tool], path: &OsStr) -> Vec<&'a Tool> {
    tools
        .iter()
        .filter(|tool| find_in_path(tool.program, path).is_none())
        .collect()
}

/// Fail with one message listing every missing tool and how to install them.
pub fn require(tools: &[Tool]) -> Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing = missing(tools, &path);
    if missing.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = missing
        .iter()
        .map(|t| format!("{} (package {}: {})", t.program, t.package, t.purpose))
        .collect();
    bail!(
        "vm-tests cannot run: missing {}; install them with `packaging/setup-dev.sh --vm`",
        list.join(", ")
    )
}

/// mmdebstrap, bare ostree commits (root-owned files) and QEMU's 9p passthrough need root.
pub fn require_root() -> Result<()> {
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid())?;
    if uid != 0 {
        bail!(
            "vm-tests must run as root (uid 0, not {uid}): mmdebstrap and bare ostree commits need it"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tools_only_on_the_given_path() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("fake-qemu");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        let not_executable = dir.path().join("fake-plain");
        std::fs::write(&not_executable, "").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let tools = [
            Tool {
                program: "fake-qemu",
                package: "p",
                purpose: "x",
            },
            Tool {
                program: "fake-plain",
                package: "q",
                purpose: "y",
            },
        ];
        let found = missing(&tools, dir.path().as_os_str());
        assert_eq!(
            found,
            vec![&tools[1]],
            "a non-executable file does not count"
        );
    }

    #[test]
    fn missing_tools_are_listed_with_their_package() {
        let tools = [Tool {
            program: "surely-not-installed-vmtest-tool",
            package: "some-package",
            purpose: "does things",
        }];
        let err = require(&tools).unwrap_err().to_string();
        assert!(err.starts_with("vm-tests cannot run: missing surely-not-installed-vmtest-tool"));
        assert!(err.contains("package some-package"), "{err}");
        assert!(err.contains("setup-dev.sh --vm"), "{err}");
    }
}
