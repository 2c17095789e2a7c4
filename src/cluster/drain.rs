//! Draining our node, two ways:
//! - `self` (default): cordon (recording that we did), evict every pod that a drain should
//!   move, retrying PDB refusals and reporting which pod is blocked by which PDB since when,
//!   wait until each pod is gone (or was replaced under the same name), with an overall timeout.
//! - `controller`: the MCO handshake — write `desiredDrain` and wait for the controller to copy it
//!   into `lastAppliedDrain` (mco-protocol.md §1).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};

use super::annotations::{
    self, AnnotationChanges, CONTROL_PLANE_TOPOLOGY, CORDONED_BY, CORDONED_BY_VALUE, DESIRED_DRAIN,
    LAST_APPLIED_DRAIN,
};
use super::mcn::{ConditionChange, ConditionType, McnWriter, Status};
use super::{Cluster, EventReason, Eviction, NodeEvent};

/// Tunables; the defaults are the MCD's (1 h drain, 10 min uncordon, 10 s controller polling).
#[derive(Debug, Clone)]
pub struct DrainOptions {
    /// Give up after this long, naming the pods still blocking.
    pub timeout: Duration,
    /// Evictions in flight at once.
    pub concurrency: usize,
    /// First wait after a PDB refusal; doubles up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// How often evicted pods are checked for being gone (one LIST of the node's pods).
    pub poll_interval: Duration,
    /// Controller mode: how often the node is re-read, and the two timeouts.
    pub controller_poll_interval: Duration,
    pub controller_drain_timeout: Duration,
    pub controller_uncordon_timeout: Duration,
}

impl Default for DrainOptions {
    fn default() -> Self {
        DrainOptions {
            timeout: Duration::from_secs(3600),
            concurrency: 32,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(5),
            poll_interval: Duration::from_millis(250),
            controller_poll_interval: Duration::from_secs(10),
            controller_drain_timeout: Duration::from_secs(3600),
            controller_uncordon_timeout: Duration::from_secs(600),
        }
    }
}

/// `namespace/name`.
pub type PodRef = String;

/// A pod a PodDisruptionBudget keeps on the node.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockedPod {
    pub pod: PodRef,
    /// The budget named in the server's answer, when it names one.
    pub pdb: Option<String>,
    pub message: String,
    /// When the first refusal came (RFC 3339).
    pub since: String,
}

impl std::fmt::Display for BlockedPod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.pdb {
            Some(pdb) => write!(
                f,
                "pod {} is blocked by PodDisruptionBudget {pdb} since {}",
                self.pod, self.since
            ),
            None => write!(
                f,
                "pod {} cannot be evicted since {}: {}",
                self.pod, self.since, self.message
            ),
        }
    }
}

/// Told about drain progress (metrics, logs); every method has a no-op default.
pub trait DrainObserver: Send + Sync {
    fn pod_blocked(&self, _blocked: &BlockedPod) {}
    fn pod_evicted(&self, _pod: &str) {}
    fn pod_gone(&self, _pod: &str) {}
}

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("failed to drain node {node} within {after:?}: {}", describe_pending(.blocked, .pending))]
    Timeout {
        node: String,
        after: Duration,
        blocked: Vec<BlockedPod>,
        pending: Vec<PodRef>,
    },
    #[error(
        "failed to {verb} node {node}: the controller did not apply {value:?} within {after:?}"
    )]
    ControllerTimeout {
        node: String,
        verb: &'static str,
        value: String,
        after: Duration,
    },
    #[error(transparent)]
    Api(#[from] anyhow::Error),
}

fn describe_pending(blocked: &[BlockedPod], pending: &[PodRef]) -> String {
    let mut parts: Vec<String> = blocked.iter().map(|b| b.to_string()).collect();
    for p in pending {
        if !blocked.iter().any(|b| &b.pod == p) {
            parts.push(format!("pod {p} has not terminated"));
        }
    }
    parts.join("; ")
}

/// What a finished drain did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DrainReport {
    pub evicted: Vec<PodRef>,
    /// Pods left alone, with why (DaemonSet, mirror pod, finished).
    pub skipped: Vec<(PodRef, &'static str)>,
    /// Whether this drain cordoned the node (false: it already was).
    pub cordoned: bool,
    pub not_required: bool,
}

fn pod_ref(p: &Pod) -> PodRef {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or_default(),
        p.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Why a drain leaves a pod alone, if it does.
pub fn skip_reason(p: &Pod) -> Option<&'static str> {
    let daemonset = p.metadata.owner_references.as_ref().is_some_and(|o| {
        o.iter()
            .any(|r| r.controller == Some(true) && r.kind == "DaemonSet")
    });
    if daemonset {
        return Some("DaemonSet-managed");
    }
    if p.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"))
    {
        return Some("mirror pod");
    }
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded") | Some("Failed")) {
        return Some("finished");
    }
    None
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Whether the MCD would skip draining: single-node topology (mco-protocol.md §1).
pub fn drain_not_required(node: &Node) -> bool {
    annotations::get(node, CONTROL_PLANE_TOPOLOGY) == Some("SingleReplica")
}

/// Drains our node. Cheap to construct; holds no state between drains.
pub struct Drainer<C> {
    cluster: Arc<C>,
    opts: DrainOptions,
    observer: Option<Arc<dyn DrainObserver>>,
    mcn: Option<Arc<McnWriter<C>>>,
}

impl<C> std::fmt::Debug for Drainer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drainer").field("opts", &self.opts).finish()
    }
}

impl<C: Cluster + 'static> Drainer<C> {
    pub fn new(cluster: Arc<C>, opts: DrainOptions) -> Self {
        Drainer {
            cluster,
            opts,
            observer: None,
            mcn: None,
        }
    }

    pub fn with_observer(mut self, observer: Arc<dyn DrainObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Report progress in the MachineConfigNode's `Drained` condition too.
    pub fn with_mcn(mut self, mcn: Arc<McnWriter<C>>) -> Self {
        self.mcn = Some(mcn);
        self
    }

    async fn event(&self, ev: NodeEvent) {
        if let Err(e) = self.cluster.emit_event(&ev).await {
            tracing::warn!(error = %format!("{e:#}"), reason = ev.reason.as_str(), "could not record event");
        }
    }

    async fn mcn_drained(&self, node: &Node, status: Status, message: String) {
        if let Some(mcn) = &self.mcn {
            let change = ConditionChange::child(
                ConditionType::UpdateExecuted,
                ConditionType::Drained,
                status,
                message,
            );
            if let Err(e) = mcn.update(node, &[change]).await {
                tracing::warn!(error = %format!("{e:#}"), "could not update the MachineConfigNode");
            }
        }
    }

    /// Cordon, recording that we did (an existing cordon by someone else stays theirs).
    pub async fn cordon(&self) -> Result<(Node, bool), DrainError> {
        let node = self.cluster.get_node().await?;
        let unschedulable = node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        if unschedulable {
            return Ok((node, false));
        }
        // The marker goes first: a crash between the two writes must not leave our cordon unowned.
        self.cluster
            .patch_node_annotations(
                &AnnotationChanges::new()
                    .set(CORDONED_BY, CORDONED_BY_VALUE)
                    .0,
            )
            .await?;
        self.event(NodeEvent::normal(
            EventReason::Cordon,
            format!("Cordoned node {}", self.cluster.node_name()),
        ))
        .await;
        let node = self.cluster.set_unschedulable(true).await?;
        Ok((node, true))
    }

    /// Uncordon, but only a cordon this daemon made. Returns whether it uncordoned.
    pub async fn uncordon(&self) -> Result<bool, DrainError> {
        let node = self.cluster.get_node().await?;
        if annotations::get(&node, CORDONED_BY) != Some(CORDONED_BY_VALUE) {
            return Ok(false);
        }
        self.cluster.set_unschedulable(false).await?;
        self.cluster
            .patch_node_annotations(&AnnotationChanges::new().delete(CORDONED_BY).0)
            .await?;
        self.event(NodeEvent::normal(
            EventReason::Uncordon,
            format!("Uncordoned node {}", self.cluster.node_name()),
        ))
        .await;
        Ok(true)
    }

    /// `self` mode: cordon, evict, wait. Idempotent: re-running resumes a drain.
    pub async fn drain(&self) -> Result<DrainReport, DrainError> {
        let (node, cordoned) = self.cordon().await?;
        let name = self.cluster.node_name().to_string();
        let pods = self.cluster.list_pods_on_node().await?;
        let mut report = DrainReport {
            cordoned,
            ..Default::default()
        };
        let mut targets = Vec::new();
        for p in pods {
            match skip_reason(&p) {
                Some(why) => report.skipped.push((pod_ref(&p), why)),
                None => targets.push(p),
            }
        }
        self.event(NodeEvent::normal(
            EventReason::Drain,
            format!("Draining node {name}: evicting {} pods", targets.len()),
        ))
        .await;
        self.mcn_drained(&node, Status::Unknown, format!("Draining node {name}"))
            .await;
        let blocked: Arc<Mutex<HashMap<PodRef, BlockedPod>>> = Arc::default();
        let waiting: Arc<Mutex<HashMap<PodRef, String>>> = Arc::default();
        let work = self.evict_and_wait(&node, targets.clone(), blocked.clone(), waiting.clone());
        match tokio::time::timeout(self.opts.timeout, work).await {
            Ok(result) => {
                report.evicted = result?;
            }
            Err(_) => {
                let mut blocked: Vec<BlockedPod> =
                    blocked.lock().expect("lock").values().cloned().collect();
                blocked.sort_by(|a, b| a.pod.cmp(&b.pod));
                let mut pending: Vec<PodRef> =
                    waiting.lock().expect("lock").keys().cloned().collect();
                pending.extend(blocked.iter().map(|b| b.pod.clone()));
                pending.sort();
                pending.dedup();
                let err = DrainError::Timeout {
                    node: name.clone(),
                    after: self.opts.timeout,
                    blocked,
                    pending,
                };
                self.event(NodeEvent::warning(
                    EventReason::FailedToDrain,
                    err.to_string(),
                ))
                .await;
                self.mcn_drained(&node, Status::Unknown, err.to_string())
                    .await;
                return Err(err);
            }
        }
        self.event(NodeEvent::normal(
            EventReason::Drain,
            format!("Drain request received, successfully drained node {name}"),
        ))
        .await;
        self.mcn_drained(&node, Status::True, format!("Drained node {name}"))
            .await;
        Ok(report)
    }

    async fn evict_and_wait(
        &self,
        node: &Node,
        targets: Vec<Pod>,
        blocked: Arc<Mutex<HashMap<PodRef, BlockedPod>>>,
        waiting: Arc<Mutex<HashMap<PodRef, String>>>,
    ) -> Result<Vec<PodRef>, DrainError> {
        let evictions_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let evict_all = async {
            let results: Vec<Result<Option<PodRef>, DrainError>> =
                futures::stream::iter(targets.into_iter().map(|p| {
                    let blocked = blocked.clone();
                    let waiting = waiting.clone();
                    async move { self.evict_one(node, &p, &blocked, &waiting).await }
                }))
                .buffer_unordered(self.opts.concurrency.max(1))
                .collect()
                .await;
            evictions_done.store(true, std::sync::atomic::Ordering::SeqCst);
            results
        };
        let wait_gone = async {
            loop {
                tokio::time::sleep(self.opts.poll_interval).await;
                let pending: HashMap<PodRef, String> = waiting.lock().expect("lock").clone();
                if !pending.is_empty() {
                    let on_node = self.cluster.list_pods_on_node().await?;
                    let present: HashMap<PodRef, String> = on_node
                        .iter()
                        .map(|p| (pod_ref(p), p.metadata.uid.clone().unwrap_or_default()))
                        .collect();
                    let mut w = waiting.lock().expect("lock");
                    for (pod, uid) in &pending {
                        // Gone, or replaced by a new pod under the same name (StatefulSet).
                        if present.get(pod) != Some(uid) {
                            w.remove(pod);
                            if let Some(o) = &self.observer {
                                o.pod_gone(pod);
                            }
                        }
                    }
                }
                if evictions_done.load(std::sync::atomic::Ordering::SeqCst)
                    && waiting.lock().expect("lock").is_empty()
                {
                    return Ok::<(), DrainError>(());
                }
            }
        };
        let (results, waited) = tokio::join!(evict_all, wait_gone);
        waited?;
        let mut evicted = Vec::new();
        for r in results {
            if let Some(p) = r? {
                evicted.push(p);
            }
        }
        evicted.sort();
        Ok(evicted)
    }

    /// Evict one pod until the API accepts (or says it is gone); PDB refusals are retried with
    /// backoff and reported once per pod.
    async fn evict_one(
        &self,
        node: &Node,
        pod: &Pod,
        blocked: &Mutex<HashMap<PodRef, BlockedPod>>,
        waiting: &Mutex<HashMap<PodRef, String>>,
    ) -> Result<Option<PodRef>, DrainError> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let r = pod_ref(pod);
        let mut delay = self.opts.retry_initial;
        loop {
            match self.cluster.evict_pod(ns, name).await {
                Ok(Eviction::Started) => {
                    let was_blocked = blocked.lock().expect("lock").remove(&r).is_some();
                    if was_blocked {
                        tracing::info!(pod = %r, "eviction no longer blocked");
                    }
                    waiting
                        .lock()
                        .expect("lock")
                        .insert(r.clone(), pod.metadata.uid.clone().unwrap_or_default());
                    if let Some(o) = &self.observer {
                        o.pod_evicted(&r);
                    }
                    return Ok(Some(r));
                }
                Ok(Eviction::Gone) => {
                    blocked.lock().expect("lock").remove(&r);
                    return Ok(None);
                }
                Ok(Eviction::Blocked { pdb, message }) => {
                    let first = {
                        let mut b = blocked.lock().expect("lock");
                        let first = !b.contains_key(&r);
                        b.entry(r.clone()).or_insert_with(|| BlockedPod {
                            pod: r.clone(),
                            pdb: pdb.clone(),
                            message: message.clone(),
                            since: now_rfc3339(),
                        });
                        first
                    };
                    if first {
                        let info = blocked.lock().expect("lock")[&r].clone();
                        tracing::warn!(pod = %r, pdb = %info.pdb.as_deref().unwrap_or("(not named)"), "eviction blocked by a disruption budget; retrying");
                        if let Some(o) = &self.observer {
                            o.pod_blocked(&info);
                        }
                        self.event(NodeEvent::warning(
                            EventReason::Drain,
                            format!("Drain blocked: {info}"),
                        ))
                        .await;
                        let all: Vec<String> = blocked
                            .lock()
                            .expect("lock")
                            .values()
                            .map(|b| b.to_string())
                            .collect();
                        self.mcn_drained(
                            node,
                            Status::Unknown,
                            format!(
                                "Draining node {}: {}",
                                self.cluster.node_name(),
                                all.join("; ")
                            ),
                        )
                        .await;
                    }
                }
                Err(e) => {
                    tracing::warn!(pod = %r, error = %format!("{e:#}"), "eviction failed; retrying");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.opts.retry_max);
        }
    }

    /// `controller` mode: ask the MCO drain controller to drain (`drain-<config>`) and wait.
    pub async fn controller_drain(&self, desired_config: &str) -> Result<DrainReport, DrainError> {
        let node = self.cluster.get_node().await?;
        if drain_not_required(&node) {
            self.event(NodeEvent::normal(
                EventReason::Drain,
                "Drain not required: single-node topology",
            ))
            .await;
            self.mcn_drained(
                &node,
                Status::False,
                format!("Drain not required for node {}", self.cluster.node_name()),
            )
            .await;
            return Ok(DrainReport {
                not_required: true,
                ..Default::default()
            });
        }
        let value = format!("drain-{desired_config}");
        if annotations::get(&node, LAST_APPLIED_DRAIN) == Some(value.as_str()) {
            return Ok(DrainReport::default());
        }
        self.event(NodeEvent::normal(
            EventReason::Cordon,
            format!(
                "Cordoned node {} (drain controller)",
                self.cluster.node_name()
            ),
        ))
        .await;
        self.event(NodeEvent::normal(
            EventReason::Drain,
            format!(
                "Requested drain of node {} from the controller",
                self.cluster.node_name()
            ),
        ))
        .await;
        self.handshake(
            "drain",
            value,
            self.opts.controller_drain_timeout,
            EventReason::FailedToDrain,
        )
        .await?;
        Ok(DrainReport {
            cordoned: true,
            ..Default::default()
        })
    }

    /// `controller` mode: ask for `uncordon-<config>` and wait (10 min by default).
    pub async fn controller_uncordon(&self, config: &str) -> Result<(), DrainError> {
        let node = self.cluster.get_node().await?;
        let value = format!("uncordon-{config}");
        if annotations::get(&node, LAST_APPLIED_DRAIN) == Some(value.as_str()) {
            return Ok(());
        }
        self.handshake(
            "uncordon",
            value,
            self.opts.controller_uncordon_timeout,
            EventReason::FailedToUncordon,
        )
        .await?;
        self.event(NodeEvent::normal(
            EventReason::Uncordon,
            format!("Uncordoned node {}", self.cluster.node_name()),
        ))
        .await;
        Ok(())
    }

    async fn handshake(
        &self,
        verb: &'static str,
        value: String,
        timeout: Duration,
        failure: EventReason,
    ) -> Result<(), DrainError> {
        self.cluster
            .patch_node_annotations(&AnnotationChanges::new().set(DESIRED_DRAIN, value.clone()).0)
            .await?;
        let wait = async {
            loop {
                tokio::time::sleep(self.opts.controller_poll_interval).await;
                match self.cluster.get_node().await {
                    Ok(n) if annotations::get(&n, LAST_APPLIED_DRAIN) == Some(value.as_str()) => {
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "reading the node while waiting for the drain controller")
                    }
                }
            }
        };
        if tokio::time::timeout(timeout, wait).await.is_err() {
            let err = DrainError::ControllerTimeout {
                node: self.cluster.node_name().to_string(),
                verb,
                value,
                after: timeout,
            };
            self.event(NodeEvent::warning(failure, err.to_string()))
                .await;
            return Err(err);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn pod(name: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("apps".into());
        p
    }

    #[test]
    fn daemonset_mirror_and_finished_pods_are_skipped() {
        let mut ds = pod("ds");
        ds.metadata.owner_references = Some(vec![OwnerReference {
            kind: "DaemonSet".into(),
            controller: Some(true),
            ..Default::default()
        }]);
        let mut mirror = pod("mirror");
        mirror.metadata.annotations =
            Some([("kubernetes.io/config.mirror".to_string(), "x".to_string())].into());
        let mut done = pod("done");
        done.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        let mut rs = pod("web");
        rs.metadata.owner_references = Some(vec![OwnerReference {
            kind: "ReplicaSet".into(),
            controller: Some(true),
            ..Default::default()
        }]);
        assert_eq!(skip_reason(&ds), Some("DaemonSet-managed"));
        assert_eq!(skip_reason(&mirror), Some("mirror pod"));
        assert_eq!(skip_reason(&done), Some("finished"));
        assert_eq!(skip_reason(&rs), None);
        assert_eq!(skip_reason(&pod("bare")), None);
    }

    #[test]
    fn timeout_message_names_blockers() {
        let err = DrainError::Timeout {
            node: "node1".into(),
            after: Duration::from_secs(3600),
            blocked: vec![BlockedPod {
                pod: "apps/web-1".into(),
                pdb: Some("web-pdb".into()),
                message: "m".into(),
                since: "2026-01-01T00:00:00Z".into(),
            }],
            pending: vec!["apps/web-1".into(), "apps/slow".into()],
        };
        assert_eq!(
            err.to_string(),
            "failed to drain node node1 within 3600s: pod apps/web-1 is blocked by PodDisruptionBudget web-pdb since 2026-01-01T00:00:00Z; pod apps/slow has not terminated"
        );
    }
}
