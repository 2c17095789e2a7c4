//! A test service for the part of `org.freedesktop.systemd1.Manager` the daemon uses, on a private bus.
//! Jobs end through `JobRemoved` as systemd's do; every call is recorded; chosen units fail or hang.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use zbus::object_server::SignalEmitter;
use zbus::{ObjectPath, OwnedObjectPath, OwnedVariant, Variant};

use crate::dbus::PrivateBus;

#[derive(Debug, Default)]
struct State {
    calls: Vec<String>,
    failing: BTreeSet<String>,
    hanging: BTreeSet<String>,
    missing: BTreeSet<String>,
}

/// The errors systemd's manager answers with (names from systemd's `src/libsystemd/sd-bus/bus-common-errors.h`).
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.freedesktop.systemd1")]
enum ManagerError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// `RestartUnit`/`ReloadUnit` of a unit without a unit file: "Unit X not found."
    /// (`bus_unit_validate_load_state`, `src/core/dbus-unit.c`).
    NoSuchUnit(String),
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

struct Manager {
    state: Shared,
    next_job: u32,
}

impl Manager {
    fn job(&mut self, emitter: SignalEmitter<'static>, unit: String) -> OwnedObjectPath {
        self.next_job += 1;
        let id = self.next_job;
        let path = OwnedObjectPath::try_from(format!("/org/freedesktop/systemd1/job/{id}"))
            .expect("a valid object path");
        let job = path.clone();
        let (fail, hang) = {
            let s = lock(&self.state);
            (s.failing.contains(&unit), s.hanging.contains(&unit))
        };
        if !hang {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let result = if fail { "failed" } else { "done" };
                let _ = Manager::job_removed(&emitter, id, job.as_ref(), &unit, result).await;
            });
        }
        path
    }

    fn record(&self, call: String) {
        lock(&self.state).calls.push(call);
    }

    fn check_exists(&self, unit: &str) -> Result<(), ManagerError> {
        if lock(&self.state).missing.contains(unit) {
            return Err(ManagerError::NoSuchUnit(format!("Unit {unit} not found.")));
        }
        Ok(())
    }
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Manager {
    async fn subscribe(&self) {}

    async fn reload(&self) {
        self.record("Reload".into());
    }

    async fn reload_unit(
        &mut self,
        name: String,
        mode: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<OwnedObjectPath, ManagerError> {
        self.record(format!("ReloadUnit {name} {mode}"));
        self.check_exists(&name)?;
        Ok(self.job(emitter.into_owned(), name))
    }

    async fn restart_unit(
        &mut self,
        name: String,
        mode: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<OwnedObjectPath, ManagerError> {
        self.record(format!("RestartUnit {name} {mode}"));
        self.check_exists(&name)?;
        Ok(self.job(emitter.into_owned(), name))
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
        self.record(format!(
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

fn render(v: &Variant<'_>) -> String {
    match v {
        Variant::Str(s) => s.to_string(),
        other => format!("{other}"),
    }
}

/// The service, owning `org.freedesktop.systemd1` on a private bus until dropped.
#[derive(Debug)]
pub struct FakeSystemd {
    _conn: zbus::Connection,
    state: Shared,
}

impl FakeSystemd {
    pub async fn start(bus: &PrivateBus) -> Result<Self> {
        Self::start_at(bus.address()).await
    }

    pub async fn start_at(address: &str) -> Result<Self> {
        let state = Shared::default();
        let conn = zbus::connection::Builder::address(address)
            .name("org.freedesktop.systemd1")
            .serve_at(
                "/org/freedesktop/systemd1",
                Manager {
                    state: state.clone(),
                    next_job: 0,
                },
            )
            .build()
            .await
            .context("Serving org.freedesktop.systemd1 on the private bus")?;
        Ok(Self { _conn: conn, state })
    }

    /// Every call so far, e.g. `ReloadUnit crio.service replace`.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.state).calls.clone()
    }

    /// The reboot requests (transient `machine-config-daemon-reboot.service` units).
    pub fn reboots(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.starts_with("StartTransientUnit machine-config-daemon-reboot.service"))
            .collect()
    }

    /// Reloads and restarts, without the reboot and daemon-reload.
    pub fn unit_jobs(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.starts_with("ReloadUnit") || c.starts_with("RestartUnit"))
            .collect()
    }

    /// Jobs on `unit` end with result `failed`.
    pub fn fail_unit(&self, unit: &str) {
        lock(&self.state).failing.insert(unit.to_string());
    }

    /// Jobs on `unit` succeed again.
    pub fn heal_unit(&self, unit: &str) {
        lock(&self.state).failing.remove(unit);
    }

    /// `unit` has no unit file on this host: reloads and restarts of it fail with `NoSuchUnit`.
    pub fn remove_unit(&self, unit: &str) {
        lock(&self.state).missing.insert(unit.to_string());
    }

    /// Jobs on `unit` never end.
    pub fn hang_unit(&self, unit: &str) {
        lock(&self.state).hanging.insert(unit.to_string());
    }

    pub fn clear_calls(&self) {
        lock(&self.state).calls.clear();
    }
}
