//! Serving an axum router over HTTP/1.1 (plain or TLS) with hyper's
//! connection builder: caps, timeouts and a bounded shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, extract::ConnectInfo};
use hyper::{Request, body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, info};

use super::{accept::Gate, body::TimedBody};

/// The limits of an HTTP listener. [`HttpLimits::default`] is what the
/// binaries use (no config keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Most connections held at once (TLS handshakes in progress included);
    /// clamped to the process's open-file budget. Default 512.
    pub max_connections: usize,
    /// A request head (request line and headers) must arrive whole within
    /// this, counted from the moment the connection waits for it: right after
    /// accept (or the TLS handshake), and after each response on a
    /// keep-alive connection, so this also closes idle keep-alive
    /// connections. Default 10 s.
    pub header_timeout: Duration,
    /// A request body must arrive whole within this after its head.
    /// Default 10 s.
    pub body_timeout: Duration,
    /// The TLS handshake must complete within this. Default 10 s.
    pub handshake_timeout: Duration,
    /// On shutdown, in-flight requests get this long to finish before every
    /// connection is dropped. Default 2 s.
    pub shutdown_grace: Duration,
    /// The largest request head, bytes (hyper's read buffer). Default 64 KiB.
    pub max_header_bytes: usize,
}

impl HttpLimits {
    /// The defaults.
    pub const DEFAULT: HttpLimits = HttpLimits {
        max_connections: 512,
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(10),
        handshake_timeout: Duration::from_secs(10),
        shutdown_grace: Duration::from_secs(2),
        max_header_bytes: 64 * 1024,
    };
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Serves `router` on `listener` (over TLS when `tls` is given) within
/// `limits` until `shutdown` completes; then closes the listening socket,
/// lets in-flight requests finish for at most `limits.shutdown_grace` and
/// drops every connection before returning. Only HTTP/1.1 is spoken.
/// Handlers may use `ConnectInfo<SocketAddr>`.
///
/// Never fails once started: accept errors are retried with backoff (see
/// the [module docs](super)).
pub async fn serve_http(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let gate = Arc::new(Gate::new("http", addr, limits.max_connections));
    info!(
        %addr,
        tls = tls.is_some(),
        header_timeout = ?limits.header_timeout,
        body_timeout = ?limits.body_timeout,
        "HTTP server listening"
    );
    let stop = CancellationToken::new();
    let mut connections = JoinSet::new();
    {
        let accept = gate.accept_loop(&listener, |tcp, peer, slot| {
            while connections.try_join_next().is_some() {}
            let (gate, router, tls, stop) =
                (Arc::clone(&gate), router.clone(), tls.clone(), stop.clone());
            connections.spawn(async move {
                let _slot = slot;
                connection(tcp, peer, tls, router, limits, &gate, &stop).await;
            });
        });
        tokio::select! {
            () = accept => {}
            () = shutdown => {}
        }
    }
    drop(listener);
    stop.cancel();
    let open = connections.len();
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        info!(
            %addr,
            "HTTP server stopping: {} of {open} connections still open after {:?}, dropped",
            connections.len(),
            limits.shutdown_grace
        );
        connections.shutdown().await;
    }
    info!(%addr, "HTTP server stopped");
}

/// One connection: the TLS handshake (bounded), then HTTP/1.1 until the
/// client or a timeout closes it; on `stop`, a graceful close (the request
/// in flight finishes, an idle connection closes now).
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: HttpLimits,
    gate: &Gate,
    stop: &CancellationToken,
) {
    let Some(tls) = tls else {
        return http1(tcp, peer, router, limits, gate, stop).await;
    };
    match tokio::time::timeout(limits.handshake_timeout, tls.accept(tcp)).await {
        Ok(Ok(stream)) => http1(stream, peer, router, limits, gate, stop).await,
        Ok(Err(e)) => debug!(%peer, "TLS handshake failed: {e}"),
        Err(_) => gate.timed_out("handshake", peer, limits.handshake_timeout),
    }
}

async fn http1<IO>(
    io: IO,
    peer: SocketAddr,
    router: Router,
    limits: HttpLimits,
    gate: &Gate,
    stop: &CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let listener = gate.listener;
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let mut request = request.map(|body| TimedBody::new(body, limits.body_timeout, listener));
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    match result {
        Ok(()) => {}
        Err(e) if e.is_timeout() => gate.timed_out("header", peer, limits.header_timeout),
        Err(e) => debug!(%peer, "HTTP connection ended: {e}"),
    }
}
