//! Command line interface. Exit codes are part of the interface: each command's are listed by
//! [`exit::statuses`] (and so in its man page): 0 success, 1 the work failed, 2 invalid input or command
//! line, 3 unreconcilable config, 4 `validate` found mismatches.

mod host;
mod service;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::config::{ImageRef, MachineConfig, MachineConfiguration};
use crate::plan::{self, PlanOptions};

pub use service::validate_node_name;

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

impl Command {
    /// The subcommand's name on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Plan(_) => "plan",
            Command::Status(_) => "status",
            Command::Start(_) => "start",
            Command::FirstbootCompleteMachineconfig(_) => "firstboot-complete-machineconfig",
            Command::Apply(_) => "apply",
            Command::Validate(_) => "validate",
            Command::OstreeHelper => crate::os::helper::SUBCOMMAND,
        }
    }
}

/// Output format of a command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A summary for a person.
    #[default]
    Text,
    /// The whole document, for scripts.
    Json,
    /// The same document as YAML.
    Yaml,
}

/// A CPU architecture, as the MachineConfig rules need it (64k-pages kernels exist only on aarch64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Arch {
    #[value(name = "x86_64", alias = "amd64")]
    X86_64,
    #[value(name = "aarch64", alias = "arm64")]
    Aarch64,
    #[value(name = "ppc64le", alias = "powerpc64")]
    Ppc64le,
    #[value(name = "s390x")]
    S390x,
}

impl Arch {
    /// The name the planner uses (`aarch64`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Ppc64le => "ppc64le",
            Arch::S390x => "s390x",
        }
    }
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
    /// The node's CPU architecture (kernelType 64k-pages needs aarch64); default: this machine's.
    #[arg(long, value_enum, value_name = "ARCH")]
    pub arch: Option<Arch>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The node root to write to. Required, except on an ostree-booted node (/run/ostree-booted
    /// exists), where it defaults to /.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
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
    /// The node root to check. Required, except on an ostree-booted node (/run/ostree-booted exists),
    /// where it defaults to /.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The MachineConfig to check against; omitted means the root's on-disk config.
    #[arg(long, value_name = "MC.yaml")]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// The node this daemon runs on (its Node object's name, a DNS-1123 subdomain); default: the
    /// lowercased host name.
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
    /// Health gate after a boot into a new deployment: each check (the executables in required.d/ and
    /// wanted.d/ of /usr/lib/machine-config-daemon/health.d, /etc/machine-config-daemon/health.d and
    /// /etc/greenboot/check) is killed after this long; a required one then fails the gate.
    #[arg(
        long,
        env = "MCD_HEALTH_CHECK_TIMEOUT",
        value_name = "DURATION",
        default_value = "5m",
        value_parser = parse_positive_duration
    )]
    pub health_check_timeout: std::time::Duration,
    /// Health gate: the node's Ready condition must be reported after the boot within this long, else
    /// the node rolls back to the previous deployment.
    #[arg(
        long,
        env = "MCD_HEALTH_READY_TIMEOUT",
        value_name = "DURATION",
        default_value = "10m",
        value_parser = parse_positive_duration
    )]
    pub health_ready_timeout: std::time::Duration,
    /// OS image layers fetched at once (ostree backend; 1 fetches them one after another).
    #[arg(long, value_name = "N", default_value_t = crate::os::DEFAULT_PULL_CONCURRENCY as u16,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub pull_concurrency: u16,
    /// TEST ONLY, never on a node: read the boot id from FILE (a test harness simulates reboots by
    /// rewriting it and restarting the daemon); with the ostree backend, also treat the sysroot's
    /// default deployment as booted (with rpm-ostree, the test's rpm-ostreed plays the boots).
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

/// A duration that is not zero (a zero deadline would fail every health gate).
pub fn parse_positive_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?} is zero; give a duration of at least 1s"));
    }
    Ok(d)
}

/// Exit codes, and which command returns which (the man pages list them from here).
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const INVALID_INPUT: u8 = 2;
    pub const UNRECONCILABLE: u8 = 3;
    /// `validate`: the node root differs from the config (each mismatch is listed).
    pub const MISMATCH: u8 = 4;

    /// Every exit status `command` (a subcommand's name) can end with, and what it means there.
    pub fn statuses(command: &str) -> Vec<(u8, &'static str)> {
        const INVALID: &str = "Invalid input or command line: one line on standard error names the file \
             (or option) and the field. Nothing was written.";
        match command {
            "plan" => vec![
                (
                    OK,
                    "The plan was printed; the update can be applied to a running node.",
                ),
                (INVALID_INPUT, INVALID),
                (
                    UNRECONCILABLE,
                    "The update cannot be applied to a running node (unreconcilable); the plan is \
                     still printed, with every offending field and why.",
                ),
            ],
            "apply" => vec![
                (
                    OK,
                    "The host part was written (or there was nothing to write, or --dry-run showed \
                     it), and the OS part staged when a sysroot was given.",
                ),
                (
                    FAILURE,
                    "Writing or staging failed, or the node root is in the way of the config (a \
                     symlinked or non-directory parent, a directory where a file goes: nothing was \
                     written then). The message names the root and the path.",
                ),
                (INVALID_INPUT, INVALID),
                (
                    UNRECONCILABLE,
                    "The update cannot be applied to a running node; the plan is printed and \
                     nothing was written.",
                ),
            ],
            "validate" => vec![
                (
                    OK,
                    "The node root holds what the config says (the summary names anything that \
                     could not be checked).",
                ),
                (FAILURE, "The node root could not be read."),
                (INVALID_INPUT, INVALID),
                (
                    MISMATCH,
                    "The node root differs from the config; every mismatch is listed, then a \
                     summary line.",
                ),
            ],
            "status" => vec![
                (OK, "The deployments were printed."),
                (FAILURE, "The OS backend could not be read."),
                (
                    INVALID_INPUT,
                    "Invalid command line: --sysroot (or /, by default) is not an ostree sysroot.",
                ),
            ],
            "start" => vec![
                (OK, "Stopped by SIGTERM or SIGINT at a safe point."),
                (
                    FAILURE,
                    "The daemon failed (no credentials yet, the Node not found); the service \
                     restarts it.",
                ),
                (
                    INVALID_INPUT,
                    "Invalid command line or environment (an invalid node name, a missing \
                     --kubeconfig file); the service is not restarted after this status.",
                ),
            ],
            "firstboot-complete-machineconfig" => vec![
                (
                    OK,
                    "Nothing to do, or the config was applied and the reboot requested.",
                ),
                (FAILURE, "Applying the config or staging the OS failed."),
                (INVALID_INPUT, INVALID),
                (
                    UNRECONCILABLE,
                    "The encapsulated config cannot be applied; nothing was written.",
                ),
            ],
            // Internal (hidden): the daemon reads its helper's answer from the events, not the status.
            "ostree-helper" => vec![
                (
                    OK,
                    "The request was served; its result (success or error) is the last event.",
                ),
                (
                    FAILURE,
                    "The helper could not run (no runtime, stdout closed).",
                ),
                (INVALID_INPUT, "Standard input did not hold a request line."),
            ],
            _ => Vec::new(),
        }
    }
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
        Command::Start(args) => service::run_start(args),
        Command::FirstbootCompleteMachineconfig(args) => service::run_firstboot(args),
        Command::Plan(args) => run_plan(&args),
        Command::Status(args) => run_status(&args),
        Command::Apply(args) => host::run_apply(&args),
        Command::Validate(args) => host::run_validate(&args),
        Command::OstreeHelper => unreachable!("served above"),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(CliError::Invalid(msg)) => {
            eprintln!("{}", crate::config::cut_long_values(&msg));
            ExitCode::from(exit::INVALID_INPUT)
        }
        Err(CliError::Failed(e)) => {
            eprintln!(
                "error: {}",
                crate::config::cut_long_values(&format!("{e:#}"))
            );
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

/// Print a document as JSON or YAML (text output is each command's own).
pub fn print_document<T: Serialize>(doc: &T, format: OutputFormat) {
    match format {
        OutputFormat::Yaml => print!(
            "{}",
            serde_yaml::to_string(doc).expect("a report serializes")
        ),
        _ => println!(
            "{}",
            serde_json::to_string_pretty(doc).expect("a report serializes")
        ),
    }
}

/// Print a plan in the chosen format and map it to an exit code.
pub fn print_plan(plan: &plan::Plan, output: OutputFormat) -> u8 {
    match output {
        OutputFormat::Text => print!("{}", plan.to_text()),
        _ => {
            for w in &plan.warnings {
                eprintln!("warning: {w}");
            }
            print_document(plan, output);
        }
    }
    plan_exit_code(plan)
}

fn plan_exit_code(plan: &plan::Plan) -> u8 {
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
    let options = PlanOptions {
        arch: args
            .arch
            .map(|a| a.as_str().to_string())
            .unwrap_or_else(|| PlanOptions::default().arch),
        ..PlanOptions::default()
    };
    let plan = plan::plan_with(
        &current,
        &desired,
        booted.as_ref().map(ImageRef::as_str),
        &policy,
        &options,
    );
    Ok(print_plan(&plan, args.output))
}

/// Where `apply` and `validate` mark a host that booted from ostree (relative to the host's `/`).
pub const OSTREE_BOOTED: &str = "run/ostree-booted";

/// `--root`, or `host` (the machine's `/`) when it booted from ostree: only a node's own `/` is a
/// node root by default; on any other machine writing into `/etc` by accident must be impossible.
pub fn root_or_default(given: Option<&Path>, host: &Path, verb: &str) -> Result<PathBuf, CliError> {
    if let Some(root) = given {
        return Ok(root.to_path_buf());
    }
    let marker = host.join(OSTREE_BOOTED);
    if marker.exists() {
        return Ok(host.to_path_buf());
    }
    Err(CliError::Invalid(format!(
        "--root is required: this machine did not boot from ostree ({} does not exist), so {} is \
         not a node root; give --root DIR (--root {} {verb} this machine's own files)",
        marker.display(),
        host.display(),
        host.display()
    )))
}

/// `flag`'s directory exists (missing and non-directory paths are invalid command lines alike).
pub fn existing_dir(flag: &str, path: &Path) -> Result<(), CliError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(CliError::Invalid(format!(
            "{flag}: {}: not a directory",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(CliError::Invalid(format!(
            "{flag}: {}: does not exist",
            path.display()
        ))),
        Err(e) => Err(CliError::Invalid(format!(
            "{flag}: {}: {e}",
            path.display()
        ))),
    }
}

/// `--sysroot DIR` is an existing ostree sysroot.
pub fn ostree_sysroot(path: &Path) -> Result<(), CliError> {
    existing_dir("--sysroot", path)?;
    if path.join("ostree/repo").is_dir() {
        return Ok(());
    }
    Err(CliError::Invalid(format!(
        "--sysroot: {} is not an ostree sysroot (no ostree/repo in it)",
        path.display()
    )))
}

fn run_status(args: &crate::os::StatusArgs) -> Result<u8, CliError> {
    use crate::os::BackendKind;
    if let Some(root) = &args.root {
        existing_dir("--root", root)?;
    }
    match &args.sysroot {
        Some(dir) => ostree_sysroot(dir)?,
        // rpm-ostree answers over D-Bus for the booted host; it needs no sysroot path.
        None if args.backend == BackendKind::RpmOstree => {}
        None if !Path::new("/ostree/repo").is_dir() => {
            return Err(CliError::Invalid(
                "/ is not an ostree sysroot (no /ostree/repo): this machine does not boot from \
                 ostree; give --sysroot DIR to read another sysroot"
                    .into(),
            ));
        }
        None => {}
    }
    crate::os::run_status(args).map_err(CliError::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_defaults_to_slash_only_on_an_ostree_booted_host() {
        let host = tempfile::tempdir().unwrap();
        let err = match root_or_default(None, host.path(), "writes to") {
            Err(CliError::Invalid(msg)) => msg,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            err,
            format!(
                "--root is required: this machine did not boot from ostree ({0}/run/ostree-booted does not exist), so {0} is not a node root; give --root DIR (--root {0} writes to this machine's own files)",
                host.path().display()
            )
        );
        std::fs::create_dir(host.path().join("run")).unwrap();
        std::fs::write(host.path().join(OSTREE_BOOTED), "").unwrap();
        assert_eq!(
            root_or_default(None, host.path(), "writes to").unwrap(),
            host.path()
        );
        // An explicit --root always wins.
        assert_eq!(
            root_or_default(Some(Path::new("/x")), host.path(), "writes to").unwrap(),
            Path::new("/x")
        );
    }

    #[test]
    fn every_command_documents_its_exit_statuses() {
        use clap::CommandFactory;
        for sub in Cli::command().get_subcommands() {
            let codes = exit::statuses(sub.get_name());
            assert!(
                codes.iter().any(|(c, _)| *c == exit::OK)
                    && codes.iter().any(|(c, _)| *c == exit::INVALID_INPUT),
                "{}: {codes:?}",
                sub.get_name()
            );
        }
    }
}
