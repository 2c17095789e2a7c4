//! Command line interface.
use std::process::ExitCode;

/// Parse the process arguments and run the selected command.
pub fn run_from_env() -> ExitCode {
    ExitCode::SUCCESS
}
