//! The pool of gateways: connect to the first that answers `Describe`,
//! starting after the one that failed last.
//!
//! Each attempt (TCP connect, TLS and HTTP/2 handshakes, the first
//! `Describe`) is bounded as a whole by `connect_timeout`: a gateway that
//! accepts TCP but never completes TLS costs one timeout, is named in the
//! error with the step that did not finish, and the next gateway is tried.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicUsize, Ordering},
    },
    time::Duration,
};

use hyper_util::rt::TokioIo;
use tcf_proto::v1::{self, replication_client::ReplicationClient};
use tonic::transport::{Channel, ClientTlsConfig, Uri};
use tracing::warn;

/// A connected gateway.
pub(crate) struct Connected {
    pub(crate) address: String,
    pub(crate) client: ReplicationClient<Channel>,
    pub(crate) describe: v1::DescribeResponse,
}

/// The step of a connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Opening the TCP connection.
    Tcp = 0,
    /// TLS (when configured) and HTTP/2 handshakes.
    Handshake = 1,
    /// The first `Describe` call.
    Describe = 2,
}

impl Step {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Step::Tcp,
            1 => Step::Handshake,
            _ => Step::Describe,
        }
    }

    fn name(self, tls: bool) -> &'static str {
        match (self, tls) {
            (Step::Tcp, _) => "TCP connect",
            (Step::Handshake, true) => "TLS handshake",
            (Step::Handshake, false) => "HTTP/2 handshake",
            (Step::Describe, _) => "Describe",
        }
    }
}

/// Why one gateway could not be used.
#[derive(Debug)]
pub(crate) enum GatewayError {
    /// The address is not a valid URI, or the TLS config is unusable.
    Config(String),
    /// A step failed.
    Failed {
        step: &'static str,
        address: String,
        cause: String,
    },
    /// A step did not finish within `connect_timeout`.
    Timeout {
        step: &'static str,
        address: String,
        after: Duration,
    },
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayError::Config(m) => f.write_str(m),
            GatewayError::Failed {
                step,
                address,
                cause,
            } => write!(f, "{step} with {address} failed: {cause}"),
            GatewayError::Timeout {
                step,
                address,
                after,
            } => write!(f, "{step} with {address} timed out after {after:?}"),
        }
    }
}

/// Gateways in config order.
pub(crate) struct Pool {
    addresses: Vec<String>,
    tls: Option<ClientTlsConfig>,
    timeout: Duration,
    next: AtomicUsize,
}

/// The deepest error of a tonic transport error chain (tonic's own message
/// is "transport error").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    let mut parts = vec![e.to_string()];
    while let Some(next) = cur.source() {
        parts.push(next.to_string());
        cur = next;
    }
    parts.dedup();
    parts.join(": ")
}

impl Pool {
    pub(crate) fn new(
        addresses: Vec<String>,
        tls: Option<ClientTlsConfig>,
        timeout: Duration,
    ) -> Self {
        Self {
            addresses,
            tls,
            timeout,
            next: AtomicUsize::new(0),
        }
    }

    /// One attempt at `address`, bounded as a whole by the timeout.
    async fn try_one(&self, address: &str) -> Result<Connected, GatewayError> {
        let tls = self.tls.is_some();
        let step = Arc::new(AtomicU8::new(Step::Tcp as u8));
        let attempt = self.attempt(address, Arc::clone(&step));
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(GatewayError::Timeout {
                step: Step::from_u8(step.load(Ordering::Relaxed)).name(tls),
                address: address.to_owned(),
                after: self.timeout,
            }),
        }
    }

    async fn attempt(&self, address: &str, step: Arc<AtomicU8>) -> Result<Connected, GatewayError> {
        let tls = self.tls.is_some();
        let scheme = if tls { "https" } else { "http" };
        let mut endpoint = Channel::from_shared(format!("{scheme}://{address}"))
            .map_err(|e| GatewayError::Config(format!("gateway address {address}: {e}")))?
            // No tonic connect timeout: it would race the one around the
            // whole attempt (`try_one`), which names the step.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20));
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(|e| {
                GatewayError::Config(format!("TLS config for {address}: {}", root_cause(&e)))
            })?;
        }
        let failed = |at: Step, cause: String| GatewayError::Failed {
            step: at.name(tls),
            address: address.to_owned(),
            cause,
        };
        // Our own TCP connector, to know whether TCP is done when the
        // timeout fires (tonic layers TLS on top of it).
        let tcp_step = Arc::clone(&step);
        let connector = tower::service_fn(move |uri: Uri| {
            let step = Arc::clone(&tcp_step);
            async move {
                let host = uri.host().unwrap_or_default();
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let port = uri
                    .port_u16()
                    .unwrap_or(if uri.scheme_str() == Some("https") {
                        443
                    } else {
                        80
                    });
                let tcp = tokio::net::TcpStream::connect((host, port)).await?;
                let _ = tcp.set_nodelay(true);
                step.store(Step::Handshake as u8, Ordering::Relaxed);
                Ok::<_, std::io::Error>(TokioIo::new(tcp))
            }
        });
        let channel = endpoint
            .connect_with_connector(connector)
            .await
            .map_err(|e| {
                let at = Step::from_u8(step.load(Ordering::Relaxed));
                failed(at, root_cause(&e))
            })?;
        step.store(Step::Describe as u8, Ordering::Relaxed);
        let mut client = ReplicationClient::new(channel);
        let describe = client
            .describe(v1::DescribeRequest {})
            .await
            .map_err(|s| failed(Step::Describe, format!("{:?}: {}", s.code(), s.message())))?
            .into_inner();
        Ok(Connected {
            address: address.to_owned(),
            client,
            describe,
        })
    }

    /// Connects to a gateway, trying each once in turn. On success also
    /// returns the failures of the gateways tried before it (for the
    /// status's `last_error`); the error lists every failure.
    pub(crate) async fn connect(&self) -> Result<(Connected, Vec<String>), String> {
        let n = self.addresses.len();
        let start = self.next.load(Ordering::Relaxed);
        let mut errors = Vec::new();
        for i in 0..n {
            let idx = (start + i) % n;
            let Some(address) = self.addresses.get(idx) else {
                continue;
            };
            match self.try_one(address).await {
                Ok(c) => {
                    self.next.store(idx, Ordering::Relaxed);
                    return Ok((c, errors));
                }
                Err(e) => {
                    warn!(gateway = %address, "gateway unavailable: {e}");
                    errors.push(e.to_string());
                }
            }
        }
        Err(errors.join("; "))
    }

    /// The gateway at `address` failed: the next connect starts after it.
    pub(crate) fn failed(&self, address: &str) {
        if let Some(i) = self.addresses.iter().position(|a| a == address) {
            self.next
                .store((i + 1) % self.addresses.len().max(1), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(addresses: &[&str]) -> Pool {
        Pool::new(
            addresses.iter().map(|a| (*a).to_owned()).collect(),
            None,
            Duration::from_secs(5),
        )
    }

    #[test]
    fn a_timeout_names_the_step_that_did_not_finish() {
        assert_eq!(Step::from_u8(Step::Tcp as u8).name(true), "TCP connect");
        assert_eq!(
            Step::from_u8(Step::Handshake as u8).name(true),
            "TLS handshake"
        );
        assert_eq!(
            Step::from_u8(Step::Handshake as u8).name(false),
            "HTTP/2 handshake"
        );
        assert_eq!(Step::from_u8(Step::Describe as u8).name(false), "Describe");
        assert_eq!(Step::from_u8(200), Step::Describe);
        let e = GatewayError::Timeout {
            step: Step::Handshake.name(true),
            address: "g1:7000".into(),
            after: Duration::from_secs(3),
        };
        assert_eq!(
            e.to_string(),
            "TLS handshake with g1:7000 timed out after 3s"
        );
    }

    #[tokio::test]
    async fn each_gateway_is_tried_once_starting_after_the_one_that_failed() {
        // Addresses that are not URIs fail at once, before any I/O.
        let p = pool(&["bad one", "bad two", "bad three"]);
        let order = |e: String| -> Vec<String> {
            e.split("; ")
                .map(|x| x.split(':').next().unwrap_or_default().to_owned())
                .collect()
        };
        let first = p.connect().await.err().unwrap_or_default();
        assert_eq!(
            order(first),
            [
                "gateway address bad one",
                "gateway address bad two",
                "gateway address bad three"
            ]
        );
        p.failed("bad two");
        let after = p.connect().await.err().unwrap_or_default();
        assert_eq!(
            order(after),
            [
                "gateway address bad three",
                "gateway address bad one",
                "gateway address bad two"
            ]
        );
        p.failed("bad three");
        let wrapped = p.connect().await.err().unwrap_or_default();
        assert_eq!(
            order(wrapped).first().map(String::as_str),
            Some("gateway address bad one")
        );
        p.failed("not in the pool");
        let same = p.connect().await.err().unwrap_or_default();
        assert_eq!(
            order(same).first().map(String::as_str),
            Some("gateway address bad one")
        );
    }

    #[test]
    fn the_root_cause_joins_the_chain_without_repeats() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("inner")]
        struct Inner;
        assert_eq!(root_cause(&Outer(Inner)), "outer: inner");
    }
}
