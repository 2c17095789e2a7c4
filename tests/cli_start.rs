//! `machine-config-daemon start` before it reaches its Node, as an admin meets it: the command line
//! and credentials it refuses (and how), the startup line, and an API server it cannot use — the URL
//! and the cause in the log (connection refused, TLS, 401/403 with the identity), retries that back
//! off, `/healthz` saying so, and plain (uncoloured) logs when stderr is not a terminal.
//!
//! The daemon never gets past waiting for its Node here, so it needs no sysroot, D-Bus or systemd; it
//! only talks to 127.0.0.1 (kube-sim, or a port nobody listens on).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kube_sim::{FaultRule, KubeSim, SimOptions};

const BIN: &str = env!("CARGO_BIN_EXE_machine-config-daemon");
const NO_CREDENTIALS: &str = "error: no credentials for the API server: no --kubeconfig was given, this is not a pod (KUBERNETES_SERVICE_HOST is not set, so no service account), and the kubelet's kubeconfig ROOT/var/lib/kubelet/kubeconfig does not exist (yet: the kubelet writes it when it joins the cluster). Wait for the kubelet to join (the service retries every 10 s), or give --kubeconfig FILE in MCD_ARGS (/etc/sysconfig/machine-config-daemon or /etc/default/machine-config-daemon)\n";

fn start_cmd(root: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("start")
        .arg("--root")
        .arg(root)
        .arg("--sysroot")
        .arg(root)
        .args(extra)
        .env_remove("MCD_LOG")
        .env_remove("NODE_NAME")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("NO_COLOR")
        // Set, but naming another stream than the daemon's stderr (a pipe): logs must not go to journald.
        .env("JOURNAL_STREAM", "1:1");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run the daemon")
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn an_invalid_node_name_is_refused_before_anything_runs() {
    let root = tempfile::tempdir().unwrap();
    let o = run(start_cmd(root.path(), &[]).env("NODE_NAME", "Foo_Bar"));
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert_eq!(
        err(&o),
        "--node-name (or NODE_NAME): \"Foo_Bar\" is not a valid node name: it contains 'F' (upper case); a node name is a lowercase DNS-1123 subdomain: letters a-z, digits, '-' and '.', starting and ending with a letter or digit\n"
    );
    let o = run(&mut start_cmd(root.path(), &["--node-name", "worker-0."]));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).starts_with("--node-name (or NODE_NAME): \"worker-0.\" is not a valid node name: the part \"\" does not start and end with a letter or digit"),
        "{}",
        err(&o)
    );
}

#[test]
fn a_zero_or_unreadable_health_deadline_is_refused_before_anything_runs() {
    let root = tempfile::tempdir().unwrap();
    for (flag, value, says) in [
        (
            "--health-ready-timeout",
            "0s",
            "is zero; give a duration of at least 1s",
        ),
        ("--health-check-timeout", "soon", "soon"),
    ] {
        let o = run(&mut start_cmd(
            root.path(),
            &["--node-name", "worker-0", flag, value],
        ));
        assert_eq!(o.status.code(), Some(2), "{}", err(&o));
        assert!(
            err(&o).contains(flag) && err(&o).contains(says) && err(&o).lines().count() <= 4,
            "{}",
            err(&o)
        );
        assert_eq!(
            std::fs::read_dir(root.path()).unwrap().count(),
            0,
            "something was written into the node root"
        );
    }
}

#[test]
fn missing_credentials_say_what_was_tried_and_what_to_do() {
    let root = tempfile::tempdir().unwrap();
    let o = run(&mut start_cmd(
        root.path(),
        &["--node-name", "worker-0", "--metrics-listen", "127.0.0.1:0"],
    ));
    // Exit 1: the kubelet may still write its kubeconfig, so the service retries.
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert_eq!(
        err(&o),
        NO_CREDENTIALS.replace("ROOT", &root.path().display().to_string())
    );
    // An explicit --kubeconfig that is not there is a command line error: exit 2, not restarted.
    let o = run(&mut start_cmd(
        root.path(),
        &["--node-name", "worker-0", "--kubeconfig", "/nonexistent/kc"],
    ));
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(err(&o), "--kubeconfig: /nonexistent/kc: does not exist\n");
}

fn kubeconfig(dir: &Path, server: &str, token: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    path
}

/// A running daemon; killed (it is ours) and its stderr collected when the test is done with it.
struct Daemon {
    child: Child,
    metrics: u16,
}

impl Daemon {
    fn start(root: &Path, kubeconfig: &Path) -> Daemon {
        let metrics = testbed::registry::free_port().unwrap();
        let child = start_cmd(
            root,
            &[
                "--node-name",
                "worker-0",
                "--metrics-listen",
                &format!("127.0.0.1:{metrics}"),
            ],
        )
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        Daemon { child, metrics }
    }

    /// `/healthz`: status code and body.
    fn healthz(&self) -> Option<(u16, String)> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n")?.1.to_string();
        Some((code, body))
    }

    /// Poll `/healthz` until `pred` holds (at most 60 s).
    fn wait_health(&self, pred: impl Fn(u16, &str) -> bool) -> (u16, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = None;
        while Instant::now() < deadline {
            if let Some((code, body)) = self.healthz() {
                if pred(code, &body) {
                    return (code, body);
                }
                last = Some((code, body));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("/healthz never got there; last answer: {last:?}");
    }

    /// Stop it and return what it logged, each line without its timestamp.
    fn stop(mut self) -> Vec<String> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let mut text = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert!(
            !text.contains('\u{1b}'),
            "ANSI escapes in piped logs:\n{text}"
        );
        text.lines()
            .map(|l| {
                l.split_once(' ')
                    .map_or(l, |(_, rest)| rest)
                    .trim()
                    .to_string()
            })
            .collect()
    }
}

fn problem_lines(lines: &[String], prefix: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.starts_with(prefix))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_api_server_is_named_backed_off_and_on_healthz() {
    let work = tempfile::tempdir().unwrap();
    let port = testbed::registry::free_port().unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    let kc = kubeconfig(work.path(), &format!("http://127.0.0.1:{port}"), "t0ken");
    let daemon = Daemon::start(work.path(), &kc);
    let refused = format!(
        "cannot reach the API server at {url}: connection refused (is the API server up, and is the URL right?)"
    );
    let (code, body) = daemon.wait_health(|_, b| b.starts_with("cannot reach"));
    assert_eq!(
        (code, body.as_str()),
        (503, format!("{refused}\n").as_str())
    );
    // Let it retry a few times: 1 s, 2 s, 4 s apart.
    tokio::time::sleep(Duration::from_secs(8)).await;

    // The API server comes up (without our Node yet): the daemon notices within its next retry.
    let sim = KubeSim::start(SimOptions {
        port,
        ..Default::default()
    })
    .await
    .unwrap();
    let (code, body) = daemon.wait_health(|_, b| !b.starts_with("cannot reach"));
    assert_eq!(
        (code, body.as_str()),
        (503, "the update loop has not run recently\n")
    );
    let daemon_metrics = daemon.metrics;
    let lines = daemon.stop();
    sim.shutdown().await;

    assert_eq!(
        lines[0],
        format!(
            "INFO machine-config-daemon {} starting: node worker-0, API server {url} (as a bearer token from {}), root {root}, sysroot {root}, backend ostree, drain mode self, /metrics and /healthz on 127.0.0.1:{} node=worker-0",
            env!("CARGO_PKG_VERSION"),
            kc.display(),
            daemon_metrics,
            root = work.path().display(),
        ),
        "{lines:#?}"
    );
    let warnings = problem_lines(&lines, "WARN cannot reach");
    let delays: Vec<String> = warnings
        .iter()
        .map(|l| {
            assert!(
                l.starts_with(&format!("WARN {refused}; retrying in ")),
                "{l}"
            );
            l.rsplit_once("retrying in ").unwrap().1.to_string()
        })
        .collect();
    assert!(
        delays.len() >= 4
            && delays[..4]
                == [
                    "1 s node=worker-0",
                    "2 s node=worker-0",
                    "4 s node=worker-0",
                    "8 s node=worker-0"
                ],
        "{lines:#?}"
    );
    assert!(
        lines.contains(&format!(
            "INFO the API server at {url} answers again node=worker-0"
        )),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("client error (Connect)")),
        "kube-client's own error lines leak: {lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_name_the_identity() {
    let work = tempfile::tempdir().unwrap();
    let sim = KubeSim::start(SimOptions {
        token: Some("right".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = format!("{}/", sim.url());
    let kc = kubeconfig(work.path(), &sim.url(), "wrong");
    let daemon = Daemon::start(work.path(), &kc);
    let (code, body) = daemon.wait_health(|_, b| b.starts_with("cannot reach"));
    assert_eq!(code, 503);
    assert_eq!(
        body,
        format!(
            "cannot reach the API server at {url}: 401 Unauthorized: it does not accept a bearer token from {} (expired, revoked or for another cluster?)\n",
            kc.display()
        )
    );
    daemon.stop();

    // 403: the credentials are good, the RBAC is not.
    let kc = kubeconfig(work.path(), &sim.url(), "right");
    sim.inject_fault(FaultRule {
        verb: Some("list".into()),
        path: Some("/nodes".into()),
        status: 403,
        count: 1000,
        message: Some(
            "nodes is forbidden: User \"system:node:worker-0\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
                .into(),
        ),
    });
    let daemon = Daemon::start(work.path(), &kc);
    let (_, body) = daemon.wait_health(|_, b| b.starts_with("cannot reach"));
    let forbidden = format!(
        "cannot reach the API server at {url}: 403 Forbidden for a bearer token from {}: nodes is forbidden: User \"system:node:worker-0\" cannot list resource \"nodes\" in API group \"\" at the cluster scope",
        kc.display()
    );
    assert_eq!(body, format!("{forbidden}\n"));
    // Other requests (a GET of the node) would succeed: the state must not flap, and retries back off.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        daemon.healthz().map(|(_, b)| b),
        Some(format!("{forbidden}\n"))
    );
    let lines = daemon.stop();
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("retrying in 2 s node=worker-0"))
            && !lines.iter().any(|l| l.contains("answers again")),
        "{lines:#?}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_failure_is_called_one() {
    let work = tempfile::tempdir().unwrap();
    // kube-sim speaks plain HTTP: an https:// URL makes the TLS handshake fail.
    let sim = KubeSim::start(SimOptions::default()).await.unwrap();
    let https = sim.url().replace("http://", "https://");
    let kc = kubeconfig(work.path(), &https, "t");
    let daemon = Daemon::start(work.path(), &kc);
    let (code, body) = daemon.wait_health(|_, b| b.starts_with("cannot reach"));
    assert_eq!(code, 503);
    assert!(
        body.starts_with(&format!(
            "cannot reach the API server at {https}/: TLS handshake failed: "
        )),
        "{body}"
    );
    daemon.stop();
    sim.shutdown().await;
}

/// On a terminal the service's log is coloured; the pipes above showed it is not elsewhere.
#[test]
fn colour_only_on_a_terminal() {
    let work = tempfile::tempdir().unwrap();
    let port = testbed::registry::free_port().unwrap();
    let kc = kubeconfig(work.path(), &format!("http://127.0.0.1:{port}"), "t");
    // `script` gives the daemon a pseudo-terminal; `timeout` ends it after its first log lines.
    let command = format!(
        "timeout 3 {BIN} start --root {0} --sysroot {0} --node-name worker-0 --metrics-listen 127.0.0.1:0 --kubeconfig {1}",
        work.path().display(),
        kc.display()
    );
    let o = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("NO_COLOR")
        .env_remove("MCD_LOG")
        .env_remove("JOURNAL_STREAM")
        .output()
        .expect("script (util-linux) runs");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("starting: node worker-0"), "{text}");
    assert!(
        text.contains("\u{1b}["),
        "no colour on a terminal: {text:?}"
    );
    // NO_COLOR turns it off there too.
    let o = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("NO_COLOR", "1")
        .env_remove("MCD_LOG")
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("starting: node worker-0") && !text.contains('\u{1b}'),
        "{text:?}"
    );
}
