//! The RHCOS extensions a MachineConfig may request (`ctrlcommon.SupportedExtensions()`).

/// Extension name → the packages it installs.
pub const SUPPORTED: &[(&str, &[&str])] = &[
    ("two-node-ha", &["pacemaker", "pcs", "fence-agents-all"]),
    (
        "ipsec",
        &[
            "NetworkManager-libreswan",
            "libreswan",
            "openvswitch3.5-ipsec",
        ],
    ),
    ("usbguard", &["usbguard"]),
    ("kerberos", &["krb5-workstation", "libkadm5"]),
    ("kernel-devel", &["kernel-devel", "kernel-headers"]),
    ("sandboxed-containers", &["kata-containers"]),
    ("sysstat", &["sysstat"]),
];

/// The packages of a supported extension, `None` for an unknown one.
pub fn packages(extension: &str) -> Option<&'static [&'static str]> {
    SUPPORTED
        .iter()
        .find(|(name, _)| *name == extension)
        .map(|(_, pkgs)| *pkgs)
}

/// Names of the supported extensions, for error messages.
pub fn supported_names() -> String {
    SUPPORTED
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}
