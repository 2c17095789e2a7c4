//! `machineconfiguration.openshift.io/v1` MachineConfig, read from YAML or JSON and validated.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use super::ignition::{self, Ignition};
use super::imageref::ImageRef;
use super::{InvalidInput, kargs};

pub const API_VERSION: &str = "machineconfiguration.openshift.io/v1";
pub const KIND: &str = "MachineConfig";

/// `spec.kernelType`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KernelType {
    /// `default`, `""` or `throughput`.
    #[default]
    #[serde(rename = "default")]
    Default,
    #[serde(rename = "realtime")]
    Realtime,
    #[serde(rename = "64k-pages")]
    SixtyFourKPages,
}

impl KernelType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "default" | "throughput" => Some(Self::Default),
            "realtime" => Some(Self::Realtime),
            "64k-pages" => Some(Self::SixtyFourKPages),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Realtime => "realtime",
            Self::SixtyFourKPages => "64k-pages",
        }
    }
}

impl fmt::Display for KernelType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated MachineConfig: Ignition normalized, file contents decoded, kernel arguments split.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MachineConfig {
    pub name: String,
    pub annotations: BTreeMap<String, String>,
    /// `spec.osImageURL`; `None` when empty (a fragment that does not pin the OS).
    pub os_image_url: Option<ImageRef>,
    /// `spec.kernelArguments`, split into command line tokens, in order.
    pub kernel_arguments: Vec<String>,
    pub extensions: Vec<String>,
    pub fips: bool,
    pub kernel_type: KernelType,
    pub base_os_extensions_container_image: Option<ImageRef>,
    pub ignition: Ignition,
    /// The document as received (JSON), written verbatim as the on-disk config.
    pub raw: Value,
    /// Non-fatal findings (tag-pinned images, unknown Ignition keys).
    pub warnings: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMachineConfig {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: RawMetadata,
    #[serde(default)]
    spec: RawSpec,
}

#[derive(Debug, Default, Deserialize)]
struct RawMetadata {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    #[serde(default, rename = "osImageURL")]
    os_image_url: Option<String>,
    #[serde(default)]
    config: Value,
    #[serde(default)]
    kernel_arguments: Option<Vec<String>>,
    #[serde(default)]
    extensions: Option<Vec<String>>,
    #[serde(default)]
    fips: Option<bool>,
    #[serde(default)]
    kernel_type: Option<String>,
    #[serde(default, rename = "baseOSExtensionsContainerImage")]
    base_os_extensions_container_image: Option<String>,
}

impl MachineConfig {
    /// The empty config a node has before its first MachineConfig (the MCD calls it `mco-empty-mc`).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Parse YAML or JSON bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, InvalidInput> {
        Self::from_value(parse_document(bytes)?)
    }

    /// Validate a document already decoded as JSON (e.g. fetched from the API server).
    pub fn from_value(doc: Value) -> Result<Self, InvalidInput> {
        if !doc.is_object() {
            return Err(InvalidInput::new("", "expected a MachineConfig object"));
        }
        let raw: RawMachineConfig = serde_path_to_error::deserialize(&doc).map_err(|e| {
            let path = e.path().to_string();
            InvalidInput::new(
                if path == "." { String::new() } else { path },
                e.into_inner().to_string(),
            )
        })?;
        match raw.api_version.as_deref() {
            Some(API_VERSION) => {}
            Some(other) => {
                return Err(InvalidInput::new(
                    "apiVersion",
                    format!("must be {API_VERSION}, got {other:?}"),
                ));
            }
            None => {
                return Err(InvalidInput::new(
                    "apiVersion",
                    format!("is required ({API_VERSION})"),
                ));
            }
        }
        match raw.kind.as_deref() {
            Some(KIND) => {}
            Some(other) => {
                return Err(InvalidInput::new(
                    "kind",
                    format!("must be {KIND}, got {other:?}"),
                ));
            }
            None => return Err(InvalidInput::new("kind", format!("is required ({KIND})"))),
        }
        let spec = raw.spec;
        let mut warnings = Vec::new();
        let os_image_url = image_field(spec.os_image_url, "spec.osImageURL", &mut warnings)?;
        let base_os_extensions_container_image = image_field(
            spec.base_os_extensions_container_image,
            "spec.baseOSExtensionsContainerImage",
            &mut warnings,
        )?;
        let kernel_arguments = kargs::split_all(&spec.kernel_arguments.unwrap_or_default())
            .map_err(|(i, e)| {
                InvalidInput::new(format!("spec.kernelArguments[{i}]"), e.to_string())
            })?;
        let kernel_type_raw = spec.kernel_type.unwrap_or_default();
        let kernel_type = KernelType::parse(&kernel_type_raw).ok_or_else(|| {
            InvalidInput::new(
                "spec.kernelType",
                format!(
                    "unknown kernel type {kernel_type_raw:?} (use default, throughput, realtime or 64k-pages; \"\" means default)"
                ),
            )
        })?;
        let extensions = spec.extensions.unwrap_or_default();
        for (i, e) in extensions.iter().enumerate() {
            if e.is_empty() || e.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(InvalidInput::new(
                    format!("spec.extensions[{i}]"),
                    format!("{e:?} is not an extension name"),
                ));
            }
        }
        let ignition = ignition::parse(&spec.config, "spec.config", &mut warnings)?;
        Ok(MachineConfig {
            name: raw.metadata.name.unwrap_or_default(),
            annotations: raw.metadata.annotations.unwrap_or_default(),
            os_image_url,
            kernel_arguments,
            extensions,
            fips: spec.fips.unwrap_or(false),
            kernel_type,
            base_os_extensions_container_image,
            ignition,
            raw: doc,
            warnings,
        })
    }

    /// The OS image this config asks for, as a string (empty when it does not pin one).
    pub fn os_image(&self) -> Option<&str> {
        self.os_image_url.as_ref().map(ImageRef::as_str)
    }

    /// A copy with `spec.osImageURL` replaced: on-cluster layering's `desiredImage` overrides the MC's image.
    pub fn with_os_image(&self, image: ImageRef) -> Self {
        let mut mc = self.clone();
        if let Some(spec) = mc.raw.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert(
                "osImageURL".into(),
                Value::String(image.as_str().to_string()),
            );
        }
        mc.os_image_url = Some(image);
        mc
    }
}

fn image_field(
    value: Option<String>,
    field: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<ImageRef>, InvalidInput> {
    match value.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => {
            let image = ImageRef::parse(&s).map_err(|e| InvalidInput::new(field, e.to_string()))?;
            warnings.extend(image.pinning_warning(field));
            Ok(Some(image))
        }
    }
}

/// Decode a YAML or JSON document into a JSON value. JSON input gets serde_json's precise positions.
pub fn parse_document(bytes: &[u8]) -> Result<Value, InvalidInput> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| InvalidInput::new("", "is not valid UTF-8"))?;
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(InvalidInput::new("", "is empty"));
    }
    if trimmed.starts_with('{') {
        return serde_json::from_str(text)
            .map_err(|e| InvalidInput::new("", format!("invalid JSON: {e}")));
    }
    let mut docs = serde_yaml::Deserializer::from_str(text);
    let first = docs
        .next()
        .ok_or_else(|| InvalidInput::new("", "is empty"))?;
    let value = Value::deserialize(first)
        .map_err(|e| InvalidInput::new("", format!("invalid YAML: {e}")))?;
    if docs.next().is_some() {
        return Err(InvalidInput::new(
            "",
            "holds more than one YAML document; give one object per file",
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn yaml_and_json_give_the_same_config() {
        let yaml = format!(
            "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nmetadata:\n  name: rendered-worker-1\nspec:\n  osImageURL: quay.io/os/os@{D}\n  kernelArguments: [\"nosmt\", 'foo=\"a b\" bar']\n  kernelType: realtime\n  config:\n    ignition:\n      version: 3.4.0\n"
        );
        let json = format!(
            r#"{{"apiVersion":"machineconfiguration.openshift.io/v1","kind":"MachineConfig","metadata":{{"name":"rendered-worker-1"}},"spec":{{"osImageURL":"quay.io/os/os@{D}","kernelArguments":["nosmt","foo=\"a b\" bar"],"kernelType":"realtime","config":{{"ignition":{{"version":"3.4.0"}}}}}}}}"#
        );
        let a = MachineConfig::from_slice(yaml.as_bytes()).unwrap();
        let b = MachineConfig::from_slice(json.as_bytes()).unwrap();
        assert_eq!(a.name, "rendered-worker-1");
        assert_eq!(a.kernel_arguments, vec!["nosmt", "foo=\"a b\"", "bar"]);
        assert_eq!(a.kernel_type, KernelType::Realtime);
        assert_eq!(a.os_image(), b.os_image());
        assert_eq!(a.kernel_arguments, b.kernel_arguments);
        assert!(a.warnings.is_empty());
    }

    fn err(doc: &str) -> String {
        MachineConfig::from_slice(doc.as_bytes())
            .unwrap_err()
            .to_string()
    }

    const HEAD: &str = "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\n";

    #[test]
    fn invalid_documents() {
        assert!(err("").contains("is empty"));
        assert!(err("{not json").starts_with("invalid JSON"));
        assert!(err("a: [").starts_with("invalid YAML"));
        assert!(err("- 1\n- 2\n").contains("expected a MachineConfig object"));
        assert_eq!(
            err("kind: MachineConfig\n"),
            "apiVersion: is required (machineconfiguration.openshift.io/v1)"
        );
        assert!(
            err("apiVersion: v1\nkind: MachineConfig\n")
                .starts_with("apiVersion: must be machineconfiguration")
        );
        assert!(
            err("apiVersion: machineconfiguration.openshift.io/v1\nkind: Pod\n")
                .starts_with("kind: must be MachineConfig")
        );
        assert!(
            err(&format!("{HEAD}spec:\n  kernelType: turbo\n"))
                .starts_with("spec.kernelType: unknown kernel type \"turbo\"")
        );
        assert!(
            err(&format!("{HEAD}spec:\n  osImageURL: 'not an image'\n"))
                .starts_with("spec.osImageURL: invalid image reference")
        );
        assert!(
            err(&format!(
                "{HEAD}spec:\n  kernelArguments: ['ok', 'bad=\"x']\n"
            ))
            .starts_with("spec.kernelArguments[1]: unterminated")
        );
        assert!(
            err(&format!("{HEAD}spec:\n  kernelArguments: 'nosmt'\n"))
                .starts_with("spec.kernelArguments: invalid type")
        );
        assert!(
            err(&format!("{HEAD}spec:\n  fips: maybe\n")).starts_with("spec.fips: invalid type")
        );
        assert!(err(&format!("{HEAD}---\n{HEAD}")).contains("more than one YAML document"));
        assert!(
            err(&format!("{HEAD}spec:\n  extensions: ['a b']\n")).starts_with("spec.extensions[0]")
        );
    }

    #[test]
    fn tag_pinned_image_is_a_warning() {
        let mc = MachineConfig::from_slice(
            format!("{HEAD}spec:\n  osImageURL: quay.io/os/os:latest\n").as_bytes(),
        )
        .unwrap();
        assert_eq!(mc.warnings.len(), 1);
        assert!(
            mc.warnings[0]
                .starts_with("spec.osImageURL: image quay.io/os/os:latest is referenced by tag")
        );
    }

    #[test]
    fn desired_image_override_updates_raw() {
        let mc = MachineConfig::from_slice(
            format!("{HEAD}spec:\n  osImageURL: quay.io/os/a@{D}\n").as_bytes(),
        )
        .unwrap();
        let img = ImageRef::parse(&format!("quay.io/os/b@{D}")).unwrap();
        let over = mc.with_os_image(img);
        assert_eq!(over.os_image(), Some(format!("quay.io/os/b@{D}").as_str()));
        assert_eq!(over.raw["spec"]["osImageURL"], format!("quay.io/os/b@{D}"));
    }
}

/// Why `name` cannot be the name of a MachineConfig: Kubernetes object names are DNS subdomains
/// (RFC 1123: at most 253 characters of lowercase letters, digits, `-` and `.`, starting and ending
/// with a letter or digit). Checked before a node annotation's value is put in an API request path.
pub fn invalid_object_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".into());
    }
    if name.len() > 253 {
        return Some(format!(
            "it is {} characters long (at most 253)",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return Some(format!(
            "it contains {c:?} (only lowercase letters, digits, '-' and '.')"
        ));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return Some("it must start and end with a letter or digit".into());
    }
    if name.split('.').any(str::is_empty) {
        return Some("it has an empty '.'-separated part".into());
    }
    None
}

#[cfg(test)]
mod object_name_tests {
    use super::invalid_object_name;

    #[test]
    fn rendered_names_are_valid() {
        for ok in ["rendered-worker-7f3c1a2b9e", "00-worker", "a", "a.b-c.d"] {
            assert_eq!(invalid_object_name(ok), None, "{ok}");
        }
    }

    #[test]
    fn traversal_case_length_and_edges_are_rejected_with_the_reason() {
        let cases = [
            ("", "empty"),
            ("../../etc/shadow", "'/'"),
            ("Rendered-Worker", "'R'"),
            ("rendered worker", "' '"),
            ("-rendered", "start and end"),
            ("rendered.", "start and end"),
            ("a..b", "empty '.'-separated part"),
        ];
        for (name, why) in cases {
            let got = invalid_object_name(name).unwrap_or_default();
            assert!(got.contains(why), "{name:?}: {got}");
        }
        let long = "a".repeat(254);
        assert!(
            invalid_object_name(&long)
                .unwrap()
                .contains("254 characters")
        );
        assert_eq!(invalid_object_name(&"a".repeat(253)), None);
    }
}
