//! Benchmark figures: every bench records its figures here (one JSON file per figure id), and
//! `testbed bench-report DIR` prints them as one table against their targets (`make bench`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One measured figure and its goal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    /// `P1` … `P8` (`P3r`: P3 on the rpm-ostree backend).
    pub id: String,
    pub name: String,
    /// The measured value, in `unit`.
    pub value: f64,
    pub unit: String,
    /// The goal, as a human reads it (`<= 16 MiB`).
    pub target: String,
    /// Whether the goal was met.
    pub pass: bool,
    /// How it was measured, side figures.
    pub detail: String,
}

impl Figure {
    /// A figure whose goal is an upper bound.
    pub fn at_most(
        id: &str,
        name: &str,
        value: f64,
        unit: &str,
        limit: f64,
        detail: impl Into<String>,
    ) -> Figure {
        Figure {
            id: id.into(),
            name: name.into(),
            value,
            unit: unit.into(),
            target: format!("<= {limit} {unit}").trim_end().to_string(),
            pass: value <= limit,
            detail: detail.into(),
        }
    }
}

/// Where figures go: `$MCD_BENCH_DIR`, else `target/bench-figures` under the workspace.
pub fn dir() -> PathBuf {
    std::env::var_os("MCD_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-figures"))
}

/// Record a figure (and print it, so a bench run alone shows it too).
pub fn record(figure: &Figure) -> Result<()> {
    let dir = dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{}.json", figure.id));
    std::fs::write(&path, serde_json::to_vec_pretty(figure)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "FIGURE {} {}: {:.3} {} (target {}: {})",
        figure.id,
        figure.name,
        figure.value,
        figure.unit,
        figure.target,
        if figure.pass { "met" } else { "MISSED" }
    );
    Ok(())
}

/// Read every recorded figure, sorted by id.
pub fn load_all(dir: &Path) -> Result<Vec<Figure>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json")
            && path.file_name().is_some_and(|n| n != "report.json")
        {
            let f: Figure = serde_json::from_slice(&std::fs::read(&path)?)
                .with_context(|| format!("parsing {}", path.display()))?;
            out.push(f);
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// The report table (and `report.json` beside the figures). Lists the ids in `expected` that are missing.
pub fn report(dir: &Path, expected: &[&str]) -> Result<(String, bool)> {
    let figures = load_all(dir)?;
    let mut out = String::new();
    let width = figures
        .iter()
        .map(|f| f.name.chars().count())
        .max()
        .unwrap_or(6);
    out.push_str(&format!(
        "{:<4} {:<width$} {:>12} {:<10} {:<16} {}\n",
        "id", "figure", "value", "unit", "target", "result"
    ));
    for f in &figures {
        out.push_str(&format!(
            "{:<4} {:<width$} {:>12.3} {:<10} {:<16} {}\n",
            f.id,
            f.name,
            f.value,
            f.unit,
            f.target,
            if f.pass { "pass" } else { "FAIL" }
        ));
    }
    for f in &figures {
        if !f.detail.is_empty() {
            out.push_str(&format!("  {}: {}\n", f.id, f.detail));
        }
    }
    let missing: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|id| !figures.iter().any(|f| f.id == *id))
        .collect();
    if !missing.is_empty() {
        out.push_str(&format!("not measured: {}\n", missing.join(", ")));
    }
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_vec_pretty(&figures)?,
    )?;
    let all_pass = missing.is_empty() && figures.iter().all(|f| f.pass);
    Ok((out, all_pass))
}
