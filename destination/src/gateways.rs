//! The pool of gateways: connect to the first that answers `Describe`,
//! starting after the one that failed last.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use tcf_proto::v1::{self, replication_client::ReplicationClient};
use tonic::transport::{Channel, ClientTlsConfig};
use tracing::warn;

/// A connected gateway.
pub(crate) struct Connected {
    pub(crate) address: String,
    pub(crate) client: ReplicationClient<Channel>,
    pub(crate) describe: v1::DescribeResponse,
}

/// Gateways in config order.
pub(crate) struct Pool {
    addresses: Vec<String>,
    tls: Option<ClientTlsConfig>,
    timeout: Duration,
    next: AtomicUsize,
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

    async fn try_one(&self, address: &str) -> Result<Connected, String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Channel::from_shared(format!("{scheme}://{address}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(self.timeout)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20));
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| e.to_string())?;
        }
        let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
        let mut client = ReplicationClient::new(channel);
        let describe = tokio::time::timeout(self.timeout, client.describe(v1::DescribeRequest {}))
            .await
            .map_err(|_| "Describe timed out".to_owned())?
            .map_err(|s| format!("Describe: {}", s.message()))?
            .into_inner();
        Ok(Connected {
            address: address.to_owned(),
            client,
            describe,
        })
    }

    /// Connects to a gateway, trying each once; the error lists every failure.
    pub(crate) async fn connect(&self) -> Result<Connected, String> {
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
                    return Ok(c);
                }
                Err(e) => {
                    warn!(gateway = %address, "gateway unavailable: {e}");
                    errors.push(format!("{address}: {e}"));
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
