//! Pulling an OS image into the repo: ostree-ext's `ImageImporter` prepares (manifest, config, which
//! layers are already present), the disk preflight checks the missing layers fit, [`super::fetch`]
//! fetches them several at a time, and `ImageImporter::import` writes the merged image commit.
//! A pull that fails or is cancelled midway removes what it wrote and says how far it got.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use ostree_ext::container::store::{
    ImageImporter, LayeredImageState, PrepareResult, PreparedImport,
};
use ostree_ext::container::{OstreeImageReference, SignatureSource, Transport};
use ostree_ext::ostree::{self, gio};
use tokio::sync::watch;

use super::error::{PartialPull, PullError, PullErrorKind};
use super::fetch::{self, FetchContext, LayerJob, LayerKind, PullTracker};
use super::layer_stream::Compression;
use super::preflight::{self, SpaceNeeded};
use super::{PrefetchReport, ProgressFn, ostree_image_reference, pull};

/// Layers fetched at once unless configured otherwise: what podman and skopeo use
/// (containers/image `copy.Options.MaxParallelDownloads`, default 6).
pub const DEFAULT_PULL_CONCURRENCY: usize = 6;

/// How a pull runs.
#[derive(Debug, Clone)]
pub(crate) struct PullOptions {
    /// Layers in flight at once (1: one after another).
    pub concurrency: usize,
    /// Becomes true to stop the pull (the daemon is stopping).
    pub cancel: watch::Receiver<bool>,
}

impl PullOptions {
    /// A pull nothing cancels (a closed channel never reads as cancelled).
    pub(crate) fn uncancellable(concurrency: usize) -> Self {
        let (_, rx) = watch::channel(false);
        Self {
            concurrency,
            cancel: rx,
        }
    }
}

pub(crate) fn parse_image(image: &str) -> Result<OstreeImageReference> {
    let full = ostree_image_reference(image);
    OstreeImageReference::try_from(full.as_str())
        .with_context(|| format!("Invalid OS image reference {image:?}"))
}

/// Pull every missing layer of `image` into `repo`, reporting progress.
pub(crate) async fn import_image(
    repo: &ostree::Repo,
    repo_path: &Path,
    image: &str,
    node_root: &Path,
    opts: &PullOptions,
    progress: Option<ProgressFn>,
) -> Result<(PrefetchReport, Box<LayeredImageState>)> {
    let imgref = parse_image(image)?;
    let as_pull_error = |e: anyhow::Error| anyhow::Error::new(PullError::classify(image, &e));
    let started = Instant::now();
    let mut importer = ImageImporter::new(
        repo,
        &imgref,
        pull::proxy_config(node_root, &imgref.imgref)?,
    )
    .await
    .map_err(as_pull_error)?;
    importer.require_bootable();
    let mut prep = match importer.prepare().await.map_err(as_pull_error)? {
        PrepareResult::AlreadyPresent(state) => {
            let layers = state.manifest.layers();
            let report = PrefetchReport {
                image: image.to_string(),
                image_digest: state.manifest_digest.to_string(),
                version: state.version().map(str::to_string),
                already_present: true,
                layers_total: layers.len(),
                layers_fetched: 0,
                layers_present: layers.len(),
                bytes_fetched: 0,
                bytes_total: layers.iter().map(|l| l.size()).sum(),
            };
            tracing::info!(image, digest = %report.image_digest, "image already in the repo");
            return Ok((report, state));
        }
        PrepareResult::Ready(prep) => prep,
    };

    let mut report = PrefetchReport {
        image: image.to_string(),
        image_digest: prep.manifest_digest.to_string(),
        version: prep.version().map(str::to_string),
        layers_total: prep.manifest.layers().len(),
        ..Default::default()
    };
    for layer in prep.all_layers() {
        let size = layer.layer().size();
        report.bytes_total += size;
        if layer.commit.is_some() {
            report.layers_present += 1;
        } else {
            report.layers_fetched += 1;
            report.bytes_fetched += size;
        }
    }
    let (jobs, compressions) = layer_jobs(&prep);
    let needed = SpaceNeeded::estimate(
        jobs.iter()
            .zip(&compressions)
            .map(|(j, c)| (j.descriptor.size(), *c)),
    );
    let free = preflight::free_space(repo_path, Some(&repo.config()))?;
    tracing::info!(
        image,
        digest = %prep.manifest_digest,
        layers_fetched = report.layers_fetched,
        layers_present = report.layers_present,
        bytes_to_fetch = needed.download,
        unpacked_estimate = needed.unpacked,
        free = free.usable(),
        concurrency = opts.concurrency,
        "fetching OS image layers"
    );
    if let Err(short) = preflight::check(needed, free, repo_path) {
        return Err(anyhow::Error::new(PullError {
            kind: PullErrorKind::NoSpace,
            image: image.to_string(),
            detail: short.to_string(),
            chain: format!("disk preflight: {short}"),
            fetched: None,
        }));
    }

    let tracker = PullTracker::new(image, &jobs);
    let parallel = imgref.imgref.transport != Transport::ContainerStorage
        && compressions.iter().all(Option::is_some);
    let mut cancel = opts.cancel.clone();
    let pulled: Result<Box<LayeredImageState>> = async {
        if parallel {
            let ctx = FetchContext {
                repo_path: repo_path.to_path_buf(),
                image_ref: fetch::pinned_reference(
                    &imgref.imgref,
                    prep.manifest_digest.as_ref(),
                ),
                proxy_config: &|| pull::proxy_config(node_root, &imgref.imgref),
                concurrency: opts.concurrency.max(1),
                remote: match &imgref.sigverify {
                    SignatureSource::OstreeRemote(r) => Some(r.clone()),
                    _ => None,
                },
                base_commit: prep.ostree_commit_layer.commit.clone(),
                cancel: opts.cancel.clone(),
            };
            let imported = fetch::fetch_layers(&ctx, &jobs, &tracker, progress.as_ref()).await?;
            record_commits(&mut prep, &jobs, imported);
        } else {
            tracing::info!(
                image,
                "fetching layers one at a time (ostree-ext's importer: containers-storage or a layer type we do not decompress)"
            );
        }
        // With every layer present this only writes the merged commit; else ostree-ext fetches the rest.
        let import = import_reporting_progress(importer, prep, &tracker, progress.as_ref());
        tokio::select! {
            r = import => r,
            Ok(_) = cancel.wait_for(|c| *c) => Err(anyhow!("stopped: the daemon is stopping")),
        }
    }
    .await;
    let state = match pulled {
        Ok(state) => state,
        Err(e) => {
            let totals = tracker.totals();
            forget_partial_pull(repo, &jobs, &tracker).await;
            let err = PullError::classify(image, &e).with_fetched(PartialPull {
                bytes: totals.bytes_done,
                bytes_total: totals.bytes_total,
                layers: totals.layers_done,
                layers_total: totals.layers_total,
            });
            tracing::warn!(image, error = %err, chain = %err.chain, "pull failed");
            return Err(anyhow::Error::new(err));
        }
    };
    report.image_digest = state.manifest_digest.to_string();
    report.version = state.version().map(str::to_string);
    tracing::info!(
        image,
        digest = %report.image_digest,
        bytes_fetched = report.bytes_fetched,
        layers_fetched = report.layers_fetched,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "OS image imported"
    );
    Ok((report, state))
}

/// One job per missing layer (a digest listed twice is fetched once), with each layer's compression
/// (`None`: a media type only ostree-ext's importer handles).
fn layer_jobs(prep: &PreparedImport) -> (Vec<LayerJob>, Vec<Option<Compression>>) {
    let manifest_layers = prep.manifest.layers();
    let mut jobs = Vec::new();
    let mut compressions = Vec::new();
    let groups = [
        (
            std::slice::from_ref(&prep.ostree_commit_layer),
            LayerKind::Commit,
        ),
        (&prep.ostree_layers[..], LayerKind::ObjectSet),
        (&prep.layers[..], LayerKind::Derived),
    ];
    for (states, kind) in groups {
        for state in states.iter().filter(|s| s.commit.is_none()) {
            let d = state.layer();
            if jobs
                .iter()
                .any(|j: &LayerJob| j.descriptor.digest() == d.digest())
            {
                continue;
            }
            let compression = Compression::of(d.media_type());
            jobs.push(LayerJob {
                index: manifest_layers.iter().position(|l| l == d).unwrap_or(0),
                descriptor: d.clone(),
                ostree_ref: state.ostree_ref.clone(),
                kind,
                compression: compression.unwrap_or(Compression::None),
            });
            compressions.push(compression);
        }
    }
    (jobs, compressions)
}

/// Mark the layers the workers imported as present, so `ImageImporter::import` does not fetch them.
fn record_commits(prep: &mut PreparedImport, jobs: &[LayerJob], imported: fetch::Imported) {
    for (j, commit) in imported {
        let r = &jobs[j].ostree_ref;
        let states = std::iter::once(&mut prep.ostree_commit_layer)
            .chain(prep.ostree_layers.iter_mut())
            .chain(prep.layers.iter_mut());
        for state in states.filter(|s| &s.ostree_ref == r) {
            state.commit = Some(commit.clone());
        }
    }
}

/// `ImageImporter::import`, with its byte progress (for layers it fetches itself) fed to the tracker.
async fn import_reporting_progress(
    mut importer: ImageImporter,
    prep: Box<PreparedImport>,
    tracker: &PullTracker,
    progress: Option<&ProgressFn>,
) -> Result<Box<LayeredImageState>> {
    let mut bytes = importer.request_layer_progress();
    let import = importer.import(prep);
    tokio::pin!(import);
    let reporter = tracker.report(progress, Duration::from_millis(250));
    tokio::pin!(reporter);
    loop {
        tokio::select! {
            r = &mut import => return r,
            changed = bytes.changed() => {
                if changed.is_err() {
                    // The importer dropped its end: it is finishing.
                    return (&mut import).await;
                }
                if let Some(p) = bytes.borrow_and_update().as_ref() {
                    tracker.record_fetched(p.layer_index, p.fetched);
                }
            }
            _ = &mut reporter => unreachable!("the reporter runs until dropped"),
        }
    }
}

/// After a failure: no import thread still writing, no ref to a layer of this pull, and the objects
/// they had written pruned (that is what frees the space after ENOSPC).
async fn forget_partial_pull(repo: &ostree::Repo, jobs: &[LayerJob], tracker: &PullTracker) {
    tracker.wait_idle(Duration::from_secs(60)).await;
    for j in jobs {
        fetch::drop_ref(repo, &j.ostree_ref);
    }
    match repo.prune(ostree::RepoPruneFlags::REFS_ONLY, 0, gio::Cancellable::NONE) {
        Ok((_, objects, bytes)) => {
            tracing::info!(objects, bytes, "removed what the failed pull had written")
        }
        Err(e) => tracing::warn!(error = %e, "could not prune after the failed pull"),
    }
}
