//! OS image pulls at scale, with real parts: chunked images built as ostree-ext builds RHCOS/FCOS images,
//! Debian's docker-registry on 127.0.0.1 (behind a link model where a test needs a slow or failing
//! network), sandbox sysroots (on a small tmpfs in a private mount namespace for the disk tests) and the
//! daemon's own binary as the ostree helper process. Root required. Small images: ~10 s in all.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use machine_config_daemon::os::{
    FetchProgress, HelperOptions, OsBackend, OsChange, OstreeBackend, OstreeBackendOptions,
    PullError, PullErrorKind, StageOutcome,
};
use testbed::{
    BaseSpec, ChunkedImages, ChunkedSpec, ImageLab, LayerSpec, Link, LinkModel, NodeRoot, Registry,
    SandboxSysroot,
};

const BIN: &str = env!("CARGO_BIN_EXE_machine-config-daemon");

/// Small chunked images pushed to a registry, a link in front of it, and a node root trusting both.
struct Net {
    _lab: ImageLab,
    images: ChunkedImages,
    registry: Registry,
    link: Link,
    node: NodeRoot,
}

impl Net {
    async fn chunked(name: &str, model: LinkModel) -> Result<Self> {
        let lab = ImageLab::new()?;
        let spec = ChunkedSpec::small(name);
        let images = lab.build_chunked(&spec).await?;
        let registry = Registry::start()?;
        registry.push(&lab, &spec.base_tag(), "os")?;
        registry.push(&lab, &spec.update_tag(), "os")?;
        let link = Link::start(&registry.addr(), model)?;
        let node = NodeRoot::new()?;
        node.write(
            "etc/containers/registries.conf",
            format!("{}{}", registry.registries_conf(), link.registries_conf()),
        )?;
        Ok(Self {
            _lab: lab,
            images,
            registry,
            link,
            node,
        })
    }

    fn base_via_link(&self) -> String {
        self.link.image("os", &self.images.spec.base_tag())
    }

    fn options(&self, sysroot: &SandboxSysroot, concurrency: usize) -> OstreeBackendOptions {
        OstreeBackendOptions {
            pull_concurrency: concurrency,
            ..OstreeBackendOptions::sandbox(sysroot.path(), self.node.path())
        }
    }
}

fn slow_link(bytes_per_sec: u64) -> LinkModel {
    LinkModel {
        rate_bytes_per_sec: bytes_per_sec,
        latency: Duration::from_millis(5),
        cut_after_bytes: None,
    }
}

fn pull_error(err: &anyhow::Error) -> &PullError {
    err.downcast_ref::<PullError>()
        .unwrap_or_else(|| panic!("not a PullError: {err:#}"))
}

/// Records progress events.
#[derive(Clone, Default)]
struct Progress(Arc<Mutex<Vec<FetchProgress>>>);

impl Progress {
    fn callback(&self) -> machine_config_daemon::os::ProgressFn {
        let sink = self.0.clone();
        Arc::new(move |p: &FetchProgress| sink.lock().unwrap().push(p.clone()))
    }

    fn events(&self) -> Vec<FetchProgress> {
        self.0.lock().unwrap().clone()
    }

    /// The most layers that were partly fetched at the same time.
    fn most_layers_in_flight(&self) -> usize {
        let mut latest = std::collections::BTreeMap::new();
        let mut most = 0;
        for p in self.events() {
            latest.insert(p.layer_index, (p.fetched, p.total));
            let partial = latest.values().filter(|(f, t)| *f > 0 && f < t).count();
            most = most.max(partial);
        }
        most
    }
}

fn repo_of(sysroot: &Path) -> PathBuf {
    sysroot.join("ostree/repo")
}

/// `ostree refs` of the sysroot's repo.
fn refs(sysroot: &Path) -> Vec<String> {
    let out = Command::new("ostree")
        .arg(format!("--repo={}", repo_of(sysroot).display()))
        .arg("refs")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut refs: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    refs.sort();
    refs
}

fn layer_refs(sysroot: &Path) -> Vec<String> {
    refs(sysroot)
        .into_iter()
        .filter(|r| r.starts_with("ostree/container/blob/"))
        .collect()
}

/// Every path of a commit with its mode and content checksum (`ostree ls -R -C`).
fn tree_listing(sysroot: &Path, commit: &str) -> String {
    let out = Command::new("ostree")
        .arg(format!("--repo={}", repo_of(sysroot).display()))
        .args(["ls", "-R", "-C", commit])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `ostree fsck`: every object's checksum verified.
fn fsck(sysroot: &Path) {
    let out = Command::new("ostree")
        .arg(format!("--repo={}", repo_of(sysroot).display()))
        .arg("fsck")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fsck: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn deployed(outcome: StageOutcome) -> machine_config_daemon::os::Deployment {
    match outcome {
        StageOutcome::Staged(d) => d,
        other => panic!("expected a new deployment, got {other:?}"),
    }
}

#[tokio::test]
async fn chunked_layers_are_fetched_in_parallel_with_the_result_of_a_serial_pull() -> Result<()> {
    // 150 kB/s per connection: a layer takes long enough that overlapping fetches show in the progress.
    let net = Net::chunked("par", slow_link(150_000)).await?;
    let base = &net.images.base;
    assert!(
        base.layers.len() >= 8,
        "a chunked image: {} layers",
        base.layers.len()
    );

    let mut checksums = Vec::new();
    for (concurrency, image) in [
        (1, net.registry.image("os", &net.images.spec.base_tag())),
        (4, net.base_via_link()),
    ] {
        let sysroot = SandboxSysroot::create("default")?;
        let backend = OstreeBackend::new(net.options(&sysroot, concurrency));
        let progress = Progress::default();
        let report = backend.prefetch(&image, Some(progress.callback())).await?;
        assert_eq!(report.layers_fetched, base.layers.len());
        assert_eq!(report.bytes_fetched, base.total_layer_bytes());
        let last = progress
            .events()
            .last()
            .cloned()
            .expect("progress was reported");
        assert_eq!(
            (
                last.bytes_done,
                last.bytes_to_fetch,
                last.layers_done,
                last.layers_to_fetch
            ),
            (
                base.total_layer_bytes(),
                base.total_layer_bytes(),
                base.layers.len(),
                base.layers.len()
            )
        );
        let in_flight = progress.most_layers_in_flight();
        if concurrency == 1 {
            assert!(
                in_flight <= 1,
                "one at a time, yet {in_flight} layers were in flight"
            );
        } else {
            assert!(
                in_flight >= 2,
                "{concurrency} workers, but at most {in_flight} layer in flight"
            );
        }
        let d = deployed(
            backend
                .stage(&OsChange {
                    image: Some(image.clone()),
                    ..Default::default()
                })
                .await?,
        );
        assert_eq!(
            d.image_digest.as_deref(),
            Some(base.manifest_digest.as_str())
        );
        fsck(sysroot.path());
        assert!(
            sysroot
                .deployment_root(&d.id())
                .join("usr/lib/pkgs/pkg000/d0/f0")
                .is_file(),
            "package content deployed"
        );
        checksums.push(tree_listing(sysroot.path(), &d.checksum));

        // The z-stream update fetches exactly the changed layers (and the config).
        let mark = net.registry.mark()?;
        let update = net.registry.image("os", &net.images.spec.update_tag());
        let report = backend.prefetch(&update, None).await?;
        assert_eq!(report.layers_fetched, net.images.changed_layers.len());
        assert_eq!(report.bytes_fetched, net.images.changed_layer_bytes());
        let mut fetched: Vec<String> = net
            .registry
            .access_log_since(mark)?
            .iter()
            .filter(|e| e.is_blob_get())
            .filter_map(|e| e.digest().map(str::to_string))
            .collect();
        fetched.sort();
        let mut expected: Vec<String> = net
            .images
            .changed_layers
            .iter()
            .map(|l| l.digest.clone())
            .chain([net.images.update.config.digest.clone()])
            .collect();
        expected.sort();
        assert_eq!(fetched, expected);
        fsck(sysroot.path());
    }
    // (The merged commits differ: ostree-ext writes their metadata from a HashMap, in any order.)
    assert!(checksums[0].lines().count() > 100);
    assert_eq!(
        checksums[0], checksums[1],
        "the parallel pull deploys the same tree as the serial one"
    );
    Ok(())
}

#[tokio::test]
async fn a_pull_cut_off_midway_leaves_no_layer_refs_and_a_retry_completes() -> Result<()> {
    let net = Net::chunked("cut", slow_link(2_000_000)).await?;
    let total = net.images.base.total_layer_bytes();
    net.link.set_model(LinkModel {
        cut_after_bytes: Some(total * 2 / 5),
        ..net.link.model()
    });
    let sysroot = SandboxSysroot::create("default")?;
    let backend = OstreeBackend::new(net.options(&sysroot, 4));
    let refs_before = refs(sysroot.path());
    let err = backend
        .prefetch(&net.base_via_link(), None)
        .await
        .expect_err("the link was cut");
    let pe = pull_error(&err);
    eprintln!("{err}\n  chain: {}", pe.chain);
    assert_eq!(pe.kind, PullErrorKind::Interrupted, "{err:#}");
    let fetched = pe.fetched.expect("says how far it got");
    assert_eq!(fetched.bytes_total, total);
    assert!(
        fetched.bytes < total && fetched.layers < fetched.layers_total,
        "{fetched:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("fetched") && msg.contains("removed again"),
        "{msg}"
    );
    assert_eq!(
        refs(sysroot.path()),
        refs_before,
        "no layer refs left behind"
    );

    // The network is back: the retry pulls everything and the repo is sound.
    net.link.set_model(slow_link(50_000_000));
    let report = backend.prefetch(&net.base_via_link(), None).await?;
    assert_eq!(report.layers_fetched, net.images.base.layers.len());
    fsck(sysroot.path());
    Ok(())
}

/// Run `work` in a thread with a private mount namespace where `dir` is a tmpfs of `mib` MiB (nothing
/// is mounted for the rest of the machine; the mount goes away with the thread).
fn on_small_disk<T: Send>(mib: u64, work: impl FnOnce(&Path) -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            use nix::mount::{MsFlags, mount};
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )?;
            let dir = tempfile::tempdir()?;
            mount(
                Some("tmpfs"),
                dir.path(),
                Some("tmpfs"),
                MsFlags::empty(),
                Some(format!("size={mib}m").as_str()),
            )
            .context("mounting a tmpfs")?;
            work(dir.path())
        })
        .join()
        .expect("the small-disk thread panicked")
    })
}

fn free_bytes(path: &Path) -> u64 {
    let st = rustix::fs::statvfs(path).unwrap();
    st.f_bavail * st.f_frsize
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn an_image_that_cannot_fit_is_refused_before_anything_is_fetched() -> Result<()> {
    let lab = ImageLab::new()?;
    block_on(lab.build_base(&BaseSpec::new("base", "1.0")))?;
    let big = lab.derive(
        "base",
        "big",
        &[LayerSpec::new("RUN install firmware").random_file("usr/lib/firmware/blob", 20 << 20)],
        Some("2"),
    )?;
    let registry = Registry::start()?;
    registry.push(&lab, "big", "os")?;
    let node = NodeRoot::new()?;
    node.trust_insecure_registry(&registry)?;
    on_small_disk(48, |disk| {
        let sysroot = SandboxSysroot::create_at(&disk.join("sysroot"), "default")?;
        let backend =
            OstreeBackend::new(OstreeBackendOptions::sandbox(sysroot.path(), node.path()));
        let before = (sysroot.snapshot()?, refs(sysroot.path()));
        let mark = registry.mark()?;
        let err = block_on(backend.prefetch(&registry.image("os", "big"), None))
            .expect_err("20 MB compressed cannot fit in 48 MiB");
        let pe = pull_error(&err);
        assert_eq!(pe.kind, PullErrorKind::NoSpace, "{err:#}");
        let msg = err.to_string();
        eprintln!("{msg}");
        assert!(
            msg.contains("not enough disk space (needs about")
                && msg.contains("to download")
                && msg.contains("unpacked) but")
                && msg.contains(&repo_of(sysroot.path()).display().to_string())
                && msg.contains("free"),
            "{msg}"
        );
        let layer_gets: Vec<_> = registry
            .access_log_since(mark)?
            .into_iter()
            .filter(|e| {
                e.is_blob_get()
                    && big
                        .layers
                        .iter()
                        .any(|l| Some(l.digest.as_str()) == e.digest())
            })
            .collect();
        assert!(
            layer_gets.is_empty(),
            "no layer was fetched: {layer_gets:?}"
        );
        assert_eq!(
            (sysroot.snapshot()?, refs(sysroot.path())),
            before,
            "nothing written"
        );
        Ok(())
    })
}

#[test]
fn a_pull_that_runs_out_of_space_midway_removes_what_it_wrote() -> Result<()> {
    let lab = ImageLab::new()?;
    block_on(lab.build_base(&BaseSpec::new("base", "1.0")))?;
    // Zeros compress ~1000x, so the preflight's estimate passes and the disk fills during the import.
    let layers: Vec<LayerSpec> = (0..5)
        .map(|i| {
            let mut data = vec![0u8; 12 << 20];
            data[..8].copy_from_slice(&(i as u64).to_le_bytes());
            LayerSpec::new(&format!("RUN layer {i}")).file(&format!("usr/share/zeros{i}"), data)
        })
        .collect();
    let img = lab.derive("base", "zeros", &layers, Some("3"))?;
    let registry = Registry::start()?;
    registry.push(&lab, "zeros", "os")?;
    let node = NodeRoot::new()?;
    node.trust_insecure_registry(&registry)?;
    on_small_disk(40, |disk| {
        let sysroot = SandboxSysroot::create_at(&disk.join("sysroot"), "default")?;
        let backend =
            OstreeBackend::new(OstreeBackendOptions::sandbox(sysroot.path(), node.path()));
        let free_before = free_bytes(disk);
        let refs_before = refs(sysroot.path());
        let err = block_on(backend.prefetch(&registry.image("os", "zeros"), None))
            .expect_err("60 MiB unpacked cannot fit in 40 MiB");
        let pe = pull_error(&err);
        eprintln!("{err}\n  chain: {}", pe.chain);
        assert_eq!(pe.kind, PullErrorKind::NoSpace, "{err:#}");
        let fetched = pe.fetched.expect("says how far it got");
        assert_eq!(fetched.layers_total, img.layers.len());
        assert!(fetched.layers < fetched.layers_total, "{fetched:?}");
        assert!(err.to_string().contains("removed again"), "{err}");
        assert_eq!(
            refs(sysroot.path()),
            refs_before,
            "no layer refs left behind"
        );
        let free_after = free_bytes(disk);
        assert!(
            free_after + (1 << 20) >= free_before,
            "the space is given back: {free_before} B free before, {free_after} B after"
        );
        Ok(())
    })
}

/// A helper executable: a script that records each start and then behaves as `body` says before
/// (maybe) running the real binary.
struct HelperScript {
    dir: tempfile::TempDir,
}

impl HelperScript {
    fn new(body: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let script = format!(
            "#!/bin/sh\necho $$ >> {d}/starts\n{}\nexec {BIN} \"$@\"\n",
            body.replace("{dir}", &d.to_string())
        );
        let path = dir.path().join("helper");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { dir }
    }

    fn options(&self, idle_timeout: Duration) -> HelperOptions {
        HelperOptions {
            exe: self.dir.path().join("helper"),
            idle_timeout,
        }
    }

    fn pids(&self, file: &str) -> Vec<i32> {
        std::fs::read_to_string(self.dir.path().join(file))
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect()
    }

    fn starts(&self) -> usize {
        self.pids("starts").len()
    }
}

fn alive_now(pid: i32) -> bool {
    // A zombie is not alive: it has exited and waits to be reaped.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// Still alive after a moment (a SIGKILL is delivered asynchronously).
fn alive(pid: i32) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while alive_now(pid) {
        if std::time::Instant::now() > deadline {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Some process of the group is still alive after a moment.
fn group_alive(pgid: i32) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while group_alive_now(pgid) {
        if std::time::Instant::now() > deadline {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn group_alive_now(pgid: i32) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // Fields after the command: state ppid pgrp …
        let rest: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        rest.get(2) == Some(&pgid.to_string().as_str()) && rest.first() != Some(&"Z")
    })
}

/// A base image in a registry, and a fresh sysroot with a node root trusting it.
struct Plain {
    _lab: ImageLab,
    registry: Registry,
    node: NodeRoot,
    sysroot: SandboxSysroot,
}

impl Plain {
    async fn new() -> Result<Self> {
        let lab = ImageLab::new()?;
        lab.build_base(&BaseSpec::new("base", "1.0")).await?;
        let registry = Registry::start()?;
        registry.push(&lab, "base", "os")?;
        let node = NodeRoot::new()?;
        node.trust_insecure_registry(&registry)?;
        Ok(Self {
            _lab: lab,
            registry,
            node,
            sysroot: SandboxSysroot::create("default")?,
        })
    }

    fn backend(&self, helper: HelperOptions) -> OstreeBackend {
        OstreeBackend::new(
            OstreeBackendOptions::sandbox(self.sysroot.path(), self.node.path()).in_helper(helper),
        )
    }
}

#[tokio::test]
async fn the_helper_process_does_the_ostree_work_and_status_is_cached_until_deployments_change()
-> Result<()> {
    let fx = Plain::new().await?;
    let script = HelperScript::new("");
    let backend = fx.backend(script.options(Duration::from_secs(60)));
    let image = fx.registry.image("os", "base");

    assert_eq!(backend.status().await?, Default::default());
    assert_eq!(script.starts(), 1);
    let progress = Progress::default();
    let report = backend.prefetch(&image, Some(progress.callback())).await?;
    assert_eq!(report.layers_fetched, 1);
    let last = progress
        .events()
        .last()
        .cloned()
        .expect("progress crosses the pipe");
    assert_eq!((last.layers_done, last.layers_to_fetch), (1, 1));
    assert_eq!(script.starts(), 2);

    let d = deployed(
        backend
            .stage(&OsChange {
                image: Some(image.clone()),
                ..Default::default()
            })
            .await?,
    );
    assert_eq!(script.starts(), 3);
    let status = backend.status().await?;
    assert_eq!(
        status.pending.as_ref().map(|p| p.id()),
        Some(d.id()),
        "a new status after the stage"
    );
    assert_eq!(script.starts(), 4);
    assert_eq!(backend.status().await?, status);
    assert_eq!(script.starts(), 4, "nothing changed: the cached status");

    // Another writer (ostree admin) changes the deployments: the status is read again.
    let out = Command::new("ostree")
        .args(["admin", "undeploy", "0", "--sysroot"])
        .arg(fx.sysroot.path())
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(backend.status().await?.pending, None);
    assert_eq!(script.starts(), 5);

    // Errors keep their type across the pipe.
    let err = backend
        .prefetch(&fx.registry.image("os", "nope"), None)
        .await
        .unwrap_err();
    assert_eq!(pull_error(&err).kind, PullErrorKind::NotFound, "{err:#}");
    Ok(())
}

#[tokio::test]
async fn a_crashed_helper_is_a_clear_error_and_is_tried_once_more() -> Result<()> {
    let fx = Plain::new().await?;
    let image = fx.registry.image("os", "base");

    let once = HelperScript::new(
        "if [ ! -e {dir}/crashed ]; then : > {dir}/crashed; ulimit -c 0; kill -SEGV $$; fi",
    );
    let report = fx
        .backend(once.options(Duration::from_secs(60)))
        .prefetch(&image, None)
        .await?;
    assert_eq!(report.layers_fetched, 1, "the second helper did the pull");
    assert_eq!(once.starts(), 2);

    let always = HelperScript::new("ulimit -c 0; kill -SEGV $$");
    let before = fx.sysroot.snapshot()?;
    let err = fx
        .backend(always.options(Duration::from_secs(60)))
        .status()
        .await
        .expect_err("the helper always crashes");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("failed twice in a row")
            && msg.contains("was killed by signal 11")
            && msg.contains("without answering"),
        "{msg}"
    );
    assert_eq!(always.starts(), 2);
    assert_eq!(fx.sysroot.snapshot()?, before);
    Ok(())
}

#[tokio::test]
async fn a_hung_helper_is_killed_with_its_children_and_tried_once_more() -> Result<()> {
    let fx = Plain::new().await?;
    let image = fx.registry.image("os", "base");
    let hang = "sleep 1000 & echo $! >> {dir}/sleepers; wait";

    let once = HelperScript::new(&format!(
        "if [ ! -e {{dir}}/hung ]; then : > {{dir}}/hung; {hang}; fi"
    ));
    let report = fx
        .backend(once.options(Duration::from_secs(1)))
        .prefetch(&image, None)
        .await?;
    assert_eq!(report.layers_fetched, 1);
    assert_eq!(once.starts(), 2);
    for pid in once.pids("sleepers").into_iter().chain(once.pids("starts")) {
        assert!(
            !alive(pid),
            "process {pid} of the hung helper is still alive"
        );
    }

    let always = HelperScript::new(hang);
    let err = fx
        .backend(always.options(Duration::from_secs(1)))
        .prefetch(&image, None)
        .await
        .expect_err("the helper always hangs");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("sent nothing for 1 s and was killed") && msg.contains("failed twice"),
        "{msg}"
    );
    for pid in always
        .pids("sleepers")
        .into_iter()
        .chain(always.pids("starts"))
    {
        assert!(
            !alive(pid),
            "process {pid} of the hung helper is still alive"
        );
    }
    Ok(())
}

#[tokio::test]
async fn dropping_a_pull_stops_its_helper_which_removes_what_it_fetched() -> Result<()> {
    let net = Net::chunked("stop", slow_link(60_000)).await?;
    let sysroot = SandboxSysroot::create("default")?;
    let script = HelperScript::new("");
    let backend = OstreeBackend::new(
        net.options(&sysroot, 4)
            .in_helper(script.options(Duration::from_secs(60))),
    );
    let progress = Progress::default();
    let midway = {
        let progress = progress.clone();
        async move {
            while !progress.events().iter().any(|p| p.bytes_done > 0) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let image = net.base_via_link();
    tokio::select! {
        r = backend.prefetch(&image, Some(progress.callback())) => {
            panic!("the pull should still be running: {r:?}")
        }
        // What the daemon does on SIGTERM: it stops waiting, and the pull's future is dropped.
        _ = midway => {}
    }
    let helper = script.pids("starts")[0];
    assert!(!alive(helper), "the helper stopped");
    assert!(!group_alive(helper), "no skopeo of the helper is left");
    assert!(
        layer_refs(sysroot.path()).is_empty(),
        "no layer refs left behind"
    );

    net.link.set_model(slow_link(50_000_000));
    let report = backend.prefetch(&net.base_via_link(), None).await?;
    assert_eq!(report.layers_fetched, net.images.base.layers.len());
    fsck(sysroot.path());
    Ok(())
}
