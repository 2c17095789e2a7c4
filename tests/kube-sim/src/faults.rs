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

/// An injected fault and how many requests it failed so far, so a test can check that every fault it
/// injected really fired (a fault that matched nothing proves nothing).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultHits {
    /// The rule as injected (its `count` is the budget it started with).
    pub rule: FaultRule,
    /// Requests answered with the rule's status.
    pub hits: u64,
}

/// What the test controls did since the last reset: per injected rule, and for the controls that are not
/// rules (dropped watches, compaction, latency), how many requests or streams they affected.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FaultReport {
    pub rules: Vec<FaultHits>,
    /// Open watch streams ended by a drop-watches request.
    pub watches_dropped: u64,
    /// Watches and lists answered 410 Expired because their resourceVersion was compacted away.
    pub expired: u64,
    /// Requests delayed by the added latency.
    pub delayed: u64,
}

/// A rule still in force: its index in the report, and the budget left.
#[derive(Debug, Clone)]
pub struct ActiveFault {
    pub report_index: usize,
    pub rule: FaultRule,
}

#[derive(Debug, Default)]
pub struct Controls {
    pub faults: Vec<ActiveFault>,
    pub report: FaultReport,
    pub latency: Duration,
    /// `"<verb> <resource>"` → count (e.g. `"patch nodes"`, `"create pods/eviction"`).
    pub counters: BTreeMap<String, u64>,
    pub log: Vec<RequestRecord>,
    pub log_limit: usize,
}

impl Controls {
    /// Add a rule (and its line in the report).
    pub fn inject(&mut self, rule: FaultRule) {
        self.report.rules.push(FaultHits {
            rule: rule.clone(),
            hits: 0,
        });
        self.faults.push(ActiveFault {
            report_index: self.report.rules.len() - 1,
            rule,
        });
    }

    /// Take one matching fault, if any, counting the hit.
    pub fn take_fault(&mut self, verb: &str, path: &str) -> Option<FaultRule> {
        let idx = self.faults.iter().position(|f| {
            f.rule.count > 0
                && f.rule.verb.as_deref().is_none_or(|v| v == verb)
                && f.rule.path.as_deref().is_none_or(|p| path.contains(p))
        })?;
        let active = &mut self.faults[idx];
        let rule = active.rule.clone();
        active.rule.count -= 1;
        if let Some(line) = self.report.rules.get_mut(active.report_index) {
            line.hits += 1;
        }
        if active.rule.count == 0 {
            self.faults.remove(idx);
        }
        Some(rule)
    }

    /// Start a new report (the rules still in force keep counting, from zero).
    pub fn reset_report(&mut self) {
        let rules: Vec<FaultHits> = self
            .faults
            .iter()
            .map(|f| FaultHits {
                rule: f.rule.clone(),
                hits: 0,
            })
            .collect();
        for (i, f) in self.faults.iter_mut().enumerate() {
            f.report_index = i;
        }
        self.report = FaultReport {
            rules,
            ..Default::default()
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(verb: &str, path: &str, count: u32) -> FaultRule {
        FaultRule {
            verb: Some(verb.into()),
            path: Some(path.into()),
            status: 500,
            count,
            message: None,
        }
    }

    #[test]
    fn hits_are_counted_per_injected_rule() {
        let mut c = Controls::default();
        c.inject(rule("patch", "/nodes/node1", 2));
        c.inject(rule("get", "/machineconfigs/", 1));
        assert!(c.take_fault("get", "/api/v1/nodes/node1").is_none());
        assert!(c.take_fault("patch", "/api/v1/nodes/node1").is_some());
        assert!(c.take_fault("patch", "/api/v1/nodes/node1").is_some());
        assert!(
            c.take_fault("patch", "/api/v1/nodes/node1").is_none(),
            "the budget is spent"
        );
        let hits: Vec<u64> = c.report.rules.iter().map(|r| r.hits).collect();
        assert_eq!(hits, [2, 0], "the MachineConfig rule never matched");
        assert_eq!(c.report.rules[0].rule.count, 2, "the rule as injected");
        c.reset_report();
        assert_eq!(c.report.rules.len(), 1, "only the rule still in force");
        assert!(c.take_fault("get", "/apis/x/v1/machineconfigs/a").is_some());
        assert_eq!(c.report.rules[0].hits, 1);
        assert!(c.faults.is_empty());
    }
}
