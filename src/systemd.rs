//! systemd over D-Bus (`zbus_systemd`), not `systemctl` subprocesses: daemon-reload, reload/restart a unit
//! and wait for the job's result, and the reboot — a transient unit ordered after
//! `ostree-finalize-staged.service`, as the MCD's `systemd-run` does (`mco-protocol.md` §2.3).

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use zbus_systemd::systemd1::ManagerProxy;
use zbus_systemd::zbus;
use zbus_systemd::zbus::{OwnedVariant as OwnedValue, Variant as Value};

/// The service-manager side effects the daemon needs.
pub trait ServiceManager: Send + Sync {
    /// `systemctl daemon-reload`.
    fn daemon_reload(&self) -> impl Future<Output = Result<()>> + Send;
    /// `systemctl reload UNIT`, waiting for the job to finish.
    fn reload_unit(&self, unit: &str) -> impl Future<Output = Result<()>> + Send;
    /// `systemctl restart UNIT`, waiting for the job to finish.
    fn restart_unit(&self, unit: &str) -> impl Future<Output = Result<()>> + Send;
    /// Queue the reboot. `after_finalize` orders it after `ostree-finalize-staged.service` (ostree hosts).
    fn reboot(&self, reason: &str, after_finalize: bool)
    -> impl Future<Output = Result<()>> + Send;
}

/// The transient unit that carries out the reboot (the MCD's name).
pub const REBOOT_UNIT: &str = "machine-config-daemon-reboot.service";
/// Finalizes a staged ostree deployment at shutdown.
pub const FINALIZE_UNIT: &str = "ostree-finalize-staged.service";

/// systemd's manager on a bus.
#[derive(Debug, Clone)]
pub struct Systemd {
    conn: zbus::Connection,
    job_timeout: Duration,
}

impl Systemd {
    /// The system bus.
    pub async fn system() -> Result<Self> {
        let conn = zbus::Connection::system()
            .await
            .context("Connecting to the system D-Bus")?;
        Ok(Self::with_connection(conn))
    }

    /// A bus at `address` (tests use a private dbus-daemon).
    pub async fn at_address(address: &str) -> Result<Self> {
        let conn = zbus::connection::Builder::address(address)
            .build()
            .await
            .with_context(|| format!("Connecting to D-Bus at {address}"))?;
        Ok(Self::with_connection(conn))
    }

    pub fn with_connection(conn: zbus::Connection) -> Self {
        Systemd {
            conn,
            job_timeout: Duration::from_secs(300),
        }
    }

    /// How long to wait for a reload/restart job (default 5 min: a slow service stop is not a hang).
    pub fn job_timeout(mut self, timeout: Duration) -> Self {
        self.job_timeout = timeout;
        self
    }

    async fn manager(&self) -> Result<ManagerProxy<'_>> {
        ManagerProxy::new(&self.conn)
            .await
            .context("Creating the systemd manager proxy")
    }

    /// Run a job-returning call and wait for its `JobRemoved` result.
    async fn run_job(&self, verb: &str, unit: &str) -> Result<()> {
        let manager = self.manager().await?;
        // JobRemoved is only emitted to subscribed clients; subscribe before starting the job.
        manager
            .subscribe()
            .await
            .context("Subscribing to systemd signals")?;
        let mut removed = manager
            .receive_job_removed()
            .await
            .context("Watching systemd jobs")?;
        let job = match verb {
            "reload" => {
                manager
                    .reload_unit(unit.to_string(), "replace".into())
                    .await
            }
            "restart" => {
                manager
                    .restart_unit(unit.to_string(), "replace".into())
                    .await
            }
            other => bail!("unknown job verb {other}"),
        }
        .with_context(|| format!("Asking systemd to {verb} {unit}"))?;
        let wait = async {
            while let Some(signal) = removed.next().await {
                let args = signal.args().context("Decoding a JobRemoved signal")?;
                if args.job.as_str() == job.as_str() {
                    return Ok::<String, anyhow::Error>(args.result.clone());
                }
            }
            bail!("the D-Bus connection closed while waiting for the {verb} of {unit}")
        };
        let result = tokio::time::timeout(self.job_timeout, wait)
            .await
            .with_context(|| {
                format!(
                    "{verb} of {unit} did not finish within {:?}",
                    self.job_timeout
                )
            })??;
        if result != "done" {
            bail!(
                "{verb} of {unit} failed: systemd job result \"{result}\" (see journalctl -u {unit})"
            );
        }
        Ok(())
    }
}

/// systemd's D-Bus error for a unit that does not exist: `RestartUnit` and `ReloadUnit` of a unit with no
/// unit file fail with it ("Unit X not found.", `bus_unit_validate_load_state` in systemd's
/// `src/core/dbus-unit.c`).
pub const NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";

/// The error says the unit does not exist on this host (rather than that its job failed).
pub fn is_no_such_unit(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|cause| match cause.downcast_ref::<zbus::Error>() {
            Some(zbus::Error::MethodError(name, _, _)) => name.as_str() == NO_SUCH_UNIT,
            _ => false,
        })
}

fn owned<'a>(v: impl Into<Value<'a>>) -> Result<OwnedValue> {
    v.into().try_into().context("Encoding a D-Bus value")
}

impl ServiceManager for Systemd {
    async fn daemon_reload(&self) -> Result<()> {
        self.manager()
            .await?
            .reload()
            .await
            .context("systemd daemon-reload")
    }

    async fn reload_unit(&self, unit: &str) -> Result<()> {
        self.run_job("reload", unit).await
    }

    async fn restart_unit(&self, unit: &str) -> Result<()> {
        self.run_job("restart", unit).await
    }

    async fn reboot(&self, reason: &str, after_finalize: bool) -> Result<()> {
        let mut props: Vec<(String, OwnedValue)> = vec![
            (
                "Description".into(),
                owned(format!("machine-config-daemon: {reason}"))?,
            ),
            // ExecStart a(sasb): path, argv, ignore-failure.
            (
                "ExecStart".into(),
                owned(vec![(
                    "/bin/systemctl".to_string(),
                    vec!["systemctl".to_string(), "reboot".to_string()],
                    false,
                )])?,
            ),
        ];
        if after_finalize {
            props.push(("Requires".into(), owned(vec![FINALIZE_UNIT.to_string()])?));
            props.push(("After".into(), owned(vec![FINALIZE_UNIT.to_string()])?));
        }
        self.manager()
            .await?
            .start_transient_unit(REBOOT_UNIT.into(), "fail".into(), props, vec![])
            .await
            .context("Queueing the reboot (transient unit machine-config-daemon-reboot.service)")?;
        Ok(())
    }
}
