//! The testbed itself: images build, push and read back; the registry logs what it served.

use testbed::{BaseSpec, ImageLab, LayerSpec, Registry, SandboxSysroot};

#[tokio::test]
async fn builds_pushes_and_logs_images() -> anyhow::Result<()> {
    let lab = ImageLab::new()?;
    let base = lab.build_base(&BaseSpec::new("base", "1.0")).await?;
    assert_eq!(base.version.as_deref(), Some("1.0"));
    assert_eq!(
        base.layers.len(),
        1,
        "an unchunked encapsulation is one ostree layer"
    );

    let derived = lab.derive(
        "base",
        "derived",
        &[LayerSpec::new("RUN install htop").file("usr/bin/htop", "htop\n")],
        Some("1.1"),
    )?;
    assert_eq!(derived.layers.len(), 2);
    assert_eq!(
        derived.layers[0], base.layers[0],
        "the base layer is shared"
    );
    assert_eq!(derived.version.as_deref(), Some("1.1"));
    assert_ne!(derived.manifest_digest, base.manifest_digest);

    let registry = Registry::start()?;
    let mark = registry.mark()?;
    let pushed = registry.push(&lab, "derived", "os")?;
    assert_eq!(pushed, format!("{}/os:derived", registry.addr()));
    let log = registry.access_log_since(mark)?;
    assert!(
        log.iter()
            .any(|e| e.method == "PUT" && e.path.contains("/manifests/derived")),
        "{log:?}"
    );

    // skopeo reads back the same manifest digest from the registry.
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .arg(format!("docker://{pushed}"))
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout)?.trim(),
        derived.manifest_digest
    );

    let sysroot = SandboxSysroot::create("default")?;
    assert!(sysroot.path().join("ostree/repo/config").exists());
    assert!(sysroot.deployments()?.is_empty());
    Ok(())
}

#[tokio::test]
async fn registry_with_auth_rejects_anonymous_pulls() -> anyhow::Result<()> {
    let lab = ImageLab::new()?;
    lab.build_base(&BaseSpec::new("base", "1.0")).await?;
    let registry = Registry::start_with_auth("admin", "s3cret")?;
    let pushed = registry.push(&lab, "base", "os")?;
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--no-creds"])
        .arg(format!("docker://{pushed}"))
        .output()?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("authentication required"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
