//! Events about our node, shaped like client-go's recorder emits them for the MCD (source
//! component `machineconfigdaemon`, namespace `default`, involvedObject uid = node name).

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

pub const SOURCE_COMPONENT: &str = "machineconfigdaemon";

/// The MCD's event reasons (mco-protocol.md §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventReason {
    Cordon,
    Drain,
    FailedToDrain,
    Uncordon,
    FailedToUncordon,
    Reboot,
    SkipReboot,
    NodeDone,
    BootResync,
    FailedToReconcile,
    OnDiskStateValidationFailed,
    PreflightConfigDriftCheckFailed,
    ServiceReload,
    ServiceRestart,
    FailedServiceReload,
    FailedServiceRestart,
    OSUpdateStarted,
    OSUpdateStaged,
    OSUpgradeApplied,
    OSUpgradeSkipped,
    InClusterUpgrade,
    ConfigDriftDetected,
    ConfigDriftMonitorStarted,
    ConfigDriftMonitorStopped,
    AddSigtermProtection,
    RemoveSigtermProtection,
    GotSigtermDuringUpdate,
    FailedFinalization,
    /// Ours: OS image download progress (at most one per 10% or 30 s).
    OSImagePullProgress,
    /// Ours: the health checks after the boot into a new deployment passed.
    HealthGatePassed,
    /// Ours: a wanted health check failed (it only warns).
    HealthCheckWarning,
    /// Ours: a required check failed or the node was not Ready in time: rolling back.
    HealthGateFailed,
    /// Ours: the node is back on the previous deployment after a failed health gate.
    RolledBack,
}

impl EventReason {
    pub fn as_str(self) -> &'static str {
        use EventReason::*;
        match self {
            Cordon => "Cordon",
            Drain => "Drain",
            FailedToDrain => "FailedToDrain",
            Uncordon => "Uncordon",
            FailedToUncordon => "FailedToUncordon",
            Reboot => "Reboot",
            SkipReboot => "SkipReboot",
            NodeDone => "NodeDone",
            BootResync => "BootResync",
            FailedToReconcile => "FailedToReconcile",
            OnDiskStateValidationFailed => "OnDiskStateValidationFailed",
            PreflightConfigDriftCheckFailed => "PreflightConfigDriftCheckFailed",
            ServiceReload => "ServiceReload",
            ServiceRestart => "ServiceRestart",
            FailedServiceReload => "FailedServiceReload",
            FailedServiceRestart => "FailedServiceRestart",
            OSUpdateStarted => "OSUpdateStarted",
            OSUpdateStaged => "OSUpdateStaged",
            OSUpgradeApplied => "OSUpgradeApplied",
            OSUpgradeSkipped => "OSUpgradeSkipped",
            InClusterUpgrade => "InClusterUpgrade",
            ConfigDriftDetected => "ConfigDriftDetected",
            ConfigDriftMonitorStarted => "ConfigDriftMonitorStarted",
            ConfigDriftMonitorStopped => "ConfigDriftMonitorStopped",
            AddSigtermProtection => "AddSigtermProtection",
            RemoveSigtermProtection => "RemoveSigtermProtection",
            GotSigtermDuringUpdate => "GotSigtermDuringUpdate",
            FailedFinalization => "FailedFinalization",
            OSImagePullProgress => "OSImagePullProgress",
            HealthGatePassed => "HealthGatePassed",
            HealthCheckWarning => "HealthCheckWarning",
            HealthGateFailed => "HealthGateFailed",
            RolledBack => "RolledBack",
        }
    }
}

/// One event about our node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeEvent {
    pub reason: EventReason,
    pub message: String,
    /// `Warning` instead of `Normal`.
    pub warning: bool,
}

impl NodeEvent {
    pub fn normal(reason: EventReason, message: impl Into<String>) -> Self {
        NodeEvent {
            reason,
            message: message.into(),
            warning: false,
        }
    }

    pub fn warning(reason: EventReason, message: impl Into<String>) -> Self {
        NodeEvent {
            reason,
            message: message.into(),
            warning: true,
        }
    }

    /// The core/v1 Event object for `node`.
    pub fn to_event(&self, node: &str) -> Event {
        let ts = k8s_openapi::jiff::Timestamp::now();
        let now = Time(ts);
        // client-go names events `<object>.<unix nanos in hex>`.
        let nanos = ts.as_nanosecond();
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{node}.{nanos:x}")),
                namespace: Some("default".into()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                kind: Some("Node".into()),
                name: Some(node.into()),
                uid: Some(node.into()),
                api_version: Some("v1".into()),
                ..Default::default()
            },
            reason: Some(self.reason.as_str().into()),
            message: Some(self.message.clone()),
            type_: Some(if self.warning { "Warning" } else { "Normal" }.into()),
            source: Some(EventSource {
                component: Some(SOURCE_COMPONENT.into()),
                host: Some(node.into()),
            }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            reporting_component: Some(SOURCE_COMPONENT.into()),
            reporting_instance: Some(node.into()),
            ..Default::default()
        }
    }
}
