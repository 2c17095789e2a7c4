//! The Ignition part of a MachineConfig (`spec.config`), validated and normalized.
//!
//! Spec 3.0–3.5 are checked with the `ignition-config` crate (version gate, per-version schema, unknown
//! keys as warnings); spec 2.2 is translated for the parts the daemon uses (files, units, passwd). Both end
//! up in one normalized model with decoded file contents, so nothing downstream deals with versions or
//! data URLs.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::Value;

use super::InvalidInput;
use super::dataurl::{self, MAX_FILE_BYTES};
use super::paths::check_managed_path;

/// Upper bound on the sum of all decoded file contents of one config.
pub const MAX_TOTAL_BYTES: u64 = 512 * 1024 * 1024;

/// A normalized Ignition config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ignition {
    /// The spec version as written (`3.4.0`, `2.2.0`); `None` for an empty config.
    pub version: Option<String>,
    pub files: Vec<File>,
    pub units: Vec<Unit>,
    pub users: Vec<User>,
    /// Sections a running node cannot reconcile, kept canonical (empty ≡ absent) for comparison.
    pub fixed: FixedSections,
}

/// One `storage.files` entry with its contents decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: String,
    pub contents: Vec<u8>,
    /// Permission bits (default 0644).
    pub mode: u32,
    pub user: Owner,
    pub group: Owner,
    /// The entry has `append` fragments (never reconcilable on a running node).
    pub append: bool,
}

impl File {
    /// True when writing `other` would change nothing on disk.
    pub fn same_on_disk(&self, other: &File) -> bool {
        self.contents == other.contents
            && self.mode == other.mode
            && self.user == other.user
            && self.group == other.group
    }
}

/// The owner of a file: by id, by name (resolved against the node root's passwd/group), or root.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Owner {
    #[default]
    Root,
    Id(u32),
    Name(String),
}

/// One `systemd.units` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub name: String,
    /// Unit file contents; `None` when the entry only carries dropins, masks or enablement.
    pub contents: Option<String>,
    pub enabled: Option<bool>,
    pub mask: bool,
    pub dropins: Vec<Dropin>,
}

impl Unit {
    /// Whether the unit-level settings (not the dropins) say anything.
    pub fn has_unit_settings(&self) -> bool {
        self.contents.is_some() || self.enabled.is_some() || self.mask
    }
    pub fn same_unit_settings(&self, other: &Unit) -> bool {
        self.contents == other.contents && self.enabled == other.enabled && self.mask == other.mask
    }
}

/// A dropin `UNIT.d/NAME`; `None` contents means "remove it".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropin {
    pub name: String,
    pub contents: Option<String>,
}

/// One `passwd.users` entry, reduced to what the daemon may manage plus the names of anything else set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub ssh_authorized_keys: Vec<String>,
    pub password_hash: Option<String>,
    /// Other fields that were set (`uid`, `shell`, …): their presence makes a change unreconcilable.
    pub other_fields: Vec<String>,
}

/// Sections the daemon never changes on a running node, canonicalized for comparison.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FixedSections {
    pub disks: Value,
    pub filesystems: Value,
    pub raid: Value,
    pub luks: Value,
    pub directories: Value,
    pub links: Value,
    pub groups: Value,
    pub kernel_arguments: Value,
}

impl Ignition {
    /// The core user's entry, if any.
    pub fn core_user(&self) -> Option<&User> {
        self.users.iter().find(|u| u.name == "core")
    }
    pub fn file(&self, path: &str) -> Option<&File> {
        self.files.iter().find(|f| f.path == path)
    }
    pub fn unit(&self, name: &str) -> Option<&Unit> {
        self.units.iter().find(|u| u.name == name)
    }
}

/// Parse `spec.config`. `field` is the path used in error messages (normally `spec.config`).
pub fn parse(
    config: &Value,
    field: &str,
    warnings: &mut Vec<String>,
) -> Result<Ignition, InvalidInput> {
    let is_empty = match config {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        _ => false,
    };
    if is_empty {
        return Ok(Ignition::default());
    }
    if !config.is_object() {
        return Err(InvalidInput::new(
            field,
            "must be an Ignition config object",
        ));
    }
    let version = config
        .get("ignition")
        .and_then(|i| i.get("version"))
        .ok_or_else(|| InvalidInput::new(format!("{field}.ignition.version"), "is required"))?;
    let version = version.as_str().ok_or_else(|| {
        InvalidInput::new(format!("{field}.ignition.version"), "must be a string")
    })?;
    if version == "2.2.0" {
        let ign = normalize(v2::translate(config, field)?, version, field)?;
        mode_warnings(&ign, field, warnings);
        return Ok(ign);
    }
    if !V3_VERSIONS.contains(&version) {
        return Err(unsupported_version(field, version));
    }
    // Our pass first: it names the failing field. Then the crate's per-version schema check.
    let ign = normalize(deserialize_at::<RawConfig>(config, field)?, version, field)?;
    check_v3(config, version, field, warnings)?;
    mode_warnings(&ign, field, warnings);
    Ok(ign)
}

/// Modes that are legal but almost always a mistake (a `7777` typed for `0777`): setuid or setgid
/// files, and files any local user may change. Ignition writes them as asked, and so do we; the
/// admin is told.
fn mode_warnings(ign: &Ignition, field: &str, warnings: &mut Vec<String>) {
    for (i, f) in ign.files.iter().enumerate() {
        let mut risks = Vec::new();
        if f.mode & 0o4000 != 0 {
            risks.push("setuid (runs as its owner)");
        }
        if f.mode & 0o2000 != 0 {
            risks.push("setgid (runs with its group)");
        }
        if f.mode & 0o002 != 0 {
            risks.push("world-writable (any local user can change it)");
        }
        if !risks.is_empty() {
            warnings.push(format!(
                "{field}.storage.files[{i}].mode: {:04o} makes {} {}; is that intended?",
                f.mode,
                f.path,
                risks.join(" and ")
            ));
        }
    }
}

const V3_VERSIONS: &[&str] = &["3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0", "3.5.0"];

fn unsupported_version(field: &str, version: &str) -> InvalidInput {
    InvalidInput::new(
        format!("{field}.ignition.version"),
        format!("Ignition spec {version} is not supported (accepted: 2.2.0 and 3.0.0 to 3.5.0)"),
    )
}

/// Run the `ignition-config` crate over a v3 config: it gates the version and checks the schema of that
/// exact version (a 3.0 config may not use fields added in 3.4). Unknown keys are warnings, as in Ignition.
fn check_v3(
    config: &Value,
    version: &str,
    field: &str,
    warnings: &mut Vec<String>,
) -> Result<(), InvalidInput> {
    let bytes = serde_json::to_vec(config).expect("a JSON value serializes");
    match ignition_config::Config::parse_slice(&bytes) {
        Ok((parsed, unused)) => {
            if matches!(parsed, ignition_config::Config::V3_6(_)) {
                return Err(unsupported_version(field, version));
            }
            for w in unused {
                match w {
                    ignition_config::Warning::UnusedKey(key) => {
                        let key = bracket_indices(key.trim_start_matches("$."));
                        warnings.push(format!(
                            "{field}.{key}: unknown key for Ignition {version}, ignored"
                        ));
                    }
                    other => warnings.push(format!("{field}: {other}")),
                }
            }
            Ok(())
        }
        Err(
            ignition_config::Error::UnknownVersion(_) | ignition_config::Error::InvalidVersion(_),
        ) => Err(unsupported_version(field, version)),
        Err(e) => Err(InvalidInput::new(
            field,
            format!("invalid Ignition {version} config: {e}"),
        )),
    }
}

/// `storage.files.0.x` (the `ignition-config` crate's key paths) in the style of every other message:
/// `storage.files[0].x`.
fn bracket_indices(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 4);
    for (i, part) in path.split('.').enumerate() {
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if i > 0 {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// Deserialize with the failing field named, e.g. `spec.config.storage.files[2].mode`.
fn deserialize_at<T: serde::de::DeserializeOwned>(
    value: &Value,
    field: &str,
) -> Result<T, InvalidInput> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            field.to_string()
        } else {
            format!("{field}.{path}")
        };
        InvalidInput::new(at, e.into_inner().to_string())
    })
}

// ---- the lenient raw shape shared by v3 and translated v2.2 ----

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    storage: Option<RawStorage>,
    #[serde(default)]
    systemd: Option<RawSystemd>,
    #[serde(default)]
    passwd: Option<RawPasswd>,
    #[serde(default)]
    kernel_arguments: Value,
}

#[derive(Debug, Default, Deserialize)]
struct RawStorage {
    #[serde(default)]
    files: Option<Vec<RawFile>>,
    #[serde(default)]
    directories: Value,
    #[serde(default)]
    links: Value,
    #[serde(default)]
    disks: Value,
    #[serde(default)]
    filesystems: Value,
    #[serde(default)]
    raid: Value,
    #[serde(default)]
    luks: Value,
}

#[derive(Debug, Default, Deserialize)]
struct RawFile {
    path: String,
    #[serde(default)]
    contents: Option<RawResource>,
    #[serde(default)]
    append: Option<Vec<Value>>,
    #[serde(default)]
    mode: Option<i64>,
    #[serde(default)]
    user: Option<RawOwner>,
    #[serde(default)]
    group: Option<RawOwner>,
}

#[derive(Debug, Default, Deserialize)]
struct RawResource {
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    compression: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawOwner {
    #[serde(default)]
    id: Option<i64>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawSystemd {
    #[serde(default)]
    units: Option<Vec<RawUnit>>,
}

#[derive(Debug, Default, Deserialize)]
struct RawUnit {
    name: String,
    #[serde(default)]
    contents: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    mask: Option<bool>,
    #[serde(default)]
    dropins: Option<Vec<RawDropin>>,
}

#[derive(Debug, Default, Deserialize)]
struct RawDropin {
    name: String,
    #[serde(default)]
    contents: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawPasswd {
    #[serde(default)]
    users: Option<Vec<serde_json::Map<String, Value>>>,
    #[serde(default)]
    groups: Value,
}

fn normalize(raw: RawConfig, version: &str, field: &str) -> Result<Ignition, InvalidInput> {
    let storage = raw.storage.unwrap_or_default();
    let files = normalize_files(
        storage.files.unwrap_or_default(),
        &format!("{field}.storage.files"),
    )?;
    let units = normalize_units(
        raw.systemd.unwrap_or_default().units.unwrap_or_default(),
        &format!("{field}.systemd.units"),
    )?;
    let passwd = raw.passwd.unwrap_or_default();
    let users = normalize_users(
        passwd.users.unwrap_or_default(),
        &format!("{field}.passwd.users"),
    )?;
    Ok(Ignition {
        version: Some(version.to_string()),
        files,
        units,
        users,
        fixed: FixedSections {
            disks: canonical(storage.disks),
            filesystems: canonical(storage.filesystems),
            raid: canonical(storage.raid),
            luks: canonical(storage.luks),
            directories: canonical(storage.directories),
            links: canonical(storage.links),
            groups: canonical(passwd.groups),
            kernel_arguments: canonical(raw.kernel_arguments),
        },
    })
}

fn normalize_files(raw: Vec<RawFile>, field: &str) -> Result<Vec<File>, InvalidInput> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut total: u64 = 0;
    let mut files = Vec::with_capacity(raw.len());
    for (i, f) in raw.into_iter().enumerate() {
        let at = |sub: &str| format!("{field}[{i}].{sub}");
        check_managed_path(&f.path).map_err(|why| InvalidInput::new(at("path"), why))?;
        if let Some(prev) = seen.insert(f.path.clone(), i) {
            return Err(InvalidInput::new(
                at("path"),
                format!("duplicate file path {:?} (also at {field}[{prev}])", f.path),
            ));
        }
        let contents = match f.contents {
            None => Vec::new(),
            Some(res) => {
                let bytes = match res.source.as_deref() {
                    None | Some("") => Vec::new(),
                    Some(src) => dataurl::decode(src)
                        .map_err(|e| InvalidInput::new(at("contents.source"), e.to_string()))?,
                };
                dataurl::decompress(bytes, res.compression.as_deref(), MAX_FILE_BYTES)
                    .map_err(|e| InvalidInput::new(at("contents"), e.to_string()))?
            }
        };
        total += contents.len() as u64;
        if total > MAX_TOTAL_BYTES {
            return Err(InvalidInput::new(
                field,
                format!("decoded file contents exceed {MAX_TOTAL_BYTES} bytes in total"),
            ));
        }
        let mode = match f.mode {
            None => 0o644,
            Some(m) if (0..=0o7777).contains(&m) => m as u32,
            Some(m) => {
                return Err(InvalidInput::new(
                    at("mode"),
                    format!(
                        "must be a permission mode between 0 and 07777 (decimal 4095), got {m}"
                    ),
                ));
            }
        };
        let user = owner(f.user, &at("user"))?;
        let group = owner(f.group, &at("group"))?;
        files.push(File {
            path: f.path,
            contents,
            mode,
            user,
            group,
            append: f.append.is_some_and(|a| !a.is_empty()),
        });
    }
    Ok(files)
}

fn owner(raw: Option<RawOwner>, field: &str) -> Result<Owner, InvalidInput> {
    let Some(raw) = raw else {
        return Ok(Owner::Root);
    };
    let name = raw.name.filter(|n| !n.is_empty());
    match (raw.id, name) {
        (Some(_), Some(_)) => Err(InvalidInput::new(field, "set either id or name, not both")),
        (Some(id), None) => u32::try_from(id).map(Owner::Id).map_err(|_| {
            InvalidInput::new(
                format!("{field}.id"),
                format!("must be between 0 and 4294967295, got {id}"),
            )
        }),
        (None, Some(name)) => {
            if name.contains([':', '/', '\n']) || name.chars().any(char::is_whitespace) {
                return Err(InvalidInput::new(
                    format!("{field}.name"),
                    format!("{name:?} is not a valid user or group name"),
                ));
            }
            Ok(Owner::Name(name))
        }
        (None, None) => Ok(Owner::Root),
    }
}

const UNIT_SUFFIXES: &[&str] = &[
    ".service",
    ".socket",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".target",
    ".path",
    ".timer",
    ".snapshot",
    ".slice",
    ".scope",
];

/// Check a systemd unit name (`foo.service`, `getty@tty1.service`).
pub fn check_unit_name(name: &str) -> Result<(), String> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c));
    let Some(suffix) = UNIT_SUFFIXES.iter().find(|s| name.ends_with(*s)) else {
        return Err(format!(
            "{name:?} is not a systemd unit name (it needs a suffix such as .service)"
        ));
    };
    if !valid_chars || name.len() == suffix.len() || name.len() > 255 {
        return Err(format!("{name:?} is not a valid systemd unit name"));
    }
    Ok(())
}

fn check_dropin_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.contains('/')
        || name.starts_with('.')
        || name.chars().any(|c| c.is_control())
    {
        return Err(format!("{name:?} is not a valid dropin file name"));
    }
    if !name.ends_with(".conf") {
        return Err(format!(
            "dropin {name:?} must end in .conf (systemd ignores other files)"
        ));
    }
    Ok(())
}

fn normalize_units(raw: Vec<RawUnit>, field: &str) -> Result<Vec<Unit>, InvalidInput> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut units = Vec::with_capacity(raw.len());
    for (i, u) in raw.into_iter().enumerate() {
        check_unit_name(&u.name)
            .map_err(|why| InvalidInput::new(format!("{field}[{i}].name"), why))?;
        if let Some(prev) = seen.insert(u.name.clone(), i) {
            return Err(InvalidInput::new(
                format!("{field}[{i}].name"),
                format!("duplicate unit {:?} (also at {field}[{prev}])", u.name),
            ));
        }
        let mut dropin_names: HashMap<String, usize> = HashMap::new();
        let mut dropins = Vec::new();
        for (j, d) in u.dropins.unwrap_or_default().into_iter().enumerate() {
            let at = format!("{field}[{i}].dropins[{j}].name");
            check_dropin_name(&d.name).map_err(|why| InvalidInput::new(&at, why))?;
            if dropin_names.insert(d.name.clone(), j).is_some() {
                return Err(InvalidInput::new(
                    at,
                    format!("duplicate dropin {:?}", d.name),
                ));
            }
            dropins.push(Dropin {
                name: d.name,
                contents: d.contents.filter(|c| !c.is_empty()),
            });
        }
        units.push(Unit {
            name: u.name,
            contents: u.contents.filter(|c| !c.is_empty()),
            enabled: u.enabled,
            mask: u.mask.unwrap_or(false),
            dropins,
        });
    }
    Ok(units)
}

fn normalize_users(
    raw: Vec<serde_json::Map<String, Value>>,
    field: &str,
) -> Result<Vec<User>, InvalidInput> {
    let mut users = Vec::with_capacity(raw.len());
    for (i, mut u) in raw.into_iter().enumerate() {
        let at = |sub: &str| format!("{field}[{i}].{sub}");
        let name = match u.remove("name") {
            Some(Value::String(n)) if !n.is_empty() => n,
            _ => return Err(InvalidInput::new(at("name"), "is required")),
        };
        let ssh_authorized_keys = match u.remove("sshAuthorizedKeys") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(keys)) => {
                let mut out = Vec::new();
                for (k, key) in keys.into_iter().enumerate() {
                    let Value::String(key) = key else {
                        return Err(InvalidInput::new(
                            at(&format!("sshAuthorizedKeys[{k}]")),
                            "must be a string",
                        ));
                    };
                    if key.contains(['\n', '\r', '\0']) {
                        return Err(InvalidInput::new(
                            at(&format!("sshAuthorizedKeys[{k}]")),
                            "must be a single line (one key per entry)",
                        ));
                    }
                    out.push(key);
                }
                out
            }
            Some(_) => {
                return Err(InvalidInput::new(
                    at("sshAuthorizedKeys"),
                    "must be a list of strings",
                ));
            }
        };
        let password_hash = match u.remove("passwordHash") {
            None | Some(Value::Null) => None,
            Some(Value::String(h)) => {
                if h.contains([':', '\n', '\r', '\0']) {
                    // Never echo the hash itself: it is a secret.
                    return Err(InvalidInput::new(
                        at("passwordHash"),
                        "must not contain ':' or line breaks",
                    ));
                }
                Some(h)
            }
            Some(_) => return Err(InvalidInput::new(at("passwordHash"), "must be a string")),
        };
        let other_fields = u
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, _)| k)
            .collect();
        users.push(User {
            name,
            ssh_authorized_keys,
            password_hash,
            other_fields,
        });
    }
    Ok(users)
}

/// Canonical form for comparisons: null, `[]`, `{}` and objects of only those are all "absent".
fn canonical(v: Value) -> Value {
    match v {
        Value::Array(a) if a.is_empty() => Value::Null,
        Value::Array(a) => Value::Array(a.into_iter().map(canonical).collect()),
        Value::Object(m) => {
            let m: serde_json::Map<String, Value> = m
                .into_iter()
                .map(|(k, v)| (k, canonical(v)))
                .filter(|(_, v)| !v.is_null())
                .collect();
            if m.is_empty() {
                Value::Null
            } else {
                Value::Object(m)
            }
        }
        other => other,
    }
}

/// Ignition spec 2.2, translated for the parts the daemon manages.
mod v2 {
    use super::*;

    #[derive(Debug, Default, Deserialize)]
    struct Config {
        #[serde(default)]
        storage: Option<Storage>,
        #[serde(default)]
        systemd: Option<Systemd>,
        #[serde(default)]
        passwd: Option<RawPasswd>,
        #[serde(default)]
        networkd: Option<Networkd>,
    }

    #[derive(Debug, Default, Deserialize)]
    struct Storage {
        #[serde(default)]
        files: Option<Vec<File>>,
        #[serde(default)]
        directories: Value,
        #[serde(default)]
        links: Value,
        #[serde(default)]
        disks: Value,
        #[serde(default)]
        filesystems: Value,
        #[serde(default)]
        raid: Value,
    }

    #[derive(Debug, Default, Deserialize)]
    struct File {
        #[serde(default)]
        filesystem: Option<String>,
        path: String,
        #[serde(default)]
        contents: Option<RawResource>,
        #[serde(default)]
        mode: Option<i64>,
        #[serde(default)]
        user: Option<RawOwner>,
        #[serde(default)]
        group: Option<RawOwner>,
        #[serde(default)]
        append: Option<bool>,
    }

    #[derive(Debug, Default, Deserialize)]
    struct Systemd {
        #[serde(default)]
        units: Option<Vec<Unit>>,
    }

    #[derive(Debug, Default, Deserialize)]
    struct Unit {
        name: String,
        #[serde(default)]
        contents: Option<String>,
        #[serde(default)]
        enable: Option<bool>,
        #[serde(default)]
        enabled: Option<bool>,
        #[serde(default)]
        mask: Option<bool>,
        #[serde(default)]
        dropins: Option<Vec<RawDropin>>,
    }

    #[derive(Debug, Default, Deserialize)]
    struct Networkd {
        #[serde(default)]
        units: Option<Vec<Value>>,
    }

    pub(super) fn translate(config: &Value, field: &str) -> Result<RawConfig, InvalidInput> {
        let c: Config = deserialize_at(config, field)?;
        if c.networkd
            .and_then(|n| n.units)
            .is_some_and(|u| !u.is_empty())
        {
            return Err(InvalidInput::new(
                format!("{field}.networkd.units"),
                "networkd units (Ignition 2.x) are not supported; use NetworkManager files instead",
            ));
        }
        let storage = c.storage.unwrap_or_default();
        let mut files = Vec::new();
        for (i, f) in storage.files.unwrap_or_default().into_iter().enumerate() {
            match f.filesystem.as_deref() {
                Some("root") => {}
                Some(other) => {
                    return Err(InvalidInput::new(
                        format!("{field}.storage.files[{i}].filesystem"),
                        format!("only the \"root\" filesystem is supported, got {other:?}"),
                    ));
                }
                None => {
                    return Err(InvalidInput::new(
                        format!("{field}.storage.files[{i}].filesystem"),
                        "is required",
                    ));
                }
            }
            files.push(RawFile {
                path: f.path,
                contents: f.contents,
                append: f.append.filter(|a| *a).map(|_| vec![Value::Bool(true)]),
                mode: f.mode,
                user: f.user,
                group: f.group,
            });
        }
        let units = c
            .systemd
            .unwrap_or_default()
            .units
            .unwrap_or_default()
            .into_iter()
            .map(|u| RawUnit {
                name: u.name,
                contents: u.contents,
                enabled: u.enabled.or(u.enable),
                mask: u.mask,
                dropins: u.dropins,
            })
            .collect();
        Ok(RawConfig {
            storage: Some(RawStorage {
                files: Some(files),
                directories: storage.directories,
                links: storage.links,
                disks: storage.disks,
                filesystems: storage.filesystems,
                raid: storage.raid,
                luks: Value::Null,
            }),
            systemd: Some(RawSystemd { units: Some(units) }),
            passwd: c.passwd,
            kernel_arguments: Value::Null,
        })
    }
}

/// Sort-stable map from file path to entry, for diffs.
pub fn files_by_path(ign: &Ignition) -> BTreeMap<&str, &File> {
    ign.files.iter().map(|f| (f.path.as_str(), f)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_ok(v: Value) -> (Ignition, Vec<String>) {
        let mut w = Vec::new();
        let ign = parse(&v, "spec.config", &mut w).unwrap();
        (ign, w)
    }

    fn parse_err(v: Value) -> String {
        parse(&v, "spec.config", &mut Vec::new())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn empty_configs() {
        assert_eq!(parse_ok(json!(null)).0, Ignition::default());
        assert_eq!(parse_ok(json!({})).0, Ignition::default());
    }

    #[test]
    fn every_v3_version_is_accepted() {
        for v in ["3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0", "3.5.0"] {
            let (ign, w) = parse_ok(json!({
                "ignition": {"version": v},
                "storage": {"files": [{"path": "/etc/x", "contents": {"source": "data:,hi"}, "mode": 384}]},
            }));
            assert_eq!(ign.version.as_deref(), Some(v));
            assert_eq!(ign.files[0].contents, b"hi");
            assert_eq!(ign.files[0].mode, 0o600);
            assert!(w.is_empty(), "{v}: {w:?}");
        }
    }

    #[test]
    fn unsupported_versions() {
        for v in [
            "3.6.0-experimental",
            "4.0.0",
            "2.0.0",
            "2.1.0",
            "2.3.0",
            "1.0.0",
            "x",
        ] {
            let e = parse_err(json!({"ignition": {"version": v}}));
            assert!(
                e.starts_with("spec.config.ignition.version: Ignition spec"),
                "{v}: {e}"
            );
            assert!(e.contains("accepted: 2.2.0 and 3.0.0 to 3.5.0"));
        }
        assert_eq!(
            parse_err(json!({"storage": {}})),
            "spec.config.ignition.version: is required"
        );
    }

    #[test]
    fn version_specific_fields_warn() {
        // `compression` was added in 3.1; in a 3.0 config it is an unknown key (ignored, as Ignition does).
        let (_, w) = parse_ok(json!({
            "ignition": {"version": "3.0.0"},
            "storage": {"files": [{"path": "/etc/x", "contents": {"source": "data:,hi", "compression": ""}, "oops": 1}]},
            "bogus": 1,
        }));
        assert!(w.iter().any(|w| w.contains("bogus")), "{w:?}");
        // Key paths are written as in errors: files[0], not files.0.
        assert!(
            w.contains(
                &"spec.config.storage.files[0].oops: unknown key for Ignition 3.0.0, ignored"
                    .to_string()
            ),
            "{w:?}"
        );
    }

    #[test]
    fn risky_modes_warn() {
        let cfg = |mode: i64| {
            json!({"ignition": {"version": "3.4.0"}, "storage": {"files": [
                {"path": "/etc/ok", "mode": 0o755},
                {"path": "/etc/x", "mode": mode}]}})
        };
        let (_, w) = parse_ok(cfg(0o7777));
        assert_eq!(
            w,
            [
                "spec.config.storage.files[1].mode: 7777 makes /etc/x setuid (runs as its owner) and setgid (runs with its group) and world-writable (any local user can change it); is that intended?"
            ]
        );
        let (_, w) = parse_ok(cfg(0o666));
        assert_eq!(
            w,
            [
                "spec.config.storage.files[1].mode: 0666 makes /etc/x world-writable (any local user can change it); is that intended?"
            ]
        );
        assert!(
            parse_ok(cfg(0o1755)).1.is_empty(),
            "sticky alone is harmless"
        );
        assert!(parse_ok(cfg(0o600)).1.is_empty());
    }

    #[test]
    fn field_paths_in_errors() {
        let cfg =
            |files: Value| json!({"ignition": {"version": "3.4.0"}, "storage": {"files": files}});
        let cases = [
            (
                json!([{"path": "/etc/a"}, {"path": "/etc/b"}, {"path": "etc/c"}]),
                "spec.config.storage.files[2].path: must be absolute",
            ),
            (
                json!([{"path": "/etc/../x"}]),
                "spec.config.storage.files[0].path: must not contain '..'",
            ),
            (
                json!([{"path": "/usr/bin/x"}]),
                "spec.config.storage.files[0].path: \"/usr/bin/x\" is under /usr",
            ),
            (
                json!([{"path": "/etc/a", "mode": 99999}]),
                "spec.config.storage.files[0].mode: must be a permission mode",
            ),
            (
                json!([{"path": "/etc/a", "mode": -1}]),
                "spec.config.storage.files[0].mode",
            ),
            (
                json!([{"path": "/etc/a", "mode": "0644"}]),
                "spec.config.storage.files[0].mode: invalid type",
            ),
            (
                json!([{"path": "/etc/a", "contents": {"source": "https://x/y"}}]),
                "spec.config.storage.files[0].contents.source: remote source \"https:\"",
            ),
            (
                json!([{"path": "/etc/a", "contents": {"source": "data:;base64,@@"}}]),
                "spec.config.storage.files[0].contents.source: malformed data URL",
            ),
            (
                json!([{"path": "/etc/a", "contents": {"source": "data:,abc", "compression": "gzip"}}]),
                "spec.config.storage.files[0].contents: invalid gzip data",
            ),
            (
                json!([{"path": "/etc/a"}, {"path": "/etc/a"}]),
                "spec.config.storage.files[1].path: duplicate file path",
            ),
            (
                json!([{"path": "/etc/a", "user": {"id": 1, "name": "x"}}]),
                "spec.config.storage.files[0].user: set either id or name",
            ),
            (
                json!([{"path": "/etc/a", "user": {"id": -5}}]),
                "spec.config.storage.files[0].user.id",
            ),
        ];
        for (files, want) in cases {
            let e = parse_err(cfg(files.clone()));
            assert!(
                e.starts_with(want),
                "{files}: got {e:?}, want prefix {want:?}"
            );
        }
    }

    #[test]
    fn units_and_dropins() {
        let (ign, _) = parse_ok(json!({
            "ignition": {"version": "3.2.0"},
            "systemd": {"units": [
                {"name": "hello.service", "contents": "[Unit]\n", "enabled": true,
                 "dropins": [{"name": "10-x.conf", "contents": "[Service]\n"}, {"name": "20-empty.conf", "contents": ""}]},
                {"name": "kubelet.service", "dropins": [{"name": "99-y.conf", "contents": "x"}]},
                {"name": "bad.service", "mask": true}
            ]}
        }));
        assert_eq!(ign.units.len(), 3);
        assert_eq!(ign.units[0].dropins[1].contents, None);
        assert!(!ign.units[1].has_unit_settings());
        assert!(ign.units[2].mask);
        let bad = |units: Value| {
            parse_err(json!({"ignition": {"version": "3.2.0"}, "systemd": {"units": units}}))
        };
        assert!(bad(json!([{"name": "noext"}])).starts_with(
            "spec.config.systemd.units[0].name: \"noext\" is not a systemd unit name"
        ));
        assert!(bad(json!([{"name": "a/b.service"}])).contains("not a valid systemd unit name"));
        assert!(
            bad(json!([{"name": "a.service"}, {"name": "a.service"}]))
                .contains("units[1].name: duplicate unit")
        );
        assert!(
            bad(json!([{"name": "a.service", "dropins": [{"name": "x.txt"}]}]))
                .contains("dropins[0].name: dropin \"x.txt\" must end in .conf")
        );
        assert!(
            bad(json!([{"name": "a.service", "dropins": [{"name": "../x.conf"}]}]))
                .contains("not a valid dropin")
        );
    }

    #[test]
    fn users() {
        let (ign, _) = parse_ok(json!({
            "ignition": {"version": "3.4.0"},
            "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": ["ssh-ed25519 AAAA a@b"], "passwordHash": "$6$x$y", "shell": "/bin/zsh"}]}
        }));
        let core = ign.core_user().unwrap();
        assert_eq!(core.ssh_authorized_keys, vec!["ssh-ed25519 AAAA a@b"]);
        assert_eq!(core.password_hash.as_deref(), Some("$6$x$y"));
        assert_eq!(core.other_fields, vec!["shell"]);
        let bad = |u: Value| {
            parse_err(json!({"ignition": {"version": "3.4.0"}, "passwd": {"users": [u]}}))
        };
        assert!(
            bad(json!({"name": "core", "sshAuthorizedKeys": ["a\nb"]}))
                .contains("sshAuthorizedKeys[0]: must be a single line")
        );
        let e = bad(json!({"name": "core", "passwordHash": "$6$secret:x"}));
        assert!(e.contains("passwordHash: must not contain") && !e.contains("secret"));
        assert!(bad(json!({"sshAuthorizedKeys": []})).contains("users[0].name: is required"));
    }

    #[test]
    fn fixed_sections_are_canonical() {
        let (a, _) = parse_ok(
            json!({"ignition": {"version": "3.4.0"}, "storage": {"disks": [], "links": null}}),
        );
        let (b, _) = parse_ok(json!({"ignition": {"version": "3.4.0"}}));
        assert_eq!(a.fixed, b.fixed);
        let (c, _) = parse_ok(
            json!({"ignition": {"version": "3.4.0"}, "kernelArguments": {"shouldExist": ["x"]}}),
        );
        assert_ne!(c.fixed, b.fixed);
    }

    #[test]
    fn v2_2_translation() {
        let (ign, _) = parse_ok(json!({
            "ignition": {"version": "2.2.0"},
            "storage": {"files": [{"filesystem": "root", "path": "/etc/motd", "contents": {"source": "data:,hi"}, "mode": 420}]},
            "systemd": {"units": [{"name": "a.service", "enable": true, "contents": "[Unit]"}]},
            "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": ["ssh-rsa AAA"]}]}
        }));
        assert_eq!(ign.files[0].path, "/etc/motd");
        assert_eq!(ign.files[0].mode, 0o644);
        assert_eq!(ign.units[0].enabled, Some(true));
        assert_eq!(ign.core_user().unwrap().ssh_authorized_keys.len(), 1);
        let (ign, _) = parse_ok(json!({
            "ignition": {"version": "2.2.0"},
            "storage": {"files": [{"filesystem": "root", "path": "/etc/x", "append": true, "contents": {"source": "data:,a"}}]}
        }));
        assert!(ign.files[0].append);
        let e = parse_err(
            json!({"ignition": {"version": "2.2.0"}, "storage": {"files": [{"filesystem": "data", "path": "/etc/x"}]}}),
        );
        assert!(
            e.starts_with("spec.config.storage.files[0].filesystem: only the \"root\" filesystem"),
            "{e}"
        );
        let e = parse_err(
            json!({"ignition": {"version": "2.2.0"}, "networkd": {"units": [{"name": "x.network"}]}}),
        );
        assert!(e.contains("networkd"));
    }
}
