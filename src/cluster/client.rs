//! Credentials: the pod's service account, an explicit `--kubeconfig`, or the kubelet's kubeconfig
//! (what the MCD uses for node writes; see docs/protocol.md). TLS is always verified.
//!
//! Also how the daemon talks about the API server in logs and on `/healthz`: its URL, the identity
//! the daemon authenticates as, and why a request failed (connection refused, TLS, 401/403).

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine;

/// The kubelet's kubeconfig, which NodeRestriction lets write its own Node.
pub const KUBELET_KUBECONFIG: &str = "/var/lib/kubelet/kubeconfig";
/// The pod's service account token (kube-rs reads the same file for in-cluster credentials).
pub const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// Where API credentials come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Credentials {
    /// The pod's service account (`KUBERNETES_SERVICE_HOST` + the mounted token).
    InCluster,
    /// A kubeconfig file (its current context).
    Kubeconfig(PathBuf),
}

impl Credentials {
    /// The kubelet's kubeconfig under `root` (`/` on a node).
    pub fn kubelet(root: &Path) -> Self {
        Credentials::Kubeconfig(root.join(KUBELET_KUBECONFIG.trim_start_matches('/')))
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::InCluster => f.write_str("the pod's service account"),
            Credentials::Kubeconfig(p) => write!(f, "the kubeconfig {}", p.display()),
        }
    }
}

/// The API server as the daemon names it in messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiEndpoint {
    /// `https://api.example:6443/`.
    pub url: String,
    /// Who the daemon is to the API server: the client certificate's subject, the service account, or
    /// the kubeconfig user.
    pub identity: String,
}

/// Build the client configuration, refusing any setting that turns off TLS verification.
pub async fn config(credentials: &Credentials) -> Result<kube::Config> {
    let config = match credentials {
        Credentials::InCluster => kube::Config::incluster()
            .map_err(|e| anyhow::anyhow!("cannot use the pod's service account: {e}"))?,
        Credentials::Kubeconfig(path) => {
            // Said here, plainly: kube-rs quotes the path in Debug form and repeats the cause.
            std::fs::metadata(path).map_err(|e| {
                anyhow::anyhow!("cannot read the kubeconfig {}: {e}", path.display())
            })?;
            let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                anyhow::anyhow!("the kubeconfig {} is not usable: {e}", path.display())
            })?;
            kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("the kubeconfig {} is not usable: {e}", path.display()))?
        }
    };
    if config.accept_invalid_certs {
        bail!(
            "{credentials} disables TLS verification (insecure-skip-tls-verify), which this daemon refuses"
        );
    }
    let mut config = config;
    // kube-rs would retry every 429 itself (up to 15 times); for an eviction a 429 is the PDB's
    // answer, which the drain loop must see. `KubeCluster` retries transient errors itself.
    config.default_retry = false;
    Ok(config)
}

/// The endpoint `config` talks to, and as whom.
pub fn endpoint(credentials: &Credentials, config: &kube::Config) -> ApiEndpoint {
    ApiEndpoint {
        url: config.cluster_url.to_string(),
        identity: identity(credentials, &config.auth_info),
    }
}

/// Who the daemon is to the API server, as far as the credentials say.
fn identity(credentials: &Credentials, auth: &kube::config::AuthInfo) -> String {
    match credentials {
        Credentials::InCluster => std::fs::read_to_string(SERVICE_ACCOUNT_TOKEN)
            .ok()
            .and_then(|t| token_subject(&t))
            .map(|sub| format!("{sub} (the pod's service account)"))
            .unwrap_or_else(|| "the pod's service account".into()),
        Credentials::Kubeconfig(path) => {
            let how = if let Some(subject) = client_certificate_subject(auth) {
                format!("client certificate {subject}")
            } else if auth.token.is_some() || auth.token_file.is_some() {
                "a bearer token".into()
            } else if auth.exec.is_some() {
                "an exec credential plugin".into()
            } else if auth.username.is_some() {
                format!(
                    "basic auth user {}",
                    auth.username.as_deref().unwrap_or_default()
                )
            } else if auth.client_certificate.is_some() || auth.client_certificate_data.is_some() {
                "a client certificate".into()
            } else {
                return format!("anonymous (no credentials in {})", path.display());
            };
            format!("{how} from {}", path.display())
        }
    }
}

/// `sub` of a service account token (a JWT): `system:serviceaccount:NAMESPACE:NAME`. Only read to
/// name the identity in messages; the API server is what verifies the token.
pub fn token_subject(token: &str) -> Option<String> {
    let payload = token.trim().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["sub"].as_str().map(str::to_string)
}

/// The client certificate's user and groups, as the API server reads them (CN is the user, each O
/// a group): `CN=system:node:worker-0, O=system:nodes`.
fn client_certificate_subject(auth: &kube::config::AuthInfo) -> Option<String> {
    let pem = match (&auth.client_certificate_data, &auth.client_certificate) {
        (Some(data), _) => base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .ok()?,
        (None, Some(path)) => std::fs::read(path).ok()?,
        (None, None) => return None,
    };
    certificate_subject(&pem)
}

/// `CN=…, O=…` of the first certificate in `pem`.
pub fn certificate_subject(pem: &[u8]) -> Option<String> {
    let cert = openssl::x509::X509::from_pem(pem).ok()?;
    let parts: Vec<String> = cert
        .subject_name()
        .entries()
        .filter_map(|e| {
            let key = e.object().nid().short_name().ok()?;
            let value = e.data().to_string().ok()?;
            matches!(key, "CN" | "O").then(|| format!("{key}={value}"))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// A kube-rs client for `credentials`.
pub async fn connect(credentials: &Credentials) -> Result<kube::Client> {
    Ok(connect_to(credentials).await?.0)
}

/// A kube-rs client for `credentials`, and who and where it talks to.
pub async fn connect_to(credentials: &Credentials) -> Result<(kube::Client, ApiEndpoint)> {
    let config = config(credentials).await?;
    let endpoint = endpoint(credentials, &config);
    let client = kube::Client::try_from(config).context("Building the Kubernetes client")?;
    Ok((client, endpoint))
}

/// Why a request to the API server failed, in words an admin can act on: `connection refused`,
/// `TLS handshake failed: …`, `401 Unauthorized: it does not accept <identity>`, …
pub fn describe_api_error(
    err: &(dyn std::error::Error + 'static),
    endpoint: &ApiEndpoint,
) -> String {
    let mut chain: Vec<&(dyn std::error::Error + 'static)> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        chain.push(e);
        next = e.source();
    }
    for e in &chain {
        if let Some(kube::Error::Api(status)) = e.downcast_ref::<kube::Error>() {
            return describe_status(status.code, &status.reason, &status.message, endpoint);
        }
        if let Some(kube::runtime::watcher::Error::WatchError(status)) =
            e.downcast_ref::<kube::runtime::watcher::Error>()
        {
            return describe_status(status.code, &status.reason, &status.message, endpoint);
        }
    }
    for e in &chain {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            // TLS failures arrive as io::Errors wrapping io::Errors wrapping the rustls::Error
            // (hyper-rustls, then tokio-rustls), inside rather than as a source.
            if let Some(tls) = wrapped_tls_error(io) {
                return format!("TLS handshake failed: {tls}");
            }
            use std::io::ErrorKind as K;
            let what = match io.kind() {
                K::ConnectionRefused => {
                    Some("connection refused (is the API server up, and is the URL right?)")
                }
                K::TimedOut => Some("connection timed out"),
                K::ConnectionReset => Some("connection reset by the server"),
                K::HostUnreachable | K::NetworkUnreachable => Some("no route to the host"),
                _ => None,
            };
            if let Some(what) = what {
                return what.into();
            }
        }
    }
    let messages: Vec<String> = chain.iter().map(|e| e.to_string()).collect();
    let deepest = messages.last().cloned().unwrap_or_default();
    let all = messages.join(": ").to_lowercase();
    if all.contains("certificate") || all.contains("tls") || all.contains("handshake") {
        return format!("TLS handshake failed: {deepest}");
    }
    if all.contains("dns error") || all.contains("failed to lookup address") {
        return format!("cannot resolve the host name: {deepest}");
    }
    deepest
}

fn wrapped_tls_error(io: &std::io::Error) -> Option<&rustls::Error> {
    let inner = io.get_ref()?;
    if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    wrapped_tls_error(inner.downcast_ref::<std::io::Error>()?)
}

fn describe_status(code: u16, reason: &str, message: &str, endpoint: &ApiEndpoint) -> String {
    let who = &endpoint.identity;
    match code {
        401 => format!(
            "401 Unauthorized: it does not accept {who} (expired, revoked or for another cluster?)"
        ),
        403 => format!("403 Forbidden for {who}: {message}"),
        _ if message.is_empty() => format!("{code} {reason}"),
        _ => format!("{code} {reason}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(dir: &Path, extra: &str) -> PathBuf {
        let path = dir.join("kc");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n{extra}\
                 users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
            ),
        )
        .unwrap();
        path
    }

    #[tokio::test]
    async fn insecure_kubeconfig_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = kubeconfig(dir.path(), "    insecure-skip-tls-verify: true\n");
        let err = config(&Credentials::Kubeconfig(path)).await.unwrap_err();
        assert!(format!("{err:#}").contains("refuses"), "{err:#}");
    }

    #[tokio::test]
    async fn kubeconfig_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = kubeconfig(dir.path(), "");
        let creds = Credentials::Kubeconfig(path.clone());
        let cfg = config(&creds).await.unwrap();
        assert_eq!(cfg.cluster_url.to_string(), "https://127.0.0.1:6443/");
        assert_eq!(
            endpoint(&creds, &cfg),
            ApiEndpoint {
                url: "https://127.0.0.1:6443/".into(),
                identity: format!("a bearer token from {}", path.display()),
            }
        );
    }

    #[tokio::test]
    async fn missing_kubeconfig_is_named_once_without_quoting() {
        let err = config(&Credentials::kubelet(Path::new("/nonexistent-root")))
            .await
            .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "cannot read the kubeconfig /nonexistent-root/var/lib/kubelet/kubeconfig: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn service_account_subject() {
        // header.payload.signature; only the payload is read.
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
            br#"{"iss":"kubernetes/serviceaccount","sub":"system:serviceaccount:openshift-machine-config-operator:machine-config-daemon"}"#,
        );
        assert_eq!(
            token_subject(&format!("eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln\n")).as_deref(),
            Some("system:serviceaccount:openshift-machine-config-operator:machine-config-daemon")
        );
        assert_eq!(token_subject("not-a-jwt"), None);
    }

    #[test]
    fn certificate_subject_is_user_and_groups() {
        // A self-signed kubelet-style client certificate, made with openssl in the test.
        let key =
            openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("O", "system:nodes").unwrap();
        name.append_entry_by_text("CN", "system:node:worker-0")
            .unwrap();
        let name = name.build();
        let mut b = openssl::x509::X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        let serial = openssl::bn::BigNum::from_u32(1)
            .unwrap()
            .to_asn1_integer()
            .unwrap();
        b.set_serial_number(&serial).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.sign(&key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        let pem = b.build().to_pem().unwrap();
        assert_eq!(
            certificate_subject(&pem).as_deref(),
            Some("O=system:nodes, CN=system:node:worker-0")
        );
        assert_eq!(certificate_subject(b"garbage"), None);
    }

    #[test]
    fn api_errors_are_described() {
        let ep = ApiEndpoint {
            url: "https://api:6443/".into(),
            identity: "client certificate CN=system:node:w".into(),
        };
        let status = |code: u16, reason: &str, message: &str| {
            kube::Error::Api(
                kube::core::Status::failure(message, reason)
                    .with_code(code)
                    .boxed(),
            )
        };
        assert_eq!(
            describe_api_error(&status(401, "Unauthorized", "Unauthorized"), &ep),
            "401 Unauthorized: it does not accept client certificate CN=system:node:w (expired, revoked or for another cluster?)"
        );
        assert_eq!(
            describe_api_error(
                &status(
                    403,
                    "Forbidden",
                    "nodes is forbidden: User \"system:node:w\" cannot list resource \"nodes\""
                ),
                &ep
            ),
            "403 Forbidden for client certificate CN=system:node:w: nodes is forbidden: User \"system:node:w\" cannot list resource \"nodes\""
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            describe_api_error(&refused, &ep),
            "connection refused (is the API server up, and is the URL right?)"
        );
        // As hyper-rustls and tokio-rustls nest it.
        let tls = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        assert_eq!(
            describe_api_error(&tls, &ep),
            "TLS handshake failed: invalid peer certificate: UnknownIssuer"
        );
    }
}
