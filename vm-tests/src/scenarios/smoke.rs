//! Smoke scenarios for the machinery itself (no daemon): the guest pulls a new layer from the host
//! over the restricted network, stages it with `ostree admin deploy --stage`, and
//! - `stage-reboot`: reboots into it (finalized at shutdown), the old one becoming the rollback;
//! - `power-cut-staged`: loses power before rebooting, comes back on the old deployment, and can
//!   still stage and boot the update afterwards.

use anyhow::{Context, Result, ensure};

use super::{Run, Scenario, Suite};
use crate::bls::{self, EntrySelection};
use crate::http::StaticServer;
use crate::image::{DiskImage, ImageSpec};
use crate::ostree_status::Status;
use crate::overlay::Overlay;
use crate::qemu::GuestForward;
use crate::vm::{Exit, Vm, VmConfig};

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "stage-reboot",
            about: "pull + stage a new commit in the guest, reboot, boot it with the old one as rollback",
            run: stage_reboot,
            only_when_named: false,
        },
        Scenario {
            name: "power-cut-staged",
            about: "power cut while an update is staged: the old deployment boots, the update still applies",
            run: power_cut_staged,
            // The daemon's `power-cut` scenario cuts the power at the same point (staged, before the
            // finalize) with the real daemon; this machinery-level one runs when named.
            only_when_named: true,
        },
    ]
}

/// Where the v2 layer leaves its mark in the guest.
const RELEASE_FILE: &str = "/usr/share/vmtest/release";

/// A booted smoke VM plus the update it can pull.
struct Fixture {
    image: DiskImage,
    server: StaticServer,
    forward: GuestForward,
    /// Branch of the update in the served repo.
    branch: String,
    /// The update's commit.
    v2: String,
    /// What [`RELEASE_FILE`] holds in v2.
    release: String,
}

impl Fixture {
    fn new(suite: &mut Suite, run: &mut Run) -> Result<Self> {
        let image = suite.image(&ImageSpec::new("smoke"))?;
        let update = suite.update_repo()?;
        let branch = format!("vmtest/{}", run.id);
        let release = format!("v2 from run {}\n", run.id);
        let v2 = run.step("commit update layer v2", || {
            update.import(&image)?;
            update.commit_layer(
                &suite.ws,
                &image.commit,
                &Overlay::new().contents(RELEASE_FILE, release.clone(), 0o644),
                &branch,
            )
        })?;
        let server = StaticServer::start(&update.path)?;
        let forward = GuestForward::same_port(server.port());
        Ok(Self {
            image,
            server,
            forward,
            branch,
            v2,
            release,
        })
    }

    fn vm(&self, run: &Run) -> Result<Vm> {
        let config = VmConfig {
            forwards: vec![self.forward],
            ..VmConfig::default()
        };
        Vm::create(&self.image, &run.dir, config)
    }

    /// Pull the update over the forwarded port and stage it; returns the bytes served.
    fn pull_and_stage(&self, vm: &mut Vm) -> Result<u64> {
        let before = self.server.traffic();
        vm.exec_ok(&format!(
            "ostree remote add --if-not-exists --no-gpg-verify host http://{}/\n\
             ostree pull host {branch}\n\
             ostree admin deploy --stage host:{branch}",
            self.forward.guest_authority(),
            branch = self.branch
        ))?;
        Ok(self.server.traffic().body_bytes - before.body_bytes)
    }
}

fn booted(status: &Status) -> Result<&str> {
    Ok(&status
        .booted()
        .context("no deployment is marked booted")?
        .checksum)
}

/// The guest is on `expected`, with nothing staged.
fn assert_booted(status: &Status, expected: &str) -> Result<()> {
    let now = booted(status)?;
    ensure!(
        now == expected,
        "booted {now}, expected {expected}\n{status:#?}"
    );
    ensure!(
        status.staged().is_none(),
        "something is still staged: {status:#?}"
    );
    Ok(())
}

fn assert_staged(vm: &mut Vm, booted_commit: &str, staged_commit: &str) -> Result<()> {
    let status = vm.ostree_status()?;
    ensure!(
        booted(&status)? == booted_commit,
        "booted changed: {status:#?}"
    );
    let staged = status
        .staged()
        .context("nothing is staged after deploy --stage")?;
    ensure!(
        staged.checksum == staged_commit,
        "staged {} instead of {staged_commit}",
        staged.checksum
    );
    vm.exec_ok("test -e /run/ostree/staged-deployment")?;
    Ok(())
}

/// Host side, VM off: which deployment the default and rollback boot entries lead to.
fn entries_on_disk(vm: &Vm) -> Result<(String, Option<String>)> {
    let disk = vm.disk()?;
    let entries = disk.boot_entries()?;
    let default = bls::select(&entries, EntrySelection::Default)?;
    let rollback = bls::select(&entries, EntrySelection::Rollback).ok();
    let checksum = |d: String| d.split('.').next().unwrap_or_default().to_string();
    Ok((
        checksum(disk.deployment_of(default)?),
        rollback
            .map(|r| disk.deployment_of(r))
            .transpose()?
            .map(checksum),
    ))
}

fn stage_reboot(suite: &mut Suite, run: &mut Run) -> Result<()> {
    let fx = Fixture::new(suite, run)?;
    let v1 = fx.image.commit.clone();
    let mut vm = fx.vm(run)?;
    run.step("first boot to ready", || vm.boot().map(|_| ()))?;
    let status = vm.ostree_status()?;
    assert_booted(&status, &v1)?;
    ensure!(
        status.rollback().is_none(),
        "a fresh image has no rollback: {status:#?}"
    );

    // The restricted network: the host is reachable only through the forwarded address.
    let port = fx.forward.host_port;
    let blocked = vm.exec(&format!(
        "timeout 3 bash -c 'exec 3<>/dev/tcp/10.0.2.2/{port}'"
    ))?;
    ensure!(
        blocked.status != 0,
        "the guest reached the host via 10.0.2.2 (restrict=on not in force)"
    );

    let served = run.step("pull + stage v2", || fx.pull_and_stage(&mut vm))?;
    assert_staged(&mut vm, &v1, &fx.v2)?;

    run.step("reboot into v2 (finalize + boot to ready)", || {
        vm.reboot().map(|_| ())
    })?;
    let status = vm.ostree_status()?;
    assert_booted(&status, &fx.v2)?;
    let rollback = status
        .rollback()
        .context("no rollback deployment after the update")?;
    ensure!(
        rollback.checksum == v1,
        "rollback is {}, expected {v1}",
        rollback.checksum
    );
    let release = vm.exec_ok(&format!("cat {RELEASE_FILE}"))?;
    ensure!(release == fx.release, "v2's file holds {release:?}");
    let cmdline = vm.exec_ok("cat /proc/cmdline")?;
    ensure!(
        cmdline.contains("ostree=/ostree/boot."),
        "booted without ostree=: {cmdline}"
    );

    run.step("power off", || vm.poweroff())?;
    let (default, rollback) = entries_on_disk(&vm)?;
    ensure!(
        default == fx.v2,
        "the default boot entry leads to {default}, expected v2 {}",
        fx.v2
    );
    ensure!(
        rollback.as_deref() == Some(v1.as_str()),
        "the second entry leads to {rollback:?}, expected v1"
    );
    ensure!(
        vm.boots().len() == 2,
        "expected 2 boots, saw {}",
        vm.boots().len()
    );
    ensure!(vm.boots()[0].exit == Some(Exit::Reboot));
    run.record_boots(vm.boots());
    run.notes.push(format!(
        "the v2 pull transferred {served} bytes over guestfwd"
    ));
    Ok(())
}

fn power_cut_staged(suite: &mut Suite, run: &mut Run) -> Result<()> {
    let fx = Fixture::new(suite, run)?;
    let v1 = fx.image.commit.clone();
    let mut vm = fx.vm(run)?;
    run.step("first boot to ready", || vm.boot().map(|_| ()))?;
    run.step("pull + stage v2", || fx.pull_and_stage(&mut vm))?;
    assert_staged(&mut vm, &v1, &fx.v2)?;

    vm.power_cut()?;
    let (default, rollback) = entries_on_disk(&vm)?;
    ensure!(
        default == v1,
        "after the power cut the default entry leads to {default}, not v1"
    );
    ensure!(
        rollback.is_none(),
        "an unfinalized update must not add a boot entry"
    );

    run.step("boot after power cut", || vm.boot().map(|_| ()))?;
    let status = vm.ostree_status()?;
    assert_booted(&status, &v1)?;
    ensure!(
        status.deployments.iter().all(|d| d.checksum != fx.v2),
        "the never-finalized v2 still shows up: {status:#?}"
    );
    let release = vm.exec(&format!("test -e {RELEASE_FILE}"))?;
    ensure!(
        release.status != 0,
        "v2's file is present on the old deployment"
    );

    // The machine is not wedged: the update stages and boots normally afterwards.
    run.step("stage v2 again", || fx.pull_and_stage(&mut vm))?;
    assert_staged(&mut vm, &v1, &fx.v2)?;
    run.step("reboot into v2", || vm.reboot().map(|_| ()))?;
    let status = vm.ostree_status()?;
    assert_booted(&status, &fx.v2)?;
    ensure!(
        status.rollback().map(|d| d.checksum.as_str()) == Some(v1.as_str()),
        "v1 is not the rollback: {status:#?}"
    );
    run.step("power off", || vm.poweroff())?;
    let exits: Vec<_> = vm.boots().iter().map(|b| b.exit).collect();
    ensure!(
        exits
            == [
                Some(Exit::PowerCut),
                Some(Exit::Reboot),
                Some(Exit::PowerOff)
            ],
        "unexpected boot history {exits:?}"
    );
    run.record_boots(vm.boots());
    Ok(())
}
