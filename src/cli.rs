//! Command line interface. Exit codes are part of the interface:
//! 0 success, 1 a failure while doing the work, 2 invalid input, 3 unreconcilable config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::paths::CURRENT_CONFIG;
use crate::config::{ImageRef, MachineConfig, MachineConfiguration};
use crate::host::{self, ApplyError, ApplyOptions, ApplyReport, OdcError, Root, Source};
use crate::os::{self, OsBackend};
use crate::plan::{self, PlanOptions};

/// The on-node half of image mode: applies MachineConfigs and OS images to ostree-booted nodes.
#[derive(Debug, Parser)]
#[command(name = "machine-config-daemon", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what an update from one MachineConfig to another would do, or why it cannot be done.
    Plan(PlanArgs),
    /// Show the booted, staged and rollback OS deployments (image, digest, version, checksum, kargs).
    Status(crate::os::StatusArgs),
    /// Run the daemon: watch this node, apply its desired config and OS image, report through annotations.
    Start(StartArgs),
    /// First boot (install-time layering, no API server): apply the encapsulated MachineConfig, reboot once.
    #[command(name = "firstboot-complete-machineconfig")]
    FirstbootCompleteMachineconfig(FirstbootArgs),
    /// Write the host part of an update (files, units, SSH keys, password) onto a node root.
    Apply(ApplyArgs),
    /// Check that a node root holds what a MachineConfig says; list every mismatch.
    Validate(ValidateArgs),
    /// Internal: the daemon's ostree helper process (one request on stdin, events on stdout).
    #[command(name = "ostree-helper", hide = true)]
    OstreeHelper,
}

/// Output format of a command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The MachineConfig to update to (YAML or JSON).
    #[arg(long, value_name = "DES.yaml")]
    pub desired: PathBuf,
    /// The MachineConfig the node is on; omitted means an empty config (first boot).
    #[arg(long, value_name = "CUR.yaml")]
    pub current: Option<PathBuf>,
    /// The cluster's MachineConfiguration (node disruption policies); omitted means the defaults.
    #[arg(long, value_name = "MACHINECONFIGURATION.yaml")]
    pub policy: Option<PathBuf>,
    /// The OS image the node has booted; when it equals the desired image there is no OS change.
    #[arg(long, value_name = "IMAGE")]
    pub booted_image: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The node root to write to.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// The MachineConfig to update to (YAML or JSON).
    #[arg(long, value_name = "DES.yaml")]
    pub desired: PathBuf,
    /// The MachineConfig the node is on; omitted means the root's on-disk config
    /// (/etc/machine-config-daemon/currentconfig), or an empty config when there is none.
    #[arg(long, value_name = "CUR.yaml")]
    pub current: Option<PathBuf>,
    /// The cluster's MachineConfiguration (node disruption policies); omitted means the defaults.
    #[arg(long, value_name = "MACHINECONFIGURATION.yaml")]
    pub policy: Option<PathBuf>,
    /// The ostree sysroot whose OS image and kernel arguments to change (prefetch, then stage), after the
    /// host part succeeded; omitted means the root, when it is an ostree sysroot.
    #[arg(long, value_name = "DIR")]
    pub sysroot: Option<PathBuf>,
    /// Show what would be written, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// The node root to check.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// The MachineConfig to check against; omitted means the root's on-disk config.
    #[arg(long, value_name = "MC.yaml")]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// The node this daemon runs on (its Node object's name); default: the lowercased host name.
    #[arg(long, env = "NODE_NAME", value_name = "NODE")]
    pub node_name: Option<String>,
    /// API credentials; omitted: the pod's service account, else the kubelet's /var/lib/kubelet/kubeconfig.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The node's root filesystem.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// The ostree sysroot.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub sysroot: PathBuf,
    /// Drain ourselves (Eviction API) or through the MCO drain controller.
    #[arg(long, value_enum, default_value_t)]
    pub drain_mode: crate::daemon::update::DrainMode,
    /// Give up a drain after this long, naming the pods that block it (e.g. 90s, 30m, 1h).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub drain_timeout: std::time::Duration,
    /// Where /metrics and /healthz are served.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8797")]
    pub metrics_listen: std::net::SocketAddr,
    /// Which OS backend to use.
    #[arg(long, value_enum, default_value_t)]
    pub backend: crate::os::BackendKind,
    /// OS image layers fetched at once (ostree backend; 1 fetches them one after another).
    #[arg(long, value_name = "N", default_value_t = crate::os::DEFAULT_PULL_CONCURRENCY as u16,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub pull_concurrency: u16,
    /// TEST ONLY, never on a node: treat the sysroot's default deployment as booted and read the boot id
    /// from FILE (a test harness simulates reboots by rewriting it and restarting the daemon).
    #[arg(long, value_name = "FILE", help_heading = "Test-only options")]
    pub test_only_simulated_boot: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct FirstbootArgs {
    /// The MachineConfig to apply (default: <root>/etc/ignition-machine-config-encapsulated.json).
    #[arg(long, value_name = "FILE")]
    pub machineconfig_file: Option<PathBuf>,
    /// The node's root filesystem.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// The ostree sysroot.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub sysroot: PathBuf,
    /// Which OS backend to use.
    #[arg(long, value_enum, default_value_t)]
    pub backend: crate::os::BackendKind,
    /// TEST ONLY, never on a node: treat the sysroot's default deployment as booted; boot id from FILE.
    #[arg(long, value_name = "FILE", help_heading = "Test-only options")]
    pub test_only_simulated_boot: Option<PathBuf>,
}

/// `90s`, `30m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 90s, 30m, 1h)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?} has an unknown unit (use s, m or h)")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

/// Exit codes shared by `plan`, `apply` and `validate`.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const INVALID_INPUT: u8 = 2;
    pub const UNRECONCILABLE: u8 = 3;
}

/// An error that ends a command with a specific exit code and one line on stderr.
#[derive(Debug)]
pub enum CliError {
    /// Exit 2: the input cannot be used. The message names the file and the field.
    Invalid(String),
    /// Exit 1: the work failed.
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        CliError::Failed(e)
    }
}

/// Parse the process arguments and run the selected command.
pub fn run_from_env() -> ExitCode {
    run_from_iter(std::env::args_os())
}

/// Parse `args` (the first is the program name) and run the command.
pub fn run_from_iter<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    match &cli.command {
        Command::Start(_) | Command::FirstbootCompleteMachineconfig(_) | Command::OstreeHelper => {
            crate::logging::init_service()
        }
        _ => crate::logging::init_cli(),
    }
    if let Command::OstreeHelper = cli.command {
        return crate::os::helper::run_helper();
    }
    let result = match cli.command {
        Command::Start(args) => run_start(args),
        Command::FirstbootCompleteMachineconfig(args) => run_firstboot(args),
        Command::Plan(args) => run_plan(&args),
        Command::Status(args) => crate::os::run_status(&args).map_err(CliError::Failed),
        Command::Apply(args) => run_apply(&args),
        Command::Validate(args) => run_validate(&args),
        Command::OstreeHelper => unreachable!("served above"),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(CliError::Invalid(msg)) => {
            eprintln!("{msg}");
            ExitCode::from(exit::INVALID_INPUT)
        }
        Err(CliError::Failed(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

fn read_input(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path)
        .map_err(|e| CliError::Invalid(format!("{}: cannot read: {e}", path.display())))
}

/// Load and validate a MachineConfig file; errors read `FILE: field: message`.
pub fn load_machine_config(path: &Path) -> Result<MachineConfig, CliError> {
    let bytes = read_input(path)?;
    MachineConfig::from_slice(&bytes)
        .map_err(|e| CliError::Invalid(format!("{}: {e}", path.display())))
}

/// Load and validate a MachineConfiguration file.
pub fn load_policy(path: Option<&Path>) -> Result<MachineConfiguration, CliError> {
    let Some(path) = path else {
        return Ok(MachineConfiguration::default());
    };
    let bytes = read_input(path)?;
    MachineConfiguration::from_slice(&bytes)
        .map_err(|e| CliError::Invalid(format!("{}: {e}", path.display())))
}

/// Validate `--booted-image`.
pub fn parse_booted_image(image: Option<&str>) -> Result<Option<ImageRef>, CliError> {
    image
        .map(|s| ImageRef::parse(s).map_err(|e| CliError::Invalid(format!("--booted-image: {e}"))))
        .transpose()
}

/// Print a plan in the chosen format and map it to an exit code.
pub fn print_plan(plan: &plan::Plan, output: OutputFormat) -> u8 {
    match output {
        OutputFormat::Json => {
            for w in &plan.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "{}",
                serde_json::to_string_pretty(plan).expect("a plan serializes")
            );
        }
        OutputFormat::Text => print!("{}", plan.to_text()),
    }
    if plan.reconcilable {
        exit::OK
    } else {
        exit::UNRECONCILABLE
    }
}

fn run_plan(args: &PlanArgs) -> Result<u8, CliError> {
    let desired = load_machine_config(&args.desired)?;
    let current = match &args.current {
        Some(p) => load_machine_config(p)?,
        None => MachineConfig::empty(),
    };
    let policy = load_policy(args.policy.as_deref())?;
    let booted = parse_booted_image(args.booted_image.as_deref())?;
    let plan = plan::plan_with(
        &current,
        &desired,
        booted.as_ref().map(ImageRef::as_str),
        &policy,
        &PlanOptions::default(),
    );
    Ok(print_plan(&plan, args.output))
}

/// Open `--root`: it must be an existing directory.
fn open_root(path: &Path) -> Result<Root, CliError> {
    if !path.is_dir() {
        return Err(CliError::Invalid(format!(
            "--root: {}: not a directory",
            path.display()
        )));
    }
    Root::open(path).map_err(CliError::Failed)
}

/// The root's on-disk config, if any.
fn load_odc(root: &Root) -> Result<Option<MachineConfig>, CliError> {
    host::odc::read_current_config(root).map_err(|e| match e {
        OdcError::Invalid { .. } => CliError::Invalid(e.to_string()),
        OdcError::Io(e) => CliError::Failed(e),
    })
}

fn run_apply(args: &ApplyArgs) -> Result<u8, CliError> {
    if let Some(warning) = host::failpoints::configure_from_env().map_err(CliError::Invalid)? {
        eprintln!("warning: {warning}");
    }
    let desired = load_machine_config(&args.desired)?;
    let policy = load_policy(args.policy.as_deref())?;
    let root = open_root(&args.root)?;
    let (current, current_file) = match &args.current {
        Some(p) => (load_machine_config(p)?, p.display().to_string()),
        None => match load_odc(&root)? {
            Some(mc) => (mc, root.display(CURRENT_CONFIG)),
            None => (MachineConfig::empty(), root.display(CURRENT_CONFIG)),
        },
    };
    let sysroot = select_sysroot(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(e.into()))?;
    let backend = sysroot
        .as_ref()
        .map(|dir| os::OstreeBackend::new(os::OstreeBackendOptions::sandbox(dir, &args.root)));
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
        return Ok(print_plan(&plan, args.output));
    }
    let os_change = os::OsChange::from_plan(&plan, &desired).filter(|_| backend.is_some());
    // With OS work pending, the on-disk config is recorded only once the OS is staged too.
    let opts = ApplyOptions {
        dry_run: args.dry_run,
        write_odc: os_change.is_none(),
    };
    let report = match host::apply(&root, &current, &desired, &plan, opts) {
        Ok(report) => report,
        Err(ApplyError::Invalid(i)) => {
            let file = match i.config {
                Source::Desired => args.desired.display().to_string(),
                Source::Current => current_file,
            };
            return Err(CliError::Invalid(format!("{file}: {i}")));
        }
        Err(ApplyError::Unreconcilable { .. }) => return Ok(print_plan(&plan, args.output)),
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
    print_apply(&plan, &report, args.dry_run, args.output);
    print_os_outcome(
        &plan,
        sysroot.as_deref(),
        os_change.as_ref(),
        os_report.as_ref(),
        args.dry_run,
        args.output,
    );
    Ok(exit::OK)
}

/// `--sysroot`, or the root when it is an ostree sysroot (it has `ostree/repo`).
fn select_sysroot(args: &ApplyArgs) -> Result<Option<PathBuf>, CliError> {
    match &args.sysroot {
        Some(dir) if dir.join("ostree/repo").is_dir() => Ok(Some(dir.clone())),
        Some(dir) => Err(CliError::Invalid(format!(
            "--sysroot: {} is not an ostree sysroot (no ostree/repo in it)",
            dir.display()
        ))),
        None if args.root.join("ostree/repo").is_dir() => Ok(Some(args.root.clone())),
        None => Ok(None),
    }
}

fn print_os_outcome(
    plan: &plan::Plan,
    sysroot: Option<&Path>,
    change: Option<&os::OsChange>,
    report: Option<&os::ApplyOsReport>,
    dry_run: bool,
    output: OutputFormat,
) {
    if output != OutputFormat::Text || !plan.touches_os() {
        return;
    }
    match (sysroot, change, report) {
        (None, _, _) => {
            println!("OS: not changed: the root is not an ostree sysroot (give --sysroot DIR)")
        }
        (Some(dir), Some(_), None) if dry_run => {
            println!("OS: would be staged in {} (dry run)", dir.display())
        }
        (Some(_), _, Some(r)) => match &r.outcome {
            os::StageOutcome::Staged(d) => println!(
                "OS: staged deployment {} ({}); it boots next",
                d.id(),
                d.image
                    .as_deref()
                    .unwrap_or("same image, new kernel arguments")
            ),
            os::StageOutcome::Unchanged(role, d) => {
                println!(
                    "OS: already in place: the {role} deployment {} matches",
                    d.id()
                )
            }
        },
        _ => {}
    }
}

/// The post-config actions the caller still owes after the host part was written.
fn actions_owed(plan: &plan::Plan) -> String {
    if plan.actions.iter().all(|a| *a == plan::Action::None) {
        return "none".into();
    }
    plan.actions
        .iter()
        .filter(|a| **a != plan::Action::None)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_apply(plan: &plan::Plan, report: &ApplyReport, dry_run: bool, output: OutputFormat) {
    match output {
        OutputFormat::Json => {
            let doc = serde_json::json!({
                "plan": plan,
                "dryRun": dry_run,
                "written": report.written,
                "operations": report.operations,
                "warnings": report.warnings,
                "actionsOwed": plan.actions,
                "osChangesNotApplied": plan.touches_os(),
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).expect("a report serializes")
            );
        }
        OutputFormat::Text => {
            print!("{}", plan.to_text());
            let n = report.operations.len();
            if n == 0 {
                println!("Host: nothing to write, the node already holds this config");
            } else if dry_run {
                println!("Host: {n} operations to do (dry run, nothing written):");
            } else {
                println!("Host: {n} operations done:");
            }
            for op in &report.operations {
                println!("  {op}");
            }
            for w in &report.warnings {
                println!("  warning: {w}");
            }
            if plan.touches_os() {
                println!(
                    "Note: the OS part of the plan (image, kernel arguments, kernel type, extensions) is not applied by `apply`."
                );
            }
            println!("Post-config action owed: {}", actions_owed(plan));
        }
    }
}

fn run_validate(args: &ValidateArgs) -> Result<u8, CliError> {
    let root = open_root(&args.root)?;
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
    match args.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "config": config.name,
                "matches": mismatches.is_empty(),
                "mismatches": mismatches,
            }))
            .expect("a report serializes")
        ),
        OutputFormat::Text => {
            if mismatches.is_empty() {
                println!("The node matches MachineConfig {}", config.name);
            } else {
                for m in &mismatches {
                    println!("{m}");
                }
            }
        }
    }
    Ok(if mismatches.is_empty() {
        exit::OK
    } else {
        exit::FAILURE
    })
}

fn run_start(args: StartArgs) -> Result<u8, CliError> {
    if let Some(warning) = host::failpoints::configure_from_env().map_err(CliError::Invalid)? {
        eprintln!("warning: {warning}");
    }
    let node_name = match args.node_name.filter(|n| !n.is_empty()) {
        Some(n) => n,
        None => nix::unistd::gethostname()
            .map_err(|e| {
                CliError::Failed(anyhow::anyhow!(
                    "cannot read the host name for --node-name: {e}"
                ))
            })?
            .to_string_lossy()
            .to_lowercase(),
    };
    let opts = crate::daemon::service::StartOptions {
        node_name,
        kubeconfig: args.kubeconfig,
        root: args.root,
        sysroot: args.sysroot,
        drain_mode: args.drain_mode,
        drain_timeout: args.drain_timeout,
        metrics_listen: args.metrics_listen,
        backend: args.backend,
        pull_concurrency: args.pull_concurrency.into(),
        test_only_simulated_boot: args.test_only_simulated_boot,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(e.into()))?;
    runtime
        .block_on(crate::daemon::service::run(opts))
        .map_err(CliError::Failed)?;
    Ok(exit::OK)
}

fn run_firstboot(args: FirstbootArgs) -> Result<u8, CliError> {
    if let Some(warning) = host::failpoints::configure_from_env().map_err(CliError::Invalid)? {
        eprintln!("warning: {warning}");
    }
    use crate::daemon::firstboot::{FirstbootOptions, FirstbootOutcome, run};
    let opts = FirstbootOptions {
        machineconfig_file: args.machineconfig_file,
        root: args.root,
        sysroot: args.sysroot,
        backend: args.backend,
        test_only_simulated_boot: args.test_only_simulated_boot,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(e.into()))?;
    match runtime.block_on(run(opts)).map_err(CliError::Failed)? {
        FirstbootOutcome::NothingToDo(why) => {
            println!("first boot: nothing to do: {why}");
            Ok(exit::OK)
        }
        FirstbootOutcome::Rebooting => {
            println!("first boot: config applied, rebooting");
            Ok(exit::OK)
        }
        FirstbootOutcome::Invalid(msg) => Err(CliError::Invalid(msg)),
        FirstbootOutcome::Unreconcilable(msg) => {
            eprintln!("{msg}");
            Ok(exit::UNRECONCILABLE)
        }
    }
}
