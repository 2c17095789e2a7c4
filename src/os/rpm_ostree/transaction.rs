//! Running one rpm-ostreed transaction: call the method, connect to the transaction's private
//! (peer-to-peer) server, `Start`, follow the progress signals until `Finished`, then close the
//! connection — rpm-ostreed keeps a transaction open until every peer has disconnected
//! (rpmostreed-transaction.cxx transaction_maybe_emit_closed), and while it is open any *other* call
//! is refused as busy.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use zbus::Connection;
use zbus::proxy::CacheProperties;

use super::dbus::{self, BUSY_ERROR, SysrootProxy, TransactionProxy};

/// How long to keep retrying while rpm-ostreed is busy with another transaction.
#[derive(Debug, Clone, Copy)]
pub struct BusyRetry {
    pub interval: Duration,
    pub max_wait: Duration,
}

impl Default for BusyRetry {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            max_wait: Duration::from_secs(600),
        }
    }
}

/// How a transaction ended for us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ran {
    /// We started it and it succeeded; the `Message` lines it sent.
    Ours(Vec<String>),
    /// An identical call by another client was open and we joined it (`Start` returned false). Its
    /// result, stale or not, is not ours: the caller reads the deployments again and decides.
    Joined,
}

/// Call `call` (a method that starts a transaction) and follow the transaction to its end. Busy
/// answers are retried for `busy.max_wait`; a failed transaction is an error carrying rpm-ostreed's
/// message.
pub async fn run<F, Fut>(conn: &Connection, busy: BusyRetry, title: &str, call: F) -> Result<Ran>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = zbus::Result<String>>,
{
    let deadline = tokio::time::Instant::now() + busy.max_wait;
    let address = loop {
        match call().await {
            Ok(address) => break address,
            Err(e)
                if dbus::error_name(&e).as_deref() == Some(BUSY_ERROR)
                    && tokio::time::Instant::now() < deadline =>
            {
                tracing::info!(title, error = %dbus::error_text(&e), "rpm-ostreed is busy; retrying");
                tokio::time::sleep(busy.interval).await;
            }
            Err(e) => bail!("rpm-ostree {title} could not start: {}", dbus::describe(&e)),
        }
    };
    let (started, outcome) = follow(title, &address).await?;
    if !started {
        tracing::info!(
            title,
            "joined an identical transaction another client had open; waiting for it to close"
        );
        wait_idle(conn, busy, deadline).await;
        return Ok(Ran::Joined);
    }
    match outcome {
        Ok(messages) => Ok(Ran::Ours(messages)),
        Err(message) => bail!("rpm-ostree {title} failed: {message}"),
    }
}

/// Connect, `Start`, wait for `Finished`, close. Returns whether `Start` started it, and its result.
async fn follow(
    title: &str,
    address: &str,
) -> Result<(bool, std::result::Result<Vec<String>, String>)> {
    let conn = zbus::connection::Builder::address(address)
        .p2p()
        .build()
        .await
        .with_context(|| {
            format!("Connecting to the rpm-ostree {title} transaction at {address}")
        })?;
    let result = async {
        let txn = TransactionProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        let mut finished = txn.receive_finished().await?;
        let mut messages = txn.receive_message().await?;
        let mut percent = txn.receive_percent_progress().await?;
        let mut task_begin = txn.receive_task_begin().await?;
        let mut task_end = txn.receive_task_end().await?;
        let started = txn.start().await.map_err(|e| {
            anyhow!(
                "Starting the rpm-ostree {title} transaction: {}",
                dbus::describe(&e)
            )
        })?;
        let mut lines = Vec::new();
        loop {
            tokio::select! {
                Some(sig) = finished.next() => {
                    let args = sig.args()?;
                    let outcome = if *args.success() {
                        Ok(std::mem::take(&mut lines))
                    } else {
                        Err(args.error_message().to_string())
                    };
                    return Ok::<_, anyhow::Error>((started, outcome));
                }
                Some(sig) = messages.next() => {
                    if let Ok(a) = sig.args() {
                        tracing::info!(title, message = %a.text(), "rpm-ostree");
                        lines.push(a.text().to_string());
                    }
                }
                Some(sig) = percent.next() => {
                    if let Ok(a) = sig.args() { tracing::info!(title, task = %a.text(), percent = *a.percentage(), "rpm-ostree progress"); }
                }
                Some(sig) = task_begin.next() => {
                    if let Ok(a) = sig.args() { tracing::debug!(title, task = %a.text(), "rpm-ostree task started"); }
                }
                Some(sig) = task_end.next() => {
                    if let Ok(a) = sig.args() { tracing::debug!(title, task = %a.text(), "rpm-ostree task done"); }
                }
                else => bail!("the transaction connection closed before Finished"),
            }
        }
    }
    .await;
    // Whatever failed, a broken connection means the daemon is gone.
    let result = result.map_err(|e| {
        if conn.is_closed() {
            anyhow!(
                "rpm-ostreed went away during the {title} transaction (it crashed or was restarted); nothing was finished: {e:#}"
            )
        } else {
            e
        }
    });
    // Leave at once: the transaction stays open (and every other call busy) while we are connected.
    if let Err(e) = conn.close().await {
        tracing::debug!(title, error = %e, "closing the transaction connection");
    }
    result
}

/// After joining: wait until rpm-ostreed has no transaction open (the other client left), within the
/// busy deadline. A new call then starts a transaction of ours.
async fn wait_idle(conn: &Connection, busy: BusyRetry, deadline: tokio::time::Instant) {
    let Ok(sysroot) = SysrootProxy::builder(conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await
    else {
        return;
    };
    let step = busy.interval.min(Duration::from_millis(200));
    while tokio::time::Instant::now() < deadline {
        match sysroot.active_transaction_path().await {
            Ok(p) if p.is_empty() => return,
            Ok(_) => tokio::time::sleep(step).await,
            Err(_) => return,
        }
    }
}
