//! The rpm-ostree backend against a private `dbus-daemon` and a service implementing rpm-ostreed's D-Bus
//! contract (`testbed::rpm_ostreed`): verified against that contract only, not a real rpm-ostree.

use std::time::Duration;

use anyhow::Result;
use machine_config_daemon::os::rpm_ostree::BusyRetry;
use machine_config_daemon::os::{
    KernelArgsChange, KernelType, OsBackend, OsChange, Role, RpmOstreeBackend, StageOutcome,
};
use testbed::PrivateBus;
use testbed::rpm_ostreed::{FakeDeployment, FakeImage, FakeRpmOstreed, RpmOstreedState};

const V1: &str = "quay.io/openshift/rhcos@sha256:1111111111111111111111111111111111111111111111111111111111111111";
const V2: &str = "quay.io/openshift/rhcos@sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn image(digest_char: char, version: &str) -> FakeImage {
    FakeImage {
        digest: format!(
            "sha256:{}",
            std::iter::repeat_n(digest_char, 64).collect::<String>()
        ),
        version: version.into(),
    }
}

struct Fixture {
    _bus: PrivateBus,
    service: FakeRpmOstreed,
    backend: RpmOstreeBackend,
}

impl Fixture {
    /// A host booted into V1 with `kargs`, V2 available in the "registry".
    async fn booted_v1(kargs: &[&str]) -> Result<Self> {
        let bus = PrivateBus::start()?;
        let mut state = RpmOstreedState::default();
        state.images.insert(V1.into(), image('1', "416.94.1"));
        state.images.insert(V2.into(), image('2', "416.94.2"));
        state
            .deployments
            .push(FakeDeployment::booted(V1, &state.images[V1], kargs));
        let service = FakeRpmOstreed::start(bus.address(), state).await?;
        let backend = RpmOstreeBackend::connect(bus.address())
            .await?
            .with_busy_retry(BusyRetry {
                interval: Duration::from_millis(50),
                max_wait: Duration::from_secs(5),
            });
        Ok(Self {
            _bus: bus,
            service,
            backend,
        })
    }

    fn calls(&self) -> Vec<String> {
        self.service.state().calls.clone()
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn status_reads_deployments_and_boot_config() -> Result<()> {
    let fx = Fixture::booted_v1(&["rw", "console=ttyS0"]).await?;
    assert_eq!(
        fx.service.state().registered_clients,
        ["machine-config-daemon"]
    );
    let status = fx.backend.status().await?;
    let booted = status.booted.expect("booted");
    assert_eq!(booted.image.as_deref(), Some(V1));
    assert_eq!(
        booted.image_reference,
        Some(format!("ostree-unverified-registry:{V1}"))
    );
    assert_eq!(
        booted.image_digest.as_deref(),
        Some(image('1', "").digest.as_str())
    );
    assert_eq!(booted.version.as_deref(), Some("416.94.1"));
    assert_eq!(
        booted.kernel_arguments,
        ["rw", "console=ttyS0"],
        "ostree= is not a user karg"
    );
    assert_eq!(booted.stateroot, "rhcos");
    assert_eq!(
        (status.staged, status.pending, status.rollback),
        (None, None, None)
    );
    Ok(())
}

#[tokio::test]
async fn prefetch_then_stage_rebases_and_sets_kargs() -> Result<()> {
    let fx = Fixture::booted_v1(&["rw", "nosmt"]).await?;

    let report = fx.backend.prefetch(V2, None).await?;
    assert_eq!(report.image_digest, image('2', "").digest);
    assert_eq!(fx.service.state().downloaded, [V2]);
    assert!(
        fx.backend.status().await?.staged.is_none(),
        "download-only stages nothing"
    );

    let change = OsChange {
        image: Some(V2.into()),
        kargs: KernelArgsChange {
            remove: s(&["nosmt"]),
            add: s(&["hugepages=2"]),
        },
        ..Default::default()
    };
    let outcome = fx.backend.stage(&change).await?;
    let StageOutcome::Staged(staged) = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(staged.image.as_deref(), Some(V2));
    assert_eq!(staged.version.as_deref(), Some("416.94.2"));
    assert_eq!(staged.kernel_arguments, ["rw", "hugepages=2"]);

    let calls = fx.calls();
    assert_eq!(
        calls[1..],
        [
            format!("Rebase --download-only ostree-unverified-registry:{V2}"),
            format!("Rebase ostree-unverified-registry:{V2}"),
            "KernelArgs existing=\"rw nosmt\" append=[\"hugepages=2\"] delete=[\"nosmt\"]"
                .to_string(),
        ]
    );
    let status = fx.backend.status().await?;
    assert_eq!(
        status.booted.as_ref().and_then(|d| d.image.as_deref()),
        Some(V1)
    );
    assert_eq!(status.staged.as_ref(), Some(staged));

    // The same request again is a no-op: nothing else is called.
    assert_eq!(
        fx.backend.stage(&change).await?,
        StageOutcome::Unchanged(Role::Staged, staged.clone())
    );
    assert_eq!(fx.calls().len(), calls.len());
    Ok(())
}

#[tokio::test]
async fn booted_image_with_same_kargs_is_a_no_op_and_drops_a_stale_staged_one() -> Result<()> {
    let fx = Fixture::booted_v1(&["rw"]).await?;
    let back_to_v1 = OsChange {
        image: Some(V1.into()),
        ..Default::default()
    };
    let outcome = fx.backend.stage(&back_to_v1).await?;
    assert!(
        matches!(outcome, StageOutcome::Unchanged(Role::Booted, _)),
        "{outcome:?}"
    );
    assert_eq!(fx.calls().len(), 1, "only RegisterClient: {:?}", fx.calls());

    fx.backend
        .stage(&OsChange {
            image: Some(V2.into()),
            ..Default::default()
        })
        .await?;
    assert!(fx.backend.status().await?.staged.is_some());
    let outcome = fx.backend.stage(&back_to_v1).await?;
    assert!(
        matches!(outcome, StageOutcome::Unchanged(Role::Booted, _)),
        "{outcome:?}"
    );
    assert_eq!(fx.backend.status().await?.staged, None);
    assert_eq!(fx.calls().last().unwrap(), "Cleanup [\"pending-deploy\"]");
    Ok(())
}

#[tokio::test]
async fn kargs_only_change_uses_kernel_args() -> Result<()> {
    let fx = Fixture::booted_v1(&["rw"]).await?;
    let outcome = fx
        .backend
        .stage(&OsChange {
            kargs: KernelArgsChange {
                remove: vec![],
                add: s(&["quiet"]),
            },
            ..Default::default()
        })
        .await?;
    let StageOutcome::Staged(d) = outcome else {
        panic!()
    };
    assert_eq!(d.kernel_arguments, ["rw", "quiet"]);
    assert_eq!(d.image.as_deref(), Some(V1));
    assert_eq!(
        fx.calls()[1..],
        ["KernelArgs existing=\"rw\" append=[\"quiet\"] delete=[]"]
    );
    Ok(())
}

#[tokio::test]
async fn kernel_type_and_extensions_go_through_update_deployment() -> Result<()> {
    let fx = Fixture::booted_v1(&["rw"]).await?;
    let change = OsChange {
        kernel_type: Some(KernelType::Realtime),
        extensions: Some(s(&["usbguard"])),
        ..Default::default()
    };
    let StageOutcome::Staged(d) = fx.backend.stage(&change).await? else {
        panic!()
    };
    assert_eq!(
        d.requested_packages,
        [
            "kernel-rt-core",
            "kernel-rt-modules",
            "kernel-rt-modules-extra",
            "usbguard"
        ]
    );
    let base_removals = {
        let state = fx.service.state();
        state
            .deployments
            .iter()
            .find(|d| d.staged)
            .unwrap()
            .base_removals
            .clone()
    };
    assert_eq!(
        base_removals,
        [
            "kernel",
            "kernel-core",
            "kernel-modules",
            "kernel-modules-core",
            "kernel-modules-extra"
        ]
    );
    assert!(fx.backend.stage(&change).await?.is_unchanged());
    Ok(())
}

#[tokio::test]
async fn transaction_in_progress_is_retried() -> Result<()> {
    let fx = Fixture::booted_v1(&["rw"]).await?;
    fx.service.state().busy_replies = 2;
    let StageOutcome::Staged(d) = fx
        .backend
        .stage(&OsChange {
            image: Some(V2.into()),
            ..Default::default()
        })
        .await?
    else {
        panic!()
    };
    assert_eq!(d.image.as_deref(), Some(V2));
    let rebases = fx
        .calls()
        .iter()
        .filter(|c| c.starts_with("Rebase"))
        .count();
    assert_eq!(
        rebases,
        3,
        "two busy replies, then success: {:?}",
        fx.calls()
    );
    Ok(())
}

#[tokio::test]
async fn busy_for_too_long_gives_up_with_a_clear_error() -> Result<()> {
    let fx = Fixture::booted_v1(&["rw"]).await?;
    let backend = fx.backend.clone().with_busy_retry(BusyRetry {
        interval: Duration::from_millis(20),
        max_wait: Duration::from_millis(100),
    });
    fx.service.state().busy_replies = 1000;
    let err = backend
        .stage(&OsChange {
            image: Some(V2.into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("rpm-ostree rebase could not start: Transaction in progress"),
        "{err}"
    );
    assert!(fx.backend.status().await?.staged.is_none());
    Ok(())
}

#[tokio::test]
async fn failed_transaction_reports_rpm_ostree_error_and_stages_nothing() -> Result<()> {
    let fx = Fixture::booted_v1(&["rw"]).await?;
    let unknown = "quay.io/openshift/rhcos@sha256:9999999999999999999999999999999999999999999999999999999999999999";
    let err = fx.backend.prefetch(unknown, None).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "rpm-ostree rebase --download-only failed: error: reading manifest in {unknown}: manifest unknown"
        )
    );
    let err = fx
        .backend
        .stage(&OsChange {
            image: Some(unknown.into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("rpm-ostree rebase failed: error: reading manifest"),
        "{err}"
    );
    let status = fx.backend.status().await?;
    assert_eq!((status.staged, status.pending), (None, None));
    Ok(())
}
