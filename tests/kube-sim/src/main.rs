//! `kube-sim --port 0 --kubeconfig OUT --load FILE.yaml…`: serve until killed; prints the URL.
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// A Kubernetes API server simulator (kube-apiserver 1.32 semantics) on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(name = "kube-sim", version)]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Write a kubeconfig for the server here.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// YAML file(s) with objects to create at start (may repeat).
    #[arg(long = "load")]
    load: Vec<PathBuf>,
    /// Require this bearer token on API requests.
    #[arg(long)]
    token: Option<String>,
    /// Leave terminating pods Terminating forever (no simulated kubelet).
    #[arg(long)]
    no_kubelet: bool,
    /// Number of watch events kept; older resourceVersions get 410 Expired.
    #[arg(long, default_value_t = 1000)]
    history_window: usize,
    /// The cluster's feature set: which variant of the MachineConfigNode CRD is installed
    /// (Default, or TechPreviewNoUpgrade with the image-mode status fields).
    #[arg(long, default_value = "Default")]
    feature_set: kube_sim::FeatureSet,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KUBE_SIM_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let opts = kube_sim::SimOptions {
        port: args.port,
        kubeconfig: args.kubeconfig,
        load: args.load,
        token: args.token,
        kubelet: !args.no_kubelet,
        history_window: args.history_window,
        default_watch_timeout: Duration::from_secs(1800),
        bookmark_interval: Duration::from_secs(60),
        feature_set: args.feature_set,
    };
    let sim = match kube_sim::KubeSim::start(opts).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kube-sim: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("{}", sim.url());
    let _ = tokio::signal::ctrl_c().await;
    sim.shutdown().await;
    std::process::ExitCode::SUCCESS
}
