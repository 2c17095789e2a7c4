//! Which of core's SSH keys an update adds and removes, named the way an admin recognises them: by
//! comment, and by fingerprint in `ssh-keygen -l` form (`SHA256:` + unpadded base64 of the SHA-256 of
//! the key blob), so a plan that would lock admins out says so.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Ignition;

/// One authorized key as a plan shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshKey {
    /// `SHA256:…` of the key blob, or `None` when the line holds no parsable key.
    pub fingerprint: Option<String>,
    /// The key type (`ssh-ed25519`, …), when the line holds a parsable key.
    pub key_type: Option<String>,
    /// The comment after the key (often `user@host`), if any.
    pub comment: Option<String>,
}

impl SshKey {
    /// Parse one `authorized_keys` line: `[options] TYPE BASE64 [comment]`.
    pub fn parse(line: &str) -> SshKey {
        let words: Vec<&str> = line.split_whitespace().collect();
        // The key type is the first word followed by a base64 blob that decodes; options come before it.
        for (i, pair) in words.windows(2).enumerate() {
            let (ty, blob) = (pair[0], pair[1]);
            if !is_key_type(ty) {
                continue;
            }
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(blob) else {
                continue;
            };
            let digest = Sha256::digest(&bytes);
            let fingerprint = base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest);
            let comment = words[i + 2..].join(" ");
            return SshKey {
                fingerprint: Some(format!("SHA256:{fingerprint}")),
                key_type: Some(ty.to_string()),
                comment: (!comment.is_empty()).then_some(comment),
            };
        }
        SshKey {
            fingerprint: None,
            key_type: None,
            comment: None,
        }
    }

    /// How a plan names the key: its comment, else its fingerprint.
    pub fn label(&self) -> String {
        match (&self.comment, &self.fingerprint) {
            (Some(c), _) => c.clone(),
            (None, Some(f)) => f.clone(),
            (None, None) => "(an unparsable key line)".to_string(),
        }
    }
}

fn is_key_type(word: &str) -> bool {
    word.starts_with("ssh-") || word.starts_with("ecdsa-sha2-") || word.starts_with("sk-")
}

/// core's SSH keys before and after an update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshKeysChange {
    pub add: Vec<SshKey>,
    pub remove: Vec<SshKey>,
    /// How many keys core has after the update.
    pub remaining: usize,
}

impl SshKeysChange {
    /// The update leaves core without any key although it had some: admins are locked out.
    pub fn locks_out(&self) -> bool {
        self.remaining == 0 && !self.remove.is_empty()
    }
}

fn core_keys(ign: &Ignition) -> Vec<String> {
    ign.core_user()
        .map(|u| u.ssh_authorized_keys.clone())
        .unwrap_or_default()
}

/// Keys are compared by their blob (a comment or option edit is not a new key); lines without a
/// parsable key are compared as text.
pub fn diff(old: &Ignition, new: &Ignition) -> SshKeysChange {
    let (old, new) = (core_keys(old), core_keys(new));
    let identity = |line: &str| {
        let k = SshKey::parse(line);
        k.fingerprint.unwrap_or_else(|| line.trim().to_string())
    };
    let old_ids: Vec<String> = old.iter().map(|l| identity(l)).collect();
    let new_ids: Vec<String> = new.iter().map(|l| identity(l)).collect();
    SshKeysChange {
        add: new
            .iter()
            .zip(&new_ids)
            .filter(|(_, id)| !old_ids.contains(id))
            .map(|(l, _)| SshKey::parse(l))
            .collect(),
        remove: old
            .iter()
            .zip(&old_ids)
            .filter(|(_, id)| !new_ids.contains(id))
            .map(|(l, _)| SshKey::parse(l))
            .collect(),
        remaining: new.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ignition::parse;
    use serde_json::json;

    // Generated with `ssh-keygen -t ed25519`; `ssh-keygen -l` (OpenSSH 9.2) prints this fingerprint.
    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHmJdPlvu7AHMnU9O9MEZXyptkDEAYhZCNg9Iyg7392E admin@laptop";
    const ED_FP: &str = "SHA256:s1P0BeohyRm/dUQe5wzZi/+sNSryyNHmA7I3y8Eo8Bs";

    fn ign(keys: &[&str]) -> Ignition {
        parse(
            &json!({"ignition": {"version": "3.4.0"}, "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": keys}]}}),
            "spec.config",
            &mut vec![],
        )
        .unwrap()
    }

    #[test]
    fn parses_type_fingerprint_and_comment() {
        let k = SshKey::parse(ED);
        assert_eq!(k.fingerprint.as_deref(), Some(ED_FP));
        assert_eq!(k.key_type.as_deref(), Some("ssh-ed25519"));
        assert_eq!(k.comment.as_deref(), Some("admin@laptop"));
        assert_eq!(k.label(), "admin@laptop");
        // Options before the key, no comment: named by fingerprint.
        let bare = ED.trim_end_matches(" admin@laptop");
        let k = SshKey::parse(&format!("no-pty,command=\"/bin/true\" {bare}"));
        assert_eq!(k.label(), ED_FP);
        assert_eq!(SshKey::parse("garbage").label(), "(an unparsable key line)");
    }

    #[test]
    fn added_removed_and_lockout() {
        let other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA0aJ/LUfeDXTZ5t+zvPL5KRGC8BBwGYiQHwstpApGWj ops@bastion";
        let c = diff(&ign(&[ED]), &ign(&[ED, other]));
        assert_eq!(c.add.len(), 1);
        assert_eq!(c.add[0].label(), "ops@bastion");
        assert!(c.remove.is_empty() && !c.locks_out());

        let c = diff(&ign(&[ED, other]), &ign(&[other]));
        assert_eq!(c.remove[0].label(), "admin@laptop");
        assert_eq!(c.remaining, 1);
        assert!(!c.locks_out());

        let c = diff(&ign(&[ED, other]), &ign(&[]));
        assert_eq!(c.remove.len(), 2);
        assert!(c.locks_out());
        assert!(diff(&Ignition::default(), &ign(&[ED, other])).add.len() == 2);
        assert!(!diff(&Ignition::default(), &Ignition::default()).locks_out());

        // A new comment on the same key is neither an addition nor a removal.
        let renamed = ED.replace("admin@laptop", "admin@desk");
        let c = diff(&ign(&[ED]), &ign(&[&renamed]));
        assert!(c.add.is_empty() && c.remove.is_empty());
    }
}
