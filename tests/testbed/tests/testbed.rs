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

/// A tiny bootable tree committed to a bare repo of its own, as an OS build would leave it.
fn commit_tree(repo: &std::path::Path) -> anyhow::Result<String> {
    let tree = tempfile::tempdir()?;
    for (path, data) in [
        ("usr/lib/modules/6.1.0-t/vmlinuz", "kernel\n"),
        ("usr/lib/modules/6.1.0-t/initramfs.img", "initramfs\n"),
        ("usr/lib/os-release", "ID=t\n"),
        ("usr/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("usr/share/t/marker", "from the existing commit\n"),
    ] {
        let p = tree.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap())?;
        std::fs::write(p, data)?;
    }
    let ostree = |args: &[&str]| -> anyhow::Result<String> {
        let out = std::process::Command::new("ostree")
            .arg(format!("--repo={}", repo.display()))
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    };
    ostree(&["init", "--mode=bare"])?;
    ostree(&[
        "commit",
        "--branch=os/layer",
        "--bootable",
        "--no-xattrs",
        &format!("--tree=dir={}", tree.path().display()),
    ])
}

#[tokio::test]
async fn encapsulates_an_existing_commit_and_installs_it_into_a_sysroot() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let repo = work.path().join("repo");
    commit_tree(&repo)?;
    let lab = ImageLab::new()?;
    let image = lab
        .encapsulate_commit(&repo, "os/layer", "node", Some("7.0"), true)
        .await?;
    assert_eq!(image.version.as_deref(), Some("7.0"));
    assert_eq!(image.layers.len(), 1);

    // A missing commit is an error naming it; nothing is tagged.
    let err = lab
        .encapsulate_commit(&repo, "os/nope", "nope", None, true)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("os/nope"), "{err:#}");
    assert!(lab.describe("nope").is_err());

    let sysroot = SandboxSysroot::create("default")?;
    let source = format!("ostree-unverified-image:{}", lab.oci_ref("node"));
    let target = format!(
        "ostree-unverified-registry:10.0.2.100:5000/os@{}",
        image.manifest_digest
    );
    // A target that is not an image reference is refused before anything is deployed.
    let err = testbed::sysroot::deploy_container_image(
        sysroot.path(),
        "default",
        &source,
        Some("10.0.2.100:5000/os"),
        &[],
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("10.0.2.100:5000/os"), "{err:#}");
    assert!(sysroot.deployments()?.is_empty());

    let (commit, digest) = testbed::sysroot::deploy_container_image(
        sysroot.path(),
        "default",
        &source,
        Some(&target),
        &["root=/dev/vda".to_string(), "rw".to_string()],
    )
    .await?;
    assert_eq!(digest, image.manifest_digest);
    let deployments = sysroot.deployments()?;
    assert_eq!(deployments, [format!("{commit}.0")]);
    let root = sysroot.deployment_root(&deployments[0]);
    assert_eq!(
        std::fs::read_to_string(root.join("usr/share/t/marker"))?,
        "from the existing commit\n"
    );
    let origin = std::fs::read_to_string(root.with_extension("0.origin"))?;
    assert!(
        origin.contains(&format!("container-image-reference={target}")),
        "the origin names the target, not the source: {origin}"
    );
    assert_eq!(sysroot.boot_options()?.len(), 1);
    assert!(sysroot.boot_options()?[0].contains("root=/dev/vda rw"));
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

/// A TLS registry is trusted only through a certificate directory holding its CA (what skopeo's
/// `--cert-dir` and containers-certs.d(5) expect), and still wants its credentials.
#[tokio::test]
async fn tls_registry_wants_its_ca_and_credentials() -> anyhow::Result<()> {
    let lab = ImageLab::new()?;
    lab.build_base(&BaseSpec::new("base", "1.0")).await?;
    let ca = testbed::tls::TestCa::new("testbed registry CA")?;
    let registry = Registry::start_tls(
        &ca,
        Some(testbed::Credentials {
            username: "puller".into(),
            password: "s3cret".into(),
        }),
    )?;
    let pushed = registry.push(&lab, "base", "os")?;
    let certs = tempfile::tempdir()?;
    std::fs::write(certs.path().join("ca.crt"), registry.tls_ca_pem().unwrap())?;
    let inspect = |args: &[&str]| {
        let out = std::process::Command::new("skopeo")
            .arg("inspect")
            .args(args)
            .arg(format!("docker://{pushed}"))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let cert_dir = format!("--cert-dir={}", certs.path().display());
    let (ok, err) = inspect(&["--creds=puller:s3cret"]);
    assert!(
        !ok && err.contains("certificate signed by unknown authority"),
        "{err}"
    );
    let (ok, err) = inspect(&[&cert_dir, "--no-creds"]);
    assert!(!ok && err.contains("authentication required"), "{err}");
    let (ok, err) = inspect(&[&cert_dir, "--creds=puller:s3cret"]);
    assert!(ok, "{err}");
    Ok(())
}

/// The `testbed` CLI as the demo and shell scripts use it.
#[test]
fn cli_builds_serves_pushes_and_creates_sysroots() -> anyhow::Result<()> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let bin = env!("CARGO_BIN_EXE_testbed");
    let dir = tempfile::tempdir()?;
    let lab = dir.path().join("lab");
    let run = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new(bin).args(args).output()?;
        anyhow::ensure!(
            out.status.success(),
            "testbed {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    };
    let lab_s = lab.to_str().unwrap();
    let base: serde_json::Value = serde_json::from_str(&run(&[
        "build-base",
        "--lab",
        lab_s,
        "--tag",
        "base",
        "--version",
        "1.0",
    ])?)?;
    assert_eq!(base["version"], "1.0");
    let derived: serde_json::Value = serde_json::from_str(&run(&[
        "derive",
        "--lab",
        lab_s,
        "--from",
        "base",
        "--to",
        "v2",
        "--file",
        "usr/bin/htop=htop",
        "--version",
        "1.1",
    ])?)?;
    assert_eq!(derived["layers"].as_array().unwrap().len(), 2);
    assert_eq!(derived["layers"][0], base["layers"][0]);

    let mut registry = Command::new(bin)
        .args(["registry", "--dir"])
        .arg(dir.path().join("registry"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut addr = String::new();
    std::io::BufReader::new(registry.stdout.take().unwrap()).read_line(&mut addr)?;
    let pushed = run(&[
        "push",
        "--lab",
        lab_s,
        "--tag",
        "v2",
        "--registry",
        addr.trim(),
    ]);
    // SIGTERM lets it stop docker-registry on the way out.
    terminate(registry.id());
    let status = registry.wait()?;
    let pushed = pushed?;
    assert_eq!(
        pushed.trim(),
        format!(
            "{}/os@{}",
            addr.trim(),
            derived["manifestDigest"].as_str().unwrap()
        )
    );
    assert!(
        status.success(),
        "registry exits cleanly on SIGTERM: {status}"
    );
    let log = std::fs::read_to_string(dir.path().join("registry/access.log"))?;
    assert!(log.contains("PUT /v2/os/manifests/v2"), "{log}");

    let sysroot = dir.path().join("sysroot");
    assert_eq!(
        run(&["sysroot", "--dir", sysroot.to_str().unwrap()])?.trim(),
        sysroot.to_str().unwrap()
    );
    assert!(sysroot.join("ostree/deploy/default").is_dir());
    Ok(())
}

/// SIGTERM to a process this test started.
fn terminate(pid: u32) {
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}
