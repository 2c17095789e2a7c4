//! The systemd client against a real (private) dbus-daemon, with a test service that implements the part
//! of `org.freedesktop.systemd1.Manager` the daemon uses: jobs finish through `JobRemoved`, as systemd's do.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use machine_config_daemon::systemd::{FINALIZE_UNIT, REBOOT_UNIT, ServiceManager, Systemd};
use testbed::dbus::PrivateBus;
use zbus_systemd::zbus;
use zbus_systemd::zbus::object_server::SignalEmitter;
use zbus_systemd::zbus::{ObjectPath, OwnedObjectPath, OwnedVariant, Variant};

#[derive(Debug, Default, Clone)]
struct Calls(Arc<Mutex<Vec<String>>>);

impl Calls {
    fn push(&self, s: String) {
        self.0.lock().unwrap().push(s);
    }
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

struct FakeManager {
    calls: Calls,
    next_job: u32,
}

impl FakeManager {
    /// Start a job and report its end shortly after, as systemd does. `failed.service` fails.
    fn job(&mut self, emitter: SignalEmitter<'static>, unit: String) -> OwnedObjectPath {
        self.next_job += 1;
        let id = self.next_job;
        let path =
            OwnedObjectPath::try_from(format!("/org/freedesktop/systemd1/job/{id}")).unwrap();
        let job = path.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let result = if unit == "failed.service" {
                "failed"
            } else {
                "done"
            };
            if unit != "hangs.service" {
                let _ = FakeManager::job_removed(&emitter, id, job.as_ref(), &unit, result).await;
            }
        });
        path
    }
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl FakeManager {
    async fn subscribe(&self) {
        self.calls.push("Subscribe".into());
    }

    async fn reload(&self) {
        self.calls.push("Reload".into());
    }

    async fn reload_unit(
        &mut self,
        name: String,
        mode: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> OwnedObjectPath {
        self.calls.push(format!("ReloadUnit {name} {mode}"));
        self.job(emitter.into_owned(), name)
    }

    async fn restart_unit(
        &mut self,
        name: String,
        mode: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> OwnedObjectPath {
        self.calls.push(format!("RestartUnit {name} {mode}"));
        self.job(emitter.into_owned(), name)
    }

    async fn start_transient_unit(
        &mut self,
        name: String,
        mode: String,
        properties: Vec<(String, OwnedVariant)>,
        _aux: Vec<(String, Vec<(String, OwnedVariant)>)>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> OwnedObjectPath {
        let mut props: Vec<String> = properties
            .iter()
            .map(|(k, v)| format!("{k}={}", render(v)))
            .collect();
        props.sort();
        self.calls.push(format!(
            "StartTransientUnit {name} {mode} {}",
            props.join(" ")
        ));
        self.job(emitter.into_owned(), name)
    }

    #[zbus(signal)]
    async fn job_removed(
        emitter: &SignalEmitter<'_>,
        id: u32,
        job: ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

/// A compact rendering of the property values the daemon sends.
fn render(v: &Variant<'_>) -> String {
    match v {
        Variant::Str(s) => s.to_string(),
        other => format!("{other}"),
    }
}

async fn setup() -> (PrivateBus, Calls, zbus::Connection, Systemd) {
    let bus = PrivateBus::start().unwrap();
    let calls = Calls::default();
    let service = zbus::connection::Builder::address(bus.address())
        .name("org.freedesktop.systemd1")
        .serve_at(
            "/org/freedesktop/systemd1",
            FakeManager {
                calls: calls.clone(),
                next_job: 0,
            },
        )
        .build()
        .await
        .unwrap();
    let client = Systemd::at_address(bus.address())
        .await
        .unwrap()
        .job_timeout(Duration::from_secs(2));
    (bus, calls, service, client)
}

#[tokio::test]
async fn reload_and_restart_wait_for_the_job() {
    let (_bus, calls, _svc, systemd) = setup().await;
    systemd.daemon_reload().await.unwrap();
    systemd.reload_unit("crio.service").await.unwrap();
    systemd.restart_unit("kubelet.service").await.unwrap();
    let c = calls.all();
    assert!(c.contains(&"Reload".to_string()), "{c:?}");
    assert!(
        c.contains(&"ReloadUnit crio.service replace".to_string()),
        "{c:?}"
    );
    assert!(
        c.contains(&"RestartUnit kubelet.service replace".to_string()),
        "{c:?}"
    );
    // subscribed before each job so JobRemoved is delivered
    assert!(
        c.iter().position(|x| x == "Subscribe")
            < c.iter().position(|x| x.starts_with("ReloadUnit"))
    );
}

#[tokio::test]
async fn failed_job_is_a_clear_error() {
    let (_bus, _calls, _svc, systemd) = setup().await;
    let err = systemd
        .restart_unit("failed.service")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "restart of failed.service failed: systemd job result \"failed\" (see journalctl -u failed.service)"
    );
}

#[tokio::test]
async fn hanging_job_times_out_naming_the_unit() {
    let (_bus, _calls, _svc, systemd) = setup().await;
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
    let (_bus, calls, _svc, systemd) = setup().await;
    systemd
        .reboot("update to rendered-worker-2", true)
        .await
        .unwrap();
    let c = calls.all();
    let call = c
        .iter()
        .find(|x| x.starts_with("StartTransientUnit"))
        .expect("a transient unit");
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
    let c = calls.all();
    let call = c
        .iter()
        .rev()
        .find(|x| x.starts_with("StartTransientUnit"))
        .unwrap();
    assert!(!call.contains("After="), "{call}");
}

#[tokio::test]
async fn no_systemd_on_the_bus_is_an_error() {
    let bus = PrivateBus::start().unwrap();
    let systemd = Systemd::at_address(bus.address()).await.unwrap();
    let err = format!("{:#}", systemd.daemon_reload().await.unwrap_err());
    assert!(err.contains("daemon-reload"), "{err}");
}
