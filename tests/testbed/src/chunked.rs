//! Chunked OS images as ostree-ext builds them for RHCOS/FCOS: a tree of many files of mixed sizes
//! owned by "packages", committed with `ostree commit --bootable`, and encapsulated with a content map
//! and a layer budget (`ExportOpts::contentmeta` + `max_layers`, ostree-ext `chunking.rs`
//! `basic_packing`), so each layer holds whole packages. The update is a z-stream: a few packages
//! change, the build reuses the previous packing (`ExportOpts::prior_build`), and only the layers of
//! those packages (and the commit layer) get new digests.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;

use anyhow::{Context, Result, anyhow, ensure};
use fn_error_context::context;
use ocidir::cap_std::{ambient_authority, fs::Dir};
use ocidir::oci_spec::image::ImageManifest;
use ostree_ext::chunking::ObjectMetaSized;
use ostree_ext::container::{self as ostree_container, ImageReference, Transport};
use ostree_ext::objectsource::{ObjectMeta, ObjectSourceMeta};
use ostree_ext::ostree::{self, gio};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::cmd::run;
use crate::image::{BaseSpec, BlobInfo, BuiltImage, ImageLab, VERSION_LABEL, write_rootfs};

/// The annotation ostree-ext puts on each chunk layer: the packages in it, comma-separated
/// (`container/mod.rs` `CONTENT_ANNOTATION` / `COMPONENT_SEPARATOR`, crate-private).
const COMPONENTS_ANNOTATION: &str = "ostree.components";

/// What to build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkedSpec {
    /// Tags: `<name>-1.0` and `<name>-1.1`.
    pub name: String,
    pub packages: usize,
    /// Uncompressed bytes of package content (the tree is this plus a small base).
    pub content_bytes: u64,
    /// ostree-ext's layer budget (at most 64 chunks, plus the commit layer).
    pub max_layers: u32,
    /// Share of the chunk layers the update changes.
    pub changed_fraction: f64,
    pub seed: u64,
}

impl ChunkedSpec {
    /// What `make bench` pulls: ~1 GiB in 64 layers, 20% of them changed by the update.
    pub fn os_sized() -> Self {
        Self {
            name: "chunked".into(),
            packages: 600,
            content_bytes: 1 << 30,
            max_layers: 64,
            changed_fraction: 0.2,
            seed: 16,
        }
    }

    /// Small enough for a test (a few MB, a dozen layers).
    pub fn small(name: &str) -> Self {
        Self {
            name: name.into(),
            packages: 40,
            content_bytes: 3 << 20,
            max_layers: 12,
            changed_fraction: 0.25,
            seed: 7,
        }
    }

    pub fn base_tag(&self) -> String {
        format!("{}-1.0", self.name)
    }

    pub fn update_tag(&self) -> String {
        format!("{}-1.1", self.name)
    }
}

/// The two images and what differs between them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkedImages {
    pub spec: ChunkedSpec,
    pub base: BuiltImage,
    pub update: BuiltImage,
    /// Layers of `update` that `base` does not have.
    pub changed_layers: Vec<BlobInfo>,
    /// Packages whose files the update changed.
    pub changed_packages: Vec<String>,
    /// Files and bytes of the tree.
    pub files: usize,
    pub tree_bytes: u64,
}

impl ChunkedImages {
    pub fn changed_layer_bytes(&self) -> u64 {
        self.changed_layers.iter().map(|l| l.size).sum()
    }
}

/// One package: its name and files (path, size).
struct Package {
    name: String,
    files: Vec<(String, u64)>,
}

impl ImageLab {
    /// Build (or, when `cache` already holds this spec's images, reuse) a chunked base image and its
    /// z-stream update. Returns the lab the images live in.
    #[context("Building chunked images {}", spec.name)]
    pub async fn chunked_cached(
        cache: &Path,
        spec: &ChunkedSpec,
    ) -> Result<(ImageLab, ChunkedImages)> {
        let marker = cache.join("images.json");
        if let Ok(bytes) = std::fs::read(&marker) {
            if let Ok(images) = serde_json::from_slice::<ChunkedImages>(&bytes) {
                if images.spec == *spec {
                    return Ok((ImageLab::open(cache)?, images));
                }
            }
        }
        if cache.exists() {
            std::fs::remove_dir_all(cache)?;
        }
        let lab = ImageLab::open(cache)?;
        let images = lab.build_chunked(spec).await?;
        std::fs::write(&marker, serde_json::to_vec_pretty(&images)?)?;
        Ok((lab, images))
    }

    /// Build the base image and its update into this lab (see the module docs).
    #[context("Building chunked images {}", spec.name)]
    pub async fn build_chunked(&self, spec: &ChunkedSpec) -> Result<ChunkedImages> {
        let mut rng = StdRng::seed_from_u64(spec.seed);
        let repo_path = self.work.join(format!("chunked-repo-{}", spec.name));
        if repo_path.exists() {
            std::fs::remove_dir_all(&repo_path)?;
        }
        run(Command::new("ostree")
            .arg("init")
            .arg("--mode=bare-user")
            .arg(format!("--repo={}", repo_path.display())))?;
        let repo = ostree::Repo::new(&gio::File::for_path(&repo_path));
        repo.open(gio::Cancellable::NONE)?;

        let rootfs = self.work.join(format!("rootfs-{}", spec.name));
        if rootfs.exists() {
            std::fs::remove_dir_all(&rootfs)?;
        }
        write_rootfs(&rootfs, &BaseSpec::new(&spec.base_tag(), "1.0"))?;
        let packages = plan_packages(spec, &mut rng);
        let mut files = 0;
        let mut tree_bytes = 0;
        for p in &packages {
            for (path, size) in &p.files {
                write_content(&rootfs.join(path), *size, &mut rng)?;
                files += 1;
                tree_bytes += size;
            }
        }

        let base = self
            .commit_and_encapsulate(&repo, &repo_path, &rootfs, spec, &packages, "1.0", None)
            .await?;
        let base_manifest = self.manifest(&spec.base_tag())?;

        // The z-stream: in every k-th chunk layer, the first package gets new contents for one file.
        let chunk_layers: Vec<Vec<String>> = base_manifest
            .layers()
            .iter()
            .skip(1)
            .filter_map(|l| {
                let names = l.annotations().as_ref()?.get(COMPONENTS_ANNOTATION)?;
                let names: Vec<String> = names
                    .split(',')
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
                    .collect();
                (!names.is_empty()).then_some(names)
            })
            .collect();
        let want = ((chunk_layers.len() as f64 * spec.changed_fraction).round() as usize).max(1);
        let step = (chunk_layers.len() / want).max(1);
        let mut changed_packages = Vec::new();
        for names in chunk_layers.iter().step_by(step).take(want) {
            // The first of our packages in the layer (not the synthetic `filesystem`/`kernel` ones).
            let Some(pkg) = names.iter().find_map(|n| {
                packages
                    .iter()
                    .find(|p| &p.name == n && !p.files.is_empty())
            }) else {
                continue;
            };
            let (path, size) = &pkg.files[0];
            write_content(&rootfs.join(path), *size, &mut rng)?;
            changed_packages.push(pkg.name.clone());
        }
        let update = self
            .commit_and_encapsulate(
                &repo,
                &repo_path,
                &rootfs,
                spec,
                &packages,
                "1.1",
                Some(&base_manifest),
            )
            .await?;
        std::fs::remove_dir_all(&rootfs)?;
        std::fs::remove_dir_all(&repo_path)?;

        let changed_layers: Vec<BlobInfo> = update
            .layers
            .iter()
            .filter(|l| !base.layers.contains(l))
            .cloned()
            .collect();
        ensure!(
            changed_layers.len() < update.layers.len(),
            "the update shares no layer with the base: the packing was not reused"
        );
        Ok(ChunkedImages {
            spec: spec.clone(),
            base,
            update,
            changed_layers,
            changed_packages,
            files,
            tree_bytes,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn commit_and_encapsulate(
        &self,
        repo: &ostree::Repo,
        repo_path: &Path,
        rootfs: &Path,
        spec: &ChunkedSpec,
        packages: &[Package],
        version: &str,
        prior: Option<&ImageManifest>,
    ) -> Result<BuiltImage> {
        let branch = format!("testbed/{}", spec.name);
        let tag = format!("{}-{version}", spec.name);
        run(Command::new("ostree")
            .arg("commit")
            .arg(format!("--repo={}", repo_path.display()))
            .arg(format!("--branch={branch}"))
            .arg(format!("--tree=dir={}", rootfs.display()))
            .arg(format!("--add-metadata-string=version={version}"))
            .arg("--bootable")
            .arg("--no-xattrs")
            .arg(format!("--subject=testbed {tag}")))?;
        repo.reload_config(gio::Cancellable::NONE)?;
        let meta = content_map(repo_path, &branch, packages)?;
        let sized = ObjectMetaSized::compute_sizes(repo, meta).context("Sizing packages")?;
        let dest = ImageReference {
            transport: Transport::OciDir,
            name: format!("{}:{tag}", self.oci_path.display()),
        };
        let config = ostree_container::Config {
            labels: Some([(VERSION_LABEL.to_string(), version.to_string())].into()),
            cmd: None,
        };
        let mut opts = ostree_container::ExportOpts::default();
        opts.max_layers = NonZeroU32::new(spec.max_layers);
        opts.contentmeta = Some(&sized);
        opts.prior_build = prior;
        ostree_container::encapsulate(repo, &branch, &config, Some(opts), &dest)
            .await
            .context("Encapsulating with a layer budget")?;
        crate::make_world_readable(&self.oci_path)?;
        self.describe(&tag)
    }

    fn manifest(&self, tag: &str) -> Result<ImageManifest> {
        let dir = Dir::open_ambient_dir(&self.oci_path, ambient_authority())?;
        let oci = ocidir::OciDir::open(&dir)?;
        oci.find_manifest_with_tag(tag)?
            .ok_or_else(|| anyhow!("No image tagged {tag} in the lab"))
    }
}

/// Package sizes follow a Zipf-like curve (a few large ones like a kernel or firmware, many small);
/// each package's files are mostly small, some medium, a few large, as in an OS tree.
fn plan_packages(spec: &ChunkedSpec, rng: &mut StdRng) -> Vec<Package> {
    let weights: Vec<f64> = (0..spec.packages)
        .map(|i| 1.0 / ((i + 1) as f64).powf(0.9))
        .collect();
    let sum: f64 = weights.iter().sum();
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let name = format!("pkg{i:03}");
            let mut left = ((w / sum) * spec.content_bytes as f64) as u64;
            let mut files = Vec::new();
            while left > 0 {
                let roll: f64 = rng.r#gen();
                let size = if roll < 0.70 {
                    rng.gen_range(512..16 << 10)
                } else if roll < 0.95 {
                    rng.gen_range(16 << 10..512 << 10)
                } else {
                    rng.gen_range(512 << 10..8 << 20)
                };
                let size = size.min(left);
                let dir = files.len() / 50;
                files.push((format!("usr/lib/pkgs/{name}/d{dir}/f{}", files.len()), size));
                left -= size;
            }
            Package { name, files }
        })
        .collect()
}

/// Contents that compress like an OS tree (gzip to ~40%): text-like files from a small vocabulary, and
/// binary-like files of random blocks, repeated blocks and zero runs.
fn write_content(path: &Path, size: u64, rng: &mut StdRng) -> Result<()> {
    const WORDS: usize = 1000;
    std::fs::create_dir_all(path.parent().expect("a file has a parent"))?;
    let mut data = Vec::with_capacity(size as usize);
    if rng.gen_bool(0.4) {
        while (data.len() as u64) < size {
            let w = rng.gen_range(0..WORDS);
            // A word is a deterministic function of its number: a fixed vocabulary.
            let len = 2 + w % 11;
            data.extend((0..len).map(|k| b'a' + ((w * 7 + k * 13) % 26) as u8));
            data.push(if w % 9 == 0 { b'\n' } else { b' ' });
        }
    } else {
        let mut recent: Vec<[u8; 256]> = Vec::new();
        while (data.len() as u64) < size {
            let roll: f64 = rng.r#gen();
            let mut block = [0u8; 256];
            if roll < 0.35 || recent.is_empty() {
                rng.fill_bytes(&mut block);
                recent.push(block);
                if recent.len() > 64 {
                    recent.remove(0);
                }
            } else if roll < 0.7 {
                block = recent[rng.gen_range(0..recent.len())];
            }
            data.extend_from_slice(&block);
        }
    }
    data.truncate(size as usize);
    std::fs::write(path, data).with_context(|| format!("Writing {}", path.display()))
}

/// Which package owns each content object of the commit: from `ostree ls -R -C`, by path.
fn content_map(repo_path: &Path, rev: &str, packages: &[Package]) -> Result<ObjectMeta> {
    let out = Command::new("ostree")
        .arg(format!("--repo={}", repo_path.display()))
        .args(["ls", "-R", "-C", rev])
        .output()
        .context("ostree ls")?;
    ensure!(
        out.status.success(),
        "ostree ls failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut meta = ObjectMeta::default();
    let mut add_package = |name: &str, frequency: u32| {
        let id: Rc<str> = Rc::from(name);
        meta.set.insert(ObjectSourceMeta {
            identifier: id.clone(),
            name: id.clone(),
            srcid: id,
            change_time_offset: 1,
            change_frequency: frequency,
        });
    };
    for (i, p) in packages.iter().enumerate() {
        add_package(&p.name, 1 + (i as u32 % 7));
    }
    add_package("kernel", 30);
    add_package("filesystem", 1);
    for line in String::from_utf8(out.stdout)?.lines() {
        let mut fields = line.split_whitespace();
        let Some(mode) = fields.next() else { continue };
        if !(mode.starts_with('-') || mode.starts_with('l')) {
            continue;
        }
        // mode uid gid size checksum path [-> target]
        let (Some(checksum), Some(path)) = (fields.nth(3), fields.next()) else {
            continue;
        };
        let owner = if let Some(rest) = path.strip_prefix("/usr/lib/pkgs/") {
            rest.split('/').next().unwrap_or("filesystem")
        } else if path.starts_with("/usr/lib/modules/") {
            "kernel"
        } else {
            "filesystem"
        };
        if !meta.map.contains_key(checksum) {
            meta.map.insert(checksum.to_string(), Rc::from(owner));
        }
    }
    Ok(meta)
}

/// Where `make bench` keeps built images between runs: `target/bench-cache/<name>`.
pub fn bench_cache_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/bench-cache")
        .join(name)
}
