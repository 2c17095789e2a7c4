//! Scenarios and the suite that runs them: shared builds (base, images, update repo) are made once
//! per suite, each scenario gets its own run directory and VM, and every step's wall time is kept
//! for the final report.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::image::{self, BaseImage, BaseRecipe, DiskImage, ImageSpec, OsImage, UpdateRepo};
use crate::osimages::OsRegistry;
use crate::vm::BootRecord;
use crate::workspace::Workspace;

mod daemon;
mod health;
mod node;
mod smoke;

/// A named end-to-end test.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(&mut Suite, &mut Run) -> Result<()>,
    /// Run only when named: what it checks, another scenario of the default run checks too.
    pub only_when_named: bool,
}

/// Every scenario, in the order `run` with no names executes them.
pub fn all() -> Vec<Scenario> {
    let mut all = smoke::scenarios();
    all.extend(daemon::scenarios());
    all.extend(health::scenarios());
    all
}

/// The scenarios named (when `names` is empty: all but the ones run only when named); unknown names are
/// an error listing the known.
pub fn select(names: &[String]) -> Result<Vec<Scenario>> {
    let known = all();
    if names.is_empty() {
        return Ok(known.into_iter().filter(|s| !s.only_when_named).collect());
    }
    let mut chosen = Vec::new();
    for name in names {
        match known.iter().find(|s| s.name == name) {
            Some(s) => chosen.push(*s),
            None => bail!(
                "unknown scenario {name:?}; known: {}",
                known.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
            ),
        }
    }
    Ok(chosen)
}

/// One measured step.
#[derive(Debug, Clone)]
pub struct Figure {
    pub label: String,
    pub duration: Duration,
}

/// State of one scenario run.
#[derive(Debug)]
pub struct Run {
    pub name: String,
    /// Unique per run (the run directory's name): for branch names, marker files.
    pub id: String,
    pub dir: PathBuf,
    pub figures: Vec<Figure>,
    /// Other measurements worth reporting (sizes, counts).
    pub notes: Vec<String>,
}

impl Run {
    /// Run `f`, recording its wall time under `label`.
    pub fn step<T>(&mut self, label: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let started = Instant::now();
        let result = f();
        let duration = started.elapsed();
        tracing::info!(scenario = %self.name, step = label, seconds = duration.as_secs_f64(), ok = result.is_ok(), "step");
        self.figures.push(Figure {
            label: label.to_string(),
            duration,
        });
        result
    }

    /// Record the boot-to-ready times the harness measured.
    pub fn record_boots(&mut self, boots: &[BootRecord]) {
        for b in boots {
            if let Some(after) = b.ready_after {
                self.figures.push(Figure {
                    label: format!(
                        "boot {} to ready (guest uptime {:.1} s)",
                        b.number,
                        b.ready.as_ref().map(|r| r.uptime_s).unwrap_or_default()
                    ),
                    duration: after,
                });
            }
        }
    }
}

/// Result of one scenario.
#[derive(Debug)]
pub struct Outcome {
    pub name: String,
    pub dir: PathBuf,
    /// Wall time of the whole scenario, including [`Outcome::builds`].
    pub wall: Duration,
    /// Builds (base, images, update repo) this scenario was the first to need.
    pub builds: Duration,
    pub figures: Vec<Figure>,
    pub notes: Vec<String>,
    pub error: Option<String>,
}

/// Shared builds and the results so far.
#[derive(Debug)]
pub struct Suite {
    pub ws: Workspace,
    rebuild: bool,
    base: Option<BaseImage>,
    images: HashMap<String, DiskImage>,
    rebuilt_images: HashSet<String>,
    update: Option<UpdateRepo>,
    /// The registry with the OS images daemon scenarios update to (started once per suite).
    os: Option<OsRegistry>,
    /// Build steps (base, images, update repo), in order.
    pub build_figures: Vec<Figure>,
}

impl Suite {
    /// `rebuild` forces the base and each image to be built once in this suite.
    pub fn new(ws: Workspace, rebuild: bool) -> Self {
        Self {
            ws,
            rebuild,
            base: None,
            images: HashMap::new(),
            rebuilt_images: HashSet::new(),
            update: None,
            os: None,
            build_figures: Vec::new(),
        }
    }

    fn measure<T>(&mut self, label: String, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let started = Instant::now();
        let value = f(self)?;
        self.build_figures.push(Figure {
            label,
            duration: started.elapsed(),
        });
        Ok(value)
    }

    /// The base commit (built or from the cache).
    pub fn base(&mut self) -> Result<BaseImage> {
        if let Some(base) = &self.base {
            return Ok(base.clone());
        }
        let recipe = BaseRecipe::from_workspace(&self.ws)?;
        let key = recipe.key()?;
        let cached = !self.rebuild && self.ws.base_dir().join(&key).join("base.json").is_file();
        let label = format!("base image ({})", if cached { "cache" } else { "build" });
        let rebuild = self.rebuild;
        let base = self.measure(label, |s| image::ensure_base(&s.ws, &recipe, rebuild))?;
        self.base = Some(base.clone());
        Ok(base)
    }

    /// A disk image for `spec` (built at most once per suite).
    pub fn image(&mut self, spec: &ImageSpec) -> Result<DiskImage> {
        if let Some(image) = self.images.get(&spec.name) {
            return Ok(image.clone());
        }
        let base = self.base()?;
        let rebuild = self.rebuild && !self.rebuilt_images.contains(&spec.name);
        let image = self.measure(
            format!("image {:?} (layer + deploy + mkfs)", spec.name),
            |s| image::ensure_image(&s.ws, &base, spec, rebuild),
        )?;
        self.rebuilt_images.insert(spec.name.clone());
        self.images.insert(spec.name.clone(), image.clone());
        Ok(image)
    }

    /// The archive repo updates are served from.
    pub fn update_repo(&mut self) -> Result<UpdateRepo> {
        if let Some(repo) = &self.update {
            return Ok(repo.clone());
        }
        let base = self.base()?;
        let repo = self.measure("update repo (archive of the base)".into(), |s| {
            UpdateRepo::ensure(&s.ws, &base)
        })?;
        self.update = Some(repo.clone());
        Ok(repo)
    }

    /// The suite's registry, holding `installed` (the OS image a disk was installed from) and what
    /// scenarios derive from it.
    pub fn os_registry(&mut self, installed: &OsImage) -> Result<&mut OsRegistry> {
        if self.os.is_none() {
            let os = self.measure("registry + OS image push".into(), |s| {
                let mut os = OsRegistry::start(&s.ws, installed)?;
                os.installed()?;
                Ok(os)
            })?;
            self.os = Some(os);
        }
        Ok(self.os.as_mut().expect("just set"))
    }

    /// Run one scenario in a fresh run directory. A passed run's disk copy is deleted (logs stay).
    pub fn run_scenario(&mut self, scenario: &Scenario) -> Result<Outcome> {
        let dir = self.ws.new_run_dir(scenario.name)?;
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut run = Run {
            name: scenario.name.to_string(),
            id,
            dir: dir.clone(),
            figures: Vec::new(),
            notes: Vec::new(),
        };
        eprintln!("=== scenario {}: {}", scenario.name, scenario.about);
        let started = Instant::now();
        let builds_before = self.build_figures.len();
        let result = (scenario.run)(self, &mut run);
        let wall = started.elapsed();
        let builds = self.build_figures[builds_before..]
            .iter()
            .map(|f| f.duration)
            .sum();
        let error = result.err().map(|e| format!("{e:#}"));
        match &error {
            None => {
                for leftover in ["disk.img", "kernel"] {
                    let path = dir.join(leftover);
                    let _ = if path.is_dir() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                }
                eprintln!(
                    "=== scenario {}: PASS in {:.1} s (logs: {})",
                    scenario.name,
                    wall.as_secs_f64(),
                    dir.display()
                );
            }
            Some(e) => eprintln!(
                "=== scenario {}: FAIL after {:.1} s (logs and disk: {})\n{e}",
                scenario.name,
                wall.as_secs_f64(),
                dir.display()
            ),
        }
        Ok(Outcome {
            name: scenario.name.to_string(),
            dir,
            wall,
            builds,
            figures: run.figures,
            notes: run.notes,
            error,
        })
    }
}

/// The figures of a suite run as a text table.
pub fn report(suite: &Suite, outcomes: &[Outcome], total: Duration) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nvm-tests figures (wall time):");
    for f in &suite.build_figures {
        let _ = writeln!(out, "  {:>7.1} s  {}", f.duration.as_secs_f64(), f.label);
    }
    for o in outcomes {
        let verdict = if o.error.is_none() { "PASS" } else { "FAIL" };
        let _ = writeln!(
            out,
            "  {:>7.1} s  scenario {} [{verdict}] (+ {:.1} s of builds above)",
            (o.wall - o.builds).as_secs_f64(),
            o.name,
            o.builds.as_secs_f64()
        );
        for f in &o.figures {
            let _ = writeln!(out, "  {:>7.1} s    {}", f.duration.as_secs_f64(), f.label);
        }
        for note in &o.notes {
            let _ = writeln!(out, "              {note}");
        }
    }
    let _ = writeln!(out, "  {:>7.1} s  total", total.as_secs_f64());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_scenarios_are_named_with_the_known_ones() {
        let err = select(&["nope".into()]).unwrap_err().to_string();
        assert!(
            err.starts_with("unknown scenario \"nope\"; known: "),
            "{err}"
        );
        assert!(err.contains("stage-reboot"), "{err}");
        // The default run leaves out only the scenarios run when named; naming one runs it.
        let default: Vec<_> = select(&[]).unwrap().iter().map(|s| s.name).collect();
        assert!(!default.contains(&"power-cut-staged"), "{default:?}");
        assert_eq!(
            default.len(),
            all().iter().filter(|s| !s.only_when_named).count()
        );
        assert!(
            default.contains(&"health-gate-rollback") && default.contains(&"health-gate-not-ready")
        );
        let named = select(&["power-cut-staged".into()]).unwrap();
        assert_eq!(named.len(), 1);
        assert_eq!(named[0].name, "power-cut-staged");
        let names: HashSet<_> = all().iter().map(|s| s.name).collect();
        assert_eq!(names.len(), all().len(), "scenario names are unique");
    }
}
