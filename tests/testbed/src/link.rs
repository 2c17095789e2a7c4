//! A network link model in front of a local server (the registry): a TCP proxy on 127.0.0.1 that gives
//! each connection a byte rate limit (server to client, like a CDN edge per connection) and adds a
//! latency to each new connection and each request. A fault can reset every connection once a number
//! of bytes has crossed, for "the network failed midway" tests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The link's behaviour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkModel {
    /// Bytes per second from the server to the client, for each connection.
    pub rate_bytes_per_sec: u64,
    /// Added before a connection is made and before each request is passed on.
    pub latency: Duration,
    /// Reset every connection once this many bytes (all connections together) went to clients.
    pub cut_after_bytes: Option<u64>,
}

impl LinkModel {
    /// A WAN link to a CDN edge: 25 MB/s per connection, 20 ms per request.
    pub fn wan() -> Self {
        Self {
            rate_bytes_per_sec: 25_000_000,
            latency: Duration::from_millis(20),
            cut_after_bytes: None,
        }
    }

    /// How the report prints it.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{:.0} MB/s per connection, {} ms per request and per new connection",
            self.rate_bytes_per_sec as f64 / 1e6,
            self.latency.as_millis()
        );
        if let Some(cut) = self.cut_after_bytes {
            s.push_str(&format!(", connections reset after {cut} B"));
        }
        s
    }
}

/// Counters of what crossed the link.
#[derive(Debug, Default)]
pub struct LinkStats {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    /// Bytes from the server to clients.
    pub bytes_down: AtomicU64,
}

/// The running proxy; stops on drop.
#[derive(Debug)]
pub struct Link {
    addr: SocketAddr,
    model: Arc<Mutex<LinkModel>>,
    stats: Arc<LinkStats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Link {
    /// Listen on a free port of 127.0.0.1 and forward to `upstream` (e.g. a registry's `127.0.0.1:port`).
    pub fn start(upstream: &str, model: LinkModel) -> Result<Self> {
        let upstream: SocketAddr = upstream.parse().context("upstream address")?;
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("Binding the link proxy")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let model = Arc::new(Mutex::new(model));
        let stats = Arc::new(LinkStats::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (m, s) = (model.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("link-model".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("link runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).expect("listener");
                    tokio::select! {
                        _ = accept_loop(listener, upstream, m, s) => {}
                        _ = stopped => {}
                    }
                });
                rt.shutdown_background();
            })?;
        Ok(Self {
            addr,
            model,
            stats,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `127.0.0.1:<port>`: use it where the registry's address would go.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// `127.0.0.1:<port>/<name>:<tag>` through the link.
    pub fn image(&self, name: &str, tag: &str) -> String {
        format!("{}/{name}:{tag}", self.addr())
    }

    /// A `registries.conf` entry marking the link's address as plain HTTP.
    pub fn registries_conf(&self) -> String {
        format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
            self.addr()
        )
    }

    pub fn model(&self) -> LinkModel {
        *self.model.lock().unwrap()
    }

    /// Change the model for new data (e.g. arm a cut), counting the cut from now.
    pub fn set_model(&self, model: LinkModel) {
        *self.model.lock().unwrap() = model;
    }

    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    model: Arc<Mutex<LinkModel>>,
    stats: Arc<LinkStats>,
) {
    while let Ok((client, _)) = listener.accept().await {
        let (model, stats) = (model.clone(), stats.clone());
        tokio::spawn(async move {
            let _ = serve(client, upstream, model, stats).await;
        });
    }
}

async fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    model: Arc<Mutex<LinkModel>>,
    stats: Arc<LinkStats>,
) -> std::io::Result<()> {
    stats.connections.fetch_add(1, Ordering::Relaxed);
    let latency = model.lock().unwrap().latency;
    tokio::time::sleep(latency).await;
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut client_rd, mut client_wr) = client.into_split();
    let (mut server_rd, mut server_wr) = server.into_split();
    // A request starts with the first client bytes after the server has answered something.
    let answered = Arc::new(AtomicBool::new(true));
    let answered_up = answered.clone();
    let (m_up, s_up) = (model.clone(), stats.clone());
    let up = async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = client_rd.read(&mut buf).await?;
            if n == 0 {
                let _ = server_wr.shutdown().await;
                return Ok::<_, std::io::Error>(());
            }
            if answered_up.swap(false, Ordering::SeqCst) {
                s_up.requests.fetch_add(1, Ordering::Relaxed);
                let latency = m_up.lock().unwrap().latency;
                tokio::time::sleep(latency).await;
            }
            server_wr.write_all(&buf[..n]).await?;
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 64 << 10];
        let mut due = Instant::now();
        loop {
            let n = server_rd.read(&mut buf).await?;
            if n == 0 {
                let _ = client_wr.shutdown().await;
                return Ok::<_, std::io::Error>(client_wr);
            }
            answered.store(true, Ordering::SeqCst);
            let LinkModel {
                rate_bytes_per_sec,
                cut_after_bytes,
                ..
            } = *model.lock().unwrap();
            let total = stats.bytes_down.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
            if cut_after_bytes.is_some_and(|cut| total > cut) {
                // Reset (RST, not FIN) the client's connection: what a dropped link looks like.
                #[allow(deprecated)]
                let _ = client_wr.as_ref().set_linger(Some(Duration::ZERO));
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "link cut",
                ));
            }
            // No credit for idle time: at most one chunk goes out ahead of the rate.
            let now = Instant::now();
            if due < now {
                due = now;
            }
            client_wr.write_all(&buf[..n]).await?;
            due += Duration::from_secs_f64(n as f64 / rate_bytes_per_sec.max(1) as f64);
            tokio::time::sleep_until(due).await;
        }
    };
    tokio::pin!(up);
    tokio::pin!(down);
    tokio::select! {
        r = &mut down => {
            if r.is_err() {
                return Ok(());
            }
            let _ = up.await;
        }
        _ = &mut up => {
            let _ = down.await;
        }
    }
    Ok(())
}
