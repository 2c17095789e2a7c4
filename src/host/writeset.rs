//! The write-set: every directory, file, symlink, backup, restore and removal one apply does, computed
//! from (current config, desired config, what is in the root) and fully validated — paths inside the
//! root, owners resolved from the root's databases, contents ready, space available — before anything
//! is written. Building it only reads the root; [`super::exec`] carries it out.
//!
//! The write-set converges: it compares every managed path with the disk and only lists what differs,
//! so running it again after a crash (or a second time) finishes the job or does nothing.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::accounts::{self, Accounts, SHADOW};
use super::root::{Entry, PathError, Resolved, Root};
use super::units::{self, DEV_NULL, UnitFile};
use crate::config::paths::{
    CORE_SSH_KEYS, CURRENT_CONFIG, CURRENT_IMAGE, NOORIG_DIR, ORIG_DIR, STATE_DIR, is_under,
};
use crate::config::{MachineConfig, Owner};

mod checks;
mod unit_links;
mod users;

/// Which config a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    Desired,
    Current,
}

/// A config the node cannot take as it is: names the config, the field and why. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct HostInvalid {
    pub config: Source,
    pub field: String,
    pub message: String,
    /// The config is fine, but the node root holds something in its way (a symlinked parent, a
    /// directory where a file goes): the root is what needs fixing, not the input.
    pub node_root: bool,
}

/// Why a write-set could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Invalid(HostInvalid),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

fn invalid(source: Source, field: impl Into<String>, message: impl Into<String>) -> BuildError {
    BuildError::Invalid(HostInvalid {
        config: source,
        field: field.into(),
        message: message.into(),
        node_root: false,
    })
}

/// The node root is in the way of the desired config's `field`.
fn in_the_way(source: Source, field: impl Into<String>, message: impl Into<String>) -> BuildError {
    BuildError::Invalid(HostInvalid {
        config: source,
        field: field.into(),
        message: message.into(),
        node_root: true,
    })
}

/// File contents; `Debug` shows only the length (contents can be secrets).
#[derive(Clone, PartialEq, Eq)]
pub struct Contents<'a>(pub Cow<'a, [u8]>);

impl fmt::Debug for Contents<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

/// One filesystem operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<'a> {
    /// Create one directory (its parent exists by then); `fix_existing` also corrects mode and owner.
    Mkdir {
        mode: u32,
        uid: u32,
        gid: u32,
        fix_existing: bool,
    },
    /// Remove a file, symlink or whole directory tree (a `/home/core/.ssh` not owned by core).
    RemoveTree,
    /// Atomically replace the path with a regular file.
    Write {
        contents: Contents<'a>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// Atomically replace the path with a copy of another (bytes, mode and owner; a symlink stays one).
    Copy {
        from: String,
        from_rel: PathBuf,
        size: u64,
    },
    /// Atomically replace the path with a symlink.
    Symlink { target: String },
    /// Remove a file or symlink; already gone is fine.
    Remove,
}

impl Action<'_> {
    /// Written to a temp file next to the destination first, then renamed over it.
    pub fn is_staged(&self) -> bool {
        matches!(
            self,
            Action::Write { .. } | Action::Copy { .. } | Action::Symlink { .. }
        )
    }
}

/// Why an operation is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    ParentDir,
    File,
    Unit,
    Dropin,
    Mask,
    Enable,
    Disable,
    Backup,
    NoOrigStamp,
    Restore,
    RemoveStale,
    SshDir,
    SshKeys,
    Password,
    CurrentConfig,
    DropBackup,
    TempLeftover,
}

/// One operation on a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op<'a> {
    /// The path as the config names it (`/home/core/...`), or the real one for parent directories.
    pub path: String,
    /// Where it is, relative to the root.
    pub rel: PathBuf,
    pub action: Action<'a>,
    pub reason: Reason,
    /// Device of the filesystem it lands on (for the free-space check).
    pub dev: u64,
}

/// The operations of one apply, in the order they run.
#[derive(Debug, Default)]
pub struct WriteSet<'a> {
    /// Leftover temp files and replaced trees removed, directories created (run one by one).
    pub prepare: Vec<Op<'a>>,
    /// Originals saved and no-original stamps, before anything they protect is touched (staged).
    pub backups: Vec<Op<'a>>,
    /// Files, units, dropins, masks, enablement links, SSH keys, password, restores, removals (staged).
    pub changes: Vec<Op<'a>>,
    /// The on-disk config, once everything else is in place (staged).
    pub odc: Vec<Op<'a>>,
    /// Backups and stamps consumed by restores and removals, dropped last.
    pub cleanup: Vec<Op<'a>>,
    /// Things skipped or kept, one sentence each.
    pub warnings: Vec<String>,
}

impl<'a> WriteSet<'a> {
    pub fn ops(&self) -> impl Iterator<Item = &Op<'a>> {
        self.prepare
            .iter()
            .chain(&self.backups)
            .chain(&self.changes)
            .chain(&self.odc)
            .chain(&self.cleanup)
    }
    pub fn len(&self) -> usize {
        self.ops().count()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// What a user sees of each operation (never contents).
    pub fn summary(&self) -> Vec<OpSummary> {
        self.ops().map(OpSummary::of).collect()
    }
}

/// One operation as printed by `apply` (text and JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpSummary {
    pub op: &'static str,
    pub path: String,
    pub reason: Reason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl OpSummary {
    fn of(op: &Op<'_>) -> Self {
        let (name, detail) = match &op.action {
            Action::Mkdir { mode, uid, gid, .. } => {
                ("mkdir", Some(format!("mode {mode:04o}, owner {uid}:{gid}")))
            }
            Action::RemoveTree => ("remove", Some("whole tree".to_string())),
            Action::Write {
                contents,
                mode,
                uid,
                gid,
            } => (
                "write",
                Some(if op.reason == Reason::Password {
                    "password hash of core".to_string()
                } else {
                    format!(
                        "mode {mode:04o}, owner {uid}:{gid}, {} bytes",
                        contents.0.len()
                    )
                }),
            ),
            Action::Copy { from, .. } => ("copy", Some(format!("from {from}"))),
            Action::Symlink { target } => ("symlink", Some(format!("-> {target}"))),
            Action::Remove => ("remove", None),
        };
        OpSummary {
            op: name,
            path: op.path.clone(),
            reason: op.reason,
            detail,
        }
    }
}

impl fmt::Display for OpSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = serde_json::to_value(self.reason)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        write!(f, "{:<8} {}  [{reason}", self.op, self.path)?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        f.write_str("]")
    }
}

/// What one apply is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub current: &'a MachineConfig,
    pub desired: &'a MachineConfig,
    /// The plan says core's SSH keys changed (so an emptied key list is written too).
    pub ssh_keys_changed: bool,
    /// The plan says core's password changed (so a removed hash locks the password).
    pub password_changed: bool,
    /// Record the desired config as the on-disk config at the end.
    pub write_odc: bool,
}

/// The backup of a pre-existing original.
pub fn orig_path(path: &str) -> String {
    format!("{ORIG_DIR}{path}.mcdorig")
}

/// The stamp saying there was no original.
pub fn noorig_path(path: &str) -> String {
    format!("{NOORIG_DIR}{path}.mcdnoorig")
}

/// The contents of core's `authorized_keys.d/ignition`: one key per line.
pub fn authorized_keys(keys: &[String]) -> Vec<u8> {
    let mut out = keys.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out.into_bytes()
}

/// What the config wants at a managed path.
#[derive(Debug, Clone, Copy)]
enum Want<'a> {
    File {
        contents: &'a [u8],
        mode: u32,
        user: &'a Owner,
        group: &'a Owner,
    },
    Symlink(&'static str),
    Absent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Unit,
    Dropin,
}

/// A path a config manages (a file, a unit file or mask, a dropin).
#[derive(Debug, Clone)]
struct Managed<'a> {
    path: String,
    want: Want<'a>,
    kind: Kind,
    /// The field naming the path (`spec.config.storage.files[3].path`).
    field: String,
    /// The entry's field (`spec.config.storage.files[3]`), for owners.
    entry_field: String,
}

static ROOT_OWNER: Owner = Owner::Root;

fn managed_paths(mc: &MachineConfig) -> Vec<Managed<'_>> {
    let mut out = Vec::new();
    for (i, f) in mc.ignition.files.iter().enumerate() {
        let entry_field = format!("spec.config.storage.files[{i}]");
        out.push(Managed {
            path: f.path.clone(),
            want: Want::File {
                contents: &f.contents,
                mode: f.mode,
                user: &f.user,
                group: &f.group,
            },
            kind: Kind::File,
            field: format!("{entry_field}.path"),
            entry_field,
        });
    }
    for (i, u) in mc.ignition.units.iter().enumerate() {
        let entry_field = format!("spec.config.systemd.units[{i}]");
        let want = if u.mask {
            Some(Want::Symlink(DEV_NULL))
        } else {
            u.contents.as_ref().map(|c| Want::File {
                contents: c.as_bytes(),
                mode: 0o644,
                user: &ROOT_OWNER,
                group: &ROOT_OWNER,
            })
        };
        if let Some(want) = want {
            out.push(Managed {
                path: units::unit_path(&u.name),
                want,
                kind: Kind::Unit,
                field: format!("{entry_field}.name"),
                entry_field: entry_field.clone(),
            });
        }
        for (j, d) in u.dropins.iter().enumerate() {
            let want = match &d.contents {
                Some(c) => Want::File {
                    contents: c.as_bytes(),
                    mode: 0o644,
                    user: &ROOT_OWNER,
                    group: &ROOT_OWNER,
                },
                None => Want::Absent,
            };
            out.push(Managed {
                path: units::dropin_path(&u.name, &d.name),
                want,
                kind: Kind::Dropin,
                field: format!("{entry_field}.dropins[{j}].name"),
                entry_field: format!("{entry_field}.dropins[{j}]"),
            });
        }
    }
    out
}

/// Paths of the desired config: no duplicates, none inside another, none of the daemon's own state.
fn check_desired_paths(managed: &[Managed<'_>]) -> Result<(), BuildError> {
    let mut by_path: BTreeMap<&str, &Managed<'_>> = BTreeMap::new();
    for m in managed {
        if m.path.matches('/').count() < 2 {
            return Err(invalid(
                Source::Desired,
                &m.field,
                format!("{:?} is a top-level directory of the node", m.path),
            ));
        }
        if is_under(&m.path, ORIG_DIR)
            || is_under(&m.path, NOORIG_DIR)
            || m.path == CURRENT_CONFIG
            || m.path == CURRENT_IMAGE
        {
            return Err(invalid(
                Source::Desired,
                &m.field,
                format!(
                    "{:?} is the daemon's own state and cannot be managed",
                    m.path
                ),
            ));
        }
        if let Some(prev) = by_path.insert(&m.path, m) {
            return Err(invalid(
                Source::Desired,
                &m.field,
                format!("{:?} is also written by {}", m.path, prev.field),
            ));
        }
    }
    for m in managed {
        let mut dir = m.path.as_str();
        while let Some((parent, _)) = dir.rsplit_once('/') {
            if parent.is_empty() {
                break;
            }
            if let Some(other) = by_path.get(parent) {
                return Err(invalid(
                    Source::Desired,
                    &other.field,
                    format!(
                        "{parent:?} is written as a file, but {} needs it to be a directory",
                        m.field
                    ),
                ));
            }
            dir = parent;
        }
    }
    Ok(())
}

/// Compute the write-set for `inputs` against `root`. Reads the root, writes nothing.
pub fn build<'a>(root: &Root, inputs: Inputs<'a>) -> Result<WriteSet<'a>, BuildError> {
    let accounts = Accounts::load(root)?;
    let mut b = Builder {
        root,
        inputs,
        accounts,
        ws: WriteSet::default(),
        resolved: HashMap::new(),
        planned_dirs: HashSet::new(),
        planned_links: HashSet::new(),
        removed_trees: Vec::new(),
        done_units: HashSet::new(),
    };
    let desired = managed_paths(inputs.desired);
    check_desired_paths(&desired)?;
    let current = managed_paths(inputs.current);
    let mut current_by_path: HashMap<&str, &Managed<'_>> = HashMap::new();
    for c in &current {
        current_by_path.entry(c.path.as_str()).or_insert(c);
    }
    let desired_paths: HashSet<&str> = desired.iter().map(|m| m.path.as_str()).collect();

    // SSH first: replacing a foreign-owned ~core/.ssh changes what every later path under it sees.
    b.ssh_keys()?;
    for m in &desired {
        b.desired_path(m, current_by_path.get(m.path.as_str()).copied())?;
    }
    let mut seen = HashSet::new();
    for c in &current {
        if !desired_paths.contains(c.path.as_str()) && seen.insert(c.path.as_str()) {
            b.stale_path(c)?;
        }
    }
    let managed: HashSet<&str> = desired_paths
        .iter()
        .copied()
        .chain(current.iter().map(|c| c.path.as_str()))
        .collect();
    b.orphaned_backups(&managed)?;
    b.enablement()?;
    b.password()?;
    if inputs.write_odc {
        let bytes = serde_json::to_vec(&inputs.desired.raw)
            .map_err(|e| BuildError::Failed(anyhow::anyhow!("serializing the config: {e}")))?;
        b.state_file(
            CURRENT_CONFIG,
            Cow::Owned(bytes),
            0o600,
            Reason::CurrentConfig,
        )?;
    }
    b.temp_leftovers()?;
    b.check_privileges()?;
    b.check_space()?;
    Ok(b.ws)
}

/// A write-set that atomically writes one of the daemon's state files (ODC, current image).
pub fn state_file<'a>(
    root: &Root,
    path: &str,
    contents: Cow<'a, [u8]>,
    mode: u32,
) -> Result<WriteSet<'a>, BuildError> {
    static EMPTY: std::sync::LazyLock<MachineConfig> =
        std::sync::LazyLock::new(MachineConfig::empty);
    let mut b = Builder {
        root,
        inputs: Inputs {
            current: &EMPTY,
            desired: &EMPTY,
            ssh_keys_changed: false,
            password_changed: false,
            write_odc: false,
        },
        accounts: Accounts::default(),
        ws: WriteSet::default(),
        resolved: HashMap::new(),
        planned_dirs: HashSet::new(),
        planned_links: HashSet::new(),
        removed_trees: Vec::new(),
        done_units: HashSet::new(),
    };
    b.state_file(path, contents, mode, Reason::CurrentConfig)?;
    b.temp_leftovers()?;
    Ok(b.ws)
}

struct Builder<'r, 'a> {
    root: &'r Root,
    inputs: Inputs<'a>,
    accounts: Accounts,
    ws: WriteSet<'a>,
    resolved: HashMap<String, Resolved>,
    planned_dirs: HashSet<PathBuf>,
    planned_links: HashSet<String>,
    /// Trees this apply removes: paths below them count as missing.
    removed_trees: Vec<PathBuf>,
    done_units: HashSet<String>,
}

impl<'a> Builder<'_, 'a> {
    fn resolve(&mut self, path: &str, source: Source, field: &str) -> Result<Resolved, BuildError> {
        let mut r = match self.resolved.get(path) {
            Some(r) => r.clone(),
            None => {
                let r = self.root.resolve(path).map_err(|e| match e {
                    PathError::Io { .. } => BuildError::Failed(anyhow::Error::new(e)),
                    PathError::NotAbsolute { .. } => invalid(source, field, e.to_string()),
                    other => in_the_way(source, field, other.to_string()),
                })?;
                self.resolved.insert(path.to_string(), r.clone());
                r
            }
        };
        if let Some(tree) = self
            .removed_trees
            .iter()
            .find(|t| r.rel.starts_with(t))
            .cloned()
        {
            let mut dirs = Vec::new();
            let mut dir = tree.clone();
            dirs.push(dir.clone());
            for comp in r.rel.strip_prefix(&tree).expect("checked").components() {
                dir.push(comp);
                dirs.push(dir.clone());
            }
            dirs.pop(); // the path itself
            r.entry = Entry::Missing;
            r.missing_dirs = dirs;
            r.existing_dir = tree.parent().map(Path::to_path_buf).unwrap_or_default();
        }
        Ok(r)
    }

    fn push(&mut self, phase: Phase, path: &str, r: &Resolved, action: Action<'a>, reason: Reason) {
        let op = Op {
            path: path.to_string(),
            rel: r.rel.clone(),
            action,
            reason,
            dev: r.existing_dev,
        };
        match phase {
            Phase::Prepare => self.ws.prepare.push(op),
            Phase::Backups => self.ws.backups.push(op),
            Phase::Changes => self.ws.changes.push(op),
            Phase::Odc => self.ws.odc.push(op),
            Phase::Cleanup => self.ws.cleanup.push(op),
        }
    }

    /// Create the missing parents of `r` (0755 root:root, as the MCD's MkdirAll).
    fn mkdirs(&mut self, r: &Resolved) {
        for dir in &r.missing_dirs {
            if self.planned_dirs.insert(dir.clone()) {
                let path = format!("/{}", dir.display());
                // The daemon's state (configs that may carry secrets, backups) is root's only, as the
                // packaged tmpfiles.d entry makes it; directories for config files are world-readable.
                let mode = if path == STATE_DIR { 0o700 } else { 0o755 };
                self.ws.prepare.push(Op {
                    path,
                    rel: dir.clone(),
                    action: Action::Mkdir {
                        mode,
                        uid: 0,
                        gid: 0,
                        fix_existing: false,
                    },
                    reason: Reason::ParentDir,
                    dev: r.existing_dev,
                });
            }
        }
    }

    /// The file at `r` already has exactly these bytes, mode and owner.
    fn same_file(
        &self,
        r: &Resolved,
        contents: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> anyhow::Result<bool> {
        match &r.entry {
            Entry::File(m)
                if m.mode == mode
                    && m.uid == uid
                    && m.gid == gid
                    && m.size == contents.len() as u64 =>
            {
                Ok(self.read(r)? == contents)
            }
            _ => Ok(false),
        }
    }

    fn read(&self, r: &Resolved) -> anyhow::Result<Vec<u8>> {
        use anyhow::Context;
        self.root
            .read_rel(&r.rel)
            .with_context(|| format!("reading {}", self.root.display(&r.logical)))
    }

    /// The path holds what the config wanted there (contents only: that is what proves authorship).
    fn holds(&self, r: &Resolved, want: Want<'_>) -> anyhow::Result<bool> {
        Ok(match (want, &r.entry) {
            (Want::File { contents, .. }, Entry::File(m)) => {
                m.size == contents.len() as u64 && self.read(r)? == contents
            }
            (Want::Symlink(t), e) => e.is_symlink_to(t),
            _ => false,
        })
    }

    /// Two paths hold the same file (bytes, mode, owner) or the same symlink.
    fn same_as(&self, a: &Resolved, b: &Resolved) -> anyhow::Result<bool> {
        Ok(match (&a.entry, &b.entry) {
            (Entry::File(ma), Entry::File(mb)) => {
                ma.mode == mb.mode
                    && ma.uid == mb.uid
                    && ma.gid == mb.gid
                    && ma.size == mb.size
                    && self.read(a)? == self.read(b)?
            }
            (Entry::Symlink { target: ta, .. }, Entry::Symlink { target: tb, .. }) => ta == tb,
            _ => false,
        })
    }

    /// For `/etc/X`, the image's copy `/usr/etc/X` when it exists.
    fn image_original(&mut self, path: &str) -> Result<Option<Resolved>, BuildError> {
        if !path.starts_with("/etc/") {
            return Ok(None);
        }
        match self.root.resolve(&format!("/usr{path}")) {
            Ok(r) if r.entry.is_file_like() => Ok(Some(r)),
            // Not there, or not safely reachable: no image original to fall back to.
            Ok(_) | Err(_) => Ok(None),
        }
    }

    fn desired_path(
        &mut self,
        m: &Managed<'a>,
        current: Option<&Managed<'a>>,
    ) -> Result<(), BuildError> {
        let r = self.resolve(&m.path, Source::Desired, &m.field)?;
        match &r.entry {
            Entry::Dir(_) => {
                return Err(in_the_way(
                    Source::Desired,
                    &m.field,
                    format!("{:?} is a directory on the node", m.path),
                ));
            }
            Entry::Other(_) => {
                return Err(in_the_way(
                    Source::Desired,
                    &m.field,
                    format!(
                        "{:?} exists on the node and is not a regular file (a socket, FIFO or device)",
                        m.path
                    ),
                ));
            }
            _ => {}
        }
        let owners =
            match m.want {
                Want::File { user, group, .. } => {
                    let uid = self.accounts.uid_for(user).map_err(|msg| {
                        invalid(Source::Desired, owner_field(m, "user", user), msg)
                    })?;
                    let gid = self.accounts.gid_for(group).map_err(|msg| {
                        invalid(Source::Desired, owner_field(m, "group", group), msg)
                    })?;
                    Some((uid, gid))
                }
                _ => None,
            };
        if !matches!(m.want, Want::Absent) || r.entry.exists() {
            self.record_original(m, &r, current)?;
        }
        let reason = match (m.kind, m.want) {
            (Kind::File, _) => Reason::File,
            (Kind::Unit, Want::Symlink(_)) => Reason::Mask,
            (Kind::Unit, _) => Reason::Unit,
            (Kind::Dropin, _) => Reason::Dropin,
        };
        match m.want {
            Want::File { contents, mode, .. } => {
                let (uid, gid) = owners.expect("files have owners");
                if !self.same_file(&r, contents, mode, uid, gid)? {
                    self.mkdirs(&r);
                    let action = Action::Write {
                        contents: Contents(Cow::Borrowed(contents)),
                        mode,
                        uid,
                        gid,
                    };
                    self.push(Phase::Changes, &m.path, &r, action, reason);
                }
            }
            Want::Symlink(target) => {
                if !r.entry.is_symlink_to(target) {
                    self.mkdirs(&r);
                    let action = Action::Symlink {
                        target: target.to_string(),
                    };
                    self.push(Phase::Changes, &m.path, &r, action, reason);
                }
            }
            Want::Absent => {
                if r.entry.exists() {
                    self.push(Phase::Changes, &m.path, &r, Action::Remove, reason);
                }
            }
        }
        Ok(())
    }

    /// Before a path is first managed: keep its original once, or stamp that it had none (§6).
    fn record_original(
        &mut self,
        m: &Managed<'a>,
        r: &Resolved,
        current: Option<&Managed<'a>>,
    ) -> Result<(), BuildError> {
        let orig_path = orig_path(&m.path);
        let noorig_path = noorig_path(&m.path);
        let orig = self.resolve(&orig_path, Source::Desired, &m.field)?;
        let noorig = self.resolve(&noorig_path, Source::Desired, &m.field)?;
        if orig.entry.exists() || noorig.entry.exists() {
            return Ok(());
        }
        let original = match current {
            // Written by an earlier config (Ignition at first boot): what is there is not original, the
            // image's copy is.
            Some(c) if !matches!(c.want, Want::Absent) => self.image_original(&m.path)?,
            Some(_) => None,
            // There before any config managed it: the admin's or the image's original.
            None if r.entry.is_file_like() => Some(r.clone()),
            None => None,
        };
        match original {
            Some(from) => {
                self.mkdirs(&orig);
                let action = copy_of(&from);
                self.push(Phase::Backups, &orig_path, &orig, action, Reason::Backup);
            }
            None => {
                self.mkdirs(&noorig);
                let action = Action::Write {
                    contents: Contents(Cow::Borrowed(b"")),
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                };
                self.push(
                    Phase::Backups,
                    &noorig_path,
                    &noorig,
                    action,
                    Reason::NoOrigStamp,
                );
            }
        }
        Ok(())
    }

    /// A path the current config managed and the desired one does not: restore or remove it (§6).
    fn stale_path(&mut self, c: &Managed<'a>) -> Result<(), BuildError> {
        if crate::config::paths::owned_by_cert_writer(&c.path) {
            return Ok(());
        }
        let r = self.resolve(&c.path, Source::Current, &c.field)?;
        if matches!(r.entry, Entry::Dir(_) | Entry::Other(_)) {
            self.ws
                .warnings
                .push(format!("not removing {}: it is no longer a file", c.path));
            return Ok(());
        }
        let orig_path = orig_path(&c.path);
        let noorig_path = noorig_path(&c.path);
        let orig = self.resolve(&orig_path, Source::Current, &c.field)?;
        let noorig = self.resolve(&noorig_path, Source::Current, &c.field)?;
        let reason = Reason::RemoveStale;
        if orig.entry.is_file_like() {
            if !self.same_as(&r, &orig)? {
                self.mkdirs(&r);
                let action = copy_of(&orig);
                self.push(Phase::Changes, &c.path, &r, action, Reason::Restore);
            }
            self.push(
                Phase::Cleanup,
                &orig_path,
                &orig,
                Action::Remove,
                Reason::DropBackup,
            );
        } else if noorig.entry.exists() {
            if r.entry.exists() {
                self.push(Phase::Changes, &c.path, &r, Action::Remove, reason);
            }
            self.push(
                Phase::Cleanup,
                &noorig_path,
                &noorig,
                Action::Remove,
                Reason::DropBackup,
            );
        } else if matches!(c.want, Want::Absent) || !r.entry.exists() {
            // Nothing to undo.
        } else if self.holds(&r, c.want)? {
            // No record (written at first boot): fall back to the image's copy, else remove.
            match self.image_original(&c.path)? {
                Some(from) => {
                    if !self.same_as(&r, &from)? {
                        let action = copy_of(&from);
                        self.push(Phase::Changes, &c.path, &r, action, Reason::Restore);
                    }
                }
                None => self.push(Phase::Changes, &c.path, &r, Action::Remove, reason),
            }
        } else {
            self.ws.warnings.push(format!(
                "keeping {}: it changed since the MachineConfig wrote it and there is no backup telling what to restore",
                c.path
            ));
        }
        Ok(())
    }

    /// Backups and stamps of paths neither config manages: left by an apply killed after it recorded the
    /// new config but before it dropped them. A stamp goes; an original goes only once it is back in
    /// place (otherwise it is kept: it may be the only copy).
    fn orphaned_backups(&mut self, managed: &HashSet<&str>) -> Result<(), BuildError> {
        let scheduled: HashSet<String> = self.ws.cleanup.iter().map(|op| op.path.clone()).collect();
        for (dir, suffix) in [(ORIG_DIR, ".mcdorig"), (NOORIG_DIR, ".mcdnoorig")] {
            for backup in self.list_files(dir)? {
                let Some(path) = backup
                    .strip_prefix(dir)
                    .and_then(|p| p.strip_suffix(suffix))
                    .map(str::to_string)
                else {
                    continue;
                };
                if managed.contains(path.as_str()) || scheduled.contains(&backup) {
                    continue;
                }
                let Ok(b) = self.root.resolve(&backup) else {
                    continue;
                };
                let drop = if suffix == ".mcdorig" {
                    match self.root.resolve(&path) {
                        Ok(r) => self.same_as(&r, &b)?,
                        Err(_) => false,
                    }
                } else {
                    true
                };
                if drop {
                    self.push(
                        Phase::Cleanup,
                        &backup,
                        &b,
                        Action::Remove,
                        Reason::DropBackup,
                    );
                }
            }
        }
        Ok(())
    }

    /// Regular files and symlinks below a directory (logical paths), depth first.
    fn list_files(&self, dir: &str) -> Result<Vec<String>, BuildError> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_string()];
        while let Some(d) = stack.pop() {
            for (name, entry) in self.root.list_dir(&d)? {
                let path = format!("{d}/{name}");
                match entry {
                    Entry::Dir(_) => stack.push(path),
                    e if e.is_file_like() => out.push(path),
                    _ => {}
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// One of the daemon's own files, root-owned, written last.
    fn state_file(
        &mut self,
        path: &str,
        contents: Cow<'a, [u8]>,
        mode: u32,
        reason: Reason,
    ) -> Result<(), BuildError> {
        let r = self.resolve(path, Source::Desired, "")?;
        if matches!(r.entry, Entry::Dir(_) | Entry::Other(_)) {
            return Err(BuildError::Failed(anyhow::anyhow!(
                "{} exists and is not a regular file",
                self.root.display(path)
            )));
        }
        if !self.same_file(&r, &contents, mode, 0, 0)? {
            self.mkdirs(&r);
            let action = Action::Write {
                contents: Contents(contents),
                mode,
                uid: 0,
                gid: 0,
            };
            self.push(Phase::Odc, path, &r, action, reason);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Prepare,
    Backups,
    Changes,
    Odc,
    Cleanup,
}

fn copy_of<'a>(from: &Resolved) -> Action<'a> {
    Action::Copy {
        from: from.logical.clone(),
        from_rel: from.rel.clone(),
        size: from.entry.meta().map_or(0, |m| m.size),
    }
}

/// `spec.config.storage.files[3].user.name` (or `.id`).
fn owner_field(m: &Managed<'_>, which: &str, owner: &Owner) -> String {
    match owner {
        Owner::Name(_) => format!("{}.{which}.name", m.entry_field),
        Owner::Id(_) => format!("{}.{which}.id", m.entry_field),
        Owner::Root => format!("{}.{which}", m.entry_field),
    }
}

#[cfg(test)]
mod tests;
