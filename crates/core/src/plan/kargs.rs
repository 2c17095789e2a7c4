//! Kernel argument changes between two MachineConfigs, and applying such a change to a command line.

use serde::{Deserialize, Serialize};

/// What to remove from and append to the kernel command line, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelArgsChange {
    pub remove: Vec<String>,
    pub add: Vec<String>,
}

impl KernelArgsChange {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }
}

/// The change that takes a command line ending in `old` to one ending in `new`.
///
/// When the arguments both configs keep already come first in `new` in the same order, only the
/// difference is touched. Otherwise (a reorder, or an argument inserted before kept ones) every old
/// argument is removed and every new one appended, as the MCD does (OCPBUGS-75894): order matters for
/// repeated keys such as `console=`.
pub fn diff(old: &[String], new: &[String]) -> KernelArgsChange {
    if old == new {
        return KernelArgsChange::default();
    }
    // Multiset-aware "kept" = old arguments that still appear in new, in old's order.
    let mut available: Vec<Option<&String>> = new.iter().map(Some).collect();
    let mut kept = Vec::new();
    let mut removed = Vec::new();
    for arg in old {
        if let Some(slot) = available.iter_mut().find(|s| s.is_some_and(|n| n == arg)) {
            *slot = None;
            kept.push(arg.clone());
        } else {
            removed.push(arg.clone());
        }
    }
    if new.starts_with(&kept) {
        KernelArgsChange {
            remove: removed,
            add: new[kept.len()..].to_vec(),
        }
    } else {
        KernelArgsChange {
            remove: old.to_vec(),
            add: new.to_vec(),
        }
    }
}

/// Apply a change to a full command line: each removal drops the last matching argument (the one the
/// MachineConfig appended), then additions are appended in order.
pub fn apply(cmdline: &[String], change: &KernelArgsChange) -> Vec<String> {
    let mut out = cmdline.to_vec();
    for r in &change.remove {
        if let Some(pos) = out.iter().rposition(|a| a == r) {
            out.remove(pos);
        }
    }
    out.extend(change.add.iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn diff_table() {
        let cases = [
            ("a b", "a b", "", ""),
            ("", "a", "", "a"),
            ("a", "", "a", ""),
            ("a b", "a b c", "", "c"),
            ("a b c", "a c", "b", ""),
            ("x a", "a", "x", ""),
            ("a b", "a c", "b", "c"),
            // reorder: everything out, everything back in order
            ("a b", "b a", "a b", "b a"),
            (
                "console=tty0 console=ttyS0",
                "console=ttyS0 console=tty0",
                "console=tty0 console=ttyS0",
                "console=ttyS0 console=tty0",
            ),
            // an argument inserted before kept ones
            ("a b", "a x b", "a b", "a x b"),
            // duplicates are counted
            ("a a", "a", "a", ""),
            ("a", "a a", "", "a"),
        ];
        for (old, new, remove, add) in cases {
            let got = diff(&v(old), &v(new));
            assert_eq!(
                got,
                KernelArgsChange {
                    remove: v(remove),
                    add: v(add)
                },
                "{old:?} -> {new:?}"
            );
        }
    }

    #[test]
    fn apply_keeps_base_arguments() {
        let base = v("root=UUID=x rw ostree=/ostree/boot.0/os/abc/0");
        let cmdline: Vec<String> = base.iter().cloned().chain(v("nosmt quiet")).collect();
        let got = apply(
            &cmdline,
            &diff(&v("nosmt quiet"), &v("quiet mitigations=off")),
        );
        assert_eq!(got, [base.clone(), v("quiet mitigations=off")].concat());
        // removing an argument that is not there is a no-op (delete-if-present)
        assert_eq!(
            apply(
                &base,
                &KernelArgsChange {
                    remove: v("gone"),
                    add: vec![]
                }
            ),
            base
        );
    }

    proptest! {
        /// Whatever the change, applying it to `base + old` yields `base + new`.
        #[test]
        fn apply_of_diff_reaches_new(
            base in proptest::collection::vec("[a-c]", 0..4),
            old in proptest::collection::vec("[a-e]", 0..6),
            new in proptest::collection::vec("[a-e]", 0..6),
        ) {
            let base: Vec<String> = base.into_iter().map(|s| format!("base{s}")).collect();
            let cmdline = [base.clone(), old.clone()].concat();
            let got = apply(&cmdline, &diff(&old, &new));
            prop_assert_eq!(got, [base, new].concat());
        }
    }
}
