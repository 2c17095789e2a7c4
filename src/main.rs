//! Thin entry point: everything lives in the library so tests call what the binary calls.
fn main() -> std::process::ExitCode {
    machine_config_daemon::cli::run_from_env()
}
