//! OS image benchmarks with real parts (built images, docker-registry on 127.0.0.1, sandbox sysroots).
//! Prints figures; asserts nothing. Run as root: `cargo bench --bench os_images`
//! (`OS_BENCH_PAYLOAD_MB` sets the big image's size, default 200; `OS_BENCH_RUNS` the repetitions, default 3).

use std::time::{Duration, Instant};

use anyhow::Result;
use machine_config_daemon::os::{OsBackend, OsChange, OstreeBackend, OstreeBackendOptions};
use testbed::{BaseSpec, ImageLab, LayerSpec, NodeRoot, Registry, SandboxSysroot};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

struct Env {
    lab: ImageLab,
    registry: Registry,
    node: NodeRoot,
}

impl Env {
    fn backend(&self, sysroot: &SandboxSysroot) -> OstreeBackend {
        OstreeBackend::new(OstreeBackendOptions::sandbox(
            sysroot.path(),
            self.node.path(),
        ))
    }
}

/// Bytes the registry served for a top-layer-only update vs what changed.
async fn top_layer_update(env: &Env) -> Result<()> {
    let rpms = LayerSpec::new("RUN dnf install big").random_file("usr/lib/big/blob", 8 << 20);
    env.lab.derive("small", "mid", &[rpms], None)?;
    let v1 = env.lab.derive(
        "mid",
        "top-v1",
        &[LayerSpec::new("RUN config").random_file("usr/share/conf", 64 << 10)],
        Some("1"),
    )?;
    let v2 = env.lab.derive(
        "mid",
        "top-v2",
        &[LayerSpec::new("RUN config").random_file("usr/share/conf", 64 << 10)],
        Some("2"),
    )?;
    env.registry.push(&env.lab, "top-v1", "os")?;
    env.registry.push(&env.lab, "top-v2", "os")?;
    let sysroot = SandboxSysroot::create("default")?;
    let backend = env.backend(&sysroot);
    backend
        .prefetch(&env.registry.image("os", "top-v1"), None)
        .await?;
    let mark = env.registry.mark()?;
    let started = Instant::now();
    let report = backend
        .prefetch(&env.registry.image("os", "top-v2"), None)
        .await?;
    let elapsed = started.elapsed();
    let log = env.registry.access_log_since(mark)?;
    let served: u64 = log
        .iter()
        .filter(|e| e.method == "GET" && e.status == 200)
        .map(|e| e.bytes)
        .sum();
    let changed = v2.top_layer().size + v2.manifest_size + v2.config.size;
    println!(
        "## top-layer-only update ({} layers, {} MiB shared)",
        v2.layers.len(),
        (v1.total_layer_bytes() - v1.top_layer().size) >> 20
    );
    println!(
        "  registry served (GET 200)       {served} B in {} requests",
        log.iter().filter(|e| e.method == "GET").count()
    );
    println!("  changed layer+manifest+config   {changed} B");
    println!(
        "  ratio                           {:.3}  (target <= 1.05)",
        served as f64 / changed as f64
    );
    println!(
        "  layers fetched / present        {} / {}",
        report.layers_fetched, report.layers_present
    );
    println!("  prefetch wall time              {}", secs(elapsed));
    testbed::figures::record(&testbed::figures::Figure::at_most(
        "P4",
        "bytes fetched, top-layer-only update / (changed layer + manifest + config)",
        served as f64 / changed as f64,
        "ratio",
        1.05,
        format!(
            "registry served {served} B for {changed} B changed; {} layer(s) fetched, {} present",
            report.layers_fetched, report.layers_present
        ),
    ))?;
    Ok(())
}

/// First prefetch of a big image vs `skopeo copy` of it to an `oci:` dir; then stage-from-prefetched.
async fn big_image(env: &Env, payload_mb: u64, runs: usize) -> Result<()> {
    let mut spec = BaseSpec::new("big", "1.0");
    spec.payload_bytes = payload_mb << 20;
    let big = env.lab.build_base(&spec).await?;
    env.registry.push(&env.lab, "big", "os")?;
    let image = env.registry.image("os", "big");
    println!(
        "## first pull of a {} MiB image ({} layer(s), {} B compressed)",
        payload_mb,
        big.layers.len(),
        big.total_layer_bytes()
    );

    let (mut prefetch_times, mut skopeo_times, mut stage_times) =
        (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        // skopeo copy to a fresh oci: dir — the baseline for "download the image".
        let dir = tempfile::tempdir()?;
        let started = Instant::now();
        let status = std::process::Command::new("skopeo")
            .args([
                "copy",
                "--insecure-policy",
                "--quiet",
                "--src-tls-verify=false",
            ])
            .arg(format!("docker://{image}"))
            .arg(format!("oci:{}:big", dir.path().display()))
            .status()?;
        anyhow::ensure!(status.success(), "skopeo copy failed");
        skopeo_times.push(started.elapsed());
        drop(dir);

        let sysroot = SandboxSysroot::create("default")?;
        let backend = env.backend(&sysroot);
        // When the first and the last layer bytes arrived, to split the prefetch into phases.
        let marks: std::sync::Arc<std::sync::Mutex<(Option<Instant>, Option<Instant>)>> =
            Default::default();
        let sink = marks.clone();
        let progress: machine_config_daemon::os::ProgressFn = std::sync::Arc::new(move |_p| {
            let mut m = sink.lock().unwrap();
            let now = Instant::now();
            m.0.get_or_insert(now);
            m.1 = Some(now);
        });
        let started = Instant::now();
        let report = backend.prefetch(&image, Some(progress)).await?;
        let ended = Instant::now();
        prefetch_times.push(ended - started);
        let (first, last) = *marks.lock().unwrap();
        if let (Some(first), Some(last)) = (first, last) {
            println!(
                "  run {run}: prefetch phases: before first byte {}, streaming+import {}, after last byte {}",
                secs(first - started),
                secs(last - first),
                secs(ended - last)
            );
        }
        anyhow::ensure!(report.bytes_fetched == big.total_layer_bytes());

        let started = Instant::now();
        let outcome = backend
            .stage(&OsChange {
                image: Some(image.clone()),
                ..Default::default()
            })
            .await?;
        stage_times.push(started.elapsed());
        anyhow::ensure!(!outcome.is_unchanged());
        println!(
            "  run {run}: skopeo copy {}  prefetch {}  stage {}",
            secs(skopeo_times[run]),
            secs(prefetch_times[run]),
            secs(stage_times[run])
        );
    }
    let (p, s) = (median(prefetch_times), median(skopeo_times));
    println!("  median skopeo copy to oci:       {}", secs(s));
    println!("  median prefetch (ostree import)  {}", secs(p));
    println!(
        "  ratio prefetch / skopeo          {:.2}  (target <= 1.2)",
        p.as_secs_f64() / s.as_secs_f64()
    );
    testbed::figures::record(&testbed::figures::Figure::at_most(
        "P8",
        &format!("prefetch of a {payload_mb} MiB image / skopeo copy of it (median of {runs})"),
        p.as_secs_f64() / s.as_secs_f64(),
        "ratio",
        1.2,
        format!(
            "prefetch {} vs skopeo copy {}; stage from the prefetched image {}",
            secs(p),
            secs(s),
            secs(median(stage_times.clone()))
        ),
    ))?;
    println!("## stage from the prefetched image (the node's OS downtime share)");
    println!(
        "  median stage                     {}",
        secs(median(stage_times))
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        // `cargo test --benches` asks harness=false benches to list tests; there are none.
        return Ok(());
    }
    let payload_mb = env_u64("OS_BENCH_PAYLOAD_MB", 200);
    let runs = env_u64("OS_BENCH_RUNS", 3) as usize;
    let lab = ImageLab::new()?;
    lab.build_base(&BaseSpec::new("small", "1.0")).await?;
    let registry = Registry::start()?;
    let node = NodeRoot::new()?;
    node.trust_insecure_registry(&registry)?;
    let env = Env {
        lab,
        registry,
        node,
    };
    top_layer_update(&env).await?;
    big_image(&env, payload_mb, runs).await?;
    Ok(())
}
