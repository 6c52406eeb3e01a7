//! The loaded TLS configs work end to end with tonic: a gateway-like server
//! requiring client certificates, a destination-like client, the
//! `allowed_clients` identity check on `peer_certs()`, and refusals of a
//! client from another CA and of a client without a certificate.

// Test helpers outside #[test] fns: panicking on setup failure is the point.
#![allow(clippy::unwrap_used)]

use std::{net::SocketAddr, path::Path, pin::Pin, time::Duration};

use futures::Stream;
use tcf_common::{devcerts, tls};
use tcf_proto::v1::{
    DescribeRequest, DescribeResponse, DestinationMessage, GatewayMessage,
    replication_client::ReplicationClient,
    replication_server::{Replication, ReplicationServer},
};
use tonic::{
    Request, Response, Status, Streaming,
    transport::{Channel, ClientTlsConfig, Server, server::TcpIncoming},
};

struct Gateway {
    allowed: Vec<String>,
}

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
            .ok_or_else(|| Status::unauthenticated("empty chain"))?;
        let who = tls::allowed_identity(leaf, &self.allowed).ok_or_else(|| {
            Status::permission_denied(format!(
                "client {:?} is not in allowed_clients",
                tls::peer_identities(leaf)
            ))
        })?;
        Ok(Response::new(DescribeResponse {
            source_cluster: "A".into(),
            gateway: who,
            protocol_version: tcf_proto::PROTOCOL_VERSION,
            replicasets: vec!["rs1".into()],
            features: Vec::new(),
        }))
    }
}

/// A gateway-like server; `bounded`: TLS by the listener layer
/// (`listen::tls_incoming`, as the gateway serves) instead of tonic's own.
async fn start_server(dir: &Path, allowed: &[&str], bounded: bool) -> SocketAddr {
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
    let svc = Gateway {
        allowed: allowed.iter().map(|s| (*s).to_owned()).collect(),
    };
    if bounded {
        let incoming = tcf_common::listen::tls_incoming(
            listener,
            server.rustls,
            tcf_common::listen::GrpcLimits::DEFAULT,
            tokio_util::sync::CancellationToken::new(),
        );
        let router = Server::builder().add_service(ReplicationServer::new(svc));
        tokio::spawn(router.serve_with_incoming(incoming));
        return addr;
    }
    let router = Server::builder()
        .tls_config(server.config)
        .unwrap()
        .add_service(ReplicationServer::new(svc));
    tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
    addr
}

async fn describe(addr: SocketAddr, tls: ClientTlsConfig) -> Result<DescribeResponse, String> {
    let channel = Channel::from_shared(format!("https://127.0.0.1:{}", addr.port()))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    ReplicationClient::new(channel)
        .describe(DescribeRequest {})
        .await
        .map(Response::into_inner)
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

fn client(dir: &Path, name: &str) -> ClientTlsConfig {
    tls::client_tls(
        "destination.gateways[0].tls",
        &tls::ClientTls {
            ca_file: dir.join("ca.pem"),
            cert_file: dir.join(format!("{name}.pem")),
            key_file: dir.join(format!("{name}-key.pem")),
            server_name: Some("gateway".into()),
        },
    )
    .unwrap()
    .config
}

#[tokio::test]
async fn mutual_tls_with_allowed_clients() {
    mutual_tls(false).await;
}

#[tokio::test]
async fn mutual_tls_through_the_bounded_listener() {
    mutual_tls(true).await;
}

async fn mutual_tls(bounded: bool) {
    tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    devcerts::generate(dir.path(), &["gateway", "destination", "worker"]).unwrap();
    devcerts::generate_foreign_ca_client(dir.path(), "intruder").unwrap();
    let addr = start_server(dir.path(), &["destination"], bounded).await;

    let ok = describe(addr, client(dir.path(), "destination"))
        .await
        .unwrap();
    assert_eq!(ok.gateway, "destination");
    assert_eq!(ok.protocol_version, 1);

    // Valid certificate from our CA, but not in allowed_clients.
    let denied = describe(addr, client(dir.path(), "worker"))
        .await
        .unwrap_err();
    assert!(denied.starts_with("PermissionDenied"), "{denied}");

    // A certificate from another CA: with TLS 1.3 the server rejects it after
    // the client considers the handshake done, so the first call fails.
    let foreign = describe(addr, client(dir.path(), "intruder")).await;
    assert!(foreign.is_err(), "foreign CA accepted: {foreign:?}");

    // No client certificate at all.
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let anonymous = ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .domain_name("gateway");
    let anon = describe(addr, anonymous).await;
    assert!(
        anon.is_err(),
        "client without certificate accepted: {anon:?}"
    );

    // The server name is checked against the server certificate.
    let mut wrong_name = tls::ClientTls {
        ca_file: dir.path().join("ca.pem"),
        cert_file: dir.path().join("destination.pem"),
        key_file: dir.path().join("destination-key.pem"),
        server_name: Some("not-the-gateway".into()),
    };
    let cfg = tls::client_tls("k", &wrong_name).unwrap().config;
    assert!(describe(addr, cfg).await.is_err());
    wrong_name.server_name = Some("localhost".into());
    let cfg = tls::client_tls("k", &wrong_name).unwrap().config;
    assert_eq!(describe(addr, cfg).await.unwrap().gateway, "destination");
}
