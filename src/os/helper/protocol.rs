//! What the daemon and its ostree helper say to each other: one [`Request`] (a JSON line on the helper's
//! stdin), then [`Event`]s (JSON lines on its stdout) ending with [`Event::Done`].

use serde::{Deserialize, Serialize};

use crate::os::error::PullError;
use crate::os::ostree_backend::DeploymentKey;
use crate::os::{
    CleanupReport, Deployment, FetchProgress, OsChange, OsStatus, OstreeBackendOptions,
    PrefetchReport, RollbackOutcome, StageOutcome,
};

/// One operation on the sysroot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Operation {
    Status,
    Prefetch {
        image: String,
    },
    Stage {
        change: OsChange,
    },
    Cleanup,
    /// Make `to` the default deployment (the health gate's rollback).
    Rollback {
        to: Deployment,
    },
    /// Remove deployments older than the rollback one (returns their keys; no cleanup).
    PruneDeployments,
    /// The sysroot's deployments in order (to pick the one a simulated boot treats as booted).
    Deployments,
}

/// What an [`Operation`] returns (one per call: its size does not matter).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Outcome {
    Status(OsStatus),
    Prefetch(PrefetchReport),
    Stage(StageOutcome),
    Cleanup(CleanupReport),
    Rollback(RollbackOutcome),
    PruneDeployments(Vec<String>),
    Deployments(Vec<DeploymentKey>),
}

/// The helper's only input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Request {
    /// Where and how to work (never with a helper of its own).
    pub options: OstreeBackendOptions,
    /// Test only: the deployment a simulated boot treats as booted.
    pub simulated: Option<DeploymentKey>,
    pub operation: Operation,
}

/// What the helper reports while it works.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Event {
    /// The helper's ostree work is alive (sent every few seconds from the thread doing it).
    Alive,
    Progress(FetchProgress),
    /// The last event.
    Done(Result<Outcome, WireError>),
}

/// An error across the pipe: the chain as text, and the [`PullError`] when it was one (so callers can
/// still downcast and branch on its kind).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WireError {
    /// Outermost first, as `anyhow::Error::chain` lists it.
    pub chain: Vec<String>,
    pub pull: Option<PullError>,
}

impl WireError {
    pub(crate) fn from_error(e: &anyhow::Error) -> Self {
        Self {
            chain: e.chain().map(|c| c.to_string()).collect(),
            pull: e.downcast_ref::<PullError>().cloned(),
        }
    }

    /// The error again: a `PullError` as itself, anything else as the same chain of contexts.
    pub(crate) fn into_error(self) -> anyhow::Error {
        if let Some(p) = self.pull {
            return anyhow::Error::new(p);
        }
        let mut links = self.chain.into_iter().rev();
        let mut e = anyhow::anyhow!(links.next().unwrap_or_else(|| "unknown error".into()));
        for outer in links {
            e = e.context(outer);
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::PullErrorKind;

    #[test]
    fn errors_keep_their_chain_and_pull_errors_their_type() {
        let e = anyhow::anyhow!("root cause")
            .context("middle")
            .context("top");
        let back = WireError::from_error(&e).into_error();
        assert_eq!(format!("{back:#}"), "top: middle: root cause");

        let pull = PullError {
            kind: PullErrorKind::NoSpace,
            image: "r/os:1".into(),
            detail: "needs more".into(),
            chain: "disk preflight".into(),
            fetched: None,
        };
        let wire =
            serde_json::to_string(&WireError::from_error(&anyhow::Error::new(pull))).unwrap();
        let back: WireError = serde_json::from_str(&wire).unwrap();
        let back = back.into_error();
        let p = back.downcast_ref::<PullError>().expect("still a PullError");
        assert_eq!(p.kind, PullErrorKind::NoSpace);
        assert_eq!(
            back.to_string(),
            "Cannot pull OS image r/os:1: not enough disk space (needs more)"
        );
    }
}
