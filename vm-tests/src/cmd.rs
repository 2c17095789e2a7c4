//! Running the host tools the builder and harness drive (mmdebstrap, ostree, mkfs.ext4, debugfs, …).
//!
//! Every failure names the command and carries the tail of what it printed, so a broken build reads
//! as "ostree commit … failed: error: …" rather than a bare exit status.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

/// How many trailing lines of a failed command's output go into the error.
const TAIL_LINES: usize = 20;

/// A command line rendered for messages and logs (not for a shell).
pub fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    lines[start..].join("\n")
}

/// Extension methods on [`Command`] that check the exit status.
pub trait CommandExt {
    /// Run with captured output; fail with the stderr tail when the exit status is not zero.
    fn run_checked(&mut self) -> Result<Output>;
    /// Run and return stdout as text (trailing whitespace trimmed).
    fn run_stdout(&mut self) -> Result<String>;
    /// Run with stdout and stderr appended to `log`; fail with the log's tail.
    fn run_logged(&mut self, log: &Path) -> Result<()>;
}

impl CommandExt for Command {
    fn run_checked(&mut self) -> Result<Output> {
        let what = describe(self);
        tracing::debug!(command = %what, "running");
        let output = self
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("Starting `{what}`"))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let stdout = String::from_utf8_lossy(&output.stdout);
            let shown = if stderr.trim().is_empty() {
                stdout
            } else {
                stderr
            };
            bail!("`{what}` failed ({}):\n{}", output.status, tail(&shown));
        }
        Ok(output)
    }

    fn run_stdout(&mut self) -> Result<String> {
        let output = self.run_checked()?;
        let text = String::from_utf8(output.stdout)
            .with_context(|| format!("Output of `{}` is not UTF-8", describe(self)))?;
        Ok(text.trim_end().to_string())
    }

    fn run_logged(&mut self, log: &Path) -> Result<()> {
        let what = describe(self);
        tracing::debug!(command = %what, log = %log.display(), "running");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("Opening log {}", log.display()))?;
        let status = self
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .status()
            .with_context(|| format!("Starting `{what}`"))?;
        if !status.success() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            bail!(
                "`{what}` failed ({status}); last lines of {}:\n{}",
                log.display(),
                tail(&text)
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_names_the_command_and_its_stderr() {
        let err = Command::new("sh")
            .args(["-c", "echo first >&2; echo 'the real reason' >&2; exit 3"])
            .run_checked()
            .unwrap_err()
            .to_string();
        assert!(err.contains("`sh -c"), "{err}");
        assert!(err.contains("the real reason"), "{err}");
        assert!(err.contains("exit status: 3"), "{err}");
    }

    #[test]
    fn stdout_is_returned_trimmed() {
        let out = Command::new("sh")
            .args(["-c", "printf 'abc\\n\\n'"])
            .run_stdout()
            .unwrap();
        assert_eq!(out, "abc");
    }

    #[test]
    fn missing_program_is_a_clear_error() {
        let err = Command::new("/nonexistent/tool").run_checked().unwrap_err();
        assert!(format!("{err:#}").contains("Starting `/nonexistent/tool`"));
    }

    #[test]
    fn logged_failure_shows_the_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        let err = Command::new("sh")
            .args(["-c", "echo progress; echo broken >&2; exit 1"])
            .run_logged(&log)
            .unwrap_err()
            .to_string();
        assert!(err.contains("broken"), "{err}");
        let logged = std::fs::read_to_string(&log).unwrap();
        assert!(logged.contains("progress") && logged.contains("broken"));
    }
}
