//! The systemd client against a real (private) dbus-daemon, with testbed's test service for the part of
//! `org.freedesktop.systemd1.Manager` the daemon uses: jobs finish through `JobRemoved`, as systemd's do.

use std::time::Duration;

use machine_config_daemon::systemd::{FINALIZE_UNIT, REBOOT_UNIT, ServiceManager, Systemd};
use testbed::dbus::PrivateBus;
use testbed::systemd::FakeSystemd;

async fn setup() -> (PrivateBus, FakeSystemd, Systemd) {
    let bus = PrivateBus::start().unwrap();
    let fake = FakeSystemd::start(&bus).await.unwrap();
    let client = Systemd::at_address(bus.address())
        .await
        .unwrap()
        .job_timeout(Duration::from_secs(2));
    (bus, fake, client)
}

#[tokio::test]
async fn reload_and_restart_wait_for_the_job() {
    let (_bus, fake, systemd) = setup().await;
    systemd.daemon_reload().await.unwrap();
    systemd.reload_unit("crio.service").await.unwrap();
    systemd.restart_unit("kubelet.service").await.unwrap();
    assert_eq!(
        fake.calls(),
        vec![
            "Reload",
            "ReloadUnit crio.service replace",
            "RestartUnit kubelet.service replace"
        ]
    );
}

#[tokio::test]
async fn failed_job_is_a_clear_error() {
    let (_bus, fake, systemd) = setup().await;
    fake.fail_unit("crio.service");
    let err = systemd
        .restart_unit("crio.service")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "restart of crio.service failed: systemd job result \"failed\" (see journalctl -u crio.service)"
    );
}

#[tokio::test]
async fn hanging_job_times_out_naming_the_unit() {
    let (_bus, fake, systemd) = setup().await;
    fake.hang_unit("hangs.service");
    let err = format!(
        "{:#}",
        systemd.reload_unit("hangs.service").await.unwrap_err()
    );
    assert!(
        err.contains("reload of hangs.service did not finish within 2s"),
        "{err}"
    );
}

#[tokio::test]
async fn reboot_is_a_transient_unit_after_finalize() {
    let (_bus, fake, systemd) = setup().await;
    systemd
        .reboot("update to rendered-worker-2", true)
        .await
        .unwrap();
    let reboots = fake.reboots();
    assert_eq!(reboots.len(), 1);
    let call = &reboots[0];
    assert!(
        call.starts_with(&format!("StartTransientUnit {REBOOT_UNIT} fail ")),
        "{call}"
    );
    assert!(
        call.contains(&format!("After=[\"{FINALIZE_UNIT}\"]")),
        "{call}"
    );
    assert!(
        call.contains(&format!("Requires=[\"{FINALIZE_UNIT}\"]")),
        "{call}"
    );
    assert!(
        call.contains("Description=machine-config-daemon: update to rendered-worker-2"),
        "{call}"
    );
    assert!(
        call.contains("ExecStart=") && call.contains("/bin/systemctl") && call.contains("reboot"),
        "{call}"
    );

    // without a staged ostree deployment there is nothing to order after
    systemd.reboot("plain", false).await.unwrap();
    assert!(
        !fake.reboots()[1].contains("After="),
        "{}",
        fake.reboots()[1]
    );
}

#[tokio::test]
async fn no_systemd_on_the_bus_is_an_error() {
    let bus = PrivateBus::start().unwrap();
    let systemd = Systemd::at_address(bus.address()).await.unwrap();
    let err = format!("{:#}", systemd.daemon_reload().await.unwrap_err());
    assert!(err.contains("daemon-reload"), "{err}");
}
