//! Command line interface. Exit codes are part of the interface:
//! 0 success, 1 a failure while doing the work, 2 invalid input, 3 unreconcilable config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{ImageRef, MachineConfig, MachineConfiguration};
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
    crate::logging::init_cli();
    let result = match cli.command {
        Command::Plan(args) => run_plan(&args),
        Command::Status(args) => crate::os::run_status(&args).map_err(CliError::Failed),
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
