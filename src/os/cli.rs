//! `machine-config-daemon status` (like `bootc status`) and the OS half of `apply`.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

use super::{
    BackendKind, Deployment, OsBackend, OsChange, OsStatus, OstreeBackendOptions, PrefetchReport,
    ProgressFn, Role, StageOutcome, select_backend,
};

/// Output format of `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum OutputFormat {
    /// Human readable.
    #[default]
    Text,
    /// A Kubernetes-shaped document (apiVersion/kind/metadata/spec/status).
    Json,
    Yaml,
}

/// Show the booted, staged and rollback OS deployments: image, digest, version, checksum, kernel arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// An ostree sysroot directory instead of the host's (`/`).
    #[arg(long, value_name = "DIR")]
    pub sysroot: Option<PathBuf>,
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Which OS backend to ask.
    #[arg(long, value_enum, default_value_t = BackendKind::Auto)]
    pub backend: BackendKind,
    /// The node root whose last health gate to show (the daemon records it in
    /// /var/lib/machine-config-daemon/health-gate.json); default: /.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

/// The document `status -o json|yaml` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDocument {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: StatusMetadata,
    pub spec: StatusSpec,
    pub status: NodeOsStatus,
}

/// The deployments, and the last health gate after a boot into a new deployment.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeOsStatus {
    #[serde(flatten)]
    pub os: OsStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_health_gate: Option<crate::host::health::GateRecord>,
}

impl From<OsStatus> for NodeOsStatus {
    fn from(os: OsStatus) -> Self {
        NodeOsStatus {
            os,
            last_health_gate: None,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct StatusMetadata {
    pub name: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusSpec {
    pub backend: &'static str,
    pub sysroot: String,
}

pub const STATUS_API_VERSION: &str = "machine-config-daemon.io/v1alpha1";
pub const STATUS_KIND: &str = "NodeOSStatus";

/// `status` from a synchronous caller: prints the document, returns the exit code (0).
/// Builds its own runtime; from async code use [`status_document`] and [`render_status`].
pub fn run_status(args: &StatusArgs) -> Result<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let doc = rt.block_on(status_document(args))?;
    print!("{}", render_status(&doc, args.output)?);
    Ok(0)
}

/// Read the status through the selected backend.
pub async fn status_document(args: &StatusArgs) -> Result<StatusDocument> {
    let sysroot = args.sysroot.clone().unwrap_or_else(|| "/".into());
    let options = OstreeBackendOptions {
        sysroot: sysroot.clone(),
        ..Default::default()
    };
    let backend = select_backend(args.backend, options).await?;
    let status = backend
        .status()
        .await
        .context("Reading the OS deployments")?;
    let root = args.root.clone().unwrap_or_else(|| "/".into());
    let last_health_gate = match crate::host::Root::open(&root) {
        Ok(r) => crate::host::health::load(&r)?,
        Err(_) => None,
    };
    let name = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    Ok(StatusDocument {
        api_version: STATUS_API_VERSION,
        kind: STATUS_KIND,
        metadata: StatusMetadata { name },
        spec: StatusSpec {
            backend: backend.name(),
            sysroot: sysroot.display().to_string(),
        },
        status: NodeOsStatus {
            os: status,
            last_health_gate,
        },
    })
}

/// Render a status document in `format`.
pub fn render_status(doc: &StatusDocument, format: OutputFormat) -> Result<String> {
    Ok(match format {
        OutputFormat::Json => serde_json::to_string_pretty(doc)? + "\n",
        OutputFormat::Yaml => serde_yaml::to_string(doc)?,
        OutputFormat::Text => {
            let mut text = render_text(&doc.status.os);
            if let Some(gate) = &doc.status.last_health_gate {
                text.push('\n');
                text.push_str(&gate.to_text());
            }
            text
        }
    })
}

/// Like `rpm-ostree status` (rpm-ostree: src/app/rpmostree-builtin-status.cxx print_one_deployment): one
/// block per deployment in boot order, `*` before the booted one, the image reference as the title
/// line, then `Digest:` and `Version:` and our fields, keys right-aligned.
fn render_text(status: &OsStatus) -> String {
    let deployments: Vec<(Role, &Deployment)> = [
        (Role::Staged, status.staged.as_ref()),
        (Role::Pending, status.pending.as_ref()),
        (Role::Booted, status.booted.as_ref()),
        (Role::Rollback, status.rollback.as_ref()),
    ]
    .into_iter()
    .filter_map(|(r, d)| d.map(|d| (r, d)))
    .collect();
    if deployments.is_empty() {
        return "Deployments: none\n".to_string();
    }
    type Block<'a> = (Role, &'a Deployment, Vec<(&'static str, String)>);
    let blocks: Vec<Block<'_>> = deployments
        .into_iter()
        .map(|(role, d)| {
            let mut kv: Vec<(&str, String)> = Vec::new();
            if let Some(digest) = &d.image_digest {
                kv.push(("Digest", digest.clone()));
            }
            if let Some(v) = &d.version {
                kv.push(("Version", v.clone()));
            }
            kv.push(("Role", role.to_string()));
            kv.push(("Commit", d.id()));
            kv.push(("Kargs", d.kernel_arguments.join(" ")));
            if !d.requested_packages.is_empty() {
                kv.push(("LayeredPackages", d.requested_packages.join(" ")));
            }
            if !d.requested_base_removals.is_empty() {
                kv.push(("RemovedBasePackages", d.requested_base_removals.join(" ")));
            }
            (role, d, kv)
        })
        .collect();
    let width = blocks
        .iter()
        .flat_map(|(_, _, kv)| kv.iter().map(|(k, _)| k.len()))
        .max()
        .unwrap_or(0);
    let mut out = String::from("Deployments:\n");
    for (i, (role, d, kv)) in blocks.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let marker = if *role == Role::Booted { '*' } else { ' ' };
        let title = d
            .image_reference
            .clone()
            .or_else(|| d.image.clone())
            .unwrap_or_else(|| d.checksum.clone());
        let _ = writeln!(out, "{marker} {title}");
        for (k, v) in kv {
            let _ = writeln!(out, "  {k:>width$}: {v}");
        }
    }
    out
}

/// What [`apply_os_change`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOsReport {
    pub prefetch: Option<PrefetchReport>,
    pub outcome: StageOutcome,
}

/// The OS half of `apply`: prefetch the planned image (if any), then stage it with the kernel argument
/// change. The daemon calls the two steps separately, with the drain in between.
pub async fn apply_os_change<B: OsBackend>(
    backend: &B,
    change: &OsChange,
    progress: Option<ProgressFn>,
) -> Result<ApplyOsReport> {
    let prefetch = match &change.image {
        Some(image) => Some(backend.prefetch(image, progress).await?),
        None => None,
    };
    let outcome = backend.stage(change).await?;
    Ok(ApplyOsReport { prefetch, outcome })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(version: &str, serial: i32) -> Deployment {
        Deployment {
            stateroot: "default".into(),
            checksum: "abc123".into(),
            serial,
            image: Some("127.0.0.1:5000/os:v1".into()),
            image_reference: Some("ostree-unverified-registry:127.0.0.1:5000/os:v1".into()),
            image_digest: Some("sha256:feed".into()),
            version: Some(version.into()),
            kernel_arguments: vec!["rw".into(), "quiet".into()],
            requested_packages: vec![],
            requested_base_removals: vec![],
        }
    }

    fn doc(status: OsStatus) -> StatusDocument {
        StatusDocument {
            api_version: STATUS_API_VERSION,
            kind: STATUS_KIND,
            metadata: StatusMetadata {
                name: "node-1".into(),
            },
            spec: StatusSpec {
                backend: "ostree",
                sysroot: "/".into(),
            },
            status: status.into(),
        }
    }

    #[test]
    fn text_is_like_rpm_ostree_status() {
        let mut rt = deployment("1.1", 1);
        rt.requested_packages = vec!["kernel-rt-core".into()];
        rt.requested_base_removals = vec!["kernel".into()];
        let status = OsStatus {
            booted: Some(deployment("1.0", 0)),
            staged: Some(rt),
            pending: None,
            rollback: None,
        };
        let text = render_status(&doc(status), OutputFormat::Text).unwrap();
        let expected = concat!(
            "Deployments:\n",
            "  ostree-unverified-registry:127.0.0.1:5000/os:v1\n",
            "               Digest: sha256:feed\n",
            "              Version: 1.1\n",
            "                 Role: staged\n",
            "               Commit: abc123.1\n",
            "                Kargs: rw quiet\n",
            "      LayeredPackages: kernel-rt-core\n",
            "  RemovedBasePackages: kernel\n",
            "\n",
            "* ostree-unverified-registry:127.0.0.1:5000/os:v1\n",
            "               Digest: sha256:feed\n",
            "              Version: 1.0\n",
            "                 Role: booted\n",
            "               Commit: abc123.0\n",
            "                Kargs: rw quiet\n",
        );
        assert_eq!(text, expected);
        assert_eq!(
            render_status(&doc(OsStatus::default()), OutputFormat::Text).unwrap(),
            "Deployments: none\n"
        );
    }

    #[test]
    fn json_is_kubernetes_shaped_and_camel_case() {
        let status = OsStatus {
            booted: Some(deployment("1.0", 0)),
            ..Default::default()
        };
        let v: serde_json::Value =
            serde_json::from_str(&render_status(&doc(status), OutputFormat::Json).unwrap())
                .unwrap();
        assert_eq!(v["apiVersion"], STATUS_API_VERSION);
        assert_eq!(v["kind"], STATUS_KIND);
        assert_eq!(v["metadata"]["name"], "node-1");
        assert_eq!(v["spec"]["backend"], "ostree");
        assert_eq!(v["status"]["booted"]["imageDigest"], "sha256:feed");
        assert_eq!(v["status"]["booted"]["kernelArguments"][1], "quiet");
        assert!(v["status"]["staged"].is_null());
    }

    #[test]
    fn yaml_round_trips_to_the_same_document() {
        let status = OsStatus {
            booted: Some(deployment("1.0", 0)),
            ..Default::default()
        };
        let d = doc(status);
        let yaml: serde_json::Value =
            serde_yaml::from_str(&render_status(&d, OutputFormat::Yaml).unwrap()).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&render_status(&d, OutputFormat::Json).unwrap()).unwrap();
        assert_eq!(yaml, json);
    }
}
