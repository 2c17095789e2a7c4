//! After the reboot: did the node boot what was staged (image, kernel arguments, packages, files)? If not,
//! stage once more; a second miss fails the update with the evidence, without a reboot loop.

use anyhow::Context;

use super::journal::Journal;
use super::update::{Executor, Verdict};
use super::verify;
use crate::cluster::{Cluster, EventReason, NodeEvent};
use crate::config::MachineConfig;
use crate::host;
use crate::os::OsBackend;
use crate::systemd::ServiceManager;

impl<C, O, S> Executor<'_, C, O, S>
where
    C: Cluster + 'static,
    O: OsBackend,
    S: ServiceManager,
{
    pub(super) async fn verify(
        &self,
        j: &mut Journal,
        target: &MachineConfig,
    ) -> anyhow::Result<Verdict> {
        let status = self.os.status().await.context("reading the OS status")?;
        let mut boot_problems = Vec::new();
        if let Some(p) = verify::os_problem(target, status.booted.as_ref()) {
            boot_problems.push(p);
        }
        if j.progress.target.image.is_none() {
            boot_problems.extend(verify::packages_problem(target, status.booted.as_ref()));
        }
        let missing = verify::missing_kargs(target, &self.env.cmdline(&status)?);
        if !missing.is_empty() {
            boot_problems.push(format!(
                "kernel arguments missing from the running kernel: {}",
                missing.join(" ")
            ));
        }
        if !boot_problems.is_empty() {
            if let Some(f) = self.finalize_failure {
                // As the MCD appends it to validation errors (`syncFinalizationFailureAnnotation`).
                boot_problems.push(format!(
                    "possible root cause: the previous boot's ostree-finalize-staged failed: {f}"
                ));
            }
            let evidence = boot_problems.join("; ");
            if !j.progress.reboot {
                // Nothing was rebooted: the OS is not what the config pins, and re-staging cannot be right.
                anyhow::bail!(
                    "the running OS does not match config {}: {evidence}",
                    target.name
                );
            }
            if j.progress.restage(evidence.clone()).is_ok() {
                tracing::warn!(evidence = %evidence, "the node did not boot what was staged (power loss or a failed ostree-finalize-staged?); staging it once more");
                if let Some(side) = self.cluster {
                    side.event(NodeEvent::warning(
                        EventReason::FailedFinalization,
                        format!("Booted the previous deployment: {evidence}; staging again once"),
                    ))
                    .await;
                }
                return Ok(Verdict::Restage);
            }
            let first = j.progress.restage_reason.clone().unwrap_or_default();
            let reason = format!(
                "the node did not boot config {} after staging it twice: {evidence} (first attempt: {first}); check `journalctl -b -1 -u ostree-finalize-staged`, then touch {} to try again",
                target.name,
                crate::config::paths::FORCEFILE
            );
            j.progress.fail(reason.clone());
            return Ok(Verdict::Failed(reason));
        }
        let (root, t) = (self.root.clone(), target.clone());
        let mismatches = tokio::task::spawn_blocking(move || host::validate(&root, &t))
            .await
            .context("the validation task panicked")??;
        if !mismatches.is_empty() {
            if let Some(side) = self.cluster {
                side.event(NodeEvent::warning(
                    EventReason::OnDiskStateValidationFailed,
                    verify::describe_mismatches(&target.name, &mismatches),
                ))
                .await;
            }
            anyhow::bail!("{}", verify::describe_mismatches(&target.name, &mismatches));
        }
        Ok(Verdict::Good)
    }
}
