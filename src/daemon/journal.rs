//! The progress journal: the update in flight, written atomically under `/etc/machine-config-daemon/` at
//! every phase boundary, so a crash, SIGTERM or reboot resumes it instead of starting over.
//!
//! It holds everything a resume needs without the API server (first boot has none): the phase, the plan as
//! computed, and both MachineConfigs. It is mode 0600: a MachineConfig can carry a password hash.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::state::Progress;
use crate::config::MachineConfig;
use crate::host::{Root, odc};
use crate::plan::Plan;

/// Where the journal lives.
pub const JOURNAL: &str = "/etc/machine-config-daemon/update-in-progress.json";

/// One update in flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Journal {
    pub progress: Progress,
    pub plan: Plan,
    /// The config the update starts from (raw MachineConfig JSON).
    pub from: Value,
    /// The config it moves to, as received (without the `desiredImage` override, which is in the target).
    pub target: Value,
}

impl Journal {
    pub fn new(
        progress: Progress,
        plan: Plan,
        from: &MachineConfig,
        target: &MachineConfig,
    ) -> Self {
        Journal {
            progress,
            plan,
            from: from.raw.clone(),
            target: target.raw.clone(),
        }
    }

    /// The starting config (an empty document means the empty config of a first boot).
    pub fn from_config(&self) -> anyhow::Result<MachineConfig> {
        if self.from.is_null() || self.from.as_object().is_some_and(|o| o.is_empty()) {
            return Ok(MachineConfig::empty());
        }
        MachineConfig::from_value(self.from.clone())
            .map_err(|e| anyhow::anyhow!("the journal's starting config: {e}"))
    }

    /// The target config with the OS image the update deploys (`desiredImage` wins over `osImageURL`).
    pub fn target_config(&self) -> anyhow::Result<MachineConfig> {
        let mc = MachineConfig::from_value(self.target.clone())
            .map_err(|e| anyhow::anyhow!("the journal's target config: {e}"))?;
        with_target_image(mc, self.progress.target.image.as_deref())
    }
}

impl Journal {
    /// The target's files, units and users with the OS part (`osImageURL`, kernel arguments, kernel type,
    /// extensions) of the starting config: what a node holds when the host part was written but the new
    /// OS never booted.
    pub fn target_files_with_starting_os(&self) -> anyhow::Result<MachineConfig> {
        const OS_FIELDS: [&str; 4] = ["osImageURL", "kernelArguments", "kernelType", "extensions"];
        let mut doc = self.target.clone();
        let Some(spec) = doc.get_mut("spec").and_then(|s| s.as_object_mut()) else {
            anyhow::bail!("the journal's target config has no spec");
        };
        for field in OS_FIELDS {
            match self.from.get("spec").and_then(|s| s.get(field)) {
                Some(v) => spec.insert(field.to_string(), v.clone()),
                None => spec.remove(field),
            };
        }
        MachineConfig::from_value(doc)
            .map_err(|e| anyhow::anyhow!("the journal's target config: {e}"))
    }
}

/// Apply an on-cluster-layering image to a config (`desiredImage` overrides `osImageURL`).
pub fn with_target_image(mc: MachineConfig, image: Option<&str>) -> anyhow::Result<MachineConfig> {
    match image {
        None => Ok(mc),
        Some(image) => {
            let image = crate::config::ImageRef::parse(image)
                .map_err(|e| anyhow::anyhow!("the node's desiredImage annotation: {e}"))?;
            Ok(mc.with_os_image(image))
        }
    }
}

/// Read the journal; `None` when no update is in flight.
pub fn load(root: &Root) -> anyhow::Result<Option<Journal>> {
    let Some(bytes) = root.read_optional(JOURNAL)? else {
        return Ok(None);
    };
    let journal = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is corrupt; move it away to start the update over",
            root.display(JOURNAL)
        )
    })?;
    Ok(Some(journal))
}

/// Record the journal durably.
pub fn save(root: &Root, journal: &Journal) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec(journal).context("serializing the journal")?;
    odc::write_state_file(root, JOURNAL, bytes, 0o600)
}

/// The update is over (done or replaced).
pub fn remove(root: &Root) -> anyhow::Result<()> {
    odc::remove_state_file(root, JOURNAL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::state::Target;
    use crate::plan::{PlanOptions, plan};

    fn mc(name: &str, image: &str) -> MachineConfig {
        MachineConfig::from_value(serde_json::json!({
            "apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
            "metadata": {"name": name},
            "spec": {"osImageURL": image, "config": {"ignition": {"version": "3.4.0"}, "passwd": {"users": [{"name": "core", "passwordHash": "$6$x$y"}]}}}
        }))
        .unwrap()
    }

    #[test]
    fn roundtrip_on_disk_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        assert!(load(&root).unwrap().is_none());
        let (a, b) = (mc("a", "quay.io/os/a:1"), mc("b", "quay.io/os/b:1"));
        let p = plan(&a, &b, None, &Default::default());
        let _ = PlanOptions::default();
        let progress = Progress::planned(
            Target { config: "a".into(), image: None },
            Target { config: "b".into(), image: Some("quay.io/os/ocl@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into()) },
            p.reboot,
            1,
        );
        let j = Journal::new(progress, p.clone(), &a, &b);
        save(&root, &j).unwrap();
        let back = load(&root).unwrap().unwrap();
        assert_eq!(back.plan.actions, p.actions);
        assert_eq!(back.from_config().unwrap().name, "a");
        // the layering image overrides the MC's image
        assert!(
            back.target_config()
                .unwrap()
                .os_image()
                .unwrap()
                .starts_with("quay.io/os/ocl@sha256:")
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(JOURNAL.trim_start_matches('/')))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        remove(&root).unwrap();
        assert!(load(&root).unwrap().is_none());
        remove(&root).unwrap();
    }

    #[test]
    fn target_files_with_the_starting_os() {
        let mut a = mc("a", "quay.io/os/a:1").raw;
        a["spec"]["kernelArguments"] = serde_json::json!(["nosmt"]);
        let mut b = mc("b", "quay.io/os/b:1").raw;
        b["spec"]["kernelArguments"] = serde_json::json!(["audit=1"]);
        b["spec"]["kernelType"] = "realtime".into();
        b["spec"]["config"]["storage"] =
            serde_json::json!({"files": [{"path": "/etc/b", "contents": {"source": "data:,b"}}]});
        let (a, b) = (
            MachineConfig::from_value(a).unwrap(),
            MachineConfig::from_value(b).unwrap(),
        );
        let progress = Progress::planned(
            Target {
                config: "a".into(),
                image: None,
            },
            Target {
                config: "b".into(),
                image: None,
            },
            true,
            1,
        );
        let p = plan(&a, &b, None, &Default::default());
        let j = Journal::new(progress, p, &a, &b);
        let disk = j.target_files_with_starting_os().unwrap();
        assert_eq!(disk.name, "b");
        assert_eq!(disk.os_image(), Some("quay.io/os/a:1"));
        assert_eq!(disk.kernel_arguments, ["nosmt"]);
        assert_eq!(disk.kernel_type, crate::config::KernelType::Default);
        assert!(disk.ignition.file("/etc/b").is_some(), "the target's files");
    }

    #[test]
    fn corrupt_journal_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/machine-config-daemon")).unwrap();
        std::fs::write(
            dir.path().join(JOURNAL.trim_start_matches('/')),
            "{not json",
        )
        .unwrap();
        let root = Root::open(dir.path()).unwrap();
        let err = load(&root).unwrap_err().to_string();
        assert!(err.contains("update-in-progress.json is corrupt"), "{err}");
    }
}
