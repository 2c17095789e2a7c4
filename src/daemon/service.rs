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
use crate::cluster::{
    Credentials, DrainOptions, KubeCluster, WatchHealth, connect_to, watch_controller_config,
    watch_node_with,
};
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
    /// Deadlines of the health gate after a boot into a new deployment.
    pub gate: super::gate::GateOptions,
}

/// Credentials: `--kubeconfig`, else the pod's service account, else the kubelet's kubeconfig. When
/// none is there, the error says what was tried and what to do.
fn credentials(opts: &StartOptions) -> anyhow::Result<Credentials> {
    if let Some(k) = &opts.kubeconfig {
        return Ok(Credentials::Kubeconfig(k.clone()));
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return Ok(Credentials::InCluster);
    }
    let kubelet = Credentials::kubelet(&opts.root);
    match &kubelet {
        Credentials::Kubeconfig(path) if !path.exists() => anyhow::bail!(
            "no credentials for the API server: no --kubeconfig was given, this is not a pod \
             (KUBERNETES_SERVICE_HOST is not set, so no service account), and the kubelet's \
             kubeconfig {} does not exist (yet: the kubelet writes it when it joins the cluster). \
             Wait for the kubelet to join (the service retries every 10 s), or give --kubeconfig \
             FILE in MCD_ARGS (/etc/sysconfig/machine-config-daemon or \
             /etc/default/machine-config-daemon)",
            path.display()
        ),
        _ => Ok(kubelet),
    }
}

fn drain_mode_name(mode: DrainMode) -> String {
    use clap::ValueEnum;
    mode.to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
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
    let (bound, _metrics_task) =
        crate::metrics::serve(metrics.clone(), opts.metrics_listen).await?;
    let root = Arc::new(Root::open(&opts.root)?);
    let credentials = credentials(&opts)?;
    let (client, endpoint) = connect_to(&credentials).await?;

    // The ostree work runs in short-lived helper processes: the idle daemon never calls libostree.
    let os_options = OstreeBackendOptions {
        pull_concurrency: opts.pull_concurrency,
        ..OstreeBackendOptions::sandbox(&opts.sysroot, &opts.root)
    }
    .in_helper(HelperOptions::this_executable().context("Finding our own executable")?);
    let (os, env) = match &opts.test_only_simulated_boot {
        // rpm-ostreed (a test double) plays the host's boots itself.
        Some(boot_id_file) if opts.backend == BackendKind::RpmOstree => (
            select_backend(opts.backend, os_options).await?,
            NodeEnv::simulated(&opts.root, boot_id_file),
        ),
        Some(boot_id_file) => {
            let backend = OstreeBackend::test_only_simulated_boot(os_options, boot_id_file).await?;
            (
                crate::os::AnyBackend::Ostree(backend),
                NodeEnv::simulated(&opts.root, boot_id_file).with_sandbox_sysroot(&opts.sysroot),
            )
        }
        None => (
            select_backend(opts.backend, os_options).await?,
            NodeEnv::host(&opts.root),
        ),
    };
    // One line that says what this daemon is and what it works on.
    tracing::info!(
        node = %opts.node_name,
        "machine-config-daemon {} starting: node {}, API server {} (as {}), root {}, sysroot {}, backend {}, drain mode {}, /metrics and /healthz on {}",
        env!("CARGO_PKG_VERSION"),
        opts.node_name,
        endpoint.url,
        endpoint.identity,
        opts.root.display(),
        opts.sysroot.display(),
        crate::os::OsBackend::name(&os),
        drain_mode_name(opts.drain_mode),
        bound,
    );

    let cluster = Arc::new(KubeCluster::new(client.clone(), &opts.node_name));
    let controller_config = watch_controller_config(
        client.clone(),
        &opts.node_name,
        Some(WatchHealth {
            metrics: metrics.clone(),
            endpoint: endpoint.clone(),
        }),
    );
    let mut nodes = watch_node_with(
        client,
        &opts.node_name,
        Some(WatchHealth {
            metrics: metrics.clone(),
            endpoint: endpoint.clone(),
        }),
    );
    let first = wait_for_node(&mut nodes, &opts.node_name, &endpoint, &metrics).await?;
    let pool = pool_of(&first);
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
    )
    .with_controller_config(controller_config.updates.clone());

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
    tracing::info!(
        check_timeout_s = opts.gate.check_timeout.as_secs(),
        ready_timeout_s = opts.gate.ready_timeout.as_secs(),
        "health gate after a boot into a new deployment: each check within {} s, the node Ready within {} s",
        opts.gate.check_timeout.as_secs(),
        opts.gate.ready_timeout.as_secs()
    );
    let mut daemon = Daemon::new(
        opts.node_name.clone(),
        root,
        os,
        systemd,
        env,
        metrics,
        side,
        stop_rx,
    );
    daemon.gate = opts.gate;
    if opts.test_only_simulated_boot.is_some() {
        // Test only: the e2e harness plays reboots that do not happen in seconds, not minutes.
        if let Some(secs) = std::env::var("MCD_TEST_ONLY_REBOOT_GRACE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            daemon.reboot_grace = Duration::from_secs(secs);
        }
    }
    let result = daemon.run(updates).await;
    drop(nodes);
    drop(controller_config);
    result
}

/// How long the API server may answer without our Node in it before the daemon gives up (the
/// service restarts it): a wrong --node-name, or a node not registered yet.
const NODE_WAIT: Duration = Duration::from_secs(120);

/// Wait for our Node. While the API server cannot be reached the wait goes on (the watch logs why and
/// backs off, `/healthz` says so); once it answers, the Node must appear within [`NODE_WAIT`].
async fn wait_for_node(
    nodes: &mut crate::cluster::NodeWatch,
    node: &str,
    endpoint: &crate::cluster::ApiEndpoint,
    metrics: &Metrics,
) -> anyhow::Result<k8s_openapi::api::core::v1::Node> {
    let mut reachable_since: Option<tokio::time::Instant> = None;
    loop {
        if let Ok(Some(n)) =
            tokio::time::timeout(Duration::from_secs(1), nodes.wait_for(|_| true)).await
        {
            return Ok(n);
        }
        if metrics.api_problem().is_some() {
            reachable_since = None;
            continue;
        }
        let since = *reachable_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= NODE_WAIT {
            anyhow::bail!(
                "node {node} does not exist at the API server {} (waited {} s); is --node-name \
                 (NODE_NAME) the name of this node's Node object (`kubectl get nodes`)?",
                endpoint.url,
                NODE_WAIT.as_secs()
            );
        }
    }
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
