//! Man pages and shell completions for `machine-config-daemon`, generated from its clap definition
//! ([`machine_config_daemon::cli::Cli`]) so `--help`, the man pages and the completions always describe
//! the same command line. Facts the man page states beyond `--help` (exit codes, files) come from the
//! daemon's own constants.
//!
//! Output layout under `OUTDIR` (what the RPM spec installs):
//! ```text
//! man8/machine-config-daemon.8             the daemon, its service units, files, exit status
//! man8/machine-config-daemon-<command>.8   one page per subcommand, nested ones joined with '-'
//! completions/machine-config-daemon.bash
//! completions/_machine-config-daemon       zsh
//! completions/machine-config-daemon.fish
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;
use roff::{Roff, bold, italic, roman};

use machine_config_daemon::cli::{Cli, exit};
use machine_config_daemon::cluster::client::KUBELET_KUBECONFIG;
use machine_config_daemon::config::paths;

/// The installed binary's name.
pub const BIN: &str = "machine-config-daemon";
/// Man section: system administration commands and daemons.
pub const SECTION: &str = "8";
/// The log filter variable (read by `machine_config_daemon::logging`).
pub const LOG_ENV: &str = "MCD_LOG";

/// The daemon's command line, built (subcommands know their full names), without clap's `help`
/// subcommand, which has no page of its own.
pub fn command() -> clap::Command {
    let mut cmd = unbuilt_command().bin_name(BIN);
    cmd.build();
    cmd
}

/// Before `build()`: subcommands' full names are derived from the binary name given later.
fn unbuilt_command() -> clap::Command {
    Cli::command().name(BIN).disable_help_subcommand(true)
}

/// Every visible subcommand, depth first, with its full path of names (`["plan"]`, …).
pub fn subcommands(cmd: &clap::Command) -> Vec<(Vec<String>, clap::Command)> {
    fn walk(cmd: &clap::Command, prefix: &[String], out: &mut Vec<(Vec<String>, clap::Command)>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let mut path = prefix.to_vec();
            path.push(sub.get_name().to_string());
            out.push((path.clone(), sub.clone()));
            walk(sub, &path, out);
        }
    }
    let mut out = Vec::new();
    walk(cmd, &[], &mut out);
    out
}

/// File name of the page of the subcommand at `path` (empty: the main page).
pub fn man_page_name(path: &[String]) -> String {
    let mut name = BIN.to_string();
    for p in path {
        name.push('-');
        name.push_str(p);
    }
    format!("{name}.{SECTION}")
}

/// One generated file: its path relative to the output directory, and its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub path: PathBuf,
    pub contents: Vec<u8>,
}

/// Every file `docgen` writes, in a stable order.
pub fn outputs() -> Result<Vec<Output>> {
    let cmd = command();
    let mut out = Vec::new();
    out.push(Output {
        path: Path::new("man8").join(man_page_name(&[])),
        contents: main_page(&cmd)?,
    });
    for (path, sub) in subcommands(&cmd) {
        out.push(Output {
            path: Path::new("man8").join(man_page_name(&path)),
            contents: subcommand_page(&path, sub)?,
        });
    }
    for (shell, name) in completion_files() {
        out.push(Output {
            path: Path::new("completions").join(name),
            contents: completion(shell),
        });
    }
    Ok(out)
}

/// The completion script for `shell`.
pub fn completion(shell: Shell) -> Vec<u8> {
    let mut buf = Vec::new();
    if shell == Shell::Bash {
        // clap_complete's bash script never completes a subcommand's options when the binary's name
        // has a hyphen (clap-rs/clap#6421: its dispatch loop and its case labels escape the name
        // differently). Generate it for a name without one, then register it for the real name; the
        // script itself matches the command word through `$1`, whatever it is called.
        let stand_in = BIN.replace('-', "_");
        clap_complete::generate(shell, &mut unbuilt_command(), &stand_in, &mut buf);
        let script = String::from_utf8(buf).expect("completion scripts are UTF-8");
        let registration = format!(" {stand_in}\n");
        assert!(
            script.contains(&registration),
            "bash completion script no longer ends its `complete` lines with the command name"
        );
        return script
            .replace(&registration, &format!(" {BIN}\n"))
            .into_bytes();
    }
    clap_complete::generate(shell, &mut unbuilt_command(), BIN, &mut buf);
    buf
}

/// The completion scripts: shell and the file name its completion directory expects.
pub fn completion_files() -> [(Shell, &'static str); 3] {
    [
        (Shell::Bash, "machine-config-daemon.bash"),
        (Shell::Zsh, "_machine-config-daemon"),
        (Shell::Fish, "machine-config-daemon.fish"),
    ]
}

/// Write every output under `out_dir` (created if missing); returns the paths written.
pub fn generate(out_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for o in outputs()? {
        let path = out_dir.join(&o.path);
        let dir = path.parent().expect("outputs live in a subdirectory");
        std::fs::create_dir_all(dir).with_context(|| format!("Creating {}", dir.display()))?;
        std::fs::write(&path, &o.contents)
            .with_context(|| format!("Writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn man(cmd: clap::Command, title: &str) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd)
        .title(title.to_uppercase())
        .section(SECTION)
        .date(page_date())
        .source(format!("{BIN} {}", env!("CARGO_PKG_VERSION")))
        .manual("System Administration")
}

/// The page date: from `SOURCE_DATE_EPOCH` (set by reproducible package builds), else blank, so the
/// pages depend on the source alone. (A blank must be a space: an empty `.TH` argument is dropped,
/// which would shift the source and manual into the wrong fields.)
fn page_date() -> String {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .map(civil_date)
        .unwrap_or_else(|| " ".to_string())
}

/// `YYYY-MM-DD` (UTC) of a Unix timestamp (days-to-civil algorithm of the proleptic Gregorian calendar).
pub fn civil_date(epoch_seconds: i64) -> String {
    let days = epoch_seconds.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// `machine-config-daemon.8`: clap's sections plus how the daemon runs as a service, its environment,
/// files and exit status.
fn main_page(cmd: &clap::Command) -> Result<Vec<u8>> {
    let m = man(cmd.clone(), BIN);
    let mut w = Vec::new();
    m.render_title(&mut w)?;
    m.render_name_section(&mut w)?;
    m.render_synopsis_section(&mut w)?;
    m.render_description_section(&mut w)?;
    description_more(&mut w)?;
    m.render_options_section(&mut w)?;
    m.render_subcommands_section(&mut w)?;
    service_section(&mut w)?;
    health_gate_section(&mut w)?;
    environment_section(cmd, &mut w)?;
    files_section(&mut w)?;
    main_exit_status_section(cmd, &mut w)?;
    let pages: Vec<String> = subcommands(cmd)
        .iter()
        .map(|(path, _)| man_page_name(path))
        .collect();
    see_also_section(&pages, &mut w)?;
    m.render_version_section(&mut w)?;
    Ok(w)
}

/// `machine-config-daemon-<command>.8`.
fn subcommand_page(path: &[String], sub: clap::Command) -> Result<Vec<u8>> {
    let title = man_page_name(path);
    let title = title.trim_end_matches(&format!(".{SECTION}"));
    let m = man(sub.clone(), title);
    let mut w = Vec::new();
    m.render(&mut w)?;
    environment_section(&sub, &mut w)?;
    exit_status_section(sub.get_name(), &mut w)?;
    see_also_section(&[man_page_name(&[])], &mut w)?;
    Ok(w)
}

fn section(w: &mut Vec<u8>, title: &str, build: impl FnOnce(&mut Roff)) -> Result<()> {
    let mut roff = Roff::new();
    roff.control("SH", [title]);
    build(&mut roff);
    roff.to_writer(w)?;
    Ok(())
}

/// A tagged paragraph: `tag` in bold, then the text.
fn item(roff: &mut Roff, tag: &str, text: &str) {
    roff.control("TP", []);
    roff.text([bold(tag)]);
    roff.text([roman(text)]);
}

fn description_more(w: &mut Vec<u8>) -> Result<()> {
    let mut roff = Roff::new();
    roff.control("PP", []);
    roff.text([roman(
        "On every node that boots from ostree, the daemon watches its own Node object, reads the \
         MachineConfig named by the node's desiredConfig annotation (and the desired OS image), \
         decides what has to change and how disruptive that is, drains the node, writes files, \
         systemd units and SSH keys, stages the new OS deployment with an ostree container deploy, \
         reboots, verifies the booted result and reports progress with the same node annotations, \
         MachineConfigNode conditions and events as the OpenShift machine-config-daemon.",
    )]);
    roff.control("PP", []);
    roff.text([roman(
        "The other commands work without a cluster: they show what an update would do, or the \
         state of the node's OS deployments.",
    )]);
    roff.to_writer(w)?;
    Ok(())
}

fn service_section(w: &mut Vec<u8>) -> Result<()> {
    section(w, "SYSTEMD UNITS", |roff| {
        item(
            roff,
            "machine-config-daemon.service",
            "Runs the daemon (Type=notify: ready after its first sync, with a watchdog). \
             Stopping it lets the step in progress finish (up to 600 seconds): the progress journal \
             in /etc/machine-config-daemon lets a restarted daemon resume the update. Set NODE_NAME \
             and MCD_ARGS in the environment file to change how it starts.",
        );
        item(
            roff,
            "machine-config-daemon-firstboot.service",
            &format!(
                "On a node's first boot, applies the MachineConfig Ignition wrote to {} (OS image, \
                 kernel arguments, files, units) and reboots into it before the kubelet starts. It \
                 runs only when that file exists, and only on ostree-booted hosts.",
                paths::ENCAPSULATED_CONFIG
            ),
        );
        item(
            roff,
            "firstboot-osupdate.target",
            "Reached once the first-boot update is done or was not needed.",
        );
    })
}

/// The health gate after a boot into a new deployment, with the defaults the daemon uses.
fn health_gate_section(w: &mut Vec<u8>) -> Result<()> {
    use machine_config_daemon::daemon::gate::{DEFAULT_CHECK_TIMEOUT, DEFAULT_READY_TIMEOUT};
    use machine_config_daemon::plan::{CheckKind, health::check_dirs};
    let minutes = |d: std::time::Duration| format!("{} minutes", d.as_secs() / 60);
    section(w, "HEALTH GATE", |roff| {
        roff.control("PP", []);
        roff.text([roman(format!(
            "After an update boots a new deployment (a new OS image, kernel arguments, kernel type or              extensions), and before the node reports Done, the daemon runs the health gate. Every              required check must exit 0: the executables in {} (shipped in the OS image), in {} (from a              MachineConfig; a file of the same name replaces the image's, a symlink to /dev/null              disables it) and greenboot's *.sh scripts in {} (run with bash). They run in name order,              ours first; after the first failure the remaining required checks are skipped. Checks in              the wanted.d directories next to them only warn (event HealthCheckWarning). Each check is              killed with its process group after --health-check-timeout (default {}). The node's own              Ready condition, with a heartbeat from this boot, must be reported through the API server              within --health-ready-timeout of the gate's start (default {}). Both can also be set with              MCD_HEALTH_CHECK_TIMEOUT and MCD_HEALTH_READY_TIMEOUT in the environment file.",
            check_dirs(CheckKind::Required)[0],
            check_dirs(CheckKind::Required)[1],
            check_dirs(CheckKind::Required)[2],
            minutes(DEFAULT_CHECK_TIMEOUT),
            minutes(DEFAULT_READY_TIMEOUT),
        ))]);
        roff.control("PP", []);
        roff.text([roman(
            "When everything passes, the node reports Done, and deployments older than the              previous one are removed (the previous one is kept to roll back to). When a required              check fails or the deadline passes, the daemon makes the previous deployment the default              (rpm-ostree: Rollback), reboots once, puts the config's files back at the old config,              and reports Degraded with the evidence (which image, which check and the last lines of              its output, or which deadline passed), an event RolledBack, the MachineConfigNode              condition NodeDegraded and the metric mcd_rollbacks. currentConfig and the on-disk              config stay at the old config. The node is uncordoned once the previous deployment is              healthy. The failed config and image are not tried again until the node's              desiredConfig or desiredImage changes, or the forcefile is touched. plan says which              checks will run; status shows the last gate.",
        )]);
    })
}

fn environment_section(cmd: &clap::Command, w: &mut Vec<u8>) -> Result<()> {
    let from_args: Vec<(String, String)> = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| {
            let env = a.get_env()?.to_string_lossy().into_owned();
            let flag = a
                .get_long()
                .map(|l| format!("--{l}"))
                .unwrap_or_else(|| a.get_id().to_string());
            Some((env, format!("Default for {flag}.")))
        })
        .collect();
    let is_main = cmd.get_name() == BIN;
    section(w, "ENVIRONMENT", |roff| {
        for (env, text) in &from_args {
            item(roff, env, text);
        }
        item(
            roff,
            LOG_ENV,
            "Log filter in tracing EnvFilter syntax, e.g. debug or machine_config_daemon=trace. \
             Logs go to the journal with structured fields when running under systemd, to \
             standard error otherwise.",
        );
        if is_main {
            item(
                roff,
                "NODE_NAME, MCD_ARGS, MCD_FIRSTBOOT_ARGS",
                "Read by the systemd units from /etc/sysconfig/machine-config-daemon or \
                 /etc/default/machine-config-daemon: the Node's name, and extra options for the \
                 start and firstboot-complete-machineconfig commands.",
            );
        }
    })
}

fn files_section(w: &mut Vec<u8>) -> Result<()> {
    section(w, "FILES", |roff| {
        item(
            roff,
            &format!("{}/", paths::STATE_DIR),
            "The daemon's state, readable by root only: the config the node is on, backups of \
             files a config replaced, the progress journal of the update in flight.",
        );
        item(
            roff,
            paths::CURRENT_CONFIG,
            "The MachineConfig the node is on (or is about to boot into).",
        );
        item(
            roff,
            paths::CURRENT_IMAGE,
            "The OS image the node is on, when it follows an image.",
        );
        item(
            roff,
            paths::ENCAPSULATED_CONFIG,
            "The first-boot MachineConfig (its OS part is applied); renamed to .bak once applied.",
        );
        item(
            roff,
            "/etc/machine-config-daemon/node-annotations.json",
            "The machine-config-server's initial node annotations: on its first start the daemon              sets them on a Node without a currentConfig, validates the node against that rendered              config, records it, and renames the file to node-annotation.json.bak.",
        );
        item(
            roff,
            paths::FORCEFILE,
            "Touch it to re-apply the current config without validating the on-disk state (the daemon looks for it every 10 s; removed when used).",
        );
        item(
            roff,
            &format!(
                "{}/, {}/, {}/",
                paths::IMAGE_HEALTH_CHECKS,
                paths::CONFIG_HEALTH_CHECKS,
                paths::GREENBOOT_HEALTH_CHECKS
            ),
            "Health checks (required.d/, wanted.d/) run after a boot into a new deployment; see HEALTH GATE.",
        );
        item(
            roff,
            paths::HEALTH_GATE_STATE,
            "The last health gate (each check's result and last output, the Ready wait, the verdict)              and the rollback in flight; under /var because every deployment shares it.",
        );
        item(
            roff,
            KUBELET_KUBECONFIG,
            "The kubelet's credentials, which the daemon uses to write its own Node object.",
        );
        item(
            roff,
            "/etc/sysconfig/machine-config-daemon, /etc/default/machine-config-daemon",
            "Environment of the systemd units.",
        );
    })
}

/// A subcommand's own exit statuses ([`exit::statuses`], the same table the CLI tests hold it to).
fn exit_status_section(command: &str, w: &mut Vec<u8>) -> Result<()> {
    let statuses = exit::statuses(command);
    anyhow::ensure!(
        !statuses.is_empty(),
        "no exit statuses documented for `{command}`"
    );
    section(w, "EXIT STATUS", |roff| {
        for (code, meaning) in &statuses {
            item(roff, &code.to_string(), meaning);
        }
    })
}

/// The main page: every status any command ends with, and which commands use it.
fn main_exit_status_section(cmd: &clap::Command, w: &mut Vec<u8>) -> Result<()> {
    let mut by_code: std::collections::BTreeMap<u8, Vec<String>> = Default::default();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        for (code, _) in exit::statuses(sub.get_name()) {
            by_code
                .entry(code)
                .or_default()
                .push(sub.get_name().to_string());
        }
    }
    let meaning = |code: u8| match code {
        exit::OK => "Success.",
        exit::FAILURE => "The work failed.",
        exit::INVALID_INPUT => {
            "Invalid input or command line; the message names the file (or option) and the \
             field, and nothing was written. The service is not restarted after this status."
        }
        exit::UNRECONCILABLE => {
            "The config cannot be applied to a running node (unreconcilable); the plan is still \
             printed with every offending field."
        }
        exit::MISMATCH => "The node root differs from the config (validate).",
        _ => "",
    };
    section(w, "EXIT STATUS", |roff| {
        for (code, commands) in &by_code {
            item(
                roff,
                &code.to_string(),
                &format!(
                    "{} Returned by: {}. Each command's page says what it means there.",
                    meaning(*code),
                    commands.join(", ")
                ),
            );
        }
    })
}

fn see_also_section(pages: &[String], w: &mut Vec<u8>) -> Result<()> {
    let mut refs: Vec<String> = pages
        .iter()
        .map(|p| {
            let (name, sec) = p.rsplit_once('.').expect("pages are NAME.SECTION");
            format!("{name}({sec})")
        })
        .collect();
    refs.extend(["ostree(1)", "skopeo(1)", "systemd.service(5)", "kubectl(1)"].map(String::from));
    section(w, "SEE ALSO", |roff| {
        let mut inlines = Vec::new();
        for (i, r) in refs.iter().enumerate() {
            if i > 0 {
                inlines.push(roman(", "));
            }
            let (name, rest) = r.split_once('(').expect("NAME(SECTION)");
            inlines.push(italic(name));
            inlines.push(roman(format!("({rest}")));
        }
        roff.text(inlines);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(951_782_400), "2000-02-29");
        assert_eq!(civil_date(1_700_000_000), "2023-11-14");
        assert_eq!(civil_date(-86_400), "1969-12-31");
    }

    #[test]
    fn page_names_join_the_command_path() {
        assert_eq!(man_page_name(&[]), "machine-config-daemon.8");
        assert_eq!(
            man_page_name(&["plan".to_string()]),
            "machine-config-daemon-plan.8"
        );
    }
}
