//! The daemon's OS pulls end to end (see `tests/e2e/mod.rs`): the ostree work runs in helper processes,
//! and stopping the daemon mid-pull stops its helper, which removes what it had fetched.

mod e2e;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{Lab, ignition, mc};
use testbed::{LayerSpec, Link, LinkModel};

/// Processes whose parent is `pid`, with their command lines.
fn children(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in list
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
            out.push((child, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    out
}

/// Processes (not zombies) in process group `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let rest: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            rest.first() != Some(&"Z") && rest.get(2) == Some(&pgid.to_string().as_str())
        })
        .collect()
}

fn layer_refs(sysroot: &Path) -> Vec<String> {
    let out = Command::new("ostree")
        .arg(format!("--repo={}", sysroot.join("ostree/repo").display()))
        .arg("refs")
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|r| r.starts_with("ostree/container/blob/"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_pull_stops_the_helper_cleanly_and_a_restart_completes_the_update() {
    let mut lab = Lab::at_base("rendered-1", &[("/etc/motd", "one\n")], &[]).await;
    lab.derive(
        "big",
        LayerSpec::new("RUN install a runtime").random_file("usr/lib/runtime/blob", 4 << 20),
    );
    // The registry behind a slow link: the 4 MB layer takes ~20 s.
    let link = Link::start(
        &lab.registry.addr(),
        LinkModel {
            rate_bytes_per_sec: 200_000,
            latency: Duration::from_millis(5),
            cut_after_bytes: None,
        },
    )
    .unwrap();
    let image = format!("{}/os@{}", link.addr(), lab.built["big"].manifest_digest);
    lab.node
        .write(
            "etc/containers/registries.conf",
            format!(
                "{}{}",
                lab.registry.registries_conf(),
                link.registries_conf()
            ),
        )
        .unwrap();
    lab.put_mc(&mc(
        "rendered-2",
        Some(&image),
        &[],
        ignition(&[("/etc/motd", "two\n")], &[]),
    ));
    lab.start();
    lab.wait_settled().await;
    let daemon = lab.daemon_pid().unwrap();
    assert!(
        children(daemon)
            .iter()
            .all(|(_, c)| !c.contains("ostree-helper")),
        "no helper while idle: {:?}",
        children(daemon)
    );
    let refs_before = layer_refs(lab.sysroot.path());

    lab.set_desired("rendered-2", None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while link
        .stats()
        .bytes_down
        .load(std::sync::atomic::Ordering::Relaxed)
        < 400_000
    {
        assert!(
            Instant::now() < deadline,
            "the pull did not start\n{}",
            lab.describe()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let helpers: Vec<u32> = children(daemon)
        .into_iter()
        .filter(|(_, c)| c.contains("ostree-helper"))
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(helpers.len(), 1, "one helper pulls: {:?}", children(daemon));
    assert!(!group_members(helpers[0]).is_empty());

    let (_, took) = lab.stop_timed().unwrap();
    assert!(
        took < Duration::from_secs(15),
        "stopping took {took:?}\n{}",
        lab.logs()
    );
    assert!(
        group_members(helpers[0]).is_empty(),
        "the helper and its skopeo processes are gone"
    );
    assert_eq!(
        layer_refs(lab.sysroot.path()),
        refs_before,
        "no layer of the interrupted pull is left"
    );
    let logs = lab.logs();
    assert!(logs.contains("stopping the ostree helper"), "{logs}");
    assert!(
        logs.contains("removed what the failed pull had written"),
        "{logs}"
    );

    // The network is fast again: the restarted daemon pulls, stages and reboots into the image.
    link.set_model(LinkModel {
        rate_bytes_per_sec: 100_000_000,
        ..link.model()
    });
    lab.start();
    lab.wait_reboot_request(1).await;
    lab.reboot();
    lab.wait_updated("rendered-2").await;
    assert_eq!(lab.default_deployment_image(), image);
    assert_eq!(lab.file("/etc/motd").as_deref(), Some("two\n"));
    lab.stop();
}
