//! Crash safety: the apply is killed with SIGKILL at every hit of every crash point (the list is the
//! crate's own, so a new point cannot be forgotten here), then run again. At every kill point each path
//! is wholly old or wholly new; after the rerun the root is exactly what an uninterrupted apply makes.
//!
//! Needs the `failpoints` feature: `cargo test --features failpoints --test host_crash`.
#![cfg(feature = "failpoints")]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use machine_config_daemon::host::failpoints::CRASH_POINTS;

/// An update scenario: how to prepare the root and which config to apply.
struct Scenario {
    name: &'static str,
    /// Configs applied (uninterrupted) before the one under test.
    seed: &'static [&'static str],
    desired: &'static str,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "first config on a fresh node",
        seed: &[],
        desired: "worker-1.yaml",
    },
    Scenario {
        name: "update with restores and removals",
        seed: &["worker-1.yaml"],
        desired: "worker-2.yaml",
    },
];

fn seeded(s: &Scenario) -> TestRoot {
    let root = TestRoot::new();
    for cfg in s.seed {
        assert_code(&apply(&root, cfg, None), 0);
    }
    root
}

fn apply(root: &TestRoot, cfg: &str, failpoints: Option<&str>) -> std::process::Output {
    let desired = fixture(cfg).display().to_string();
    let env: Vec<(&str, &str)> = failpoints.map(|f| ("FAILPOINTS", f)).into_iter().collect();
    root.run_env(&["apply", "--desired", &desired], &env)
}

fn is_temp(p: &Path) -> bool {
    p.to_string_lossy().contains(".mcd-tmp")
}

/// Every path is as before the apply or as after it (temp files aside).
fn assert_old_or_new(before: &Tree, after: &Tree, now: &Tree, context: &str) {
    let mut paths: Vec<&PathBuf> = before
        .keys()
        .chain(after.keys())
        .chain(now.keys())
        .collect();
    paths.sort();
    paths.dedup();
    for p in paths {
        if is_temp(p) {
            continue;
        }
        let n = now.get(p);
        assert!(
            n == before.get(p) || n == after.get(p),
            "{context}: {} is neither old nor new: {n:?}\n  old: {:?}\n  new: {:?}",
            p.display(),
            before.get(p),
            after.get(p)
        );
    }
}

#[test]
fn killed_at_every_point_converges() {
    let mut kills = 0;
    let mut hits_per_point = std::collections::BTreeMap::new();
    for s in SCENARIOS {
        let reference = seeded(s);
        let before = reference.snapshot();
        assert_code(&apply(&reference, s.desired, None), 0);
        let after = reference.snapshot();
        assert_ne!(before, after, "{}: the scenario changes something", s.name);

        for point in CRASH_POINTS {
            let mut hit = 0;
            loop {
                let root = seeded(s);
                let out = apply(
                    &root,
                    s.desired,
                    Some(&format!("{point}={hit}*off->return")),
                );
                if out.status.success() {
                    break; // the point is hit fewer than hit+1 times: all of them were tried
                }
                let context = format!("{}: killed at {point} #{hit}", s.name);
                assert_eq!(
                    out.status.signal(),
                    Some(9),
                    "{context}: expected SIGKILL, got {:?}\n{}",
                    out.status,
                    stderr(&out)
                );
                kills += 1;
                assert_old_or_new(&before, &after, &root.snapshot(), &context);

                let rerun = apply(&root, s.desired, None);
                assert_code(&rerun, 0);
                assert_eq!(
                    diff(&after, &root.snapshot()),
                    Vec::<String>::new(),
                    "{context}: the rerun did not converge"
                );
                hit += 1;
                assert!(hit < 500, "{context}: runaway loop");
            }
            *hits_per_point.entry(*point).or_insert(0) += hit;
            eprintln!("{}: {point}: killed at all {hit} hits", s.name);
        }
    }
    for point in CRASH_POINTS {
        assert!(
            hits_per_point[point] > 0,
            "crash point {point} was never reached"
        );
    }
    eprintln!("{kills} kills, each converged");
}

/// A kill from outside, while the apply sleeps between two staged writes.
#[test]
fn external_sigkill_mid_apply_converges() {
    let s = &SCENARIOS[1];
    let reference = seeded(s);
    let before = reference.snapshot();
    assert_code(&apply(&reference, s.desired, None), 0);
    let after = reference.snapshot();

    let root = seeded(s);
    let mut child = std::process::Command::new(BIN)
        .args(["apply", "--desired"])
        .arg(fixture(s.desired))
        .arg("--root")
        .arg(root.path())
        .env("FAILPOINTS", "host::stage=1*off->sleep(60000)")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // One staged temp file means it sleeps before staging the second; make sure it stays put.
    let deadline = Instant::now() + Duration::from_secs(30);
    let temps = |root: &TestRoot| -> Vec<PathBuf> {
        root.snapshot().into_keys().filter(|p| is_temp(p)).collect()
    };
    while temps(&root).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the apply never reached the sleep"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the apply finished without sleeping"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = temps(&root);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(temps(&root), seen, "the apply is not asleep");
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9));
    assert_old_or_new(&before, &after, &root.snapshot(), "external kill");
    assert_code(&apply(&root, s.desired, None), 0);
    assert_eq!(diff(&after, &root.snapshot()), Vec::<String>::new());
}

/// A full disk in the middle of writing: a clear error, old-or-new everywhere, no temp files left,
/// and the rerun finishes the job.
#[test]
fn enospc_mid_apply_fails_cleanly_and_rerun_converges() {
    let s = &SCENARIOS[1];
    let reference = seeded(s);
    let before = reference.snapshot();
    assert_code(&apply(&reference, s.desired, None), 0);
    let after = reference.snapshot();

    let root = seeded(s);
    let out = apply(&root, s.desired, Some("host::enospc=4*off->return"));
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.starts_with("error: writing ") && err.contains("No space left on device"),
        "{err}"
    );
    let now = root.snapshot();
    assert_old_or_new(&before, &after, &now, "ENOSPC");
    assert!(
        !now.keys().any(|p| is_temp(p)),
        "temp files left after ENOSPC"
    );
    assert_code(&apply(&root, s.desired, None), 0);
    assert_eq!(diff(&after, &root.snapshot()), Vec::<String>::new());
}
