//! Incoming connection streams for tonic's `serve_with_incoming_shutdown`:
//! capped, with a bounded TLS handshake.

use std::{
    fmt,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    time::Sleep,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tracing::{debug, info};

use super::accept::{Gate, Slot};

/// The limits of a gRPC listener. [`GrpcLimits::default`] is what the
/// gateway uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcLimits {
    /// Most connections held at once (TLS handshakes in progress included);
    /// clamped to the process's open-file budget. Default 128.
    pub max_connections: usize,
    /// The TLS handshake must complete within this. Default 10 s.
    pub handshake_timeout: Duration,
}

impl GrpcLimits {
    /// The defaults.
    pub const DEFAULT: GrpcLimits = GrpcLimits {
        max_connections: 128,
        handshake_timeout: Duration::from_secs(10),
    };
}

impl Default for GrpcLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// An accepted connection holding its [`Slot`] under the cap until dropped.
/// Implements tonic's [`Connected`] like the stream inside it, so
/// `Request::peer_certs()` works for `Guarded<TlsStream<TcpStream>>`.
///
/// The client's first bytes after the TLS handshake (the HTTP/2 preface,
/// which real clients send at once) must arrive within the handshake
/// timeout too: a client that completes TLS and then says nothing does not
/// keep its place.
pub struct Guarded<T> {
    inner: T,
    _slot: Slot,
    first_read: Option<FirstRead>,
}

/// The deadline of a connection's first bytes: (timer, the limit, the
/// listener to count the timeout on, the peer).
type FirstRead = (Pin<Box<Sleep>>, Duration, Arc<Gate>, SocketAddr);

impl<T: fmt::Debug> fmt::Debug for Guarded<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<T> Guarded<T> {
    /// The stream inside.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: Connected> Connected for Guarded<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let Some((deadline, after, gate, peer)) = &mut this.first_read else {
            return polled;
        };
        match polled {
            Poll::Ready(Ok(())) if buf.filled().len() == before => Poll::Ready(Ok(())),
            Poll::Ready(r) => {
                this.first_read = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                if deadline.as_mut().poll(cx).is_ready() {
                    gate.timed_out("handshake", *peer, *after);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no data within {after:?} of the connection"),
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The stream type [`tls_incoming`] and [`plain_incoming`] return.
type Incoming<T> = ReceiverStream<Result<Guarded<T>, io::Error>>;

/// Accepts on `listener` under `limits` and completes each TLS handshake
/// with `tls` (concurrently, each bounded by `limits.handshake_timeout`; a
/// client that fails or times out is dropped and counted); yields the
/// finished streams for `serve_with_incoming_shutdown`. Accepting stops when
/// `stop` fires or the stream is dropped. Client certificates are checked by
/// `tls` (the gateway's config requires them).
pub fn tls_incoming(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: GrpcLimits,
    stop: CancellationToken,
) -> impl Stream<Item = Result<Guarded<TlsStream<TcpStream>>, io::Error>> + Send + 'static {
    let acceptor = TlsAcceptor::from(tls);
    incoming(listener, limits, stop, true, move |tcp| {
        let acceptor = acceptor.clone();
        async move { acceptor.accept(tcp).await }
    })
}

/// [`tls_incoming`] without TLS (the gateway's `insecure: true`).
pub fn plain_incoming(
    listener: TcpListener,
    limits: GrpcLimits,
    stop: CancellationToken,
) -> impl Stream<Item = Result<Guarded<TcpStream>, io::Error>> + Send + 'static {
    incoming(listener, limits, stop, false, |tcp| async move {
        Ok::<_, io::Error>(tcp)
    })
}

fn incoming<T, H, F>(
    listener: TcpListener,
    limits: GrpcLimits,
    stop: CancellationToken,
    tls: bool,
    handshake: H,
) -> Incoming<T>
where
    T: Send + 'static,
    H: Fn(TcpStream) -> F + Send + Sync + 'static,
    F: Future<Output = io::Result<T>> + Send + 'static,
{
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let gate = Arc::new(Gate::new("grpc", addr, limits.max_connections));
        info!(%addr, tls, handshake_timeout = ?limits.handshake_timeout, "gRPC listener accepting");
        let accept = gate.accept_loop(&listener, |tcp, peer, slot| {
            let (gate, tx, stop) = (Arc::clone(&gate), tx.clone(), stop.clone());
            let started = tokio::time::Instant::now();
            let work = handshake(tcp);
            tokio::spawn(async move {
                let done = tokio::select! {
                    r = tokio::time::timeout(limits.handshake_timeout, work) => r,
                    () = stop.cancelled() => return,
                };
                match done {
                    Ok(Ok(inner)) => {
                        let deadline =
                            Box::pin(tokio::time::sleep_until(started + limits.handshake_timeout));
                        let first_read = Some((deadline, limits.handshake_timeout, gate, peer));
                        let _ = tx
                            .send(Ok(Guarded {
                                inner,
                                _slot: slot,
                                first_read,
                            }))
                            .await;
                    }
                    Ok(Err(e)) => debug!(%peer, "gRPC TLS handshake failed: {e}"),
                    Err(_) => gate.timed_out("handshake", peer, limits.handshake_timeout),
                }
            });
        });
        tokio::select! {
            () = accept => {}
            () = stop.cancelled() => {}
            () = tx.closed() => {}
        }
        info!(%addr, "gRPC listener closed");
    });
    ReceiverStream::new(rx)
}
