//! The reliability sweep's results: each part of the sweep (crash points, API faults, bad input, secrets,
//! fuzzing) records one line here when it passes, and `testbed sweep-report` prints them with one summary
//! line (`make test` ends with it). A part that did not record (it failed, or did not run) makes the report
//! fail, so the summary can never claim more than what ran.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The parts of the sweep, in report order.
pub const PARTS: &[&str] = &[
    "crash-rebootless",
    "crash-image-reboot",
    "crash-firstboot",
    "api-faults",
    "bad-input",
    "bad-annotations",
    "secrets",
    "fuzz",
];

/// One part's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepResult {
    pub part: String,
    /// How many cases ran (crash points, faults, inputs …).
    pub cases: usize,
    /// What was checked, in one line.
    pub summary: String,
}

/// Where results go: `$MCD_SWEEP_DIR`, else `target/reliability` under the workspace.
pub fn dir() -> PathBuf {
    std::env::var_os("MCD_SWEEP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/reliability"))
}

/// Record a passed part (and print it).
pub fn record(part: &str, cases: usize, summary: &str) -> Result<()> {
    let dir = dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = SweepResult {
        part: part.into(),
        cases,
        summary: summary.into(),
    };
    let path = dir.join(format!("{part}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&result)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("SWEEP {part}: {cases} cases: {summary}");
    Ok(())
}

/// The report: one line per part, then the summary line. `false` when a part is missing.
pub fn report(dir: &Path) -> Result<(String, bool)> {
    let mut out = String::new();
    // Fuzz inputs are counted apart: millions of generated inputs would drown the scenario count.
    let mut total = 0;
    let mut fuzz_inputs = None;
    let mut missing = Vec::new();
    for part in PARTS {
        let path = dir.join(format!("{part}.json"));
        match std::fs::read(&path) {
            Ok(bytes) => {
                let r: SweepResult = serde_json::from_slice(&bytes)
                    .with_context(|| format!("parsing {}", path.display()))?;
                if r.part == "fuzz" {
                    fuzz_inputs = Some(r.cases);
                } else {
                    total += r.cases;
                }
                out.push_str(&format!("  {:<20} {:>5}  {}\n", r.part, r.cases, r.summary));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing.push(*part);
                out.push_str(&format!("  {part:<20}     -  NOT RUN or FAILED\n"));
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    if missing.is_empty() {
        out.push_str(&format!(
            "reliability sweep: {} parts, {total} cases{}, all passed\n",
            PARTS.len(),
            fuzz_inputs.map_or(String::new(), |n| format!(" + {n} fuzz inputs"))
        ));
    } else {
        out.push_str(&format!(
            "reliability sweep: INCOMPLETE, no result from {}\n",
            missing.join(", ")
        ));
    }
    Ok((out, missing.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lists_every_part_and_flags_a_missing_one() {
        let tmp = tempfile::tempdir().unwrap();
        for part in PARTS.iter().skip(1) {
            let r = SweepResult {
                part: part.to_string(),
                cases: 2,
                summary: "ok".into(),
            };
            std::fs::write(
                tmp.path().join(format!("{part}.json")),
                serde_json::to_vec(&r).unwrap(),
            )
            .unwrap();
        }
        let (text, complete) = report(tmp.path()).unwrap();
        assert!(!complete);
        assert!(
            text.contains("INCOMPLETE, no result from crash-rebootless"),
            "{text}"
        );
        let r = SweepResult {
            part: PARTS[0].into(),
            cases: 3,
            summary: "ok".into(),
        };
        std::fs::write(
            tmp.path().join(format!("{}.json", PARTS[0])),
            serde_json::to_vec(&r).unwrap(),
        )
        .unwrap();
        let (text, complete) = report(tmp.path()).unwrap();
        assert!(complete);
        // Every part but fuzz counts as cases; fuzz inputs are shown apart.
        let cases = 3 + 2 * (PARTS.len() - 2);
        assert!(
            text.ends_with(&format!(
                "reliability sweep: {} parts, {cases} cases + 2 fuzz inputs, all passed\n",
                PARTS.len()
            )),
            "{text}"
        );
    }
}
