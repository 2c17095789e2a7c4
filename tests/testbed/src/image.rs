//! OS images built from scratch: a tiny bootable rootfs committed with `ostree commit --bootable`,
//! encapsulated into an OCI layout with ostree-ext, and derived images made by stacking tar layers
//! (what `FROM base` + `RUN dnf install …` produces).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow};
use fn_error_context::context;
use ocidir::cap_std::{ambient_authority, fs::Dir};
use ocidir::oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest, Platform};
use ostree_ext::container::{self as ostree_container, ImageReference, Transport};
use ostree_ext::ostree::{self, gio};
use rand::RngCore;

use crate::cmd::run;

/// The label ostree-ext and rpm-ostree read an image's version from.
pub const VERSION_LABEL: &str = "org.opencontainers.image.version";

/// A file to put into a rootfs or a layer.
#[derive(Debug, Clone)]
pub struct FileSpec {
    /// Path relative to the image root, e.g. `usr/bin/htop` or `etc/htoprc`.
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

impl FileSpec {
    pub fn new(path: impl Into<String>, contents: impl Into<Vec<u8>>) -> Self {
        Self {
            path: path.into(),
            contents: contents.into(),
            mode: 0o644,
        }
    }

    pub fn executable(path: impl Into<String>, contents: impl Into<Vec<u8>>) -> Self {
        Self {
            path: path.into(),
            contents: contents.into(),
            mode: 0o755,
        }
    }
}

/// What the base OS image contains.
#[derive(Debug, Clone)]
pub struct BaseSpec {
    /// Tag in the lab's OCI layout.
    pub tag: String,
    /// `version` commit metadata, which becomes the `org.opencontainers.image.version` label.
    pub version: String,
    pub kernel_version: String,
    /// Without `--bootable` ostree-ext refuses to deploy the image (no `ostree.bootable` label).
    pub bootable: bool,
    /// Extra files on top of the minimal rootfs; `/etc` content goes under `usr/etc`.
    pub files: Vec<FileSpec>,
    /// Size of an incompressible payload file in `usr/share/testbed/payload` (0 = none).
    pub payload_bytes: u64,
}

impl BaseSpec {
    pub fn new(tag: &str, version: &str) -> Self {
        Self {
            tag: tag.to_string(),
            version: version.to_string(),
            kernel_version: "6.1.0-testbed".to_string(),
            bootable: true,
            files: Vec::new(),
            payload_bytes: 0,
        }
    }
}

/// One layer of a derived image.
#[derive(Debug, Clone, Default)]
pub struct LayerSpec {
    /// The history entry, e.g. `RUN dnf install htop`.
    pub description: String,
    pub files: Vec<FileSpec>,
    /// An incompressible file of this many random bytes at this path, for size benchmarks.
    pub random_file: Option<(String, u64)>,
}

impl LayerSpec {
    pub fn new(description: &str) -> Self {
        Self {
            description: description.to_string(),
            ..Default::default()
        }
    }

    pub fn file(mut self, path: &str, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push(FileSpec::new(path, contents));
        self
    }

    /// A file with mode 0755 (a script or binary).
    pub fn executable(mut self, path: &str, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push(FileSpec::executable(path, contents));
        self
    }

    pub fn random_file(mut self, path: &str, bytes: u64) -> Self {
        self.random_file = Some((path.to_string(), bytes));
        self
    }
}

/// A blob as the registry serves it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlobInfo {
    pub digest: String,
    pub size: u64,
}

/// An image in the lab's OCI layout.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BuiltImage {
    pub tag: String,
    /// `sha256:…` of the manifest: what `image@digest` references and deployments record.
    pub manifest_digest: String,
    pub manifest_size: u64,
    pub config: BlobInfo,
    /// Bottom (the ostree base) first.
    pub layers: Vec<BlobInfo>,
    pub version: Option<String>,
}

impl BuiltImage {
    /// The topmost layer (the one a `RUN` step added last).
    pub fn top_layer(&self) -> &BlobInfo {
        self.layers.last().expect("an image has at least one layer")
    }

    pub fn total_layer_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

/// A workspace that builds OS images: an archive ostree repo plus one OCI layout holding every tag.
#[derive(Debug)]
pub struct ImageLab {
    _temp: Option<tempfile::TempDir>,
    repo_path: PathBuf,
    pub(crate) oci_path: PathBuf,
    pub(crate) work: PathBuf,
}

impl ImageLab {
    /// A lab in a temp dir, removed on drop.
    #[context("Creating image lab")]
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("testbed-images-")
            .tempdir()?;
        let mut lab = Self::open(dir.path())?;
        lab._temp = Some(dir);
        Ok(lab)
    }

    /// A lab kept in `dir` (created if needed, reused if it exists): for the CLI and demos.
    #[context("Opening image lab {}", dir.display())]
    pub fn open(dir: &Path) -> Result<Self> {
        let repo_path = dir.join("repo");
        let oci_path = dir.join("oci");
        let work = dir.join("work");
        std::fs::create_dir_all(&oci_path)?;
        std::fs::create_dir_all(&work)?;
        if !repo_path.join("config").exists() {
            run(Command::new("ostree")
                .arg("init")
                .arg("--mode=archive")
                .arg(format!("--repo={}", repo_path.display())))?;
        }
        // skopeo may run as `nobody` when ostree-ext drops privileges; the layout must be readable.
        crate::make_world_readable(dir)?;
        Ok(Self {
            _temp: None,
            repo_path,
            oci_path,
            work,
        })
    }

    /// The OCI layout directory; `oci:<path>:<tag>` names an image in it.
    pub fn oci_path(&self) -> &Path {
        &self.oci_path
    }

    /// `oci:<layout>:<tag>`, the skopeo/containers-image name of a tag.
    pub fn oci_ref(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.oci_path.display())
    }

    /// Build a base OS image: rootfs → `ostree commit --bootable` → ostree-ext encapsulate.
    #[context("Building base image {}", spec.tag)]
    pub async fn build_base(&self, spec: &BaseSpec) -> Result<BuiltImage> {
        let rootfs = self.work.join(format!("rootfs-{}", spec.tag));
        if rootfs.exists() {
            std::fs::remove_dir_all(&rootfs)?;
        }
        write_rootfs(&rootfs, spec)?;
        let branch = format!("testbed/{}", spec.tag);
        let mut commit = Command::new("ostree");
        commit
            .arg("commit")
            .arg(format!("--repo={}", self.repo_path.display()))
            .arg(format!("--branch={branch}"))
            .arg(format!("--tree=dir={}", rootfs.display()))
            .arg(format!("--add-metadata-string=version={}", spec.version))
            .arg("--no-xattrs")
            .arg(format!("--subject=testbed {} {}", spec.tag, spec.version));
        if spec.bootable {
            commit.arg("--bootable");
        }
        run(&mut commit)?;
        std::fs::remove_dir_all(&rootfs)?;

        let repo = ostree::Repo::new(&gio::File::for_path(&self.repo_path));
        repo.open(gio::Cancellable::NONE)
            .context("Opening lab repo")?;
        let dest = ImageReference {
            transport: Transport::OciDir,
            name: format!("{}:{}", self.oci_path.display(), spec.tag),
        };
        let config = ostree_container::Config::default();
        let opts = ostree_container::ExportOpts::default();
        ostree_container::encapsulate(&repo, &branch, &config, Some(opts), &dest)
            .await
            .context("Encapsulating the commit as an OCI image")?;
        crate::make_world_readable(&self.oci_path)?;
        self.describe(&spec.tag)
    }

    /// Encapsulate an existing commit (`rev`: a ref or checksum in the repo at `repo`, bare or archive) as
    /// `tag` in the lab's OCI layout: what an OS build pipeline does with the commit it composed. The
    /// commit must be `--bootable` for ostree-ext to deploy the image. `version` becomes the
    /// `org.opencontainers.image.version` label (else the commit's `version` metadata, if any).
    /// `fast_compression` trades ~10% size for a much faster gzip (level 1), for large test commits.
    #[context("Encapsulating {rev} from {} as {tag}", repo.display())]
    pub async fn encapsulate_commit(
        &self,
        repo: &Path,
        rev: &str,
        tag: &str,
        version: Option<&str>,
        fast_compression: bool,
    ) -> Result<BuiltImage> {
        let repo = ostree::Repo::new(&gio::File::for_path(repo));
        repo.open(gio::Cancellable::NONE)
            .context("Opening the source repo")?;
        let dest = ImageReference {
            transport: Transport::OciDir,
            name: format!("{}:{tag}", self.oci_path.display()),
        };
        let config = ostree_container::Config {
            labels: version.map(|v| [(VERSION_LABEL.to_string(), v.to_string())].into()),
            cmd: None,
        };
        let mut opts = ostree_container::ExportOpts::default();
        // ExportOpts calls this "skip compression"; ostree-ext 0.15 still gzips, at level 1.
        opts.skip_compression = fast_compression;
        ostree_container::encapsulate(&repo, rev, &config, Some(opts), &dest)
            .await
            .context("Encapsulating the commit as an OCI image")?;
        crate::make_world_readable(&self.oci_path)?;
        self.describe(tag)
    }

    /// Build `to` from `from` plus `layers`, like a Containerfile `FROM from` with one `RUN` per layer.
    /// `version` replaces the version label when given.
    #[context("Deriving image {to} from {from}")]
    pub fn derive(
        &self,
        from: &str,
        to: &str,
        layers: &[LayerSpec],
        version: Option<&str>,
    ) -> Result<BuiltImage> {
        let dir = Dir::open_ambient_dir(&self.oci_path, ambient_authority())?;
        let oci = ocidir::OciDir::open(&dir)?;
        let mut manifest = oci
            .find_manifest_with_tag(from)?
            .ok_or_else(|| anyhow!("No image tagged {from} in the lab"))?;
        let mut config: ImageConfiguration = oci.read_json_blob(manifest.config())?;
        for spec in layers {
            let mut builder = oci.create_layer(None)?;
            for f in &spec.files {
                append_file(&mut builder, &f.path, &f.contents, f.mode)?;
            }
            if let Some((path, bytes)) = &spec.random_file {
                append_file(&mut builder, path, &random_bytes(*bytes), 0o644)?;
            }
            let layer = builder.into_inner()?.complete()?;
            oci.push_layer(&mut manifest, &mut config, layer, &spec.description, None);
        }
        if let Some(version) = version {
            let mut inner = config.config().clone().unwrap_or_default();
            let mut labels = inner.labels().clone().unwrap_or_default();
            labels.insert(VERSION_LABEL.to_string(), version.to_string());
            inner.set_labels(Some(labels));
            config.set_config(Some(inner));
        }
        oci.insert_manifest_and_config(manifest, config, Some(to), Platform::default())?;
        crate::make_world_readable(&self.oci_path)?;
        self.describe(to)
    }

    /// A plain (non-OS) container image `tag` made of `layers`, e.g. the RHCOS extensions container
    /// (`baseOSExtensionsContainerImage`): no ostree commit, one gzip tar layer per [`LayerSpec`].
    #[context("Building plain image {tag}")]
    pub fn build_plain(&self, tag: &str, layers: &[LayerSpec]) -> Result<BuiltImage> {
        let dir = Dir::open_ambient_dir(&self.oci_path, ambient_authority())?;
        let oci = ocidir::OciDir::ensure(&dir)?;
        let mut manifest = ocidir::new_empty_manifest().build()?;
        let mut config = ImageConfiguration::default();
        for spec in layers {
            let mut builder = oci.create_layer(None)?;
            for f in &spec.files {
                append_file(&mut builder, &f.path, &f.contents, f.mode)?;
            }
            if let Some((path, bytes)) = &spec.random_file {
                append_file(&mut builder, path, &random_bytes(*bytes), 0o644)?;
            }
            let layer = builder.into_inner()?.complete()?;
            oci.push_layer(&mut manifest, &mut config, layer, &spec.description, None);
        }
        oci.insert_manifest_and_config(manifest, config, Some(tag), Platform::default())?;
        crate::make_world_readable(&self.oci_path)?;
        self.describe(tag)
    }

    /// Read back what the layout holds for `tag`.
    #[context("Describing image {tag}")]
    pub fn describe(&self, tag: &str) -> Result<BuiltImage> {
        let dir = Dir::open_ambient_dir(&self.oci_path, ambient_authority())?;
        let oci = ocidir::OciDir::open(&dir)?;
        let index = oci
            .read_index()?
            .ok_or_else(|| anyhow!("OCI layout has no index"))?;
        let desc: &Descriptor = index
            .manifests()
            .iter()
            .find(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get("org.opencontainers.image.ref.name"))
                    .is_some_and(|t| t == tag)
            })
            .ok_or_else(|| anyhow!("No image tagged {tag} in the lab"))?;
        let manifest: ImageManifest = oci.read_json_blob(desc)?;
        let config: ImageConfiguration = oci.read_json_blob(manifest.config())?;
        let version = config
            .config()
            .as_ref()
            .and_then(|c| c.labels().as_ref())
            .and_then(|l: &HashMap<String, String>| l.get(VERSION_LABEL).cloned());
        Ok(BuiltImage {
            tag: tag.to_string(),
            manifest_digest: desc.digest().to_string(),
            manifest_size: desc.size(),
            config: BlobInfo {
                digest: manifest.config().digest().to_string(),
                size: manifest.config().size(),
            },
            layers: manifest
                .layers()
                .iter()
                .map(|l| BlobInfo {
                    digest: l.digest().to_string(),
                    size: l.size(),
                })
                .collect(),
            version,
        })
    }
}

fn append_file<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    contents: &[u8],
    mode: u32,
) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(contents.len() as u64);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    builder
        .append_data(&mut header, path.trim_start_matches('/'), contents)
        .with_context(|| format!("Adding {path} to layer"))?;
    Ok(())
}

/// Incompressible bytes, so a layer's size on the wire is what the benchmark says it is.
pub fn random_bytes(n: u64) -> Vec<u8> {
    let mut buf = vec![0u8; n as usize];
    rand::thread_rng().fill_bytes(&mut buf);
    buf
}

/// The smallest tree ostree will deploy and boot: `/usr` with os-release, a kernel and initramfs under
/// `usr/lib/modules/<kver>/`, `/etc` defaults in `usr/etc`, and the top-level dirs and symlinks.
pub(crate) fn write_rootfs(root: &Path, spec: &BaseSpec) -> Result<()> {
    let mkdir =
        |p: &str| std::fs::create_dir_all(root.join(p)).with_context(|| format!("Creating {p}"));
    let write = |p: &str, data: &[u8], mode: u32| -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().expect("file has a parent"))?;
        std::fs::write(&path, data).with_context(|| format!("Writing {p}"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    for d in [
        "boot", "dev", "proc", "sys", "run", "tmp", "var", "sysroot", "usr/bin", "usr/sbin",
        "usr/lib", "usr/etc",
    ] {
        mkdir(d)?;
    }
    for (link, target) in [
        ("ostree", "sysroot/ostree"),
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("home", "var/home"),
    ] {
        std::os::unix::fs::symlink(target, root.join(link))?;
    }
    let os_release = format!(
        "NAME=\"Testbed OS\"\nID=testbed\nVERSION_ID={v}\nVERSION=\"{v}\"\nPRETTY_NAME=\"Testbed OS {v}\"\n",
        v = spec.version
    );
    write("usr/lib/os-release", os_release.as_bytes(), 0o644)?;
    std::os::unix::fs::symlink("../lib/os-release", root.join("usr/etc/os-release"))?;
    write("usr/etc/hostname", b"testbed\n", 0o644)?;
    write(
        "usr/etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n",
        0o644,
    )?;
    write("usr/etc/group", b"root:x:0:\nnobody:x:65534:\n", 0o644)?;
    write("usr/bin/sh", b"#!/bin/false\n", 0o755)?;
    if spec.bootable {
        // Fixed contents: images that share the kernel share the boot checksum, as real builds do.
        let kdir = format!("usr/lib/modules/{}", spec.kernel_version);
        write(
            &format!("{kdir}/vmlinuz"),
            format!("testbed kernel {}\n", spec.kernel_version).as_bytes(),
            0o644,
        )?;
        write(
            &format!("{kdir}/initramfs.img"),
            format!("testbed initramfs {}\n", spec.kernel_version).as_bytes(),
            0o644,
        )?;
    }
    for f in &spec.files {
        write(&f.path, &f.contents, f.mode)?;
    }
    if spec.payload_bytes > 0 {
        write(
            "usr/share/testbed/payload",
            &random_bytes(spec.payload_bytes),
            0o644,
        )?;
    }
    Ok(())
}
