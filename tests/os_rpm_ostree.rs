//! The rpm-ostree backend against the rpm-ostreed double (`testbed::rpm_ostreed`, rebuilt from
//! coreos/rpm-ostree's source) on a private `dbus-daemon`.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Result;
use machine_config_daemon::os::rpm_ostree::{BUSY_ERROR, BusyRetry};
use machine_config_daemon::os::{
    KernelArgsChange, KernelType, OsBackend, OsChange, Prepared, RpmOstreeBackend, StageOutcome,
};
use testbed::rpm_ostreed::{FakeDeployment, FakeImage, FakeRpmOstreed, RpmOstreedState};
use testbed::{NodeRoot, PrivateBus};

const V1: &str = "quay.io/openshift/rhcos@sha256:1111111111111111111111111111111111111111111111111111111111111111";
const V2: &str = "quay.io/openshift/rhcos@sha256:2222222222222222222222222222222222222222222222222222222222222222";
const V3: &str = "quay.io/openshift/rhcos@sha256:3333333333333333333333333333333333333333333333333333333333333333";

fn digest(c: char) -> String {
    format!("sha256:{}", std::iter::repeat_n(c, 64).collect::<String>())
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

struct Fixture {
    bus: PrivateBus,
    service: FakeRpmOstreed,
    backend: RpmOstreeBackend,
    node: NodeRoot,
}

impl Fixture {
    /// A host booted into `booted` (a pull spec the registry table has) with `kargs`.
    async fn with(state: impl FnOnce(&mut RpmOstreedState), kargs: &[&str]) -> Result<Self> {
        let bus = PrivateBus::start()?;
        let node = NodeRoot::new()?;
        let mut st = RpmOstreedState::default();
        st.images
            .insert(V1.into(), FakeImage::rhcos(&digest('1'), "416.94.1"));
        st.images
            .insert(V2.into(), FakeImage::rhcos(&digest('2'), "416.94.2"));
        st.node_root = Some(node.path().to_path_buf());
        st.deployments
            .push(FakeDeployment::booted(V1, &st.images[V1], kargs));
        state(&mut st);
        let service = FakeRpmOstreed::start(bus.address(), st).await?;
        let backend = RpmOstreeBackend::connect(bus.address())
            .await?
            .with_node_root(node.path())
            .with_busy_retry(BusyRetry {
                interval: Duration::from_millis(50),
                max_wait: Duration::from_secs(5),
            });
        Ok(Self {
            bus,
            service,
            backend,
            node,
        })
    }

    async fn booted_v1(kargs: &[&str]) -> Result<Self> {
        Self::with(|_| {}, kargs).await
    }

    fn methods(&self) -> Vec<String> {
        self.service.state().methods()
    }
}

/// An extensions container in a local registry, trusted by the node.
struct Extensions {
    _lab: testbed::ImageLab,
    _registry: testbed::Registry,
    image: String,
}

impl Extensions {
    async fn start(node: &NodeRoot, packages: &[&str], with_metadata: bool) -> Result<Self> {
        let lab = testbed::ImageLab::new()?;
        let built = lab.build_plain(
            "extensions",
            &[testbed::rpm_ostreed::repos::extensions_layer(
                packages,
                with_metadata,
            )],
        )?;
        let registry = testbed::Registry::start()?;
        registry.push(&lab, "extensions", "rhel-coreos-extensions")?;
        node.trust_insecure_registry(&registry)?;
        let image = registry.image_by_digest("rhel-coreos-extensions", &built.manifest_digest);
        Ok(Self {
            _lab: lab,
            _registry: registry,
            image,
        })
    }
}

/// Another rpm-ostree client on the bus (a second `rpm-ostree` command, cockpit, …).
struct OtherClient {
    conn: zbus::Connection,
}

impl OtherClient {
    async fn connect(bus: &PrivateBus) -> Result<Self> {
        Ok(Self {
            conn: zbus::connection::Builder::address(bus.address())
                .build()
                .await?,
        })
    }

    /// Call an OS method that starts a transaction; returns its address.
    async fn call<B>(&self, method: &str, body: &B) -> Result<String, zbus::Error>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        let reply = self
            .conn
            .call_method(
                Some(testbed::rpm_ostreed::BUS_NAME),
                testbed::rpm_ostreed::OS_PATH,
                Some("org.projectatomic.rpmostree1.OS"),
                method,
                body,
            )
            .await?;
        reply.body().deserialize::<String>()
    }

    /// Connect to a transaction and Start it; the peer connection is returned open.
    async fn start(address: &str) -> Result<(zbus::Connection, bool)> {
        let conn = zbus::connection::Builder::address(address)
            .p2p()
            .build()
            .await?;
        let reply = conn
            .call_method(
                None::<()>,
                "/",
                Some("org.projectatomic.rpmostree1.Transaction"),
                "Start",
                &(),
            )
            .await?;
        Ok((conn, reply.body().deserialize::<bool>()?))
    }
}

fn opts(pairs: &[(&str, zbus::Variant<'static>)]) -> HashMap<String, zbus::Variant<'static>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

// ---- The six mismatches with the real rpm-ostreed (issue 13) ----

/// 1. `GetDeploymentBootConfig` takes an index into the deployment list, not a deployment id.
#[tokio::test]
async fn mismatch_1_status_reads_boot_config_by_index() -> Result<()> {
    let fx = Fixture::booted_v1(&["rw", "console=ttyS0"]).await?;
    let status = fx.backend.status().await?;
    let booted = status.booted.expect("booted");
    assert_eq!(booted.kernel_arguments, ["rw", "console=ttyS0"]);
    assert_eq!(booted.image.as_deref(), Some(V1));
    assert_eq!(booted.image_digest, Some(digest('1')));
    assert_eq!(booted.version.as_deref(), Some("416.94.1"));
    Ok(())
}

/// 2. Rebasing to the refspec the first deployment already has fails ("Old and new refs are equal"),
/// with download-only too: a prefetch after staging must not ask for it.
#[tokio::test]
async fn mismatch_2_prefetch_after_staging_the_same_image() -> Result<()> {
    let fx = Fixture::booted_v1(&["rw"]).await?;
    let change = OsChange {
        image: Some(V2.into()),
        ..Default::default()
    };
    fx.backend.prefetch(V2, None).await?;
    fx.backend.stage(&change).await?;
    // The daemon retries the prefetch phase after a restart: the image is already staged.
    fx.backend.prefetch(V2, None).await?;
    let status = fx.backend.status().await?;
    assert_eq!(status.staged.and_then(|d| d.image).as_deref(), Some(V2));
    Ok(())
}

/// 3. Extensions install from a repo the extensions container provides; without it rpm-ostree has none.
#[tokio::test]
async fn mismatch_3_extensions_need_the_extensions_repo() -> Result<()> {
    let fx = Fixture::booted_v1(&["rw"]).await?;
    let ext = Extensions::start(&fx.node, &["usbguard"], true).await?;
    let change = OsChange {
        extensions: Some(s(&["usbguard"])),
        extensions_image: Some(ext.image.clone()),
        ..Default::default()
    };
    let outcome = fx.backend.stage(&change).await?;
    assert_eq!(outcome.deployment().requested_packages, ["usbguard"]);
    // The repo is only there while rpm-ostree needs it.
    assert!(
        !fx.node
            .path()
            .join("etc/yum.repos.d/coreos-extensions.repo")
            .exists()
    );
    assert_eq!(
        std::fs::read_dir(fx.node.path().join("run/mco-extensions"))?.count(),
        0,
        "the extracted image is removed"
    );
    Ok(())
}

/// 4. `UpdateDeployment` without `no-pull-base` is an upgrade: a moved tag would move the node.
#[tokio::test]
async fn mismatch_4_package_changes_keep_the_base_image() -> Result<()> {
    const TAG: &str = "quay.io/openshift/rhcos:4.16";
    let fx = Fixture::with(
        |st| {
            st.images
                .insert(TAG.into(), FakeImage::rhcos(&digest('1'), "416.94.1"));
            let mut d = FakeDeployment::booted(TAG, &st.images[TAG], &["rw"]);
            // Booted with the realtime kernel layered (no repo needed to drop it again).
            d.requested_packages = [
                "kernel-rt-core",
                "kernel-rt-modules",
                "kernel-rt-modules-extra",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            d.requested_base_removals = testbed::rpm_ostreed::BASE_KERNEL_PACKAGES
                .iter()
                .map(|s| s.to_string())
                .collect();
            st.deployments = vec![d];
            // The tag has moved on in the registry since.
            st.images
                .insert(TAG.into(), FakeImage::rhcos(&digest('9'), "416.94.9"));
        },
        &["rw"],
    )
    .await?;
    let outcome = fx
        .backend
        .stage(&OsChange {
            kernel_type: Some(KernelType::Default),
            ..Default::default()
        })
        .await?;
    let staged = outcome.deployment();
    assert!(staged.requested_packages.is_empty(), "{staged:?}");
    assert_eq!(
        staged.image_digest,
        Some(digest('1')),
        "the base image must not change"
    );
    let pulls = fx.service.state().pulls.clone();
    assert!(pulls.is_empty(), "nothing pulled: {pulls:?}");
    Ok(())
}

/// 5. The booted OS object comes from the `Booted` property, not `GetOS("")`.
#[tokio::test]
async fn mismatch_5_booted_os_from_the_booted_property() -> Result<()> {
    let fx = Fixture::booted_v1(&["rw"]).await?;
    fx.backend.prefetch(V2, None).await?;
    let get_os_default_calls = fx.service.state().get_os_default_calls;
    assert_eq!(get_os_default_calls, 0, "{:?}", fx.methods());
    Ok(())
}

/// 6a. A transaction stays open until every peer leaves: the backend closes its connection after
/// `Finished`, so the daemon is idle as soon as the call returns.
#[tokio::test]
async fn mismatch_6a_peer_connection_closed_after_finished() -> Result<()> {
    let fx = Fixture::booted_v1(&["rw"]).await?;
    fx.backend.prefetch(V2, None).await?;
    assert!(
        fx.service.wait_idle(Duration::from_millis(500)).await,
        "the transaction is still open: {:?}",
        fx.service.active_transaction()
    );
    Ok(())
}

/// 6b. Busy is the G_IO_ERROR_BUSY error name, whatever the text (here the sysroot lock).
#[tokio::test]
async fn mismatch_6b_busy_error_is_retried_by_name() -> Result<()> {
    let fx = Fixture::booted_v1(&["rw"]).await?;
    fx.service.state().sysroot_lock_holder = Some("ostree admin".into());
    let release = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        fx.service.state().sysroot_lock_holder = None;
    };
    let (r, ()) = tokio::join!(fx.backend.prefetch(V2, None), release);
    r?;
    assert_eq!(fx.service.state().downloaded.len(), 1);
    Ok(())
}

/// 6c. An identical call joins the open transaction (`Start` → false, `Finished` re-sent): another
/// client's stale result is not ours.
#[tokio::test]
async fn mismatch_6c_joined_transaction_is_not_taken_for_ours() -> Result<()> {
    let fx = Fixture::booted_v1(&["rw"]).await?;
    let other = OtherClient::connect(&fx.bus).await?;
    // Another client asked for the same download while the registry did not have the image yet, and
    // is still attached to the failed transaction.
    let address = other
        .call(
            "Rebase",
            &(
                opts(&[
                    ("download-only", zbus::Variant::from(true)),
                    (
                        "initiating-command-line",
                        zbus::Variant::from("machine-config-daemon prefetch"),
                    ),
                ]),
                format!("ostree-unverified-registry:{V3}"),
                Vec::<String>::new(),
            ),
        )
        .await?;
    let (peer, started) = OtherClient::start(&address).await?;
    assert!(started);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while fx
        .service
        .active_transaction()
        .is_some_and(|t| t.finished.is_none())
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fx.service
        .state()
        .images
        .insert(V3.into(), FakeImage::rhcos(&digest('3'), "416.94.3"));
    let leave = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(peer);
    };
    let (r, ()) = tokio::join!(fx.backend.prefetch(V3, None), leave);
    r?;
    let st = fx.service.state();
    assert_eq!(st.transactions[0].joined, 1, "{:?}", st.transactions);
    assert_eq!(st.downloaded, [format!("ostree-unverified-registry:{V3}")]);
    Ok(())
}

#[tokio::test]
async fn kargs_only_change() -> Result<()> {
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
    Ok(())
}

// ---- rpm-ostreed behaviours the backend relies on, checked on the double ----

fn error_of(e: &zbus::Error) -> (String, String) {
    match e {
        zbus::Error::MethodError(name, msg, _) => {
            (name.to_string(), msg.clone().unwrap_or_default())
        }
        other => (String::new(), other.to_string()),
    }
}

#[tokio::test]
async fn boot_config_takes_an_index_and_empty_pending_is_the_next_boot() -> Result<()> {
    let fx = Fixture::booted_v1(&["rw", "quiet"]).await?;
    let other = OtherClient::connect(&fx.bus).await?;
    let call = |id: &'static str, pending: bool| {
        let conn = other.conn.clone();
        async move {
            conn.call_method(
                Some(testbed::rpm_ostreed::BUS_NAME),
                testbed::rpm_ostreed::OS_PATH,
                Some("org.projectatomic.rpmostree1.OS"),
                "GetDeploymentBootConfig",
                &(id, pending),
            )
            .await
            .map(|r| {
                r.body()
                    .deserialize::<HashMap<String, zbus::OwnedVariant>>()
                    .unwrap()
            })
        }
    };
    let id = fx.service.state().deployments[0].id();
    let err = call(Box::leak(id.clone().into_boxed_str()), false)
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&err),
        (
            testbed::rpm_ostreed::errors::RPMOSTREED_ERROR_FAILED.to_string(),
            format!("Invalid deployment index {id}, must be a number and >= 0")
        )
    );
    let err = call("3", false).await.unwrap_err();
    assert_eq!(
        error_of(&err).1,
        "Out of range deployment index 3, expected < 1"
    );
    let options = |d: &HashMap<String, zbus::OwnedVariant>| {
        String::try_from(d["options"].try_clone().unwrap()).unwrap()
    };
    let booted = call("0", false).await?;
    assert!(options(&booted).starts_with("rw quiet ostree=/ostree/boot.1/rhcos/"));
    assert!(booted.contains_key("title") && booted.contains_key("linux"));
    // Stage new kernel arguments: ("", true) is the staged deployment, without ostree= and title.
    fx.backend
        .stage(&OsChange {
            kargs: KernelArgsChange {
                remove: s(&["quiet"]),
                add: s(&["nosmt"]),
            },
            ..Default::default()
        })
        .await?;
    let next = call("", true).await?;
    assert_eq!(options(&next), "rw nosmt");
    assert!(!next.contains_key("title"));
    assert!(
        options(&call("", false).await?).starts_with("rw quiet ostree="),
        "merge = booted"
    );
    Ok(())
}

#[tokio::test]
async fn same_refspec_rebase_fails_with_and_without_download_only() -> Result<()> {
    let fx = Fixture::booted_v1(&["rw"]).await?;
    let other = OtherClient::connect(&fx.bus).await?;
    let refspec = format!("ostree-unverified-registry:{V1}");
    for download_only in [false, true] {
        let address = other
            .call(
                "Rebase",
                &(
                    opts(&[("download-only", zbus::Variant::from(download_only))]),
                    refspec.clone(),
                    Vec::<String>::new(),
                ),
            )
            .await?;
        let (_peer, started) = OtherClient::start(&address).await?;
        assert!(started);
        drop(_peer);
        assert!(fx.service.wait_idle(Duration::from_secs(5)).await);
        let st = fx.service.state();
        let last = st.transactions.last().unwrap();
        assert_eq!(
            last.result,
            Some((false, format!("Old and new refs are equal: {refspec}"))),
            "download-only={download_only}"
        );
    }
    // The backend never asks for it: prefetching the booted image is a no-op.
    let report = fx.backend.prefetch(V1, None).await?;
    assert!(report.already_present);
    Ok(())
}

#[tokio::test]
async fn busy_for_a_different_call_join_for_the_same_and_open_until_peers_leave() -> Result<()> {
    let fx = Fixture::booted_v1(&["rw"]).await?;
    let a = OtherClient::connect(&fx.bus).await?;
    let b = OtherClient::connect(&fx.bus).await?;
    let address = a.call("Cleanup", &(vec!["base"],)).await?;
    // A different call while it is open: G_IO_ERROR_BUSY with the open transaction's title.
    let err = b.call("Cleanup", &(vec!["repomd"],)).await.unwrap_err();
    assert_eq!(
        error_of(&err),
        (
            BUSY_ERROR.to_string(),
            "Transaction in progress: cleanup\n You can cancel the current transaction with `rpm-ostree cancel`".to_string()
        )
    );
    // The same call joins: same address, and Start says it was already started.
    assert_eq!(b.call("Cleanup", &(vec!["base"],)).await?, address);
    let (peer_a, started_a) = OtherClient::start(&address).await?;
    assert!(started_a);
    assert!(
        !fx.service.wait_idle(Duration::from_millis(300)).await,
        "open while a peer stays"
    );
    let t = fx.service.active_transaction().unwrap();
    assert_eq!((t.finished, t.peers), (Some((true, String::new())), 1));
    // A late peer gets Start → false and Finished again on its own connection.
    let late = zbus::connection::Builder::address(address.as_str())
        .p2p()
        .build()
        .await?;
    let proxy = zbus::Proxy::new(
        &late,
        "org.projectatomic.rpmostree1",
        "/",
        "org.projectatomic.rpmostree1.Transaction",
    )
    .await?;
    let mut finished = proxy.receive_signal("Finished").await?;
    let started: bool = proxy.call("Start", &()).await?;
    assert!(!started);
    let sig = tokio::time::timeout(
        Duration::from_secs(5),
        futures::StreamExt::next(&mut finished),
    )
    .await?
    .unwrap();
    assert_eq!(
        sig.body().deserialize::<(bool, String)>()?,
        (true, String::new())
    );
    assert_eq!(fx.service.state().transactions[0].joined, 1);
    drop((proxy, finished));
    late.close().await?;
    drop(peer_a);
    assert!(
        fx.service.wait_idle(Duration::from_secs(5)).await,
        "closed once every peer left"
    );
    // The next call starts a new transaction.
    let (_p, started) = OtherClient::start(&b.call("Cleanup", &(vec!["repomd"],)).await?).await?;
    assert!(started);
    Ok(())
}

#[tokio::test]
async fn a_lingering_peer_is_force_closed() -> Result<()> {
    let fx = Fixture::booted_v1(&["rw"]).await?;
    fx.service.state().force_close_after = Duration::from_millis(200);
    let a = OtherClient::connect(&fx.bus).await?;
    let (_peer, _) = OtherClient::start(&a.call("Cleanup", &(vec!["base"],)).await?).await?;
    assert!(fx.service.wait_idle(Duration::from_secs(5)).await);
    assert_eq!(fx.service.state().forced_closes, 1);
    Ok(())
}

#[tokio::test]
async fn invalid_cleanup_type_and_unknown_packages_are_refused() -> Result<()> {
    let fx = Fixture::booted_v1(&["rw"]).await?;
    let other = OtherClient::connect(&fx.bus).await?;
    let err = other
        .call("Cleanup", &(vec!["base", "bogus"],))
        .await
        .unwrap_err();
    assert_eq!(
        error_of(&err),
        (
            testbed::rpm_ostreed::errors::G_IO_ERROR_FAILED.to_string(),
            "Invalid cleanup type: bogus".to_string()
        )
    );
    // Override-removing a package the image does not have.
    let address = other
        .call(
            "UpdateDeployment",
            &(
                opts(&[(
                    "override-remove-packages",
                    zbus::Variant::from(vec!["nosuch"]),
                )]),
                opts(&[("no-pull-base", zbus::Variant::from(true))]),
            ),
        )
        .await?;
    drop(OtherClient::start(&address).await?);
    assert!(fx.service.wait_idle(Duration::from_secs(5)).await);
    assert_eq!(
        fx.service.state().transactions.last().unwrap().result,
        Some((false, "Package \"nosuch\" not found".to_string()))
    );
    // Through the backend: a kernel the extensions repo does not have.
    let ext = Extensions::start(&fx.node, &["usbguard"], true).await?;
    let err = fx
        .backend
        .stage(&OsChange {
            kernel_type: Some(KernelType::Realtime),
            extensions_image: Some(ext.image.clone()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "rpm-ostree update (packages) failed: Packages not found: kernel-rt-core, kernel-rt-modules, kernel-rt-modules-extra"
    );
    let st = fx.service.state();
    assert!(
        st.staged().is_none(),
        "nothing staged: {:?}",
        st.deployments
    );
    Ok(())
}

#[tokio::test]
async fn lock_finalization_holds_the_staged_deployment_until_finalize() -> Result<()> {
    let fx = Fixture::booted_v1(&["rw"]).await?;
    let change = OsChange {
        image: Some(V2.into()),
        kargs: KernelArgsChange {
            remove: vec![],
            add: s(&["quiet"]),
        },
        ..Default::default()
    };
    let prepared = fx.backend.prepare(&change, None).await?;
    let Prepared::Staged(StageOutcome::Staged(staged)) = prepared else {
        panic!("{prepared:?}")
    };
    assert_eq!(staged.image.as_deref(), Some(V2));
    assert!(fx.service.state().staged().unwrap().finalization_locked);
    // Every step asked for the lock.
    for c in fx
        .service
        .state()
        .calls
        .iter()
        .filter(|c| c.starts_with("Rebase") || c.starts_with("KernelArgs"))
    {
        assert!(c.contains("lock-finalization=true"), "{c}");
    }
    // A reboot now (power cut, an admin) does not boot it: ostree-finalize-staged skips a locked one.
    fx.service.reboot().await?;
    assert_eq!(
        fx.backend.status().await?.booted.unwrap().image.as_deref(),
        Some(V1)
    );
    assert!(fx.service.state().staged().is_none());
    // Staged again, then released: rpm-ostreed reboots into it.
    assert!(matches!(
        fx.backend.stage(&change).await?,
        StageOutcome::Staged(_)
    ));
    assert!(fx.backend.finalize(&change).await?);
    {
        let st = fx.service.state();
        assert_eq!(st.reboots.len(), 1);
        let finalize = st
            .calls
            .iter()
            .find(|c| c.starts_with("FinalizeDeployment"))
            .unwrap();
        assert!(
            finalize.contains(&format!("checksum=\"{}\"", digest('2'))),
            "{finalize}"
        );
    }
    // Asked again before the reboot happened: it is on its way.
    assert!(fx.backend.finalize(&change).await?);
    fx.service.reboot().await?;
    let booted = fx.backend.status().await?.booted.unwrap();
    assert_eq!(booted.image.as_deref(), Some(V2));
    assert_eq!(booted.kernel_arguments, ["rw", "quiet"]);
    // Nothing staged and the booted one is what is asked for: nothing to release, the caller reboots.
    let booted_v2 = OsChange {
        image: Some(V2.into()),
        ..Default::default()
    };
    assert!(!fx.backend.finalize(&booted_v2).await?);
    Ok(())
}

#[tokio::test]
async fn finalize_checks_the_expected_digest() -> Result<()> {
    let fx = Fixture::booted_v1(&["rw"]).await?;
    fx.backend
        .stage(&OsChange {
            image: Some(V2.into()),
            ..Default::default()
        })
        .await?;
    let other = OtherClient::connect(&fx.bus).await?;
    for (options, error) in [
        (opts(&[]), "Missing expected checksum".to_string()),
        (
            opts(&[("checksum", zbus::Variant::from(digest('1')))]),
            format!(
                "Expected staged base checksum {}, but found {}",
                digest('1'),
                digest('2')
            ),
        ),
    ] {
        let address = other.call("FinalizeDeployment", &(options,)).await?;
        drop(OtherClient::start(&address).await?);
        assert!(fx.service.wait_idle(Duration::from_secs(5)).await);
        assert_eq!(
            fx.service.state().transactions.last().unwrap().result,
            Some((false, error))
        );
    }
    assert!(fx.service.state().reboots.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_failed_step_leaves_nothing_half_staged() -> Result<()> {
    let fx = Fixture::booted_v1(&["rw"]).await?;
    fx.service
        .state()
        .fail_next
        .insert("KernelArgs".into(), "error: No space left on device".into());
    let err = fx
        .backend
        .stage(&OsChange {
            image: Some(V2.into()),
            kargs: KernelArgsChange {
                remove: vec![],
                add: s(&["quiet"]),
            },
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "rpm-ostree kargs failed: error: No space left on device"
    );
    let st = fx.service.state();
    assert!(
        st.staged().is_none(),
        "the rebased deployment was removed: {:?}",
        st.deployments
    );
    assert_eq!(st.methods().last().map(String::as_str), Some("Cleanup"));
    Ok(())
}

#[tokio::test]
async fn rpm_ostreed_not_running_is_named() -> Result<()> {
    let fx = Fixture::booted_v1(&["rw"]).await?;
    fx.service.crash().await;
    let err = fx.backend.status().await.unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.starts_with("Registering with rpm-ostreed: rpm-ostreed is not running on the system bus (org.freedesktop.DBus.Error.ServiceUnknown"),
        "{text}"
    );
    fx.service.restart().await?;
    assert!(fx.backend.status().await?.booted.is_some());
    Ok(())
}

#[tokio::test]
async fn status_text_and_json_show_the_image_like_rpm_ostree_status() -> Result<()> {
    use machine_config_daemon::os::{OutputFormat, StatusDocument, render_status};
    let fx = Fixture::booted_v1(&["rw"]).await?;
    let doc = StatusDocument {
        api_version: "machine-config-daemon.io/v1alpha1",
        kind: "NodeOSStatus",
        metadata: machine_config_daemon::os::StatusMetadata { name: "n".into() },
        spec: machine_config_daemon::os::StatusSpec {
            backend: "rpm-ostree",
            sysroot: "/".into(),
        },
        status: fx.backend.status().await?.into(),
    };
    let text = render_status(&doc, OutputFormat::Text)?;
    assert!(
        text.contains(&format!("* ostree-unverified-registry:{V1}\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("Digest: {}\n", digest('1'))),
        "{text}"
    );
    assert!(text.contains("Version: 416.94.1\n"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&render_status(&doc, OutputFormat::Json)?)?;
    assert_eq!(
        json["status"]["booted"]["imageReference"],
        format!("ostree-unverified-registry:{V1}")
    );
    assert_eq!(json["status"]["booted"]["imageDigest"], digest('1'));
    Ok(())
}
