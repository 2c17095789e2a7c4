//! placeholder
use anyhow::{Result, bail};
use super::*;
#[derive(Debug, Clone)]
pub struct RpmOstreeBackend;
impl RpmOstreeBackend { pub async fn connect_system() -> Result<Self> { bail!("todo") } }
pub async fn rpm_ostreed_on_system_bus() -> bool { false }
impl OsBackend for RpmOstreeBackend {
    fn name(&self) -> &'static str { "rpm-ostree" }
    async fn status(&self) -> Result<OsStatus> { bail!("todo") }
    async fn prefetch(&self, _image: &str, _progress: Option<ProgressFn>) -> Result<PrefetchReport> { bail!("todo") }
    async fn stage(&self, _change: &OsChange) -> Result<StageOutcome> { bail!("todo") }
    async fn cleanup(&self) -> Result<CleanupReport> { bail!("todo") }
}
