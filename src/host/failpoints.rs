//! Failpoints of the host writer (compiled in only with the `failpoints` cargo feature).
//!
//! Crash points kill the process with SIGKILL when triggered (`FAILPOINTS='host::commit=3*off->return'`
//! kills at the fourth commit): no destructor runs, exactly like a power cut for the process. The crash
//! test iterates [`CRASH_POINTS`]; a unit test checks that every failpoint in the sources is listed here.

/// Points between writes where the crash test kills the apply.
pub const CRASH_POINTS: &[&str] = &[
    "host::prepare",
    "host::stage",
    "host::mid-write",
    "host::sync",
    "host::commit",
    "host::cleanup",
];

/// Points that inject an error instead of a crash.
pub const ERROR_POINTS: &[&str] = &[
    // `return` makes the next temp-file write fail with ENOSPC.
    "host::enospc",
    // `return(N)` makes the free-space check see N available bytes.
    "host::free-space",
];

/// A crash point: with the feature and the point configured to `return`, SIGKILL this process.
#[cfg(feature = "failpoints")]
macro_rules! crash_point {
    ($name:literal) => {
        if fail::eval($name, |_| ()).is_some() {
            $crate::host::failpoints::die_now($name);
        }
    };
}
#[cfg(not(feature = "failpoints"))]
macro_rules! crash_point {
    ($name:literal) => {};
}
pub(crate) use crash_point;

/// Kill this process the hard way: no unwinding, no destructors, no temp-file cleanup.
#[cfg(feature = "failpoints")]
pub fn die_now(name: &str) -> ! {
    eprintln!("failpoint {name}: killing the process with SIGKILL");
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    loop {
        std::thread::park();
    }
}

/// Configure failpoints from `FAILPOINTS` (`name=actions;…`) without taking `fail`'s global scenario
/// lock (commands may run in-process in tests). Returns a warning when the build has no failpoints.
pub fn configure_from_env() -> Result<Option<String>, String> {
    let Ok(spec) = std::env::var("FAILPOINTS") else {
        return Ok(None);
    };
    if !fail::has_failpoints() {
        return Ok(Some(
            "FAILPOINTS is set but this build has no failpoints (cargo feature `failpoints`)"
                .into(),
        ));
    }
    for item in spec.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, actions) = item
            .split_once('=')
            .ok_or_else(|| format!("FAILPOINTS: {item:?} is not name=actions"))?;
        fail::cfg(name.trim(), actions.trim()).map_err(|e| format!("FAILPOINTS: {name}: {e}"))?;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every `crash_point!("…")` and `fail_point!("…")` in the crate is listed, so the crash test (which
    /// iterates the lists) cannot miss a new one.
    #[test]
    fn every_failpoint_is_listed() {
        let mut used = BTreeSet::new();
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut stack = vec![src];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for marker in ["crash_point!(\"", "fail_point!(\""] {
                    for (i, _) in text.match_indices(marker) {
                        let rest = &text[i + marker.len()..];
                        let name = &rest[..rest.find('"').unwrap()];
                        used.insert(name.to_string());
                    }
                }
            }
        }
        let listed: BTreeSet<String> = CRASH_POINTS
            .iter()
            .chain(ERROR_POINTS)
            .map(|s| s.to_string())
            .collect();
        // This file's own docs and test mention the macro syntax; ignore those examples.
        used.remove("…");
        assert_eq!(used, listed, "failpoints used in src/ vs listed here");
    }
}
