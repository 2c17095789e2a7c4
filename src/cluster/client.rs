//! Credentials: the pod's service account, an explicit `--kubeconfig`, or the kubelet's kubeconfig
//! (what the MCD uses for node writes, mco-protocol.md §1). TLS is always verified.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use fn_error_context::context;

/// The kubelet's kubeconfig, which NodeRestriction lets write its own Node.
pub const KUBELET_KUBECONFIG: &str = "/var/lib/kubelet/kubeconfig";

/// Where API credentials come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Credentials {
    /// The pod's service account (`KUBERNETES_SERVICE_HOST` + the mounted token).
    InCluster,
    /// A kubeconfig file (its current context).
    Kubeconfig(PathBuf),
}

impl Credentials {
    /// The kubelet's kubeconfig under `root` (`/` on a node).
    pub fn kubelet(root: &Path) -> Self {
        Credentials::Kubeconfig(root.join(KUBELET_KUBECONFIG.trim_start_matches('/')))
    }
}

/// Build the client configuration, refusing any setting that turns off TLS verification.
#[context("Loading Kubernetes credentials ({credentials:?})")]
pub async fn config(credentials: &Credentials) -> Result<kube::Config> {
    let config = match credentials {
        Credentials::InCluster => {
            kube::Config::incluster().context("Reading the in-cluster service account")?
        }
        Credentials::Kubeconfig(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("Reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .with_context(|| format!("Using kubeconfig {}", path.display()))?
        }
    };
    if config.accept_invalid_certs {
        bail!(
            "the kubeconfig disables TLS verification (insecure-skip-tls-verify), which this daemon refuses"
        );
    }
    let mut config = config;
    // kube-rs would retry every 429 itself (up to 15 times); for an eviction a 429 is the PDB's
    // answer, which the drain loop must see. `KubeCluster` retries transient errors itself.
    config.default_retry = false;
    Ok(config)
}

/// A kube-rs client for `credentials`.
pub async fn connect(credentials: &Credentials) -> Result<kube::Client> {
    let config = config(credentials).await?;
    kube::Client::try_from(config).context("Building the Kubernetes client")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(dir: &Path, extra: &str) -> PathBuf {
        let path = dir.join("kc");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n{extra}\
                 users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
            ),
        )
        .unwrap();
        path
    }

    #[tokio::test]
    async fn insecure_kubeconfig_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = kubeconfig(dir.path(), "    insecure-skip-tls-verify: true\n");
        let err = config(&Credentials::Kubeconfig(path)).await.unwrap_err();
        assert!(format!("{err:#}").contains("refuses"), "{err:#}");
    }

    #[tokio::test]
    async fn kubeconfig_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = kubeconfig(dir.path(), "");
        let cfg = config(&Credentials::Kubeconfig(path)).await.unwrap();
        assert_eq!(cfg.cluster_url.to_string(), "https://127.0.0.1:6443/");
    }

    #[tokio::test]
    async fn missing_kubeconfig_names_the_file() {
        let err = config(&Credentials::kubelet(Path::new("/nonexistent-root")))
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent-root/var/lib/kubelet/kubeconfig"),
            "{err:#}"
        );
    }
}
