//! Serving an axum router with a bounded graceful shutdown, through the
//! bounded listener layer ([`crate::listen`]).

use std::{future::Future, io, net::SocketAddr};

use axum::Router;
use tokio::net::TcpListener;

use crate::listen::HttpLimits;

/// Why an HTTP server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// Binding the listen address failed (in use, not local, no permission).
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The server failed after it started (not produced since the listener
    /// layer retries accept errors; kept for callers matching on it).
    #[error("HTTP server on {addr} failed: {source}")]
    Serve {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Binds `addr`; the error names the address. Bind port 0 and read
/// `local_addr()` to get a free port (tests).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// Binds `addr` and serves `router` until `shutdown` completes, then stops
/// accepting, lets in-flight requests finish for at most 2 s, drops every
/// connection and returns. Limits: [`HttpLimits::DEFAULT`] (connection cap,
/// header, body and idle timeouts; see [`crate::listen`]). Handlers may use
/// `ConnectInfo<SocketAddr>` for the client address.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    let listener = bind(addr).await?;
    serve_listener(listener, router, shutdown).await
}

/// [`serve`] on an already bound listener.
pub async fn serve_listener(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    crate::listen::serve_http(listener, None, router, HttpLimits::DEFAULT, shutdown).await;
    Ok(())
}

/// Completes on SIGINT or SIGTERM (Ctrl-C elsewhere): the shutdown future
/// for [`serve`] and the binaries' main loops.
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!("cannot watch SIGTERM ({e}); waiting for SIGINT only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
