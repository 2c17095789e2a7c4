//! Where things live on a node, and which paths a MachineConfig may manage.

/// The forcefile: skip validation, force an OS re-apply and a reboot (`mco-protocol.md` §2.7).
pub const FORCEFILE: &str = "/run/machine-config-daemon-force";
/// Directory of the daemon's on-disk state.
pub const STATE_DIR: &str = "/etc/machine-config-daemon";
/// The on-disk config (ODC): the last applied MachineConfig, as JSON.
pub const CURRENT_CONFIG: &str = "/etc/machine-config-daemon/currentconfig";
/// The OS image pullspec of the last applied config (empty if none).
pub const CURRENT_IMAGE: &str = "/etc/machine-config-daemon/currentimage";
/// Backups of files that existed before a MachineConfig first wrote them.
pub const ORIG_DIR: &str = "/etc/machine-config-daemon/orig";
/// Stamps recording that a file did not exist before a MachineConfig wrote it.
pub const NOORIG_DIR: &str = "/etc/machine-config-daemon/noorig";
/// The MachineConfig served at install time for first-boot (install-time layering).
pub const ENCAPSULATED_CONFIG: &str = "/etc/ignition-machine-config-encapsulated.json";
/// Where systemd units from MachineConfigs are written.
pub const SYSTEMD_UNIT_DIR: &str = "/etc/systemd/system";
/// The file the MCD writes `core`'s SSH keys to (4.13+).
pub const CORE_SSH_KEYS: &str = "/home/core/.ssh/authorized_keys.d/ignition";
/// The container registries configuration with the special drain rules (§4.3).
pub const REGISTRIES_CONF: &str = "/etc/containers/registries.conf";

/// Health checks the OS image ships (`required.d/`, `wanted.d/`), run after a new deployment boots.
pub const IMAGE_HEALTH_CHECKS: &str = "/usr/lib/machine-config-daemon/health.d";
/// Health checks from MachineConfigs (or the admin); a file here replaces the image's check of the same
/// name.
pub const CONFIG_HEALTH_CHECKS: &str = "/etc/machine-config-daemon/health.d";
/// greenboot's checks (`required.d/*.sh`, `wanted.d/*.sh`, run with bash), for compatibility.
pub const GREENBOOT_HEALTH_CHECKS: &str = "/etc/greenboot/check";
/// The last health gate's result and the rollback in flight: under /var, which every deployment
/// shares (a rollback boots the previous deployment's /etc, which never saw the gate).
pub const HEALTH_GATE_STATE: &str = "/var/lib/machine-config-daemon/health-gate.json";

/// Files the cert writer owns (from ControllerConfig, not MachineConfigs): never removed as stale, never a
/// reason for a disruption (`mco-protocol.md` §4.2 "Outside NDP").
pub const CERT_WRITER_FILES: &[&str] = &[
    "/etc/kubernetes/kubelet-ca.crt",
    "/etc/kubernetes/static-pod-resources/configmaps/cloud-config/ca-bundle.pem",
];
/// Directories the cert writer owns, likewise.
pub const CERT_WRITER_DIRS: &[&str] = &["/etc/docker/certs.d"];
/// Files written outside the MachineConfig flow and therefore not validated (`getFilesToIgnore`).
pub const VALIDATION_IGNORED: &[&str] = &[
    "/etc/kubernetes/kubelet-ca.crt",
    "/etc/kubernetes/static-pod-resources/configmaps/cloud-config/ca-bundle.pem",
    "/etc/mco/internal-registry-pull-secret.json",
];

/// A file the cert writer owns: a MachineConfig dropping it removes nothing.
pub fn owned_by_cert_writer(path: &str) -> bool {
    CERT_WRITER_FILES.contains(&path) || CERT_WRITER_DIRS.iter().any(|d| is_under(path, d))
}

/// Top-level directories a MachineConfig file may live under. `/usr` is the image's (read-only in image
/// mode); everything else outside these is either read-only, not persistent, or a symlink into `/var`.
pub const WRITABLE_ROOTS: &[&str] = &["/etc", "/var", "/home"];

/// Check that `path` is a clean absolute path a MachineConfig may manage. Returns the reason otherwise.
pub fn check_managed_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("must not be empty".into());
    }
    if !path.starts_with('/') {
        return Err(format!("must be absolute, got {path:?}"));
    }
    if path.chars().any(|c| c.is_control()) {
        return Err("must not contain control characters".into());
    }
    if path.len() > 4096 {
        return Err("is longer than 4096 bytes".into());
    }
    let components: Vec<&str> = path[1..].split('/').collect();
    if components.contains(&"..") {
        return Err(format!("must not contain '..' components, got {path:?}"));
    }
    if path == "/" || components.iter().any(|c| c.is_empty() || *c == ".") {
        return Err(format!(
            "must be a clean path (no '.', '//' or trailing '/'), got {path:?}"
        ));
    }
    if path == FORCEFILE {
        // Allowed through parsing so the planner reports it as unreconcilable, as the MCD does.
        return Ok(());
    }
    if is_under(path, "/usr") {
        return Err(format!(
            "{path:?} is under /usr, which is read-only in image mode (ship it in the OS image instead)"
        ));
    }
    if !WRITABLE_ROOTS.iter().any(|root| is_under(path, root)) {
        return Err(format!(
            "{path:?} is outside /etc, /var and /home, the only places a MachineConfig may write on an image-mode node"
        ));
    }
    Ok(())
}

/// `path` equals `dir` or lies below it (component-wise: `/etc/foo` is not under `/etc/fo`).
pub fn is_under(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    path == dir || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_path_rules() {
        for ok in [
            "/etc/chrony.conf",
            "/var/lib/kubelet/config.json",
            "/home/core/.ssh/x",
            FORCEFILE,
        ] {
            assert!(check_managed_path(ok).is_ok(), "{ok}");
        }
        let cases = [
            ("etc/x", "must be absolute"),
            ("/etc/../usr/x", "'..'"),
            ("/etc/./x", "clean path"),
            ("/etc//x", "clean path"),
            ("/etc/x/", "clean path"),
            ("/", "clean path"),
            ("/usr/local/bin/x", "under /usr"),
            ("/usr", "under /usr"),
            ("/opt/x", "outside /etc"),
            ("/run/x", "outside /etc"),
            ("/boot/loader/entries/x.conf", "outside /etc"),
            ("/etcetera/x", "outside /etc"),
            ("/etc/x\ny", "control"),
            ("", "empty"),
        ];
        for (path, want) in cases {
            let err = check_managed_path(path).unwrap_err();
            assert!(err.contains(want), "{path:?}: {err}");
        }
    }

    #[test]
    fn under_is_component_wise() {
        assert!(is_under(
            "/etc/containers/registries.d/x",
            "/etc/containers/registries.d"
        ));
        assert!(is_under(
            "/etc/containers/registries.d",
            "/etc/containers/registries.d"
        ));
        assert!(!is_under(
            "/etc/containers/registries.dx",
            "/etc/containers/registries.d"
        ));
        assert!(is_under("/etc/x", "/etc/"));
    }
}
