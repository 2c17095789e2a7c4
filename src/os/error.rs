//! Classified image pull failures: the daemon retries some (unreachable) and reports others at once.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an image could not be fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullErrorKind {
    /// Connection refused, DNS, TLS or HTTP/HTTPS mismatch: worth retrying.
    Unreachable,
    /// The registry has no such repository, tag or digest.
    NotFound,
    /// Credentials missing or rejected.
    Unauthorized,
    /// The registry's TLS certificate is not signed by a CA the node trusts.
    Untrusted,
    /// A blob's content does not match its digest.
    Corrupt,
    /// The image has no `ostree.bootable` / `containers.bootc` label: it is not an OS image.
    NotBootable,
    /// The download stopped midway (connection reset, the stream ended early): worth retrying.
    Interrupted,
    /// The sysroot's filesystem is too small for the image: found before fetching (the disk
    /// preflight) or when a write failed with ENOSPC / ostree's min-free-space.
    NoSpace,
    /// Anything else (the detail says what).
    Other,
}

/// An image pull failed; `Display` is one sentence for a node annotation, `detail` has the tool's words.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub struct PullError {
    pub kind: PullErrorKind,
    pub image: String,
    pub detail: String,
    /// The whole error chain from ostree-ext and skopeo, for logs.
    pub chain: String,
    /// How far a pull that failed midway had got (its layers were removed again).
    #[serde(default)]
    pub fetched: Option<PartialPull>,
}

/// What a failed pull had fetched before it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialPull {
    /// Compressed bytes received (whole layers and the started parts of others).
    pub bytes: u64,
    /// Compressed bytes of the layers the pull had to fetch.
    pub bytes_total: u64,
    /// Layers completely imported.
    pub layers: usize,
    pub layers_total: usize,
}

impl fmt::Display for PullError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let image = &self.image;
        let what = match self.kind {
            PullErrorKind::Unreachable => "the registry cannot be reached",
            PullErrorKind::NotFound => "the registry has no such image",
            PullErrorKind::Untrusted => {
                "the registry's TLS certificate is not trusted (its CA belongs in /etc/docker/certs.d/<registry>/ca.crt, which the cluster's ControllerConfig imageRegistryBundleData provides)"
            }
            PullErrorKind::Unauthorized => {
                "the registry rejected the pull secret (or none was found)"
            }
            PullErrorKind::Corrupt => "a downloaded layer does not match its digest",
            PullErrorKind::NotBootable => {
                "it is not a bootable OS image (no ostree.bootable label)"
            }
            PullErrorKind::NoSpace => "not enough disk space",
            PullErrorKind::Interrupted => "the download was interrupted",
            PullErrorKind::Other => "the import failed",
        };
        write!(f, "Cannot pull OS image {image}: {what} ({})", self.detail)?;
        if let Some(p) = &self.fetched {
            write!(
                f,
                "; {} of {} fetched ({} of {} layers) before it stopped, removed again",
                super::preflight::human_bytes(p.bytes),
                super::preflight::human_bytes(p.bytes_total),
                p.layers,
                p.layers_total
            )?;
        }
        Ok(())
    }
}

impl PullError {
    /// Classify an ostree-ext / skopeo error chain.
    pub fn classify(image: &str, err: &anyhow::Error) -> Self {
        let chain: Vec<String> = err.chain().map(|e| e.to_string()).collect();
        let text = chain.join(": ");
        let lower = text.to_lowercase();
        // The chain element that explains the failure is the one the classifying words come from.
        let mut matched: Option<&str> = None;
        let mut has = |needles: &[&str]| {
            let hit = needles.iter().find(|n| lower.contains(*n));
            if let Some(n) = hit {
                matched = chain
                    .iter()
                    .map(String::as_str)
                    .find(|c| c.to_lowercase().contains(n));
            }
            hit.is_some()
        };
        let kind = if has(&["does not have ostree.bootable"]) {
            PullErrorKind::NotBootable
        } else if has(&[
            "no space left on device",
            "would be exceeded",
            "disk quota exceeded",
        ]) {
            PullErrorKind::NoSpace
        } else if has(&[
            "unauthorized",
            "authentication required",
            "denied",
            "invalid username/password",
        ]) {
            PullErrorKind::Unauthorized
        } else if has(&[
            "certificate signed by unknown authority",
            "failed to verify certificate",
            "certificate is not valid",
            "x509:",
        ]) {
            PullErrorKind::Untrusted
        } else if has(&[
            "manifest unknown",
            "name unknown",
            "blob unknown",
            "not found",
            "no such image",
        ]) {
            PullErrorKind::NotFound
        } else if has(&[
            "corrupted blob",
            "digest mismatch",
            "does not match",
            "invalid digest",
            "corrupt",
            "invalid gzip",
        ]) {
            PullErrorKind::Corrupt
        } else if has(&[
            "unexpected eof",
            "connection reset",
            "broken pipe",
            // Go's net/http when the connection closed before the response: `Get "…": EOF`.
            "\": eof",
        ]) {
            PullErrorKind::Interrupted
        } else if has(&[
            "connection refused",
            "no such host",
            "i/o timeout",
            "network is unreachable",
            "server gave http response to https client",
            "tls",
            "dial tcp",
        ]) {
            PullErrorKind::Unreachable
        } else {
            PullErrorKind::Other
        };
        let detail = matched
            .or(chain.last().map(String::as_str))
            .unwrap_or_default();
        let detail = strip_proxy_prefixes(detail.lines().next().unwrap_or_default().trim());
        let detail = detail
            .strip_prefix("proxy failure: ")
            .map(strip_proxy_prefixes)
            .unwrap_or(detail);
        Self {
            kind,
            image: image.to_string(),
            detail,
            chain: text,
            fetched: None,
        }
    }

    /// The same error, saying how far the pull had got.
    pub fn with_fetched(mut self, fetched: PartialPull) -> Self {
        self.fetched = Some(fetched);
        self
    }
}

/// The image proxy wraps skopeo's words in `failed to invoke method OpenImage: ` (often twice).
fn strip_proxy_prefixes(mut s: &str) -> String {
    while let Some(rest) = s.strip_prefix("failed to invoke method ") {
        match rest.split_once(": ") {
            Some((_, tail)) => s = tail,
            None => break,
        }
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(msg: &str) -> PullErrorKind {
        PullError::classify(
            "r/os:1",
            &anyhow::anyhow!(msg.to_string()).context("Importing"),
        )
        .kind
    }

    #[test]
    fn classifies_skopeo_messages() {
        assert_eq!(
            classify(
                "pinging container registry 127.0.0.1:1: Get \"https://127.0.0.1:1/v2/\": dial tcp 127.0.0.1:1: connect: connection refused"
            ),
            PullErrorKind::Unreachable
        );
        assert_eq!(
            classify(
                "reading manifest v9 in 127.0.0.1:5000/os: manifest unknown: manifest unknown"
            ),
            PullErrorKind::NotFound
        );
        assert_eq!(
            classify(
                "reading manifest v1 in 127.0.0.1:5000/os: unauthorized: authentication required"
            ),
            PullErrorKind::Unauthorized
        );
        assert_eq!(
            classify("Target image does not have ostree.bootable label"),
            PullErrorKind::NotBootable
        );
        assert_eq!(
            classify(
                "pinging container registry 127.0.0.1:5000: Get \"https://127.0.0.1:5000/v2/\": tls: failed to verify certificate: x509: certificate signed by unknown authority"
            ),
            PullErrorKind::Untrusted
        );
    }

    #[test]
    fn proxy_prefixes_are_stripped_from_the_detail() {
        assert_eq!(
            strip_proxy_prefixes(
                "failed to invoke method OpenImage: failed to invoke method OpenImage: reading manifest x: manifest unknown"
            ),
            "reading manifest x: manifest unknown"
        );
    }

    #[test]
    fn display_is_one_sentence_with_the_image() {
        let e = PullError {
            kind: PullErrorKind::NotFound,
            image: "r/os:9".into(),
            detail: "manifest unknown".into(),
            chain: String::new(),
            fetched: None,
        };
        assert_eq!(
            e.to_string(),
            "Cannot pull OS image r/os:9: the registry has no such image (manifest unknown)"
        );
    }

    #[test]
    fn out_of_space_midway_says_how_far_the_pull_got() {
        let e = PullError::classify(
            "r/os:9",
            &anyhow::anyhow!("writing object: No space left on device").context("Layer sha256:ab"),
        )
        .with_fetched(PartialPull {
            bytes: 12_000_000,
            bytes_total: 40_000_000,
            layers: 2,
            layers_total: 5,
        });
        assert_eq!(e.kind, PullErrorKind::NoSpace);
        assert_eq!(
            e.to_string(),
            "Cannot pull OS image r/os:9: not enough disk space (writing object: No space left on device); 12.0 MB of 40.0 MB fetched (2 of 5 layers) before it stopped, removed again"
        );
        assert_eq!(
            classify("min-free-space-percent '3%' would be exceeded, at least 1.2 GB requested"),
            PullErrorKind::NoSpace
        );
        assert_eq!(
            classify("Get \"http://127.0.0.1:1/v2/os/blobs/sha256:ab\": EOF"),
            PullErrorKind::Interrupted
        );
        assert_eq!(
            classify("failed to invoke method FinishPipe: unexpected EOF"),
            PullErrorKind::Interrupted
        );
    }
}
