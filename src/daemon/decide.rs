//! What to do next, from what the daemon observes: the node's annotations, the on-disk config, the
//! journal of the update in flight and the forcefile. Pure; the driver gathers the inputs and executes.

use k8s_openapi::api::core::v1::Node;

use super::state::{Progress, Target};
use crate::cluster::annotations as ann;

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
    /// The annotations of `node`.
    pub fn of(node: &Node) -> Self {
        let get = |k: &str| ann::get(node, k).map(str::to_string);
        NodeView {
            desired_config: get(ann::DESIRED_CONFIG),
            desired_image: get(ann::DESIRED_IMAGE),
            current_config: get(ann::CURRENT_CONFIG),
            current_image: get(ann::CURRENT_IMAGE),
            state: get(ann::STATE),
        }
    }

    /// The target the cluster asks for, if it asks for anything yet.
    pub fn desired(&self) -> Option<Target> {
        let config = self.desired_config.clone().filter(|c| !c.is_empty())?;
        Some(Target {
            config,
            image: self.desired_image.clone().filter(|i| !i.is_empty()),
        })
    }
}

/// What the decision knows about the update in flight.
#[derive(Debug, Clone, Copy)]
pub struct InFlight<'a> {
    pub progress: &'a Progress,
    /// The OS it staged is waiting for its reboot ([`Progress::reboot_underway`] in this boot).
    pub reboot_underway: bool,
}

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The node has no `desiredConfig` yet; nothing to do until the controller sets one.
    Wait { why: String },
    /// Continue the update in the journal.
    Resume,
    /// The update in flight gives way to a newer target (or to the forcefile), whatever its phase and
    /// whether or not it failed: plan from what is on disk now (the journal knows both configs) to `to`.
    /// The MCD gets the same effect by rolling a failed `update()` back (`pkg/daemon/update.go`).
    Supersede { to: Target, forced: bool },
    /// The first-boot update failed for good and the forcefile asks to try again: drop its journal; the
    /// bootstrap then re-applies the node's rendered config as a forced update.
    DropFirstBoot,
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

/// Does a newer target (or the forcefile) take over from the update in flight? The executor asks the
/// same question while it waits on a drain or an image pull, so both agree on when to let go.
pub fn superseded(in_flight: InFlight<'_>, desired: Option<&Target>, forcefile: bool) -> bool {
    let p = in_flight.progress;
    if p.first_boot || in_flight.reboot_underway {
        // First boot is finished before anything else (it is only the OS part of the node's config), and
        // a staged OS waiting for its reboot gets it: the newer target is taken up afterwards.
        return false;
    }
    forcefile || desired.is_some_and(|d| *d != p.target)
}

/// Decide. `on_disk` is the on-disk config (ODC: `currentconfig` name + `currentimage`), which wins over the
/// annotations when present (§2.4: it survives an etcd restore).
pub fn decide(
    node: &NodeView,
    on_disk: Option<&Target>,
    journal: Option<InFlight<'_>>,
    forcefile: bool,
) -> Decision {
    let desired = node.desired();
    if let Some(in_flight) = journal {
        let p = in_flight.progress;
        if let Some(reason) = &p.failed {
            if p.first_boot {
                return if forcefile {
                    Decision::DropFirstBoot
                } else {
                    Decision::Failed {
                        target: p.target.clone(),
                        reason: reason.clone(),
                    }
                };
            }
            return match desired {
                Some(to) if to != p.target || forcefile => Decision::Supersede {
                    to,
                    forced: forcefile,
                },
                _ => Decision::Failed {
                    target: p.target.clone(),
                    reason: reason.clone(),
                },
            };
        }
        if superseded(in_flight, desired.as_ref(), forcefile) {
            // `superseded` is only true with a desired target or the forcefile; with the forcefile alone
            // the target stays.
            let to = desired.unwrap_or_else(|| p.target.clone());
            return Decision::Supersede {
                to,
                forced: forcefile,
            };
        }
        return Decision::Resume;
    }
    let Some(desired) = desired else {
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

    fn flying(p: &Progress) -> Option<InFlight<'_>> {
        Some(InFlight {
            progress: p,
            reboot_underway: false,
        })
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
    fn journal_resumes_until_a_newer_target_supersedes_it_in_any_phase() {
        let n = node("b", None, "a");
        for phase in [
            Phase::Planned,
            Phase::Drained,
            Phase::HostApplied,
            Phase::Staged,
            Phase::ActionsDone,
            Phase::Verified,
        ] {
            let p = progress(t("b", None), phase);
            assert_eq!(decide(&n, None, flying(&p), false), Decision::Resume);
            // back to a, or on to c: the update in flight gives way, whether or not files were written
            for to in ["a", "c"] {
                assert_eq!(
                    decide(&node(to, None, "a"), None, flying(&p), false),
                    Decision::Supersede {
                        to: t(to, None),
                        forced: false
                    },
                    "{phase} -> {to}"
                );
            }
            // the forcefile works in every state
            assert_eq!(
                decide(&n, None, flying(&p), true),
                Decision::Supersede {
                    to: t("b", None),
                    forced: true
                },
                "{phase} + forcefile"
            );
        }
    }

    #[test]
    fn a_staged_os_gets_its_reboot_before_a_newer_target() {
        let p = progress(t("b", None), Phase::Staged);
        let underway = Some(InFlight {
            progress: &p,
            reboot_underway: true,
        });
        assert_eq!(
            decide(&node("c", None, "a"), None, underway, false),
            Decision::Resume
        );
    }

    #[test]
    fn first_boot_is_finished_first() {
        let mut p = progress(t("rendered-1", None), Phase::HostApplied);
        p.first_boot = true;
        assert_eq!(
            decide(
                &node("rendered-2", None, "rendered-1"),
                None,
                flying(&p),
                true
            ),
            Decision::Resume
        );
        p.fail("did not boot twice".into());
        assert!(matches!(
            decide(
                &node("rendered-2", None, "rendered-1"),
                None,
                flying(&p),
                false
            ),
            Decision::Failed { .. }
        ));
        assert_eq!(
            decide(
                &node("rendered-1", None, "rendered-1"),
                None,
                flying(&p),
                true
            ),
            Decision::DropFirstBoot
        );
    }

    #[test]
    fn failed_target_is_not_retried_in_a_loop() {
        let mut p = progress(t("b", None), Phase::Rebooting);
        p.failed = Some("booted the previous deployment twice".into());
        assert_eq!(
            decide(&node("b", None, "a"), None, flying(&p), false),
            Decision::Failed {
                target: t("b", None),
                reason: "booted the previous deployment twice".into()
            }
        );
        // a new target, or the forcefile, tries again from what is on disk
        assert_eq!(
            decide(&node("c", None, "a"), None, flying(&p), false),
            Decision::Supersede {
                to: t("c", None),
                forced: false
            }
        );
        assert_eq!(
            decide(&node("b", None, "a"), None, flying(&p), true),
            Decision::Supersede {
                to: t("b", None),
                forced: true
            }
        );
    }
}
