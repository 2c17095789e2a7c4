//! `vm-tests`: build the guest images and run the VM scenarios. See `vm-tests/README.md`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::{Parser, Subcommand};

use vm_tests::image::{self, BaseRecipe, ImageSpec};
use vm_tests::overlay::Overlay;
use vm_tests::scenarios::{self, Suite};
use vm_tests::tools;
use vm_tests::vm::{Vm, VmConfig};
use vm_tests::workspace::Workspace;

#[derive(Debug, Parser)]
#[command(
    name = "vm-tests",
    about = "End-to-end tests in ostree-booted QEMU VMs"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build what is missing, then run the scenarios (all when none is named).
    Run {
        scenarios: Vec<String>,
        /// Rebuild the base and images even if cached.
        #[arg(long)]
        rebuild: bool,
    },
    /// List the scenarios.
    List,
    /// Build (or reuse) the base commit and print work/base.json.
    Base {
        #[arg(long)]
        rebuild: bool,
    },
    /// Boot an image (default: the smoke image), run shell commands in the guest, print their
    /// output and power off. For looking around: `vm-tests probe 'systemd-analyze blame'`.
    Probe {
        #[arg(long, default_value = "smoke")]
        name: String,
        /// Bash snippets run one after another in the guest.
        commands: Vec<String>,
    },
    /// Build (or reuse) a disk image with extra overlay trees (laid out as usr/…, etc/…).
    Image {
        /// Image name (used in paths).
        #[arg(long, default_value = "custom")]
        name: String,
        /// A directory to layer on top of the base (repeatable).
        #[arg(long)]
        overlay: Vec<PathBuf>,
        /// Units from the overlays to enable for multi-user.target (repeatable).
        #[arg(long)]
        enable: Vec<String>,
        #[arg(long)]
        rebuild: bool,
    },
}

fn preflight() -> Result<()> {
    tools::require(tools::REQUIRED)?;
    tools::require_root()
}

fn run(cli: Cli) -> Result<bool> {
    let ws = Workspace::from_env();
    match cli.command {
        Cmd::List => {
            for s in scenarios::all() {
                let when = if s.only_when_named {
                    " (only when named)"
                } else {
                    ""
                };
                println!("{:<24} {}{when}", s.name, s.about);
            }
            Ok(true)
        }
        Cmd::Base { rebuild } => {
            preflight()?;
            let recipe = BaseRecipe::from_workspace(&ws)?;
            let base = image::ensure_base(&ws, &recipe, rebuild)?;
            println!("{}", serde_json::to_string_pretty(&base)?);
            Ok(true)
        }
        Cmd::Image {
            name,
            overlay,
            enable,
            rebuild,
        } => {
            preflight()?;
            let recipe = BaseRecipe::from_workspace(&ws)?;
            let base = image::ensure_base(&ws, &recipe, false)?;
            let mut spec = ImageSpec::new(&name);
            let mut layer = Overlay::new();
            for dir in overlay {
                layer = layer.tree(dir);
            }
            for unit in enable {
                layer = layer.enable(&unit, "multi-user.target");
            }
            spec.overlay = layer;
            let image = image::ensure_image(&ws, &base, &spec, rebuild)?;
            println!("{}", serde_json::to_string_pretty(&image)?);
            Ok(true)
        }
        Cmd::Probe { name, commands } => {
            preflight()?;
            let recipe = BaseRecipe::from_workspace(&ws)?;
            let base = image::ensure_base(&ws, &recipe, false)?;
            let image = image::ensure_image(&ws, &base, &ImageSpec::new(&name), false)?;
            let dir = ws.new_run_dir("probe")?;
            let mut vm = Vm::create(&image, &dir, VmConfig::default())?;
            vm.boot()?;
            let mut all_ok = true;
            for command in &commands {
                let out = vm.exec(command)?;
                println!(
                    "$ {command}\n{}{}[status {}]",
                    out.stdout, out.stderr, out.status
                );
                all_ok &= out.status == 0;
            }
            vm.poweroff()?;
            eprintln!("probe logs: {}", dir.display());
            Ok(all_ok)
        }
        Cmd::Run {
            scenarios: names,
            rebuild,
        } => {
            let chosen = scenarios::select(&names)?;
            preflight()?;
            let started = Instant::now();
            // Logs of the last runs stay for inspection; older ones go.
            ws.prune_runs(30)?;
            let mut suite = Suite::new(ws, rebuild);
            let mut outcomes = Vec::new();
            for scenario in &chosen {
                outcomes.push(suite.run_scenario(scenario)?);
            }
            eprint!(
                "{}",
                scenarios::report(&suite, &outcomes, started.elapsed())
            );
            let failed: Vec<&str> = outcomes
                .iter()
                .filter(|o| o.error.is_some())
                .map(|o| o.name.as_str())
                .collect();
            if failed.is_empty() {
                eprintln!("vm-tests: {} scenario(s) passed", outcomes.len());
                Ok(true)
            } else {
                eprintln!("vm-tests: FAILED: {}", failed.join(", "));
                Ok(false)
            }
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VMTEST_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .compact()
        .init();
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("vm-tests: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
