//! Is a `/etc/containers/registries.conf` change safe without a drain? (`mco-protocol.md` §4.3)
//!
//! Safe changes only add digest-only mirrors or registries whose mirrors are all digest-only; anything
//! that could change what a tag resolves to needs a drain. Both files are decoded as the v2 format, unknown
//! keys ignored, as the MCD's `sysregistriesv2` decoding does.

use std::collections::BTreeMap;

use serde::Deserialize;

const DIGEST_ONLY: &str = "digest-only";

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RegistriesConf {
    #[serde(default)]
    unqualified_search_registries: Vec<String>,
    #[serde(default, rename = "registry")]
    registries: Vec<Registry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Registry {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    pull_from_mirror: String,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default, rename = "mirror")]
    mirrors: Vec<Mirror>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Mirror {
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    pull_from_mirror: String,
}

impl Registry {
    /// Registries are matched by prefix, else location.
    fn scope(&self) -> &str {
        if self.prefix.is_empty() {
            &self.location
        } else {
            &self.prefix
        }
    }
    fn mirror(&self, location: &str) -> Option<&Mirror> {
        self.mirrors.iter().find(|m| m.location == location)
    }
    fn all_mirrors_digest_only(&self) -> bool {
        if self.mirrors.is_empty() {
            return self.mirror_by_digest_only;
        }
        self.mirrors
            .iter()
            .all(|m| m.pull_from_mirror == DIGEST_ONLY)
    }
}

/// The verdict for a registries.conf change, with the reason an admin can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub safe: bool,
    pub reason: String,
}

impl Verdict {
    fn unsafe_because(reason: String) -> Self {
        Verdict {
            safe: false,
            reason,
        }
    }
}

/// An unparsable registries.conf.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid TOML in registries.conf: {0}")]
pub struct ParseError(pub String);

fn parse(data: &[u8]) -> Result<RegistriesConf, ParseError> {
    let text = std::str::from_utf8(data).map_err(|_| ParseError("not valid UTF-8".into()))?;
    toml::from_str(text).map_err(|e| ParseError(e.message().to_string()))
}

/// Check that a registries.conf document parses (for validating the desired config).
pub fn check(data: &[u8]) -> Result<(), ParseError> {
    parse(data).map(|_| ())
}

/// Compare the old and new contents (empty = the file is absent).
pub fn classify(old: &[u8], new: &[u8]) -> Result<Verdict, ParseError> {
    let old = parse(old)?;
    let new = parse(new)?;
    Ok(compare(&old, &new))
}

fn compare(old: &RegistriesConf, new: &RegistriesConf) -> Verdict {
    // Search order matters: an existing entry may not move or disappear.
    let (o, n) = (
        &old.unqualified_search_registries,
        &new.unqualified_search_registries,
    );
    if o.len() > n.len() {
        return Verdict::unsafe_because("unqualified-search-registries lost an entry".into());
    }
    if let Some((i, reg)) = o.iter().enumerate().find(|(i, reg)| n[*i] != **reg) {
        return Verdict::unsafe_because(format!(
            "unqualified-search-registries entry {reg:?} moved or changed (position {i})"
        ));
    }
    let old_map: BTreeMap<&str, &Registry> =
        old.registries.iter().map(|r| (r.scope(), r)).collect();
    let new_map: BTreeMap<&str, &Registry> =
        new.registries.iter().map(|r| (r.scope(), r)).collect();
    if let Some(scope) = old_map.keys().find(|s| !new_map.contains_key(*s)) {
        return Verdict::unsafe_because(format!("registry {scope:?} was removed"));
    }
    for (scope, new_reg) in &new_map {
        match old_map.get(scope) {
            Some(old_reg) if old_reg == new_reg => {}
            Some(old_reg) => {
                if let Some(v) = compare_registry(scope, old_reg, new_reg) {
                    return v;
                }
            }
            None => {
                if !new_reg.all_mirrors_digest_only() {
                    return Verdict::unsafe_because(format!(
                        "registry {scope:?} was added with a mirror that does not set pull-from-mirror = \"digest-only\""
                    ));
                }
            }
        }
    }
    Verdict {
        safe: true,
        reason: "only digest-only mirrors or registries were added".into(),
    }
}

fn compare_registry(scope: &str, old: &Registry, new: &Registry) -> Option<Verdict> {
    let changed = |what: &str, from: String, to: String| {
        Some(Verdict::unsafe_because(format!(
            "{what} of registry {scope:?} changed from {from} to {to}"
        )))
    };
    if old.prefix != new.prefix {
        return changed(
            "prefix",
            format!("{:?}", old.prefix),
            format!("{:?}", new.prefix),
        );
    }
    if old.location != new.location {
        return changed(
            "location",
            format!("{:?}", old.location),
            format!("{:?}", new.location),
        );
    }
    if old.blocked != new.blocked {
        return changed("blocked", old.blocked.to_string(), new.blocked.to_string());
    }
    if old.insecure != new.insecure {
        return changed(
            "insecure",
            old.insecure.to_string(),
            new.insecure.to_string(),
        );
    }
    if let Some(m) = old
        .mirrors
        .iter()
        .find(|m| new.mirror(&m.location).is_none())
    {
        return Some(Verdict::unsafe_because(format!(
            "mirror {:?} of registry {scope:?} was removed",
            m.location
        )));
    }
    for m in &new.mirrors {
        match old.mirror(&m.location) {
            Some(prev) => {
                if m.pull_from_mirror != prev.pull_from_mirror && m.pull_from_mirror != DIGEST_ONLY
                {
                    return Some(Verdict::unsafe_because(format!(
                        "pull-from-mirror of mirror {:?} changed from {:?} to {:?}",
                        m.location, prev.pull_from_mirror, m.pull_from_mirror
                    )));
                }
            }
            None => {
                if m.pull_from_mirror != DIGEST_ONLY && !new.mirror_by_digest_only {
                    return Some(Verdict::unsafe_because(format!(
                        "mirror {:?} was added to registry {scope:?} without pull-from-mirror = \"digest-only\"",
                        m.location
                    )));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BASE: &str = r#"
unqualified-search-registries = ["registry.access.redhat.com", "docker.io"]

[[registry]]
prefix = ""
location = "quay.io/openshift"

[[registry.mirror]]
location = "mirror.local/openshift"
pull-from-mirror = "digest-only"
"#;

    fn verdict(old: &str, new: &str) -> Verdict {
        classify(old.as_bytes(), new.as_bytes()).unwrap()
    }

    fn with_registry(extra: &str) -> String {
        format!("{BASE}\n{extra}")
    }

    /// Every rule of §4.3, one row each: (what, new file, safe?, reason fragment).
    #[test]
    fn safety_table() {
        let rows: Vec<(&str, String, bool, &str)> = vec![
            ("identical", BASE.to_string(), true, ""),
            ("search registry appended", BASE.replace("\"docker.io\"]", "\"docker.io\", \"quay.io\"]"), true, ""),
            ("search registry removed", BASE.replace(", \"docker.io\"]", "]"), false, "lost an entry"),
            ("search registries reordered", BASE.replace("[\"registry.access.redhat.com\", \"docker.io\"]", "[\"docker.io\", \"registry.access.redhat.com\"]"), false, "moved or changed"),
            ("registry removed", "unqualified-search-registries = [\"registry.access.redhat.com\", \"docker.io\"]\n".into(), false, "was removed"),
            ("location changed", BASE.replace("location = \"quay.io/openshift\"", "location = \"quay.io/other\""), false, "was removed"),
            ("blocked changed", BASE.replace("location = \"quay.io/openshift\"", "location = \"quay.io/openshift\"\nblocked = true"), false, "blocked"),
            ("insecure changed", BASE.replace("location = \"quay.io/openshift\"", "location = \"quay.io/openshift\"\ninsecure = true"), false, "insecure"),
            ("mirror removed", BASE.replace("[[registry.mirror]]\nlocation = \"mirror.local/openshift\"\npull-from-mirror = \"digest-only\"\n", ""), false, "mirror \"mirror.local/openshift\" of registry"),
            ("digest-only mirror added", with_registry("").replace("pull-from-mirror = \"digest-only\"\n", "pull-from-mirror = \"digest-only\"\n\n[[registry.mirror]]\nlocation = \"mirror2.local/openshift\"\npull-from-mirror = \"digest-only\"\n"), true, ""),
            ("tag mirror added", BASE.replace("pull-from-mirror = \"digest-only\"\n", "pull-from-mirror = \"digest-only\"\n\n[[registry.mirror]]\nlocation = \"mirror2.local/openshift\"\n"), false, "without pull-from-mirror"),
            ("tag mirror added to mirror-by-digest-only registry", BASE.replace("location = \"quay.io/openshift\"", "location = \"quay.io/openshift\"\nmirror-by-digest-only = true").replace("pull-from-mirror = \"digest-only\"\n", "pull-from-mirror = \"digest-only\"\n\n[[registry.mirror]]\nlocation = \"mirror2.local/openshift\"\n"), true, ""),
            ("mirror switched away from digest-only", BASE.replace("pull-from-mirror = \"digest-only\"", "pull-from-mirror = \"all\""), false, "pull-from-mirror of mirror"),
            ("new registry, all mirrors digest-only", with_registry("[[registry]]\nlocation = \"registry.example.com\"\n[[registry.mirror]]\nlocation = \"m.local/x\"\npull-from-mirror = \"digest-only\"\n"), true, ""),
            ("new registry, a tag mirror", with_registry("[[registry]]\nlocation = \"registry.example.com\"\n[[registry.mirror]]\nlocation = \"m.local/x\"\npull-from-mirror = \"tag-only\"\n"), false, "was added with a mirror"),
            ("new registry, no mirrors", with_registry("[[registry]]\nlocation = \"registry.example.com\"\n"), false, "was added"),
            ("new registry, no mirrors, mirror-by-digest-only", with_registry("[[registry]]\nlocation = \"registry.example.com\"\nmirror-by-digest-only = true\n"), true, ""),
            ("same scope, prefix now set", BASE.replace("prefix = \"\"", "prefix = \"quay.io/openshift\""), false, "prefix of registry"),
        ];
        for (what, new, safe, reason) in rows {
            let v = verdict(BASE, &new);
            assert_eq!(v.safe, safe, "{what}: {}", v.reason);
            assert!(
                v.reason.contains(reason),
                "{what}: reason {:?} lacks {reason:?}",
                v.reason
            );
        }
    }

    #[test]
    fn old_mirror_with_pull_from_mirror_unset_to_digest_only_is_safe() {
        let old = BASE.replace(
            "pull-from-mirror = \"digest-only\"",
            "pull-from-mirror = \"all\"",
        );
        assert!(verdict(&old, BASE).safe);
    }

    #[test]
    fn absent_files() {
        // The file appears with only digest-only content: safe; it disappears: its registries are removed.
        assert!(verdict("", "unqualified-search-registries = [\"docker.io\"]\n").safe);
        assert!(!verdict(BASE, "").safe);
    }

    #[test]
    fn unknown_keys_are_ignored_and_bad_toml_is_an_error() {
        assert!(verdict(BASE, &format!("short-name-mode = \"enforcing\"\n{BASE}")).safe);
        assert!(classify(b"[[registry]", BASE.as_bytes()).is_err());
        assert!(check(b"x = = 1").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(a in ".{0,200}", b in ".{0,200}") {
            let _ = classify(a.as_bytes(), b.as_bytes());
        }

        #[test]
        fn identical_structured_configs_are_safe(
            search in proptest::collection::vec("[a-z]{1,6}\\.io", 0..3),
            locs in proptest::collection::vec(("[a-z]{1,6}\\.io/[a-z]{1,4}", any::<bool>(), any::<bool>()), 0..3),
        ) {
            let mut doc = format!("unqualified-search-registries = {:?}\n", search);
            for (loc, insecure, blocked) in &locs {
                doc.push_str(&format!("[[registry]]\nlocation = {loc:?}\ninsecure = {insecure}\nblocked = {blocked}\n"));
            }
            prop_assert!(verdict(&doc, &doc).safe);
        }
    }
}
