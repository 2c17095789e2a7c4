//! How the node pulls images: its pull secret and its registries.conf, both read under the node root.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use ostree_ext::containers_image_proxy::ImageProxyConfig;

/// Where the OpenShift MCD puts the pull secret for image pulls (a symlink to the merged secret for
/// rpm-ostree and bootc), then the kubelet's, which it falls back to.
pub(crate) const PULL_SECRET_PATHS: &[&str] = &[
    "run/ostree/auth.json",
    "etc/ostree/auth.json",
    "var/lib/kubelet/config.json",
];

/// The first pull secret that exists under `node_root` (never logged: only its path is).
pub(crate) fn find_pull_secret(node_root: &Path) -> Option<PathBuf> {
    PULL_SECRET_PATHS
        .iter()
        .map(|rel| node_root.join(rel))
        .find(|p| p.is_file())
}

/// The node's `registries.conf`, when skopeo would not find it by itself: on a host (`node_root` = `/`)
/// skopeo reads `/etc/containers/registries.conf` (and its drop-ins) on its own. Debian's skopeo 1.9
/// ignores `CONTAINERS_REGISTRIES_CONF`, so it is passed as `--registries-conf`.
pub(crate) fn registries_conf_override(node_root: &Path) -> Option<PathBuf> {
    if node_root == Path::new("/") {
        return None;
    }
    let p = node_root.join("etc/containers/registries.conf");
    p.is_file().then_some(p)
}

/// The registry part (`host[:port]`) of a registry image name, as containers/image names its
/// per-registry certificate directory (`docker.io` when the name has no registry part).
pub(crate) fn registry_host(name: &str) -> String {
    let name = name
        .trim_start_matches("docker://")
        .trim_start_matches("//");
    match name.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first.to_string(),
        _ => "docker.io".to_string(),
    }
}

/// The node's certificate directory for `image`'s registry, when skopeo would not find it by itself:
/// on a host (`node_root` = `/`) skopeo reads `/etc/containers/certs.d/<host:port>` and
/// `/etc/docker/certs.d/<host:port>` on its own (containers-certs.d(5)); under another node root the
/// directory is passed as `--cert-dir` (the registry's CA as `ca.crt`, client certificates as
/// `*.cert`/`*.key`). `--cert-dir` replaces the per-registry lookup, which is what a sandbox wants:
/// the node's trust, not the machine's.
pub(crate) fn cert_dir_override(
    node_root: &Path,
    imgref: &ostree_ext::container::ImageReference,
) -> Option<PathBuf> {
    if node_root == Path::new("/") || imgref.transport != ostree_ext::container::Transport::Registry
    {
        return None;
    }
    let host = registry_host(&imgref.name);
    ["etc/containers/certs.d", "etc/docker/certs.d"]
        .iter()
        .map(|d| node_root.join(d).join(&host))
        .find(|p| p.is_dir())
}

/// The image proxy (skopeo) configuration for pulls of `imgref` on this node.
pub(crate) fn proxy_config(
    node_root: &Path,
    imgref: &ostree_ext::container::ImageReference,
) -> Result<ImageProxyConfig> {
    let mut config = ImageProxyConfig::default();
    match find_pull_secret(node_root) {
        Some(path) => {
            tracing::debug!(pull_secret = %path.display(), "using pull secret");
            // Passed as an open file so skopeo reads it even when it runs unprivileged.
            config.auth_data = Some(
                std::fs::File::open(&path)
                    .with_context(|| format!("Opening pull secret {}", path.display()))?,
            );
        }
        None => {
            tracing::debug!("no pull secret on the node; pulling anonymously");
            config.auth_anonymous = true;
        }
    }
    if let Some(dir) = cert_dir_override(node_root, imgref) {
        tracing::debug!(cert_dir = %dir.display(), "passing the node's certificates for the registry to skopeo");
        config.certificate_directory = Some(dir);
    }
    if let Some(conf) = registries_conf_override(node_root) {
        tracing::debug!(registries_conf = %conf.display(), "passing the node's registries.conf to skopeo");
        let mut cmd = skopeo_command();
        cmd.arg("--registries-conf").arg(conf);
        config.skopeo_cmd = Some(cmd);
    }
    Ok(config)
}

/// `skopeo`, dropped to `nobody` under systemd as ostree-ext does by default (setting our own command
/// would otherwise lose that isolation).
fn skopeo_command() -> Command {
    let under_systemd = std::env::var_os("INVOCATION_ID").is_some_and(|v| !v.is_empty());
    if !under_systemd || !nix::unistd::Uid::effective().is_root() {
        return Command::new("skopeo");
    }
    let mut cmd = Command::new("setpriv");
    cmd.env_remove("HOME")
        .env_remove("XDG_DATA_DIR")
        .env_remove("USER");
    cmd.args([
        "--no-new-privs",
        "--init-groups",
        "--reuid",
        "nobody",
        "--bounding-set",
        "-all",
        "--pdeathsig",
        "TERM",
        "--",
        "skopeo",
    ]);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_secret_order_prefers_run_ostree_then_etc_then_kubelet() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(find_pull_secret(root.path()), None);
        let write = |rel: &str| {
            let p = root.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "{}").unwrap();
        };
        write("var/lib/kubelet/config.json");
        assert_eq!(
            find_pull_secret(root.path()),
            Some(root.path().join("var/lib/kubelet/config.json"))
        );
        write("etc/ostree/auth.json");
        assert_eq!(
            find_pull_secret(root.path()),
            Some(root.path().join("etc/ostree/auth.json"))
        );
        write("run/ostree/auth.json");
        assert_eq!(
            find_pull_secret(root.path()),
            Some(root.path().join("run/ostree/auth.json"))
        );
    }

    #[test]
    fn cert_dir_is_the_nodes_for_the_images_registry() {
        use ostree_ext::container::{ImageReference, Transport};
        let image = |name: &str| ImageReference {
            transport: Transport::Registry,
            name: name.into(),
        };
        assert_eq!(
            registry_host("127.0.0.1:5000/os@sha256:ab"),
            "127.0.0.1:5000"
        );
        assert_eq!(registry_host("quay.io/org/os:1"), "quay.io");
        assert_eq!(registry_host("localhost/os"), "localhost");
        assert_eq!(registry_host("library/os"), "docker.io");
        let root = tempfile::tempdir().unwrap();
        let img = image("reg.example:5000/os@sha256:ab");
        assert_eq!(cert_dir_override(root.path(), &img), None);
        let docker = root.path().join("etc/docker/certs.d/reg.example:5000");
        std::fs::create_dir_all(&docker).unwrap();
        assert_eq!(cert_dir_override(root.path(), &img), Some(docker));
        // containers-certs.d(5): /etc/containers/certs.d is looked at first.
        let containers = root.path().join("etc/containers/certs.d/reg.example:5000");
        std::fs::create_dir_all(&containers).unwrap();
        assert_eq!(cert_dir_override(root.path(), &img), Some(containers));
        assert_eq!(
            cert_dir_override(root.path(), &image("other.example/os")),
            None
        );
        assert_eq!(cert_dir_override(Path::new("/"), &img), None);
        let oci = ImageReference {
            transport: Transport::OciDir,
            name: "/tmp/x".into(),
        };
        assert_eq!(cert_dir_override(root.path(), &oci), None);
    }

    #[test]
    fn registries_conf_is_passed_only_for_a_non_host_root() {
        assert_eq!(registries_conf_override(Path::new("/")), None);
        let root = tempfile::tempdir().unwrap();
        assert_eq!(registries_conf_override(root.path()), None);
        std::fs::create_dir_all(root.path().join("etc/containers")).unwrap();
        std::fs::write(root.path().join("etc/containers/registries.conf"), "").unwrap();
        assert_eq!(
            registries_conf_override(root.path()),
            Some(root.path().join("etc/containers/registries.conf"))
        );
    }
}
