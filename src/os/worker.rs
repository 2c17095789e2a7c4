//! ostree objects are `!Send`: every ostree operation runs start to finish on a thread of its own with a
//! current-thread tokio runtime (ostree-ext's own `spawn_blocking` calls land in that runtime's pool).

use std::future::Future;

use anyhow::{Context, Result, anyhow};

/// Run `work` on a fresh thread named `name`. With `private_mount_namespace`, the thread first enters
/// a private mount namespace and makes `/sysroot` writable there (see [`super::namespace`]); threads it
/// starts afterwards (the runtime's blocking pool, child processes) inherit that namespace.
pub(crate) async fn run_on_ostree_thread<T, F, Fut>(
    name: &str,
    private_mount_namespace: bool,
    work: F,
) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>> + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let _entered = span.enter();
            let result = (|| {
                if private_mount_namespace {
                    super::namespace::enter_private_mount_namespace()?;
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("Building the ostree worker runtime")?;
                rt.block_on(work())
            })();
            let _ = tx.send(result);
        })
        .context("Spawning the ostree worker thread")?;
    rx.await
        .map_err(|_| anyhow!("The ostree worker thread panicked"))?
}
