//! The bounded gRPC listener (`listen::tls_incoming` under tonic, as the
//! gateway serves) over real sockets: a client that never sends a TLS
//! ClientHello (or never sends the HTTP/2 preface after it) is dropped after
//! the handshake timeout, the connection cap
//! holds (and frees), and a short fuzz run of garbage at the TLS layer and
//! after a completed handshake (HTTP/2 layer).

// Test helpers outside #[test] fns: panicking on setup failure is the point.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, OnceLock},
    time::Duration,
};

use futures::Stream;
use proptest::prelude::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tcf_common::{devcerts, listen, tls};
use tcf_proto::v1::{
    DescribeRequest, DescribeResponse, DestinationMessage, GatewayMessage,
    replication_client::ReplicationClient,
    replication_server::{Replication, ReplicationServer},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    runtime::Runtime,
};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tonic::{
    Request, Response, Status, Streaming,
    transport::{Channel, Server},
};

const DEADLINE: Duration = Duration::from_secs(20);

struct Gateway;

#[tonic::async_trait]
impl Replication for Gateway {
    type StreamStream = Pin<Box<dyn Stream<Item = Result<GatewayMessage, Status>> + Send>>;

    async fn stream(
        &self,
        _request: Request<Streaming<DestinationMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn describe(
        &self,
        request: Request<DescribeRequest>,
    ) -> Result<Response<DescribeResponse>, Status> {
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("empty"))?;
        let who = tls::allowed_identity(leaf, &["destination".to_owned()])
            .ok_or_else(|| Status::permission_denied("not allowed"))?;
        Ok(Response::new(DescribeResponse {
            gateway: who,
            ..DescribeResponse::default()
        }))
    }
}

struct Fixture {
    addr: SocketAddr,
    dir: PathBuf,
    stop: CancellationToken,
}

async fn start(dir: &Path, limits: listen::GrpcLimits) -> Fixture {
    tls::install_crypto_provider();
    let server = tls::server_tls(
        "gateway.grpc_server.tls",
        &tls::ServerTls {
            cert_file: dir.join("gateway.pem"),
            key_file: dir.join("gateway-key.pem"),
            client_ca_file: dir.join("ca.pem"),
        },
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let incoming = listen::tls_incoming(listener, server.rustls, limits, stop.clone());
    let router = Server::builder().add_service(ReplicationServer::new(Gateway));
    tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned()));
    Fixture {
        addr,
        dir: dir.to_owned(),
        stop,
    }
}

fn client_tls(dir: &Path) -> tonic::transport::ClientTlsConfig {
    tls::client_tls(
        "destination.gateways[0].tls",
        &tls::ClientTls {
            ca_file: dir.join("ca.pem"),
            cert_file: dir.join("destination.pem"),
            key_file: dir.join("destination-key.pem"),
            server_name: Some("gateway".into()),
        },
    )
    .unwrap()
    .config
}

async fn describe(f: &Fixture) -> Result<String, String> {
    let channel = Channel::from_shared(format!("https://{}", f.addr))
        .unwrap()
        .tls_config(client_tls(&f.dir))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    let channel = tokio::time::timeout(DEADLINE, channel.connect())
        .await
        .map_err(|_| "connect hung".to_owned())?
        .map_err(|e| format!("connect: {e:?}"))?;
    ReplicationClient::new(channel)
        .describe(DescribeRequest {})
        .await
        .map(|r| r.into_inner().gateway)
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

/// A raw TLS connection as the destination (client certificate), ALPN h2.
async fn raw_tls(f: &Fixture) -> tokio_rustls::client::TlsStream<TcpStream> {
    let pem = |name: &str| std::fs::read(f.dir.join(name)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem("ca.pem")) {
        roots.add(c.unwrap()).unwrap();
    }
    let chain = CertificateDer::pem_slice_iter(&pem("destination.pem"))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(&pem("destination-key.pem")).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(f.addr).await.unwrap();
    TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("gateway").unwrap(), tcp)
        .await
        .unwrap()
}

/// Reads until the server closes (EOF or error); panics past the deadline.
async fn wait_closed(s: &mut (impl AsyncRead + Unpin), what: &str) {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(DEADLINE, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: the server did not close the connection"));
}

fn certs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    devcerts::generate(dir.path(), &["gateway", "destination"]).unwrap();
    dir
}

#[tokio::test]
async fn silent_client_is_dropped_after_the_handshake_timeout() {
    let dir = certs();
    let f = start(
        dir.path(),
        listen::GrpcLimits {
            max_connections: 8,
            handshake_timeout: Duration::from_secs(1),
        },
    )
    .await;
    let mut silent = TcpStream::connect(f.addr).await.unwrap();
    // Half a ClientHello record header, then nothing.
    let mut partial = TcpStream::connect(f.addr).await.unwrap();
    partial.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    // A client that completes mutual TLS and then never sends the HTTP/2
    // preface.
    let mut mute = raw_tls(&f).await;
    wait_closed(&mut silent, "a client that sends nothing").await;
    wait_closed(&mut partial, "a client stuck in the ClientHello").await;
    wait_closed(&mut mute, "a client mute after the TLS handshake").await;
    assert_eq!(describe(&f).await.unwrap(), "destination");
    f.stop.cancel();
}

#[tokio::test]
async fn cap_holds_and_frees() {
    let dir = certs();
    let cap = 4;
    let f = start(
        dir.path(),
        listen::GrpcLimits {
            max_connections: cap,
            // Longer than the deadline: only the cap can close extra
            // connections within it.
            handshake_timeout: Duration::from_secs(600),
        },
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..cap {
        held.push(raw_tls(&f).await);
    }
    for _ in 0..5 * cap {
        let mut extra = TcpStream::connect(f.addr).await.unwrap();
        wait_closed(&mut extra, "a connection beyond the cap").await;
    }
    // A real client is refused promptly, not left hanging.
    let refused = describe(&f).await.unwrap_err();
    assert!(!refused.contains("hung"), "{refused}");
    held.pop();
    tokio::time::timeout(DEADLINE, async {
        while describe(&f).await.is_err() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("served again once a connection closed");
    f.stop.cancel();
}

/// The runtime and the live server every fuzz case talks to.
fn fuzz_server() -> &'static (Runtime, Fixture, tempfile::TempDir) {
    static SERVER: OnceLock<(Runtime, Fixture, tempfile::TempDir)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let rt = Runtime::new().unwrap();
        let dir = certs();
        let f = rt.block_on(start(
            dir.path(),
            listen::GrpcLimits {
                max_connections: 32,
                handshake_timeout: Duration::from_secs(1),
            },
        ));
        (rt, f, dir)
    })
}

/// An HTTP/2 connection preface followed by random frames, or just bytes.
fn h2_garbage() -> impl Strategy<Value = Vec<u8>> {
    let frame = (
        any::<[u8; 3]>(),
        0u8..12,
        any::<u8>(),
        any::<u32>(),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(len, kind, flags, stream, payload)| {
            let mut f = len.to_vec();
            f.extend([kind, flags]);
            f.extend(stream.to_be_bytes());
            f.extend(payload);
            f
        });
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        prop::collection::vec(frame, 0..8).prop_map(|frames| {
            let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            out.extend(frames.concat());
            out
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn grpc_listener_survives_garbage(
        tls_layer in prop::collection::vec(any::<u8>(), 0..2048),
        h2_layer in h2_garbage(),
        eof in prop::bool::weighted(0.9),
    ) {
        let (rt, f, _dir) = fuzz_server();
        rt.block_on(async {
            // Garbage instead of a ClientHello.
            let mut s = TcpStream::connect(f.addr).await.unwrap();
            let _ = s.write_all(&tls_layer).await;
            if eof {
                let _ = s.shutdown().await;
            }
            wait_closed(&mut s, "TLS-layer garbage").await;
            // Garbage after a completed mutual-TLS handshake.
            let mut s = raw_tls(f).await;
            let _ = s.write_all(&h2_layer).await;
            let _ = s.shutdown().await;
            wait_closed(&mut s, "HTTP/2-layer garbage").await;
            assert_eq!(describe(f).await.unwrap(), "destination");
        });
    }
}
