//! Where the node disruption policy comes from. The MCD takes it from `MachineConfiguration/cluster`
//! `status.nodeDisruptionPolicyStatus.clusterPolicies`, the operator's merge of the defaults of the
//! cluster's version with `spec`, and first polls (every 5 s, for up to 2 min) until
//! `status.observedGeneration == metadata.generation`, failing the update when it does not get there
//! (MCO `pkg/daemon/update.go`, `calculatePostConfigChangeNodeDisruptionAction`).
//!
//! We do the same when an operator writes that status. With no MachineConfiguration, or one without
//! `clusterPolicies` (no operator runs), our built-in defaults merged with `spec` are used, as before.
//! The log says which.

use std::time::Duration;

use anyhow::Context;

use super::Cluster;
use crate::config::MachineConfiguration;
use crate::plan::PolicySource;

/// How long to wait for the operator's status to catch up with `spec`.
#[derive(Debug, Clone, Copy)]
pub struct PolicyWait {
    pub poll: Duration,
    pub timeout: Duration,
}

impl Default for PolicyWait {
    /// The MCD's `wait.PollUntilContextTimeout(…, 5*time.Second, 2*time.Minute, …)`.
    fn default() -> Self {
        PolicyWait {
            poll: Duration::from_secs(5),
            timeout: Duration::from_secs(120),
        }
    }
}

async fn read<C: Cluster>(cluster: &C) -> anyhow::Result<Option<MachineConfiguration>> {
    match cluster
        .get_machine_configuration()
        .await
        .context("reading MachineConfiguration cluster")?
    {
        None => Ok(None),
        Some(raw) => MachineConfiguration::from_value(raw)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("MachineConfiguration cluster is invalid: {e}")),
    }
}

/// `120s`, `0.3s`.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// The cluster's MachineConfiguration to plan with, and where its policy comes from
/// ([`crate::plan::ClusterPolicy::effective`] picks the operator's status exactly when it is current).
pub async fn fetch_policy<C: Cluster>(
    cluster: &C,
    wait: PolicyWait,
) -> anyhow::Result<(MachineConfiguration, PolicySource)> {
    let started = tokio::time::Instant::now();
    let mut policy = read(cluster).await?;
    let mut logged_wait = false;
    loop {
        let Some(p) = policy else {
            tracing::info!(
                source = %PolicySource::DefaultsMergedWithSpec,
                "node disruption policy: built-in defaults (no MachineConfiguration cluster)"
            );
            return Ok((
                MachineConfiguration::default(),
                PolicySource::DefaultsMergedWithSpec,
            ));
        };
        if p.current_cluster_policies().is_some() {
            tracing::info!(
                source = %PolicySource::OperatorStatus,
                generation = p.generation,
                "node disruption policy from the operator's status"
            );
            return Ok((p, PolicySource::OperatorStatus));
        }
        if !p.cluster_policies_stale() {
            tracing::info!(
                source = %PolicySource::DefaultsMergedWithSpec,
                generation = p.generation,
                "node disruption policy: no operator status on MachineConfiguration cluster, using our merge"
            );
            return Ok((p, PolicySource::DefaultsMergedWithSpec));
        }
        let observed = p.status.as_ref().map_or(0, |s| s.observed_generation);
        if started.elapsed() >= wait.timeout {
            anyhow::bail!(
                "NodeDisruptionPolicyStatus was not ready: MachineConfiguration cluster status.observedGeneration {observed} is not metadata.generation {} after {}; is the machine-config-operator running?",
                p.generation,
                seconds(wait.timeout)
            );
        }
        if !logged_wait {
            tracing::info!(
                observed_generation = observed,
                generation = p.generation,
                "waiting for the operator to observe MachineConfiguration cluster (its node disruption policy status is not up to date)"
            );
            logged_wait = true;
        }
        tokio::time::sleep(wait.poll).await;
        policy = read(cluster).await?;
    }
}
