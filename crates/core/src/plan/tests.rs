//! Table-driven planner tests: one case per rule of `mco-protocol.md` §3 and §4.

use serde_json::{Value, json};

use super::*;
use crate::config::dataurl::encode_base64;
use crate::config::policy::StorageOverride;

const D1: &str =
    "quay.io/os/os@sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str =
    "quay.io/os/os@sha256:2222222222222222222222222222222222222222222222222222222222222222";

/// A MachineConfig from a `spec` (Ignition version 3.4.0 filled in when a config is given).
fn mc(name: &str, mut spec: Value) -> MachineConfig {
    if let Some(cfg) = spec.get_mut("config").and_then(Value::as_object_mut) {
        cfg.entry("ignition").or_insert(json!({"version": "3.4.0"}));
    }
    MachineConfig::from_value(json!({
        "apiVersion": "machineconfiguration.openshift.io/v1",
        "kind": "MachineConfig",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn file(path: &str, body: &str) -> Value {
    json!({"path": path, "contents": {"source": encode_base64(body.as_bytes())}, "mode": 420})
}

fn files(list: Vec<Value>) -> Value {
    json!({"config": {"storage": {"files": list}}})
}

fn run(current: &MachineConfig, desired: &MachineConfig) -> Plan {
    plan(current, desired, None, &MachineConfiguration::default())
}

fn with_policy(current: &MachineConfig, desired: &MachineConfig, policy: &str) -> Plan {
    let policy = MachineConfiguration::from_slice(
        format!("apiVersion: operator.openshift.io/v1\nkind: MachineConfiguration\nmetadata:\n  name: cluster\n{policy}").as_bytes(),
    )
    .unwrap();
    plan(current, desired, None, &policy)
}

fn reload(unit: &str) -> Action {
    Action::Reload { unit: unit.into() }
}
fn restart(unit: &str) -> Action {
    Action::Restart { unit: unit.into() }
}

#[test]
fn identical_configs_are_a_noop() {
    let a = mc("a", files(vec![file("/etc/x", "1")]));
    let p = run(&a, &a);
    assert!(p.is_noop());
    assert_eq!(p.actions, vec![Action::None]);
    assert!(!p.drain && !p.reboot);
}

#[test]
fn first_boot_from_empty_config_reboots() {
    let p = run(
        &MachineConfig::empty(),
        &mc(
            "rendered-1",
            files(vec![file("/etc/chrony.conf", "pool x")]),
        ),
    );
    assert_eq!(p.files.add, vec!["/etc/chrony.conf"]);
    assert_eq!(p.from_config, "");
    assert_eq!(p.actions, vec![Action::Reboot]);
    assert!(p.drain && p.reboot);
}

/// Each row: desired files (current has none) → expected actions, drain.
#[test]
fn file_actions_table() {
    let rows: Vec<(&str, Vec<Action>, bool)> = vec![
        ("/var/lib/kubelet/config.json", vec![Action::None], false),
        (
            "/etc/containers/policy.json",
            vec![reload("crio.service")],
            false,
        ),
        (
            "/etc/containers/registries.d/x.yaml",
            vec![reload("crio.service")],
            false,
        ),
        (
            "/etc/crio/policies/p.json",
            vec![reload("crio.service")],
            false,
        ),
        (
            "/etc/machine-config-daemon/no-reboot/containers-gpg.pub",
            vec![reload("crio.service")],
            false,
        ),
        ("/etc/nmstate/openshift/x.yml", vec![Action::None], false),
        (
            "/etc/pki/ca-trust/source/anchors/openshift-config-user-ca-bundle.crt",
            vec![
                restart("coreos-update-ca-trust.service"),
                restart("crio.service"),
            ],
            false,
        ),
        (
            "/etc/kubernetes/credential-providers/acr.yaml",
            vec![restart("kubelet.service")],
            false,
        ),
        (
            "/etc/systemd/system/kubelet.service.d/40-kubelet-crio-image-credential-provider.conf",
            vec![Action::DaemonReload, restart("kubelet.service")],
            false,
        ),
        (
            "/etc/iri-registry/x",
            vec![restart("iri-registry.service")],
            false,
        ),
        (
            "/etc/pki/ca-trust/source/anchors/iri-root-ca.crt",
            vec![restart("coreos-update-ca-trust.service")],
            false,
        ),
        ("/etc/chrony.conf", vec![Action::Reboot], true),
    ];
    for (path, want, drain) in rows {
        let p = run(&mc("a", json!({})), &mc("b", files(vec![file(path, "x")])));
        assert_eq!(p.actions, want, "{path}");
        assert_eq!(p.drain, drain, "{path}");
        assert_eq!(p.reboot, want == vec![Action::Reboot], "{path}");
    }
}

#[test]
fn removed_and_changed_files_are_evaluated_too() {
    let old = mc(
        "a",
        files(vec![
            file("/etc/containers/policy.json", "1"),
            file("/var/lib/kubelet/config.json", "s"),
        ]),
    );
    let new = mc("b", files(vec![file("/var/lib/kubelet/config.json", "s2")]));
    let p = run(&old, &new);
    assert_eq!(p.files.change, vec!["/var/lib/kubelet/config.json"]);
    assert_eq!(p.files.remove, vec!["/etc/containers/policy.json"]);
    assert_eq!(p.actions, vec![reload("crio.service")]);
    assert!(!p.drain);
}

#[test]
fn ssh_key_only_change() {
    let u = |keys: Vec<&str>| {
        mc(
            "x",
            json!({"config": {"passwd": {"users": [{"name": "core", "sshAuthorizedKeys": keys}]}}}),
        )
    };
    let p = run(
        &u(vec!["ssh-ed25519 AAAA1 a"]),
        &u(vec!["ssh-ed25519 AAAA1 a", "ssh-ed25519 AAAA2 b"]),
    );
    assert!(p.ssh_keys && !p.password);
    assert_eq!(p.actions, vec![Action::None]);
    assert!(!p.drain && !p.reboot);
    // The user may require a drain for SSH changes.
    let p = with_policy(
        &u(vec!["a"]),
        &u(vec!["b"]),
        "spec:\n  nodeDisruptionPolicy:\n    sshkey:\n      actions:\n      - type: Drain\n",
    );
    assert_eq!(p.actions, vec![Action::Drain]);
    assert!(p.drain && !p.reboot);
}

#[test]
fn password_change_uses_the_sshkey_policy() {
    let u = |hash: &str| {
        mc(
            "x",
            json!({"config": {"passwd": {"users": [{"name": "core", "passwordHash": hash}]}}}),
        )
    };
    let p = run(&u("$6$a"), &u("$6$b"));
    assert!(p.password && !p.ssh_keys);
    assert_eq!(p.actions, vec![Action::None]);
}

#[test]
fn unit_changes_without_policy_reboot() {
    let u = |contents: &str| {
        mc(
            "x",
            json!({"config": {"systemd": {"units": [{"name": "hello.service", "contents": contents, "enabled": true}]}}}),
        )
    };
    let p = run(&u("[Unit]\nA"), &u("[Unit]\nB"));
    assert_eq!(p.units.change, vec!["hello.service"]);
    assert_eq!(p.actions, vec![Action::Reboot]);
    let p = with_policy(
        &u("[Unit]\nA"),
        &u("[Unit]\nB"),
        "spec:\n  nodeDisruptionPolicy:\n    units:\n    - name: hello.service\n      actions:\n      - type: DaemonReload\n      - type: Restart\n        restart:\n          serviceName: hello.service\n",
    );
    assert_eq!(
        p.actions,
        vec![Action::DaemonReload, restart("hello.service")]
    );
    assert!(!p.drain);
}

#[test]
fn dropin_change_is_matched_by_its_unit() {
    let u = |body: &str| {
        mc(
            "x",
            json!({"config": {"systemd": {"units": [{"name": "iri-registry.service", "dropins": [{"name": "10-x.conf", "contents": body}]}]}}}),
        )
    };
    let p = run(&u("a"), &u("b"));
    assert_eq!(p.units.change, vec!["iri-registry.service/10-x.conf"]);
    assert_eq!(
        p.actions,
        vec![Action::DaemonReload, restart("iri-registry.service")]
    );
}

#[test]
fn user_file_policy_overrides_default_and_longest_prefix_wins() {
    let p = with_policy(
        &mc("a", json!({})),
        &mc(
            "b",
            files(vec![
                file("/etc/myapp/conf.d/a.conf", "x"),
                file("/etc/containers/policy.json", "y"),
            ]),
        ),
        "spec:\n  nodeDisruptionPolicy:\n    files:\n    - path: /etc/myapp\n      actions:\n      - type: Drain\n    - path: /etc/myapp/conf.d\n      actions:\n      - type: Reload\n        reload:\n          serviceName: myapp.service\n    - path: /etc/containers/policy.json\n      actions:\n      - type: None\n",
    );
    assert_eq!(p.actions, vec![reload("myapp.service")]);
    assert!(!p.drain);
}

const REG_OLD: &str =
    "unqualified-search-registries = [\"docker.io\"]\n[[registry]]\nlocation = \"quay.io/a\"\n";

#[test]
fn registries_conf_safe_change_reloads_crio_without_drain() {
    let old = mc(
        "a",
        files(vec![file("/etc/containers/registries.conf", REG_OLD)]),
    );
    let safe = format!(
        "{REG_OLD}[[registry.mirror]]\nlocation = \"mirror.local/a\"\npull-from-mirror = \"digest-only\"\n"
    );
    let p = run(
        &old,
        &mc(
            "b",
            files(vec![file("/etc/containers/registries.conf", &safe)]),
        ),
    );
    assert_eq!(p.actions, vec![reload("crio.service")]);
    assert!(!p.drain && !p.reboot);
    assert!(p.explanations.iter().any(|e| e.contains("safe")));
}

#[test]
fn registries_conf_unsafe_change_drains() {
    let old = mc(
        "a",
        files(vec![file("/etc/containers/registries.conf", REG_OLD)]),
    );
    let unsafe_ = format!("{REG_OLD}[[registry.mirror]]\nlocation = \"mirror.local/a\"\n");
    let p = run(
        &old,
        &mc(
            "b",
            files(vec![file("/etc/containers/registries.conf", &unsafe_)]),
        ),
    );
    assert_eq!(p.actions, vec![reload("crio.service")]);
    assert!(p.drain && !p.reboot);
    assert!(
        p.explanations
            .iter()
            .any(|e| e.contains("unsafe") && e.contains("mirror.local/a")),
        "{:?}",
        p.explanations
    );
}

#[test]
fn registries_conf_beside_a_reboot_reboots() {
    let old = mc(
        "a",
        files(vec![file("/etc/containers/registries.conf", REG_OLD)]),
    );
    let new = mc(
        "b",
        files(vec![
            file("/etc/containers/registries.conf", REG_OLD),
            file("/etc/motd", "x"),
        ]),
    );
    let p = run(&old, &new);
    assert_eq!(p.actions, vec![Action::Reboot]);
}

#[test]
fn registries_conf_unparsable_drains_with_a_warning() {
    let old = mc(
        "a",
        files(vec![file("/etc/containers/registries.conf", REG_OLD)]),
    );
    let p = run(
        &old,
        &mc(
            "b",
            files(vec![file("/etc/containers/registries.conf", "[[registry")]),
        ),
    );
    assert!(p.drain);
    assert!(p.warnings.iter().any(|w| w.contains("invalid TOML")));
}

#[test]
fn registries_conf_user_override_replaces_special() {
    let old = mc(
        "a",
        files(vec![file("/etc/containers/registries.conf", REG_OLD)]),
    );
    let p = with_policy(
        &old,
        &mc(
            "b",
            files(vec![file(
                "/etc/containers/registries.conf",
                &format!("{REG_OLD}[[registry.mirror]]\nlocation = \"m\"\n"),
            )]),
        ),
        "spec:\n  nodeDisruptionPolicy:\n    files:\n    - path: /etc/containers/registries.conf\n      actions:\n      - type: Restart\n        restart:\n          serviceName: crio.service\n",
    );
    assert_eq!(p.actions, vec![restart("crio.service")]);
    assert!(!p.drain, "a user policy replaces the registries check");
}

#[test]
fn os_image_changes() {
    let a = mc("a", json!({"osImageURL": D1}));
    let b = mc("b", json!({"osImageURL": D2}));
    let p = run(&a, &b);
    assert_eq!(
        p.os_image,
        Some(Change {
            from: Some(D1.into()),
            to: D2.into()
        })
    );
    assert_eq!(p.actions, vec![Action::Reboot]);
    assert!(p.drain && p.reboot);
    // booted image already the desired one: no OS change (OCPBUGS-2757)
    let p = plan(&a, &b, Some(D2), &MachineConfiguration::default());
    assert_eq!(p.os_image, None);
    assert_eq!(p.actions, vec![Action::None]);
    // booted image differs from both: the booted one is the "from"
    let p = plan(&b, &b, Some(D1), &MachineConfiguration::default());
    assert_eq!(
        p.os_image,
        Some(Change {
            from: Some(D1.into()),
            to: D2.into()
        })
    );
    // desired without an image: nothing to do for the OS
    assert_eq!(run(&a, &mc("c", json!({}))).os_image, None);
}

#[test]
fn kernel_arguments_kernel_type_and_extensions_reboot() {
    let p = run(
        &mc("a", json!({"kernelArguments": ["nosmt"]})),
        &mc("b", json!({"kernelArguments": ["nosmt", "quiet"]})),
    );
    assert_eq!(
        p.kernel_arguments,
        KernelArgsChange {
            remove: vec![],
            add: vec!["quiet".into()]
        }
    );
    assert_eq!(p.actions, vec![Action::Reboot]);

    let p = run(
        &mc("a", json!({"kernelType": "default"})),
        &mc("b", json!({"kernelType": "realtime"})),
    );
    assert_eq!(
        p.kernel_type,
        Some(Change {
            from: Some(KernelType::Default),
            to: KernelType::Realtime
        })
    );
    assert_eq!(p.actions, vec![Action::Reboot]);
    // "", "default" and "throughput" are the same kernel
    assert_eq!(
        run(
            &mc("a", json!({"kernelType": ""})),
            &mc("b", json!({"kernelType": "throughput"}))
        )
        .kernel_type,
        None
    );

    let p = run(
        &mc("a", json!({"extensions": ["usbguard"]})),
        &mc("b", json!({"extensions": ["sysstat"]})),
    );
    assert_eq!(
        p.extensions,
        ExtensionsChange {
            add: vec!["sysstat".into()],
            remove: vec!["usbguard".into()]
        }
    );
    assert_eq!(p.actions, vec![Action::Reboot]);
}

#[test]
fn forcefile_forces_a_reboot() {
    let a = mc("a", json!({"osImageURL": D1}));
    let p = plan_with(
        &a,
        &a,
        Some(D1),
        &MachineConfiguration::default(),
        &PlanOptions {
            force: true,
            ..Default::default()
        },
    );
    assert!(p.forced && p.reboot && p.drain);
    assert!(!p.is_noop());
}

#[test]
fn first_boot_uses_the_legacy_table() {
    let opts = PlanOptions {
        first_boot: true,
        ..Default::default()
    };
    let new = mc(
        "b",
        files(vec![file("/etc/containers/registries.d/x", "x")]),
    );
    let p = plan_with(
        &MachineConfig::empty(),
        &new,
        None,
        &MachineConfiguration::default(),
        &opts,
    );
    assert_eq!(p.actions, vec![reload("crio.service")]);
    let new = mc(
        "b",
        json!({"config": {"systemd": {"units": [{"name": "a.service", "contents": "x"}]}}}),
    );
    let p = plan_with(
        &MachineConfig::empty(),
        &new,
        None,
        &MachineConfiguration::default(),
        &opts,
    );
    assert_eq!(p.actions, vec![Action::Reboot]);
}

/// Each unreconcilable field, with the field reported and nothing planned.
#[test]
fn unreconcilable_table() {
    let base = mc(
        "a",
        json!({"config": {"passwd": {"users": [{"name": "core", "sshAuthorizedKeys": ["k"]}]}}}),
    );
    let rows: Vec<(Value, &str, &str)> = vec![
        (
            json!({"config": {"storage": {"disks": [{"device": "/dev/sdb", "wipeTable": true}]}}}),
            "spec.config.storage.disks",
            "install time",
        ),
        (
            json!({"config": {"storage": {"filesystems": [{"device": "/dev/sdb1", "format": "xfs"}]}}}),
            "spec.config.storage.filesystems",
            "install time",
        ),
        (
            json!({"config": {"storage": {"raid": [{"name": "md0", "level": "raid1", "devices": ["/dev/a", "/dev/b"]}]}}}),
            "spec.config.storage.raid",
            "install time",
        ),
        (
            json!({"config": {"storage": {"luks": [{"name": "data", "device": "/dev/sdb"}]}}}),
            "spec.config.storage.luks",
            "install time",
        ),
        (
            json!({"config": {"storage": {"directories": [{"path": "/var/x"}]}}}),
            "spec.config.storage.directories",
            "directories",
        ),
        (
            json!({"config": {"storage": {"links": [{"path": "/etc/l", "target": "/etc/x"}]}}}),
            "spec.config.storage.links",
            "links",
        ),
        (
            json!({"config": {"kernelArguments": {"shouldExist": ["quiet"]}}}),
            "spec.config.kernelArguments",
            "first boot",
        ),
        (
            json!({"config": {"passwd": {"groups": [{"name": "g"}]}}}),
            "spec.config.passwd.groups",
            "groups",
        ),
        (
            json!({"config": {"passwd": {"users": [{"name": "alice", "sshAuthorizedKeys": ["k"]}]}}}),
            "spec.config.passwd.users[0]",
            "\"alice\"",
        ),
        (
            json!({"config": {"passwd": {"users": [{"name": "core", "sshAuthorizedKeys": ["k"], "shell": "/bin/zsh"}]}}}),
            "spec.config.passwd.users[0]",
            "shell",
        ),
        (
            json!({"config": {"storage": {"files": [{"path": "/etc/x", "append": [{"source": "data:,a"}]}]}}}),
            "spec.config.storage.files[0].append",
            "appending",
        ),
        (
            json!({"config": {"storage": {"files": [{"path": "/run/machine-config-daemon-force"}]}}}),
            "spec.config.storage.files[0].path",
            "forcefile",
        ),
        (json!({"fips": true}), "spec.fips", "FIPS"),
        (
            json!({"extensions": ["usbguard", "bitcoin-miner"]}),
            "spec.extensions[1]",
            "unknown extension",
        ),
    ];
    for (spec, field, reason) in rows {
        let p = run(&base, &mc("b", spec.clone()));
        assert!(!p.reconcilable, "{spec}");
        let u = p
            .unreconcilable
            .iter()
            .find(|u| u.field == field)
            .unwrap_or_else(|| panic!("{spec}: {:?}", p.unreconcilable));
        assert!(u.reason.contains(reason), "{field}: {}", u.reason);
        assert!(p.actions.is_empty() && !p.drain && !p.reboot, "{spec}");
    }
}

#[test]
fn links_may_be_emptied_and_unchanged_sections_pass() {
    let with_links = mc(
        "a",
        json!({"config": {"storage": {"links": [{"path": "/etc/l", "target": "/etc/x"}]}}}),
    );
    assert!(run(&with_links, &mc("b", json!({}))).reconcilable);
    assert!(run(&with_links, &with_links).reconcilable);
    let disks = mc(
        "a",
        json!({"config": {"storage": {"disks": [{"device": "/dev/sdb"}]}}}),
    );
    assert!(run(&disks, &disks).reconcilable);
    // a non-core user that does not change is not re-checked (as the MCD)
    let alice = mc(
        "a",
        json!({"config": {"passwd": {"users": [{"name": "alice"}]}}}),
    );
    assert!(run(&alice, &alice).reconcilable);
}

#[test]
fn storage_overrides_allow_disk_changes() {
    let p = with_policy(
        &mc("a", json!({})),
        &mc(
            "b",
            json!({"config": {"storage": {"disks": [{"device": "/dev/sdb"}]}}}),
        ),
        "spec:\n  irreconcilableValidationOverrides:\n    storage: [Disks]\n",
    );
    assert!(p.reconcilable, "{:?}", p.unreconcilable);
    let opts = PlanOptions {
        arch: "x86_64".into(),
        ..Default::default()
    };
    let p = plan_with(
        &mc("a", json!({})),
        &mc(
            "b",
            json!({"config": {"storage": {"raid": [{"name": "md0"}]}}}),
        ),
        None,
        &MachineConfiguration {
            storage_overrides: vec![StorageOverride::Disks],
            ..Default::default()
        },
        &opts,
    );
    assert!(!p.reconcilable);
}

#[test]
fn sixty_four_k_pages_only_on_aarch64() {
    let new = mc("b", json!({"kernelType": "64k-pages"}));
    for (arch, ok) in [("x86_64", false), ("aarch64", true)] {
        let opts = PlanOptions {
            arch: arch.into(),
            ..Default::default()
        };
        let p = plan_with(
            &mc("a", json!({})),
            &new,
            None,
            &MachineConfiguration::default(),
            &opts,
        );
        assert_eq!(p.reconcilable, ok, "{arch}");
    }
}

#[test]
fn json_shape() {
    let p = run(
        &mc("a", json!({"osImageURL": D1})),
        &mc("b", json!({"osImageURL": D2, "kernelArguments": ["x"]})),
    );
    let v = serde_json::to_value(&p).unwrap();
    for key in [
        "reconcilable",
        "unreconcilable",
        "osImage",
        "kernelArguments",
        "kernelType",
        "extensions",
        "files",
        "units",
        "sshKeys",
        "password",
        "actions",
        "drain",
        "reboot",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(v["osImage"], json!({"from": D1, "to": D2}));
    assert_eq!(v["kernelArguments"], json!({"remove": [], "add": ["x"]}));
    assert_eq!(v["actions"], json!([{"type": "Reboot"}]));
    let p = run(
        &mc("a", json!({})),
        &mc("b", files(vec![file("/etc/containers/policy.json", "x")])),
    );
    assert_eq!(
        serde_json::to_value(&p).unwrap()["actions"],
        json!([{"type": "Reload", "unit": "crio.service"}])
    );
    assert_eq!(serde_json::to_value(&p).unwrap()["kernelType"], Value::Null);
}

#[test]
fn text_summary_mentions_what_changes() {
    let p = run(
        &mc("a", json!({})),
        &mc("b", files(vec![file("/etc/containers/policy.json", "x")])),
    );
    let t = p.to_text();
    assert!(t.contains("Plan: a -> b"), "{t}");
    assert!(t.contains("+/etc/containers/policy.json"), "{t}");
    assert!(t.contains("Reload crio.service"), "{t}");
    assert!(t.contains("drain:         no"), "{t}");
    let p = run(&mc("a", json!({})), &mc("b", json!({"fips": true})));
    assert!(p.to_text().contains("UNRECONCILABLE"));
}

/// A MachineConfiguration at `generation` whose operator status (when given) says `status`.
fn configuration(generation: i64, spec: &str, status: Option<&str>) -> MachineConfiguration {
    let mut doc = format!(
        "apiVersion: operator.openshift.io/v1\nkind: MachineConfiguration\nmetadata:\n  name: cluster\n  generation: {generation}\n{spec}"
    );
    if let Some(s) = status {
        doc.push_str(s);
    }
    MachineConfiguration::from_slice(doc.as_bytes()).unwrap()
}

const SPEC_RESTART_FOO: &str = "spec:\n  nodeDisruptionPolicy:\n    files:\n    - path: /etc/foo.conf\n      actions:\n      - type: Restart\n        restart: {serviceName: foo.service}\n";

fn status_reload_bar(observed: i64) -> String {
    format!(
        "status:\n  observedGeneration: {observed}\n  nodeDisruptionPolicyStatus:\n    clusterPolicies:\n      files:\n      - path: /etc/foo.conf\n        actions:\n        - type: Reload\n          reload: {{serviceName: bar.service}}\n      - path: /etc/containers/registries.conf\n        actions:\n        - type: Special\n      sshkey:\n        actions:\n        - type: None\n"
    )
}

#[test]
fn the_operators_status_is_the_policy_once_it_observed_the_spec() {
    let (a, b) = (
        mc("a", files(vec![file("/etc/foo.conf", "1")])),
        mc("b", files(vec![file("/etc/foo.conf", "2")])),
    );
    let current = configuration(2, SPEC_RESTART_FOO, Some(&status_reload_bar(2)));
    assert_eq!(
        ClusterPolicy::effective(&current).1,
        PolicySource::OperatorStatus
    );
    let p = plan(&a, &b, None, &current);
    assert_eq!(p.actions, vec![reload("bar.service")]);
    // The status is the whole policy: a path only the built-in defaults know is a Reboot there.
    let c = mc(
        "c",
        files(vec![
            file("/etc/foo.conf", "1"),
            file("/var/lib/kubelet/config.json", "{}"),
        ]),
    );
    let p = plan(&a, &c, None, &current);
    assert_eq!(p.actions, vec![Action::Reboot]);

    // A status for an older spec, no status, or a status without cluster policies: our merge.
    let stale = configuration(3, SPEC_RESTART_FOO, Some(&status_reload_bar(2)));
    assert!(stale.cluster_policies_stale());
    let no_policies = configuration(
        2,
        SPEC_RESTART_FOO,
        Some("status:\n  observedGeneration: 2\n"),
    );
    for policy in [stale, configuration(2, SPEC_RESTART_FOO, None), no_policies] {
        assert_eq!(
            ClusterPolicy::effective(&policy).1,
            PolicySource::DefaultsMergedWithSpec
        );
        assert_eq!(
            plan(&a, &b, None, &policy).actions,
            vec![restart("foo.service")]
        );
    }
}

#[test]
fn overridden_storage_changes_are_accepted_and_change_nothing_on_the_node() {
    let a = mc("a", json!({}));
    let b = mc(
        "b",
        json!({"config": {"storage": {
            "disks": [{"device": "/dev/sdb", "partitions": [{"label": "data"}]}],
            "filesystems": [{"device": "/dev/disk/by-partlabel/data", "format": "xfs", "path": "/var/data"}],
            "raid": [{"name": "md0", "level": "raid1", "devices": ["/dev/sdc", "/dev/sdd"]}]}}}),
    );
    assert!(!run(&a, &b).reconcilable, "without overrides");
    let p = with_policy(
        &a,
        &b,
        "spec:\n  irreconcilableValidationOverrides:\n    storage: [Disks, FileSystems, Raid]\n",
    );
    assert!(p.reconcilable, "{:?}", p.unreconcilable);
    assert_eq!(p.actions, vec![Action::None]);
    assert!(!p.drain && !p.reboot && !p.touches_host() && !p.touches_os());
}

#[test]
fn the_health_gate_is_planned_only_when_a_new_deployment_boots() {
    let a = mc("a", json!({"osImageURL": D1}));
    // A new image: the gate runs after the reboot, and the text says which checks.
    let image = run(&a, &mc("b", json!({"osImageURL": D2})));
    let gate = image
        .health_gate
        .as_ref()
        .expect("an image change is gated");
    assert!(gate.node_ready);
    assert_eq!(
        gate.required_dirs[0],
        "/usr/lib/machine-config-daemon/health.d/required.d"
    );
    let t = image.to_text();
    assert!(
        t.contains("health gate:") && t.contains("rolls back to the current deployment"),
        "{t}"
    );
    // Kernel arguments make a new deployment too.
    let kargs = run(
        &a,
        &mc("b", json!({"osImageURL": D1, "kernelArguments": ["nosmt"]})),
    );
    assert!(kargs.health_gate.is_some());
    // A reboot for a file, a rebootless change, a forced re-apply of the booted image: no new deployment.
    let file_only = run(
        &a,
        &mc(
            "b",
            json!({"osImageURL": D1, "config": {"storage": {"files": [file("/etc/x", "1")]}}}),
        ),
    );
    assert!(file_only.reboot && file_only.health_gate.is_none());
    assert!(!file_only.to_text().contains("health gate"));
    let forced = plan_with(
        &a,
        &a,
        Some(D1),
        &MachineConfiguration::default(),
        &PlanOptions {
            force: true,
            ..Default::default()
        },
    );
    assert!(forced.reboot && forced.health_gate.is_none());
    // First boot: no API server and no known-good deployment of the config to go back to.
    let first = plan_with(
        &a,
        &mc("b", json!({"osImageURL": D2})),
        None,
        &MachineConfiguration::default(),
        &PlanOptions {
            first_boot: true,
            ..Default::default()
        },
    );
    assert!(first.health_gate.is_none());
}
