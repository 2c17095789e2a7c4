use super::*;

fn mc(yaml: &str) -> MachineConfig {
    MachineConfig::from_slice(yaml.as_bytes()).unwrap()
}

#[test]
fn desired_paths_must_not_collide() {
    let head = "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nspec:\n  config:\n    ignition: {version: 3.4.0}\n";
    let cases = [
        (
            "    storage:\n      files:\n      - path: /etc/systemd/system/a.service\n    systemd:\n      units:\n      - name: a.service\n        contents: x\n",
            "spec.config.systemd.units[0].name: \"/etc/systemd/system/a.service\" is also written by spec.config.storage.files[0].path",
        ),
        (
            "    storage:\n      files:\n      - path: /etc/a\n      - path: /etc/a/b\n",
            "spec.config.storage.files[0].path: \"/etc/a\" is written as a file, but spec.config.storage.files[1].path needs it to be a directory",
        ),
        (
            "    storage:\n      files:\n      - path: /etc/machine-config-daemon/currentconfig\n",
            "spec.config.storage.files[0].path: \"/etc/machine-config-daemon/currentconfig\" is the daemon's own state",
        ),
        (
            "    storage:\n      files:\n      - path: /etc/machine-config-daemon/orig/etc/x.mcdorig\n",
            "is the daemon's own state",
        ),
        (
            "    storage:\n      files:\n      - path: /home\n",
            "spec.config.storage.files[0].path: \"/home\" is a top-level directory",
        ),
    ];
    for (body, want) in cases {
        let config = mc(&format!("{head}{body}"));
        let err = check_desired_paths(&managed_paths(&config)).unwrap_err();
        assert!(err.to_string().contains(want), "{err} vs {want}");
    }
}

/// The core computes every operation, in phases, and touches nothing.
#[test]
fn build_plans_phases_and_writes_nothing() {
    let td = tempfile::tempdir().unwrap();
    let etc = td.path().join("etc");
    std::fs::create_dir_all(etc.join("machine-config-daemon/noorig/etc")).unwrap();
    std::fs::write(etc.join("admin.conf"), "mine\n").unwrap();
    std::fs::write(etc.join("old.conf"), "old\n").unwrap();
    std::fs::write(
        etc.join("machine-config-daemon/noorig/etc/old.conf.mcdnoorig"),
        "",
    )
    .unwrap();
    std::fs::write(etc.join(".admin.conf.mcd-tmp"), "left by a killed apply").unwrap();
    let listing = |p: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = walk(p);
        v.sort();
        v
    };
    let before = listing(td.path());

    let head = "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nspec:\n  config:\n    ignition: {version: 3.4.0}\n    storage:\n      files:\n";
    let current = mc(&format!(
        "{head}      - path: /etc/old.conf\n        contents: {{source: 'data:,old%0A'}}\n"
    ));
    let desired = mc(&format!(
        "{head}      - path: /etc/admin.conf\n        mode: 384\n        contents: {{source: 'data:,ours'}}\n"
    ));
    let root = Root::open(td.path()).unwrap();
    let ws = build(
        &root,
        Inputs {
            current: &current,
            desired: &desired,
            ssh_keys_changed: false,
            password_changed: false,
            write_odc: true,
        },
    )
    .unwrap();
    let summary = |ops: &[Op<'_>]| -> Vec<(String, Reason)> {
        ops.iter().map(|o| (o.path.clone(), o.reason)).collect()
    };
    assert_eq!(
        summary(&ws.prepare),
        vec![
            ("/etc/.admin.conf.mcd-tmp".into(), Reason::TempLeftover),
            ("/etc/machine-config-daemon/orig".into(), Reason::ParentDir),
            (
                "/etc/machine-config-daemon/orig/etc".into(),
                Reason::ParentDir
            ),
        ]
    );
    assert_eq!(
        summary(&ws.backups),
        vec![(
            "/etc/machine-config-daemon/orig/etc/admin.conf.mcdorig".into(),
            Reason::Backup
        )]
    );
    assert_eq!(
        summary(&ws.changes),
        vec![
            ("/etc/admin.conf".into(), Reason::File),
            ("/etc/old.conf".into(), Reason::RemoveStale),
        ]
    );
    assert!(matches!(
        &ws.changes[0].action,
        Action::Write {
            mode: 0o600,
            uid: 0,
            gid: 0,
            ..
        }
    ));
    assert_eq!(
        summary(&ws.odc),
        vec![(
            "/etc/machine-config-daemon/currentconfig".into(),
            Reason::CurrentConfig
        )]
    );
    assert_eq!(
        summary(&ws.cleanup),
        vec![(
            "/etc/machine-config-daemon/noorig/etc/old.conf.mcdnoorig".into(),
            Reason::DropBackup
        )]
    );
    assert_eq!(listing(td.path()), before, "building wrote something");
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

#[test]
fn contents_never_show_in_debug() {
    let c = Contents(Cow::Borrowed(b"$6$secret$hash"));
    assert_eq!(format!("{c:?}"), "<14 bytes>");
}

#[test]
fn authorized_keys_one_per_line() {
    assert_eq!(
        authorized_keys(&["ssh-ed25519 A a".into(), "ssh-rsa B b".into()]),
        b"ssh-ed25519 A a\nssh-rsa B b\n"
    );
    assert!(authorized_keys(&[]).is_empty());
}
