//! A small static-file HTTP/1.1 server on 127.0.0.1, enough for `ostree pull` from an archive repo.
//! GET and HEAD only, one thread per connection, `Connection: close`, no directory listings, and
//! nothing outside the served directory. It counts requests and bytes so a test can show how much an
//! update really transferred.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use anyhow::{Context, Result};

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    not_found: AtomicU64,
    body_bytes: AtomicU64,
}

/// Serves one directory until dropped.
#[derive(Debug)]
pub struct StaticServer {
    port: u16,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

/// What the server has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    pub requests: u64,
    pub not_found: u64,
    pub body_bytes: u64,
}

/// Map a request path to a file under `root`, refusing anything that could leave it.
pub fn resolve(root: &Path, request_path: &str) -> Option<PathBuf> {
    let path = request_path.split(['?', '#']).next()?;
    if !path.starts_with('/') || path.contains('%') || path.contains('\\') {
        return None;
    }
    let rel = Path::new(path.trim_start_matches('/'));
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(root.join(rel))
}

impl StaticServer {
    /// Serve `root` on 127.0.0.1 at a free port.
    pub fn start(root: &Path) -> Result<Self> {
        let listener =
            TcpListener::bind(("127.0.0.1", 0)).context("Binding an HTTP port on 127.0.0.1")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let root = root.to_path_buf();
        let thread = {
            let stop = stop.clone();
            let counters = counters.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let root = root.clone();
                    let counters = counters.clone();
                    std::thread::spawn(move || {
                        if let Err(e) = handle(conn, &root, &counters) {
                            tracing::debug!(error = %e, "http connection ended with an error");
                        }
                    });
                }
            })
        };
        tracing::info!(port, "serving files on 127.0.0.1");
        Ok(Self {
            port,
            stop,
            counters,
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn traffic(&self) -> Traffic {
        Traffic {
            requests: self.counters.requests.load(Ordering::SeqCst),
            not_found: self.counters.not_found.load(Ordering::SeqCst),
            body_bytes: self.counters.body_bytes.load(Ordering::SeqCst),
        }
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(conn: TcpStream, root: &Path, counters: &Counters) -> Result<()> {
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers; the server needs none of them.
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    counters.requests.fetch_add(1, Ordering::SeqCst);
    let mut out = conn;
    if method != "GET" && method != "HEAD" {
        write!(
            out,
            "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return Ok(());
    }
    let file = resolve(root, target)
        .filter(|p| p.is_file())
        .and_then(|p| File::open(p).ok());
    let Some(mut file) = file else {
        counters.not_found.fetch_add(1, Ordering::SeqCst);
        write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return Ok(());
    };
    let len = file.metadata()?.len();
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )?;
    if method == "GET" {
        let sent = std::io::copy(&mut file, &mut out)?;
        counters.body_bytes.fetch_add(sent, Ordering::SeqCst);
    }
    out.flush()?;
    let _ = out.shutdown(Shutdown::Write);
    // Let the client close first so it sees the whole body.
    let _ = reader.read(&mut [0u8; 64]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(port: u16, request: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_files_and_counts_bytes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("refs/heads")).unwrap();
        std::fs::write(dir.path().join("refs/heads/main"), "abc\n").unwrap();
        let server = StaticServer::start(dir.path()).unwrap();
        let resp = get(
            server.port(),
            "GET /refs/heads/main HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
        assert!(resp.ends_with("\r\n\r\nabc\n"), "{resp}");
        let head = get(server.port(), "HEAD /refs/heads/main HTTP/1.1\r\n\r\n");
        assert!(head.contains("Content-Length: 4") && !head.ends_with("abc\n"));
        assert_eq!(
            server.traffic(),
            Traffic {
                requests: 2,
                not_found: 0,
                body_bytes: 4
            }
        );
    }

    #[test]
    fn refuses_escapes_directories_missing_files_and_other_methods() {
        let outer = tempfile::tempdir().unwrap();
        std::fs::write(outer.path().join("secret"), "no").unwrap();
        let root = outer.path().join("root");
        std::fs::create_dir_all(root.join("objects")).unwrap();
        let server = StaticServer::start(&root).unwrap();
        for path in [
            "/../secret",
            "/objects/../../secret",
            "/%2e%2e/secret",
            "/objects",
            "/missing",
        ] {
            let resp = get(server.port(), &format!("GET {path} HTTP/1.1\r\n\r\n"));
            assert!(resp.starts_with("HTTP/1.1 404"), "{path}: {resp}");
        }
        let resp = get(
            server.port(),
            "PUT /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(resp.starts_with("HTTP/1.1 405"), "{resp}");
        assert!(!root.join("x").exists(), "nothing is written by a request");
    }

    #[test]
    fn resolve_keeps_paths_inside_the_root() {
        let root = Path::new("/srv/repo");
        assert_eq!(
            resolve(root, "/objects/ab/cd.filez?x=1"),
            Some(PathBuf::from("/srv/repo/objects/ab/cd.filez"))
        );
        assert_eq!(resolve(root, "/a/../b"), None);
        assert_eq!(resolve(root, "relative"), None);
        assert_eq!(
            resolve(root, "/a/./b"),
            Some(PathBuf::from("/srv/repo/a/b"))
        );
    }
}
