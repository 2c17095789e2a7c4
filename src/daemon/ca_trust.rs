//! Refreshing the system trust store after a CA bundle change when the host has no
//! `coreos-update-ca-trust.service` (the unit the disruption policy restarts for
//! `/etc/pki/ca-trust/source/anchors/…`). The MCD falls back to running `update-ca-trust` itself
//! (`performPostConfigChangeNodeDisruptionAction`, RestartStatusAction, in `pkg/daemon/update.go`, for RHEL
//! workers); Debian has `update-ca-certificates` instead.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::host::Root;

/// The unit the default disruption policy restarts for a CA bundle change (MCO
/// `constants.UpdateCATrustServiceName`).
pub const UPDATE_CA_TRUST_UNIT: &str = "coreos-update-ca-trust.service";

/// The commands that refresh the trust store, in order of preference: Fedora/RHEL's `update-ca-trust`
/// (what the unit runs; the MCD's `constants.UpdateCATrustCommand`), then Debian's
/// `update-ca-certificates`. Paths inside the node root.
pub const TOOLS: [&str; 2] = [
    "/usr/bin/update-ca-trust",
    "/usr/sbin/update-ca-certificates",
];

/// Run the first tool the node has; returns its path. With neither, the error says what is missing.
/// On a real node the root is `/`; a sandbox root's tool runs as a program of this system.
pub fn refresh(root: &Root) -> anyhow::Result<String> {
    let Some(tool) = TOOLS
        .iter()
        .find(|t| is_executable(&root.path().join(t.trim_start_matches('/'))))
    else {
        bail!(
            "{UPDATE_CA_TRUST_UNIT} does not exist on this node and neither does {} nor {}: the CA bundle was written but the trust store was not refreshed; ship the unit or one of the tools (package ca-certificates) in the OS image",
            TOOLS[0],
            TOOLS[1]
        );
    };
    let program = root.path().join(tool.trim_start_matches('/'));
    let out = Command::new(&program)
        .output()
        .with_context(|| format!("running {tool}"))?;
    if !out.status.success() {
        bail!(
            "{tool} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(tool.to_string())
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, path: &str, body: &str) {
        let p = dir.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn prefers_update_ca_trust_then_update_ca_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        script(
            dir.path(),
            TOOLS[1],
            &format!("echo debian >> {}", marker.display()),
        );
        let root = Root::open(dir.path()).unwrap();
        assert_eq!(refresh(&root).unwrap(), TOOLS[1]);
        script(
            dir.path(),
            TOOLS[0],
            &format!("echo fedora >> {}", marker.display()),
        );
        assert_eq!(refresh(&root).unwrap(), TOOLS[0]);
        assert_eq!(
            std::fs::read_to_string(&marker).unwrap(),
            "debian\nfedora\n"
        );
    }

    #[test]
    fn says_what_is_missing_or_what_failed() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let err = refresh(&root).unwrap_err().to_string();
        assert!(
            err.contains("coreos-update-ca-trust.service does not exist")
                && err.contains("/usr/bin/update-ca-trust")
                && err.contains("/usr/sbin/update-ca-certificates"),
            "{err}"
        );
        script(dir.path(), TOOLS[1], "echo 'no bundle' >&2; exit 3");
        let err = refresh(&root).unwrap_err().to_string();
        assert!(
            err.contains("update-ca-certificates failed") && err.contains("no bundle"),
            "{err}"
        );
    }
}
