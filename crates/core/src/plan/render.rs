//! The human summary of a plan (`plan -o text`).

use std::fmt::Write;

use super::{Changes, Plan};

impl Plan {
    /// A short summary an admin can read in a terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let name = |n: &str| {
            if n.is_empty() {
                "(none)".to_string()
            } else {
                n.to_string()
            }
        };
        let _ = writeln!(
            out,
            "Plan: {} -> {}",
            name(&self.from_config),
            name(&self.to_config)
        );
        if !self.reconcilable {
            let _ = writeln!(
                out,
                "UNRECONCILABLE: this update cannot be applied to a running node:"
            );
            for u in &self.unreconcilable {
                let _ = writeln!(out, "  {}: {}", u.field, u.reason);
            }
        }
        if self.is_noop() {
            let _ = writeln!(out, "  no change: the desired config is the current one");
        }
        if let Some(c) = &self.os_image {
            let _ = writeln!(
                out,
                "  OS image:      {} -> {}",
                c.from.as_deref().unwrap_or("(unknown)"),
                c.to
            );
        }
        if !self.kernel_arguments.is_empty() {
            let k = &self.kernel_arguments;
            let items: Vec<String> = k
                .remove
                .iter()
                .map(|a| format!("-{a}"))
                .chain(k.add.iter().map(|a| format!("+{a}")))
                .collect();
            let _ = writeln!(out, "  kernel args:   {}", items.join(" "));
        }
        if let Some(c) = &self.kernel_type {
            let from = c.from.map(|k| k.to_string()).unwrap_or_default();
            let _ = writeln!(out, "  kernel type:   {from} -> {}", c.to);
        }
        let e = &self.extensions;
        if !e.add.is_empty() || !e.remove.is_empty() {
            let items: Vec<String> = e
                .remove
                .iter()
                .map(|a| format!("-{a}"))
                .chain(e.add.iter().map(|a| format!("+{a}")))
                .collect();
            let _ = writeln!(out, "  extensions:    {}", items.join(" "));
        }
        changes(&mut out, "files:", &self.files);
        changes(&mut out, "units:", &self.units);
        if self.ssh_keys {
            let _ = writeln!(out, "  SSH keys:      {}", ssh_keys(&self.ssh_key_changes));
        }
        if self.password {
            let _ = writeln!(out, "  password:      core's password hash changes");
        }
        if self.reconcilable {
            let actions: Vec<String> = self.actions.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "  actions:       {}", actions.join(", "));
            let _ = writeln!(
                out,
                "  drain:         {}",
                if self.drain { "yes" } else { "no" }
            );
            let _ = writeln!(
                out,
                "  reboot:        {}",
                if self.reboot { "yes" } else { "no" }
            );
            if let Some(gate) = &self.health_gate {
                let _ = writeln!(out, "  health gate:   {}", gate.summary());
            }
            if !self.explanations.is_empty() {
                let _ = writeln!(out, "  why:");
                for line in &self.explanations {
                    let _ = writeln!(out, "    - {line}");
                }
            }
        }
        for w in &self.warnings {
            let _ = writeln!(out, "  warning: {w}");
        }
        out
    }
}

/// `+added -removed` by comment or fingerprint; a lock-out is said in capitals on the same line.
fn ssh_keys(c: &super::SshKeysChange) -> String {
    let mut items: Vec<String> = c
        .add
        .iter()
        .map(|k| format!("+{}", k.label()))
        .chain(c.remove.iter().map(|k| format!("-{}", k.label())))
        .collect();
    if items.is_empty() {
        items.push("~core's keys change (options, comments or order)".into());
    }
    let mut line = items.join("  ");
    if c.locks_out() {
        line.push_str("  -- NO KEY LEFT: core cannot log in with SSH after this update");
    } else {
        let _ = write!(
            line,
            "  ({} key{} after the update)",
            c.remaining,
            plural(c.remaining)
        );
    }
    line
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn changes(out: &mut String, label: &str, c: &Changes) {
    if c.is_empty() {
        return;
    }
    let items: Vec<String> = c
        .add
        .iter()
        .map(|p| format!("+{p}"))
        .chain(c.change.iter().map(|p| format!("~{p}")))
        .chain(c.remove.iter().map(|p| format!("-{p}")))
        .collect();
    let _ = writeln!(out, "  {label:<14} {}", items.join("  "));
}
