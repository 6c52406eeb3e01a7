//! A real `tcf-gateway` process for tests, and a gRPC client speaking the
//! stream protocol as a destination would (over mutual TLS by default).

use std::{collections::VecDeque, path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use tcf_common::devcerts::{self, CertFiles, DevCerts};
use tcf_proto::{PROTOCOL_VERSION, v1};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::{PortLease, TcfProcess, http};

/// The source user every gateway test uses (`read` on `universe`).
pub const REPL_USER: &str = "tcf-replicator";
/// Its password.
pub const REPL_PASSWORD: &str = "tcf-replicator-secret";
/// Bearer token with role `admin` on the gateway's HTTP API.
pub const ADMIN_TOKEN: &str = "admin-token-for-tests";
/// Bearer token with role `info`.
pub const INFO_TOKEN: &str = "info-token-for-tests";

/// How to start a gateway.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Source cluster name.
    pub cluster: String,
    /// Mutual TLS (default) or `insecure: true`.
    pub tls: bool,
    /// Extra lines appended to the `gateway:` section (indented by the caller
    /// with two spaces), e.g. `"  on_wal_gap: resync"`.
    pub extra: Vec<String>,
    /// Certificates to reuse (another gateway's), instead of a new CA.
    pub certs: Option<DevCerts>,
    /// Run under this open-file limit (soft and hard), as with systemd's
    /// `LimitNOFILE`; default: the test process's.
    pub open_files: Option<u64>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            cluster: "A".into(),
            tls: true,
            extra: Vec::new(),
            certs: None,
            open_files: None,
        }
    }
}

/// A running gateway.
#[derive(Debug)]
pub struct RunningGateway {
    /// The process.
    pub process: TcfProcess,
    /// `127.0.0.1:PORT` of gRPC.
    pub grpc_addr: String,
    /// `127.0.0.1:PORT` of HTTP.
    pub http_addr: String,
    /// Certificates (`None` when insecure).
    pub certs: Option<DevCerts>,
    _ports: [PortLease; 2],
}

impl RunningGateway {
    /// Starts `tcf-gateway` reading `replicasets` (`(label, [uri...])`).
    pub async fn start(
        replicasets: &[(&str, Vec<String>)],
        opts: GatewayOptions,
    ) -> anyhow::Result<Self> {
        crate::init_tracing();
        tcf_common::tls::install_crypto_provider();
        let process = TcfProcess::new("tcf-gateway")?;
        let (grpc, httpp) = (PortLease::allocate()?, PortLease::allocate()?);
        let grpc_addr = format!("127.0.0.1:{}", grpc.port());
        let http_addr = format!("127.0.0.1:{}", httpp.port());
        let certs = match (opts.tls, opts.certs) {
            (false, _) => None,
            (true, Some(c)) => Some(c),
            (true, None) => Some(devcerts::generate(
                &process.dir().join("certs"),
                &["gateway", "destination", "intruder"],
            )?),
        };
        std::fs::write(process.dir().join("admin.token"), ADMIN_TOKEN)?;
        let mut y = String::from("gateway:\n  alias: test-gateway\n");
        y.push_str(&format!("  cluster: {}\n", opts.cluster));
        y.push_str(&format!(
            "  replication_user: {REPL_USER}\n  replication_password: {REPL_PASSWORD}\n"
        ));
        y.push_str("  stream_instances:\n");
        for (rs, uris) in replicasets {
            for uri in uris {
                y.push_str(&format!("    - {{replicaset: {rs}, uri: \"{uri}\"}}\n"));
            }
        }
        y.push_str(&format!("  grpc_server:\n    listen: \"{grpc_addr}\"\n"));
        match &certs {
            Some(c) => {
                let gw = cert(c, "gateway")?;
                y.push_str(&format!(
                    "    tls: {{cert_file: \"{}\", key_file: \"{}\", client_ca_file: \"{}\"}}\n    allowed_clients: [destination]\n",
                    gw.cert.display(),
                    gw.key.display(),
                    c.ca.cert.display()
                ));
            }
            None => y.push_str("    insecure: true\n"),
        }
        y.push_str(&format!("  http_server: {{listen: \"{http_addr}\"}}\n"));
        y.push_str(&format!(
            "  auth:\n    tokens:\n      - {{role: admin, token_file: admin.token}}\n      - {{role: info, token: {INFO_TOKEN}}}\n"
        ));
        if !opts
            .extra
            .iter()
            .any(|l| l.trim_start().starts_with("source_replication_timeout:"))
        {
            y.push_str("  source_replication_timeout: 250ms\n");
        }
        y.push_str("  poll_interval: 250ms\n");
        for line in &opts.extra {
            y.push_str(line);
            y.push('\n');
        }
        if let Some(n) = opts.open_files {
            process.set_open_files_limit(n);
        }
        process.start(&y)?;
        process.wait_http(&http_addr, "/metrics").await?;
        Ok(Self {
            process,
            grpc_addr,
            http_addr,
            certs,
            _ports: [grpc, httpp],
        })
    }

    /// A client authenticated as `destination` (or plaintext when insecure).
    pub async fn client(&self) -> anyhow::Result<StreamClient> {
        match &self.certs {
            Some(c) => {
                StreamClient::connect_tls(
                    &self.grpc_addr,
                    &c.ca.cert,
                    Some(cert(c, "destination")?),
                )
                .await
            }
            None => StreamClient::connect_plain(&self.grpc_addr).await,
        }
    }

    /// `GET /api/v1/status` with the info token, as JSON.
    pub async fn status(&self) -> anyhow::Result<serde_json::Value> {
        let r = http::request(
            "GET",
            &self.http_addr,
            "/api/v1/status",
            Some(INFO_TOKEN),
            None,
        )
        .await?;
        if r.status != 200 {
            bail!("status answered {}: {}", r.status, r.body);
        }
        http::json(&r)
    }
}

/// The certificate files of component `name`.
pub fn cert<'a>(certs: &'a DevCerts, name: &str) -> anyhow::Result<&'a CertFiles> {
    certs
        .components
        .iter()
        .find(|c| c.name == name)
        .with_context(|| format!("no certificate for {name}"))
}

/// A destination-side gRPC client.
#[derive(Debug, Clone)]
pub struct StreamClient {
    inner: v1::replication_client::ReplicationClient<Channel>,
}

impl StreamClient {
    /// Connects with mutual TLS: trusting `ca`, presenting `identity` (none
    /// to test a client without a certificate).
    pub async fn connect_tls(
        addr: &str,
        ca: &PathBuf,
        identity: Option<&CertFiles>,
    ) -> anyhow::Result<Self> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(ca)?))
            .domain_name("gateway");
        if let Some(id) = identity {
            tls = tls.identity(Identity::from_pem(
                std::fs::read(&id.cert)?,
                std::fs::read(&id.key)?,
            ));
        }
        let channel = Channel::from_shared(format!("https://{addr}"))?
            .tls_config(tls)?
            .connect()
            .await?;
        Ok(Self {
            inner: v1::replication_client::ReplicationClient::new(channel),
        })
    }

    /// Connects in plaintext.
    pub async fn connect_plain(addr: &str) -> anyhow::Result<Self> {
        let channel = Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        Ok(Self {
            inner: v1::replication_client::ReplicationClient::new(channel),
        })
    }

    /// `Describe`.
    pub async fn describe(&mut self) -> Result<v1::DescribeResponse, tonic::Status> {
        Ok(self
            .inner
            .describe(v1::DescribeRequest {})
            .await?
            .into_inner())
    }

    /// Opens the stream of `replicaset` from `start`.
    pub async fn open(
        &mut self,
        replicaset: &str,
        start: v1::open::Start,
    ) -> Result<Stream, tonic::Status> {
        self.open_with(v1::Open {
            replicaset: replicaset.into(),
            destination: "test-destination".into(),
            target_cluster: "B".into(),
            protocol_version: PROTOCOL_VERSION,
            start: Some(start),
            ..v1::Open::default()
        })
        .await
    }

    /// Opens a stream with a full `Open`.
    pub async fn open_with(&mut self, open: v1::Open) -> Result<Stream, tonic::Status> {
        let (tx, rx) = mpsc::channel(16);
        let first = v1::DestinationMessage {
            kind: Some(v1::destination_message::Kind::Open(open)),
        };
        tx.send(first)
            .await
            .map_err(|_| tonic::Status::internal("channel"))?;
        let inbound = self
            .inner
            .stream(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Stream {
            acks: tx,
            inbound,
            buffered: VecDeque::new(),
        })
    }
}

/// One open stream.
#[derive(Debug)]
pub struct Stream {
    acks: mpsc::Sender<v1::DestinationMessage>,
    inbound: tonic::Streaming<v1::GatewayMessage>,
    buffered: VecDeque<v1::Transaction>,
}

/// What [`Stream::next`] yields.
pub type Message = v1::gateway_message::Kind;

impl Stream {
    /// The next message within `limit`; `Ok(None)` when the stream ended
    /// cleanly; the gRPC status when it ended with an error.
    pub async fn next(
        &mut self,
        limit: Duration,
    ) -> anyhow::Result<Result<Option<Message>, tonic::Status>> {
        match tokio::time::timeout(limit, self.inbound.message()).await {
            Err(_) => bail!("no message from the gateway within {limit:?}"),
            Ok(Err(status)) => Ok(Err(status)),
            Ok(Ok(None)) => Ok(Ok(None)),
            Ok(Ok(Some(m))) => Ok(Ok(m.kind)),
        }
    }

    /// The next message, which must exist.
    pub async fn expect(&mut self, limit: Duration) -> anyhow::Result<Message> {
        match self.next(limit).await? {
            Ok(Some(m)) => Ok(m),
            Ok(None) => bail!("the stream ended"),
            Err(s) => bail!("the stream failed: {s}"),
        }
    }

    /// The next whole transaction (pieces of a `partial` transaction are
    /// joined), skipping heartbeats; fails on anything else.
    pub async fn next_tx(&mut self, limit: Duration) -> anyhow::Result<v1::Transaction> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut whole: Option<v1::Transaction> = None;
        loop {
            while let Some(piece) = self.buffered.pop_front() {
                match &mut whole {
                    Some(w) => {
                        if (w.origin, w.tsn) != (piece.origin, piece.tsn) {
                            bail!(
                                "a partial transaction was interrupted by another: {w:?} then {piece:?}"
                            );
                        }
                        w.rows.extend(piece.rows);
                        w.partial = piece.partial;
                        w.vclock = piece.vclock;
                    }
                    None => whole = Some(piece),
                }
                if whole.as_ref().is_some_and(|w| !w.partial) {
                    return whole.context("transaction");
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.expect(left).await? {
                Message::Batch(b) => self.buffered.extend(b.transactions),
                Message::Heartbeat(_) => {}
                other => bail!("expected a transaction, got {other:?}"),
            }
        }
    }

    /// Acknowledges `committed` as durably applied.
    pub async fn ack(&self, committed: &tcf_iproto::Vclock) -> anyhow::Result<()> {
        let msg = v1::DestinationMessage {
            kind: Some(v1::destination_message::Kind::Ack(v1::Ack {
                committed: Some(committed.into()),
            })),
        };
        self.acks
            .send(msg)
            .await
            .map_err(|_| anyhow::anyhow!("the stream is closed"))
    }
}
