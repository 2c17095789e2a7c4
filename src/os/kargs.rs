//! Kernel argument changes: pure list arithmetic, unit-tested.

use serde::{Deserialize, Serialize};

/// A change to a deployment's kernel arguments, as the planner computes it from the old and new
/// MachineConfig `kernelArguments` (tokens already split, like `rpm-ostree kargs --delete-if-present=… --append=…`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KargsChange {
    /// Removed from the base deployment's arguments; each token removes its first exact match, if any.
    pub remove: Vec<String>,
    /// Appended afterwards, in order.
    pub add: Vec<String>,
}

impl KargsChange {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }

    /// The arguments that result from applying this change to `base`.
    pub fn apply(&self, base: &[String]) -> Vec<String> {
        let mut out = base.to_vec();
        for token in &self.remove {
            if let Some(pos) = out.iter().position(|t| t == token) {
                out.remove(pos);
            }
        }
        out.extend(self.add.iter().cloned());
        out
    }
}

/// Split a boot entry's `options` line into the user's kernel arguments: whitespace separated,
/// without the `ostree=` argument that ostree itself writes for every deployment.
pub fn user_kargs(options: &str) -> Vec<String> {
    options
        .split_whitespace()
        .filter(|t| !t.starts_with("ostree="))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn removes_first_match_then_appends_in_order() {
        let change = KargsChange {
            remove: v(&["quiet", "a=1"]),
            add: v(&["b=2", "a=3"]),
        };
        assert_eq!(
            change.apply(&v(&["a=1", "quiet", "a=1", "rw"])),
            v(&["a=1", "rw", "b=2", "a=3"])
        );
    }

    #[test]
    fn removing_an_absent_token_is_not_an_error() {
        let change = KargsChange {
            remove: v(&["nosmt"]),
            add: vec![],
        };
        assert_eq!(change.apply(&v(&["rw"])), v(&["rw"]));
    }

    #[test]
    fn empty_change_keeps_arguments() {
        assert!(KargsChange::default().is_empty());
        assert_eq!(
            KargsChange::default().apply(&v(&["x", "y"])),
            v(&["x", "y"])
        );
    }

    #[test]
    fn re_applying_old_and_new_lists_is_stable() {
        // Old MC kargs [a, b], new MC kargs [a, b]: delete-if-present then append gives the same set.
        let change = KargsChange {
            remove: v(&["a", "b"]),
            add: v(&["a", "b"]),
        };
        let once = change.apply(&v(&["rw", "a", "b"]));
        assert_eq!(once, v(&["rw", "a", "b"]));
        assert_eq!(change.apply(&once), once);
    }

    #[test]
    fn user_kargs_drop_the_ostree_argument() {
        assert_eq!(
            user_kargs(" rw  ostree=/ostree/boot.1/default/abc/0 quiet "),
            v(&["rw", "quiet"])
        );
    }
}
