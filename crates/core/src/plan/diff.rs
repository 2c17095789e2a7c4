//! What changes between two Ignition configs: files, units and dropins, the core user's keys and password.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::config::paths::owned_by_cert_writer;
use crate::config::{Ignition, Unit};

/// Added, changed and removed items (paths, unit names, or `UNIT/DROPIN`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    pub add: Vec<String>,
    pub change: Vec<String>,
    pub remove: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.change.is_empty() && self.remove.is_empty()
    }
    /// Everything touched, in add, change, remove order.
    pub fn all(&self) -> impl Iterator<Item = &str> {
        self.add
            .iter()
            .chain(&self.change)
            .chain(&self.remove)
            .map(String::as_str)
    }
}

/// Files: compared by contents, mode and owner. Added/changed in the desired order, removed in the old.
pub fn files(old: &Ignition, new: &Ignition) -> Changes {
    let mut c = Changes::default();
    for f in &new.files {
        match old.file(&f.path) {
            None => c.add.push(f.path.clone()),
            Some(prev) if !prev.same_on_disk(f) => c.change.push(f.path.clone()),
            Some(_) => {}
        }
    }
    for f in &old.files {
        // A cert-writer file dropped from the config stays on disk: nothing changes (§4.2).
        if new.file(&f.path).is_none() && !owned_by_cert_writer(&f.path) {
            c.remove.push(f.path.clone());
        }
    }
    c
}

/// Units and dropins. A unit entry that only carries dropins is not itself a unit change.
pub fn units(old: &Ignition, new: &Ignition) -> Changes {
    let mut c = Changes::default();
    let empty = |name: &str| Unit {
        name: name.to_string(),
        contents: None,
        enabled: None,
        mask: false,
        dropins: vec![],
    };
    for u in &new.units {
        let prev = old.unit(&u.name).cloned().unwrap_or_else(|| empty(&u.name));
        unit_changes(&prev, u, &mut c);
    }
    for u in &old.units {
        if new.unit(&u.name).is_none() {
            unit_changes(u, &empty(&u.name), &mut c);
        }
    }
    c
}

fn unit_changes(old: &Unit, new: &Unit, c: &mut Changes) {
    match (old.has_unit_settings(), new.has_unit_settings()) {
        (false, true) => c.add.push(new.name.clone()),
        (true, false) => c.remove.push(new.name.clone()),
        (true, true) if !old.same_unit_settings(new) => c.change.push(new.name.clone()),
        _ => {}
    }
    let live = |u: &Unit| -> Vec<(String, String)> {
        u.dropins
            .iter()
            .filter_map(|d| d.contents.clone().map(|body| (d.name.clone(), body)))
            .collect()
    };
    let (old_d, new_d) = (live(old), live(new));
    for (name, body) in &new_d {
        match old_d.iter().find(|(n, _)| n == name) {
            None => c.add.push(format!("{}/{name}", new.name)),
            Some((_, prev)) if prev != body => c.change.push(format!("{}/{name}", new.name)),
            Some(_) => {}
        }
    }
    for (name, _) in &old_d {
        if !new_d.iter().any(|(n, _)| n == name) {
            c.remove.push(format!("{}/{name}", old.name));
        }
    }
}

/// Unit names touched by a unit change (dropin entries reduced to their unit), for policy matching.
pub fn touched_units(c: &Changes) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for item in c.all() {
        let unit = item.split('/').next().unwrap_or(item).to_string();
        if seen.insert(unit.clone()) {
            out.push(unit);
        }
    }
    out
}

/// SSH keys of `core` differ.
pub fn ssh_keys(old: &Ignition, new: &Ignition) -> bool {
    let keys = |i: &Ignition| {
        i.core_user()
            .map(|u| u.ssh_authorized_keys.clone())
            .unwrap_or_default()
    };
    keys(old) != keys(new)
}

/// Password hash of `core` differs.
pub fn password(old: &Ignition, new: &Ignition) -> bool {
    let hash = |i: &Ignition| i.core_user().and_then(|u| u.password_hash.clone());
    hash(old) != hash(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ignition::parse;
    use serde_json::json;

    fn ign(v: serde_json::Value) -> Ignition {
        parse(&v, "spec.config", &mut vec![]).unwrap()
    }

    fn file(path: &str, body: &str, mode: u32) -> serde_json::Value {
        json!({"path": path, "contents": {"source": format!("data:,{body}")}, "mode": mode})
    }

    #[test]
    fn file_changes() {
        let old = ign(
            json!({"ignition": {"version": "3.4.0"}, "storage": {"files": [
                file("/etc/same", "a", 420), file("/etc/body", "a", 420), file("/etc/mode", "a", 420), file("/etc/gone", "a", 420),
            ]}}),
        );
        let new = ign(
            json!({"ignition": {"version": "3.4.0"}, "storage": {"files": [
                file("/etc/new", "a", 420), file("/etc/same", "a", 420), file("/etc/body", "b", 420), file("/etc/mode", "a", 384),
            ]}}),
        );
        let c = files(&old, &new);
        assert_eq!(c.add, vec!["/etc/new"]);
        assert_eq!(c.change, vec!["/etc/body", "/etc/mode"]);
        assert_eq!(c.remove, vec!["/etc/gone"]);
    }

    #[test]
    fn cert_writer_files_are_never_removed() {
        let old = ign(
            json!({"ignition": {"version": "3.4.0"}, "storage": {"files": [
                file("/etc/kubernetes/kubelet-ca.crt", "ca", 420), file("/etc/docker/certs.d/r:5000/ca.crt", "ca", 420),
            ]}}),
        );
        assert!(files(&old, &Ignition::default()).is_empty());
    }

    #[test]
    fn owner_change_is_a_change() {
        let mk = |user: serde_json::Value| {
            ign(
                json!({"ignition": {"version": "3.4.0"}, "storage": {"files": [{"path": "/etc/x", "user": user}]}}),
            )
        };
        assert_eq!(
            files(&mk(json!({"name": "root"})), &mk(json!({"name": "core"}))).change,
            vec!["/etc/x"]
        );
    }

    #[test]
    fn unit_and_dropin_changes() {
        let old = ign(
            json!({"ignition": {"version": "3.4.0"}, "systemd": {"units": [
                {"name": "a.service", "contents": "A", "enabled": true},
                {"name": "kubelet.service", "dropins": [{"name": "10-x.conf", "contents": "x"}, {"name": "20-y.conf", "contents": "y"}]},
                {"name": "old.service", "contents": "O", "dropins": [{"name": "d.conf", "contents": "d"}]},
            ]}}),
        );
        let new = ign(
            json!({"ignition": {"version": "3.4.0"}, "systemd": {"units": [
                {"name": "a.service", "contents": "A", "enabled": false},
                {"name": "kubelet.service", "dropins": [{"name": "10-x.conf", "contents": "x2"}, {"name": "30-z.conf", "contents": "z"}, {"name": "20-y.conf", "contents": ""}]},
                {"name": "new.service", "mask": true},
            ]}}),
        );
        let c = units(&old, &new);
        assert_eq!(c.add, vec!["kubelet.service/30-z.conf", "new.service"]);
        assert_eq!(c.change, vec!["a.service", "kubelet.service/10-x.conf"]);
        assert_eq!(
            c.remove,
            vec![
                "kubelet.service/20-y.conf",
                "old.service",
                "old.service/d.conf"
            ]
        );
        assert_eq!(
            touched_units(&c),
            vec!["kubelet.service", "new.service", "a.service", "old.service"]
        );
    }

    #[test]
    fn users() {
        let u = |keys: serde_json::Value, hash: Option<&str>| {
            ign(
                json!({"ignition": {"version": "3.4.0"}, "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": keys, "passwordHash": hash}]}}),
            )
        };
        assert!(ssh_keys(
            &u(json!(["a"]), None),
            &u(json!(["a", "b"]), None)
        ));
        assert!(!ssh_keys(
            &u(json!(["a"]), None),
            &u(json!(["a"]), Some("$6$x"))
        ));
        assert!(password(
            &u(json!(["a"]), None),
            &u(json!(["a"]), Some("$6$x"))
        ));
        assert!(ssh_keys(&u(json!(["a"]), None), &Ignition::default()));
    }
}
