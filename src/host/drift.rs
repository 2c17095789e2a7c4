//! Config drift monitor (`mco-protocol.md` §7): inotify on the parent directories of every managed path,
//! debounced; on a relevant event the on-disk state is validated again and a [`DriftReport`] is sent
//! whenever the set of mismatches changes — including when it becomes empty, so the daemon can clear
//! its Degraded state (the MCD never does).
//!
//! Directories are opened through the root handle (no symlink followed) and watched through
//! `/proc/self/fd`, so a watch never lands outside the root.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use serde::Serialize;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::root::Root;
use super::units;
use super::validate::{IGNORED_FILES, Mismatch, validate};
use crate::config::MachineConfig;
use crate::config::paths::CORE_SSH_KEYS;

/// Settings of the monitor.
#[derive(Debug, Clone, Copy)]
pub struct DriftOptions {
    /// Quiet time after the last event before validating (editors write in several steps).
    pub debounce: Duration,
}

impl Default for DriftOptions {
    fn default() -> Self {
        DriftOptions {
            debounce: Duration::from_millis(500),
        }
    }
}

/// The on-disk state compared with the config, sent when it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriftReport {
    /// The MachineConfig watched.
    pub config: String,
    /// Every mismatch; empty means the drift is gone.
    pub mismatches: Vec<Mismatch>,
}

impl DriftReport {
    pub fn is_drift(&self) -> bool {
        !self.mismatches.is_empty()
    }
}

/// A running monitor; dropping it (or [`DriftMonitor::stop`]) stops watching.
#[derive(Debug)]
pub struct DriftMonitor {
    task: tokio::task::JoinHandle<()>,
}

impl DriftMonitor {
    /// Start watching `root` for drift from `config`. Call inside a tokio runtime. A first report is
    /// sent at once if the disk already differs.
    pub fn start(
        root: Root,
        config: MachineConfig,
        opts: DriftOptions,
    ) -> anyhow::Result<(DriftMonitor, mpsc::Receiver<DriftReport>)> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)
            .context("creating an inotify instance")?;
        // SAFETY: the OwnedFd moves into the AsyncFd and keeps that one descriptor open for its lifetime.
        let inotify = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("registering inotify with tokio: {e}"))?;
        let mut watcher = Watcher {
            root: Arc::new(root),
            config: Arc::new(config),
            inotify,
            watches: HashMap::new(),
            opts,
        };
        watcher.arm()?;
        let (tx, rx) = mpsc::channel(16);
        let task = tokio::spawn(async move {
            if let Err(e) = watcher.run(tx).await {
                tracing::error!(error = %format!("{e:#}"), "config drift monitor stopped");
            }
        });
        Ok((DriftMonitor { task }, rx))
    }

    /// Stop watching (an update is about to write the managed files).
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for DriftMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Watcher {
    root: Arc<Root>,
    config: Arc<MachineConfig>,
    inotify: AsyncFd<OwnedFd>,
    /// Watch descriptor → names of interest in that directory.
    watches: HashMap<i32, BTreeSet<String>>,
    opts: DriftOptions,
}

const WATCH_MASK: WatchFlags = WatchFlags::CREATE
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MODIFY)
    .union(WatchFlags::CLOSE_WRITE)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::ATTRIB)
    .union(WatchFlags::DELETE_SELF)
    .union(WatchFlags::MOVE_SELF)
    .union(WatchFlags::ONLYDIR);

impl Watcher {
    async fn run(mut self, tx: mpsc::Sender<DriftReport>) -> anyhow::Result<()> {
        let mut last = self.check().await?;
        if !last.is_empty() && !self.send(&tx, &last).await {
            return Ok(());
        }
        loop {
            self.wait_relevant().await?;
            // Debounce: wait until the directory has been quiet for a while.
            while tokio::time::timeout(self.opts.debounce, self.wait_relevant())
                .await
                .is_ok()
            {}
            // Directories may have appeared or gone: watch what exists now, then look. A failure here
            // (a directory unreadable for a moment) is logged and retried at the next event.
            if let Err(e) = self.arm() {
                tracing::warn!(error = %format!("{e:#}"), "config drift monitor: re-arming watches");
            }
            let now = match self.check().await {
                Ok(now) => now,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "config drift monitor: validating");
                    continue;
                }
            };
            if now != last {
                if !self.send(&tx, &now).await {
                    return Ok(());
                }
                last = now;
            }
        }
    }

    async fn send(&self, tx: &mpsc::Sender<DriftReport>, mismatches: &[Mismatch]) -> bool {
        if mismatches.is_empty() {
            tracing::info!(config = %self.config.name, "config drift is gone");
        } else {
            for m in mismatches {
                tracing::warn!(config = %self.config.name, path = %m.path, "config drift: {m}");
            }
        }
        tx.send(DriftReport {
            config: self.config.name.clone(),
            mismatches: mismatches.to_vec(),
        })
        .await
        .is_ok()
    }

    async fn check(&self) -> anyhow::Result<Vec<Mismatch>> {
        let (root, config) = (self.root.clone(), self.config.clone());
        tokio::task::spawn_blocking(move || validate(&root, &config))
            .await
            .context("validation task")?
    }

    /// Wait for an event about a managed name (or that invalidates a watch).
    async fn wait_relevant(&self) -> anyhow::Result<()> {
        loop {
            let mut guard = self.inotify.readable().await?;
            let mut relevant = false;
            let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
            let mut reader = inotify::Reader::new(self.inotify.get_ref(), &mut buf);
            loop {
                match reader.next() {
                    Ok(event) => {
                        let flags = event.events();
                        if flags.intersects(
                            ReadFlags::QUEUE_OVERFLOW
                                | ReadFlags::DELETE_SELF
                                | ReadFlags::MOVE_SELF
                                | ReadFlags::UNMOUNT,
                        ) {
                            relevant = true;
                            continue;
                        }
                        let Some(names) = self.watches.get(&event.wd()) else {
                            continue;
                        };
                        let name = event
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        relevant |= names.contains(&name);
                    }
                    Err(rustix::io::Errno::AGAIN) => break,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(e).context("reading inotify events"),
                }
            }
            guard.clear_ready();
            if relevant {
                return Ok(());
            }
        }
    }

    /// (Re)place the watches: for each managed path, its deepest existing ancestor directory, with the
    /// next name on the way as the name of interest.
    fn arm(&mut self) -> anyhow::Result<()> {
        let mut dirs: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
        for path in watched_paths(&self.root, &self.config)? {
            let Ok(r) = self.root.resolve(&path) else {
                continue; // unsafe paths are reported by validation, not watched
            };
            let next = r.missing_dirs.first().unwrap_or(&r.rel);
            let Some(name) = next.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            dirs.entry(r.existing_dir.clone())
                .or_default()
                .insert(name.to_string());
        }
        let fd = self.inotify.get_ref();
        for wd in self.watches.keys() {
            let _ = inotify::remove_watch(fd, *wd);
        }
        self.watches.clear();
        for (rel, names) in dirs {
            let Ok(dir) = self.root.open_dir_rel(&rel) else {
                continue;
            };
            let proc_path = format!("/proc/self/fd/{}", dir.as_raw_fd());
            let wd = inotify::add_watch(fd, proc_path.as_str(), WATCH_MASK).with_context(|| {
                format!(
                    "watching {}",
                    self.root.display(&format!("/{}", rel.display()))
                )
            })?;
            self.watches.entry(wd).or_default().extend(names);
        }
        Ok(())
    }
}

/// Every path whose change can make validation fail.
fn watched_paths(root: &Root, mc: &MachineConfig) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for f in &mc.ignition.files {
        if !IGNORED_FILES.contains(&f.path.as_str()) {
            out.push(f.path.clone());
        }
    }
    for u in &mc.ignition.units {
        if u.mask || u.contents.is_some() {
            out.push(units::unit_path(&u.name));
        }
        for d in &u.dropins {
            out.push(units::dropin_path(&u.name, &d.name));
        }
        if !u.mask && u.enabled.is_some() {
            let file = match &u.contents {
                Some(c) => Some(units::UnitFile {
                    path: units::unit_path(&u.name),
                    contents: c.clone(),
                }),
                None => units::find_unit_file(root, &u.name, false)?,
            };
            if let Some(file) = file {
                let info = units::parse_install(&file.contents);
                out.extend(
                    units::install_links(&u.name, &file.path, &info)
                        .into_iter()
                        .map(|l| l.path),
                );
            }
        }
    }
    if mc
        .ignition
        .core_user()
        .is_some_and(|u| !u.ssh_authorized_keys.is_empty())
    {
        out.push(CORE_SSH_KEYS.to_string());
    }
    Ok(out)
}
