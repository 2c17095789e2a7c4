//! `testbed`: the test infrastructure from the shell, for the demo and scripts. State lives in the
//! directories given on the command line, so steps can run as separate commands.
//!
//! ```text
//! testbed build-base --lab /tmp/lab --tag base --version 1.0
//! testbed derive --lab /tmp/lab --from base --to v2 --file usr/bin/htop=htop --version 1.1
//! testbed registry --dir /tmp/reg --port 5000 &      # runs until killed
//! testbed push --lab /tmp/lab --tag v2 --registry 127.0.0.1:5000 --name os
//! testbed sysroot --dir /tmp/sysroot
//! testbed node-root --dir /tmp/node --registry 127.0.0.1:5000
//! testbed fake-systemd --dir /tmp/bus &              # prints the bus address; calls go to calls.log
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::{Parser, Subcommand};
use testbed::{
    BaseSpec, BuiltImage, Credentials, FileSpec, ImageLab, LayerSpec, Registry, SandboxSysroot,
};

#[derive(Debug, Parser)]
#[command(
    name = "testbed",
    about = "OS images, a local registry and sandbox sysroots for tests and demos"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build a bootable base OS image from scratch into the lab's OCI layout.
    BuildBase {
        #[arg(long)]
        lab: PathBuf,
        #[arg(long)]
        tag: String,
        #[arg(long, default_value = "1.0")]
        version: String,
        /// Extra files, `path=contents` (put /etc files under usr/etc).
        #[arg(long = "file", value_name = "PATH=CONTENTS")]
        files: Vec<String>,
        /// Size of an incompressible payload file (for benchmarks).
        #[arg(long, default_value_t = 0)]
        payload_bytes: u64,
        /// Leave out the ostree.bootable label (an image ostree-ext must refuse).
        #[arg(long)]
        not_bootable: bool,
    },
    /// Make a derived image: `FROM <from>` plus one layer.
    Derive {
        #[arg(long)]
        lab: PathBuf,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long = "file", value_name = "PATH=CONTENTS")]
        files: Vec<String>,
        /// An incompressible file in the layer, `path=bytes`.
        #[arg(long = "random", value_name = "PATH=BYTES")]
        random: Option<String>,
        #[arg(long)]
        version: Option<String>,
    },
    /// Print what the lab holds for a tag (digests and sizes) as JSON.
    Describe {
        #[arg(long)]
        lab: PathBuf,
        #[arg(long)]
        tag: String,
    },
    /// Run Debian's docker-registry on 127.0.0.1 until killed; prints its address.
    Registry {
        #[arg(long)]
        dir: PathBuf,
        /// 0 picks a free port.
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Require these credentials (htpasswd).
        #[arg(long, value_name = "USER:PASSWORD")]
        auth: Option<String>,
    },
    /// Push a lab tag to a registry with skopeo; prints the pull spec by digest.
    Push {
        #[arg(long)]
        lab: PathBuf,
        #[arg(long)]
        tag: String,
        /// `127.0.0.1:<port>` of a plain-HTTP registry.
        #[arg(long)]
        registry: String,
        #[arg(long, default_value = "os")]
        name: String,
        #[arg(long, value_name = "USER:PASSWORD")]
        creds: Option<String>,
    },
    /// Print the benchmark figures recorded in DIR as one table against their targets (`make bench`);
    /// exits 1 when a target is missed or a figure was not measured.
    BenchReport {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print the reliability sweep's results recorded in DIR (crash points, API faults, bad input,
    /// secrets, fuzzing) and its summary line (`make test`); exits 1 when a part has no result.
    SweepReport {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Prepare a directory standing in for a node's `/`: users (root, core), and a registries.conf that
    /// marks the given plain-HTTP registry insecure.
    NodeRoot {
        #[arg(long)]
        dir: PathBuf,
        /// `127.0.0.1:<port>` of the registry OS images come from.
        #[arg(long)]
        registry: String,
    },
    /// Serve the systemd1 Manager test service on a private dbus-daemon until killed. Prints the bus
    /// address (for `DBUS_SYSTEM_BUS_ADDRESS`); every call is appended to `<dir>/calls.log` as it happens.
    FakeSystemd {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Create (or reuse) a sandbox ostree sysroot.
    Sysroot {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "default")]
        stateroot: String,
    },
}

fn parse_files(files: &[String]) -> Result<Vec<FileSpec>> {
    files
        .iter()
        .map(|f| {
            let (path, contents) = f
                .split_once('=')
                .ok_or_else(|| anyhow!("--file wants PATH=CONTENTS, got {f:?}"))?;
            Ok(FileSpec::new(path, format!("{contents}\n")))
        })
        .collect()
}

fn print_image(img: &BuiltImage) {
    let layers: Vec<_> = img
        .layers
        .iter()
        .map(|l| serde_json::json!({"digest": l.digest, "size": l.size}))
        .collect();
    let doc = serde_json::json!({
        "tag": img.tag,
        "manifestDigest": img.manifest_digest,
        "manifestSize": img.manifest_size,
        "config": {"digest": img.config.digest, "size": img.config.size},
        "layers": layers,
        "version": img.version,
    });
    println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
}

fn credentials(s: &str) -> Result<Credentials> {
    let (username, password) = s
        .split_once(':')
        .ok_or_else(|| anyhow!("credentials must be USER:PASSWORD"))?;
    Ok(Credentials {
        username: username.into(),
        password: password.into(),
    })
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::BuildBase {
            lab,
            tag,
            version,
            files,
            payload_bytes,
            not_bootable,
        } => {
            let lab = ImageLab::open(&lab)?;
            let mut spec = BaseSpec::new(&tag, &version);
            spec.files = parse_files(&files)?;
            spec.payload_bytes = payload_bytes;
            spec.bootable = !not_bootable;
            print_image(&lab.build_base(&spec).await?);
        }
        Command::Derive {
            lab,
            from,
            to,
            files,
            random,
            version,
        } => {
            let lab = ImageLab::open(&lab)?;
            let mut layer = LayerSpec::new(&format!("RUN testbed derive {to}"));
            layer.files = parse_files(&files)?;
            if let Some(r) = random {
                let (path, bytes) = r
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--random wants PATH=BYTES"))?;
                layer.random_file =
                    Some((path.to_string(), bytes.parse().context("--random size")?));
            }
            print_image(&lab.derive(&from, &to, &[layer], version.as_deref())?);
        }
        Command::Describe { lab, tag } => print_image(&ImageLab::open(&lab)?.describe(&tag)?),
        Command::Registry { dir, port, auth } => {
            let registry =
                Registry::start_in(&dir, port, auth.as_deref().map(credentials).transpose()?)?;
            println!("{}", registry.addr());
            eprintln!("access log: {}", dir.join("access.log").display());
            // Stop the registry with us (SIGTERM/SIGINT), or report when it dies by itself.
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate())?;
            let mut int = signal(SignalKind::interrupt())?;
            let mut registry = registry;
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {
                        if let Some(status) = registry.try_wait()? {
                            anyhow::bail!("docker-registry exited: {status}");
                        }
                    }
                }
            }
            drop(registry);
        }
        Command::Push {
            lab,
            tag,
            registry,
            name,
            creds,
        } => {
            let lab = ImageLab::open(&lab)?;
            let img = lab.describe(&tag)?;
            let dest = format!("{registry}/{name}:{tag}");
            let mut cmd = std::process::Command::new("skopeo");
            cmd.args([
                "copy",
                "--insecure-policy",
                "--quiet",
                "--dest-tls-verify=false",
            ]);
            if let Some(c) = creds {
                cmd.arg(format!("--dest-creds={c}"));
            }
            let status = cmd
                .arg(lab.oci_ref(&tag))
                .arg(format!("docker://{dest}"))
                .status()?;
            anyhow::ensure!(status.success(), "skopeo copy failed: {status}");
            println!("{registry}/{name}@{}", img.manifest_digest);
        }
        Command::NodeRoot { dir, registry } => {
            std::fs::create_dir_all(&dir)?;
            let write = |rel: &str, text: &str| -> Result<()> {
                let p = dir.join(rel);
                std::fs::create_dir_all(p.parent().expect("has a parent"))?;
                std::fs::write(&p, text).with_context(|| format!("Writing {}", p.display()))
            };
            write(
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\ncore:x:1000:1000:CoreOS Admin:/var/home/core:/bin/bash\n",
            )?;
            write("etc/group", "root:x:0:\ncore:x:1000:\n")?;
            write(
                "etc/shadow",
                "root:*:19000:0:99999:7:::\ncore:*:19000:0:99999:7:::\n",
            )?;
            write(
                "etc/containers/registries.conf",
                &format!("[[registry]]\nlocation = \"{registry}\"\ninsecure = true\n"),
            )?;
            println!("{}", dir.display());
        }
        Command::FakeSystemd { dir } => {
            use std::io::Write as _;
            std::fs::create_dir_all(&dir)?;
            let bus = testbed::PrivateBus::start()?;
            let systemd = testbed::systemd::FakeSystemd::start(&bus).await?;
            let log_path = dir.join("calls.log");
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .with_context(|| format!("Opening {}", log_path.display()))?;
            println!("{}", bus.address());
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate())?;
            let mut int = signal(SignalKind::interrupt())?;
            let mut written = 0;
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {
                        let calls = systemd.calls();
                        for call in &calls[written..] {
                            writeln!(log, "{call}")?;
                        }
                        written = calls.len();
                    }
                }
            }
            drop(systemd);
            drop(bus);
        }
        Command::Sysroot { dir, stateroot } => {
            let s = SandboxSysroot::create_at(&dir, &stateroot)?;
            println!("{}", s.path().display());
        }
        Command::BenchReport { dir } => {
            let expected = [
                "P1", "P2", "P3", "P3r", "P4", "P5", "P6", "P7", "P8", "P9a", "P9b", "P9c",
            ];
            let (table, all_pass) = testbed::figures::report(&dir, &expected)?;
            print!("{table}");
            println!("report: {}", dir.join("report.json").display());
            anyhow::ensure!(
                all_pass,
                "a target was missed or a figure was not measured (see the table)"
            );
        }
        Command::SweepReport { dir } => {
            let (text, complete) = testbed::sweep::report(&dir)?;
            print!("{text}");
            anyhow::ensure!(complete, "the reliability sweep is incomplete (see above)");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("testbed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
