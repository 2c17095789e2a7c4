//! The update state machine: a pure value with checked transitions, persisted as the progress journal.
//!
//! An update walks the phases in order. Each phase's effects are idempotent, and the journal records the
//! last phase that *completed*, so a crash or SIGTERM anywhere resumes with the next phase and repeats at
//! most the interrupted, idempotent step. A reboot is recorded (with the boot id) *before* it is requested,
//! so a restart in the same boot never asks for a second one.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What the node is being moved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// The rendered MachineConfig name (`desiredConfig`).
    pub config: String,
    /// The OS image pullspec (from `desiredImage`, else the MC's `osImageURL`); `None` = keep the OS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.image {
            Some(image) => write!(f, "{} (image {image})", self.config),
            None => f.write_str(&self.config),
        }
    }
}

/// The last completed phase of the update in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// The target's MachineConfig was fetched, validated and planned.
    Planned,
    /// The OS image is in the local repo (or there is none to fetch); the node still serves.
    Prefetched,
    /// The node is cordoned and drained (or the plan needs no drain). From here it is `Working`.
    Drained,
    /// Files, units, SSH keys and password are written.
    HostApplied,
    /// The OS deployment (image and/or kernel arguments) is staged, or there was nothing to stage.
    Staged,
    /// A reboot was requested during boot `RebootRecord::boot_id`.
    Rebooting,
    /// The rebootless post-config actions ran.
    ActionsDone,
    /// The booted image, kernel arguments and on-disk state match the target.
    Verified,
    /// The health gate passed on the new deployment (only when the update boots one).
    Healthy,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Planned => "planned",
            Phase::Prefetched => "prefetched",
            Phase::Drained => "drained",
            Phase::HostApplied => "host-applied",
            Phase::Staged => "staged",
            Phase::Rebooting => "rebooting",
            Phase::ActionsDone => "actions-done",
            Phase::Verified => "verified",
            Phase::Healthy => "healthy",
        }
    }

    /// Node changes have begun: from here on, an update is finished rather than abandoned.
    pub fn node_modified(self) -> bool {
        self >= Phase::HostApplied
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reboot the daemon asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RebootRecord {
    /// `/proc/sys/kernel/random/boot_id` when the reboot was requested.
    pub boot_id: String,
    /// Unix seconds.
    pub requested_at: u64,
}

/// The progress of the update in flight: what the journal stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub target: Target,
    /// The config the update started from (the on-disk config then).
    pub from: Target,
    pub phase: Phase,
    /// Whether the plan reboots (fixed when planned, so a restart resumes the same path).
    pub reboot: bool,
    /// We cordoned the node (and so we uncordon it).
    #[serde(default)]
    pub cordoned_by_us: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_record: Option<RebootRecord>,
    /// The OS was staged again once after a boot came up on the wrong deployment.
    #[serde(default)]
    pub restaged: bool,
    /// Why the last boot did not come up as expected (kept as evidence for the Degraded reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restage_reason: Option<String>,
    /// The OS image to deploy and verify: `desiredImage`, else the MachineConfig's `osImageURL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_image: Option<String>,
    /// The update failed for good (e.g. the new deployment did not boot twice); kept so the same target is
    /// not retried in a reboot loop. A new target or the forcefile starts over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// Unix seconds.
    pub started_at: u64,
    /// A new deployment boots: the health gate runs after the boot, and a failure rolls back to the
    /// deployment booted when the update started (`started_on`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub health_gate: bool,
    /// The deployment (`<checksum>.<serial>`) booted when the update was planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_on: Option<String>,
    /// The new deployment failed its health gate and the node went back to the previous deployment with
    /// the starting config's files: what is on disk is `from` again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rolled_back: bool,
    /// `firstboot-complete-machineconfig` planned it from the encapsulated config: only the OS part is the
    /// node's (Ignition wrote the rest), so finishing it stores no on-disk config and reports nothing; the
    /// daemon's bootstrap then validates the node against the full rendered config.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub first_boot: bool,
}

/// A transition the state machine does not allow: a bug, never a user error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid update transition from {from} to {to}")]
pub struct InvalidTransition {
    pub from: Phase,
    pub to: Phase,
}

impl Progress {
    /// A freshly planned update.
    pub fn planned(from: Target, target: Target, reboot: bool, now: u64) -> Self {
        Progress {
            target,
            from,
            phase: Phase::Planned,
            reboot,
            cordoned_by_us: false,
            reboot_record: None,
            restaged: false,
            restage_reason: None,
            os_image: None,
            failed: None,
            started_at: now,
            first_boot: false,
            health_gate: false,
            started_on: None,
            rolled_back: false,
        }
    }

    /// The phase that comes next on this update's path, `None` once verified.
    pub fn next_phase(&self) -> Option<Phase> {
        Some(match self.phase {
            Phase::Planned => Phase::Prefetched,
            Phase::Prefetched => Phase::Drained,
            Phase::Drained => Phase::HostApplied,
            Phase::HostApplied => Phase::Staged,
            Phase::Staged if self.reboot => Phase::Rebooting,
            Phase::Staged => Phase::ActionsDone,
            Phase::Rebooting | Phase::ActionsDone => Phase::Verified,
            Phase::Verified if self.health_gate && self.reboot => Phase::Healthy,
            Phase::Verified | Phase::Healthy => return None,
        })
    }

    /// Record that `to` completed. Only the next phase on the path is allowed.
    pub fn advance(&mut self, to: Phase) -> Result<(), InvalidTransition> {
        if self.next_phase() != Some(to) {
            return Err(InvalidTransition {
                from: self.phase,
                to,
            });
        }
        if to == Phase::Rebooting && self.reboot_record.is_none() {
            // A reboot must be recorded with the boot it was requested in.
            return Err(InvalidTransition {
                from: self.phase,
                to,
            });
        }
        self.phase = to;
        Ok(())
    }

    /// Record the reboot about to be requested and move to `Rebooting`.
    pub fn rebooting(&mut self, boot_id: &str, now: u64) -> Result<(), InvalidTransition> {
        if self.next_phase() != Some(Phase::Rebooting) {
            return Err(InvalidTransition {
                from: self.phase,
                to: Phase::Rebooting,
            });
        }
        self.reboot_record = Some(RebootRecord {
            boot_id: boot_id.to_string(),
            requested_at: now,
        });
        self.advance(Phase::Rebooting)
    }

    /// Has the requested reboot happened? (`None` when no reboot was requested.)
    pub fn rebooted(&self, current_boot_id: &str) -> Option<bool> {
        self.reboot_record
            .as_ref()
            .map(|r| r.boot_id != current_boot_id)
    }

    /// The node came back on the wrong deployment: stage once more (back to just after the host apply),
    /// keeping why. A second time is refused: the caller degrades with the evidence.
    pub fn restage(&mut self, why: String) -> Result<(), InvalidTransition> {
        if self.phase != Phase::Rebooting || self.restaged {
            return Err(InvalidTransition {
                from: self.phase,
                to: Phase::HostApplied,
            });
        }
        self.phase = Phase::HostApplied;
        self.restaged = true;
        self.reboot_record = None;
        self.restage_reason = Some(why);
        Ok(())
    }

    /// Give up on this target, keeping why.
    pub fn fail(&mut self, reason: String) {
        self.failed = Some(reason);
    }

    /// A new OS deployment is staged for the reboot this update asks for in boot `boot_id` (or is about
    /// to ask for): a newer target is taken up after that reboot, not instead of it, so a staged
    /// deployment is never left behind to boot later by surprise.
    pub fn reboot_underway(&self, boot_id: &str) -> bool {
        match self.phase {
            Phase::Staged => self.reboot,
            Phase::Rebooting => self.rebooted(boot_id) == Some(false),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(config: &str, image: Option<&str>) -> Target {
        Target {
            config: config.into(),
            image: image.map(str::to_string),
        }
    }

    fn new(reboot: bool) -> Progress {
        Progress::planned(
            t("rendered-1", None),
            t("rendered-2", Some("quay.io/os@sha256:aa")),
            reboot,
            100,
        )
    }

    #[test]
    fn reboot_happy_path() {
        let mut p = new(true);
        for phase in [
            Phase::Prefetched,
            Phase::Drained,
            Phase::HostApplied,
            Phase::Staged,
        ] {
            p.advance(phase).unwrap();
        }
        // Rebooting needs the boot it was requested in.
        assert!(p.advance(Phase::Rebooting).is_err());
        p.rebooting("boot-a", 200).unwrap();
        assert_eq!(
            p.rebooted("boot-a"),
            Some(false),
            "same boot: not rebooted yet"
        );
        assert_eq!(p.rebooted("boot-b"), Some(true));
        p.advance(Phase::Verified).unwrap();
        assert_eq!(p.next_phase(), None);
    }

    #[test]
    fn the_health_gate_comes_after_the_verified_boot() {
        let mut p = new(true);
        p.health_gate = true;
        for phase in [
            Phase::Prefetched,
            Phase::Drained,
            Phase::HostApplied,
            Phase::Staged,
        ] {
            p.advance(phase).unwrap();
        }
        p.rebooting("boot-a", 1).unwrap();
        p.advance(Phase::Verified).unwrap();
        assert_eq!(p.next_phase(), Some(Phase::Healthy));
        p.advance(Phase::Healthy).unwrap();
        assert_eq!(p.next_phase(), None);
        // A rebootless update has no gate, whatever the flag says.
        let mut r = new(false);
        r.health_gate = true;
        r.phase = Phase::Verified;
        assert_eq!(r.next_phase(), None);
    }

    #[test]
    fn rebootless_happy_path() {
        let mut p = new(false);
        for phase in [
            Phase::Prefetched,
            Phase::Drained,
            Phase::HostApplied,
            Phase::Staged,
            Phase::ActionsDone,
            Phase::Verified,
        ] {
            p.advance(phase).unwrap();
        }
        assert_eq!(p.rebooted("x"), None);
    }

    #[test]
    fn phases_cannot_be_skipped_or_repeated() {
        let mut p = new(true);
        assert_eq!(
            p.advance(Phase::HostApplied),
            Err(InvalidTransition {
                from: Phase::Planned,
                to: Phase::HostApplied
            })
        );
        p.advance(Phase::Prefetched).unwrap();
        assert!(p.advance(Phase::Prefetched).is_err(), "repeating a phase");
        assert!(p.advance(Phase::Planned).is_err(), "going back");
        let mut r = new(false);
        for phase in [
            Phase::Prefetched,
            Phase::Drained,
            Phase::HostApplied,
            Phase::Staged,
        ] {
            r.advance(phase).unwrap();
        }
        assert!(
            r.rebooting("b", 1).is_err(),
            "a rebootless plan never reboots"
        );
        assert!(r.advance(Phase::Verified).is_err(), "actions come first");
    }

    #[test]
    fn restage_once_then_refuse() {
        let mut p = new(true);
        for phase in [
            Phase::Prefetched,
            Phase::Drained,
            Phase::HostApplied,
            Phase::Staged,
        ] {
            p.advance(phase).unwrap();
        }
        p.rebooting("boot-a", 1).unwrap();
        p.restage("booted the previous deployment".into()).unwrap();
        assert_eq!(p.phase, Phase::HostApplied);
        assert!(p.reboot_record.is_none());
        p.advance(Phase::Staged).unwrap();
        p.rebooting("boot-b", 2).unwrap();
        assert!(p.restage("again".into()).is_err());
        assert_eq!(
            p.restage_reason.as_deref(),
            Some("booted the previous deployment")
        );
    }

    #[test]
    fn a_reboot_is_underway_from_the_stage_until_the_boot_changes() {
        let mut p = new(true);
        for phase in [Phase::Prefetched, Phase::Drained, Phase::HostApplied] {
            p.advance(phase).unwrap();
            assert!(!p.reboot_underway("boot-a"), "{phase}");
        }
        p.advance(Phase::Staged).unwrap();
        assert!(p.reboot_underway("boot-a"));
        p.rebooting("boot-a", 1).unwrap();
        assert!(p.reboot_underway("boot-a"), "requested, not happened");
        assert!(!p.reboot_underway("boot-b"), "it happened");
        let mut r = new(false);
        for phase in [
            Phase::Prefetched,
            Phase::Drained,
            Phase::HostApplied,
            Phase::Staged,
        ] {
            r.advance(phase).unwrap();
        }
        assert!(
            !r.reboot_underway("boot-a"),
            "a rebootless plan stages nothing"
        );
    }

    #[test]
    fn journal_roundtrip() {
        let mut p = new(true);
        p.cordoned_by_us = true;
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"phase\":\"Planned\""));
        assert_eq!(serde_json::from_str::<Progress>(&json).unwrap(), p);
    }
}
