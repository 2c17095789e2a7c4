//! The systemd units, preset, tmpfiles.d snippet and environment file in systemd/, checked with
//! systemd's own tools on a temporary root (nothing is started, the host's systemd is not touched)
//! and against what the daemon needs (paths from its own constants, its command line from clap).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use machine_config_daemon::config::paths;

const UNITS: &[&str] = &[
    "machine-config-daemon.service",
    "machine-config-daemon-firstboot.service",
    "firstboot-osupdate.target",
];
const SERVICES: &[&str] = &[
    "machine-config-daemon.service",
    "machine-config-daemon-firstboot.service",
];

fn systemd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../systemd")
}

/// `section` → key → values in file order (keys may repeat).
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn parse_unit(name: &str) -> Unit {
    let text = std::fs::read_to_string(systemd_dir().join(name)).unwrap();
    let mut unit = Unit::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = line.split_once('=').expect("key=value");
        unit.entry(section.clone())
            .or_default()
            .entry(k.trim().to_string())
            .or_default()
            .push(v.trim().to_string());
    }
    unit
}

fn values<'a>(unit: &'a Unit, section: &str, key: &str) -> Vec<&'a str> {
    unit.get(section)
        .and_then(|s| s.get(key))
        .map(|v| v.iter().flat_map(|x| x.split_whitespace()).collect())
        .unwrap_or_default()
}

fn value<'a>(unit: &'a Unit, section: &str, key: &str) -> Option<&'a str> {
    unit.get(section)
        .and_then(|s| s.get(key))
        .and_then(|v| v.last())
        .map(String::as_str)
}

/// A root with the host's unit files (the real targets ours depend on), ours, and an executable at
/// the path ExecStart names.
fn temp_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let unit_dir = root.path().join("usr/lib/systemd/system");
    std::fs::create_dir_all(&unit_dir).unwrap();
    let host_units = Path::new("/usr/lib/systemd/system");
    assert!(
        host_units.join("multi-user.target").exists(),
        "systemd's unit files are installed (packaging/setup-dev.sh installs systemd)"
    );
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", host_units.display()))
        .arg(&unit_dir)
        .status()
        .unwrap();
    assert!(status.success());
    for u in UNITS {
        std::fs::copy(systemd_dir().join(u), unit_dir.join(u)).unwrap();
    }
    for exe in [format!("usr/bin/{}", docgen::BIN), "bin/sh".to_string()] {
        let path = root.path().join(exe);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::create_dir_all(root.path().join("etc/systemd/system")).unwrap();
    root
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let root = temp_root();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.path().display()))
        .args(UNITS)
        .output()
        .expect("systemd-analyze runs");
    let messages = String::from_utf8_lossy(&out.stderr);
    // systemd-analyze exits 0 on unknown keys and bad values: any message is a failure here.
    assert!(
        out.status.success() && messages.trim().is_empty(),
        "systemd-analyze verify:\n{messages}"
    );
}

#[test]
fn systemd_analyze_verify_catches_a_broken_unit() {
    // The check above can fail: a misspelt key and a bad value are reported.
    let root = temp_root();
    let unit = root
        .path()
        .join("usr/lib/systemd/system/machine-config-daemon.service");
    let text = std::fs::read_to_string(&unit)
        .unwrap()
        .replace("KillMode=mixed", "KillMode=mixd")
        .replace("WatchdogSec=", "WatchdogSecs=");
    std::fs::write(&unit, text).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.path().display()))
        .arg("machine-config-daemon.service")
        .output()
        .unwrap();
    let messages = String::from_utf8_lossy(&out.stderr);
    assert!(messages.contains("kill mode"), "{messages}");
    assert!(messages.contains("WatchdogSecs"), "{messages}");
}

#[test]
fn preset_enables_the_daemon_and_the_firstboot_chain() {
    let root = temp_root();
    let preset_dir = root.path().join("usr/lib/systemd/system-preset");
    std::fs::create_dir_all(&preset_dir).unwrap();
    // Only ours: the host's presets would decide for its own units.
    for e in std::fs::read_dir(&preset_dir).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    std::fs::copy(
        systemd_dir().join("80-machine-config-daemon.preset"),
        preset_dir.join("80-machine-config-daemon.preset"),
    )
    .unwrap();
    let out = Command::new("systemctl")
        .arg(format!("--root={}", root.path().display()))
        .arg("preset")
        .args(UNITS)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let etc = root.path().join("etc/systemd/system");
    for link in [
        "multi-user.target.wants/machine-config-daemon.service",
        "multi-user.target.wants/firstboot-osupdate.target",
        "firstboot-osupdate.target.requires/machine-config-daemon-firstboot.service",
    ] {
        let target = std::fs::read_link(etc.join(link))
            .unwrap_or_else(|_| panic!("preset did not create {link}"));
        let unit = link.rsplit('/').next().unwrap();
        assert_eq!(target, Path::new("/usr/lib/systemd/system").join(unit));
    }
}

#[test]
fn tmpfiles_creates_the_state_directory_for_root_only() {
    let root = tempfile::tempdir().unwrap();
    let out = Command::new("systemd-tmpfiles")
        .arg("--create")
        .arg(format!("--root={}", root.path().display()))
        .arg(systemd_dir().join("machine-config-daemon.tmpfiles.conf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = root.path().join(paths::STATE_DIR.trim_start_matches('/'));
    let meta = std::fs::metadata(&dir).expect("the daemon's state directory exists");
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
    // A directory that exists with a looser mode is tightened.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let status = Command::new("systemd-tmpfiles")
        .arg("--create")
        .arg(format!("--root={}", root.path().display()))
        .arg(systemd_dir().join("machine-config-daemon.tmpfiles.conf"))
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777,
        0o700
    );
}

/// Whether a process of `unit` may write `path` and the host sees the write, following
/// systemd.exec(5): ProtectSystem=, ReadWritePaths=, ReadOnlyPaths=, InaccessiblePaths=,
/// ProtectHome=, PrivateTmp=, ProtectKernelTunables=, ProtectControlGroups=.
fn host_writable(unit: &Unit, path: &str) -> Result<(), String> {
    let under =
        |p: &str, dir: &str| p == dir || p.starts_with(&format!("{}/", dir.trim_end_matches('/')));
    let list = |key: &str| -> Vec<String> {
        values(unit, "Service", key)
            .into_iter()
            .map(|p| p.trim_start_matches(['-', '+']).to_string())
            .collect()
    };
    let yes = |key: &str| {
        matches!(
            value(unit, "Service", key),
            Some("yes" | "true" | "on" | "1")
        )
    };
    if list("InaccessiblePaths").iter().any(|d| under(path, d)) {
        return Err("inaccessible".into());
    }
    if yes("PrivateTmp") && (under(path, "/tmp") || under(path, "/var/tmp")) {
        return Err("PrivateTmp= hides it from the host".into());
    }
    if let Some(home) = value(unit, "Service", "ProtectHome")
        && home != "no"
        && home != "false"
        && ["/home", "/root", "/run/user"]
            .iter()
            .any(|d| under(path, d))
    {
        return Err(format!("ProtectHome={home}"));
    }
    if yes("ProtectKernelTunables") && (under(path, "/proc/sys") || under(path, "/sys")) {
        return Err("ProtectKernelTunables=".into());
    }
    if yes("ProtectControlGroups") && under(path, "/sys/fs/cgroup") {
        return Err("ProtectControlGroups=".into());
    }
    // The most specific of ReadWritePaths= / ReadOnlyPaths= wins.
    let best = |key: &str| {
        list(key)
            .into_iter()
            .filter(|d| under(path, d))
            .map(|d| d.len())
            .max()
    };
    match (best("ReadWritePaths"), best("ReadOnlyPaths")) {
        (Some(rw), Some(ro)) if ro > rw => return Err("ReadOnlyPaths=".into()),
        (Some(_), _) => return Ok(()),
        (None, Some(_)) => return Err("ReadOnlyPaths=".into()),
        (None, None) => {}
    }
    let api_fs = ["/dev", "/proc", "/sys"].iter().any(|d| under(path, d));
    match value(unit, "Service", "ProtectSystem") {
        Some("strict") if !api_fs => Err("ProtectSystem=strict".into()),
        Some("full")
            if ["/usr", "/boot", "/efi", "/etc"]
                .iter()
                .any(|d| under(path, d)) =>
        {
            Err("ProtectSystem=full".into())
        }
        Some("yes" | "true") if ["/usr", "/boot", "/efi"].iter().any(|d| under(path, d)) => {
            Err("ProtectSystem=yes".into())
        }
        _ => Ok(()),
    }
}

/// Where the daemon (and the ostree and skopeo code it runs) writes on a node.
fn daemon_writes() -> Vec<&'static str> {
    vec![
        paths::STATE_DIR,
        paths::CURRENT_CONFIG,
        paths::ORIG_DIR,
        paths::ENCAPSULATED_CONFIG,
        paths::SYSTEMD_UNIT_DIR,
        paths::REGISTRIES_CONF,
        paths::FORCEFILE,
        // SSH keys: the path in the config, and where it resolves on ostree systems.
        paths::CORE_SSH_KEYS,
        "/var/home/core/.ssh/authorized_keys.d/ignition",
        "/etc/kubernetes/kubelet-ca.crt",
        "/var/lib/kubelet/config.json",
        // Config files may live anywhere under /var, including its temporary directory.
        "/var/tmp/from-a-machineconfig",
        "/var/lib/containers/storage",
        // OS updates: the ostree repository and deployments, boot loader entries, the staged marker.
        "/sysroot/ostree/repo/objects",
        "/sysroot/ostree/deploy/os/deploy",
        "/boot/loader/entries",
        "/run/ostree/staged-deployment",
        "/run/ostree/auth.json",
        "/tmp/ostree-ext-tmp",
    ]
}

#[test]
fn sandbox_lets_the_daemon_write_where_it_must_and_nowhere_else() {
    for name in SERVICES {
        let unit = parse_unit(name);
        for path in daemon_writes() {
            if let Err(why) = host_writable(&unit, path) {
                panic!("{name}: the daemon cannot write {path}: {why}");
            }
        }
        for path in [
            "/usr/bin/machine-config-daemon",
            "/usr/lib/os-release",
            "/opt-is-a-symlink-on-ostree/x",
            "/proc/sys/kernel/hostname",
            "/sys/fs/cgroup/system.slice",
        ] {
            assert!(
                host_writable(&unit, path).is_err(),
                "{name}: {path} should be read-only for the daemon"
            );
        }
        // The remount of /sysroot only works if systemd adds no read-only mount of its own there.
        assert!(
            values(&unit, "Service", "ReadWritePaths").contains(&"/sysroot"),
            "{name}: /sysroot must be listed in ReadWritePaths="
        );
        for forbidden in [
            "CapabilityBoundingSet",
            "SystemCallFilter",
            "PrivateDevices",
        ] {
            assert!(
                value(&unit, "Service", forbidden).is_none(),
                "{name}: {forbidden}= would break OS updates (see the unit's comments)"
            );
        }
        assert_ne!(
            value(&unit, "Service", "NoNewPrivileges"),
            Some("yes"),
            "{name}: NoNewPrivileges=yes blocks SELinux transitions of the tools it runs"
        );
    }
    // Both services run the same code: the same sandbox.
    let sandbox = |u: &Unit| -> BTreeMap<String, Vec<String>> {
        u["Service"]
            .iter()
            .filter(|(k, _)| {
                k.starts_with("Protect")
                    || k.starts_with("Restrict")
                    || k.ends_with("Paths")
                    || ["PrivateTmp", "NoNewPrivileges", "LockPersonality", "UMask"]
                        .contains(&k.as_str())
                    || k.as_str() == "SystemCallArchitectures"
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    assert_eq!(
        sandbox(&parse_unit(SERVICES[0])),
        sandbox(&parse_unit(SERVICES[1]))
    );
}

#[test]
fn sandbox_model_refuses_what_systemd_would() {
    // The model above can say no: each setting that would break the daemon is caught.
    let base = parse_unit("machine-config-daemon.service");
    let with = |key: &str, v: &str| {
        let mut u = base.clone();
        u.get_mut("Service")
            .unwrap()
            .insert(key.to_string(), vec![v.to_string()]);
        u
    };
    assert!(host_writable(&with("PrivateTmp", "yes"), "/var/tmp/x").is_err());
    assert!(host_writable(&with("ProtectHome", "read-only"), paths::CORE_SSH_KEYS).is_err());
    assert!(
        host_writable(
            &with("ReadWritePaths", "/etc /var /run /tmp"),
            "/sysroot/ostree"
        )
        .is_err()
    );
    assert!(
        host_writable(
            &with("ReadOnlyPaths", "/etc/machine-config-daemon"),
            paths::CURRENT_CONFIG
        )
        .is_err()
    );
    assert!(
        host_writable(
            &with("ReadWritePaths", "/etc /var /run /tmp /sysroot"),
            "/boot/loader"
        )
        .is_err()
    );
    let mut full = with("ProtectSystem", "full");
    full.get_mut("Service").unwrap().remove("ReadWritePaths");
    assert!(host_writable(&full, paths::CURRENT_CONFIG).is_err());
    assert!(host_writable(&full, "/var/lib/x").is_ok());
}

#[test]
fn daemon_unit_lets_an_update_finish_and_keeps_the_daemon_running() {
    let u = parse_unit("machine-config-daemon.service");
    let s = |k| value(&u, "Service", k);
    assert_eq!(s("Type"), Some("notify"), "READY=1 after the first sync");
    assert!(s("WatchdogSec").is_some(), "the daemon sends WATCHDOG=1");
    // READY=1 follows the first sync, which may be a whole update: no start timeout may cut it.
    assert_eq!(s("TimeoutStartSec"), Some("infinity"));
    assert_eq!(s("Restart"), Some("always"));
    assert_eq!(value(&u, "Unit", "StartLimitIntervalSec"), Some("0"));
    // SIGTERM to the daemon only; its children finish the step; 600 s like the MCD's grace period.
    assert_eq!(s("KillMode"), Some("mixed"));
    assert_eq!(s("TimeoutStopSec"), Some("600"));
    assert_eq!(
        values(&u, "Service", "RestartPreventExitStatus"),
        [machine_config_daemon::cli::exit::INVALID_INPUT
            .to_string()
            .as_str()]
    );
    let after = values(&u, "Unit", "After");
    let wants = values(&u, "Unit", "Wants");
    for dep in [
        "network-online.target",
        "machine-config-daemon-firstboot.service",
        "ostree-finalize-staged.service",
    ] {
        assert!(after.contains(&dep), "After= lacks {dep}");
    }
    assert!(wants.contains(&"network-online.target"));
    // Without default dependencies, the shutdown ordering must be restated.
    if value(&u, "Unit", "DefaultDependencies") == Some("no") {
        assert!(values(&u, "Unit", "Conflicts").contains(&"shutdown.target"));
        assert!(values(&u, "Unit", "Before").contains(&"shutdown.target"));
        assert!(values(&u, "Unit", "Requires").contains(&"sysinit.target"));
        assert!(after.contains(&"basic.target"));
    }
    let mounts = values(&u, "Unit", "RequiresMountsFor");
    for m in ["/sysroot", "/boot"] {
        assert!(mounts.contains(&m), "RequiresMountsFor= lacks {m}");
    }
    assert!(values(&u, "Unit", "ConditionPathExists").contains(&"/run/ostree-booted"));
}

#[test]
fn firstboot_runs_once_before_the_kubelet() {
    let u = parse_unit("machine-config-daemon-firstboot.service");
    let conditions = values(&u, "Unit", "ConditionPathExists");
    assert!(conditions.contains(&"/run/ostree-booted"));
    assert!(
        conditions.contains(&paths::ENCAPSULATED_CONFIG),
        "runs only while the daemon's first-boot config ({}) exists",
        paths::ENCAPSULATED_CONFIG
    );
    let before = values(&u, "Unit", "Before");
    assert!(before.contains(&"kubelet.service"));
    assert!(before.contains(&"kubelet-dependencies.target"));
    assert_eq!(value(&u, "Service", "Type"), Some("oneshot"));
    assert_eq!(value(&u, "Service", "RemainAfterExit"), Some("yes"));
    assert_eq!(
        values(&u, "Install", "RequiredBy"),
        ["firstboot-osupdate.target"]
    );
    let t = parse_unit("firstboot-osupdate.target");
    assert!(values(&t, "Unit", "Before").contains(&"kubelet.service"));
    assert_eq!(values(&t, "Install", "WantedBy"), ["multi-user.target"]);
    // No container pull: the unit runs the binary from the OS image.
    let exec = value(&u, "Service", "ExecStart").unwrap();
    assert!(
        exec.starts_with(&format!("/usr/bin/{} ", docgen::BIN)),
        "{exec}"
    );
    assert!(!exec.contains("podman"));
}

/// `KEY=value` lines of the environment file (what systemd's EnvironmentFile= reads).
fn environment_file() -> BTreeMap<String, String> {
    std::fs::read_to_string(systemd_dir().join("machine-config-daemon.sysconfig"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=value");
            (k.to_string(), v.trim_matches('"').to_string())
        })
        .collect()
}

/// systemd's splitting of an ExecStart= line (systemd.service(5), "Command lines"): quotes group
/// words, `$$` is a literal `$`, an unquoted `$VAR` word becomes the variable's words and `${VAR}` its
/// value.
fn systemd_argv(line: &str, env: &BTreeMap<String, String>) -> Vec<String> {
    let mut words: Vec<(String, bool)> = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        let mut quoted = false;
        while let Some(&c) = chars.peek() {
            match c {
                '\'' | '"' => {
                    quoted = true;
                    chars.next();
                    for d in chars.by_ref() {
                        if d == c {
                            break;
                        }
                        word.push(d);
                    }
                }
                c if c.is_whitespace() => break,
                c => {
                    word.push(c);
                    chars.next();
                }
            }
        }
        words.push((word, quoted));
    }
    let mut argv = Vec::new();
    for (word, quoted) in words {
        let unescaped = word.replace("$$", "\u{0}");
        if !quoted
            && let Some(var) = unescaped.strip_prefix('$')
            && !var.starts_with('{')
        {
            let v = env
                .get(var)
                .unwrap_or_else(|| panic!("${var} is not in the environment file"));
            argv.extend(v.split_whitespace().map(String::from));
            continue;
        }
        let mut out = unescaped.clone();
        for (k, v) in env {
            out = out.replace(&format!("${{{k}}}"), v);
        }
        argv.push(out.replace('\u{0}', "$"));
    }
    argv
}

/// Run an ExecStart= line the way systemd would, with a stand-in daemon that prints the arguments
/// it was given; returns them (argv[0] is the daemon's path).
fn daemon_argv(exec: &str, env: &BTreeMap<String, String>) -> Vec<String> {
    let daemon = format!("/usr/bin/{}", docgen::BIN);
    let argv = systemd_argv(exec, env);
    if argv[0] == daemon {
        return argv;
    }
    assert_eq!(
        &argv[..2],
        ["/bin/sh", "-c"],
        "ExecStart runs the daemon or a shell: {exec}"
    );
    assert_eq!(argv.len(), 3, "{argv:?}");
    let dir = tempfile::tempdir().unwrap();
    let stand_in = dir.path().join("daemon");
    std::fs::write(&stand_in, "#!/bin/sh\nprintf '%s\\n' \"$0\" \"$@\"\n").unwrap();
    std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = argv[2].replace(
        &format!("exec {daemon} "),
        &format!("exec {} ", stand_in.display()),
    );
    assert_ne!(script, argv[2], "the shell execs {daemon}: {}", argv[2]);
    let out = Command::new("/bin/sh")
        .args(["-c", &script])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    got[0] = daemon;
    got
}

fn accepted_by_the_cli(unit: &str, argv: &[String]) {
    let cmd = docgen::command();
    let sub = &argv[1];
    // A unit that runs a subcommand the CLI does not have fails at boot: fail here instead.
    assert!(
        cmd.find_subcommand(sub).is_some(),
        "{unit}: ExecStart runs `{sub}`, which the CLI does not have (subcommands: {})",
        cmd.get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Err(e) = cmd.clone().try_get_matches_from(argv) {
        panic!(
            "{unit}: `{}` is rejected by the CLI:\n{e}",
            argv[1..].join(" ")
        );
    }
}

#[test]
fn daemon_command_line_names_the_node_and_passes_extra_options() {
    let exec = value(&parse_unit(SERVICES[0]), "Service", "ExecStart")
        .unwrap()
        .to_string();
    let defaults = environment_file();
    assert!(
        !defaults.contains_key("NODE_NAME"),
        "no node name by default"
    );

    // Default: this host's name, lowercased, read when the daemon starts.
    let argv = daemon_argv(&exec, &defaults);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_lowercase();
    assert_eq!(argv[1..], ["start", "--node-name", host.as_str()]);
    accepted_by_the_cli(SERVICES[0], &argv);

    // NODE_NAME and MCD_ARGS from the environment file.
    let mut env = defaults.clone();
    env.insert("NODE_NAME".into(), "ip-10-0-1-7.ec2.internal".into());
    env.insert(
        "MCD_ARGS".into(),
        "--drain-mode controller --drain-timeout 30m".into(),
    );
    let argv = daemon_argv(&exec, &env);
    assert_eq!(
        argv[1..],
        [
            "start",
            "--node-name",
            "ip-10-0-1-7.ec2.internal",
            "--drain-mode",
            "controller",
            "--drain-timeout",
            "30m"
        ]
    );
    accepted_by_the_cli(SERVICES[0], &argv);
}

#[test]
fn firstboot_command_line_is_accepted_by_the_cli() {
    let exec = value(&parse_unit(SERVICES[1]), "Service", "ExecStart")
        .unwrap()
        .to_string();
    let argv = daemon_argv(&exec, &environment_file());
    assert_eq!(argv[1..], ["firstboot-complete-machineconfig"]);
    accepted_by_the_cli(SERVICES[1], &argv);
}

/// The check itself can fail: a unit running a subcommand the CLI lacks is an error, not a note.
#[test]
#[should_panic(expected = "ExecStart runs `no-such-command`, which the CLI does not have")]
fn a_unit_running_a_missing_subcommand_fails_the_check() {
    let argv: Vec<String> = ["machine-config-daemon", "no-such-command", "--flag"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    accepted_by_the_cli("example.service", &argv);
}
