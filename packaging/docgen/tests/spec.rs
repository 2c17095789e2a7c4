//! The RPM spec, checked without building it: rpm's own `rpmspec` parses and expands it (Debian
//! ships rpm, not the Fedora macro packages, so the few systemd macros get their Fedora values here),
//! then every `install` in `%install` is traced to a file in the repository, a docgen output or the
//! cargo build, and `%files` is compared with what `%install` put in the buildroot, as rpmbuild would
//! ("File not found", "Installed (but unpackaged) file(s) found").

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const SPEC: &str = "packaging/machine-config-daemon.spec";
const BUILDROOT_DIR: &str = "/BUILDROOT";

/// Fedora's values for macros Debian's rpm does not define (systemd-rpm-macros); the scriptlet
/// macros expand to a marker so the test can read their arguments.
const DEFINES: &[&str] = &[
    "_unitdir /usr/lib/systemd/system",
    "_presetdir /usr/lib/systemd/system-preset",
    "_tmpfilesdir /usr/lib/tmpfiles.d",
    "systemd_requires Requires(post): systemd",
    "systemd_post() : SCRIPTLET systemd_post %*",
    "systemd_preun() : SCRIPTLET systemd_preun %*",
    "systemd_postun() : SCRIPTLET systemd_postun %*",
    "tmpfiles_create() : SCRIPTLET tmpfiles_create %*",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn rpmspec(args: &[&str]) -> String {
    let mut cmd = Command::new("rpmspec");
    for d in DEFINES {
        cmd.args(["--define", d]);
    }
    cmd.args(["--define", &format!("_buildrootdir {BUILDROOT_DIR}")]);
    let out = cmd
        .args(args)
        .arg(repo().join(SPEC))
        .output()
        .expect("rpmspec runs (packaging/setup-dev.sh installs rpm)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "rpmspec {args:?} failed or warned:\n{stderr}"
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The spec's sections after expansion. `rpmspec -P` prints `%build`'s body without its header, so
/// `%build` is read from the raw spec.
struct Spec {
    install: Vec<String>,
    check: String,
    build: String,
    scriptlets: String,
    files: Vec<String>,
}

fn section<'a>(text: &'a str, start: &str, ends: &[&str]) -> &'a str {
    let begin = text
        .lines()
        .position(|l| l.trim_end() == start)
        .unwrap_or_else(|| panic!("spec has no {start} section"));
    let lines: Vec<&str> = text.lines().collect();
    let end = lines[begin + 1..]
        .iter()
        .position(|l| ends.iter().any(|e| l.trim_end() == *e))
        .map_or(lines.len(), |i| begin + 1 + i);
    let from = lines[..=begin].iter().map(|l| l.len() + 1).sum::<usize>();
    let to = lines[..end].iter().map(|l| l.len() + 1).sum::<usize>();
    &text[from.min(text.len())..to.min(text.len())]
}

const HEADERS: &[&str] = &[
    "%description",
    "%prep",
    "%build",
    "%install",
    "%check",
    "%post",
    "%preun",
    "%postun",
    "%files",
    "%changelog",
];

fn parse() -> Spec {
    let expanded = rpmspec(&["-P"]);
    let raw = std::fs::read_to_string(repo().join(SPEC)).unwrap();
    let commands = |s: &str| -> Vec<String> {
        s.replace("\\\n", " ")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect()
    };
    Spec {
        install: commands(section(&expanded, "%install", HEADERS)),
        check: section(&expanded, "%check", HEADERS).to_string(),
        build: section(&raw, "%build", HEADERS).to_string(),
        scriptlets: ["%post", "%preun", "%postun"]
            .iter()
            .map(|h| section(&expanded, h, HEADERS))
            .collect(),
        files: commands(section(&expanded, "%files", HEADERS)),
    }
}

/// `*` and `?` within one path component; `[` is not used in the spec.
fn glob_match(pattern: &str, text: &str) -> bool {
    fn m(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => m(&p[1..], t) || (!t.is_empty() && t[0] != b'/' && m(p, &t[1..])),
            (Some(b'?'), Some(c)) if *c != b'/' => m(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => m(&p[1..], &t[1..]),
            _ => false,
        }
    }
    m(pattern.as_bytes(), text.as_bytes())
}

/// What the build produces besides the repository's files: the cargo binary and docgen's outputs,
/// read from the `%build` commands.
fn built_files(build: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let cargo_build = build
        .lines()
        .find(|l| l.trim_start().starts_with("cargo build"))
        .expect("%build runs cargo build");
    assert!(
        cargo_build.contains("--release") && cargo_build.contains("--locked"),
        "{cargo_build}"
    );
    let words: Vec<&str> = cargo_build.split_whitespace().collect();
    let bin = words
        .windows(2)
        .find(|w| w[0] == "--bin")
        .map(|w| w[1])
        .expect("cargo build names the binary");
    assert_eq!(bin, docgen::BIN, "the spec builds the daemon's binary");
    out.insert(format!("target/release/{bin}"));
    let docgen_line = build
        .lines()
        .find(|l| l.contains("-p docgen --"))
        .expect("%build runs docgen");
    let out_dir = docgen_line
        .split("-p docgen --")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    for o in docgen::outputs().unwrap() {
        out.insert(format!("{out_dir}/{}", o.path.display()));
    }
    out
}

/// Expand one `install` source: a file of the repository or of the build; globs in the last component.
fn sources(pattern: &str, built: &BTreeSet<String>) -> Vec<String> {
    if !pattern.contains(['*', '?']) {
        let exists = repo().join(pattern).is_file() || built.contains(pattern);
        assert!(
            exists,
            "%install copies {pattern}, which is neither in the repository nor built"
        );
        return vec![pattern.to_string()];
    }
    let mut found: Vec<String> = built
        .iter()
        .filter(|b| glob_match(pattern, b))
        .cloned()
        .collect();
    let (dir, _) = pattern.rsplit_once('/').expect("glob with a directory");
    if let Ok(entries) = std::fs::read_dir(repo().join(dir)) {
        for e in entries {
            let rel = format!("{dir}/{}", e.unwrap().file_name().to_string_lossy());
            if glob_match(pattern, &rel) {
                found.push(rel);
            }
        }
    }
    assert!(!found.is_empty(), "%install glob {pattern} matches nothing");
    found
}

fn strip_buildroot(path: &str) -> String {
    let rest = path
        .strip_prefix(BUILDROOT_DIR)
        .unwrap_or_else(|| panic!("install destination {path} is outside the buildroot"));
    let (_, inside) = rest[1..].split_once('/').expect("buildroot/<nvra>/path");
    format!("/{inside}")
}

struct Installed {
    /// Installed file → the source it came from.
    files: Vec<(String, String)>,
    dirs: BTreeSet<String>,
}

fn run_install(spec: &Spec) -> Installed {
    let built = built_files(&spec.build);
    let mut files = Vec::new();
    let mut dirs = BTreeSet::new();
    for cmd in &spec.install {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        assert_eq!(words[0], "install", "unexpected %install command: {cmd}");
        let (mut make_dirs, mut target_dir, mut args) = (false, None, Vec::new());
        let mut i = 1;
        while i < words.len() {
            match words[i] {
                "-D" | "-p" => {}
                "-d" => make_dirs = true,
                "-m" => i += 1,
                "-t" => {
                    target_dir = Some(words[i + 1]);
                    i += 1;
                }
                w if w.starts_with('-') => panic!("unexpected install option {w} in: {cmd}"),
                w => args.push(w),
            }
            i += 1;
        }
        if make_dirs {
            dirs.extend(args.iter().map(|d| strip_buildroot(d)));
            continue;
        }
        let (srcs, dest_dir, dest) = match target_dir {
            Some(dir) => (args.as_slice(), Some(strip_buildroot(dir)), None),
            None => {
                assert_eq!(args.len(), 2, "install SRC DEST expected: {cmd}");
                (&args[..1], None, Some(strip_buildroot(args[1])))
            }
        };
        for pattern in srcs {
            for src in sources(pattern, &built) {
                let installed = match (&dest_dir, &dest) {
                    (Some(dir), _) => format!("{dir}/{}", src.rsplit('/').next().unwrap()),
                    (None, Some(d)) => d.clone(),
                    _ => unreachable!(),
                };
                files.push((installed, src));
            }
        }
    }
    Installed { files, dirs }
}

/// A `%files` line: its directives and its path.
struct Entry {
    path: String,
    dir_only: bool,
    doc: bool,
}

fn files_entries(spec: &Spec) -> Vec<Entry> {
    spec.files
        .iter()
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let path = words
                .iter()
                .rfind(|w| !w.starts_with('%'))
                .unwrap_or_else(|| panic!("%files line without a path: {line}"))
                .to_string();
            Entry {
                dir_only: words.contains(&"%dir"),
                doc: words.iter().any(|w| *w == "%doc" || *w == "%license"),
                path,
            }
        })
        .collect()
}

fn covers(entry: &Entry, installed: &str) -> bool {
    if entry.dir_only {
        return false;
    }
    match entry.path.strip_suffix('/') {
        Some(dir) => installed.starts_with(&format!("{dir}/")),
        None => glob_match(&entry.path, installed),
    }
}

#[test]
fn spec_parses_and_packages_exactly_what_it_installs() {
    let spec = parse();
    let installed = run_install(&spec);
    let entries = files_entries(&spec);

    for e in &entries {
        if e.doc {
            assert!(
                repo().join(&e.path).is_file(),
                "%doc {} is not in the repository",
                e.path
            );
        } else if e.dir_only {
            let owned = installed.dirs.contains(&e.path)
                || installed
                    .files
                    .iter()
                    .any(|(f, _)| f.starts_with(&format!("{}/", e.path)));
            assert!(owned, "%dir {} is never created by %install", e.path);
        } else {
            assert!(
                installed.files.iter().any(|(f, _)| covers(e, f)),
                "%files lists {}, which %install does not install (rpmbuild: File not found)",
                e.path
            );
        }
    }
    for (file, src) in &installed.files {
        assert!(
            entries.iter().any(|e| covers(e, file)),
            "{file} (from {src}) is installed but not in %files (rpmbuild: Installed (but unpackaged) file(s) found)"
        );
    }
    for dir in &installed.dirs {
        assert!(
            entries.iter().any(|e| e.dir_only && &e.path == dir),
            "directory {dir} is created but not owned by %files"
        );
    }

    // Nothing the package should ship is left behind: every systemd/ file and every docgen output.
    let sources: BTreeSet<&str> = installed.files.iter().map(|(_, s)| s.as_str()).collect();
    for e in std::fs::read_dir(repo().join("systemd")).unwrap() {
        let rel = format!("systemd/{}", e.unwrap().file_name().to_string_lossy());
        assert!(sources.contains(rel.as_str()), "{rel} is not packaged");
    }
    for b in built_files(&spec.build) {
        assert!(
            sources.contains(b.as_str()),
            "{b} is built but not packaged"
        );
    }
    let manifests: Vec<_> = sources
        .iter()
        .filter(|s| s.starts_with("packaging/manifests/"))
        .collect();
    assert!(!manifests.is_empty(), "the RBAC manifests are packaged");
}

#[test]
fn spec_units_and_tmpfiles_match_the_installed_files() {
    let spec = parse();
    let installed = run_install(&spec);
    let units: BTreeSet<String> = installed
        .files
        .iter()
        .filter_map(|(f, _)| f.strip_prefix("/usr/lib/systemd/system/"))
        .map(String::from)
        .collect();
    assert!(!units.is_empty());
    for macro_name in ["systemd_post", "systemd_preun", "systemd_postun"] {
        let line = spec
            .scriptlets
            .lines()
            .find(|l| l.contains(&format!("SCRIPTLET {macro_name} ")))
            .unwrap_or_else(|| panic!("no %{macro_name} scriptlet"));
        let named: BTreeSet<String> = line.split_whitespace().skip(3).map(String::from).collect();
        assert_eq!(
            named, units,
            "%{macro_name} must name every unit the package installs"
        );
    }
    let tmpfiles = spec
        .scriptlets
        .lines()
        .find(|l| l.contains("SCRIPTLET tmpfiles_create "))
        .expect("%post creates the tmpfiles.d entries at install time");
    let conf = tmpfiles.split_whitespace().last().unwrap();
    assert!(
        installed.files.iter().any(|(f, _)| f == conf),
        "%tmpfiles_create {conf} is not installed"
    );
}

#[test]
fn spec_builds_tests_and_versions_like_the_crate() {
    let spec = parse();
    assert!(
        spec.check
            .lines()
            .any(|l| l.contains("cargo test") && l.contains("--lib") && l.contains("--offline")),
        "%check runs the unit tests offline:\n{}",
        spec.check
    );
    let build_requires = rpmspec(&["-q", "--buildrequires"]);
    for needed in [
        "pkgconfig(ostree-1)",
        "pkgconfig(glib-2.0)",
        "pkgconfig(openssl)",
        "pkgconfig(libzstd)",
    ] {
        assert!(
            build_requires.lines().any(|l| l.trim() == needed),
            "BuildRequires lacks {needed}:\n{build_requires}"
        );
    }
    let cargo_toml: toml::Table = std::fs::read_to_string(repo().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let crate_version = cargo_toml["package"]["version"].as_str().unwrap();
    let spec_version = rpmspec(&["-q", "--srpm", "--qf", "%{VERSION}"]);
    assert_eq!(spec_version.trim(), crate_version);
    let requires = rpmspec(&["-q", "--requires"]);
    assert!(
        requires.lines().any(|l| l.trim() == "skopeo"),
        "ostree-ext runs skopeo to fetch images:\n{requires}"
    );
}

#[test]
fn glob_matching() {
    assert!(glob_match("/a/b*.8*", "/a/b-plan.8"));
    assert!(!glob_match("/a/*.8", "/a/x/y.8"));
    assert!(glob_match("x?z", "xyz"));
    assert!(!glob_match("x?z", "x/z"));
}
