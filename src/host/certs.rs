//! What the cluster hands every node through `ControllerConfig/machine-config-controller`, written to
//! the node root without a drain or a reboot, as the MCD's certificate writer does (MCO
//! `pkg/daemon/certificate_writer.go`, `syncControllerConfigHandler` and
//! `syncInternalRegistryPullSecrets`; `image_manager_helper.go`, `useMergedPullSecrets`):
//!
//! | from | to |
//! |---|---|
//! | `spec.kubeAPIServerServingCAData` | `/etc/kubernetes/kubelet-ca.crt` |
//! | `spec.cloudProviderCAData` (when set) | `/etc/kubernetes/static-pod-resources/configmaps/cloud-config/ca-bundle.pem` |
//! | `spec.imageRegistryBundleData[]`, `…UserData[]` `{file, data}` | `/etc/docker/certs.d/<file with ".." → ":">/ca.crt` |
//! | `spec.internalRegistryPullSecret` | `/etc/mco/internal-registry-pull-secret.json` |
//! | that secret merged over the node's pull secret (`/var/lib/kubelet/config.json`) | `/run/ostree/auth.json` |
//!
//! Where we differ from the MCD, on purpose:
//! - Everything is validated before anything is written (base64, PEM certificates, a registry name
//!   that stays a single directory under `/etc/docker/certs.d`, a Docker `config.json`-shaped pull
//!   secret); the first problem is returned with the field it is in. The MCD writes what it gets.
//! - A file is written only when its content changes (atomically: temp file, fsync, rename).
//! - Registry directories are removed only when this writer created them and they are no longer
//!   listed (the MCD removes every directory of `/etc/docker/certs.d` that is not listed, comparing
//!   the unmapped `..` names, so it removes and rewrites `host:port` entries on every sync).
//! - The pull secrets are written mode 0600 (the MCD: 0644).
//! - `/run/ostree/auth.json` is a file holding the merge, not a symlink: the MCD links it to the
//!   internal-registry secret, which the operator already merged with the global pull secret; here the
//!   node's own pull secret is merged in (the internal registry's entries win), so a ControllerConfig
//!   holding only the internal registry's credentials still leaves the node able to pull from the
//!   others. Both OS backends read it: rpm-ostree on the host, our ostree backend from the node root.
//!   With no internal-registry secret, the file is not written (and removed if we wrote it), so the
//!   backends fall back to `/etc/ostree/auth.json` or the kubelet's `config.json` as before.

use std::collections::BTreeMap;

use anyhow::Context;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::odc::{remove_state_file, write_state_file};
use super::root::{Entry, Root};

pub const KUBELET_CA: &str = "/etc/kubernetes/kubelet-ca.crt";
pub const CLOUD_CA: &str =
    "/etc/kubernetes/static-pod-resources/configmaps/cloud-config/ca-bundle.pem";
pub const REGISTRY_CERTS_DIR: &str = "/etc/docker/certs.d";
pub const INTERNAL_PULL_SECRET: &str = "/etc/mco/internal-registry-pull-secret.json";
pub const NODE_PULL_SECRET: &str = "/var/lib/kubelet/config.json";
pub const OSTREE_AUTH: &str = "/run/ostree/auth.json";
/// What this writer created, so it removes only that.
pub const SYNC_STATE: &str = "/etc/machine-config-daemon/controllerconfig-sync.json";

/// The one ControllerConfig the MCD reads (`ctrlcommon.ControllerConfigName`).
pub const CONTROLLER_CONFIG_NAME: &str = "machine-config-controller";

/// A ControllerConfig the node cannot use; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidControllerConfig {
    /// The field, e.g. `spec.imageRegistryBundleData[1].file`.
    pub field: String,
    /// What is wrong with it (never the content of a secret).
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> InvalidControllerConfig {
    InvalidControllerConfig {
        field: field.into(),
        message: message.into(),
    }
}

/// Everything a ControllerConfig says the node needs, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterCerts {
    pub resource_version: String,
    /// PEM bundle for `/etc/kubernetes/kubelet-ca.crt` (`None`: the field is empty).
    pub kubelet_ca: Option<Vec<u8>>,
    pub cloud_ca: Option<Vec<u8>>,
    /// Directory name under `/etc/docker/certs.d` (`host` or `host:port`) → PEM bundle.
    pub registry_cas: BTreeMap<String, Vec<u8>>,
    /// The internal registry's pull secret as the cluster sent it (a Docker `config.json`).
    pub internal_pull_secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for ClusterCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the pull secret's bytes.
        f.debug_struct("ClusterCerts")
            .field("resource_version", &self.resource_version)
            .field("registries", &self.registry_cas.keys().collect::<Vec<_>>())
            .field("internal_pull_secret", &self.internal_pull_secret.is_some())
            .finish_non_exhaustive()
    }
}

impl ClusterCerts {
    /// Read and validate a ControllerConfig object (as JSON from the API server).
    pub fn from_controller_config(cc: &Value) -> Result<Self, InvalidControllerConfig> {
        let resource_version = cc["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let spec = &cc["spec"];
        let kubelet_ca = optional_bytes(spec, "kubeAPIServerServingCAData")?
            .map(|b| certificates(&b, "spec.kubeAPIServerServingCAData").map(|()| b))
            .transpose()?;
        let cloud_ca = optional_bytes(spec, "cloudProviderCAData")?
            .map(|b| certificates(&b, "spec.cloudProviderCAData").map(|()| b))
            .transpose()?;
        let mut registry_cas = BTreeMap::new();
        // The MCD writes the cluster's list, then the user's: a host in both gets the user's bundle.
        for list in ["imageRegistryBundleData", "imageRegistryBundleUserData"] {
            let items = match &spec[list] {
                Value::Null => continue,
                Value::Array(items) => items,
                _ => return Err(invalid(format!("spec.{list}"), "must be a list")),
            };
            for (i, item) in items.iter().enumerate() {
                let at = format!("spec.{list}[{i}]");
                let file = item["file"]
                    .as_str()
                    .ok_or_else(|| invalid(format!("{at}.file"), "must be a string"))?;
                let dir = registry_dir(file).map_err(|m| invalid(format!("{at}.file"), m))?;
                let data = optional_bytes(item, "data")
                    .map_err(|e| invalid(format!("{at}.data"), e.message))?
                    .ok_or_else(|| invalid(format!("{at}.data"), "must not be empty"))?;
                certificates(&data, &format!("{at}.data"))?;
                registry_cas.insert(dir, data);
            }
        }
        let internal_pull_secret = match optional_bytes(spec, "internalRegistryPullSecret")? {
            None => None,
            Some(bytes) => {
                parse_pull_secret(&bytes)
                    .map_err(|m| invalid("spec.internalRegistryPullSecret", m))?;
                Some(bytes)
            }
        };
        Ok(ClusterCerts {
            resource_version,
            kubelet_ca,
            cloud_ca,
            registry_cas,
            internal_pull_secret,
        })
    }
}

/// A `format: byte` field: base64 in JSON. `None` when absent, null or empty.
fn optional_bytes(obj: &Value, key: &str) -> Result<Option<Vec<u8>>, InvalidControllerConfig> {
    let field = format!("spec.{key}");
    match &obj[key] {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => {
            // The decoder's error names the offending byte; for a secret even that is too much.
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| invalid(&field, "is not valid base64"))?;
            Ok((!bytes.is_empty()).then_some(bytes))
        }
        _ => Err(invalid(&field, "must be a base64 string")),
    }
}

/// The bytes are one or more PEM `CERTIFICATE` blocks, each a parsable X.509 certificate (the
/// trust store of a TLS client would reject anything else, silently or not).
fn certificates(bytes: &[u8], field: &str) -> Result<(), InvalidControllerConfig> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| invalid(field, "is not a PEM certificate bundle (not text)"))?;
    let begins = text.matches("-----BEGIN ").count();
    let certs = text.matches("-----BEGIN CERTIFICATE-----").count();
    if certs == 0 {
        return Err(invalid(
            field,
            "is not a PEM certificate bundle (no -----BEGIN CERTIFICATE----- block)",
        ));
    }
    if begins != certs {
        return Err(invalid(
            field,
            "holds PEM blocks that are not certificates (only CERTIFICATE blocks belong in a CA bundle)",
        ));
    }
    let parsed = openssl::x509::X509::stack_from_pem(bytes).map_err(|e| {
        invalid(
            field,
            format!("holds a certificate that does not parse: {e}"),
        )
    })?;
    if parsed.len() != certs {
        return Err(invalid(
            field,
            format!(
                "holds {certs} certificate blocks but only {} parse",
                parsed.len()
            ),
        ));
    }
    Ok(())
}

/// The directory under `/etc/docker/certs.d` for a bundle's `file`: the MCD's mapping (`..` → `:`,
/// because ConfigMap keys cannot hold `:`), and it must stay one directory named like a registry.
pub fn registry_dir(file: &str) -> Result<String, String> {
    let dir = file.replace("..", ":");
    let ok_chars = dir
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if dir.is_empty()
        || !ok_chars
        || !dir.starts_with(|c: char| c.is_ascii_alphanumeric())
        || dir.len() > 255
    {
        return Err(format!(
            "{file:?} is not a registry name (host or host..port, letters, digits, '.', '-', '_'); it would not be a single directory under {REGISTRY_CERTS_DIR}"
        ));
    }
    Ok(dir)
}

/// A Docker `config.json` (`{"auths": {"registry": {"auth": base64("user:password")}, …}}`):
/// its entries by registry. Errors never quote the secret.
pub fn parse_pull_secret(bytes: &[u8]) -> Result<BTreeMap<String, Value>, String> {
    let doc: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("is not a pull secret: not JSON ({})", e.classify_msg()))?;
    let auths = doc
        .get("auths")
        .and_then(Value::as_object)
        .ok_or("is not a pull secret: no \"auths\" object (a Docker config.json is expected)")?;
    let mut out = BTreeMap::new();
    for (registry, entry) in auths {
        if registry.is_empty() {
            return Err("is not a pull secret: an auths entry has an empty registry name".into());
        }
        let Some(obj) = entry.as_object() else {
            return Err(format!(
                "is not a pull secret: auths[{registry:?}] is not an object"
            ));
        };
        if let Some(auth) = obj.get("auth") {
            let decoded = auth
                .as_str()
                .and_then(|a| base64::engine::general_purpose::STANDARD.decode(a).ok());
            if !decoded.is_some_and(|d| d.contains(&b':')) {
                return Err(format!(
                    "is not a pull secret: auths[{registry:?}].auth is not base64 of user:password"
                ));
            }
        }
        out.insert(registry.clone(), entry.clone());
    }
    Ok(out)
}

trait ClassifyMsg {
    fn classify_msg(&self) -> String;
}

impl ClassifyMsg for serde_json::Error {
    /// Where the JSON breaks, without the text around it.
    fn classify_msg(&self) -> String {
        format!("line {} column {}", self.line(), self.column())
    }
}

/// What [`sync`] changed on the node (paths, for the log and the Event).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub written: Vec<String>,
    pub removed: Vec<String>,
}

impl SyncReport {
    pub fn is_empty(&self) -> bool {
        self.written.is_empty() && self.removed.is_empty()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SyncState {
    /// Directories of `/etc/docker/certs.d` this writer created.
    #[serde(default)]
    registry_cert_dirs: Vec<String>,
    /// Whether `/run/ostree/auth.json` is this writer's.
    #[serde(default)]
    ostree_auth: bool,
}

fn read_state(root: &Root) -> SyncState {
    match root.read_optional(SYNC_STATE) {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %root.display(SYNC_STATE), error = %e, "unreadable; starting over");
            SyncState::default()
        }),
        Ok(None) => SyncState::default(),
        Err(e) => {
            tracing::warn!(path = %root.display(SYNC_STATE), error = %format!("{e:#}"), "unreadable; starting over");
            SyncState::default()
        }
    }
}

/// What the MCD's `writeToDisk` writes: the data with a final newline.
fn with_newline(mut b: Vec<u8>) -> Vec<u8> {
    if !b.ends_with(b"\n") {
        b.push(b'\n');
    }
    b
}

/// Write `bytes` to `path` unless it already holds them; an existing file keeps its mode (as the
/// MCD's `writeToDisk`), a new one gets `mode`. Returns whether it wrote.
fn write_if_changed(root: &Root, path: &str, bytes: Vec<u8>, mode: u32) -> anyhow::Result<bool> {
    let resolved = root
        .resolve(path)
        .with_context(|| format!("resolving {}", root.display(path)))?;
    let mode = match &resolved.entry {
        Entry::File(meta) => {
            if root.read_rel(&resolved.rel).ok().as_deref() == Some(&bytes[..]) {
                return Ok(false);
            }
            meta.mode
        }
        _ => mode,
    };
    write_state_file(root, path, bytes, mode)?;
    Ok(true)
}

/// Remove `path` if it exists (a file or a symlink). Returns whether it did.
fn remove_if_present(root: &Root, path: &str) -> anyhow::Result<bool> {
    let resolved = root
        .resolve(path)
        .with_context(|| format!("resolving {}", root.display(path)))?;
    if !resolved.entry.exists() {
        return Ok(false);
    }
    remove_state_file(root, path)?;
    Ok(true)
}

/// Write what `certs` says to the node root, changing only what differs, and remove the registry
/// directories this writer created that are no longer listed. Nothing here drains or reboots.
pub fn sync(root: &Root, certs: &ClusterCerts) -> anyhow::Result<SyncReport> {
    let mut report = SyncReport::default();
    let mut state = read_state(root);
    let mut note = |wrote: bool, path: &str| {
        if wrote {
            report.written.push(path.to_string());
        }
    };
    if let Some(ca) = &certs.kubelet_ca {
        note(
            write_if_changed(root, KUBELET_CA, with_newline(ca.clone()), 0o644)?,
            KUBELET_CA,
        );
    }
    if let Some(ca) = &certs.cloud_ca {
        note(
            write_if_changed(root, CLOUD_CA, with_newline(ca.clone()), 0o644)?,
            CLOUD_CA,
        );
    }
    for (dir, ca) in &certs.registry_cas {
        let path = format!("{REGISTRY_CERTS_DIR}/{dir}/ca.crt");
        let existed = root
            .resolve(&format!("{REGISTRY_CERTS_DIR}/{dir}"))
            .with_context(|| format!("resolving {}", root.display(&path)))?
            .entry
            .exists();
        let wrote = write_if_changed(root, &path, with_newline(ca.clone()), 0o644)?;
        // A directory someone else made stays theirs, unless we write its ca.crt.
        if (wrote || !existed) && !state.registry_cert_dirs.contains(dir) {
            state.registry_cert_dirs.push(dir.clone());
        }
        note(wrote, &path);
    }
    match &certs.internal_pull_secret {
        Some(secret) => note(
            write_if_changed(
                root,
                INTERNAL_PULL_SECRET,
                with_newline(secret.clone()),
                0o600,
            )?,
            INTERNAL_PULL_SECRET,
        ),
        None => {
            if remove_if_present(root, INTERNAL_PULL_SECRET)? {
                report.removed.push(INTERNAL_PULL_SECRET.into());
            }
        }
    }
    // Stale registry directories: only ours.
    let mut kept = Vec::new();
    for dir in std::mem::take(&mut state.registry_cert_dirs) {
        if certs.registry_cas.contains_key(&dir) {
            kept.push(dir);
            continue;
        }
        let ca = format!("{REGISTRY_CERTS_DIR}/{dir}/ca.crt");
        if remove_if_present(root, &ca)? {
            report.removed.push(ca);
        }
        let dir_path = format!("{REGISTRY_CERTS_DIR}/{dir}");
        if remove_empty_dir(root, &dir_path)? {
            report.removed.push(dir_path);
        }
    }
    kept.sort();
    state.registry_cert_dirs = kept;
    let (auth_written, auth_removed) = refresh_ostree_auth_with(root, &mut state)?;
    if auth_written {
        report.written.push(OSTREE_AUTH.into());
    }
    if auth_removed {
        report.removed.push(OSTREE_AUTH.into());
    }
    save_state(root, &state)?;
    Ok(report)
}

fn save_state(root: &Root, state: &SyncState) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(state)?;
    bytes.push(b'\n');
    write_if_changed(root, SYNC_STATE, bytes, 0o644)?;
    Ok(())
}

/// Remove a directory if it is empty (a directory holding files someone else put there stays).
fn remove_empty_dir(root: &Root, path: &str) -> anyhow::Result<bool> {
    let resolved = root
        .resolve(path)
        .with_context(|| format!("resolving {}", root.display(path)))?;
    if !matches!(resolved.entry, Entry::Dir(_)) {
        return Ok(false);
    }
    if !root.list_dir(path)?.is_empty() {
        tracing::info!(dir = %root.display(path), "no longer listed by the ControllerConfig, but holds other files; left in place");
        return Ok(false);
    }
    let (dir, name) = root
        .open_parent_rel(&resolved.rel)
        .with_context(|| format!("opening the parent of {}", root.display(path)))?;
    dir.remove_dir(name)
        .with_context(|| format!("removing {}", root.display(path)))?;
    Ok(true)
}

/// Keep `/run/ostree/auth.json` the merge of the node's pull secret and the internal registry's
/// (written by [`sync`]); `/run` is empty after a boot, and the node's secret can change with a
/// MachineConfig, so the daemon calls this on every sync. Returns whether it wrote the file.
pub fn refresh_ostree_auth(root: &Root) -> anyhow::Result<bool> {
    let mut state = read_state(root);
    let was = state.ostree_auth;
    let (written, _) = refresh_ostree_auth_with(root, &mut state)?;
    if state.ostree_auth != was {
        save_state(root, &state)?;
    }
    Ok(written)
}

fn refresh_ostree_auth_with(root: &Root, state: &mut SyncState) -> anyhow::Result<(bool, bool)> {
    let internal = match root.read_optional(INTERNAL_PULL_SECRET)? {
        Some(bytes) => match parse_pull_secret(&bytes) {
            Ok(auths) => Some(auths),
            Err(why) => {
                tracing::warn!(path = %root.display(INTERNAL_PULL_SECRET), "{why}; not used for OS image pulls");
                None
            }
        },
        None => None,
    };
    let Some(internal) = internal else {
        if state.ostree_auth {
            state.ostree_auth = false;
            return Ok((false, remove_if_present(root, OSTREE_AUTH)?));
        }
        return Ok((false, false));
    };
    let mut merged = match root.read_optional(NODE_PULL_SECRET)? {
        Some(bytes) => parse_pull_secret(&bytes).unwrap_or_else(|why| {
            tracing::warn!(path = %root.display(NODE_PULL_SECRET), "{why}; only the internal registry's credentials are used for OS image pulls");
            BTreeMap::new()
        }),
        None => BTreeMap::new(),
    };
    // The internal registry's entries win for its registries.
    merged.extend(internal);
    let mut bytes = serde_json::to_vec(&serde_json::json!({ "auths": merged }))?;
    bytes.push(b'\n');
    state.ostree_auth = true;
    Ok((write_if_changed(root, OSTREE_AUTH, bytes, 0o600)?, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// One CA for the whole test binary (the same bundle, synced twice, is no change).
    fn ca() -> String {
        static CA: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| testbed::tls::TestCa::new("test-ca").unwrap().cert_pem());
        CA.clone()
    }

    fn b64(s: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn auth(user: &str) -> Value {
        json!({"auth": b64(format!("{user}:pw").as_bytes())})
    }

    fn certs(rv: &str, registries: &[&str], internal: Option<Value>) -> ClusterCerts {
        let ca = ca();
        let list: Vec<Value> = registries
            .iter()
            .map(|r| json!({"file": r, "data": b64(ca.as_bytes())}))
            .collect();
        let mut spec = json!({"kubeAPIServerServingCAData": b64(ca.as_bytes()),
            "imageRegistryBundleData": list, "internalRegistryPullSecret": null});
        if let Some(i) = internal {
            spec["internalRegistryPullSecret"] = json!(b64(i.to_string().as_bytes()));
        }
        ClusterCerts::from_controller_config(
            &json!({"metadata": {"resourceVersion": rv}, "spec": spec}),
        )
        .unwrap()
    }

    fn read(root: &Root, path: &str) -> Option<String> {
        root.read_optional(path)
            .unwrap()
            .map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn sync_writes_on_change_only_and_removes_only_its_own_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        // An admin's own registry CA, not listed by the cluster.
        std::fs::create_dir_all(dir.path().join("etc/docker/certs.d/mirror.local")).unwrap();
        std::fs::write(
            dir.path().join("etc/docker/certs.d/mirror.local/ca.crt"),
            "admin",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("var/lib/kubelet")).unwrap();
        std::fs::write(
            dir.path().join("var/lib/kubelet/config.json"),
            json!({"auths": {"quay.io": auth("node"), "r.svc:5000": auth("old")}}).to_string(),
        )
        .unwrap();

        let internal = json!({"auths": {"r.svc:5000": auth("builder")}});
        let first = certs("1", &["r.svc..5000", "other.io"], Some(internal.clone()));
        let report = sync(&root, &first).unwrap();
        assert_eq!(
            report.written,
            vec![
                KUBELET_CA,
                "/etc/docker/certs.d/other.io/ca.crt",
                "/etc/docker/certs.d/r.svc:5000/ca.crt",
                INTERNAL_PULL_SECRET,
                OSTREE_AUTH
            ]
        );
        let ca = ca();
        assert_eq!(read(&root, KUBELET_CA).unwrap().len(), ca.len());
        assert!(
            read(&root, "/etc/docker/certs.d/r.svc:5000/ca.crt")
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        // The internal registry's entry wins over the node's; the node's other entries stay.
        let merged: Value = serde_json::from_str(&read(&root, OSTREE_AUTH).unwrap()).unwrap();
        assert_eq!(
            merged,
            json!({"auths": {"quay.io": auth("node"), "r.svc:5000": auth("builder")}})
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| {
            std::fs::metadata(dir.path().join(p.trim_start_matches('/')))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(OSTREE_AUTH), 0o600);
        assert_eq!(mode(INTERNAL_PULL_SECRET), 0o600);
        assert_eq!(mode(KUBELET_CA), 0o644);

        // Same content again (another resourceVersion): nothing written.
        let again = sync(
            &root,
            &certs("2", &["r.svc..5000", "other.io"], Some(internal)),
        )
        .unwrap();
        assert!(again.is_empty(), "{again:?}");

        // other.io leaves the list: its directory goes, the admin's stays; no secret any more.
        let report = sync(&root, &certs("3", &["r.svc..5000"], None)).unwrap();
        assert_eq!(
            report.removed,
            vec![
                INTERNAL_PULL_SECRET,
                "/etc/docker/certs.d/other.io/ca.crt",
                "/etc/docker/certs.d/other.io",
                OSTREE_AUTH
            ]
        );
        assert!(!dir.path().join("etc/docker/certs.d/other.io").exists());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("etc/docker/certs.d/mirror.local/ca.crt"))
                .unwrap(),
            "admin"
        );
        assert!(!dir.path().join("run/ostree/auth.json").exists());
    }

    #[test]
    fn the_ostree_auth_comes_back_after_a_boot() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        sync(
            &root,
            &certs("1", &[], Some(json!({"auths": {"r.svc:5000": auth("b")}}))),
        )
        .unwrap();
        std::fs::remove_dir_all(dir.path().join("run")).unwrap();
        assert!(refresh_ostree_auth(&root).unwrap());
        assert!(!refresh_ostree_auth(&root).unwrap(), "unchanged");
        let merged: Value = serde_json::from_str(&read(&root, OSTREE_AUTH).unwrap()).unwrap();
        assert_eq!(merged, json!({"auths": {"r.svc:5000": auth("b")}}));
        // A node that never got an internal-registry secret keeps its own auth files as they are.
        let other = tempfile::tempdir().unwrap();
        let root = Root::open(other.path()).unwrap();
        assert!(!refresh_ostree_auth(&root).unwrap());
        assert!(!other.path().join("run").exists());
    }

    #[test]
    fn registry_names_map_and_stay_one_directory() {
        assert_eq!(
            registry_dir("image-registry.openshift-image-registry.svc..5000").unwrap(),
            "image-registry.openshift-image-registry.svc:5000"
        );
        assert_eq!(registry_dir("quay.io").unwrap(), "quay.io");
        for bad in [
            "",
            ".",
            "..",
            "../../etc",
            "a/b",
            "..hidden",
            "x y",
            "host\0",
            "-leading",
        ] {
            assert!(registry_dir(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pull_secrets_are_docker_config_json() {
        let ok = br#"{"auths":{"r:5000":{"auth":"dTpw"},"q.io":{"username":"u","password":"p"}}}"#;
        assert_eq!(parse_pull_secret(ok).unwrap().len(), 2);
        for (bad, want) in [
            (&b"[1,2]"[..], "no \"auths\" object"),
            (
                b"{\"auths\":{\"r\":\"x\"}}",
                "auths[\"r\"] is not an object",
            ),
            (
                b"{\"auths\":{\"r\":{\"auth\":\"bm9jb2xvbg==\"}}}",
                "auths[\"r\"].auth is not base64 of user:password",
            ),
            (
                b"{\"auths\":{\"r\":{\"auth\":\"!!\"}}}",
                "is not base64 of user:password",
            ),
            (b"hunter2-not-json", "not JSON (line 1 column 1)"),
        ] {
            let e = parse_pull_secret(bad).unwrap_err();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains("hunter2") && !e.contains("bm9jb2xvbg"), "{e}");
        }
    }

    #[test]
    fn invalid_fields_are_named() {
        let cc = |spec: Value| json!({"metadata": {"resourceVersion": "7"}, "spec": spec});
        let cases = [
            (
                json!({"kubeAPIServerServingCAData": "%%%"}),
                "spec.kubeAPIServerServingCAData: is not valid base64",
            ),
            (
                json!({"kubeAPIServerServingCAData": b64(b"hello")}),
                "spec.kubeAPIServerServingCAData: is not a PEM certificate bundle",
            ),
            (
                json!({"imageRegistryBundleData": [{"file": "../../etc", "data": b64(ca().as_bytes())}]}),
                "spec.imageRegistryBundleData[0].file: \"../../etc\" is not a registry name",
            ),
            (
                json!({"imageRegistryBundleUserData": [{"file": "r..5000"}]}),
                "spec.imageRegistryBundleUserData[0].data: must not be empty",
            ),
            (
                json!({"internalRegistryPullSecret": b64(b"{\"x\":1}")}),
                "spec.internalRegistryPullSecret: is not a pull secret",
            ),
        ];
        for (spec, want) in cases {
            let e = ClusterCerts::from_controller_config(&cc(spec)).unwrap_err();
            assert!(e.to_string().starts_with(want), "{e} / {want}");
        }
    }
}
