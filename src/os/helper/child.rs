//! The helper's side: read the request, run it with libostree in this process, report events, exit.
//! SIGTERM or EOF on stdin (the daemon stopped or went away) cancels a pull, which then removes what it
//! had written before the helper exits.

use std::io::{BufRead, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::{mpsc, watch};

use super::protocol::{Event, Request, WireError};
use crate::os::ostree_backend::{ExecContext, execute};

/// `machine-config-daemon ostree-helper`: serve one request. Exit status 2 when stdin held no valid
/// request, 1 when the helper could not run; otherwise 0, whatever the operation's result.
pub fn run() -> ExitCode {
    match serve() {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::BadRequest(e)) => {
            eprintln!("ostree helper: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Other(e)) => {
            eprintln!("ostree helper: {e:#}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    BadRequest(anyhow::Error),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

fn serve() -> Result<(), Failure> {
    // The events go to the daemon on what was stdout; anything else printing to stdout (a library, a
    // child process) lands in stderr instead of corrupting them.
    let events_fd: OwnedFd = rustix::io::dup(std::io::stdout().as_fd()).context("dup stdout")?;
    rustix::stdio::dup2_stdout(std::io::stderr().as_fd()).context("dup2 stderr to stdout")?;
    let mut events_out = std::io::BufWriter::new(std::fs::File::from(events_fd));

    let mut line = String::new();
    let mut stdin = std::io::stdin().lock();
    stdin.read_line(&mut line).context("Reading the request")?;
    let request: Request = serde_json::from_str(&line)
        .context("Parsing the request")
        .map_err(Failure::BadRequest)?;
    drop(stdin);

    let (cancel_tx, cancel) = watch::channel(false);
    let cancel_tx = Arc::new(cancel_tx);
    // The daemon keeps our stdin open: EOF means it stopped or died.
    let on_eof = cancel_tx.clone();
    std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut rest);
        tracing::debug!("stdin closed: the daemon is gone or stopping");
        let _ = on_eof.send(true);
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("Building the helper runtime")?;
    runtime.block_on(async move {
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("Handling SIGTERM")?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        let progress_tx = tx.clone();
        let ctx = ExecContext {
            progress: Some(Arc::new(move |p| {
                let _ = progress_tx.send(Event::Progress(p.clone()));
            })),
            heartbeat: Some(Arc::new(move || {
                let _ = tx.send(Event::Alive);
            })),
            cancel,
        };
        tracing::debug!(operation = ?request.operation, "ostree helper working");
        let work = execute(
            Arc::new(request.options),
            request.simulated.map(Arc::new),
            request.operation,
            ctx,
        );
        tokio::pin!(work);
        let mut send = |event: &Event| -> bool {
            serde_json::to_writer(&mut events_out, event)
                .map_err(std::io::Error::from)
                .and_then(|()| events_out.write_all(b"\n"))
                .and_then(|()| events_out.flush())
                .is_ok()
        };
        let result = loop {
            tokio::select! {
                biased;
                Some(event) = rx.recv() => {
                    if !send(&event) {
                        // The daemon stopped listening: stop too.
                        let _ = cancel_tx.send(true);
                    }
                }
                _ = sigterm.recv() => {
                    tracing::info!("SIGTERM: stopping the ostree work");
                    let _ = cancel_tx.send(true);
                }
                r = &mut work => break r,
            }
        };
        while let Ok(event) = rx.try_recv() {
            if matches!(event, Event::Progress(_)) {
                send(&event);
            }
        }
        send(&Event::Done(result.map_err(|e| WireError::from_error(&e))));
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}
