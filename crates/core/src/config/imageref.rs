//! Container image references (`osImageURL`, `desiredImage`), validated with the grammar of the
//! distribution `reference` package: `[domain[:port]/]path[:tag][@algorithm:hex]`.

use std::fmt;

/// A syntactically valid image pullspec (no transport prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    raw: String,
    name: String,
    tag: Option<String>,
    digest: Option<String>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {why}")]
pub struct ImageRefError {
    pub input: String,
    pub why: &'static str,
}

impl ImageRef {
    /// Parse and validate a pullspec.
    pub fn parse(input: &str) -> Result<Self, ImageRefError> {
        let err = |why| ImageRefError {
            input: input.to_string(),
            why,
        };
        if input.is_empty() {
            return Err(err("it is empty"));
        }
        if input.len() > 4096 {
            return Err(err("it is too long"));
        }
        if input.contains("://") || input.starts_with("ostree-") || input.starts_with("docker:") {
            return Err(err(
                "give a pullspec without a transport (e.g. quay.io/org/os@sha256:…)",
            ));
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("it contains whitespace"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                validate_digest(d).map_err(err)?;
                (r, Some(d.to_string()))
            }
            None => (input, None),
        };
        // A ':' after the last '/' separates the tag; a ':' before it is a registry port.
        let last_slash = rest.rfind('/');
        let (name, tag) = match rest.rfind(':') {
            Some(colon) if last_slash.is_none_or(|s| colon > s) => {
                (&rest[..colon], Some(&rest[colon + 1..]))
            }
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag).map_err(err)?;
        }
        validate_name(name).map_err(err)?;
        Ok(ImageRef {
            raw: input.to_string(),
            name: name.to_string(),
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// The full pullspec as given.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
    /// Repository name including the registry, without tag or digest.
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    /// `algorithm:hex`, when the reference pins a digest.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }
    /// A warning for references that do not pin content, so nodes could run different bits.
    pub fn pinning_warning(&self, field: &str) -> Option<String> {
        if self.digest.is_some() {
            return None;
        }
        Some(format!(
            "{field}: image {} is referenced by tag, not by digest; nodes may run different content (use @sha256:…)",
            self.raw
        ))
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

fn validate_digest(d: &str) -> Result<(), &'static str> {
    let (alg, hex) = d
        .split_once(':')
        .ok_or("the digest must be algorithm:hex (e.g. sha256:…)")?;
    let alg_ok = !alg.is_empty()
        && alg.split(['+', '.', '-', '_']).all(|c| {
            let mut chars = c.chars();
            chars.next().is_some_and(|f| f.is_ascii_alphabetic())
                && chars.all(|c| c.is_ascii_alphanumeric())
        });
    if !alg_ok {
        return Err("the digest algorithm is malformed");
    }
    if !hex.chars().all(|c| c.is_ascii_hexdigit()) || hex.len() < 32 {
        return Err("the digest value must be at least 32 hex digits");
    }
    let want = match alg {
        "sha256" => Some(64),
        "sha384" => Some(96),
        "sha512" => Some(128),
        _ => None,
    };
    if want.is_some_and(|n| n != hex.len()) {
        return Err("the digest has the wrong length for its algorithm");
    }
    if alg.starts_with("sha") && hex.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("the digest must be lowercase hex");
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), &'static str> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if !first_ok
        || tag.len() > 128
        || !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return Err("the tag is malformed (letters, digits, '_', '.', '-'; at most 128)");
    }
    Ok(())
}

fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the repository name is empty");
    }
    if name.len() > 255 {
        return Err("the repository name is longer than 255 characters");
    }
    let mut components: Vec<&str> = name.split('/').collect();
    let first = components[0];
    let has_domain = components.len() > 1
        && (first.contains('.')
            || first.contains(':')
            || first == "localhost"
            || first.chars().any(|c| c.is_ascii_uppercase()));
    if has_domain {
        validate_domain(first)?;
        components.remove(0);
    }
    if components.is_empty() {
        return Err("the repository path is empty");
    }
    for c in components {
        validate_path_component(c)?;
    }
    Ok(())
}

fn validate_domain(domain: &str) -> Result<(), &'static str> {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or("the registry IPv6 address is malformed")?;
        if v6.is_empty() || !v6.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err("the registry IPv6 address is malformed");
        }
        (None, after.strip_prefix(':'))
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(port) = port {
        if port.is_empty()
            || !port.chars().all(|c| c.is_ascii_digit())
            || port.parse::<u32>().map_or(true, |p| p > 65535)
        {
            return Err("the registry port is malformed");
        }
    }
    if let Some(host) = host {
        let ok = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !ok {
            return Err("the registry host name is malformed");
        }
    }
    Ok(())
}

fn validate_path_component(c: &str) -> Result<(), &'static str> {
    const WHY: &str = "repository path components must be lowercase letters and digits separated by '.', '_', '__' or '-'";
    let bytes = c.as_bytes();
    if bytes.is_empty()
        || !bytes[0].is_ascii_alphanumeric()
        || !bytes[bytes.len() - 1].is_ascii_alphanumeric()
    {
        return Err(WHY);
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            i += 1;
            continue;
        }
        // a separator run: '.', '_', '__', or any number of '-'
        let start = i;
        while i < bytes.len() && !(bytes[i].is_ascii_lowercase() || bytes[i].is_ascii_digit()) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.chars().all(|c| c == '-');
        if !ok {
            return Err(WHY);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn valid_references() {
        for s in [
            format!("quay.io/openshift-release-dev/ocp-v4.0-art-dev@{D}"),
            format!("127.0.0.1:5000/os@{D}"),
            "127.0.0.1:5000/os:derived".to_string(),
            "registry.example.com/org/os:4.18.0-x86_64".to_string(),
            "localhost/os:latest".to_string(),
            "fedora".to_string(),
            "library/my_image__x.y-z".to_string(),
            format!("[::1]:5000/os@{D}"),
            format!("quay.io/org/os:4.18@{D}"),
        ] {
            let r = ImageRef::parse(&s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(r.as_str(), s);
        }
        let r = ImageRef::parse(&format!("127.0.0.1:5000/os:v1@{D}")).unwrap();
        assert_eq!(r.name(), "127.0.0.1:5000/os");
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.digest(), Some(D));
        assert!(r.pinning_warning("x").is_none());
        let r = ImageRef::parse("127.0.0.1:5000/os").unwrap();
        assert_eq!(r.name(), "127.0.0.1:5000/os");
        assert_eq!(r.tag(), None);
        assert!(
            r.pinning_warning("spec.osImageURL")
                .unwrap()
                .contains("by tag")
        );
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        for s in [
            "",
            "not an image",
            "docker://quay.io/x/y",
            "ostree-unverified-registry:quay.io/x/y",
            "quay.io/UPPER/case",
            "quay.io/x@sha256:1234",
            "quay.io/x@sha256:XYZ",
            "quay.io/x:",
            "quay.io/x:-bad",
            "quay.io/x//y",
            "quay.io:99999/x",
            "-bad.io/x",
            "quay.io/x/",
            "quay.io/x@",
            "../../etc/passwd",
        ] {
            assert!(ImageRef::parse(s).is_err(), "{s:?} should be rejected");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,300}") {
            let _ = ImageRef::parse(&s);
        }
    }
}
