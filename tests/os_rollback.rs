//! Rolling back to the previous deployment and pruning older ones, on both backends: the ostree backend
//! on a real sandbox sysroot with images from a real registry, the rpm-ostree backend against the
//! rpm-ostreed double (whose `Rollback` follows rpmostreed-transaction-types.cxx
//! rollback_transaction_execute).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Result;
use machine_config_daemon::os::rpm_ostree::BusyRetry;
use machine_config_daemon::os::{
    OsBackend, OsChange, OstreeBackend, OstreeBackendOptions, RollbackOutcome, RpmOstreeBackend,
    StageOutcome,
};
use testbed::rpm_ostreed::{FakeDeployment, FakeImage, FakeRpmOstreed, RpmOstreedState};
use testbed::{BaseSpec, ImageLab, LayerSpec, NodeRoot, PrivateBus, Registry, SandboxSysroot};

struct Sandbox {
    lab: ImageLab,
    registry: Registry,
    sysroot: SandboxSysroot,
    node: NodeRoot,
    boot: tempfile::TempDir,
    boots: usize,
}

impl Sandbox {
    async fn new() -> Result<Self> {
        let lab = ImageLab::new()?;
        lab.build_base(&BaseSpec::new("base", "1.0")).await?;
        let registry = Registry::start()?;
        registry.push(&lab, "base", "os")?;
        for (tag, version) in [("v2", "2.0"), ("v3", "3.0")] {
            lab.derive(
                "base",
                tag,
                &[LayerSpec::new("RUN x").random_file(&format!("usr/share/{tag}"), 64 * 1024)],
                Some(version),
            )?;
            registry.push(&lab, tag, "os")?;
        }
        let sysroot = SandboxSysroot::create("default")?;
        let node = NodeRoot::new()?;
        node.trust_insecure_registry(&registry)?;
        Ok(Self {
            lab,
            registry,
            sysroot,
            node,
            boot: tempfile::tempdir()?,
            boots: 0,
        })
    }

    fn options(&self) -> OstreeBackendOptions {
        OstreeBackendOptions::sandbox(self.sysroot.path(), self.node.path())
    }

    /// A simulated boot of the default deployment.
    async fn boot(&mut self) -> Result<OstreeBackend> {
        self.boots += 1;
        let id = self.boot.path().join("boot_id");
        std::fs::write(&id, format!("boot-{}\n", self.boots))?;
        OstreeBackend::test_only_simulated_boot(self.options(), &id).await
    }

    async fn stage(&self, backend: &OstreeBackend, tag: &str) -> Result<()> {
        let image = self.registry.image("os", tag);
        let outcome = backend
            .stage(&OsChange {
                image: Some(image),
                ..Default::default()
            })
            .await?;
        assert!(matches!(outcome, StageOutcome::Staged(_)), "{outcome:?}");
        Ok(())
    }

    fn versions(&self, backend_status: &machine_config_daemon::os::OsStatus) -> Vec<String> {
        let _ = &self.lab;
        backend_status
            .roles()
            .map(|(r, d)| format!("{r}={}", d.version.as_deref().unwrap_or("?")))
            .collect()
    }
}

#[tokio::test]
async fn ostree_rollback_makes_the_previous_deployment_boot_next_once_and_prune_keeps_it()
-> Result<()> {
    let mut sb = Sandbox::new().await?;
    // Installed: base. Then v2 staged and booted.
    sb.stage(&OstreeBackend::new(sb.options()), "base").await?;
    let booted_base = sb.boot().await?;
    sb.stage(&booted_base, "v2").await?;
    let on_v2 = sb.boot().await?;
    let status = on_v2.status().await?;
    assert_eq!(sb.versions(&status), ["booted=2.0", "rollback=1.0"]);
    let previous = status.rollback.clone().unwrap();

    assert_eq!(on_v2.rollback(&previous).await?, RollbackOutcome::Switched);
    assert_eq!(
        OstreeBackend::new(sb.options())
            .status()
            .await?
            .pending
            .map(|d| d.id()),
        Some(previous.id()),
        "the previous deployment is the default"
    );
    // A second call (a restarted daemon) changes nothing: it does not swap back.
    let before = sb.sysroot.snapshot()?;
    assert_eq!(
        on_v2.rollback(&previous).await?,
        RollbackOutcome::AlreadyDefault
    );
    assert_eq!(sb.sysroot.snapshot()?, before);

    // The next boot runs it, with the failed one as its rollback.
    let back = sb.boot().await?;
    let status = back.status().await?;
    assert_eq!(sb.versions(&status), ["booted=1.0", "rollback=2.0"]);

    // A fixed image goes in front; after its boot the failed one is older than the rollback: pruned,
    // with its image, while the previous (known-good) deployment stays.
    sb.stage(&back, "v3").await?;
    let on_v3 = sb.boot().await?;
    assert_eq!(sb.sysroot.deployments()?.len(), 3);
    let report = on_v3.prune().await?;
    assert_eq!(report.deployments_removed.len(), 1, "{report:?}");
    assert!(report.cleanup.images_removed >= 1, "{report:?}");
    let status = on_v3.status().await?;
    assert_eq!(sb.versions(&status), ["booted=3.0", "rollback=1.0"]);
    assert_eq!(sb.sysroot.deployments()?.len(), 2);
    // Nothing more to prune.
    assert!(on_v3.prune().await?.deployments_removed.is_empty());

    // A deployment that is gone: a clear error, nothing written.
    let before = sb.sysroot.snapshot()?;
    let gone = machine_config_daemon::os::Deployment {
        checksum: "0".repeat(64),
        ..previous
    };
    let err = on_v3.rollback(&gone).await.unwrap_err().to_string();
    assert!(err.contains("is not in the sysroot any more"), "{err}");
    assert_eq!(sb.sysroot.snapshot()?, before);
    Ok(())
}

const V1: &str = "quay.io/openshift/rhcos@sha256:1111111111111111111111111111111111111111111111111111111111111111";
const V2: &str = "quay.io/openshift/rhcos@sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn digest(c: char) -> String {
    format!("sha256:{}", std::iter::repeat_n(c, 64).collect::<String>())
}

/// The double booted into V2 with V1 as its rollback (as after an update).
async fn rpm_ostreed_after_an_update() -> Result<(PrivateBus, FakeRpmOstreed, RpmOstreeBackend)> {
    let bus = PrivateBus::start()?;
    let mut st = RpmOstreedState::default();
    st.images
        .insert(V1.into(), FakeImage::rhcos(&digest('1'), "416.94.1"));
    st.images
        .insert(V2.into(), FakeImage::rhcos(&digest('2'), "416.94.2"));
    let mut v2 = FakeDeployment::booted(V2, &st.images[V2], &[]);
    let mut v1 = FakeDeployment::booted(V1, &st.images[V1], &[]);
    v1.booted = false;
    v2.booted = true;
    st.deployments = vec![v2, v1];
    let service = FakeRpmOstreed::start(bus.address(), st).await?;
    let backend = RpmOstreeBackend::connect(bus.address())
        .await?
        .with_busy_retry(BusyRetry {
            interval: Duration::from_millis(50),
            max_wait: Duration::from_secs(5),
        });
    Ok((bus, service, backend))
}

#[tokio::test]
async fn rpm_ostree_rollback_is_called_once_and_the_next_boot_runs_the_previous_deployment()
-> Result<()> {
    let (_bus, service, backend) = rpm_ostreed_after_an_update().await?;
    let previous = backend.status().await?.rollback.unwrap();
    assert_eq!(previous.image.as_deref(), Some(V1));
    assert_eq!(
        backend.rollback(&previous).await?,
        RollbackOutcome::Switched
    );
    assert_eq!(
        backend.rollback(&previous).await?,
        RollbackOutcome::AlreadyDefault
    );
    let rollbacks: Vec<String> = service
        .state()
        .calls
        .iter()
        .filter(|c| c.starts_with("Rollback"))
        .cloned()
        .collect();
    assert_eq!(
        rollbacks,
        ["Rollback {reboot=false}"],
        "one Rollback, without rpm-ostreed's reboot"
    );
    assert!(service.state().reboots.is_empty());
    let txn = service.state().transactions.last().cloned().unwrap();
    assert_eq!(
        (txn.title.as_str(), txn.result),
        ("rollback", Some((true, String::new())))
    );
    service.reboot().await?;
    let status = backend.status().await?;
    assert_eq!(status.booted.and_then(|d| d.image).as_deref(), Some(V1));
    assert_eq!(status.rollback.and_then(|d| d.image).as_deref(), Some(V2));
    // Pruning keeps the previous deployment (rpm-ostree has no "older than the rollback" cleanup).
    let report = backend.prune().await?;
    assert!(report.deployments_removed.is_empty());
    assert_eq!(
        backend
            .status()
            .await?
            .rollback
            .and_then(|d| d.image)
            .as_deref(),
        Some(V2)
    );
    Ok(())
}

/// The double's `Rollback` as rpm-ostree's CLI calls it, to show what the backend works around.
async fn call_rollback(bus: &PrivateBus) -> Result<std::result::Result<(), String>> {
    let conn = zbus::connection::Builder::address(bus.address())
        .build()
        .await?;
    let mut options: HashMap<&str, zbus::Variant<'_>> = HashMap::new();
    options.insert("reboot", false.into());
    let reply = conn
        .call_method(
            Some("org.projectatomic.rpmostree1"),
            testbed::rpm_ostreed::OS_PATH,
            Some("org.projectatomic.rpmostree1.OS"),
            "Rollback",
            &(options,),
        )
        .await;
    let address: String = match reply {
        Ok(m) => m.body().deserialize()?,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let peer = zbus::connection::Builder::address(address.as_str())
        .p2p()
        .build()
        .await?;
    let proxy = zbus::Proxy::new(
        &peer,
        "org.projectatomic.rpmostree1",
        "/",
        "org.projectatomic.rpmostree1.Transaction",
    )
    .await?;
    let mut finished = proxy.receive_signal("Finished").await?;
    let _: bool = proxy.call("Start", &()).await?;
    use futures::StreamExt;
    let msg = tokio::time::timeout(Duration::from_secs(10), finished.next())
        .await?
        .expect("Finished");
    let (ok, error): (bool, String) = msg.body().deserialize()?;
    Ok(if ok { Ok(()) } else { Err(error) })
}

#[tokio::test]
async fn the_doubles_rollback_swaps_back_on_a_second_call_and_refuses_a_staged_deployment()
-> Result<()> {
    let (bus, service, _backend) = rpm_ostreed_after_an_update().await?;
    let order = |s: &FakeRpmOstreed| -> Vec<String> {
        s.state().deployments.iter().map(|d| d.image()).collect()
    };
    call_rollback(&bus).await?.unwrap();
    assert_eq!(order(&service), [V1, V2]);
    // No rollback deployment but a pending one: the booted one goes back on top.
    call_rollback(&bus).await?.unwrap();
    assert_eq!(order(&service), [V2, V1]);
    // A staged deployment in front: refused.
    {
        let mut st = service.state();
        let mut staged = st.deployments[1].clone();
        staged.staged = true;
        staged.serial = 1;
        st.deployments.insert(0, staged);
    }
    assert_eq!(
        call_rollback(&bus).await?,
        Err("Staged deployment (remove with cleanup -p)".to_string())
    );
    // Only the booted deployment: nothing to roll back to.
    service.state().deployments.retain(|d| d.booted);
    assert_eq!(
        call_rollback(&bus).await?,
        Err("No rollback deployment found".to_string())
    );
    Ok(())
}
