//! Tracing setup: journald when systemd connected our stderr to the journal, compact stderr otherwise.
//!
//! `MCD_LOG` (an `EnvFilter` directive, e.g. `debug` or `machine_config_daemon=trace`) sets verbosity.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

const ENV: &str = "MCD_LOG";

/// One-shot commands: warnings and errors only by default, on stderr.
pub fn init_cli() {
    init(EnvFilter::try_from_env(ENV).unwrap_or_else(|_| EnvFilter::new("warn")));
}

/// The service: info by default; journald with structured fields when running under systemd.
pub fn init_service() {
    init(EnvFilter::try_from_env(ENV).unwrap_or_else(|_| EnvFilter::new("info")));
}

fn init(filter: EnvFilter) {
    // systemd sets JOURNAL_STREAM when stderr is the journal: log natively so fields are kept.
    let journald = std::env::var_os("JOURNAL_STREAM").and_then(|_| tracing_journald::layer().ok());
    let registry = tracing_subscriber::registry().with(filter);
    let result = match journald {
        Some(layer) => registry
            .with(layer.with_syslog_identifier("machine-config-daemon".into()))
            .try_init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .compact()
                    .with_target(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    // A second init (tests calling the CLI in-process) keeps the first subscriber.
    let _ = result;
}
