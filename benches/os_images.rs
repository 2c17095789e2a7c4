//! OS image benchmarks with real parts (built images, docker-registry on 127.0.0.1, sandbox sysroots).
//! Prints figures; asserts nothing. Run as root: `cargo bench --bench os_images`.
//!
//! P8/P9 pull a chunked OS image as ostree-ext builds them (~1 GiB, 64 layers; built once and kept in
//! `target/bench-cache/`) and its z-stream update through a WAN link model (25 MB/s per connection,
//! 20 ms per request), with us (serial and parallel), `podman pull` and `skopeo copy` side by side.
//! `OS_BENCH_CHUNKED_MB` sets the image's content size (default 1024), `OS_BENCH_CONCURRENCY` the layers
//! fetched at once (default the daemon's).

use std::time::{Duration, Instant};

use anyhow::Result;
use machine_config_daemon::os::{OsBackend, OstreeBackend, OstreeBackendOptions};
use testbed::{BaseSpec, ImageLab, LayerSpec, Link, LinkModel, NodeRoot, Registry, SandboxSysroot};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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

/// A timed run of an external command.
fn timed(cmd: &mut std::process::Command) -> Result<Duration> {
    let started = Instant::now();
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(started.elapsed())
}

/// Bytes the registry answered with since `mark` (GETs and HEADs that succeeded).
fn served(registry: &Registry, mark: testbed::LogMark) -> Result<(u64, usize)> {
    let log = registry.access_log_since(mark)?;
    let ok: Vec<_> = log.iter().filter(|e| e.status == 200).collect();
    Ok((ok.iter().map(|e| e.bytes).sum(), ok.len()))
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// One pull measured: wall time and what the registry served for it.
#[derive(Clone, Copy)]
struct Pull {
    took: Duration,
    bytes: u64,
}

impl Pull {
    fn show(&self) -> String {
        format!("{} ({} served)", secs(self.took), mb(self.bytes))
    }
}

/// `podman pull` of the first image, then the update, into a throwaway storage root.
fn podman_pulls(registry: &Registry, first: &str, update: &str) -> Result<(Pull, Pull)> {
    let dir = tempfile::tempdir()?;
    let podman = |image: &str| -> Result<Pull> {
        let mark = registry.mark()?;
        let mut cmd = std::process::Command::new("podman");
        cmd.arg("--root")
            .arg(dir.path().join("storage"))
            .arg("--runroot")
            .arg(dir.path().join("run"))
            .args([
                "--storage-driver=overlay",
                "--cgroup-manager=cgroupfs",
                "--events-backend=none",
                "--log-level=error",
                "pull",
                "--quiet",
                "--tls-verify=false",
            ])
            .arg(image);
        let took = timed(&mut cmd)?;
        Ok(Pull {
            took,
            bytes: served(registry, mark)?.0,
        })
    };
    let a = podman(first)?;
    let b = podman(update)?;
    // podman's storage keeps its own mounts and locks under the root; let it remove them.
    let _ = std::process::Command::new("podman")
        .arg("--root")
        .arg(dir.path().join("storage"))
        .arg("--runroot")
        .arg(dir.path().join("run"))
        .args([
            "--storage-driver=overlay",
            "--log-level=error",
            "system",
            "reset",
            "--force",
        ])
        .output();
    Ok((a, b))
}

/// `skopeo copy` of the first image, then the update, into one OCI directory (it reuses blobs).
fn skopeo_copies(registry: &Registry, first: &str, update: &str) -> Result<(Pull, Pull)> {
    let dir = tempfile::tempdir()?;
    let copy = |image: &str, tag: &str| -> Result<Pull> {
        let mark = registry.mark()?;
        let took = timed(
            std::process::Command::new("skopeo")
                .args([
                    "copy",
                    "--insecure-policy",
                    "--quiet",
                    "--src-tls-verify=false",
                ])
                .arg(format!("docker://{image}"))
                .arg(format!("oci:{}:{tag}", dir.path().display())),
        )?;
        Ok(Pull {
            took,
            bytes: served(registry, mark)?.0,
        })
    };
    Ok((copy(first, "first")?, copy(update, "update")?))
}

/// Our prefetch of the first image, then the update, into a fresh sandbox sysroot.
async fn our_pulls(
    env_node: &NodeRoot,
    registry: &Registry,
    first: &str,
    update: &str,
    concurrency: usize,
) -> Result<(Pull, Pull)> {
    let sysroot = SandboxSysroot::create("default")?;
    let backend = OstreeBackend::new(OstreeBackendOptions {
        pull_concurrency: concurrency,
        ..OstreeBackendOptions::sandbox(sysroot.path(), env_node.path())
    });
    let mut pulls = Vec::new();
    for image in [first, update] {
        let mark = registry.mark()?;
        let started = Instant::now();
        backend.prefetch(image, None).await?;
        let took = started.elapsed();
        pulls.push(Pull {
            took,
            bytes: served(registry, mark)?.0,
        });
    }
    Ok((pulls[0], pulls[1]))
}

/// P8/P9: a chunked OS image (ostree-ext layer budget, ~1 GiB) and its z-stream update, pulled through a
/// WAN link model by us (serial and parallel), podman and skopeo, in one run.
async fn chunked_pulls() -> Result<()> {
    let mut spec = testbed::ChunkedSpec::os_sized();
    spec.content_bytes = env_u64("OS_BENCH_CHUNKED_MB", spec.content_bytes >> 20) << 20;
    let concurrency = env_u64(
        "OS_BENCH_CONCURRENCY",
        machine_config_daemon::os::DEFAULT_PULL_CONCURRENCY as u64,
    ) as usize;
    let built = Instant::now();
    let cache =
        testbed::chunked::bench_cache_dir(&format!("chunked-os-{}m", spec.content_bytes >> 20));
    let (lab, images) = ImageLab::chunked_cached(&cache, &spec).await?;
    let build_time = built.elapsed();
    let registry = Registry::start()?;
    let pushed = Instant::now();
    registry.push(&lab, &spec.base_tag(), "os")?;
    registry.push(&lab, &spec.update_tag(), "os")?;
    let push_time = pushed.elapsed();
    let model = LinkModel::wan();
    let link = Link::start(&registry.addr(), model)?;
    let node = NodeRoot::new()?;
    node.write("etc/containers/registries.conf", link.registries_conf())?;
    let first = link.image("os", &spec.base_tag());
    let update = link.image("os", &spec.update_tag());
    let (base, upd) = (&images.base, &images.update);
    let changed = images.changed_layer_bytes() + upd.manifest_size + upd.config.size;
    println!("## chunked OS image through a link model");
    println!("  link model                      {}", model.describe());
    println!(
        "  image                           {} files, {} unpacked, {} layers, {} compressed (ratio {:.2}); built or loaded in {}, pushed in {}",
        images.files,
        mb(images.tree_bytes),
        base.layers.len(),
        mb(base.total_layer_bytes()),
        base.total_layer_bytes() as f64 / images.tree_bytes as f64,
        secs(build_time),
        secs(push_time)
    );
    println!(
        "  z-stream update                 {} of {} layers changed ({} packages), {} + manifest {} B + config {} B",
        images.changed_layers.len(),
        upd.layers.len(),
        images.changed_packages.len(),
        mb(images.changed_layer_bytes()),
        upd.manifest_size,
        upd.config.size
    );

    if let Ok(only) = std::env::var("OS_BENCH_ONLY_CONCURRENCY") {
        // Investigation: only our pulls, at one concurrency (with MCD_LOG for the per-layer log).
        let (a, b) = our_pulls(&node, &registry, &first, &update, only.parse()?).await?;
        println!(
            "  prefetch, {only} at a time: first {}, update {}",
            a.show(),
            b.show()
        );
        return Ok(());
    }
    let (skopeo_first, skopeo_update) = skopeo_copies(&registry, &first, &update)?;
    let (podman_first, podman_update) = podman_pulls(&registry, &first, &update)?;
    let (serial_first, serial_update) = our_pulls(&node, &registry, &first, &update, 1).await?;
    let (par_first, par_update) = our_pulls(&node, &registry, &first, &update, concurrency).await?;
    println!("  {:<32}{:<34}update pull", "", "first pull");
    for (name, a, b) in [
        (
            "skopeo copy to an OCI dir".to_string(),
            skopeo_first,
            skopeo_update,
        ),
        (
            "podman pull (overlay)".to_string(),
            podman_first,
            podman_update,
        ),
        (
            "prefetch, 1 layer at a time".to_string(),
            serial_first,
            serial_update,
        ),
        (
            format!("prefetch, {concurrency} layers at a time"),
            par_first,
            par_update,
        ),
    ] {
        println!("  {name:<32}{:<34}{}", a.show(), b.show());
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let context = format!(
        "{} layers, {} compressed, {} unpacked; link {}; load average {load}",
        base.layers.len(),
        mb(base.total_layer_bytes()),
        mb(images.tree_bytes),
        model.describe()
    );
    testbed::figures::record(&testbed::figures::Figure::at_most(
        "P8",
        "first pull of a chunked OS image over the link: prefetch / skopeo copy",
        ratio(par_first.took, skopeo_first.took),
        "ratio",
        1.2,
        format!(
            "prefetch {} vs skopeo copy {}; skopeo stores the compressed blobs only, the prefetch also \
             unpacks them into ostree objects (inflate, SHA-256 and a write per file: CPU-bound here); {context}",
            secs(par_first.took),
            secs(skopeo_first.took)
        ),
    ))?;
    testbed::figures::record(&testbed::figures::Figure::at_most(
        "P9a",
        "first pull of a chunked OS image over the link: prefetch / podman pull",
        ratio(par_first.took, podman_first.took),
        "ratio",
        1.3,
        format!(
            "prefetch {} ({concurrency} at a time; 1 at a time: {}) vs podman pull {}",
            secs(par_first.took),
            secs(serial_first.took),
            secs(podman_first.took)
        ),
    ))?;
    testbed::figures::record(&testbed::figures::Figure::at_most(
        "P9b",
        "z-stream update pull over the link: prefetch / podman pull",
        ratio(par_update.took, podman_update.took),
        "ratio",
        1.3,
        format!(
            "prefetch {} ({concurrency} at a time; 1 at a time: {}) vs podman pull {} (skopeo copy {})",
            secs(par_update.took),
            secs(serial_update.took),
            secs(podman_update.took),
            secs(skopeo_update.took)
        ),
    ))?;
    testbed::figures::record(&testbed::figures::Figure::at_most(
        "P9c",
        "bytes served for the update / (changed layers + manifest + config)",
        par_update.bytes as f64 / changed as f64,
        "ratio",
        1.05,
        format!(
            "registry served {} for {} changed ({} of {} layers); podman {}, skopeo {}",
            mb(par_update.bytes),
            mb(changed),
            images.changed_layers.len(),
            upd.layers.len(),
            mb(podman_update.bytes),
            mb(skopeo_update.bytes)
        ),
    ))?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        // `cargo test --benches` asks harness=false benches to list tests; there are none.
        return Ok(());
    }
    if let Ok(filter) = std::env::var("MCD_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
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
    chunked_pulls().await?;
    Ok(())
}
