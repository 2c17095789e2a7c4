//! `apply` and `validate`: the host part of an update on a node root, without a cluster.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{
    ApplyArgs, CliError, OutputFormat, ValidateArgs, existing_dir, exit, load_machine_config,
    load_policy, ostree_sysroot, print_document, print_plan, root_or_default,
};
use crate::config::MachineConfig;
use crate::config::paths::CURRENT_CONFIG;
use crate::host::{self, ApplyError, ApplyOptions, OdcError, OpSummary, Root, Source};
use crate::os::{self, OsBackend};
use crate::plan::{self, Action, PlanOptions};

/// `--root` as given, or `/` on an ostree-booted node; it must be an existing directory.
fn open_root(given: Option<&Path>, verb: &str) -> Result<(PathBuf, Root), CliError> {
    let path = root_or_default(given, Path::new("/"), verb)?;
    existing_dir("--root", &path)?;
    let root = Root::open(&path).map_err(CliError::Failed)?;
    Ok((path, root))
}

/// The root's on-disk config, if any.
fn load_odc(root: &Root) -> Result<Option<MachineConfig>, CliError> {
    host::odc::read_current_config(root).map_err(|e| match e {
        OdcError::Invalid { .. } => CliError::Invalid(e.to_string()),
        OdcError::Io(e) => CliError::Failed(e),
    })
}

/// What happened to the OS part of the plan.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct OsOutcome {
    /// `none` (the plan has no OS change), `not-applied` (no sysroot, or nothing was done),
    /// `would-stage` (dry run), `staged`, `unchanged` (a deployment already matches).
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sysroot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deployment: Option<String>,
    /// One sentence for the text output.
    #[serde(skip)]
    text: Option<String>,
}

impl OsOutcome {
    fn of(
        plan: &plan::Plan,
        sysroot: Option<&Path>,
        report: Option<&os::ApplyOsReport>,
        dry_run: bool,
    ) -> Self {
        let sysroot_text = sysroot.map(|p| p.display().to_string());
        let mut o = OsOutcome {
            state: "none",
            sysroot: sysroot_text.clone(),
            deployment: None,
            text: None,
        };
        if !plan.touches_os() {
            return o;
        }
        match (sysroot, report) {
            (None, _) => {
                o.state = "not-applied";
                o.text = Some(
                    "OS: not changed: the root is not an ostree sysroot (give --sysroot DIR)"
                        .into(),
                );
            }
            (Some(dir), None) if dry_run => {
                o.state = "would-stage";
                o.text = Some(format!(
                    "OS: would be staged in {} (dry run)",
                    dir.display()
                ));
            }
            (Some(_), None) => o.state = "not-applied",
            (Some(_), Some(r)) => match &r.outcome {
                os::StageOutcome::Staged(d) => {
                    o.state = "staged";
                    o.deployment = Some(d.id());
                    o.text = Some(format!(
                        "OS: staged deployment {} ({}); it boots next",
                        d.id(),
                        d.image
                            .as_deref()
                            .unwrap_or("same image, new kernel arguments")
                    ));
                }
                os::StageOutcome::Unchanged(role, d) => {
                    o.state = "unchanged";
                    o.deployment = Some(d.id());
                    o.text = Some(format!(
                        "OS: already in place: the {role} deployment {} matches",
                        d.id()
                    ));
                }
            },
        }
        o
    }
}

/// `apply -o json|yaml`: the same shape whether the update was applied, was a dry run, or could not
/// be applied at all (unreconcilable: nothing written, no operations, no actions owed).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ApplyDocument<'a> {
    plan: &'a plan::Plan,
    dry_run: bool,
    written: bool,
    operations: &'a [OpSummary],
    warnings: &'a [String],
    actions_owed: &'a [Action],
    os: OsOutcome,
    /// The plan changes the OS, and it was not staged here.
    os_changes_not_applied: bool,
}

pub(super) fn run_apply(args: &ApplyArgs) -> Result<u8, CliError> {
    if let Some(warning) = host::failpoints::configure_from_env().map_err(CliError::Invalid)? {
        eprintln!("warning: {warning}");
    }
    let desired = load_machine_config(&args.desired)?;
    let policy = load_policy(args.policy.as_deref())?;
    let (root_path, root) = open_root(args.root.as_deref(), "writes to")?;
    let (current, current_file) = match &args.current {
        Some(p) => (load_machine_config(p)?, p.display().to_string()),
        None => match load_odc(&root)? {
            Some(mc) => (mc, root.display(CURRENT_CONFIG)),
            None => (MachineConfig::empty(), root.display(CURRENT_CONFIG)),
        },
    };
    let sysroot = select_sysroot(args.sysroot.as_deref(), &root_path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(e.into()))?;
    let backend = sysroot
        .as_ref()
        .map(|dir| os::OstreeBackend::new(os::OstreeBackendOptions::sandbox(dir, &root_path)));
    // The OS the sysroot will boot next decides whether the image changes (no duplicate deployments).
    let booted_image = match &backend {
        Some(b) => runtime
            .block_on(b.status())
            .map_err(CliError::Failed)?
            .next_boot()
            .and_then(|d| d.image.clone()),
        None => None,
    };
    let plan = plan::plan_with(
        &current,
        &desired,
        booted_image.as_deref(),
        &policy,
        &PlanOptions::default(),
    );
    if !plan.reconcilable {
        return Ok(print_not_applied(&plan, args));
    }
    let os_change = os::OsChange::from_plan(&plan, &desired).filter(|_| backend.is_some());
    // With OS work pending, the on-disk config is recorded only once the OS is staged too.
    let opts = ApplyOptions {
        dry_run: args.dry_run,
        write_odc: os_change.is_none(),
    };
    let report = match host::apply(&root, &current, &desired, &plan, opts) {
        Ok(report) => report,
        Err(ApplyError::Invalid(i)) if i.node_root => {
            return Err(CliError::Failed(anyhow::anyhow!(
                "the node root {} is in the way: {} (needed for {} of {}); nothing was written",
                root_path.display(),
                i.message,
                i.field,
                args.desired.display()
            )));
        }
        Err(ApplyError::Invalid(i)) => {
            let file = match i.config {
                Source::Desired => args.desired.display().to_string(),
                Source::Current => current_file,
            };
            return Err(CliError::Invalid(format!("{file}: {i}")));
        }
        Err(ApplyError::Unreconcilable { .. }) => return Ok(print_not_applied(&plan, args)),
        Err(ApplyError::Failed(e)) => return Err(CliError::Failed(e)),
    };
    let os_report = match (&backend, &os_change) {
        (Some(b), Some(change)) if !args.dry_run => {
            let report = runtime
                .block_on(os::apply_os_change(b, change, None))
                .map_err(CliError::Failed)?;
            host::odc::write_current_config(&root, &desired).map_err(CliError::Failed)?;
            Some(report)
        }
        _ => None,
    };
    let os = OsOutcome::of(&plan, sysroot.as_deref(), os_report.as_ref(), args.dry_run);
    match args.output {
        OutputFormat::Text => print_apply_text(&plan, &report.operations, args.dry_run, &os),
        format => {
            // As `plan -o json`: the document on stdout, the plan's warnings on stderr.
            for w in &plan.warnings {
                eprintln!("warning: {w}");
            }
            print_document(
                &ApplyDocument {
                    plan: &plan,
                    dry_run: args.dry_run,
                    written: report.written,
                    operations: &report.operations,
                    warnings: &report.warnings,
                    actions_owed: &plan.actions,
                    os_changes_not_applied: plan.touches_os() && os.state != "staged",
                    os,
                },
                format,
            )
        }
    }
    Ok(exit::OK)
}

/// An unreconcilable update: the plan (with every offending field), and that nothing was written.
fn print_not_applied(plan: &plan::Plan, args: &ApplyArgs) -> u8 {
    match args.output {
        OutputFormat::Text => {
            print_plan(plan, OutputFormat::Text);
            println!(
                "Nothing was written: this update cannot be applied to a running node (see UNRECONCILABLE above)."
            );
        }
        format => {
            for w in &plan.warnings {
                eprintln!("warning: {w}");
            }
            print_document(
                &ApplyDocument {
                    plan,
                    dry_run: args.dry_run,
                    written: false,
                    operations: &[],
                    warnings: &[],
                    actions_owed: &[],
                    os: OsOutcome::of(plan, None, None, args.dry_run),
                    os_changes_not_applied: plan.touches_os(),
                },
                format,
            );
        }
    }
    exit::UNRECONCILABLE
}

/// `--sysroot`, or the root when it is an ostree sysroot (it has `ostree/repo`).
fn select_sysroot(given: Option<&Path>, root: &Path) -> Result<Option<PathBuf>, CliError> {
    match given {
        Some(dir) => {
            ostree_sysroot(dir)?;
            Ok(Some(dir.to_path_buf()))
        }
        None if root.join("ostree/repo").is_dir() => Ok(Some(root.to_path_buf())),
        None => Ok(None),
    }
}

/// The post-config actions the caller still owes after the host part was written.
fn actions_owed(plan: &plan::Plan) -> String {
    if plan.actions.iter().all(|a| *a == Action::None) {
        return "none".into();
    }
    plan.actions
        .iter()
        .filter(|a| **a != Action::None)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Host warnings are not repeated here: they were logged on stderr as `warning: …`.
fn print_apply_text(plan: &plan::Plan, operations: &[OpSummary], dry_run: bool, os: &OsOutcome) {
    print!("{}", plan.to_text());
    let n = operations.len();
    let ops = plural(n, "operation", "operations");
    if n == 0 {
        println!("Host: nothing to write, the node already holds this config");
    } else if plan.is_noop() && dry_run {
        // Same config, yet something differs on disk: say so instead of "no change" + "N done".
        println!(
            "Host: the node has drifted from {}; {ops} would restore it (dry run, nothing written):",
            plan.to_config
        );
    } else if plan.is_noop() {
        println!(
            "Host: the node had drifted from {}; {ops} restored it:",
            plan.to_config
        );
    } else if dry_run {
        println!("Host: {ops} to do (dry run, nothing written):");
    } else {
        println!("Host: {ops} done:");
    }
    for op in operations {
        println!("  {op}");
    }
    if let Some(text) = &os.text {
        println!("{text}");
    }
    println!("Post-config action owed: {}", actions_owed(plan));
}

/// `validate -o json|yaml`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ValidateDocument<'a> {
    config: &'a str,
    matches: bool,
    mismatches: &'a [host::Mismatch],
    checked: &'a host::validate::Coverage,
}

pub(super) fn run_validate(args: &ValidateArgs) -> Result<u8, CliError> {
    let (_, root) = open_root(args.root.as_deref(), "checks")?;
    let config = match &args.config {
        Some(p) => load_machine_config(p)?,
        None => load_odc(&root)?.ok_or_else(|| {
            CliError::Invalid(format!(
                "{}: does not exist; give the config to check with --config",
                root.display(CURRENT_CONFIG)
            ))
        })?,
    };
    let mismatches = host::validate(&root, &config)?;
    let coverage = host::validate::coverage(&root, &config)?;
    match args.output {
        OutputFormat::Text => {
            for m in &mismatches {
                println!("{m}");
            }
            println!("{}", validate_summary(&config.name, &mismatches, &coverage));
        }
        format => print_document(
            &ValidateDocument {
                config: &config.name,
                matches: mismatches.is_empty(),
                mismatches: &mismatches,
                checked: &coverage,
            },
            format,
        ),
    }
    Ok(if mismatches.is_empty() {
        exit::OK
    } else {
        exit::MISMATCH
    })
}

/// The last line of `validate`: the verdict, what was looked at, and what could not be.
pub fn validate_summary(
    config: &str,
    mismatches: &[host::Mismatch],
    c: &host::validate::Coverage,
) -> String {
    let mut looked_at = vec![
        plural(c.files, "file", "files"),
        plural(c.units, "unit", "units"),
        plural(c.dropins, "dropin", "dropins"),
    ];
    if c.ssh_keys {
        looked_at.push("core's SSH keys".into());
    }
    let looked_at = looked_at.join(", ");
    let verdict = if mismatches.is_empty() && c.not_checked.is_empty() {
        format!("The node matches MachineConfig {config} ({looked_at} checked)")
    } else if mismatches.is_empty() {
        format!("The node matches MachineConfig {config} in what could be checked ({looked_at})")
    } else {
        format!(
            "The node does not match MachineConfig {config}: {} ({looked_at} checked)",
            plural(mismatches.len(), "mismatch", "mismatches")
        )
    };
    if c.not_checked.is_empty() {
        verdict
    } else {
        format!("{verdict}; not checked: {}", c.not_checked.join("; "))
    }
}
