//! The hostile-input corpus (`tests/fixtures/bad/`): every broken or malicious MachineConfig or policy gives
//! its documented exit code and a clear one-line reason, and writes nothing on the node root.
//!
//! A node root in the way of a valid config (a symlinked parent, a directory where a file goes) exits 1
//! naming the root, not the input file.
//!
//! Each fixture starts with `# expect-exit: N`, `# expect: <fragment of the message>` and optionally
//! `# setup: <symlink|mkdir|file> …` (for inputs that are only bad on a particular node); fixtures that
//! cannot carry comments have a sibling `.expect` file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_machine-config-daemon");

struct Case {
    file: PathBuf,
    policy: Option<PathBuf>,
    exit: i32,
    expect: String,
    setup: Option<String>,
}

fn cases() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad");
    let mut out = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for file in names {
        let name = file.file_name().unwrap().to_str().unwrap().to_string();
        if !name.ends_with(".yaml") || name.ends_with(".policy.yaml") {
            continue;
        }
        let stem = name.trim_end_matches(".yaml");
        let sidecar = dir.join(format!("{stem}.expect"));
        let header = if sidecar.exists() {
            std::fs::read_to_string(&sidecar).unwrap()
        } else {
            String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned()
        };
        let field = |key: &str| {
            header
                .lines()
                .find_map(|l| l.strip_prefix(&format!("# {key}: ")).map(str::to_string))
        };
        let policy = dir.join(format!("{stem}.policy.yaml"));
        out.push(Case {
            exit: field("expect-exit")
                .unwrap_or_else(|| panic!("{name}: no expect-exit"))
                .parse()
                .unwrap(),
            expect: field("expect").unwrap_or_else(|| panic!("{name}: no expect")),
            setup: field("setup"),
            policy: policy.exists().then_some(policy),
            file,
        });
    }
    out
}

/// Every entry under `root` with its kind, mode and contents (or link target).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let desc = if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                format!("dir {:o}", m.mode())
            } else {
                format!("file {:o} {:?}", m.mode(), std::fs::read(&p).unwrap())
            };
            out.insert(p.strip_prefix(root).unwrap().to_path_buf(), desc);
        }
    }
    out
}

fn prepare_root(setup: Option<&str>) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let w = |rel: &str, body: &str| {
        let p = root.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    };
    w(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\ncore:x:1000:1000::/var/home/core:/bin/bash\n",
    );
    w("etc/group", "root:x:0:\ncore:x:1000:\n");
    if let Some(setup) = setup {
        let parts: Vec<&str> = setup.split_whitespace().collect();
        match parts.as_slice() {
            ["symlink", at, to] => std::os::unix::fs::symlink(to, root.path().join(at)).unwrap(),
            ["mkdir", at] => std::fs::create_dir_all(root.path().join(at)).unwrap(),
            ["file", at] => w(at, "a file\n"),
            other => panic!("unknown setup {other:?}"),
        }
    }
    root
}

#[test]
fn hostile_inputs_are_rejected_clearly_and_write_nothing() {
    let cases = cases();
    assert!(
        cases.len() >= 40,
        "the corpus must hold at least 40 cases, has {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let name = case
            .file
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let root = prepare_root(case.setup.as_deref());
        let before = snapshot(root.path());
        let mut cmd = Command::new(BIN);
        cmd.args(["apply", "-o", "json", "--root"])
            .arg(root.path())
            .arg("--desired")
            .arg(&case.file);
        if let Some(p) = &case.policy {
            cmd.arg("--policy").arg(p);
        }
        let out = cmd.env_remove("MCD_LOG").output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        let code = out.status.code().unwrap_or(-1);
        let mut problems = Vec::new();
        if code != case.exit {
            problems.push(format!("exit {code}, expected {}", case.exit));
        }
        match case.exit {
            2 => {
                if stderr.lines().count() != 1 {
                    problems.push(format!("expected one line on stderr, got {:?}", stderr));
                }
                if !stderr.contains(&case.expect) {
                    problems.push(format!(
                        "stderr {:?} lacks {:?}",
                        stderr.trim(),
                        case.expect
                    ));
                }
                if !stdout.is_empty() {
                    problems.push("invalid input printed a plan".into());
                }
            }
            // A node root in the way of a valid config: the root is named, not the input file.
            1 => {
                if stderr.lines().count() != 1 || !stderr.contains(&case.expect) {
                    problems.push(format!(
                        "expected one line with {:?} on stderr, got {:?}",
                        case.expect, stderr
                    ));
                }
                let want = format!(
                    "error: the node root {} is in the way: ",
                    root.path().display()
                );
                if !stderr.starts_with(&want) || !stderr.trim_end().ends_with("nothing was written")
                {
                    problems.push(format!("stderr {:?} does not name the root", stderr.trim()));
                }
            }
            3 => {
                // The same document as a successful apply, saying nothing was written.
                let v: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_default();
                if v["plan"]["reconcilable"] != false || v["written"] != false {
                    problems.push(format!("not reported unreconcilable: {stdout}"));
                }
                if v["operations"] != serde_json::json!([])
                    || v["actionsOwed"] != serde_json::json!([])
                {
                    problems.push(format!("an unreconcilable apply lists work: {stdout}"));
                }
                let reasons: Vec<String> = v["plan"]["unreconcilable"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|u| {
                                format!(
                                    "{}: {}",
                                    u["field"].as_str().unwrap_or(""),
                                    u["reason"].as_str().unwrap_or("")
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if !reasons.iter().any(|r| r.contains(&case.expect)) {
                    problems.push(format!(
                        "the unreconcilable reasons lack {:?}: {}",
                        case.expect, v["plan"]["unreconcilable"]
                    ));
                }
            }
            _ => {}
        }
        if snapshot(root.path()) != before {
            problems.push("the node root changed".into());
        }
        if !problems.is_empty() {
            failures.push(format!("{name}: {}", problems.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    testbed::sweep::record(
        "bad-input",
        cases.len(),
        "hostile MachineConfigs, policies and node roots: each its exit code and a clear reason, nothing written",
    )
    .unwrap();
}
