//! What to do next, from what the daemon observes: the node's annotations, the on-disk config, the
//! journal of the update in flight and the forcefile. Pure; the driver gathers the inputs and executes.

use super::state::{Progress, Target};

/// The node annotations the decision depends on (`mco-protocol.md` §1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeView {
    pub desired_config: Option<String>,
    pub desired_image: Option<String>,
    pub current_config: Option<String>,
    pub current_image: Option<String>,
    /// `Done`, `Working`, `Degraded`, `Unreconcilable`; empty counts as `Done`.
    pub state: Option<String>,
}

impl NodeView {
    /// The target the cluster asks for, if it asks for anything yet.
    pub fn desired(&self) -> Option<Target> {
        let config = self.desired_config.clone().filter(|c| !c.is_empty())?;
        Some(Target {
            config,
            image: self.desired_image.clone().filter(|i| !i.is_empty()),
        })
    }
}

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The node has no `desiredConfig` yet; nothing to do until the controller sets one.
    Wait { why: String },
    /// Continue the update in the journal.
    Resume,
    /// The update in flight (not yet touching the node) was superseded: drop it, then start `to`.
    Replace { from: Target, to: Target },
    /// Start a new update.
    Start {
        from: Target,
        to: Target,
        forced: bool,
    },
    /// The node is at its desired config: verify it and report Done (or Degraded with the mismatch).
    Settled { current: Target },
    /// The last attempt at this exact target failed for good; report it and wait for a new target or the
    /// forcefile, instead of rebooting in a loop.
    Failed { target: Target, reason: String },
}

/// Decide. `on_disk` is the on-disk config (ODC: `currentconfig` name + `currentimage`), which wins over the
/// annotations when present (§2.4: it survives an etcd restore).
pub fn decide(
    node: &NodeView,
    on_disk: Option<&Target>,
    journal: Option<&Progress>,
    forcefile: bool,
) -> Decision {
    let Some(desired) = node.desired() else {
        return Decision::Wait {
            why: "the node has no machineconfiguration.openshift.io/desiredConfig annotation yet"
                .into(),
        };
    };
    let current = on_disk.cloned().or_else(|| {
        node.current_config
            .clone()
            .filter(|c| !c.is_empty())
            .map(|config| Target {
                config,
                image: node.current_image.clone().filter(|i| !i.is_empty()),
            })
    });
    let current = current.unwrap_or(Target {
        config: String::new(),
        image: None,
    });

    if let Some(p) = journal {
        if let Some(reason) = &p.failed {
            if p.target == desired && !forcefile {
                return Decision::Failed {
                    target: desired,
                    reason: reason.clone(),
                };
            }
            // A new target (or the forcefile) gets a fresh attempt.
            return Decision::Start {
                from: current,
                to: desired,
                forced: forcefile,
            };
        }
        if p.target != desired && p.abandonable() {
            return Decision::Replace {
                from: current,
                to: desired,
            };
        }
        return Decision::Resume;
    }
    if forcefile {
        return Decision::Start {
            from: current,
            to: desired,
            forced: true,
        };
    }
    if current == desired {
        return Decision::Settled { current };
    }
    Decision::Start {
        from: current,
        to: desired,
        forced: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::state::Phase;

    fn t(c: &str, i: Option<&str>) -> Target {
        Target {
            config: c.into(),
            image: i.map(str::to_string),
        }
    }

    fn node(desired: &str, desired_image: Option<&str>, current: &str) -> NodeView {
        NodeView {
            desired_config: Some(desired.into()),
            desired_image: desired_image.map(str::to_string),
            current_config: Some(current.into()),
            current_image: None,
            state: Some("Done".into()),
        }
    }

    fn progress(target: Target, phase: Phase) -> Progress {
        let mut p = Progress::planned(t("a", None), target, true, 0);
        p.phase = phase;
        p
    }

    #[test]
    fn waits_without_desired_config() {
        assert!(matches!(
            decide(&NodeView::default(), None, None, false),
            Decision::Wait { .. }
        ));
    }

    #[test]
    fn settled_when_current_equals_desired() {
        assert_eq!(
            decide(&node("a", None, "a"), None, None, false),
            Decision::Settled {
                current: t("a", None)
            }
        );
    }

    #[test]
    fn start_on_new_config_or_image() {
        assert_eq!(
            decide(&node("b", None, "a"), None, None, false),
            Decision::Start {
                from: t("a", None),
                to: t("b", None),
                forced: false
            }
        );
        // on-cluster layering: same config, a new desiredImage
        assert_eq!(
            decide(&node("a", Some("img@sha256:1"), "a"), None, None, false),
            Decision::Start {
                from: t("a", None),
                to: t("a", Some("img@sha256:1")),
                forced: false
            }
        );
        // the revert: desiredImage cleared while currentImage is set
        let mut n = node("a", None, "a");
        n.current_image = Some("img@sha256:1".into());
        assert_eq!(
            decide(&n, None, None, false),
            Decision::Start {
                from: t("a", Some("img@sha256:1")),
                to: t("a", None),
                forced: false
            }
        );
    }

    #[test]
    fn on_disk_config_wins_over_annotations() {
        // etcd restored to an older annotation; the disk knows the node is already at b.
        assert_eq!(
            decide(&node("b", None, "a"), Some(&t("b", None)), None, false),
            Decision::Settled {
                current: t("b", None)
            }
        );
        assert_eq!(
            decide(&node("c", None, "b"), Some(&t("a", None)), None, false),
            Decision::Start {
                from: t("a", None),
                to: t("c", None),
                forced: false
            }
        );
    }

    #[test]
    fn forcefile_forces_a_start() {
        assert_eq!(
            decide(&node("a", None, "a"), None, None, true),
            Decision::Start {
                from: t("a", None),
                to: t("a", None),
                forced: true
            }
        );
    }

    #[test]
    fn journal_resumes_or_is_replaced() {
        let n = node("b", None, "a");
        assert_eq!(
            decide(
                &n,
                None,
                Some(&progress(t("b", None), Phase::Staged)),
                false
            ),
            Decision::Resume
        );
        // superseded before the node changed: replace
        assert_eq!(
            decide(
                &node("c", None, "a"),
                None,
                Some(&progress(t("b", None), Phase::Drained)),
                false
            ),
            Decision::Replace {
                from: t("a", None),
                to: t("c", None)
            }
        );
        // superseded after the node changed: finish it first
        assert_eq!(
            decide(
                &node("c", None, "a"),
                None,
                Some(&progress(t("b", None), Phase::HostApplied)),
                false
            ),
            Decision::Resume
        );
    }

    #[test]
    fn failed_target_is_not_retried_in_a_loop() {
        let mut p = progress(t("b", None), Phase::Rebooting);
        p.failed = Some("booted the previous deployment twice".into());
        assert_eq!(
            decide(&node("b", None, "a"), None, Some(&p), false),
            Decision::Failed {
                target: t("b", None),
                reason: "booted the previous deployment twice".into()
            }
        );
        // a new target, or the forcefile, tries again
        assert!(matches!(
            decide(&node("c", None, "a"), None, Some(&p), false),
            Decision::Start { forced: false, .. }
        ));
        assert!(matches!(
            decide(&node("b", None, "a"), None, Some(&p), true),
            Decision::Start { forced: true, .. }
        ));
    }
}
