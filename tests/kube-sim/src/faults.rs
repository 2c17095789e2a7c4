//! Test controls: injected failures, added latency, request counters and a request log.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Fail the next `count` requests whose verb and path match, with `status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultRule {
    /// Kubernetes verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`); `None` matches any.
    #[serde(default)]
    pub verb: Option<String>,
    /// The request path must contain this (e.g. `/nodes/node1`, `/eviction`); `None` matches any.
    #[serde(default)]
    pub path: Option<String>,
    pub status: u16,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default)]
    pub message: Option<String>,
}

fn one() -> u32 {
    1
}

/// One served request, for comparing with recorded client request sequences.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RequestRecord {
    pub method: String,
    pub path_and_query: String,
    pub verb: String,
    /// `nodes`, `pods/eviction`, `machineconfignodes.machineconfiguration.openshift.io/status`;
    /// empty for discovery and other non-resource paths.
    pub resource: String,
    pub status: u16,
    pub accept: String,
    pub content_type: String,
    #[serde(default)]
    pub body: Option<String>,
}

#[derive(Debug, Default)]
pub struct Controls {
    pub faults: Vec<FaultRule>,
    pub latency: Duration,
    /// `"<verb> <resource>"` → count (e.g. `"patch nodes"`, `"create pods/eviction"`).
    pub counters: BTreeMap<String, u64>,
    pub log: Vec<RequestRecord>,
    pub log_limit: usize,
}

impl Controls {
    /// Take one matching fault, if any.
    pub fn take_fault(&mut self, verb: &str, path: &str) -> Option<FaultRule> {
        let idx = self.faults.iter().position(|f| {
            f.count > 0
                && f.verb.as_deref().is_none_or(|v| v == verb)
                && f.path.as_deref().is_none_or(|p| path.contains(p))
        })?;
        let rule = self.faults[idx].clone();
        self.faults[idx].count -= 1;
        if self.faults[idx].count == 0 {
            self.faults.remove(idx);
        }
        Some(rule)
    }

    pub fn count(&mut self, verb: &str, resource: &str) {
        if resource.is_empty() {
            return;
        }
        *self
            .counters
            .entry(format!("{verb} {resource}"))
            .or_default() += 1;
    }

    pub fn record(&mut self, rec: RequestRecord) {
        self.log.push(rec);
        if self.log.len() > self.log_limit {
            let excess = self.log.len() - self.log_limit;
            self.log.drain(..excess);
        }
    }
}
