//! The MachineConfig model: serde types for MachineConfig and MachineConfiguration, Ignition normalized
//! through `ignition-config`, data URLs decoded, image references and kernel arguments validated.
//!
//! Everything here is pure: bytes in, validated values or an [`InvalidInput`] naming the field out.

pub mod dataurl;
pub mod extensions;
pub mod ignition;
pub mod imageref;
pub mod kargs;
pub mod machineconfig;
pub mod paths;
pub mod policy;

use std::fmt;

pub use ignition::{Dropin, File, Ignition, Owner, Unit, User};
pub use imageref::ImageRef;
pub use machineconfig::{KernelType, MachineConfig};
pub use policy::{MachineConfiguration, NodeDisruptionPolicy, PolicyAction};

/// Input that cannot be used, with the field it concerns (`spec.config.storage.files[2].path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidInput {
    /// Dotted path of the offending field; empty when the whole document is at fault.
    pub field: String,
    pub message: String,
}

impl InvalidInput {
    /// Long quoted values in `message` are cut (see [`cut_long_values`]).
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: cut_long_values(&message.into()),
        }
    }
}

/// Quoted values longer than this many characters are cut in messages.
pub const MAX_QUOTED_CHARS: usize = 80;
/// How much of a cut value is kept.
const KEPT_CHARS: usize = 40;

/// Messages quote the offending value (`kernel argument "…" has …`); a 20 KB kernel argument must not
/// become a 20 KB error line. Every `"…"` (Rust debug quoting, escapes honoured) longer than
/// [`MAX_QUOTED_CHARS`] keeps its first characters and says how long it was:
/// `"aaaa…" (20003 characters)`.
pub fn cut_long_values(message: &str) -> String {
    let chars: Vec<char> = message.chars().collect();
    let mut out = String::with_capacity(message.len().min(4096));
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '"' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // Find the closing quote, skipping escaped characters.
        let mut j = i + 1;
        while j < chars.len() && chars[j] != '"' {
            j += if chars[j] == '\\' { 2 } else { 1 };
        }
        if j >= chars.len() {
            out.extend(&chars[i..]);
            break;
        }
        let inner = &chars[i + 1..j];
        if inner.len() <= MAX_QUOTED_CHARS {
            out.extend(&chars[i..=j]);
        } else {
            // Never end inside an escape sequence (`\u{…}`, `\n`): cut before its backslash.
            let mut keep = KEPT_CHARS;
            if let Some(b) = inner[..keep].iter().rposition(|c| *c == '\\') {
                let escape_end = inner[b..]
                    .iter()
                    .position(|c| *c == '}')
                    .map_or(b + 2, |p| b + p + 1);
                if escape_end > keep {
                    keep = b;
                }
            }
            out.push('"');
            out.extend(&inner[..keep]);
            out.push_str(&format!("…\" ({} characters)", inner.len()));
        }
        i = j + 1;
    }
    out
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for InvalidInput {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_quoted_values_are_cut() {
        let long = "x".repeat(20_000);
        let e = InvalidInput::new(
            "spec.kernelArguments[0]",
            format!("kernel argument {long:?} is bad"),
        );
        assert_eq!(
            e.to_string(),
            format!(
                "spec.kernelArguments[0]: kernel argument \"{}…\" (20000 characters) is bad",
                "x".repeat(40)
            )
        );
        // Short values, several values, an escape at the cut, unbalanced quotes stay intact.
        assert_eq!(cut_long_values("a \"b\" c \"d\""), "a \"b\" c \"d\"");
        let escaped = format!("{:?}", format!("{}\n{}", "y".repeat(39), "z".repeat(100)));
        assert_eq!(
            cut_long_values(&format!("v {escaped} w")),
            format!("v \"{}…\" (141 characters) w", "y".repeat(39))
        );
        assert_eq!(cut_long_values("odd \" quote"), "odd \" quote");
    }
}
