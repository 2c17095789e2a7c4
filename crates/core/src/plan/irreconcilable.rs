//! The MachineConfigNode's `status.irreconcilableChanges`: how the storage sections a running node
//! never changes (disks, RAID, filesystems, LUKS) differ between the node's install-time config and
//! the config it is at. An admin may let such changes through with
//! `MachineConfiguration.spec.irreconcilableValidationOverrides.storage`; they are accepted, not
//! applied, and this report says what the node does not have.
//!
//! Mirrors MCO `pkg/daemon/irreconcilable_diff_reporter.go` (`GenerateReport`,
//! `patchDaemonManagedFields`, `getPathStringFromJSONPath`), which compares the two configs with
//! the `jd` JSON diff and reports one entry per difference: `fieldPath` like
//! `spec.config.storage.disks[0].device`, and `diff` the removed (`- `) and added (`+ `) JSON values.
//! Differences from `jd`: arrays are compared index by index (no longest-common-subsequence
//! alignment), and the report is fitted to the CRD's limits (at most 32 entries, `fieldPath` at
//! most 70 characters of `[A-Za-z0-9.[]]`, `diff` at most 4096 characters) by reporting at a
//! coarser path instead of being rejected by the API server.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::MachineConfig;

/// One entry of `status.irreconcilableChanges`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IrreconcilableChange {
    pub field_path: String,
    pub diff: String,
}

/// CRD limits of `irreconcilableChanges`.
pub const MAX_ENTRIES: usize = 32;
pub const MAX_FIELD_PATH: usize = 70;
pub const MAX_DIFF: usize = 4096;

/// Differences of the storage sections (disks, raid, filesystems, luks) from `base` (the node's
/// install-time config) to `target`. Empty when they agree.
pub fn report(base: &MachineConfig, target: &MachineConfig) -> Vec<IrreconcilableChange> {
    let (b, t) = (&base.ignition.fixed, &target.ignition.fixed);
    // The order of patchDaemonManagedFields' copy; jd walks object keys sorted, which puts them in
    // this order too (disks, filesystems, luks, raid).
    let sections = [
        ("disks", &b.disks, &t.disks),
        ("filesystems", &b.filesystems, &t.filesystems),
        ("luks", &b.luks, &t.luks),
        ("raid", &b.raid, &t.raid),
    ];
    let mut out = Vec::new();
    for (name, old, new) in sections {
        diff_values(&format!("spec.config.storage.{name}"), old, new, &mut out);
    }
    if out.len() > MAX_ENTRIES {
        // Too many to list: one entry per section that differs.
        out.clear();
        for (name, old, new) in sections {
            if old != new {
                out.push(entry(&format!("spec.config.storage.{name}"), old, new));
            }
        }
    }
    out
}

fn diff_values(path: &str, old: &Value, new: &Value, out: &mut Vec<IrreconcilableChange>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            let children: Vec<String> = keys.iter().map(|k| format!("{path}.{k}")).collect();
            if children.iter().any(|c| !valid_path(c)) {
                out.push(entry(path, old, new));
                return;
            }
            for (k, child) in keys.iter().zip(&children) {
                let null = Value::Null;
                diff_values(
                    child,
                    a.get(*k).unwrap_or(&null),
                    b.get(*k).unwrap_or(&null),
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            let longest = a.len().max(b.len());
            if !valid_path(&format!("{path}[{}]", longest.saturating_sub(1))) {
                out.push(entry(path, old, new));
                return;
            }
            for i in 0..longest {
                let null = Value::Null;
                diff_values(
                    &format!("{path}[{i}]"),
                    a.get(i).unwrap_or(&null),
                    b.get(i).unwrap_or(&null),
                    out,
                );
            }
        }
        _ => out.push(entry(path, old, new)),
    }
}

fn valid_path(p: &str) -> bool {
    p.len() <= MAX_FIELD_PATH
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '[' | ']'))
}

/// `v` with every object's keys in sorted order, so a rendered value does not depend on whether
/// serde_json keeps insertion order (its `preserve_order` feature, which another crate may enable).
fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// `- old` / `+ new` lines, as `jd` renders a difference (a side that is absent has no line).
fn entry(path: &str, old: &Value, new: &Value) -> IrreconcilableChange {
    let mut diff = String::new();
    if !old.is_null() {
        diff.push_str(&format!("- {}\n", sorted(old)));
    }
    if !new.is_null() {
        diff.push_str(&format!("+ {}\n", sorted(new)));
    }
    if diff.len() > MAX_DIFF {
        let mut cut = MAX_DIFF - "…\n".len();
        while !diff.is_char_boundary(cut) {
            cut -= 1;
        }
        diff.truncate(cut);
        diff.push_str("…\n");
    }
    IrreconcilableChange {
        field_path: path.to_string(),
        diff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mc(storage: Value) -> MachineConfig {
        MachineConfig::from_value(json!({
            "apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
            "metadata": {"name": "x"},
            "spec": {"config": {"ignition": {"version": "3.4.0"}, "storage": storage}}
        }))
        .unwrap()
    }

    #[test]
    fn same_storage_reports_nothing() {
        let a = mc(json!({"disks": [{"device": "/dev/sdb", "wipeTable": true}]}));
        assert_eq!(report(&a, &a), vec![]);
        // Files are the daemon's business, not irreconcilable.
        let b = mc(json!({"disks": [{"device": "/dev/sdb", "wipeTable": true}],
            "files": [{"path": "/etc/x", "contents": {"source": "data:,x"}}]}));
        assert_eq!(report(&a, &b), vec![]);
    }

    #[test]
    fn each_difference_is_one_entry_with_its_path() {
        let base = mc(json!({
            "disks": [{"device": "/dev/sdb", "partitions": [{"label": "data", "sizeMiB": 100}]}],
            "filesystems": [{"device": "/dev/disk/by-partlabel/data", "format": "xfs", "path": "/var/data"}]
        }));
        let target = mc(json!({
            "disks": [{"device": "/dev/sdb", "partitions": [{"label": "data", "sizeMiB": 200}]},
                      {"device": "/dev/sdc"}],
            "filesystems": [{"device": "/dev/disk/by-partlabel/data", "format": "ext4", "path": "/var/data"}],
            "raid": [{"name": "md0", "level": "raid1", "devices": ["/dev/sdd", "/dev/sde"]}]
        }));
        let r = report(&base, &target);
        assert_eq!(
            r,
            vec![
                IrreconcilableChange {
                    field_path: "spec.config.storage.disks[0].partitions[0].sizeMiB".into(),
                    diff: "- 100\n+ 200\n".into()
                },
                IrreconcilableChange {
                    field_path: "spec.config.storage.disks[1]".into(),
                    diff: "+ {\"device\":\"/dev/sdc\"}\n".into()
                },
                IrreconcilableChange {
                    field_path: "spec.config.storage.filesystems[0].format".into(),
                    diff: "- \"xfs\"\n+ \"ext4\"\n".into()
                },
                IrreconcilableChange {
                    field_path: "spec.config.storage.raid".into(),
                    diff: "+ [{\"devices\":[\"/dev/sdd\",\"/dev/sde\"],\"level\":\"raid1\",\"name\":\"md0\"}]\n"
                        .into()
                },
            ]
        );
    }

    #[test]
    fn report_fits_the_crd_limits() {
        // A key the fieldPath pattern does not allow: reported at its parent.
        let base = mc(json!({"luks": [{"name": "root", "clevis": {"custom": {"pin": "tpm2"}}}]}));
        let target = mc(
            json!({"luks": [{"name": "root", "clevis": {"custom": {"pin": "tang", "needs_network": true}}}]}),
        );
        let r = report(&base, &target);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].field_path, "spec.config.storage.luks[0].clevis.custom");
        // Many differences: one entry per section.
        let disks = |n: usize, dev: &str| -> Value {
            (0..n)
                .map(|i| json!({"device": format!("{dev}{i}")}))
                .collect()
        };
        let r = report(
            &mc(json!({"disks": disks(200, "/dev/a")})),
            &mc(json!({"disks": disks(200, "/dev/b")})),
        );
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].field_path, "spec.config.storage.disks");
        assert!(r[0].diff.len() <= MAX_DIFF && r[0].diff.ends_with("…\n"));
        for e in &r {
            assert!(valid_path(&e.field_path) && e.field_path.starts_with("spec."));
            assert!(!e.diff.is_empty());
        }
    }
}
