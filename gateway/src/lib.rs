//! `tcf-gateway`: reads every replicaset of the active (source) cluster as an
//! anonymous replica and serves its transactions over gRPC with mutual TLS.
//!
//! Guarantees (see `docs/gateway.md` and `docs/stream.md`):
//! * per replicaset, transactions are sent in source commit order, whole,
//!   and only after they are durable on the source (synchronous ones after
//!   their CONFIRM; a ROLLBACK drops them);
//! * acks to the source carry only what the destination reported durably
//!   committed;
//! * transactions written by a tcf destination (the progress mark) are never
//!   shipped, so two-way pairs do not loop;
//! * what is skipped still moves the processed watermark reported to the
//!   destination.

mod bgfile;
mod choose;
mod classify;
pub mod config;
mod flow;
mod http;
mod identity;
mod keepalive;
mod metrics;
mod pipeline;
mod queue;
mod release;
#[cfg(test)]
mod replay_tests;
mod service;
mod spool;
pub mod status;
mod syncgate;
mod txbuf;
mod upstream;
mod walk;

use std::sync::Arc;

pub use config::Config;
pub use identity::subscriber_uuid;
pub use service::{Gateway, Service};
pub use tcf_common::control::TermError;
pub use tcf_iproto::schema::TCF_SPACE_PREFIX;
use tcf_proto::v1::replication_server::ReplicationServer;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// How long connections may take to close after shutdown begins.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
/// HTTP/2 PING interval on idle gRPC connections.
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// A connection whose PING is not answered within this is closed.
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Why the gateway stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The metrics recorder could not be installed.
    #[error("metrics: {0}")]
    Metrics(String),
    /// The gRPC port could not be bound.
    #[error("cannot listen for gRPC on {addr}: {source}")]
    GrpcBind {
        /// Listen address.
        addr: std::net::SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server on {addr}")]
    Grpc {
        /// Listen address.
        addr: std::net::SocketAddr,
        /// Cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// The HTTP server failed.
    #[error(transparent)]
    Http(#[from] tcf_common::http::HttpError),
}

/// Runs the gateway until `shutdown` fires (SIGINT/SIGTERM in the binary).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let mut labels = config.metrics_labels.clone();
    labels.insert(config::ALIAS_LABEL.into(), config.alias.clone());
    let handle = tcf_common::metrics::install_prometheus_with_labels(&labels)
        .map_err(|e| RunError::Metrics(e.to_string()))?;
    tcf_common::metrics::spawn_upkeep(handle.clone());
    let config = Arc::new(config);
    let gw = Arc::new(Gateway::new(Arc::clone(&config)));
    // Both ports are bound before either serves: an answering HTTP port
    // means the gRPC port accepts too.
    let grpc_listener = tokio::net::TcpListener::bind(config.grpc_listen)
        .await
        .map_err(|source| RunError::GrpcBind {
            addr: config.grpc_listen,
            source,
        })?;
    let http_listener = tcf_common::http::bind(config.http_listen).await?;
    let router = http::router(Arc::clone(&gw), handle);
    let http = tokio::spawn(tcf_common::http::serve_listener(
        http_listener,
        router,
        shutdown.clone().cancelled_owned(),
    ));
    // Streams are endless: end them first so that the gRPC server can drain.
    let (gw_stop, stop_signal) = (Arc::clone(&gw), shutdown.clone());
    tokio::spawn(async move {
        stop_signal.cancelled().await;
        let _ = gw_stop.set_running(false, None, false);
    });
    info!(
        alias = %config.alias,
        cluster = %config.cluster,
        grpc = %config.grpc_listen,
        http = %config.http_listen,
        tls = config.tls.is_some(),
        "tcf-gateway serving"
    );
    let limits = tcf_common::listen::GrpcLimits::DEFAULT;
    // HTTP/2 keepalive: a destination that vanished without closing is
    // noticed (and its slot under the cap freed) within about 30 s.
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(ReplicationServer::new(Service(Arc::clone(&gw))));
    let stop = shutdown.clone();
    // TLS is done by the listener layer (bounded handshake, capped), not by
    // tonic: its built-in TLS has no handshake timeout.
    let grpc: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> = match &config.tls {
        Some(tls) => Box::pin(server.serve_with_incoming_shutdown(
            tcf_common::listen::tls_incoming(
                grpc_listener,
                Arc::clone(&tls.rustls),
                limits,
                stop.clone(),
            ),
            stop.cancelled_owned(),
        )),
        None => Box::pin(server.serve_with_incoming_shutdown(
            tcf_common::listen::plain_incoming(grpc_listener, limits, stop.clone()),
            stop.cancelled_owned(),
        )),
    };
    // Graceful, but bounded: a peer that keeps its connection open must not
    // hold the process after the streams have ended.
    let drain = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let result = tokio::select! {
        r = grpc => r.map_err(|source| RunError::Grpc { addr: config.grpc_listen, source }),
        () = drain => Ok(()),
    };
    shutdown.cancel();
    let _ = gw.set_running(false, None, false);
    if let Ok(Err(e)) = http.await {
        return Err(RunError::Http(e));
    }
    result
}
