//! What the serial console log says about a boot: readiness, how the guest went down, and fatal
//! conditions worth failing fast on. Console output interleaves (kernel, systemd status, our marker)
//! and carries ANSI codes and CRs, so matching is by token, not by whole line.

/// The readiness marker printed by the guest's `vmtest-ready` script.
#[derive(Debug, Clone, PartialEq)]
pub struct Ready {
    pub boot: u32,
    /// Guest uptime in seconds when it became ready (boot-to-ready as the guest measured it).
    pub uptime_s: f64,
    pub net_up: bool,
}

/// Everything of interest in one boot's console log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsoleScan {
    pub ready: Option<Ready>,
    /// `VMTEST-FAILED …`: the readiness script could not do its job.
    pub failed: Option<String>,
    /// `reboot: Restarting system`: the kernel is rebooting.
    pub restarting: bool,
    /// `reboot: Power down`: the kernel is powering off.
    pub power_down: bool,
    /// The `Kernel panic - not syncing: …` line.
    pub panic: Option<String>,
    /// systemd fell into emergency mode (no readiness will come).
    pub emergency: bool,
}

/// Remove ANSI escape sequences and carriage returns.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ params final-byte; anything else: drop ESC and the next char.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for n in chars.by_ref() {
                        if ('@'..='~').contains(&n) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            _ => out.push(c),
        }
    }
    out
}

fn parse_ready(rest: &str) -> Option<Ready> {
    let mut boot = None;
    let mut uptime_s = None;
    let mut net_up = false;
    for token in rest.split_whitespace() {
        match token.split_once('=') {
            Some(("boot", v)) => boot = v.parse().ok(),
            Some(("uptime", v)) => uptime_s = v.parse().ok(),
            Some(("net", v)) => net_up = v == "up",
            _ => {}
        }
    }
    Some(Ready {
        boot: boot?,
        uptime_s: uptime_s?,
        net_up,
    })
}

/// Scan a console log (the whole text of one boot so far).
pub fn scan(raw: &str) -> ConsoleScan {
    let text = clean(raw);
    let mut found = ConsoleScan::default();
    for line in text.lines() {
        if let Some(pos) = line.find("VMTEST-READY ") {
            if found.ready.is_none() {
                found.ready = parse_ready(&line[pos + "VMTEST-READY ".len()..]);
            }
        }
        if let Some(pos) = line.find("VMTEST-FAILED") {
            found
                .failed
                .get_or_insert_with(|| line[pos + "VMTEST-FAILED".len()..].trim().to_string());
        }
        if line.contains("reboot: Restarting system") {
            found.restarting = true;
        }
        if line.contains("reboot: Power down") {
            found.power_down = true;
        }
        if let Some(pos) = line.find("Kernel panic - not syncing") {
            found
                .panic
                .get_or_insert_with(|| line[pos..].trim().to_string());
        }
        if line.contains("You are in emergency mode") || line.contains("Entering emergency mode") {
            found.emergency = true;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ready_amid_console_noise() {
        let log = "[  OK  ] Reached target \u{1b}[0;1;39mMulti-User System\u{1b}[0m.\r\n\
                   [   17.1] systemd[1]: Starting vmtest-ready\r\n\
                   junk VMTEST-READY boot=2 uptime=17.52 net=up\r\n";
        let s = scan(log);
        assert_eq!(
            s.ready,
            Some(Ready {
                boot: 2,
                uptime_s: 17.52,
                net_up: true
            })
        );
        assert!(!s.restarting && !s.power_down && s.failed.is_none());
    }

    #[test]
    fn tells_reboot_from_power_down() {
        let reboot = scan("[   30.0] reboot: Restarting system\n");
        assert!(reboot.restarting && !reboot.power_down);
        let off = scan("[   30.0] reboot: Power down\n");
        assert!(off.power_down && !off.restarting);
    }

    #[test]
    fn a_truncated_marker_is_not_ready() {
        assert_eq!(scan("VMTEST-READY boot=").ready, None);
        assert_eq!(scan("VMTEST-READY uptime=3.0").ready, None);
    }

    #[test]
    fn reports_failures_panics_and_emergency_mode() {
        let s = scan(
            "VMTEST-FAILED boot=1 reason=9p-mount-failed\n\
             [ 5.0] Kernel panic - not syncing: VFS: Unable to mount root fs\n\
             You are in emergency mode. After logging in…\n",
        );
        assert_eq!(s.failed.as_deref(), Some("boot=1 reason=9p-mount-failed"));
        assert_eq!(
            s.panic.as_deref(),
            Some("Kernel panic - not syncing: VFS: Unable to mount root fs")
        );
        assert!(s.emergency);
    }

    #[test]
    fn clean_strips_escapes_and_carriage_returns() {
        assert_eq!(clean("a\u{1b}[1;32mb\u{1b}[0m\r\nc"), "ab\nc");
    }
}
