//! One test VM: a private copy of a disk image, booted again and again like a machine would be.
//!
//! The harness is the bootloader. Before every boot it reads the boot entries from the disk with
//! debugfs, takes the highest `version` (or the one asked for), copies that kernel and initramfs out
//! and starts QEMU with `-no-reboot`, so a guest reboot ends the QEMU process and the next boot picks
//! whatever entries the guest left behind (e.g. after `ostree-finalize-staged`).
//!
//! Host ↔ guest: the serial console goes to `boot-NN.serial.log` (markers: `VMTEST-READY`, the
//! kernel's `reboot: Restarting system` / `reboot: Power down`); commands go through a 9p share
//! (`share/cmd/NNNN.sh` → `.out`, `.err`, `.rc`), run by the guest's `vmtest-agent`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fn_error_context::context;

use crate::bls::{self, BootEntry, EntrySelection};
use crate::cmd::CommandExt;
use crate::disk::Disk;
use crate::image::DiskImage;
use crate::ostree_status::{self, Status};
use crate::qemu::{self, GuestForward, QemuSpec};
use crate::serial::{self, Ready};

/// Where the guest mounts the host's share (`share/` in the VM's directory).
pub const GUEST_SHARE: &str = "/run/vmtest/host";

const POLL: Duration = Duration::from_millis(200);

/// How a VM is run.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub memory_mib: u32,
    pub cpus: u32,
    /// From QEMU start to `VMTEST-READY`.
    pub boot_timeout: Duration,
    /// From asking for a reboot/poweroff (or waiting for one) to QEMU's exit.
    pub shutdown_timeout: Duration,
    /// For one [`Vm::exec`].
    pub command_timeout: Duration,
    /// How long the guest agent may take to start a command (it polls every 0.2 s).
    pub pickup_timeout: Duration,
    /// Host ports the guest may reach (and nothing else).
    pub forwards: Vec<GuestForward>,
    /// Appended to the boot entry's options on every boot.
    pub extra_kargs: Vec<String>,
    /// Full kernel and systemd output on the console. Off by default (`quiet`): under emulation
    /// every console byte costs time. `VMTEST_VERBOSE_CONSOLE=1` turns it on.
    pub verbose_console: bool,
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            memory_mib: 2048,
            cpus: 2,
            boot_timeout: Duration::from_secs(180),
            shutdown_timeout: Duration::from_secs(120),
            command_timeout: Duration::from_secs(600),
            pickup_timeout: Duration::from_secs(60),
            forwards: Vec::new(),
            extra_kargs: Vec::new(),
            verbose_console: std::env::var_os("VMTEST_VERBOSE_CONSOLE").is_some_and(|v| v == "1"),
        }
    }
}

/// How a boot ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The guest rebooted (`reboot: Restarting system`).
    Reboot,
    /// The guest powered off (`reboot: Power down`).
    PowerOff,
    /// The harness killed QEMU: a power cut.
    PowerCut,
}

/// Failures a scenario may want to tell apart.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("boot {boot} was not ready after {secs} s (serial log: {log})")]
    BootTimeout { boot: u32, secs: u64, log: String },
    #[error("boot {boot} failed: {reason} (serial log: {log})")]
    BootFailed {
        boot: u32,
        reason: String,
        log: String,
    },
    #[error(
        "the VM went down ({exit:?}) during boot {boot} before it was ready (serial log: {log})"
    )]
    DownBeforeReady { boot: u32, exit: Exit, log: String },
    #[error("the VM did not go down within {secs} s in boot {boot} (serial log: {log})")]
    ShutdownTimeout { boot: u32, secs: u64, log: String },
    #[error("QEMU exited in boot {boot} without a reboot or power-down message: {detail}")]
    Crashed { boot: u32, detail: String },
    #[error("boot {boot} ended with {actual:?}, expected {expected:?}")]
    UnexpectedExit {
        boot: u32,
        expected: Exit,
        actual: Exit,
    },
    #[error(
        "the guest agent did not pick up command {id} within {secs} s (is vmtest-agent.service running?)"
    )]
    CommandNotPickedUp { id: String, secs: u64 },
    #[error("command {id} did not finish within {secs} s")]
    CommandTimeout { id: String, secs: u64 },
    #[error("the VM went down ({exit:?}) while command {id} was running")]
    CommandInterrupted { id: String, exit: Exit },
    #[error("the VM is not running")]
    NotRunning,
}

/// One boot of the VM, as the harness saw it.
#[derive(Debug, Clone)]
pub struct BootRecord {
    /// 1 for the first boot.
    pub number: u32,
    pub entry: BootEntry,
    pub serial_log: PathBuf,
    pub ready: Option<Ready>,
    /// Host wall time from QEMU start to the readiness marker.
    pub ready_after: Option<Duration>,
    pub exit: Option<Exit>,
    /// Host wall time from QEMU start to its exit.
    pub lifetime: Option<Duration>,
}

/// Output of one command run in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug)]
struct Running {
    child: Child,
    started: Instant,
}

/// A VM and its boots. Dropping it kills QEMU.
#[derive(Debug)]
pub struct Vm {
    dir: PathBuf,
    disk: PathBuf,
    share: PathBuf,
    config: VmConfig,
    boots: Vec<BootRecord>,
    running: Option<Running>,
    next_command: u32,
}

impl Vm {
    /// A VM in `dir` booting a private copy of `image`.
    #[context("Creating a VM in {}", dir.display())]
    pub fn create(image: &DiskImage, dir: &Path, config: VmConfig) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let disk = dir.join("disk.img");
        Command::new("cp")
            .arg("--sparse=always")
            .arg(&image.disk)
            .arg(&disk)
            .run_checked()?;
        let share = dir.join("share");
        fs::create_dir_all(share.join("cmd"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            disk,
            share,
            config,
            boots: Vec::new(),
            running: None,
            next_command: 1,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The host side of the 9p share, seen in the guest at [`GUEST_SHARE`]: a way to hand the guest
    /// files (configs, binaries) or collect them.
    pub fn share_dir(&self) -> &Path {
        &self.share
    }

    /// How the next boots run: e.g. kernel arguments for the next boot only
    /// (`config_mut().extra_kargs`).
    pub fn config_mut(&mut self) -> &mut VmConfig {
        &mut self.config
    }

    pub fn boots(&self) -> &[BootRecord] {
        &self.boots
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    fn current(&self) -> Result<&BootRecord> {
        self.boots.last().context("the VM was never booted")
    }

    fn log_of(&self) -> String {
        self.boots
            .last()
            .map(|b| b.serial_log.display().to_string())
            .unwrap_or_default()
    }

    /// The VM's disk, for host-side checks while it is off.
    pub fn disk(&self) -> Result<Disk> {
        if self.running.is_some() {
            bail!("the disk can only be inspected while the VM is off");
        }
        Disk::open(&self.disk)
    }

    /// Boot the default entry and wait until the guest is ready.
    pub fn boot(&mut self) -> Result<&BootRecord> {
        self.boot_entry(EntrySelection::Default)
    }

    /// Boot the chosen entry and wait until the guest is ready.
    pub fn boot_entry(&mut self, selection: EntrySelection) -> Result<&BootRecord> {
        self.start(selection)?;
        self.wait_ready()
    }

    /// Start QEMU on the chosen entry without waiting.
    #[context("Starting boot {}", self.boots.len() + 1)]
    pub fn start(&mut self, selection: EntrySelection) -> Result<()> {
        if self.running.is_some() {
            bail!("the VM is already running");
        }
        let number = self.boots.len() as u32 + 1;
        let disk = Disk::open(&self.disk)?;
        let entries = disk.boot_entries()?;
        let entry = bls::select(&entries, selection)?.clone();
        let kernel_dir = self.dir.join("kernel");
        fs::create_dir_all(&kernel_dir)?;
        let kernel = kernel_dir.join("vmlinuz");
        let initrd = kernel_dir.join("initramfs.img");
        disk.dump(&BootEntry::path_on_root(&entry.linux), &kernel)?;
        disk.dump(&BootEntry::path_on_root(&entry.initrd), &initrd)?;
        let mut append = format!("{} vmtest.boot={number}", entry.options);
        if !self.config.verbose_console {
            append.push_str(" quiet");
        }
        for karg in &self.config.extra_kargs {
            append.push(' ');
            append.push_str(karg);
        }
        let serial_log = self.dir.join(format!("boot-{number:02}.serial.log"));
        let qemu_log = self.dir.join(format!("boot-{number:02}.qemu.log"));
        let spec = QemuSpec {
            kernel,
            initrd,
            append,
            disk: self.disk.clone(),
            serial_log: serial_log.clone(),
            share_dir: self.share.clone(),
            memory_mib: self.config.memory_mib,
            cpus: self.config.cpus,
            forwards: self.config.forwards.clone(),
        };
        let out = fs::File::create(&qemu_log)?;
        let child = Command::new("qemu-system-x86_64")
            .args(qemu::args(&spec))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("Starting qemu-system-x86_64")?;
        tracing::info!(
            boot = number,
            entry = %entry.file_name,
            version = entry.version,
            ostree = entry.ostree_target().unwrap_or("-"),
            "starting VM"
        );
        self.running = Some(Running {
            child,
            started: Instant::now(),
        });
        self.boots.push(BootRecord {
            number,
            entry,
            serial_log,
            ready: None,
            ready_after: None,
            exit: None,
            lifetime: None,
        });
        Ok(())
    }

    fn console(&self) -> Result<serial::ConsoleScan> {
        let log = &self.current()?.serial_log;
        let bytes = fs::read(log).unwrap_or_default();
        Ok(serial::scan(&String::from_utf8_lossy(&bytes)))
    }

    /// If QEMU has exited: record and return how the boot ended.
    fn reap(&mut self) -> Result<Option<Exit>> {
        let Some(running) = self.running.as_mut() else {
            return Ok(None);
        };
        let Some(status) = running.child.try_wait()? else {
            return Ok(None);
        };
        let lifetime = running.started.elapsed();
        self.running = None;
        let scan = self.console()?;
        let number = self.current()?.number;
        let exit = if let Some(panic) = scan.panic {
            return Err(VmError::Crashed {
                boot: number,
                detail: panic,
            }
            .into());
        } else if scan.restarting {
            Exit::Reboot
        } else if scan.power_down {
            Exit::PowerOff
        } else {
            let qemu_log = self.dir.join(format!("boot-{number:02}.qemu.log"));
            let text = fs::read_to_string(&qemu_log).unwrap_or_default();
            return Err(VmError::Crashed {
                boot: number,
                detail: format!("QEMU {status}: {}", text.trim()),
            }
            .into());
        };
        let record = self
            .boots
            .last_mut()
            .expect("a running VM has a boot record");
        record.exit = Some(exit);
        record.lifetime = Some(lifetime);
        tracing::info!(
            boot = number,
            ?exit,
            seconds = lifetime.as_secs_f64(),
            "VM went down"
        );
        Ok(Some(exit))
    }

    /// Whether QEMU has exited since the last look, and how the boot ended (then recorded in its
    /// [`BootRecord`]). `None` while it runs (or when it was not running).
    pub fn check_exit(&mut self) -> Result<Option<Exit>> {
        self.reap()
    }

    /// Wait for the readiness marker of the current boot.
    pub fn wait_ready(&mut self) -> Result<&BootRecord> {
        let number = self.current()?.number;
        let started = self.running.as_ref().ok_or(VmError::NotRunning)?.started;
        let deadline = started + self.config.boot_timeout;
        loop {
            let scan = self.console()?;
            if let Some(ready) = scan.ready.filter(|r| r.boot == number) {
                let after = started.elapsed();
                tracing::info!(
                    boot = number,
                    host_s = after.as_secs_f64(),
                    guest_uptime_s = ready.uptime_s,
                    net_up = ready.net_up,
                    "VM ready"
                );
                let record = self.boots.last_mut().expect("current boot");
                record.ready = Some(ready);
                record.ready_after = Some(after);
                return Ok(self.boots.last().expect("current boot"));
            }
            let failure = scan.failed.or(scan.panic).or(scan
                .emergency
                .then(|| "systemd entered emergency mode".to_string()));
            if let Some(reason) = failure {
                self.kill();
                return Err(VmError::BootFailed {
                    boot: number,
                    reason,
                    log: self.log_of(),
                }
                .into());
            }
            if let Some(exit) = self.reap()? {
                return Err(VmError::DownBeforeReady {
                    boot: number,
                    exit,
                    log: self.log_of(),
                }
                .into());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(VmError::BootTimeout {
                    boot: number,
                    secs: self.config.boot_timeout.as_secs(),
                    log: self.log_of(),
                }
                .into());
            }
            std::thread::sleep(POLL);
        }
    }

    /// Wait until the current boot's console shows `needle` (e.g. to cut the power at a chosen
    /// moment); fails if the VM goes down first or `timeout` passes.
    pub fn wait_console(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = &self.current()?.serial_log;
            let text = serial::clean(&String::from_utf8_lossy(&fs::read(log).unwrap_or_default()));
            if text.contains(needle) {
                return Ok(());
            }
            if let Some(exit) = self.reap()? {
                bail!("the VM went down ({exit:?}) before its console showed {needle:?}");
            }
            if Instant::now() >= deadline {
                bail!(
                    "the console did not show {needle:?} within {} s",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Wait for the guest to go down on its own (reboot or poweroff).
    pub fn wait_exit(&mut self) -> Result<Exit> {
        if self.running.is_none() {
            return Err(VmError::NotRunning.into());
        }
        let number = self.current()?.number;
        let deadline = Instant::now() + self.config.shutdown_timeout;
        loop {
            if let Some(exit) = self.reap()? {
                return Ok(exit);
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(VmError::ShutdownTimeout {
                    boot: number,
                    secs: self.config.shutdown_timeout.as_secs(),
                    log: self.log_of(),
                }
                .into());
            }
            std::thread::sleep(POLL);
        }
    }

    /// Wait for the guest to go down, requiring `expected`.
    pub fn expect_exit(&mut self, expected: Exit) -> Result<()> {
        let actual = self.wait_exit()?;
        if actual != expected {
            return Err(VmError::UnexpectedExit {
                boot: self.current()?.number,
                expected,
                actual,
            }
            .into());
        }
        Ok(())
    }

    /// Wait for the guest's own reboot, then boot the new default entry.
    pub fn follow_reboot(&mut self) -> Result<&BootRecord> {
        self.expect_exit(Exit::Reboot)?;
        self.boot()
    }

    /// Ask the guest to reboot (`systemctl reboot`) and boot the new default entry.
    pub fn reboot(&mut self) -> Result<&BootRecord> {
        self.send("systemctl reboot")?;
        self.follow_reboot()
    }

    /// Ask the guest to power off and wait until it has.
    pub fn poweroff(&mut self) -> Result<()> {
        self.send("systemctl poweroff")?;
        self.expect_exit(Exit::PowerOff)
    }

    /// Cut the power: kill QEMU at once. Whatever the guest had not written to its disk is lost.
    pub fn power_cut(&mut self) -> Result<()> {
        let mut running = self.running.take().ok_or(VmError::NotRunning)?;
        running.child.kill().context("Killing QEMU")?;
        running.child.wait()?;
        let record = self
            .boots
            .last_mut()
            .expect("a running VM has a boot record");
        record.exit = Some(Exit::PowerCut);
        record.lifetime = Some(running.started.elapsed());
        tracing::info!(boot = record.number, "power cut");
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut running) = self.running.take() {
            let _ = running.child.kill();
            let _ = running.child.wait();
        }
    }

    fn cmd_dir(&self) -> PathBuf {
        self.share.join("cmd")
    }

    /// Hand a script to the guest agent; returns its id without waiting.
    pub fn send(&mut self, script: &str) -> Result<String> {
        if self.running.is_none() {
            return Err(VmError::NotRunning.into());
        }
        let id = format!("{:04}", self.next_command);
        self.next_command += 1;
        let dir = self.cmd_dir();
        let tmp = dir.join(format!("{id}.sh.tmp"));
        fs::write(&tmp, format!("set -eu\n{script}\n"))?;
        fs::rename(&tmp, dir.join(format!("{id}.sh")))?;
        tracing::debug!(id, script, "sent command");
        Ok(id)
    }

    /// Run a bash script in the guest (with `set -eu`) and return its status and output.
    pub fn exec(&mut self, script: &str) -> Result<ExecOutput> {
        let id = self.send(script)?;
        let dir = self.cmd_dir();
        let rc_path = dir.join(format!("{id}.rc"));
        let started_path = dir.join(format!("{id}.started"));
        let sent = Instant::now();
        let deadline = sent + self.config.command_timeout;
        loop {
            if let Ok(rc) = fs::read_to_string(&rc_path) {
                let status = rc.trim().parse().with_context(|| {
                    format!("command {id} wrote a bad exit status {:?}", rc.trim())
                })?;
                let read = |ext: &str| fs::read_to_string(dir.join(format!("{id}.{ext}")));
                let output = ExecOutput {
                    status,
                    stdout: read("out").unwrap_or_default(),
                    stderr: read("err").unwrap_or_default(),
                };
                tracing::debug!(id, status, "command finished");
                return Ok(output);
            }
            if let Some(exit) = self.reap()? {
                return Err(VmError::CommandInterrupted { id, exit }.into());
            }
            if sent.elapsed() >= self.config.pickup_timeout && !started_path.exists() {
                return Err(VmError::CommandNotPickedUp {
                    id,
                    secs: self.config.pickup_timeout.as_secs(),
                }
                .into());
            }
            if Instant::now() >= deadline {
                return Err(VmError::CommandTimeout {
                    id,
                    secs: self.config.command_timeout.as_secs(),
                }
                .into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Run a script that must succeed; returns its stdout.
    pub fn exec_ok(&mut self, script: &str) -> Result<String> {
        let out = self.exec(script)?;
        if out.status != 0 {
            bail!(
                "guest command failed with status {}:\n{script}\nstderr: {}\nstdout: {}",
                out.status,
                out.stderr.trim(),
                out.stdout.trim()
            );
        }
        Ok(out.stdout)
    }

    /// `ostree admin status` in the guest, parsed.
    pub fn ostree_status(&mut self) -> Result<Status> {
        let text = self.exec_ok("ostree admin status")?;
        let status = ostree_status::parse(&text);
        if status.deployments.is_empty() {
            bail!("`ostree admin status` in the guest listed no deployments:\n{text}");
        }
        Ok(status)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    //! The command protocol, with the real guest agent script running on the host against a temp
    //! share and a `sleep` process standing in for QEMU.
    use super::*;

    struct Rig {
        _tmp: tempfile::TempDir,
        vm: Vm,
        agent: Option<Child>,
    }

    impl Rig {
        fn new(with_agent: bool, config: VmConfig) -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().to_path_buf();
            let share = dir.join("share");
            fs::create_dir_all(share.join("cmd")).unwrap();
            let qemu = Command::new("sleep").arg("600").spawn().unwrap();
            let serial_log = dir.join("boot-01.serial.log");
            fs::write(&serial_log, "VMTEST-READY boot=1 uptime=1.0 net=up\n").unwrap();
            let vm = Vm {
                dir: dir.clone(),
                disk: dir.join("disk.img"),
                share,
                config,
                boots: vec![BootRecord {
                    number: 1,
                    entry: bls::parse_entry("e.conf", "version 1\nlinux l\ninitrd i\noptions o\n")
                        .unwrap(),
                    serial_log,
                    ready: None,
                    ready_after: None,
                    exit: None,
                    lifetime: None,
                }],
                running: Some(Running {
                    child: qemu,
                    started: Instant::now(),
                }),
                next_command: 1,
            };
            let mut rig = Rig {
                _tmp: tmp,
                vm,
                agent: None,
            };
            if with_agent {
                rig.start_agent();
            }
            rig
        }

        fn start_agent(&mut self) {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/usr/libexec/vmtest/agent");
            let agent = Command::new("bash")
                .arg(script)
                .env("VMTEST_CMD_DIR", self.vm.share.join("cmd"))
                .spawn()
                .unwrap();
            self.agent = Some(agent);
        }

        fn stop_agent(&mut self) {
            if let Some(mut a) = self.agent.take() {
                let _ = a.kill();
                let _ = a.wait();
            }
        }
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            self.stop_agent();
        }
    }

    #[test]
    fn exec_returns_status_and_both_streams() {
        let mut rig = Rig::new(true, VmConfig::default());
        let out = rig.vm.exec("echo out; echo err >&2; exit 3").unwrap();
        assert_eq!(
            out,
            ExecOutput {
                status: 3,
                stdout: "out\n".into(),
                stderr: "err\n".into()
            }
        );
        // set -eu: the first failing command ends the script.
        let out = rig.vm.exec("false\necho not reached").unwrap();
        assert_eq!((out.status, out.stdout.as_str()), (1, ""));
        let err = rig
            .vm
            .exec_ok("echo why >&2; exit 2")
            .unwrap_err()
            .to_string();
        assert!(err.contains("status 2") && err.contains("why"), "{err}");
        assert_eq!(rig.vm.exec_ok("printf '%s' \"$((6 * 7))\"").unwrap(), "42");
    }

    #[test]
    fn a_command_never_runs_twice_even_after_a_restart() {
        let mut rig = Rig::new(true, VmConfig::default());
        let counter = rig.vm.share.join("count");
        let script = format!("echo x >> {}", counter.display());
        rig.vm.exec_ok(&script).unwrap();
        // A new boot: the agent starts again on the same share.
        rig.stop_agent();
        rig.start_agent();
        rig.vm.exec_ok("true").unwrap();
        assert_eq!(fs::read_to_string(&counter).unwrap(), "x\n");
    }

    #[test]
    fn a_command_nobody_picks_up_is_reported() {
        let config = VmConfig {
            pickup_timeout: Duration::from_millis(500),
            ..VmConfig::default()
        };
        let mut rig = Rig::new(false, config);
        let err = rig.vm.exec("true").unwrap_err();
        assert!(
            matches!(err.downcast_ref::<VmError>(), Some(VmError::CommandNotPickedUp { id, .. }) if id == "0001"),
            "{err:#}"
        );
    }

    #[test]
    fn a_reboot_during_a_command_interrupts_it() {
        let mut rig = Rig::new(false, VmConfig::default());
        let id = rig.vm.send("sleep 100").unwrap();
        assert_eq!(id, "0001");
        // The guest reboots: the console says so and QEMU exits.
        let log = rig.vm.boots[0].serial_log.clone();
        fs::write(
            &log,
            "VMTEST-READY boot=1 uptime=1.0\n[ 9.0] reboot: Restarting system\n",
        )
        .unwrap();
        rig.vm.running.as_mut().unwrap().child.kill().unwrap();
        let err = rig.vm.exec("true").unwrap_err();
        assert!(
            matches!(
                err.downcast_ref::<VmError>(),
                Some(VmError::CommandInterrupted {
                    exit: Exit::Reboot,
                    ..
                })
            ),
            "{err:#}"
        );
        assert_eq!(rig.vm.boots()[0].exit, Some(Exit::Reboot));
        assert!(matches!(
            rig.vm.exec("true").unwrap_err().downcast_ref::<VmError>(),
            Some(VmError::NotRunning)
        ));
    }

    #[test]
    fn qemu_dying_without_a_shutdown_message_is_a_crash() {
        let mut rig = Rig::new(false, VmConfig::default());
        rig.vm.running.as_mut().unwrap().child.kill().unwrap();
        let err = rig.vm.wait_exit().unwrap_err();
        assert!(
            matches!(
                err.downcast_ref::<VmError>(),
                Some(VmError::Crashed { boot: 1, .. })
            ),
            "{err:#}"
        );
    }

    #[test]
    fn readiness_failures_and_timeouts_are_told_apart() {
        let mut rig = Rig::new(false, VmConfig::default());
        let record = rig.vm.wait_ready().unwrap();
        assert_eq!(record.ready.as_ref().map(|r| r.boot), Some(1));

        let mut rig = Rig::new(false, VmConfig::default());
        let log = rig.vm.boots[0].serial_log.clone();
        fs::write(&log, "VMTEST-FAILED boot=1 reason=9p-mount-failed\n").unwrap();
        let err = rig.vm.wait_ready().unwrap_err();
        assert!(
            matches!(err.downcast_ref::<VmError>(), Some(VmError::BootFailed { reason, .. }) if reason.contains("9p-mount-failed")),
            "{err:#}"
        );
        assert!(!rig.vm.is_running(), "a failed boot's QEMU is killed");

        let config = VmConfig {
            boot_timeout: Duration::from_millis(300),
            ..VmConfig::default()
        };
        let mut rig = Rig::new(false, config);
        let log = rig.vm.boots[0].serial_log.clone();
        // A marker from another boot does not count.
        fs::write(&log, "VMTEST-READY boot=7 uptime=1.0\n").unwrap();
        let err = rig.vm.wait_ready().unwrap_err();
        assert!(
            matches!(
                err.downcast_ref::<VmError>(),
                Some(VmError::BootTimeout { boot: 1, .. })
            ),
            "{err:#}"
        );
    }

    #[test]
    fn a_power_cut_is_recorded() {
        let mut rig = Rig::new(false, VmConfig::default());
        rig.vm.power_cut().unwrap();
        assert!(!rig.vm.is_running());
        assert_eq!(rig.vm.boots()[0].exit, Some(Exit::PowerCut));
        assert!(rig.vm.power_cut().is_err(), "nothing left to cut");
    }
}
