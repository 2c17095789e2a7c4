//! `machine-config-daemon start`: wire the real parts together and run the loop until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use super::driver::Daemon;
use super::env::NodeEnv;
use super::update::{ClusterSide, DrainMode};
use crate::cluster::{Credentials, DrainOptions, KubeCluster, connect, watch_node};
use crate::host::Root;
use crate::metrics::Metrics;
use crate::os::{BackendKind, HelperOptions, OstreeBackend, OstreeBackendOptions, select_backend};
use crate::systemd::Systemd;

/// Everything `start` needs.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub node_name: String,
    pub kubeconfig: Option<PathBuf>,
    pub root: PathBuf,
    pub sysroot: PathBuf,
    pub drain_mode: DrainMode,
    pub drain_timeout: Duration,
    pub metrics_listen: SocketAddr,
    pub backend: BackendKind,
    /// OS image layers fetched at once.
    pub pull_concurrency: usize,
    /// Test-only: treat the sysroot's default deployment as booted and read the boot id from this file.
    pub test_only_simulated_boot: Option<PathBuf>,
}

/// Credentials: `--kubeconfig`, else the pod's service account, else the kubelet's kubeconfig (§1).
fn credentials(opts: &StartOptions) -> Credentials {
    if let Some(k) = &opts.kubeconfig {
        return Credentials::Kubeconfig(k.clone());
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return Credentials::InCluster;
    }
    Credentials::kubelet(&opts.root)
}

/// The pool a node belongs to, from its role labels (for its MachineConfigNode).
fn pool_of(node: &k8s_openapi::api::core::v1::Node) -> String {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    if labels.contains_key("node-role.kubernetes.io/master")
        || labels.contains_key("node-role.kubernetes.io/control-plane")
    {
        "master".into()
    } else {
        "worker".into()
    }
}

pub async fn run(opts: StartOptions) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let (_bound, _metrics_task) =
        crate::metrics::serve(metrics.clone(), opts.metrics_listen).await?;
    let root = Arc::new(Root::open(&opts.root)?);
    let client = connect(&credentials(&opts)).await?;
    let cluster = Arc::new(KubeCluster::new(client.clone(), &opts.node_name));
    let mut nodes = watch_node(client, &opts.node_name);
    let first = tokio::time::timeout(Duration::from_secs(120), nodes.wait_for(|_| true))
        .await
        .with_context(|| {
            format!(
                "node {} was not seen within 120 s; is --node-name right and the API reachable?",
                opts.node_name
            )
        })?;
    let pool = first
        .as_ref()
        .map(pool_of)
        .unwrap_or_else(|| "worker".into());
    let drain_options = DrainOptions {
        timeout: opts.drain_timeout,
        ..Default::default()
    };
    let side = ClusterSide::new(
        cluster,
        &pool,
        nodes.updates.clone(),
        opts.drain_mode,
        drain_options,
    );

    // The ostree work runs in short-lived helper processes: the idle daemon never loads libostree.
    let os_options = OstreeBackendOptions {
        pull_concurrency: opts.pull_concurrency,
        ..OstreeBackendOptions::sandbox(&opts.sysroot, &opts.root)
    }
    .in_helper(HelperOptions::this_executable().context("Finding our own executable")?);
    let (os, env) = match &opts.test_only_simulated_boot {
        Some(boot_id_file) => {
            let backend = OstreeBackend::test_only_simulated_boot(os_options, boot_id_file).await?;
            (
                crate::os::AnyBackend::Ostree(backend),
                NodeEnv::simulated(&opts.root, boot_id_file),
            )
        }
        None => (
            select_backend(opts.backend, os_options).await?,
            NodeEnv::host(&opts.root),
        ),
    };
    let status = crate::os::OsBackend::status(&os).await.ok();
    if let Some(d) = status
        .as_ref()
        .and_then(|s| s.booted.as_ref().or(s.pending.as_ref()))
    {
        metrics
            .host_os_and_version
            .get_or_create(&crate::metrics::OsLabels {
                os: d.stateroot.clone(),
                version: d.version.clone().unwrap_or_default(),
            })
            .set(1);
    }
    let systemd = Systemd::system()
        .await
        .context("systemd is needed for reloads and the reboot")?;

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("SIGTERM: finishing the current step, then stopping");
        let _ = stop_tx.send(true);
    });
    let updates = nodes.updates.clone();
    let daemon = Daemon::new(
        opts.node_name.clone(),
        root,
        os,
        systemd,
        env,
        metrics,
        side,
        stop_rx,
    );
    tracing::info!(node = %opts.node_name, root = %opts.root.display(), sysroot = %opts.sysroot.display(), "machine-config-daemon started");
    let result = daemon.run(updates).await;
    drop(nodes);
    result
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
