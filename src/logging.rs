//! Tracing setup.
//!
//! - The service under systemd (stderr is the journal stream systemd gave it): native journald
//!   records, the message plain and every field a journal field (`journalctl -o verbose` shows them).
//! - The service elsewhere (a terminal, a file, a pipe, `oc logs` of the DaemonSet): one line per
//!   event with a timestamp; ANSI colour only when stderr is a terminal (and `NO_COLOR` is unset).
//! - One-shot commands (`plan`, `apply`, …): `warning: message (field=value)` on stderr, no colour,
//!   no timestamp, like any other command line tool.
//!
//! `MCD_LOG` (an `EnvFilter` directive, e.g. `debug` or `machine_config_daemon=trace`) sets verbosity.

use std::fmt::Write as _;
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

const ENV: &str = "MCD_LOG";

/// kube-client logs every failed request at ERROR without saying which request or why it matters
/// ("failed with error client error (Connect)", also for 409 conflicts the daemon handles); the daemon
/// reports API problems itself, with the URL and the cause.
const QUIET_KUBE_CLIENT: &str = "kube_client::client::builder=off";

/// One-shot commands: warnings and errors only by default, on stderr.
pub fn init_cli() {
    let filter = filter("warn");
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(std::io::stderr)
                .event_format(CliFormat),
        )
        .try_init();
}

/// The service: info by default; journald with structured fields when running under systemd.
pub fn init_service() {
    let filter = filter("info");
    let registry = tracing_subscriber::registry().with(filter);
    let journald = stderr_is_the_journal()
        .then(|| tracing_journald::layer().ok())
        .flatten();
    // A second init (tests calling the CLI in-process) keeps the first subscriber.
    let _ = match journald {
        Some(layer) => registry
            .with(layer.with_syslog_identifier("machine-config-daemon".into()))
            .try_init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .compact()
                    .with_target(false)
                    .with_ansi(colour_on_stderr())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}

fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_env(ENV)
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},{QUIET_KUBE_CLIENT}")))
}

/// Colour only for a person at a terminal who did not ask for none (<https://no-color.org>).
fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// systemd sets `JOURNAL_STREAM=DEV:INODE` for a service whose stderr is the journal; a child that
/// redirected stderr (a shell pipeline in the unit) inherits the variable with another stream, so the
/// device and inode must match (systemd.exec(5), "JOURNAL_STREAM").
fn stderr_is_the_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    journal_stream_matches(&value.to_string_lossy(), stat.st_dev, stat.st_ino)
}

/// `JOURNAL_STREAM`'s `DEV:INODE` names the stream with device `dev` and inode `ino`.
pub fn journal_stream_matches(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.trim().split_once(':') else {
        return false;
    };
    d.parse::<u64>() == Ok(dev) && i.parse::<u64>() == Ok(ino)
}

/// `warning: message (key=value, …)`.
#[derive(Debug)]
struct CliFormat;

impl<S, N> FormatEvent<S, N> for CliFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        writeln!(
            writer,
            "{}",
            cli_line(*event.metadata().level(), &fields.message, &fields.rest)
        )
    }
}

/// One event as a command line tool prints it.
pub fn cli_line(level: Level, message: &str, fields: &[(String, String)]) -> String {
    let word = match level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    };
    let mut line = format!("{word}: {message}");
    if !fields.is_empty() {
        let list: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(line, " ({})", list.join(", "));
    }
    line
}

/// An event's message and its other fields, each as Display shows it (`%x` fields are already
/// Display; a `?x` would show as Debug, which is why the daemon never logs one).
#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.rest
                .push((field.name().to_string(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `%x` arrives here wrapped so that its Debug is the value's Display.
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.rest.push((field.name().to_string(), text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_be_our_stderr() {
        assert!(journal_stream_matches("8:12345", 8, 12345));
        assert!(journal_stream_matches("8:12345\n", 8, 12345));
        assert!(!journal_stream_matches("8:12346", 8, 12345));
        assert!(!journal_stream_matches("9:12345", 8, 12345));
        assert!(!journal_stream_matches("garbage", 8, 12345));
        assert!(!journal_stream_matches("", 8, 12345));
    }

    #[test]
    fn cli_lines() {
        assert_eq!(
            cli_line(Level::WARN, "something odd", &[]),
            "warning: something odd"
        );
        assert_eq!(
            cli_line(
                Level::ERROR,
                "it failed",
                &[
                    ("config".into(), "rendered-1".into()),
                    ("n".into(), "3".into())
                ]
            ),
            "error: it failed (config=rendered-1, n=3)"
        );
    }
}
