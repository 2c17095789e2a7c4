//! Where vm-tests keeps its inputs (the `vm-tests/` source tree: hooks, guest files) and its outputs
//! (`vm-tests/work/`, git-ignored: cached base, images, per-run directories).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// The source and work directories of one vm-tests checkout.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// `vm-tests/` in the source tree: `image/` (base recipe) and `guest/` (harness layer).
    pub source_dir: PathBuf,
    /// Everything built or run goes here.
    pub work_dir: PathBuf,
}

impl Workspace {
    pub fn new(source_dir: impl Into<PathBuf>, work_dir: impl Into<PathBuf>) -> Self {
        Self {
            source_dir: source_dir.into(),
            work_dir: work_dir.into(),
        }
    }

    /// The checkout this binary was built from; `VMTEST_WORK_DIR` moves the work directory.
    pub fn from_env() -> Self {
        let source_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let work_dir = std::env::var_os("VMTEST_WORK_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| source_dir.join("work"));
        Self::new(source_dir, work_dir)
    }

    /// The base recipe: package list and mmdebstrap hooks.
    pub fn recipe_dir(&self) -> PathBuf {
        self.source_dir.join("image")
    }

    /// Files layered into every test image (readiness marker, command agent).
    pub fn guest_dir(&self) -> PathBuf {
        self.source_dir.join("guest")
    }

    pub fn base_dir(&self) -> PathBuf {
        self.work_dir.join("base")
    }

    pub fn images_dir(&self) -> PathBuf {
        self.work_dir.join("images")
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.work_dir.join("runs")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.work_dir.join("tmp")
    }

    /// A fresh scratch directory under `work/tmp` (removed when dropped).
    pub fn scratch(&self, prefix: &str) -> Result<tempfile::TempDir> {
        let tmp = self.tmp_dir();
        std::fs::create_dir_all(&tmp).with_context(|| format!("Creating {}", tmp.display()))?;
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&tmp)
            .with_context(|| format!("Creating a scratch directory in {}", tmp.display()))
    }

    /// Keep only the `keep` newest run directories (their names start with a timestamp).
    pub fn prune_runs(&self, keep: usize) -> Result<()> {
        let Ok(entries) = std::fs::read_dir(self.runs_dir()) else {
            return Ok(());
        };
        let mut runs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        runs.sort();
        let excess = runs.len().saturating_sub(keep);
        for old in &runs[..excess] {
            std::fs::remove_dir_all(old).with_context(|| format!("Removing {}", old.display()))?;
        }
        Ok(())
    }

    /// A new directory for one scenario run: `work/runs/<unix-seconds>-<name>`.
    pub fn new_run_dir(&self, name: &str) -> Result<PathBuf> {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut dir = self.runs_dir().join(format!("{secs}-{name}"));
        let mut n = 1;
        while dir.exists() {
            n += 1;
            dir = self.runs_dir().join(format!("{secs}-{name}-{n}"));
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("Creating {}", dir.display()))?;
        Ok(dir)
    }
}

/// Builds cache keys: a SHA-256 over named, length-prefixed fields, so no two different inputs can
/// produce the same byte stream.
#[derive(Debug, Default, Clone)]
pub struct KeyHasher(Sha256);

impl KeyHasher {
    pub fn new(kind: &str) -> Self {
        let mut h = Self::default();
        h.field("kind", kind.as_bytes());
        h
    }

    pub fn field(&mut self, name: &str, value: &[u8]) -> &mut Self {
        for part in [name.as_bytes(), value] {
            self.0.update((part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
        self
    }

    pub fn file(&mut self, name: &str, path: &Path) -> Result<&mut Self> {
        let bytes = std::fs::read(path).with_context(|| format!("Reading {}", path.display()))?;
        Ok(self.field(name, &bytes))
    }

    /// The first 16 hex digits: plenty to tell cached builds apart, short enough for paths.
    pub fn finish(self) -> String {
        let digest = self.0.finalize();
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_field_boundaries_and_values() {
        let key = |fields: &[(&str, &str)]| {
            let mut h = KeyHasher::new("t");
            for (n, v) in fields {
                h.field(n, v.as_bytes());
            }
            h.finish()
        };
        assert_eq!(key(&[("a", "bc")]), key(&[("a", "bc")]));
        assert_ne!(key(&[("a", "bc")]), key(&[("ab", "c")]));
        assert_ne!(key(&[("a", "bc")]), key(&[("a", "bd")]));
        assert_eq!(key(&[("a", "b")]).len(), 16);
    }

    #[test]
    fn pruning_keeps_the_newest_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspace::new(tmp.path(), tmp.path().join("work"));
        ws.prune_runs(2).unwrap(); // no runs yet: nothing to do
        for name in ["100-a", "200-b", "300-c"] {
            std::fs::create_dir_all(ws.runs_dir().join(name)).unwrap();
        }
        ws.prune_runs(2).unwrap();
        let mut left: Vec<_> = std::fs::read_dir(ws.runs_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["200-b", "300-c"]);
    }

    #[test]
    fn run_dirs_never_collide() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspace::new(tmp.path(), tmp.path().join("work"));
        let a = ws.new_run_dir("smoke").unwrap();
        let b = ws.new_run_dir("smoke").unwrap();
        assert_ne!(a, b);
        assert!(a.is_dir() && b.is_dir());
    }
}
