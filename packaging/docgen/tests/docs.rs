//! The generated man pages and completions describe exactly the command line `--help` describes, and
//! the README does not document commands or flags that do not exist.
//!
//! The pages are rendered with groff (what `man` runs) and checked as a reader sees them.

use std::path::{Path, PathBuf};
use std::process::Command;

use docgen::{BIN, command, man_page_name, subcommands};

fn generated() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let written = docgen::generate(dir.path()).unwrap();
    (dir, written)
}

/// The page as `man` shows it: plain text, no hyphenation (so no flag is split across lines).
fn render(page: &Path) -> String {
    let out = Command::new("groff")
        .args(["-man", "-Tascii", "-rHY=0", "-P-c", "-P-b", "-P-u", "-P-o"])
        .arg(page)
        .output()
        .expect("groff runs (packaging/setup-dev.sh installs groff-base)");
    assert!(out.status.success(), "groff failed on {}", page.display());
    // Justified lines stretch the spaces between words: compare words, not columns.
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// groff's own diagnostics (all warnings on): a page man would complain about fails here.
fn groff_warnings(page: &Path) -> String {
    let out = Command::new("groff")
        .args(["-man", "-ww", "-z"])
        .arg(page)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What a reader looks for to find an argument: `--long`, else `-s`, else the positional's name.
fn spellings(arg: &clap::Arg) -> Vec<String> {
    let mut s = Vec::new();
    if let Some(l) = arg.get_long() {
        s.push(format!("--{l}"));
    }
    if let Some(c) = arg.get_short() {
        s.push(format!("-{c}"));
    }
    if s.is_empty() {
        let name = arg
            .get_value_names()
            .and_then(|v| v.first().map(|n| n.to_string()))
            .unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
        s.push(name);
    }
    s
}

fn visible_args(cmd: &clap::Command) -> impl Iterator<Item = &clap::Arg> {
    cmd.get_arguments().filter(|a| !a.is_hide_set())
}

#[test]
fn man_pages_name_every_subcommand_and_flag() {
    let (dir, _) = generated();
    let cmd = command();
    let man8 = dir.path().join("man8");

    let main_path = man8.join(man_page_name(&[]));
    let main = render(&main_path);
    assert!(
        main.contains(&format!("{BIN} -")),
        "NAME section missing:\n{main}"
    );
    for arg in visible_args(&cmd) {
        for s in spellings(arg) {
            assert!(main.contains(&s), "main page lacks {s}:\n{main}");
        }
    }
    let subs = subcommands(&cmd);
    assert!(!subs.is_empty(), "the CLI has subcommands");
    for (path, sub) in &subs {
        let page_name = man_page_name(path);
        let reference = format!("{}(8)", page_name.trim_end_matches(".8"));
        assert!(
            main.contains(&reference),
            "main page does not list {reference}:\n{main}"
        );
        let page_path = man8.join(&page_name);
        let page = render(&page_path);
        let invocation = format!("{BIN} {}", path.join(" "));
        assert!(
            page.contains(&invocation),
            "{page_name}: synopsis lacks `{invocation}`:\n{page}"
        );
        if let Some(about) = sub.get_about() {
            let first_words: String = about
                .to_string()
                .split_whitespace()
                .take(4)
                .collect::<Vec<_>>()
                .join(" ");
            assert!(
                page.contains(&first_words),
                "{page_name}: description lacks {first_words:?}"
            );
        }
        for arg in visible_args(sub) {
            for s in spellings(arg) {
                assert!(page.contains(&s), "{page_name} lacks {s}:\n{page}");
            }
            for value in arg
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
            {
                assert!(
                    page.contains(value.get_name()),
                    "{page_name}: {} value {:?} not listed",
                    spellings(arg)[0],
                    value.get_name()
                );
            }
            if let Some(env) = arg.get_env() {
                let env = env.to_string_lossy();
                assert!(page.contains(&*env), "{page_name}: ENVIRONMENT lacks {env}");
            }
        }
    }
    // Exactly the pages the command line has: no page for a removed subcommand.
    let mut want: Vec<String> = std::iter::once(man_page_name(&[]))
        .chain(subs.iter().map(|(p, _)| man_page_name(p)))
        .collect();
    want.sort();
    let mut have: Vec<String> = std::fs::read_dir(&man8)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    have.sort();
    assert_eq!(have, want);
}

#[test]
fn man_pages_state_exit_codes_and_files_from_the_code() {
    use machine_config_daemon::cli::exit;
    use machine_config_daemon::config::paths;
    let (dir, _) = generated();
    let main = render(&dir.path().join("man8").join(man_page_name(&[])));
    let exit_section = main
        .split("EXIT STATUS")
        .nth(1)
        .expect("EXIT STATUS section");
    for code in [
        exit::OK,
        exit::FAILURE,
        exit::INVALID_INPUT,
        exit::UNRECONCILABLE,
    ] {
        assert!(
            exit_section
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{code} "))),
            "exit status {code} not documented:\n{exit_section}"
        );
    }
    for path in [
        paths::STATE_DIR,
        paths::CURRENT_CONFIG,
        paths::ENCAPSULATED_CONFIG,
        paths::FORCEFILE,
        machine_config_daemon::cluster::client::KUBELET_KUBECONFIG,
    ] {
        assert!(main.contains(path), "FILES lacks {path}");
    }
    for unit in std::fs::read_dir(repo().join("systemd")).unwrap() {
        let name = unit.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".service") || name.ends_with(".target") {
            assert!(main.contains(&name), "SYSTEMD UNITS lacks {name}");
        }
    }
}

/// Each subcommand's page lists its own exit statuses (validate's 4, plan's lack of 1, …), exactly
/// the ones the CLI documents for it.
#[test]
fn each_page_states_its_own_exit_statuses() {
    use machine_config_daemon::cli::exit;
    let (dir, _) = generated();
    let cmd = command();
    let mut sections = std::collections::BTreeSet::new();
    for (path, _) in subcommands(&cmd) {
        let page = render(&dir.path().join("man8").join(man_page_name(&path)));
        let section = page
            .split("EXIT STATUS")
            .nth(1)
            .and_then(|s| s.split("SEE ALSO").next())
            .unwrap_or_else(|| panic!("{path:?}: no EXIT STATUS section"))
            .to_string();
        let listed: Vec<u8> = section
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse::<u8>().ok())
            .collect();
        let want: Vec<u8> = exit::statuses(&path[0]).iter().map(|(c, _)| *c).collect();
        assert_eq!(listed, want, "{path:?}:\n{section}");
        for (_, meaning) in exit::statuses(&path[0]) {
            let first_words: String = meaning
                .split_whitespace()
                .take(5)
                .collect::<Vec<_>>()
                .join(" ");
            assert!(
                section.contains(&first_words),
                "{path:?} lacks {first_words:?}:\n{section}"
            );
        }
        sections.insert(section);
    }
    assert_eq!(
        sections.len(),
        subcommands(&cmd).len(),
        "two commands share the same exit status text"
    );
    let validate = render(&dir.path().join("man8/machine-config-daemon-validate.8"));
    assert!(validate.contains(&format!(
        "{} The node root differs from the config",
        exit::MISMATCH
    )));
}

/// `docgen --help` explains itself and writes nothing (it once created a directory named `--help`).
#[test]
fn docgen_help_writes_nothing() {
    let cwd = tempfile::tempdir().unwrap();
    for flag in ["--help", "-h"] {
        let out = Command::new(env!("CARGO_BIN_EXE_docgen"))
            .arg(flag)
            .current_dir(cwd.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("usage: docgen OUTDIR"));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_docgen"))
        .arg("--version")
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("usage: docgen OUTDIR"));
    assert_eq!(
        std::fs::read_dir(cwd.path()).unwrap().count(),
        0,
        "docgen created something"
    );
}

#[test]
fn man_pages_render_without_warnings() {
    let (_dir, written) = generated();
    for page in written
        .iter()
        .filter(|p| p.extension() == Some("8".as_ref()))
    {
        let warnings = groff_warnings(page);
        assert!(
            warnings.is_empty(),
            "{}: groff warns:\n{warnings}",
            page.display()
        );
    }
}

#[test]
fn generation_is_reproducible() {
    let (a, _) = generated();
    let (b, _) = generated();
    for o in docgen::outputs().unwrap() {
        let x = std::fs::read(a.path().join(&o.path)).unwrap();
        let y = std::fs::read(b.path().join(&o.path)).unwrap();
        assert_eq!(x, y, "{} differs between runs", o.path.display());
        assert_eq!(x, o.contents);
    }
}

/// Ask the generated bash completion what it offers after `words` (the last one is being typed).
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let line = words.join(" ");
    let cword = words.len() - 1;
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'\n\
         COMP_WORDS=({})\nCOMP_CWORD={cword}\nCOMP_LINE='{line}'\nCOMP_POINT=${{#COMP_LINE}}\n\
         complete -p {BIN} >/dev/null || exit 3\n\
         fn=$(complete -p {BIN} | sed -n 's/.*-F \\([^ ]*\\) .*/\\1/p')\n\
         \"$fn\" {BIN} '{}' '{}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        quoted.join(" "),
        words[cword],
        if cword > 0 { words[cword - 1] } else { "" },
    );
    let out = Command::new("bash")
        .args(["--noprofile", "--norc", "-c", &program])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bash completion failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completion_offers_every_subcommand_and_flag() {
    let (dir, _) = generated();
    let script = dir.path().join("completions/machine-config-daemon.bash");
    let cmd = command();
    let offered = bash_complete(&script, &[BIN, ""]);
    for (path, sub) in subcommands(&cmd).iter().filter(|(p, _)| p.len() == 1) {
        assert!(
            offered.contains(&path[0]),
            "`{BIN} <TAB>` does not offer {}: {offered:?}",
            path[0]
        );
        let offered = bash_complete(&script, &[BIN, &path[0], "--"]);
        for arg in visible_args(sub) {
            if let Some(long) = arg.get_long() {
                let flag = format!("--{long}");
                assert!(
                    offered.contains(&flag),
                    "`{BIN} {} --<TAB>` does not offer {flag}: {offered:?}",
                    path[0]
                );
            }
        }
    }
    // Typing narrows the choice: a prefix only offers what starts with it.
    let first = &subcommands(&cmd)[0].0[0];
    let prefix = &first[..2];
    let narrowed = bash_complete(&script, &[BIN, prefix]);
    assert!(narrowed.contains(first), "{narrowed:?}");
    assert!(
        narrowed.iter().all(|w| w.starts_with(prefix)),
        "{narrowed:?}"
    );
}

#[test]
fn zsh_and_fish_completions_know_every_subcommand() {
    let (dir, _) = generated();
    let zsh =
        std::fs::read_to_string(dir.path().join("completions/_machine-config-daemon")).unwrap();
    let fish =
        std::fs::read_to_string(dir.path().join("completions/machine-config-daemon.fish")).unwrap();
    assert!(
        zsh.starts_with(&format!("#compdef {BIN}")),
        "zsh autoload header"
    );
    let cmd = command();
    for (path, sub) in subcommands(&cmd) {
        let name = path.last().unwrap();
        assert!(zsh.contains(&format!("'{name}:")), "zsh lacks {name}");
        assert!(
            fish.contains(&format!("-a \"{name}\"")),
            "fish lacks {name}"
        );
        for arg in visible_args(&sub) {
            if let Some(long) = arg.get_long() {
                assert!(zsh.contains(&format!("--{long}")), "zsh lacks --{long}");
                assert!(fish.contains(&format!("-l {long}")), "fish lacks --{long}");
            }
        }
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `machine-config-daemon SUBCOMMAND …` the README shows in code spans names a real subcommand,
/// and every `--flag` after it is one of that subcommand's flags.
#[test]
fn readme_shows_only_real_commands_and_flags() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let cmd = command();
    let subs = subcommands(&cmd);
    let mut checked = 0;
    for span in readme.split('`').skip(1).step_by(2) {
        let mut words = span.split_whitespace();
        if words.next() != Some(BIN) {
            continue;
        }
        let Some(name) = words.next() else { continue };
        if name.starts_with('-') {
            continue;
        }
        let Some((_, sub)) = subs.iter().find(|(p, _)| p.len() == 1 && p[0] == name) else {
            panic!("README shows `{BIN} {name}`, which is not a command: {span}");
        };
        for word in words {
            let word = word.trim_start_matches(['[', '(']);
            let Some(flag) = word.strip_prefix("--") else {
                continue;
            };
            let flag = flag.split(['=', ']', ')', ' ']).next().unwrap();
            assert!(
                sub.get_arguments().any(|a| a.get_long() == Some(flag)),
                "README shows `{BIN} {name} --{flag}`, which `{name}` does not accept"
            );
            checked += 1;
        }
    }
    assert!(
        checked > 0,
        "the README shows at least one command with flags"
    );
}

/// The README sends readers only to files of this repository: every link and every repository path it
/// names exists (it once cited a protocol document that lives elsewhere).
#[test]
fn readme_points_only_inside_the_repository() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let mut checked = 0;
    // Markdown links: [text](target).
    for part in readme.split("](").skip(1) {
        let target = part.split(')').next().unwrap();
        if target.starts_with("http://")
            || target.starts_with("https://")
            || target.starts_with('#')
        {
            continue;
        }
        assert!(
            repo().join(target).exists(),
            "README links to {target}, which is not in the repository"
        );
        checked += 1;
    }
    // Code spans that name a repository path (`packaging/…`, `docs/…`, …) or a .md file.
    const TOP: &[&str] = &[
        "packaging/",
        "systemd/",
        "docs/",
        "scripts/",
        "examples/",
        "tests/",
        "vm-tests/",
        "crates/",
        "src/",
        "benches/",
        "fuzz/",
    ];
    for span in readme.split('`').skip(1).step_by(2) {
        for word in span.split_whitespace() {
            let word = word.trim_end_matches([',', '.', ';', ':', ')']);
            let names_a_path = TOP.iter().any(|t| word.starts_with(t)) || word.ends_with(".md");
            if !names_a_path || word.contains(['*', '<', '…']) || word.starts_with("target/") {
                continue;
            }
            assert!(
                repo().join(word).exists(),
                "README names `{word}`, which is not in the repository"
            );
            checked += 1;
        }
    }
    assert!(
        checked > 10,
        "the README names repository paths ({checked} checked)"
    );
}

/// The health gate: the main page explains it with the daemon's own defaults and directories, and
/// `start --help` (and its page) states the defaults of both deadlines.
#[test]
fn the_health_gate_and_its_defaults_are_documented() {
    use machine_config_daemon::config::paths;
    use machine_config_daemon::daemon::gate::{DEFAULT_CHECK_TIMEOUT, DEFAULT_READY_TIMEOUT};
    let (dir, _) = generated();
    let main = render(&dir.path().join("man8").join(man_page_name(&[])));
    let flat = main.split_whitespace().collect::<Vec<_>>().join(" ");
    for needle in [
        "HEALTH GATE".to_string(),
        format!("{}/required.d", paths::IMAGE_HEALTH_CHECKS),
        format!("{}/required.d", paths::CONFIG_HEALTH_CHECKS),
        format!("{}/required.d", paths::GREENBOOT_HEALTH_CHECKS),
        format!("(default {} minutes)", DEFAULT_CHECK_TIMEOUT.as_secs() / 60),
        format!("(default {} minutes)", DEFAULT_READY_TIMEOUT.as_secs() / 60),
        paths::HEALTH_GATE_STATE.to_string(),
        "RolledBack".to_string(),
    ] {
        assert!(
            flat.contains(&needle),
            "{needle:?} not on the main page:\n{main}"
        );
    }
    let mut cli = docgen::command();
    let start = cli.find_subcommand_mut("start").unwrap();
    let help = start.render_long_help().to_string();
    for (flag, default) in [
        ("--health-check-timeout", DEFAULT_CHECK_TIMEOUT),
        ("--health-ready-timeout", DEFAULT_READY_TIMEOUT),
    ] {
        let minutes = format!("[default: {}m]", default.as_secs() / 60);
        let at = help
            .find(flag)
            .unwrap_or_else(|| panic!("{flag} not in:\n{help}"));
        assert!(
            help[at..].contains(&minutes),
            "{flag} does not state {minutes}:\n{help}"
        );
    }
    let page = render(
        &dir.path()
            .join("man8")
            .join(man_page_name(&["start".to_string()])),
    );
    let flat = page.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("[default: 5m]") && flat.contains("[default: 10m]"),
        "{page}"
    );
    assert!(flat.contains("MCD_HEALTH_READY_TIMEOUT"), "{page}");
}
