//! rpm-ostreed's transactions: one at a time, each on its own peer-to-peer D-Bus server, open until it
//! has finished *and* every peer has disconnected.
//!
//! rpm-ostree: src/daemon/rpmostreed-sysroot.cxx (rpmostreed_sysroot_prep_for_txn,
//! rpmostreed_sysroot_set_txn, on_txn_executed_changed / on_force_close) and
//! src/daemon/rpmostreed-transaction.cxx (transaction_initable_init, transaction_new_connection_cb,
//! transaction_connection_closed_cb, transaction_maybe_emit_closed, transaction_handle_start,
//! transaction_execute_done_cb, transaction_owner_vanished_cb, rpmostreed_transaction_is_compatible).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, interface};

use super::deploy::Op;
use super::errors::DaemonError;
use super::{Inner, TxnRecord};

pub(crate) const IFACE: &str = "org.projectatomic.rpmostree1.Transaction";

/// One open transaction.
pub(crate) struct Txn {
    pub method: String,
    /// What `rpmostreed_transaction_is_compatible` compares besides the method name: the call's
    /// parameters (see `Inner::compatible_key`).
    pub params: String,
    pub title: Mutex<String>,
    pub address: String,
    pub client: String,
    pub osname: String,
    /// `watch_id == 0` in rpm-ostree: Start was called.
    pub started: AtomicBool,
    pub cancelled: AtomicBool,
    pub finished: Mutex<Option<(bool, String)>>,
    pub peers: Mutex<Vec<(u64, Connection)>>,
    pub op: Mutex<Option<Op>>,
    pub record: usize,
    accept_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for Txn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Txn")
            .field("method", &self.method)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

static PEER_IDS: AtomicU64 = AtomicU64::new(1);

impl Inner {
    /// Start a transaction for `method`, or join the open one when it is the same call, or refuse.
    /// Returns the transaction's address (rpm-ostree: rpmostreed-os.cxx os_merge_or_start_deployment_txn
    /// and the other os_handle_* methods all go through rpmostreed_sysroot_prep_for_txn).
    pub(crate) async fn begin(
        self: &Arc<Self>,
        method: &str,
        params: String,
        sender: Option<String>,
        title: String,
        op: Op,
    ) -> Result<String, DaemonError> {
        let osname = self.osname.clone();
        let (txn, client) = {
            let mut active = self.active.lock().unwrap();
            let mut state = self.state.lock().unwrap();
            state.calls.push(format!("{method} {params}"));
            // rpmostreed_sysroot_prep_for_txn.
            if state.rebooting {
                return Err(DaemonError::failed(
                    "Reboot initiated, cannot start new transaction",
                ));
            }
            if let Some(t) = active.as_ref() {
                if t.method == method && t.params == params {
                    // "Client joining existing transaction".
                    state.transactions[t.record].joined += 1;
                    return Ok(t.address.clone());
                }
                return Err(DaemonError::busy(format!(
                    "Transaction in progress: {}\n You can cancel the current transaction with `rpm-ostree cancel`",
                    t.title.lock().unwrap()
                )));
            }
            // transaction_initable_init: ostree_sysroot_try_lock.
            if state.sysroot_lock_holder.is_some() {
                return Err(DaemonError::busy("System transaction in progress"));
            }
            // "there can be at most one transaction": one well-known socket path, unlinked first.
            let path = self.dir.join("rpm-ostree-transaction.sock");
            let _ = std::fs::remove_file(&path);
            let listener = tokio::net::UnixListener::bind(&path).map_err(|e| {
                DaemonError::failed(format!("Failed to bind {}: {e}", path.display()))
            })?;
            let client = sender.clone().unwrap_or_default();
            state.transactions.push(TxnRecord {
                method: method.to_string(),
                title: title.clone(),
                client: client.clone(),
                joined: 0,
                result: None,
            });
            let txn = Arc::new(Txn {
                method: method.to_string(),
                params,
                title: Mutex::new(title),
                address: format!("unix:path={}", path.display()),
                client: client.clone(),
                osname,
                started: AtomicBool::new(false),
                cancelled: AtomicBool::new(false),
                finished: Mutex::new(None),
                peers: Mutex::new(Vec::new()),
                op: Mutex::new(Some(op)),
                record: state.transactions.len() - 1,
                accept_task: Mutex::new(None),
                closed: AtomicBool::new(false),
            });
            let task = tokio::spawn(accept_peers(self.clone(), txn.clone(), listener));
            *txn.accept_task.lock().unwrap() = Some(task);
            *active = Some(txn.clone());
            (txn, client)
        };
        if !client.is_empty() {
            tokio::spawn(watch_owner(self.clone(), txn.clone(), client));
        }
        Ok(txn.address.clone())
    }

    /// transaction_maybe_emit_closed: gone once finished and no peer is connected.
    pub(crate) fn maybe_close(&self, txn: &Arc<Txn>) {
        if txn.finished.lock().unwrap().is_none() || !txn.peers.lock().unwrap().is_empty() {
            return;
        }
        self.close(txn);
    }

    /// rpmostreed_sysroot_finish_txn: the daemon has no transaction any more.
    pub(crate) fn close(&self, txn: &Arc<Txn>) {
        if txn.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(task) = txn.accept_task.lock().unwrap().take() {
            task.abort();
        }
        let mut active = self.active.lock().unwrap();
        if active.as_ref().is_some_and(|a| Arc::ptr_eq(a, txn)) {
            *active = None;
        }
    }

    /// rpmostreed_transaction_force_close: close every peer connection (also what a crash does).
    pub(crate) async fn force_close(&self, txn: &Arc<Txn>) {
        let peers: Vec<Connection> = txn
            .peers
            .lock()
            .unwrap()
            .drain(..)
            .map(|(_, c)| c)
            .collect();
        for c in peers {
            let _ = c.close().await;
        }
        self.close(txn);
    }

    fn delay_for(&self, method: &str) -> Duration {
        let state = self.state.lock().unwrap();
        state
            .delays
            .get(method)
            .copied()
            .unwrap_or(state.default_delay)
    }

    /// transaction_execute_thread + transaction_execute_done_cb.
    async fn execute(self: Arc<Self>, txn: Arc<Txn>) {
        let Some(op) = txn.op.lock().unwrap().take() else {
            return;
        };
        let generation = self.generation.load(Ordering::SeqCst);
        let title = txn.title.lock().unwrap().clone();
        emit_all(&txn, "TaskBegin", &(title,)).await;
        let crash = {
            let mut state = self.state.lock().unwrap();
            let hit = state.crash_during.as_deref() == Some(txn.method.as_str());
            if hit {
                state.crash_during = None;
            }
            hit
        };
        if crash {
            self.crash().await;
            return;
        }
        tokio::time::sleep(self.delay_for(&txn.method)).await;
        if self.generation.load(Ordering::SeqCst) != generation {
            // The daemon died meanwhile: the work never happened.
            return;
        }
        let result = if txn.cancelled.load(Ordering::SeqCst) {
            Err("Operation was cancelled".to_string())
        } else {
            let mut state = self.state.lock().unwrap();
            match state.fail_next.remove(&txn.method) {
                Some(msg) => Err(msg),
                None => {
                    if let Op::Deploy {
                        refspec,
                        modifiers,
                        options,
                        ..
                    } = &op
                    {
                        let title =
                            super::deploy::deploy_title(refspec.as_deref(), modifiers, options);
                        *txn.title.lock().unwrap() = title.clone();
                        state.transactions[txn.record].title = title;
                    }
                    state.execute(&txn.osname, op)
                }
            }
        };
        emit_all(&txn, "TaskEnd", &("done",)).await;
        let (success, message) = match &result {
            Ok(messages) => {
                for m in messages {
                    emit_all(&txn, "Message", &(m.as_str(),)).await;
                }
                (true, String::new())
            }
            Err(e) => (false, e.clone()),
        };
        emit_all(&txn, "Finished", &(success, message.as_str())).await;
        {
            let mut state = self.state.lock().unwrap();
            state.transactions[txn.record].result = Some((success, message.clone()));
        }
        *txn.finished.lock().unwrap() = Some((success, message));
        // on_txn_executed_changed: force-close after FORCE_CLOSE_TXN_TIMEOUT_SECS.
        let force_after = self.state.lock().unwrap().force_close_after;
        let (inner, t) = (self.clone(), txn.clone());
        tokio::spawn(async move {
            tokio::time::sleep(force_after).await;
            if !t.closed.load(Ordering::SeqCst) {
                inner.state.lock().unwrap().forced_closes += 1;
                inner.force_close(&t).await;
            }
        });
        self.maybe_close(&txn);
    }
}

async fn emit_all<B>(txn: &Txn, signal: &str, body: &B)
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    let peers: Vec<Connection> = txn
        .peers
        .lock()
        .unwrap()
        .iter()
        .map(|(_, c)| c.clone())
        .collect();
    for c in peers {
        let _ = c.emit_signal(None::<()>, "/", IFACE, signal, body).await;
    }
}

/// transaction_new_connection_cb / transaction_connection_closed_cb.
async fn accept_peers(inner: Arc<Inner>, txn: Arc<Txn>, listener: tokio::net::UnixListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let Ok(std_stream) = stream.into_std() else {
            continue;
        };
        let iface = TransactionIface {
            inner: inner.clone(),
            txn: txn.clone(),
        };
        let built = zbus::connection::Builder::unix_stream(std_stream)
            .server(zbus::Guid::generate())
            .p2p()
            .serve_at("/", iface)
            .build()
            .await;
        let Ok(conn) = built else { continue };
        let id = PEER_IDS.fetch_add(1, Ordering::SeqCst);
        txn.peers.lock().unwrap().push((id, conn.clone()));
        let (inner, txn) = (inner.clone(), txn.clone());
        tokio::spawn(async move {
            conn.closed().await;
            txn.peers.lock().unwrap().retain(|(i, _)| *i != id);
            inner.maybe_close(&txn);
        });
    }
}

/// transaction_owner_vanished_cb: the caller left the bus before calling Start.
async fn watch_owner(inner: Arc<Inner>, txn: Arc<Txn>, sender: String) {
    let Some(bus) = inner.bus.lock().unwrap().clone() else {
        return;
    };
    let Ok(dbus) = zbus::fdo::DBusProxy::new(&bus).await else {
        return;
    };
    let Ok(mut changes) = dbus
        .receive_name_owner_changed_with_args(&[(0, sender.as_str())])
        .await
    else {
        return;
    };
    let gone = match zbus::names::BusName::try_from(sender.as_str()) {
        Ok(name) => !dbus.name_has_owner(name).await.unwrap_or(true),
        Err(_) => false,
    };
    if !gone {
        loop {
            match changes.next().await {
                Some(sig) => {
                    if sig.args().is_ok_and(|a| a.new_owner().is_none()) {
                        break;
                    }
                }
                None => return,
            }
        }
    }
    if !txn.started.load(Ordering::SeqCst) && !txn.closed.load(Ordering::SeqCst) {
        // "client disconnected before calling Start; cancelling transaction"
        inner.state.lock().unwrap().transactions[txn.record].result =
            Some((false, "client disconnected before calling Start".into()));
        inner.close(&txn);
    }
}

/// The `Transaction` interface each peer sees at `/`.
pub(crate) struct TransactionIface {
    inner: Arc<Inner>,
    txn: Arc<Txn>,
}

#[interface(name = "org.projectatomic.rpmostree1.Transaction")]
impl TransactionIface {
    /// transaction_handle_start: starts the work once; a late caller gets `false` and, once the
    /// transaction is done, `Finished` again on its own connection only.
    async fn start(&self, #[zbus(signal_emitter)] emitter: SignalEmitter<'_>) -> bool {
        let started = !self.txn.started.swap(true, Ordering::SeqCst);
        if started {
            tokio::spawn(self.inner.clone().execute(self.txn.clone()));
        }
        if let Some((success, message)) = self.txn.finished.lock().unwrap().clone() {
            let emitter = emitter.into_owned();
            // After the Start reply, as rpm-ostree emits it after rpmostree_transaction_complete_start.
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let _ = Self::finished(&emitter, success, &message).await;
            });
        }
        started
    }

    /// transaction_handle_cancel.
    fn cancel(&self) {
        self.txn.cancelled.store(true, Ordering::SeqCst);
    }

    #[zbus(property)]
    fn title(&self) -> String {
        self.txn.title.lock().unwrap().clone()
    }

    #[zbus(property)]
    fn initiating_client_description(&self) -> String {
        self.txn.client.clone()
    }

    #[zbus(signal)]
    async fn finished(
        emitter: &SignalEmitter<'_>,
        success: bool,
        error_message: &str,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    async fn message(emitter: &SignalEmitter<'_>, text: &str) -> zbus::Result<()>;
    #[zbus(signal)]
    async fn task_begin(emitter: &SignalEmitter<'_>, text: &str) -> zbus::Result<()>;
    #[zbus(signal)]
    async fn task_end(emitter: &SignalEmitter<'_>, text: &str) -> zbus::Result<()>;
    #[zbus(signal)]
    async fn percent_progress(
        emitter: &SignalEmitter<'_>,
        text: &str,
        percentage: u32,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    #[allow(clippy::too_many_arguments)]
    async fn download_progress(
        emitter: &SignalEmitter<'_>,
        time: (u64, u64),
        outstanding: (u32, u32),
        metadata: (u32, u32, u32),
        delta: (u32, u32, u32, u64),
        content: (u32, u32),
        transfer: (u64, u64),
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    async fn signature_progress(
        emitter: &SignalEmitter<'_>,
        signature: Vec<zbus::OwnedVariant>,
        commit: &str,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    async fn progress_end(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;
}
