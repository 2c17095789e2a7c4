//! Checks of what booted against what a config asks for. Pure: the caller reads the OS status, the kernel
//! command line and the on-disk mismatches.

use crate::config::{ImageRef, MachineConfig};
use crate::host::Mismatch;
use crate::os::Deployment;

/// Does `deployment` run `wanted` (a pullspec)? By digest when `wanted` pins one, else by the pullspec.
pub fn image_matches(deployment: &Deployment, wanted: &str) -> bool {
    match ImageRef::parse(wanted)
        .ok()
        .and_then(|r| r.digest().map(str::to_string))
    {
        Some(digest) => deployment.image_digest.as_deref() == Some(digest.as_str()),
        None => deployment.image.as_deref() == Some(wanted),
    }
}

/// Why the booted OS is not the one `config` asks for (`None`: it is).
pub fn os_problem(config: &MachineConfig, booted: Option<&Deployment>) -> Option<String> {
    let wanted = config.os_image()?;
    match booted {
        None => Some(format!(
            "no booted deployment was found, expected image {wanted}"
        )),
        Some(d) if image_matches(d, wanted) => None,
        Some(d) => Some(format!(
            "the booted deployment {} runs image {} ({}), expected {wanted}",
            d.id(),
            d.image.as_deref().unwrap_or("unknown"),
            d.image_digest.as_deref().unwrap_or("no digest"),
        )),
    }
}

/// Packages the config's kernel type and extensions need that the booted deployment does not layer
/// (the MCD's verifyExtensionPackages after the reboot). Not for an on-cluster-layering image, which has
/// them built in.
pub fn packages_problem(config: &MachineConfig, booted: Option<&Deployment>) -> Option<String> {
    let wanted = crate::os::rpm_ostree::expected_packages(config.kernel_type, &config.extensions);
    let booted = booted?;
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|p| !booted.requested_packages.contains(p))
        .map(String::as_str)
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "the booted deployment {} does not have the packages of kernel type {} and extensions [{}]: missing {}",
            booted.id(),
            config.kernel_type,
            config.extensions.join(", "),
            missing.join(" ")
        )
    })
}

/// The config's kernel arguments missing from the running command line.
pub fn missing_kargs(config: &MachineConfig, cmdline: &[String]) -> Vec<String> {
    let mut available: Vec<Option<&String>> = cmdline.iter().map(Some).collect();
    let mut missing = Vec::new();
    for arg in &config.kernel_arguments {
        match available.iter_mut().find(|a| a.is_some_and(|x| x == arg)) {
            Some(slot) => *slot = None,
            None => missing.push(arg.clone()),
        }
    }
    missing
}

/// The one-sentence reason for on-disk mismatches (first few named, the count given).
pub fn describe_mismatches(config: &str, mismatches: &[Mismatch]) -> String {
    const SHOWN: usize = 5;
    let shown: Vec<String> = mismatches
        .iter()
        .take(SHOWN)
        .map(|m| m.message.clone())
        .collect();
    let more = mismatches.len().saturating_sub(SHOWN);
    let tail = if more > 0 {
        format!(" (and {more} more)")
    } else {
        String::new()
    };
    format!(
        "unexpected on-disk state validating against {config}: {}{tail}",
        shown.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn deployment(image: &str, digest: &str, kargs: &[&str]) -> Deployment {
        Deployment {
            stateroot: "os".into(),
            checksum: "abc".into(),
            serial: 0,
            image: Some(image.into()),
            image_reference: None,
            image_digest: Some(digest.into()),
            version: None,
            kernel_arguments: kargs.iter().map(|s| s.to_string()).collect(),
            requested_packages: vec![],
            requested_base_removals: vec![],
        }
    }

    fn mc(image: Option<&str>, kargs: &[&str]) -> MachineConfig {
        let mut spec = serde_json::json!({"kernelArguments": kargs});
        if let Some(i) = image {
            spec["osImageURL"] = i.into();
        }
        MachineConfig::from_value(serde_json::json!({"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig", "spec": spec})).unwrap()
    }

    #[test]
    fn image_by_digest_or_by_pullspec() {
        let d = deployment("127.0.0.1:5000/os:v2", DIGEST, &[]);
        assert!(image_matches(&d, &format!("127.0.0.1:5000/os@{DIGEST}")));
        assert!(image_matches(&d, "127.0.0.1:5000/os:v2"));
        assert!(!image_matches(&d, "127.0.0.1:5000/os:v3"));
        assert!(!image_matches(
            &d,
            "127.0.0.1:5000/os@sha256:1111111111111111111111111111111111111111111111111111111111111111"
        ));
        assert!(os_problem(&mc(Some(&format!("x.io/os@{DIGEST}")), &[]), Some(&d)).is_none());
        let why = os_problem(&mc(Some("x.io/os:other"), &[]), Some(&d)).unwrap();
        assert!(
            why.contains("runs image 127.0.0.1:5000/os:v2")
                && why.contains("expected x.io/os:other"),
            "{why}"
        );
        assert!(
            os_problem(&mc(None, &[]), None).is_none(),
            "a config without an image pins no OS"
        );
        assert!(
            os_problem(&mc(Some("x.io/os:1"), &[]), None)
                .unwrap()
                .contains("no booted deployment")
        );
    }

    #[test]
    fn layered_packages_of_kernel_type_and_extensions_are_checked() {
        let mut config = mc(None, &[]);
        config.kernel_type = crate::config::KernelType::Realtime;
        config.extensions = vec!["usbguard".into()];
        let mut d = deployment("x.io/os:1", DIGEST, &[]);
        d.requested_packages = vec!["kernel-rt-core".into(), "usbguard".into()];
        let why = packages_problem(&config, Some(&d)).unwrap();
        assert!(
            why.ends_with("missing kernel-rt-modules kernel-rt-modules-extra"),
            "{why}"
        );
        d.requested_packages
            .extend(["kernel-rt-modules".into(), "kernel-rt-modules-extra".into()]);
        assert_eq!(packages_problem(&config, Some(&d)), None);
        assert_eq!(
            packages_problem(&mc(None, &[]), Some(&deployment("x", DIGEST, &[]))),
            None
        );
    }

    #[test]
    fn kernel_arguments_present_with_multiplicity() {
        let cmdline: Vec<String> = ["root=/dev/vda", "nosmt", "console=tty0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(missing_kargs(&mc(None, &["nosmt", "console=tty0"]), &cmdline).is_empty());
        assert_eq!(
            missing_kargs(&mc(None, &["nosmt", "nosmt", "quiet"]), &cmdline),
            vec!["nosmt", "quiet"]
        );
    }
}
