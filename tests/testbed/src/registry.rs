//! Debian's `docker-registry` on a free 127.0.0.1 port, storage in a temp dir, with a readable access
//! log so tests can count what a pull fetched. Killed on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use fn_error_context::context;

use crate::cmd::run;
use crate::image::ImageLab;
use crate::tls::{ServerCert, TestCa};

/// Username/password for a registry started with htpasswd auth.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// One line of the registry's access log (Apache combined format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogEntry {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub bytes: u64,
}

impl AccessLogEntry {
    /// `GET` of a blob (layer or config) that the registry answered with content.
    pub fn is_blob_get(&self) -> bool {
        self.method == "GET" && self.path.contains("/blobs/sha256:") && self.status == 200
    }

    pub fn is_manifest_get(&self) -> bool {
        self.method == "GET" && self.path.contains("/manifests/") && self.status == 200
    }

    /// The `sha256:…` a blob or digest-manifest request names.
    pub fn digest(&self) -> Option<&str> {
        self.path
            .rsplit('/')
            .next()
            .filter(|s| s.starts_with("sha256:"))
    }
}

/// A position in the access log; entries after it belong to what a test did next.
#[derive(Debug, Clone, Copy)]
pub struct LogMark(usize);

#[derive(Debug)]
pub struct Registry {
    child: Child,
    port: u16,
    _temp: Option<tempfile::TempDir>,
    dir: PathBuf,
    access_log: PathBuf,
    credentials: Option<Credentials>,
    /// With TLS: the CA that signed the registry's certificate (PEM), which clients must trust.
    tls_ca: Option<String>,
}

/// TLS for a registry: its certificate and the CA clients must trust.
#[derive(Debug, Clone)]
struct Tls {
    server: ServerCert,
    ca_pem: String,
}

impl Registry {
    /// Start a registry without authentication.
    pub fn start() -> Result<Self> {
        Self::start_impl(None, None, None, None)
    }

    /// Keep storage and logs in `dir` and listen on `port` (0: a free one): for the CLI and demos.
    pub fn start_in(dir: &Path, port: u16, credentials: Option<Credentials>) -> Result<Self> {
        Self::start_impl(credentials, Some(dir), Some(port).filter(|p| *p != 0), None)
    }

    /// Start a registry that requires these credentials (htpasswd, bcrypt), for pushes and pulls.
    pub fn start_with_auth(username: &str, password: &str) -> Result<Self> {
        Self::start_impl(
            Some(Credentials {
                username: username.into(),
                password: password.into(),
            }),
            None,
            None,
            None,
        )
    }

    /// Start a registry serving HTTPS only, with a certificate for 127.0.0.1 signed by `ca`, and
    /// htpasswd authentication when `credentials` are given. Clients must trust `ca` (see
    /// [`Registry::tls_ca_pem`]); nothing is added to the host's trust store.
    pub fn start_tls(ca: &TestCa, credentials: Option<Credentials>) -> Result<Self> {
        let tls = Tls {
            server: ca.server_cert(&["127.0.0.1"], &["localhost"])?,
            ca_pem: ca.cert_pem(),
        };
        Self::start_impl(credentials, None, None, Some(tls))
    }

    #[context("Starting docker-registry")]
    fn start_impl(
        credentials: Option<Credentials>,
        dir: Option<&Path>,
        port: Option<u16>,
        tls: Option<Tls>,
    ) -> Result<Self> {
        let (temp, dir) = match dir {
            Some(d) => (None, d.to_path_buf()),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("testbed-registry-")
                    .tempdir()?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage)?;
        // A free port found by binding :0 can be taken by another test's server before the registry
        // binds it; an automatically chosen port is then chosen again (a given one is not).
        let attempts = if port.is_some() { 1 } else { 5 };
        let mut temp = temp;
        for attempt in 1..=attempts {
            let port = match port {
                Some(p) => p,
                None => free_port()?,
            };
            match Self::spawn_on(&dir, port, credentials.clone(), tls.clone(), temp.take()) {
                Ok(registry) => return Ok(registry),
                Err((e, t)) => {
                    let lost_race = format!("{e:#}").contains("address already in use");
                    if !lost_race || attempt == attempts {
                        return Err(e);
                    }
                    temp = t;
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Start docker-registry on `port`; on failure the temp dir is handed back for another attempt.
    #[allow(clippy::result_large_err)]
    fn spawn_on(
        dir: &Path,
        port: u16,
        credentials: Option<Credentials>,
        tls: Option<Tls>,
        temp: Option<tempfile::TempDir>,
    ) -> std::result::Result<Self, (anyhow::Error, Option<tempfile::TempDir>)> {
        let storage = dir.join("storage");
        let config = || -> Result<PathBuf> {
            let mut config = format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                storage.display()
            );
            if let Some(t) = &tls {
                let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
                std::fs::write(&cert, &t.server.cert_pem)?;
                std::fs::write(&key, &t.server.key_pem)?;
                // Under `http:`, the last section so far.
                config.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    cert.display(),
                    key.display()
                ));
            }
            if let Some(c) = &credentials {
                let hash = bcrypt::hash(&c.password, 5).context("Hashing the password")?;
                let htpasswd = dir.join("htpasswd");
                std::fs::write(&htpasswd, format!("{}:{hash}\n", c.username))?;
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: testbed\n    path: {}\n",
                    htpasswd.display()
                ));
            }
            let config_path = dir.join("config.yml");
            std::fs::write(&config_path, config)?;
            Ok(config_path)
        };
        let config_path = match config() {
            Ok(p) => p,
            Err(e) => return Err((e, temp)),
        };
        let access_log = dir.join("access.log");
        let spawned = (|| -> Result<Child> {
            Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&access_log)?)
                .stderr(std::fs::File::create(dir.join("registry.log"))?)
                .spawn()
                .context("Spawning docker-registry (is the docker-registry package installed?)")
        })();
        let child = match spawned {
            Ok(c) => c,
            Err(e) => return Err((e, temp)),
        };
        let mut registry = Self {
            child,
            port,
            _temp: temp,
            dir: dir.to_path_buf(),
            access_log,
            credentials,
            tls_ca: tls.map(|t| t.ca_pem),
        };
        match registry.wait_ready() {
            Ok(()) => Ok(registry),
            Err(e) => {
                let _ = registry.child.kill();
                let _ = registry.child.wait();
                let temp = registry._temp.take();
                Err((e, temp))
            }
        }
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                let log =
                    std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default();
                bail!("docker-registry exited ({status}): {}", log.trim());
            }
            // 200, or 401 with auth: a registry answers /v2/ so; anything else is not ours (yet).
            let status = match &self.tls_ca {
                Some(ca) => https_status(self.port, "/v2/", ca),
                None => http_status(self.port, "/v2/"),
            };
            if matches!(status, Ok(200 | 401)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "docker-registry did not answer on 127.0.0.1:{} within 20s",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// The CA a client must trust, for a registry started with [`Registry::start_tls`].
    pub fn tls_ca_pem(&self) -> Option<&str> {
        self.tls_ca.as_deref()
    }

    /// `127.0.0.1:<port>/<name>:<tag>`, a pull spec as a MachineConfig's osImageURL has it.
    pub fn image(&self, name: &str, tag: &str) -> String {
        format!("{}/{name}:{tag}", self.addr())
    }

    /// `127.0.0.1:<port>/<name>@<digest>`.
    pub fn image_by_digest(&self, name: &str, digest: &str) -> String {
        format!("{}/{name}@{digest}", self.addr())
    }

    /// `skopeo copy` a lab tag to `<name>:<tag>` here. Returns the tagged pull spec.
    #[context("Pushing {tag} to the registry")]
    pub fn push(&self, lab: &ImageLab, tag: &str, name: &str) -> Result<String> {
        let dest = self.image(name, tag);
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "copy",
            "--insecure-policy",
            "--quiet",
            "--dest-tls-verify=false",
        ]);
        if let Some(c) = &self.credentials {
            cmd.arg(format!("--dest-creds={}:{}", c.username, c.password));
        }
        cmd.arg(lab.oci_ref(tag)).arg(format!("docker://{dest}"));
        run(&mut cmd)?;
        Ok(dest)
    }

    /// A `registries.conf` that marks this registry as plain HTTP (`insecure = true`).
    pub fn registries_conf(&self) -> String {
        format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
            self.addr()
        )
    }

    /// A Docker `config.json` / `auth.json` with this registry's credentials (or `wrong` ones).
    pub fn auth_json(&self, username: &str, password: &str) -> String {
        use base64::Engine as _;
        let encode = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"{}\"}}}}}}\n",
            self.addr(),
            encode(format!("{username}:{password}").as_bytes())
        )
    }

    /// Where the registry keeps a blob's bytes (filesystem driver layout).
    pub fn blob_data_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| anyhow!("not a sha256 digest: {digest}"))?;
        let p = self
            .dir
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data");
        if !p.exists() {
            bail!("The registry has no blob {digest}");
        }
        Ok(p)
    }

    /// Flip bytes of a stored blob in place (same size), so clients see a digest mismatch.
    #[context("Corrupting blob {digest}")]
    pub fn corrupt_blob(&self, digest: &str) -> Result<()> {
        let p = self.blob_data_path(digest)?;
        let mut data = std::fs::read(&p)?;
        let n = data.len();
        for b in data.iter_mut().skip(n / 2).take(64) {
            *b ^= 0xff;
        }
        std::fs::write(&p, data)?;
        Ok(())
    }

    /// Serve the bytes of blob `other` under `digest`: valid content with the wrong digest.
    #[context("Replacing blob {digest} with {other}")]
    pub fn swap_blob_content(&self, digest: &str, other: &str) -> Result<()> {
        let target = self.blob_data_path(digest)?;
        std::fs::copy(self.blob_data_path(other)?, target)?;
        Ok(())
    }

    /// The current end of the access log.
    pub fn mark(&self) -> Result<LogMark> {
        Ok(LogMark(self.access_log()?.len()))
    }

    /// Every request so far.
    pub fn access_log(&self) -> Result<Vec<AccessLogEntry>> {
        let text =
            std::fs::read_to_string(&self.access_log).context("Reading the registry access log")?;
        text.lines().map(parse_access_line).collect()
    }

    /// Requests after `mark`. The registry logs a request after answering it, so this waits until the
    /// log has stopped growing (up to 3 s) before reading it.
    pub fn access_log_since(&self, mark: LogMark) -> Result<Vec<AccessLogEntry>> {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut entries = self.access_log()?;
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let again = self.access_log()?;
            if again.len() == entries.len() || Instant::now() > deadline {
                entries = again;
                break;
            }
            entries = again;
        }
        Ok(entries.into_iter().skip(mark.0).collect())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The registry's exit status if it has stopped.
    pub fn try_wait(&mut self) -> Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `127.0.0.1 - - [date] "GET /v2/x/blobs/sha256:… HTTP/1.1" 200 1234 "" "ua"`
fn parse_access_line(line: &str) -> Result<AccessLogEntry> {
    let bad = || anyhow!("Unparsable access log line: {line}");
    let mut quoted = line.split('"');
    let _prefix = quoted.next().ok_or_else(bad)?;
    let request = quoted.next().ok_or_else(bad)?;
    let after = quoted.next().ok_or_else(bad)?;
    let mut req = request.split_whitespace();
    let method = req.next().ok_or_else(bad)?.to_string();
    let path = req.next().ok_or_else(bad)?.to_string();
    let mut nums = after.split_whitespace();
    let status = nums.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let bytes = nums.next().ok_or_else(bad)?.parse().unwrap_or(0);
    Ok(AccessLogEntry {
        method,
        path,
        status,
        bytes,
    })
}

/// A port nobody listens on right now (bind :0, read it, release it).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("Binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Minimal HTTP/1.0 GET over TLS on 127.0.0.1 (the certificate verified against `ca_pem` for the
/// IP address), returning the status code.
fn https_status(port: u16, path: &str, ca_pem: &str) -> Result<u16> {
    use openssl::ssl::{SslConnector, SslMethod};
    let mut b = SslConnector::builder(SslMethod::tls_client())?;
    b.cert_store_mut()
        .add_cert(openssl::x509::X509::from_pem(ca_pem.as_bytes())?)?;
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut s = b
        .build()
        .connect("127.0.0.1", tcp)
        .map_err(|e| anyhow!("TLS handshake: {e}"))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("no HTTP status"))?;
    Ok(status.parse()?)
}

/// Minimal HTTP/1.0 GET on 127.0.0.1, returning the status code.
fn http_status(port: u16, path: &str) -> Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("no HTTP status"))?;
    Ok(status.parse()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_combined_log_line() {
        let e = parse_access_line(
            "127.0.0.1 - - [23/Nov/2026:21:14:40 +0000] \"GET /v2/os/blobs/sha256:ab HTTP/1.1\" 200 1234 \"\" \"skopeo\"",
        )
        .unwrap();
        assert_eq!(
            e,
            AccessLogEntry {
                method: "GET".into(),
                path: "/v2/os/blobs/sha256:ab".into(),
                status: 200,
                bytes: 1234
            }
        );
        assert_eq!(e.digest(), Some("sha256:ab"));
    }
}
