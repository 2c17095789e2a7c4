//! The rpm-md repositories package layering resolves against: the host's `/etc/yum.repos.d/*.repo`
//! (here under the node root the test gives the double).
//!
//! rpm-ostree resolves layered packages with libdnf against the enabled repos (rpm-ostree:
//! src/libpriv/rpmostree-core.cxx rpmostree_context_download_metadata, "No enabled repositories",
//! "Updating rpm-md repo '%s'"; rpmostree_context_prepare, "Packages not found"). The double does not
//! read RPM metadata: a repo is usable when `repodata/repomd.xml` exists under its `baseurl`, and it
//! provides package `NAME` when it holds a file `NAME-VERSION-RELEASE.ARCH.rpm`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One `[section]` of a `.repo` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    pub id: String,
    pub enabled: bool,
    /// As written (`/run/…` or `file:///run/…`), resolved under the node root when read.
    pub baseurl: String,
}

/// Every repo in `<root>/etc/yum.repos.d/*.repo`, in file name order.
pub fn read_repos(root: &Path) -> Vec<Repo> {
    let dir = root.join("etc/yum.repos.d");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "repo"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut repos = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let mut cur: Option<Repo> = None;
        for line in text.lines().map(str::trim) {
            if let Some(id) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                repos.extend(cur.take());
                cur = Some(Repo {
                    id: id.to_string(),
                    // libdnf: a repo without `enabled=` is enabled.
                    enabled: true,
                    baseurl: String::new(),
                });
            } else if let (Some(r), Some((k, v))) = (cur.as_mut(), line.split_once('=')) {
                match k.trim() {
                    "enabled" => r.enabled = matches!(v.trim(), "1" | "true" | "True" | "yes"),
                    "baseurl" => r.baseurl = v.trim().to_string(),
                    _ => {}
                }
            }
        }
        repos.extend(cur);
    }
    repos
}

/// `baseurl` as a path under `root`.
fn local_dir(root: &Path, baseurl: &str) -> PathBuf {
    let path = baseurl.strip_prefix("file://").unwrap_or(baseurl);
    root.join(path.trim_start_matches('/'))
}

/// `kernel-rt-core-5.14.0-1.el9.x86_64.rpm` → `kernel-rt-core`.
fn package_name(file: &str) -> Option<&str> {
    let stem = file.strip_suffix(".rpm")?;
    let mut parts = stem.rsplitn(3, '-');
    let (_release_arch, _version, name) = (parts.next()?, parts.next()?, parts.next()?);
    Some(name)
}

fn collect_rpms(dir: &Path, out: &mut BTreeSet<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_rpms(&p, out);
        } else if let Some(name) = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(package_name)
        {
            out.insert(name.to_string());
        }
    }
}

/// The packages the enabled repos provide, or the error rpm-ostree would stop with.
pub fn available_packages(root: &Path) -> Result<BTreeSet<String>, String> {
    let enabled: Vec<Repo> = read_repos(root).into_iter().filter(|r| r.enabled).collect();
    // rpm-ostree: rpmostree-core.cxx rpmostree_context_download_metadata, "No enabled repositories".
    if enabled.is_empty() {
        return Err("No enabled repositories".into());
    }
    let mut packages = BTreeSet::new();
    for r in &enabled {
        let dir = local_dir(root, &r.baseurl);
        if !dir.join("repodata/repomd.xml").is_file() {
            // rpm-ostree: rpmostree-core.cxx rpmostree_context_download_metadata prefixes libdnf's
            // error with "Updating rpm-md repo '%s': "; the rest is the double's own wording.
            return Err(format!(
                "Updating rpm-md repo '{}': Cannot download repomd.xml: {}/repodata/repomd.xml does not exist",
                r.id,
                r.baseurl.trim_end_matches('/')
            ));
        }
        collect_rpms(&dir, &mut packages);
    }
    Ok(packages)
}

/// Where the extensions container keeps its rpm-md repo (the MCO's `coreos-extensions.repo` points
/// `baseurl` at `<extracted>/usr/share/rpm-ostree/extensions/`, pkg/daemon/update.go addExtensionsRepo).
pub const EXTENSIONS_REPO_DIR: &str = "usr/share/rpm-ostree/extensions";

/// A layer for an extensions container: a repo holding `packages` (empty `.rpm` files), with
/// `repodata/repomd.xml` unless `with_metadata` is false (a repo rpm-ostree cannot load).
pub fn extensions_layer(packages: &[&str], with_metadata: bool) -> crate::LayerSpec {
    let mut layer = crate::LayerSpec::new("COPY extensions /usr/share/rpm-ostree/extensions");
    if with_metadata {
        layer = layer.file(
            &format!("{EXTENSIONS_REPO_DIR}/repodata/repomd.xml"),
            "<repomd/>\n",
        );
    }
    for p in packages {
        layer = layer.file(
            &format!("{EXTENSIONS_REPO_DIR}/Packages/{p}-1.0-1.el9.x86_64.rpm"),
            format!("testbed rpm {p}\n"),
        );
    }
    layer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_files_and_package_names() {
        assert_eq!(
            package_name("kernel-rt-core-5.14.0-427.el9.x86_64.rpm"),
            Some("kernel-rt-core")
        );
        assert_eq!(package_name("usbguard-1.0-1.x86_64.rpm"), Some("usbguard"));
        assert_eq!(package_name("README"), None);
        let root = tempfile::tempdir().unwrap();
        assert_eq!(
            available_packages(root.path()).unwrap_err(),
            "No enabled repositories"
        );
        let d = root.path().join("etc/yum.repos.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("coreos-extensions.repo"),
            "[coreos-extensions]\nenabled=1\nbaseurl=/run/x/\ngpgcheck=0\n",
        )
        .unwrap();
        assert!(
            available_packages(root.path())
                .unwrap_err()
                .starts_with("Updating rpm-md repo 'coreos-extensions': ")
        );
        let repo = root.path().join("run/x");
        std::fs::create_dir_all(repo.join("repodata")).unwrap();
        std::fs::write(repo.join("repodata/repomd.xml"), "<repomd/>").unwrap();
        std::fs::write(repo.join("usbguard-1.0-1.x86_64.rpm"), "").unwrap();
        assert_eq!(
            available_packages(root.path()).unwrap(),
            BTreeSet::from(["usbguard".to_string()])
        );
    }
}
