//! The package repository kernel-rt/64k and extensions are layered from: the RHCOS extensions container
//! (`baseOSExtensionsContainerImage`) extracted under `/run/mco-extensions/` and announced to rpm-ostree
//! as `/etc/yum.repos.d/coreos-extensions.repo`, for the duration of the package changes — as the MCD
//! does (openshift/machine-config-operator pkg/daemon/update.go ExtractExtensionsImage, addExtensionsRepo,
//! applyLayeredOSChanges). The image is pulled with the node's pull secret and registries.conf (the
//! same image proxy the ostree backend uses) instead of `podman pull` + `podman cp`.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ostree_ext::containers_image_proxy::ImageProxy;

/// pkg/daemon/update.go osExtensionsContentBaseDir.
pub const CONTENT_BASE_DIR: &str = "run/mco-extensions";
/// pkg/daemon/update.go extensionsRepo.
pub const REPO_FILE: &str = "etc/yum.repos.d/coreos-extensions.repo";
/// Where the extensions container keeps its rpm-md repo.
const REPO_SUBDIR: &str = "usr/share/rpm-ostree/extensions";

/// An extracted extensions image and its `.repo` file; removed again by [`ExtensionsRepo::remove`].
#[derive(Debug)]
pub struct ExtensionsRepo {
    content: PathBuf,
    repo_file: PathBuf,
}

impl ExtensionsRepo {
    /// Pull `image`, extract it under `<node_root>/run/mco-extensions/os-extensions-content-*` and write
    /// the `coreos-extensions` repo pointing at it.
    pub async fn create(node_root: &Path, image: &str) -> Result<Self> {
        let base = node_root.join(CONTENT_BASE_DIR);
        std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        // Left over by an update that was interrupted: ours, and useless now.
        if let Ok(rd) = std::fs::read_dir(&base) {
            for e in rd.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with("os-extensions-content-")
                {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let content = unique_dir(&base, "os-extensions-content-")?;
        let repo = Self {
            content: content.clone(),
            repo_file: node_root.join(REPO_FILE),
        };
        let built = async {
            extract(node_root, image, &content)
                .await
                .with_context(|| format!("Cannot pull the extensions image {image}"))?;
            if !content.join(REPO_SUBDIR).is_dir() {
                bail!(
                    "the extensions image {image} has no /{REPO_SUBDIR} repository; check the config's baseOSExtensionsContainerImage"
                );
            }
            // The path as the host (and so rpm-ostreed) sees it.
            let host_path = Path::new("/").join(content.strip_prefix(node_root).unwrap_or(&content));
            let text = format!(
                "[coreos-extensions]\nenabled=1\nmetadata_expire=1m\nbaseurl={}/{REPO_SUBDIR}/\ngpgcheck=0\nskip_if_unavailable=False\n",
                host_path.display()
            );
            write_atomically(&repo.repo_file, text.as_bytes())
        }
        .await;
        match built {
            Ok(()) => {
                tracing::info!(image = %image, content = %content.display(), "extensions repository ready");
                Ok(repo)
            }
            Err(e) => {
                repo.remove();
                Err(e)
            }
        }
    }

    /// Delete the repo file and the extracted content (MCD: `defer os.Remove(extensionsRepo)`,
    /// `defer os.RemoveAll(osExtensionsContentDir)`).
    pub fn remove(self) {}
}

/// Also when the update is abandoned half-way (SIGTERM drops the future).
impl Drop for ExtensionsRepo {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.repo_file);
        let _ = std::fs::remove_dir_all(&self.content);
    }
}

fn unique_dir(base: &Path, prefix: &str) -> Result<PathBuf> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    for i in 0..100u32 {
        let p = base.join(format!(
            "{prefix}{:08x}",
            seed.wrapping_add(i.wrapping_mul(0x9e37_79b9)) ^ std::process::id()
        ));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", p.display())),
        }
    }
    bail!("cannot create a directory under {}", base.display())
}

fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().context("repo file has a parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Fetch every layer of `image` and unpack them in order into `dest` (OCI whiteouts applied).
async fn extract(node_root: &Path, image: &str, dest: &Path) -> Result<()> {
    let imgref = format!("docker://{}", image.trim_start_matches("docker://"));
    let registry_ref = ostree_ext::container::ImageReference {
        transport: ostree_ext::container::Transport::Registry,
        name: image.trim_start_matches("docker://").to_string(),
    };
    let proxy =
        ImageProxy::new_with_config(crate::os::pull::proxy_config(node_root, &registry_ref)?)
            .await
            .context("starting the image proxy (skopeo)")?;
    let img = proxy.open_image(&imgref).await?;
    let (_, manifest) = proxy.fetch_manifest(&img).await?;
    let blob = dest.with_extension("layer");
    for layer in manifest.layers() {
        let (mut reader, driver) = proxy.get_descriptor(&img, layer).await?;
        let mut file = tokio::fs::File::create(&blob).await?;
        let copy = tokio::io::copy(&mut reader, &mut file);
        let (copied, driven) = tokio::join!(copy, driver);
        copied.with_context(|| format!("downloading layer {}", layer.digest()))?;
        driven?;
        drop(file);
        let (blob_path, dest) = (blob.clone(), dest.to_path_buf());
        tokio::task::spawn_blocking(move || unpack_layer(&blob_path, &dest))
            .await
            .context("the unpack task panicked")?
            .with_context(|| format!("unpacking layer {}", layer.digest()))?;
    }
    let _ = std::fs::remove_file(&blob);
    let _ = proxy.close_image(&img).await;
    let _ = proxy.finalize().await;
    Ok(())
}

/// One layer (gzip or plain tar) onto `dest`; `.wh.` entries delete what lower layers put there.
fn unpack_layer(blob: &Path, dest: &Path) -> Result<()> {
    let mut magic = [0u8; 4];
    let n = std::fs::File::open(blob)?.read(&mut magic)?;
    let file = std::fs::File::open(blob)?;
    let reader: Box<dyn Read> = if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(file))
    } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        bail!("zstd-compressed layers are not supported");
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(false);
    archive.set_overwrite(true);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let parent = dest.join(path.parent().unwrap_or(Path::new("")));
            // Only inside `dest`: `unpack_in` below refuses `..` and absolute paths; so does this.
            if path
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                continue;
            }
            if hidden == ".wh..opq" {
                if let Ok(rd) = std::fs::read_dir(&parent) {
                    for e in rd.flatten() {
                        let _ = remove_any(&e.path());
                    }
                }
            } else {
                let _ = remove_any(&parent.join(hidden));
            }
            continue;
        }
        entry.unpack_in(dest)?;
    }
    Ok(())
}

fn remove_any(p: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn layers_stack_with_whiteouts_and_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("content");
        std::fs::create_dir(&dest).unwrap();
        let blob = dir.path().join("l");
        std::fs::write(
            &blob,
            layer(&[
                ("usr/share/a", b"a"),
                ("usr/share/b", b"b"),
                ("etc/x/y", b"y"),
            ]),
        )
        .unwrap();
        unpack_layer(&blob, &dest).unwrap();
        std::fs::write(
            &blob,
            layer(&[("usr/share/.wh.a", b""), ("etc/x/.wh..wh..opq", b"")]),
        )
        .unwrap();
        unpack_layer(&blob, &dest).unwrap();
        assert!(!dest.join("usr/share/a").exists());
        assert_eq!(std::fs::read(dest.join("usr/share/b")).unwrap(), b"b");
        assert!(dest.join("etc/x").is_dir() && !dest.join("etc/x/y").exists());
    }
}
