//! Fetching an image's missing layers several at a time.
//!
//! ostree-ext 0.15.3's `ImageImporter::import` fetches and imports one layer after the other over its
//! one image proxy. The skopeo proxy protocol allows several `GetBlob`s in flight, but skopeo serves
//! its socket one request at a time and `FinishPipe` blocks it until that blob has been written out
//! (skopeo `cmd/skopeo/proxy.go`, `FinishPipe`; the pipe is only closed there), and the Rust client
//! holds the socket for the whole request (containers-image-proxy 0.7.1, `impl_request`). So one proxy
//! streams one blob at a time; each worker here has a proxy (a skopeo process) of its own.
//!
//! Each worker imports with the same public ostree-ext functions the importer uses inside
//! (`tar::import_tar_objects` for the object-set chunks, `tar::import_tar` for the commit layer,
//! `tar::write_tar` for derived layers), into a `Repo` of its own so that each layer is one ostree
//! transaction, and writes the layer ref the importer would (`ManifestLayerState::ostree_ref`) only after
//! skopeo has verified the blob's digest. `ImageImporter::import` then finds every layer present and only
//! writes the merged image commit.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use ostree_ext::containers_image_proxy::{ImageProxy, ImageProxyConfig, OpenedImage};
use ostree_ext::oci_spec::image::Descriptor;
use ostree_ext::ostree::{self, gio};
use ostree_ext::prelude::*;
use tokio::sync::watch;

use super::layer_stream::{Compression, LayerStream};
use super::{FetchProgress, ProgressFn};

/// What a layer holds, which decides how it is imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LayerKind {
    /// A chunk of the ostree commit's content objects.
    ObjectSet,
    /// The layer with the ostree commit object itself.
    Commit,
    /// A non-ostree layer on top (`RUN dnf install …`).
    Derived,
}

/// One layer to fetch.
#[derive(Debug, Clone)]
pub(crate) struct LayerJob {
    /// Position in the manifest's layer list.
    pub index: usize,
    pub descriptor: Descriptor,
    pub ostree_ref: String,
    pub kind: LayerKind,
    pub compression: Compression,
}

/// Where and how to fetch.
pub(crate) struct FetchContext<'a> {
    /// The repo's path: each worker opens it again, so its transactions are its own.
    pub repo_path: PathBuf,
    /// What each worker's proxy opens (pinned to the prepared manifest's digest for registries).
    pub image_ref: String,
    /// A proxy configuration (pull secret, registries.conf) for each worker.
    pub proxy_config: &'a dyn Fn() -> Result<ImageProxyConfig>,
    /// Workers, i.e. layers in flight at once.
    pub concurrency: usize,
    /// ostree remote that signs the commit (`ostree-remote-image:` references).
    pub remote: Option<String>,
    /// The base commit when its layers are already in the repo (derived layers are labelled from it).
    pub base_commit: Option<String>,
    /// Set to stop: fetches in flight are abandoned.
    pub cancel: watch::Receiver<bool>,
}

/// Counters of one pull, shared by the workers, the progress reporter and the error message.
pub(crate) struct PullTracker {
    image: String,
    layers: Vec<LayerCounter>,
    /// Import threads still holding a layer stream (they finish after their fetch is abandoned).
    in_flight: Arc<AtomicUsize>,
}

struct LayerCounter {
    index: usize,
    digest: String,
    total: u64,
    received: Arc<AtomicU64>,
    done: AtomicBool,
}

/// Totals for progress and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Totals {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub layers_done: usize,
    pub layers_total: usize,
}

impl PullTracker {
    pub(crate) fn new(image: &str, jobs: &[LayerJob]) -> Self {
        Self {
            image: image.to_string(),
            layers: jobs
                .iter()
                .map(|j| LayerCounter {
                    index: j.index,
                    digest: j.descriptor.digest().to_string(),
                    total: j.descriptor.size(),
                    received: Arc::default(),
                    done: AtomicBool::new(false),
                })
                .collect(),
            in_flight: Arc::default(),
        }
    }

    fn fetched(c: &LayerCounter) -> u64 {
        if c.done.load(Ordering::Relaxed) {
            c.total
        } else {
            c.received.load(Ordering::Relaxed).min(c.total)
        }
    }

    pub(crate) fn totals(&self) -> Totals {
        let mut t = Totals {
            layers_total: self.layers.len(),
            ..Default::default()
        };
        for c in &self.layers {
            t.bytes_total += c.total;
            t.bytes_done += Self::fetched(c);
            t.layers_done += usize::from(c.done.load(Ordering::Relaxed));
        }
        t
    }

    fn progress(&self, i: usize, totals: Totals) -> FetchProgress {
        let c = &self.layers[i];
        FetchProgress {
            image: self.image.clone(),
            layer_index: c.index,
            layer_digest: c.digest.clone(),
            fetched: Self::fetched(c),
            total: c.total,
            bytes_done: totals.bytes_done,
            bytes_to_fetch: totals.bytes_total,
            layers_done: totals.layers_done,
            layers_to_fetch: totals.layers_total,
        }
    }

    /// Wait (bounded) until no import thread holds a layer stream any more, so nothing writes into the
    /// repo behind a cleanup.
    pub(crate) async fn wait_idle(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Report progress every `every` until dropped: layers whose byte count changed, and a summary line
    /// in the log every 10 s.
    pub(crate) async fn report(&self, progress: Option<&ProgressFn>, every: Duration) {
        let mut last: Vec<u64> = vec![u64::MAX; self.layers.len()];
        let mut last_log = Instant::now();
        loop {
            let totals = self.totals();
            for (i, c) in self.layers.iter().enumerate() {
                let now = Self::fetched(c);
                if now == last[i] || (now == 0 && last[i] == u64::MAX) {
                    continue;
                }
                last[i] = now;
                if let Some(cb) = progress {
                    cb(&self.progress(i, totals));
                }
            }
            if last_log.elapsed() >= Duration::from_secs(10) {
                last_log = Instant::now();
                tracing::info!(
                    image = %self.image,
                    bytes_done = totals.bytes_done,
                    bytes_total = totals.bytes_total,
                    layers_done = totals.layers_done,
                    layers_total = totals.layers_total,
                    "pulling OS image layers"
                );
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Byte progress of a layer ostree-ext's importer fetches itself.
    pub(crate) fn record_fetched(&self, layer_index: usize, fetched: u64) {
        if let Some(c) = self.layers.iter().find(|c| c.index == layer_index) {
            c.received.store(fetched, Ordering::Relaxed);
            if fetched >= c.total {
                c.done.store(true, Ordering::Relaxed);
            }
        }
    }

    fn finish_layer(&self, job: usize, progress: Option<&ProgressFn>) {
        let c = &self.layers[job];
        c.done.store(true, Ordering::Relaxed);
        let totals = self.totals();
        tracing::info!(
            image = %self.image,
            layer = %c.digest,
            bytes = c.total,
            layers_done = totals.layers_done,
            layers_total = totals.layers_total,
            "layer fetched"
        );
        if let Some(cb) = progress {
            cb(&self.progress(job, totals));
        }
    }
}

/// Holds a count up while an import thread owns a layer stream.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A layer stream that keeps its [`InFlight`] count for as long as the importer holds it.
struct Tracked<S> {
    inner: S,
    _in_flight: InFlight,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// Layers and the ostree commits they became, as `(job index, commit)`.
pub(crate) type Imported = Vec<(usize, String)>;

/// Fetch and import `jobs` with up to `ctx.concurrency` in flight. Object-set and commit layers go
/// first; derived layers wait for the base they are labelled from. The first failure stops the rest.
pub(crate) async fn fetch_layers(
    ctx: &FetchContext<'_>,
    jobs: &[LayerJob],
    tracker: &PullTracker,
    progress: Option<&ProgressFn>,
) -> Result<Imported> {
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    // Base layers first, biggest first within each group: the longest fetches start early.
    order.sort_by_key(|&i| {
        (
            jobs[i].kind == LayerKind::Derived,
            std::cmp::Reverse(jobs[i].descriptor.size()),
        )
    });
    let queue = RefCell::new(order.into_iter().collect::<VecDeque<_>>());
    let base_left = Cell::new(jobs.iter().filter(|j| j.kind != LayerKind::Derived).count());
    let base_commit = RefCell::new(ctx.base_commit.clone());
    let (base_ready_tx, base_ready) = watch::channel(base_left.get() == 0);
    let (abort_tx, abort) = watch::channel(false);
    let imported: RefCell<Imported> = RefCell::default();
    let first_error: RefCell<Option<anyhow::Error>> = RefCell::default();

    let shared = Shared {
        ctx,
        jobs,
        tracker,
        progress,
        queue: &queue,
        base_left: &base_left,
        base_commit: &base_commit,
        base_ready_tx: &base_ready_tx,
        imported: &imported,
    };
    let workers = ctx.concurrency.clamp(1, jobs.len().max(1));
    let run = futures::future::join_all((0..workers).map(|n| {
        let shared = &shared;
        let abort_tx = &abort_tx;
        let first_error = &first_error;
        let mut abort = abort.clone();
        let mut base_ready = base_ready.clone();
        let mut cancel = ctx.cancel.clone();
        async move {
            let result = tokio::select! {
                r = worker(shared, n, &mut base_ready) => r,
                Ok(_) = abort.wait_for(|a| *a) => Ok(()),
                Ok(_) = cancel.wait_for(|c| *c) => Err(anyhow!("stopped: the daemon is stopping")),
            };
            if let Err(e) = result {
                first_error.borrow_mut().get_or_insert(e);
                let _ = abort_tx.send(true);
            }
        }
    }));
    let reporter = tracker.report(progress, Duration::from_millis(250));
    tokio::select! {
        _ = run => {}
        _ = reporter => unreachable!("the reporter runs until dropped"),
    }
    if let Some(e) = first_error.into_inner() {
        return Err(e);
    }
    Ok(imported.into_inner())
}

struct Shared<'a> {
    ctx: &'a FetchContext<'a>,
    jobs: &'a [LayerJob],
    tracker: &'a PullTracker,
    progress: Option<&'a ProgressFn>,
    queue: &'a RefCell<VecDeque<usize>>,
    base_left: &'a Cell<usize>,
    base_commit: &'a RefCell<Option<String>>,
    base_ready_tx: &'a watch::Sender<bool>,
    imported: &'a RefCell<Imported>,
}

/// A worker's connection: its own skopeo proxy with the image open.
struct Connection {
    proxy: ImageProxy,
    image: OpenedImage,
}

impl Connection {
    async fn open(ctx: &FetchContext<'_>) -> Result<Self> {
        let mut config = (ctx.proxy_config)()?;
        ostree_ext::container::merge_default_container_proxy_opts(&mut config)?;
        let proxy = ImageProxy::new_with_config(config)
            .await
            .context("Starting an image proxy (skopeo)")?;
        let image = proxy
            .open_image(&ctx.image_ref)
            .await
            .with_context(|| format!("Opening {}", ctx.image_ref))?;
        Ok(Self { proxy, image })
    }

    async fn close(self) {
        let _ = self.proxy.close_image(&self.image).await;
        if let Err(e) = self.proxy.finalize().await {
            tracing::debug!(error = %e, "image proxy did not exit cleanly");
        }
    }
}

async fn worker(
    shared: &Shared<'_>,
    n: usize,
    base_ready: &mut watch::Receiver<bool>,
) -> Result<()> {
    let ctx = shared.ctx;
    let repo = ostree::Repo::new(&gio::File::for_path(&ctx.repo_path));
    repo.open(gio::Cancellable::NONE)
        .with_context(|| format!("Opening the repo {}", ctx.repo_path.display()))?;
    let mut conn: Option<Connection> = None;
    loop {
        let Some(j) = shared.queue.borrow_mut().pop_front() else {
            break;
        };
        let job = &shared.jobs[j];
        if job.kind == LayerKind::Derived {
            base_ready
                .wait_for(|ready| *ready)
                .await
                .map_err(|_| anyhow!("the base layers were not imported"))?;
        }
        if conn.is_none() {
            conn = Some(Connection::open(ctx).await?);
        }
        let c = conn.as_ref().expect("connected above");
        tracing::debug!(worker = n, layer = %job.descriptor.digest(), "fetching layer");
        let base = shared.base_commit.borrow().clone();
        let commit = fetch_one(
            ctx,
            c,
            &repo,
            job,
            &shared.tracker.layers[j],
            shared.tracker,
            base,
        )
        .await
        .with_context(|| format!("Layer {}", job.descriptor.digest()))?;
        shared.tracker.finish_layer(j, shared.progress);
        if job.kind == LayerKind::Commit {
            *shared.base_commit.borrow_mut() = Some(commit.clone());
        }
        if job.kind != LayerKind::Derived {
            shared.base_left.set(shared.base_left.get() - 1);
            if shared.base_left.get() == 0 {
                let _ = shared.base_ready_tx.send(true);
            }
        }
        shared.imported.borrow_mut().push((j, commit));
    }
    if let Some(c) = conn {
        c.close().await;
    }
    Ok(())
}

/// Fetch one layer and import it; the layer ref is written once skopeo has verified the digest.
async fn fetch_one(
    ctx: &FetchContext<'_>,
    conn: &Connection,
    repo: &ostree::Repo,
    job: &LayerJob,
    counter: &LayerCounter,
    tracker: &PullTracker,
    base_commit: Option<String>,
) -> Result<String> {
    let d = &job.descriptor;
    let (blob, driver) = conn
        .proxy
        .get_blob(&conn.image, d.digest(), d.size())
        .await?;
    // Derived layers are decompressed by ostree-ext's own tar filter; the others here.
    let compression = match job.kind {
        LayerKind::Derived => Compression::None,
        _ => job.compression,
    };
    let stream = Tracked {
        inner: LayerStream::new(blob, compression, counter.received.clone())?,
        _in_flight: InFlight::new(&tracker.in_flight),
    };
    let import = async {
        match job.kind {
            LayerKind::ObjectSet => ostree_ext::tar::import_tar_objects(repo, stream).await,
            LayerKind::Commit => {
                let mut opts = ostree_ext::tar::TarImportOptions::default();
                opts.remote = ctx.remote.clone();
                ostree_ext::tar::import_tar(repo, stream, Some(opts)).await
            }
            LayerKind::Derived => {
                let base =
                    base_commit.ok_or_else(|| anyhow!("no base commit for a derived layer"))?;
                let opts = derived_layer_options(repo, &base)?;
                let r = ostree_ext::tar::write_tar(
                    repo,
                    stream,
                    d.media_type().clone(),
                    &job.ostree_ref,
                    Some(opts),
                )
                .await?;
                Ok(r.commit)
            }
        }
    };
    let driver = async { driver.await.map_err(anyhow::Error::from) };
    let (imported, verified) = tokio::join!(import, driver);
    let commit = match (imported, verified) {
        (Ok(commit), Ok(())) => commit,
        // Our side failed and closed the pipe: skopeo's broken pipe is only the echo of that.
        (Err(ours), Err(theirs)) if theirs.root_cause().to_string().ends_with("broken pipe") => {
            return Err(ours);
        }
        // skopeo failed first (network, digest); our import only saw the stream end early.
        (Err(ours), Err(theirs)) => {
            tracing::debug!(layer = %d.digest(), error = %format!("{ours:#}"), "import stopped after the proxy failed");
            return Err(theirs.context("proxy failure"));
        }
        (Ok(_), Err(theirs)) => {
            // write_tar already wrote the ref of a derived layer; it must not outlive the failure.
            drop_ref(repo, &job.ostree_ref);
            return Err(theirs.context("proxy failure"));
        }
        (Err(ours), Ok(())) => return Err(ours),
    };
    if job.kind != LayerKind::Derived {
        repo.set_ref_immediate(None, &job.ostree_ref, Some(&commit), gio::Cancellable::NONE)
            .with_context(|| format!("Writing ref {}", job.ostree_ref))?;
    }
    Ok(commit)
}

pub(crate) fn drop_ref(repo: &ostree::Repo, r: &str) {
    if let Err(e) = repo.set_ref_immediate(None, r, None, gio::Cancellable::NONE) {
        tracing::warn!(layer_ref = %r, error = %e, "could not drop a layer ref");
    }
}

/// The options ostree-ext's importer gives `write_tar` for a derived layer (`store.rs`,
/// `ImageImporter::import`): SELinux labels from the base commit's policy, content outside `/usr` only
/// when the base has a transient root, `/var` kept as is with ostree ≥ 2024.3.
fn derived_layer_options(
    repo: &ostree::Repo,
    base: &str,
) -> Result<ostree_ext::tar::WriteTarOptions> {
    let mut opts = ostree_ext::tar::WriteTarOptions::default();
    opts.base = Some(base.to_string());
    opts.selinux = true;
    opts.allow_nonusr = root_is_transient(repo, base)?;
    opts.retain_var = ostree::check_version(2024, 3);
    Ok(opts)
}

/// Whether the base's `prepare-root.conf` (in `etc/ostree/` or `usr/lib/ostree/`, first found) enables a
/// transient or composefs root (ostree-ext `ostree_prepareroot::overlayfs_root_enabled`).
fn root_is_transient(repo: &ostree::Repo, base: &str) -> Result<bool> {
    let (root, _) = repo
        .read_commit(base, gio::Cancellable::NONE)
        .context("Reading the base commit")?;
    for path in [
        "etc/ostree/prepare-root.conf",
        "usr/lib/ostree/prepare-root.conf",
    ] {
        let f = root.resolve_relative_path(path);
        if !f.query_exists(gio::Cancellable::NONE) {
            continue;
        }
        let (bytes, _) = f
            .load_contents(gio::Cancellable::NONE)
            .with_context(|| format!("Reading {path} of the base commit"))?;
        let kf = ostree_ext::glib::KeyFile::new();
        kf.load_from_data(
            std::str::from_utf8(&bytes).with_context(|| format!("{path} is not UTF-8"))?,
            ostree_ext::glib::KeyFileFlags::NONE,
        )
        .with_context(|| format!("Parsing {path} of the base commit"))?;
        return ostree_ext::ostree_prepareroot::overlayfs_enabled_in_config(&kf);
    }
    Ok(false)
}

/// What each worker opens: for a registry, the prepared manifest by digest, so a tag moved meanwhile
/// cannot mix two images.
pub(crate) fn pinned_reference(
    imgref: &ostree_ext::container::ImageReference,
    manifest_digest: &str,
) -> String {
    use ostree_ext::container::Transport;
    if imgref.transport != Transport::Registry {
        return imgref.to_string();
    }
    let name = &imgref.name;
    let repo = match name.split_once('@') {
        Some((repo, _)) => repo,
        None => {
            // A tag is a `:` after the last `/` (a `:` before it is a registry port).
            let last_slash = name.rfind('/').map_or(0, |i| i + 1);
            match name[last_slash..].rfind(':') {
                Some(i) => &name[..last_slash + i],
                None => name.as_str(),
            }
        }
    };
    format!("docker://{repo}@{manifest_digest}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ostree_ext::container::{ImageReference, Transport};

    #[test]
    fn registry_references_are_pinned_to_the_prepared_digest() {
        let r = |name: &str| ImageReference {
            transport: Transport::Registry,
            name: name.into(),
        };
        assert_eq!(
            pinned_reference(&r("127.0.0.1:5000/os:v2"), "sha256:ab"),
            "docker://127.0.0.1:5000/os@sha256:ab"
        );
        assert_eq!(
            pinned_reference(&r("quay.io/org/os@sha256:cd"), "sha256:cd"),
            "docker://quay.io/org/os@sha256:cd"
        );
        assert_eq!(
            pinned_reference(&r("127.0.0.1:5000/os"), "sha256:ab"),
            "docker://127.0.0.1:5000/os@sha256:ab"
        );
        let oci = ImageReference {
            transport: Transport::OciDir,
            name: "/tmp/oci:base".into(),
        };
        assert_eq!(pinned_reference(&oci, "sha256:ab"), "oci:/tmp/oci:base");
    }
}
