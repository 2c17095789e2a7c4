//! The ostree helper: the daemon runs each ostree operation in a short-lived child process (its own
//! binary, `machine-config-daemon ostree-helper`), so the idle daemon never works with libostree, glib
//! and gio (their heap, GIO modules, threads; the binary still links them, so they stay mapped), and a
//! crash in them cannot take the daemon down.
//!
//! The request goes in as one JSON line on the helper's stdin, events come back as JSON lines on its
//! stdout ([`protocol`]). The helper's stdin stays open for its whole life: when the daemon goes away
//! the helper sees EOF and stops. A helper that exits without answering (a crash) or that sends
//! nothing for [`HelperOptions::idle_timeout`] (a hang; the ostree thread sends [`protocol::Event::Alive`]
//! every few seconds) is killed with its process group and tried once more; a second failure is the
//! error. Dropping a call (the daemon stopping) sends the helper SIGTERM and waits for it to clean up.

mod child;
pub(crate) mod protocol;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::{Deserialize, Serialize};

pub use child::run as run_helper;
use protocol::{Event, Outcome, Request};

use super::ProgressFn;

/// The hidden subcommand the helper runs as.
pub const SUBCOMMAND: &str = "ostree-helper";

/// How long a helper may stay silent before it counts as hung: longer than any single libostree call
/// takes (a deploy checkout of a large tree, a prune), short enough that a wedged helper is noticed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// How often the helper's ostree thread says it is alive.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// How long a helper told to stop (SIGTERM) has to clean up before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Run ostree work in a helper process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelperOptions {
    /// The `machine-config-daemon` binary (the daemon's own).
    pub exe: PathBuf,
    /// A helper silent this long is killed (and the operation tried once more).
    pub idle_timeout: Duration,
}

impl HelperOptions {
    /// This process's own binary as the helper.
    pub fn this_executable() -> Result<Self> {
        Ok(Self {
            exe: std::env::current_exe()?,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        })
    }
}

/// Why a helper gave no answer.
#[derive(Debug, thiserror::Error)]
enum HelperFailure {
    #[error("could not start the ostree helper {exe}: {error}")]
    Spawn { exe: String, error: std::io::Error },
    #[error("the ostree helper (pid {pid}) {how} without answering{}", tail_text(.stderr))]
    Crashed {
        pid: u32,
        how: String,
        stderr: Vec<String>,
    },
    #[error("the ostree helper (pid {pid}) sent nothing for {secs} s and was killed{}", tail_text(.stderr))]
    Hung {
        pid: u32,
        secs: u64,
        stderr: Vec<String>,
    },
    #[error("the ostree helper (pid {pid}) sent something unreadable ({line:?}) and was killed")]
    Garbled { pid: u32, line: String },
}

fn tail_text(lines: &[String]) -> String {
    match lines.last() {
        Some(last) => format!("; its last words: {last}"),
        None => String::new(),
    }
}

fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => {
            let name = rustix::process::Signal::from_named_raw(sig)
                .map(|s| format!(" ({s:?})"))
                .unwrap_or_default();
            format!("was killed by signal {sig}{name}")
        }
        _ => "ended".into(),
    }
}

/// Run `request` in a helper; one more helper if the first crashes or hangs.
pub(crate) async fn call(
    opts: &HelperOptions,
    request: &Request,
    progress: Option<&ProgressFn>,
) -> Result<Outcome> {
    let line = serde_json::to_string(request)?;
    let mut failure = None;
    for attempt in 1..=2 {
        match call_once(opts, &line, progress).await {
            Ok(done) => return done.map_err(protocol::WireError::into_error),
            Err(f) => {
                tracing::warn!(
                    attempt,
                    operation = ?request.operation,
                    error = %f,
                    "{}",
                    if attempt == 1 { "the ostree helper failed; trying once more" } else { "the ostree helper failed again" }
                );
                failure = Some(f);
            }
        }
    }
    let f = failure.expect("two attempts failed");
    Err(anyhow::Error::new(f)
        .context("The ostree operation failed twice in a row in its helper process"))
}

type Done = std::result::Result<Outcome, protocol::WireError>;

#[allow(clippy::large_enum_variant)]
enum Line {
    Event(Event),
    Garbled(String),
    Eof,
}

async fn call_once(
    opts: &HelperOptions,
    request_line: &str,
    progress: Option<&ProgressFn>,
) -> std::result::Result<Done, HelperFailure> {
    let mut cmd = std::process::Command::new(&opts.exe);
    cmd.arg(SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a hung helper is killed with its skopeo and `ostree commit` children.
        .process_group(0);
    let mut child = cmd.spawn().map_err(|error| HelperFailure::Spawn {
        exe: opts.exe.display().to_string(),
        error,
    })?;
    let pid = child.id();
    tracing::debug!(pid, "started the ostree helper");
    let mut stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let mut guard = HelperGuard {
        child: Some(child),
        pid,
        stdin: None,
    };
    // A helper that died at once cannot read this; its exit status says what happened.
    let _ = stdin
        .write_all(request_line.as_bytes())
        .and_then(|()| stdin.write_all(b"\n"))
        .and_then(|()| stdin.flush());
    guard.stdin = Some(stdin);

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let parsed = match serde_json::from_str::<Event>(&line) {
                Ok(e) => Line::Event(e),
                Err(_) => Line::Garbled(line),
            };
            if tx.send(parsed).is_err() {
                return;
            }
        }
        let _ = tx.send(Line::Eof);
    });
    // The helper logs to stderr (or straight to the journal under systemd): pass it on, keep the end.
    let tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
    let tail_in = tail.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("{line}");
            let mut t = tail_in.lock().unwrap();
            if t.len() == 20 {
                t.pop_front();
            }
            t.push_back(line);
        }
    });
    let stderr_tail = |tail: &Arc<Mutex<VecDeque<String>>>| -> Vec<String> {
        tail.lock().unwrap().iter().cloned().collect()
    };

    loop {
        let next = tokio::time::timeout(opts.idle_timeout, rx.recv()).await;
        match next {
            Err(_) => {
                guard.kill();
                return Err(HelperFailure::Hung {
                    pid,
                    secs: opts.idle_timeout.as_secs(),
                    stderr: stderr_tail(&tail),
                });
            }
            Ok(Some(Line::Event(Event::Alive))) => {}
            Ok(Some(Line::Event(Event::Progress(p)))) => {
                if let Some(cb) = progress {
                    cb(&p);
                }
            }
            Ok(Some(Line::Event(Event::Done(done)))) => {
                guard.reap(Duration::from_secs(5)).await;
                return Ok(done);
            }
            Ok(Some(Line::Garbled(line))) => {
                guard.kill();
                return Err(HelperFailure::Garbled { pid, line });
            }
            Ok(Some(Line::Eof) | None) => {
                let status = guard.reap(Duration::from_secs(5)).await;
                // Give the stderr thread a moment to collect the helper's last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Err(HelperFailure::Crashed {
                    pid,
                    how: status.map_or_else(|| "stopped answering".into(), describe_exit),
                    stderr: stderr_tail(&tail),
                });
            }
        }
    }
}

/// Owns the helper process until it has been reaped; dropped early (the call was abandoned), it stops
/// the helper: SIGTERM, up to [`STOP_GRACE`] to finish its cleanup, then SIGKILL for its whole group.
struct HelperGuard {
    child: Option<Child>,
    pid: u32,
    stdin: Option<std::process::ChildStdin>,
}

impl HelperGuard {
    fn signal_group(&self, signal: rustix::process::Signal) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process_group(pid, signal);
        }
    }

    /// SIGKILL the helper's group and reap it.
    fn kill(&mut self) {
        self.signal_group(rustix::process::Signal::KILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// Wait for the exit (it is ending), killing it after `grace`.
    async fn reap(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.stdin = None;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.signal_group(rustix::process::Signal::KILL);
        self.child.take()?.wait().ok()
    }
}

impl Drop for HelperGuard {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        tracing::info!(pid = self.pid, "stopping the ostree helper");
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        self.stdin = None;
        // Blocking on purpose: the daemon stops only after its helper has (a few seconds at most).
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                tracing::info!(pid = self.pid, status = %describe_exit(status), "the ostree helper stopped");
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        tracing::warn!(
            pid = self.pid,
            "the ostree helper did not stop within {} s; killing it",
            STOP_GRACE.as_secs()
        );
        self.signal_group(rustix::process::Signal::KILL);
        let _ = child.wait();
    }
}
