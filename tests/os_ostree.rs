//! The ostree backend against real parts: images built from scratch, Debian's docker-registry on
//! 127.0.0.1, and sandbox sysroots in temp dirs (root required, as for any ostree deployment).

use std::sync::{Arc, Mutex};

use anyhow::Result;
use machine_config_daemon::os::{
    FetchProgress, KernelArgsChange, KernelType, OsBackend, OsChange, OstreeBackend,
    OstreeBackendOptions, PullError, PullErrorKind, Role, StageOutcome,
};
use testbed::{BaseSpec, BuiltImage, ImageLab, LayerSpec, NodeRoot, Registry, SandboxSysroot};

/// A lab with base/derived images pushed to a plain-HTTP registry, an empty sandbox sysroot and a node
/// root whose registries.conf trusts the registry.
struct Fixture {
    lab: ImageLab,
    registry: Registry,
    sysroot: SandboxSysroot,
    node: NodeRoot,
    base: BuiltImage,
}

impl Fixture {
    async fn new() -> Result<Self> {
        let lab = ImageLab::new()?;
        let mut spec = BaseSpec::new("base", "1.0");
        spec.files
            .push(testbed::FileSpec::new("usr/etc/motd", "base motd\n"));
        let base = lab.build_base(&spec).await?;
        let registry = Registry::start()?;
        registry.push(&lab, "base", "os")?;
        let sysroot = SandboxSysroot::create("default")?;
        let node = NodeRoot::new()?;
        node.trust_insecure_registry(&registry)?;
        Ok(Self {
            lab,
            registry,
            sysroot,
            node,
            base,
        })
    }

    fn options(&self) -> OstreeBackendOptions {
        OstreeBackendOptions::sandbox(self.sysroot.path(), self.node.path())
    }

    fn backend(&self) -> OstreeBackend {
        OstreeBackend::new(self.options())
    }

    /// Derive `tag` from base with one layer holding `files`, and push it.
    fn derive_and_push(
        &self,
        tag: &str,
        layers: &[LayerSpec],
        version: &str,
    ) -> Result<BuiltImage> {
        let img = self.lab.derive("base", tag, layers, Some(version))?;
        self.registry.push(&self.lab, tag, "os")?;
        Ok(img)
    }

    fn image(&self, tag: &str) -> String {
        self.registry.image("os", tag)
    }

    async fn deploy(&self, backend: &OstreeBackend, tag: &str) -> Result<StageOutcome> {
        let image = self.image(tag);
        backend.prefetch(&image, None).await?;
        backend
            .stage(&OsChange {
                image: Some(image),
                ..Default::default()
            })
            .await
    }
}

fn staged(outcome: StageOutcome) -> machine_config_daemon::os::Deployment {
    match outcome {
        StageOutcome::Staged(d) => d,
        other => panic!("expected a new deployment, got {other:?}"),
    }
}

fn pull_error(err: &anyhow::Error) -> &PullError {
    err.downcast_ref::<PullError>()
        .unwrap_or_else(|| panic!("not a PullError: {err:#}"))
}

#[tokio::test]
async fn deploys_base_into_a_fresh_sysroot() -> Result<()> {
    let fx = Fixture::new().await?;
    let backend = fx.backend();
    assert_eq!(
        backend.status().await?,
        Default::default(),
        "a fresh sysroot has no deployments"
    );

    let report = backend.prefetch(&fx.image("base"), None).await?;
    assert_eq!(report.image_digest, fx.base.manifest_digest);
    assert_eq!(report.layers_fetched, 1);
    assert_eq!(report.bytes_fetched, fx.base.total_layer_bytes());
    assert!(
        fx.sysroot.deployments()?.is_empty(),
        "prefetch does not deploy"
    );

    let d = staged(
        backend
            .stage(&OsChange {
                image: Some(fx.image("base")),
                ..Default::default()
            })
            .await?,
    );
    assert_eq!(d.image.as_deref(), Some(fx.image("base").as_str()));
    assert_eq!(
        d.image_digest.as_deref(),
        Some(fx.base.manifest_digest.as_str())
    );
    assert_eq!(d.version.as_deref(), Some("1.0"));

    let status = backend.status().await?;
    assert_eq!(status.booted, None, "nothing is booted from a sandbox");
    let pending = status.pending.expect("the new deployment is the default");
    assert_eq!(
        pending.image_reference,
        Some(format!("ostree-unverified-registry:{}", fx.image("base")))
    );
    assert_eq!(pending.image_digest, Some(fx.base.manifest_digest.clone()));
    assert_eq!(status.rollback, None);

    let root = fx.sysroot.deployment_root(&pending.id());
    assert!(std::fs::read_to_string(root.join("usr/lib/os-release"))?.contains("VERSION_ID=1.0"));
    assert_eq!(
        std::fs::read_to_string(root.join("etc/motd"))?,
        "base motd\n",
        "/etc merged from usr/etc"
    );
    let origin = std::fs::read_to_string(
        fx.sysroot
            .deploy_dir()
            .join(format!("{}.origin", pending.id())),
    )?;
    assert!(
        origin.contains(&format!(
            "container-image-reference=ostree-unverified-registry:{}",
            fx.image("base")
        )),
        "{origin}"
    );
    assert_eq!(fx.sysroot.boot_entries()?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn updates_to_a_derived_image_then_same_digest_is_a_no_op() -> Result<()> {
    let fx = Fixture::new().await?;
    let backend = fx.backend();
    let base = staged(fx.deploy(&backend, "base").await?);
    let derived = fx.derive_and_push(
        "derived",
        &[LayerSpec::new("RUN dnf install htop")
            .file("usr/bin/htop", "htop\n")
            .file("etc/htoprc", "fields=0\n")],
        "1.1",
    )?;

    let d = staged(fx.deploy(&backend, "derived").await?);
    assert_eq!(
        d.image_digest.as_deref(),
        Some(derived.manifest_digest.as_str())
    );
    assert_eq!(d.version.as_deref(), Some("1.1"));
    let root = fx.sysroot.deployment_root(&d.id());
    assert_eq!(
        std::fs::read_to_string(root.join("usr/bin/htop"))?,
        "htop\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/htoprc"))?,
        "fields=0\n",
        "etc/ from a layer lands in /etc"
    );

    let status = backend.status().await?;
    assert_eq!(status.pending.as_ref().map(|p| p.id()), Some(d.id()));
    assert_eq!(
        status.rollback.as_ref().map(|r| r.id()),
        Some(base.id()),
        "the previous deployment is kept"
    );

    // The same image again: nothing new.
    let before = fx.sysroot.snapshot()?;
    let again = backend
        .stage(&OsChange {
            image: Some(fx.image("derived")),
            ..Default::default()
        })
        .await?;
    assert_eq!(again, StageOutcome::Unchanged(Role::Pending, d.clone()));
    let report = backend.prefetch(&fx.image("derived"), None).await?;
    assert!(report.already_present);
    assert_eq!(report.bytes_fetched, 0);
    assert_eq!(fx.sysroot.snapshot()?, before, "no duplicate deployment");
    Ok(())
}

#[tokio::test]
async fn kernel_arguments_alone_make_a_new_deployment_of_the_same_commit() -> Result<()> {
    let fx = Fixture::new().await?;
    let backend = fx.backend();
    let base = staged(fx.deploy(&backend, "base").await?);
    assert!(base.kernel_arguments.is_empty());

    let add = KernelArgsChange {
        remove: vec![],
        add: vec!["nosmt".into(), "hugepages=2".into()],
    };
    let d = staged(
        backend
            .stage(&OsChange {
                kargs: add.clone(),
                ..Default::default()
            })
            .await?,
    );
    assert_eq!(d.checksum, base.checksum, "same commit");
    assert_ne!(d.serial, base.serial);
    assert_eq!(d.kernel_arguments, ["nosmt", "hugepages=2"]);
    let status = backend.status().await?;
    assert_eq!(
        status.pending.as_ref().unwrap().kernel_arguments,
        ["nosmt", "hugepages=2"]
    );
    assert_eq!(
        status.pending.as_ref().unwrap().image_digest,
        base.image_digest
    );
    let options = fx.sysroot.boot_options()?;
    assert!(options[0].contains("nosmt hugepages=2"), "{options:?}");

    // The planner's change from [nosmt, hugepages=2] to [hugepages=2]: remove both old, add the new.
    let change = KernelArgsChange {
        remove: vec!["nosmt".into(), "hugepages=2".into()],
        add: vec!["hugepages=2".into()],
    };
    let d2 = staged(
        backend
            .stage(&OsChange {
                kargs: change,
                ..Default::default()
            })
            .await?,
    );
    assert_eq!(d2.kernel_arguments, ["hugepages=2"]);

    // Asking for what is already there changes nothing.
    let before = fx.sysroot.snapshot()?;
    let same = KernelArgsChange {
        remove: vec!["hugepages=2".into()],
        add: vec!["hugepages=2".into()],
    };
    let outcome = backend
        .stage(&OsChange {
            kargs: same,
            ..Default::default()
        })
        .await?;
    assert!(outcome.is_unchanged(), "{outcome:?}");
    assert_eq!(fx.sysroot.snapshot()?, before);
    Ok(())
}

#[tokio::test]
async fn image_and_kernel_arguments_together() -> Result<()> {
    let fx = Fixture::new().await?;
    let backend = fx.backend();
    fx.deploy(&backend, "base").await?;
    fx.derive_and_push(
        "v2",
        &[LayerSpec::new("RUN x").file("usr/share/v2", "2")],
        "2.0",
    )?;
    let change = OsChange {
        image: Some(fx.image("v2")),
        kargs: KernelArgsChange {
            remove: vec![],
            add: vec!["console=ttyS0".into()],
        },
        ..Default::default()
    };
    let d = staged(backend.stage(&change).await?);
    assert_eq!(d.version.as_deref(), Some("2.0"));
    assert_eq!(d.kernel_arguments, ["console=ttyS0"]);
    // Same image, same resulting kargs (remove then re-add): no-op.
    let again = OsChange {
        kargs: KernelArgsChange {
            remove: vec!["console=ttyS0".into()],
            add: vec!["console=ttyS0".into()],
        },
        ..change.clone()
    };
    assert!(backend.stage(&again).await?.is_unchanged());
    Ok(())
}

#[tokio::test]
async fn top_layer_only_update_fetches_only_that_layer() -> Result<()> {
    let fx = Fixture::new().await?;
    let backend = fx.backend();
    // v1 and v2 share base + a 256 KiB "rpm" layer and differ only in their top layer.
    let rpms = LayerSpec::new("RUN dnf install big").random_file("usr/lib/big/blob", 256 * 1024);
    fx.lab.derive("base", "mid", &[rpms], None)?;
    let v1 = fx.lab.derive(
        "mid",
        "v1",
        &[LayerSpec::new("RUN config").file("usr/share/conf", "v1")],
        Some("1"),
    )?;
    let v2 = fx.lab.derive(
        "mid",
        "v2",
        &[LayerSpec::new("RUN config").file("usr/share/conf", "v2")],
        Some("2"),
    )?;
    fx.registry.push(&fx.lab, "v1", "os")?;
    fx.registry.push(&fx.lab, "v2", "os")?;
    assert_eq!(
        v2.layers[..2],
        v1.layers[..2],
        "v2 shares the base and rpm layers"
    );
    assert_ne!(v2.top_layer(), v1.top_layer());

    backend.prefetch(&fx.image("v1"), None).await?;
    let mark = fx.registry.mark()?;
    let seen: Arc<Mutex<Vec<FetchProgress>>> = Arc::default();
    let sink = seen.clone();
    let progress: machine_config_daemon::os::ProgressFn =
        Arc::new(move |p: &FetchProgress| sink.lock().unwrap().push(p.clone()));
    let report = backend.prefetch(&fx.image("v2"), Some(progress)).await?;

    assert_eq!(report.layers_total, 3);
    assert_eq!(report.layers_fetched, 1);
    assert_eq!(report.layers_present, 2);
    assert_eq!(report.bytes_fetched, v2.top_layer().size);

    // The registry served exactly the new top layer and the config, nothing else.
    let log = fx.registry.access_log_since(mark)?;
    let mut blobs: Vec<&str> = log
        .iter()
        .filter(|e| e.is_blob_get())
        .filter_map(|e| e.digest())
        .collect();
    blobs.sort();
    let mut expected = vec![v2.top_layer().digest.as_str(), v2.config.digest.as_str()];
    expected.sort();
    assert_eq!(blobs, expected, "{log:#?}");
    let layer_bytes: u64 = log
        .iter()
        .filter(|e| e.is_blob_get() && e.digest() == Some(&v2.top_layer().digest))
        .map(|e| e.bytes)
        .sum();
    assert_eq!(layer_bytes, v2.top_layer().size);

    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty(), "progress was reported");
    assert!(
        seen.iter()
            .all(|p| p.layer_index == 2 && p.layer_digest == v2.top_layer().digest),
        "{seen:?}"
    );
    let last = seen.last().unwrap();
    assert_eq!(
        (last.fetched, last.total),
        (v2.top_layer().size, v2.top_layer().size)
    );
    Ok(())
}

/// Every failure leaves the sysroot exactly as it was.
async fn assert_pull_fails(
    fx: &Fixture,
    backend: &OstreeBackend,
    image: &str,
    kind: PullErrorKind,
) -> Result<String> {
    let before = fx.sysroot.snapshot()?;
    let status_before = backend.status().await?;
    let err = backend
        .prefetch(image, None)
        .await
        .expect_err("prefetch must fail");
    assert_eq!(pull_error(&err).kind, kind, "{err:#}");
    let err2 = backend
        .stage(&OsChange {
            image: Some(image.to_string()),
            ..Default::default()
        })
        .await
        .expect_err("stage must fail");
    assert_eq!(pull_error(&err2).kind, kind, "{err2:#}");
    eprintln!("{image}: {err}\n    chain: {}", pull_error(&err).chain);
    assert_eq!(fx.sysroot.snapshot()?, before, "sysroot unchanged");
    assert_eq!(backend.status().await?, status_before);
    Ok(err.to_string())
}

#[tokio::test]
async fn bad_images_fail_clearly_and_change_nothing() -> Result<()> {
    let fx = Fixture::new().await?;
    let backend = fx.backend();
    fx.deploy(&backend, "base").await?;

    // Unknown tag.
    let msg = assert_pull_fails(&fx, &backend, &fx.image("nope"), PullErrorKind::NotFound).await?;
    assert!(
        msg.starts_with(&format!(
            "Cannot pull OS image {}: the registry has no such image",
            fx.image("nope")
        )),
        "{msg}"
    );

    // Nothing listens on that port (discard, privileged: no test server can take it, unlike a port
    // found free a moment ago).
    let port = 9;
    fx.node.write(
        "etc/containers/registries.conf",
        format!(
            "{}[[registry]]\nlocation = \"127.0.0.1:{port}\"\ninsecure = true\n",
            fx.registry.registries_conf()
        ),
    )?;
    let msg = assert_pull_fails(
        &fx,
        &backend,
        &format!("127.0.0.1:{port}/os:base"),
        PullErrorKind::Unreachable,
    )
    .await?;
    assert!(msg.contains("cannot be reached"), "{msg}");

    // Not an OS image: no ostree.bootable label.
    let mut spec = BaseSpec::new("plain", "1.0");
    spec.bootable = false;
    fx.lab.build_base(&spec).await?;
    fx.registry.push(&fx.lab, "plain", "os")?;
    let msg = assert_pull_fails(
        &fx,
        &backend,
        &fx.image("plain"),
        PullErrorKind::NotBootable,
    )
    .await?;
    assert!(msg.contains("not a bootable OS image"), "{msg}");

    // A layer whose bytes do not match its digest.
    let bad = fx.derive_and_push(
        "corrupt",
        &[LayerSpec::new("RUN x").random_file("usr/share/x", 64 * 1024)],
        "9",
    )?;
    fx.registry.corrupt_blob(&bad.top_layer().digest)?;
    let msg =
        assert_pull_fails(&fx, &backend, &fx.image("corrupt"), PullErrorKind::Corrupt).await?;
    assert!(msg.contains("does not match its digest"), "{msg}");

    // Valid content served under the wrong digest. ostree-ext 0.15.3 keeps such a layer's ref after
    // the digest error; the stage in assert_pull_fails is the retry that must not trust it.
    let a = fx.derive_and_push(
        "swapped",
        &[LayerSpec::new("RUN x").random_file("usr/share/x", 64 * 1024)],
        "10",
    )?;
    let b = fx.lab.derive(
        "base",
        "donor",
        &[LayerSpec::new("RUN y").random_file("usr/share/x", 64 * 1024)],
        None,
    )?;
    fx.registry.push(&fx.lab, "donor", "os")?;
    fx.registry
        .swap_blob_content(&a.top_layer().digest, &b.top_layer().digest)?;
    let msg =
        assert_pull_fails(&fx, &backend, &fx.image("swapped"), PullErrorKind::Corrupt).await?;
    assert!(msg.contains("does not match its digest"), "{msg}");

    // Not even a reference.
    let err = backend.prefetch("ostree-bogus:x", None).await.unwrap_err();
    assert!(
        err.to_string().contains("Invalid OS image reference"),
        "{err:#}"
    );
    Ok(())
}

#[tokio::test]
async fn wrong_or_missing_credentials_fail_clearly() -> Result<()> {
    let lab = ImageLab::new()?;
    lab.build_base(&BaseSpec::new("base", "1.0")).await?;
    let registry = Registry::start_with_auth("puller", "right-password")?;
    let image = registry.push(&lab, "base", "os")?;
    let sysroot = SandboxSysroot::create("default")?;
    let node = NodeRoot::new()?;
    node.trust_insecure_registry(&registry)?;
    let backend = OstreeBackend::new(OstreeBackendOptions::sandbox(sysroot.path(), node.path()));

    // No pull secret at all.
    let err = backend.prefetch(&image, None).await.unwrap_err();
    assert_eq!(
        pull_error(&err).kind,
        PullErrorKind::Unauthorized,
        "{err:#}"
    );
    // A wrong one in the kubelet's config.json (the MCD's fallback).
    node.write(
        "var/lib/kubelet/config.json",
        registry.auth_json("puller", "wrong"),
    )?;
    let err = backend.prefetch(&image, None).await.unwrap_err();
    assert_eq!(
        pull_error(&err).kind,
        PullErrorKind::Unauthorized,
        "{err:#}"
    );
    assert!(
        !err.to_string().contains("wrong"),
        "the secret is never echoed: {err}"
    );
    assert!(sysroot.deployments()?.is_empty());

    // The right one in /run/ostree/auth.json wins over the kubelet's.
    node.write(
        "run/ostree/auth.json",
        registry.auth_json("puller", "right-password"),
    )?;
    let d = staged(
        backend
            .stage(&OsChange {
                image: Some(image.clone()),
                ..Default::default()
            })
            .await?,
    );
    assert_eq!(d.image.as_deref(), Some(image.as_str()));
    Ok(())
}

#[tokio::test]
async fn simulated_boot_stages_in_front_of_the_booted_deployment() -> Result<()> {
    let fx = Fixture::new().await?;
    let base = staged(fx.deploy(&fx.backend(), "base").await?);

    // "Boot" the base deployment.
    let backend = OstreeBackend::test_only_treat_default_deployment_as_booted(fx.options()).await?;
    let status = backend.status().await?;
    assert_eq!(status.booted.as_ref().map(|d| d.id()), Some(base.id()));
    assert_eq!(
        (status.staged.as_ref(), status.pending.as_ref()),
        (None, None)
    );

    // Staging the booted image with the booted kargs: nothing to do.
    let outcome = backend
        .stage(&OsChange {
            image: Some(fx.image("base")),
            ..Default::default()
        })
        .await?;
    assert_eq!(
        outcome,
        StageOutcome::Unchanged(Role::Booted, status.booted.clone().unwrap())
    );

    fx.derive_and_push(
        "v2",
        &[LayerSpec::new("RUN x").file("usr/share/v2", "2")],
        "2.0",
    )?;
    let v2 = OsChange {
        image: Some(fx.image("v2")),
        ..Default::default()
    };
    let new = staged(backend.stage(&v2).await?);
    let status = backend.status().await?;
    assert_eq!(status.staged.as_ref().map(|d| d.id()), Some(new.id()));
    assert_eq!(status.booted.as_ref().map(|d| d.id()), Some(base.id()));
    assert_eq!(
        backend.stage(&v2).await?,
        StageOutcome::Unchanged(Role::Staged, status.staged.clone().unwrap())
    );

    // A different target replaces the staged one rather than piling up.
    let with_kargs = OsChange {
        kargs: KernelArgsChange {
            remove: vec![],
            add: vec!["quiet".into()],
        },
        ..v2.clone()
    };
    let newer = staged(backend.stage(&with_kargs).await?);
    let status = backend.status().await?;
    assert_eq!(status.staged.as_ref().map(|d| d.id()), Some(newer.id()));
    assert_eq!(
        fx.sysroot.deployments()?.len(),
        2,
        "booted + staged: {:?}",
        fx.sysroot.deployments()?
    );

    // Going back to the booted image drops the staged deployment.
    let outcome = backend
        .stage(&OsChange {
            image: Some(fx.image("base")),
            ..Default::default()
        })
        .await?;
    assert!(
        matches!(outcome, StageOutcome::Unchanged(Role::Booted, _)),
        "{outcome:?}"
    );
    let status = backend.status().await?;
    assert_eq!(status.staged, None);
    assert_eq!(fx.sysroot.deployments()?, vec![base.id()]);

    // The simulated reboot: a new backend boots the new default.
    staged(backend.stage(&v2).await?);
    let after_reboot =
        OstreeBackend::test_only_treat_default_deployment_as_booted(fx.options()).await?;
    let status = after_reboot.status().await?;
    assert_eq!(
        status.booted.as_ref().and_then(|d| d.version.as_deref()),
        Some("2.0")
    );
    assert_eq!(status.rollback.as_ref().map(|d| d.id()), Some(base.id()));
    Ok(())
}

#[tokio::test]
async fn package_changes_are_refused_with_the_backend_that_can_do_them() -> Result<()> {
    let fx = Fixture::new().await?;
    let backend = fx.backend();
    let before = fx.sysroot.snapshot()?;
    let err = backend
        .stage(&OsChange {
            image: Some(fx.image("base")),
            kernel_type: Some(KernelType::Realtime),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "kernelType realtime needs the rpm-ostree backend (RHCOS/FCOS hosts); the ostree backend cannot replace the kernel"
    );
    assert_eq!(fx.sysroot.snapshot()?, before);
    Ok(())
}

#[tokio::test]
async fn cleanup_removes_a_prefetched_image_that_was_never_staged() -> Result<()> {
    let fx = Fixture::new().await?;
    let backend = fx.backend();
    fx.deploy(&backend, "base").await?;
    fx.derive_and_push(
        "unused",
        &[LayerSpec::new("RUN x").random_file("usr/share/x", 128 * 1024)],
        "3",
    )?;
    backend.prefetch(&fx.image("unused"), None).await?;
    let before = fx.sysroot.snapshot()?;

    let report = backend.cleanup().await?;
    assert_eq!(report.images_removed, 1, "{report:?}");
    assert!(report.layers_removed >= 1, "{report:?}");
    assert!(report.bytes_freed >= 128 * 1024, "{report:?}");
    assert_eq!(fx.sysroot.snapshot()?, before, "deployments are kept");

    // Nothing left to remove the second time.
    let again = backend.cleanup().await?;
    assert_eq!((again.images_removed, again.layers_removed), (0, 0));
    // The deployed image is still known: a re-prefetch of it fetches nothing.
    assert!(
        backend
            .prefetch(&fx.image("base"), None)
            .await?
            .already_present
    );
    Ok(())
}

#[tokio::test]
async fn status_command_renders_the_sandbox_as_a_kubernetes_document() -> Result<()> {
    use machine_config_daemon::os::{OutputFormat, StatusArgs, render_status};
    let fx = Fixture::new().await?;
    let d = staged(fx.deploy(&fx.backend(), "base").await?);
    let args = StatusArgs {
        sysroot: Some(fx.sysroot.path().to_path_buf()),
        output: OutputFormat::Json,
        backend: machine_config_daemon::os::BackendKind::Auto,
        root: Some(fx.node.path().to_path_buf()),
    };
    let doc = machine_config_daemon::os::status_document(&args).await?;
    let json: serde_json::Value = serde_json::from_str(&render_status(&doc, OutputFormat::Json)?)?;
    assert_eq!(json["kind"], "NodeOSStatus");
    assert_eq!(
        json["spec"]["backend"], "ostree",
        "a sandbox sysroot always uses the ostree backend"
    );
    assert_eq!(
        json["status"]["pending"]["imageDigest"],
        fx.base.manifest_digest.as_str()
    );
    assert_eq!(json["status"]["pending"]["checksum"], d.checksum.as_str());
    assert_eq!(json["status"]["pending"]["version"], "1.0");
    assert!(json["status"]["booted"].is_null());
    let text = render_status(&doc, OutputFormat::Text)?;
    assert!(
        text.contains(&format!(
            "\n  ostree-unverified-registry:{}\n",
            fx.image("base")
        )),
        "{text}"
    );
    assert!(text.contains("Role: pending"), "{text}");
    assert!(
        !text.lines().any(|l| l.starts_with('*')),
        "nothing is booted: {text}"
    );
    Ok(())
}
