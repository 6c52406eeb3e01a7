//! [`DelayProxy`]: a user-space TCP proxy that emulates a WAN link by
//! delaying every chunk it forwards by a fixed time, in each direction.
//!
//! Every chunk read from one side is written to the other side `delay` after
//! it was read, in order. Nothing is throttled: reading never waits for the
//! delayed writes (the chunks in flight are buffered without a bound), so the
//! link has the added latency and no bandwidth limit of its own. A round trip
//! through the proxy therefore costs `2 * delay` more than without it.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use tcf_tests::proxy::DelayProxy;
//! let proxy = DelayProxy::start("127.0.0.1:3301", Duration::from_millis(30)).await?;
//! println!("connect to {} instead", proxy.addr());
//! # Ok(()) }
//! ```

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::mpsc,
    task::{JoinHandle, JoinSet},
    time::Instant,
};

use crate::PortLease;

/// Size of one read from a socket.
const READ_BYTES: usize = 64 * 1024;

/// A running delaying proxy; dropping it closes the listener and every
/// proxied connection.
#[derive(Debug)]
pub struct DelayProxy {
    addr: String,
    upstream: String,
    delay: Duration,
    forwarded: Arc<AtomicU64>,
    cut: Arc<AtomicBool>,
    task: JoinHandle<()>,
    _port: PortLease,
}

impl DelayProxy {
    /// Listens on a fresh loopback port and forwards every accepted
    /// connection to `upstream` (`host:port`), adding `delay` each way.
    pub async fn start(upstream: &str, delay: Duration) -> anyhow::Result<Self> {
        let port = PortLease::allocate()?;
        let addr = format!("127.0.0.1:{}", port.port());
        let listener = TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding the delay proxy on {addr}"))?;
        let forwarded = Arc::new(AtomicU64::new(0));
        let cut = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(accept_loop(
            listener,
            upstream.to_owned(),
            delay,
            Arc::clone(&forwarded),
            Arc::clone(&cut),
        ));
        tracing::info!(addr, upstream, ?delay, "delay proxy listening");
        Ok(Self {
            addr,
            upstream: upstream.to_owned(),
            delay,
            forwarded,
            cut,
            task,
            _port: port,
        })
    }

    /// Cuts the link like a network partition (`true`): bytes in flight and
    /// new bytes are dropped, new connections are accepted and left hanging;
    /// nothing is closed. `false` heals it for new connections.
    pub fn cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }

    /// `127.0.0.1:PORT` to connect to instead of the upstream.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The address every connection is forwarded to.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The delay added in each direction.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Bytes forwarded so far, both directions together.
    pub fn bytes_forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        // The accept loop owns the connection tasks (a `JoinSet`), so
        // aborting it closes every proxied connection too.
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: String,
    delay: Duration,
    forwarded: Arc<AtomicU64>,
    cut: Arc<AtomicBool>,
) {
    let mut connections = JoinSet::new();
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "delay proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Reap finished connections so the set does not grow forever.
        while connections.try_join_next().is_some() {}
        let upstream = upstream.clone();
        let forwarded = Arc::clone(&forwarded);
        let cut = Arc::clone(&cut);
        connections.spawn(async move {
            if cut.load(Ordering::SeqCst) {
                // Hang like a partitioned peer: hold the socket, say nothing.
                while cut.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                drop(client);
                return;
            }
            let server = match TcpStream::connect(&upstream).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(%peer, upstream, error = %e, "delay proxy: upstream refused");
                    return;
                }
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::join!(
                pipe(cr, sw, delay, Arc::clone(&forwarded), Arc::clone(&cut)),
                pipe(sr, cw, delay, forwarded, cut),
            );
            tracing::debug!(%peer, "delay proxy: connection closed");
        });
    }
}

/// Forwards `from` to `to`, each chunk `delay` after it was read. The end of
/// `from` is passed on (as a write shutdown) after the last delayed chunk.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
    forwarded: Arc<AtomicU64>,
    cut: Arc<AtomicBool>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        loop {
            let mut buf = vec![0u8; READ_BYTES];
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send((Instant::now() + delay, buf)).is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping `tx` ends the writer once the queued chunks are out.
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if cut.load(Ordering::SeqCst) {
                continue;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            forwarded.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
