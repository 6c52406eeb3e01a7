//! tcf-gateway refusing what it must refuse: unknown clients, plaintext,
//! bad configs, WAL gaps, diverged and foreign positions, missing tokens.

use std::time::Duration;

use tcf_iproto::Vclock;
use tcf_proto::v1::{self, ErrorKind, open::Start};
use tcf_tests::{
    Grant, Replicaset, SpaceSpec, TarantoolOptions, TcfProcess, UserSpec,
    gateway::{
        ADMIN_TOKEN, GatewayOptions, INFO_TOKEN, Message, REPL_PASSWORD, REPL_USER, RunningGateway,
        StreamClient, cert,
    },
    http,
};

const SOON: Duration = Duration::from_secs(30);

async fn source(name: &str, checkpoint_count: u32) -> Replicaset {
    tcf_tests::init_tracing();
    TarantoolOptions::new(name)
        .space(SpaceSpec::new("test"))
        // The `replication` role: `read` on `universe`, and on 3.3+ `write` on
        // `_gc_consumers` (the anonymous subscriber's WAL GC consumer).
        .user(UserSpec::new(REPL_USER, REPL_PASSWORD).grant(Grant::replication()))
        .replication_timeout(Duration::from_millis(250))
        .checkpoint_count(checkpoint_count)
        .start_replicaset()
        .await
        .expect("source")
}

async fn vclock(rs: &Replicaset) -> Vclock {
    tcf_iproto::vote(&rs.master().uri(), &tcf_iproto::ConnectOptions::new())
        .await
        .expect("vote")
        .vclock
        .without_local()
}

/// The stream's terminal error: a StreamError message then an error status.
async fn stream_error(s: &mut tcf_tests::gateway::Stream, limit: Duration) -> v1::StreamError {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match s
            .next(deadline - tokio::time::Instant::now())
            .await
            .expect("message")
        {
            Ok(Some(Message::Error(e))) => return e,
            Ok(Some(Message::Heartbeat(_) | Message::Started(_))) => {}
            other => panic!("expected a stream error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn only_allowed_client_certificates_are_served() {
    let rs = source("tls", 2).await;
    let gw = RunningGateway::start(&[("rs1", rs.uris())], GatewayOptions::default())
        .await
        .expect("gateway");
    let certs = gw.certs.as_ref().expect("certs");
    let from = vclock(&rs).await;

    let mut ok = gw.client().await.expect("destination connects");
    assert_eq!(ok.describe().await.expect("describe").replicasets, ["rs1"]);

    // No client certificate: the TLS handshake (or the first call) fails.
    let none = StreamClient::connect_tls(&gw.grpc_addr, &certs.ca.cert, None).await;
    if let Ok(mut c) = none {
        assert!(
            c.open("rs1", Start::After((&from).into())).await.is_err(),
            "no certificate refused"
        );
    }
    // Signed by another CA.
    let foreign = tcf_common::devcerts::generate_foreign_ca_client(
        &gw.process.dir().join("foreign"),
        "destination",
    )
    .expect("foreign cert");
    let other = StreamClient::connect_tls(&gw.grpc_addr, &certs.ca.cert, Some(&foreign)).await;
    if let Ok(mut c) = other {
        assert!(
            c.open("rs1", Start::After((&from).into())).await.is_err(),
            "foreign CA refused"
        );
    }
    // Signed by the right CA but not in allowed_clients.
    let mut intruder = StreamClient::connect_tls(
        &gw.grpc_addr,
        &certs.ca.cert,
        Some(cert(certs, "intruder").expect("cert")),
    )
    .await
    .expect("TLS handshake passes");
    let err = intruder
        .open("rs1", Start::After((&from).into()))
        .await
        .expect_err("not allowed");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    // Plaintext against a TLS gateway.
    if let Ok(mut plain) = StreamClient::connect_plain(&gw.grpc_addr).await {
        assert!(plain.describe().await.is_err(), "plaintext refused");
    }
}

#[tokio::test]
async fn plaintext_only_with_insecure_true() {
    let rs = source("plain", 2).await;
    let gw = RunningGateway::start(
        &[("rs1", rs.uris())],
        GatewayOptions {
            tls: false,
            ..GatewayOptions::default()
        },
    )
    .await
    .expect("insecure gateway");
    let mut c = StreamClient::connect_plain(&gw.grpc_addr)
        .await
        .expect("plaintext");
    let mut s = c
        .open("rs1", Start::After((&vclock(&rs).await).into()))
        .await
        .expect("open");
    assert!(matches!(
        s.expect(SOON).await.expect("started"),
        Message::Started(_)
    ));
}

#[tokio::test]
async fn a_wal_gap_stops_the_stream_loudly() {
    let rs = source("gap", 1).await;
    let gw = RunningGateway::start(&[("rs1", rs.uris())], GatewayOptions::default())
        .await
        .expect("gateway");
    let away = vclock(&rs).await;
    rs.master()
        .eval(
            "box.space.test:insert{1} box.snapshot() box.space.test:insert{2} box.snapshot()",
            &[],
        )
        .await
        .expect("checkpoints while away");
    let mut c = gw.client().await.expect("client");
    let mut s = c
        .open("rs1", Start::After((&away).into()))
        .await
        .expect("open");
    let e = stream_error(&mut s, SOON).await;
    assert_eq!(e.kind, ErrorKind::WalGap as i32, "{e:?}");
    assert!(e.message.contains("WAL gap"), "{e:?}");
    let status = gw.status().await.expect("status");
    assert_eq!(status["replicasets"]["rs1"]["state"], "gapped", "{status}");
    // Found by the ballots' gc_vclock before subscribing, never by a failed
    // read: the source never saw a SUBSCRIBE from the gateway (and on 3.3+
    // keeps no WAL GC consumer for it).
    let subscriber = status["replicasets"]["rs1"]["subscriber_uuid"]
        .as_str()
        .expect("subscriber uuid in the status")
        .to_owned();
    let log = rs.master().log_tail(1000);
    assert!(
        !log.contains(&format!("subscribed replica {subscriber}")),
        "the gateway subscribed: {log}"
    );
    let consumers = rs
        .master()
        .eval1(
            "return box.space._gc_consumers == nil and 0 or box.space._gc_consumers:count()",
            &[],
        )
        .await
        .expect("consumers");
    assert_eq!(consumers.as_u64(), Some(0));
}

#[tokio::test]
async fn a_position_ahead_of_every_instance_becomes_diverged() {
    let rs = source("ahead", 2).await;
    let opts = GatewayOptions {
        extra: vec!["  diverged_timeout: 1s".into()],
        ..GatewayOptions::default()
    };
    let gw = RunningGateway::start(&[("rs1", rs.uris())], opts)
        .await
        .expect("gateway");
    let mut ahead = vclock(&rs).await;
    ahead.set(1, ahead.get(1) + 1000);
    let mut c = gw.client().await.expect("client");
    let mut s = c
        .open("rs1", Start::After((&ahead).into()))
        .await
        .expect("open");
    let e = stream_error(&mut s, SOON).await;
    assert_eq!(e.kind, ErrorKind::Diverged as i32, "{e:?}");
    let status = gw.status().await.expect("status");
    assert_eq!(
        status["replicasets"]["rs1"]["state"], "diverged",
        "{status}"
    );
}

#[tokio::test]
async fn a_foreign_source_uuid_or_the_source_as_target_is_refused() {
    let rs = source("uuid", 2).await;
    let gw = RunningGateway::start(&[("rs1", rs.uris())], GatewayOptions::default())
        .await
        .expect("gateway");
    let from = vclock(&rs).await;
    let mut c = gw.client().await.expect("client");
    let open = |source_uuid: String, target_uuid: String| v1::Open {
        replicaset: "rs1".into(),
        destination: "test".into(),
        target_cluster: "B".into(),
        source_uuid,
        target_uuid,
        protocol_version: tcf_proto::PROTOCOL_VERSION,
        start: Some(Start::After((&from).into())),
        features: Vec::new(),
    };
    let mut s = c
        .open_with(open(uuid::Uuid::new_v4().to_string(), String::new()))
        .await
        .expect("open");
    assert_eq!(
        stream_error(&mut s, SOON).await.kind,
        ErrorKind::SourceMismatch as i32
    );
    let own = rs
        .master()
        // 3.x: `box.info.replicaset`; `box.info.cluster` is the whole cluster.
        .eval1("return (box.info.replicaset or box.info.cluster).uuid", &[])
        .await
        .expect("uuid");
    let own = own.as_str().expect("uuid string").to_owned();
    let mut s = c.open_with(open(String::new(), own)).await.expect("open");
    assert_eq!(
        stream_error(&mut s, SOON).await.kind,
        ErrorKind::SourceMismatch as i32
    );
    let mut same = open(String::new(), String::new());
    same.target_cluster = "A".into();
    assert!(
        c.open_with(same).await.is_err(),
        "the source cluster as target is refused"
    );
}

#[tokio::test]
async fn the_control_api_needs_a_token_and_honours_terms() {
    let rs = source("http", 2).await;
    let gw = RunningGateway::start(&[("rs1", rs.uris())], GatewayOptions::default())
        .await
        .expect("gateway");
    let a = &gw.http_addr;
    assert_eq!(
        http::request("GET", a, "/api/v1/status", None, None)
            .await
            .expect("http")
            .status,
        401
    );
    assert_eq!(
        http::request("GET", a, "/api/v1/status", Some("wrong"), None)
            .await
            .expect("http")
            .status,
        401
    );
    assert_eq!(
        http::request("GET", a, "/api/v1/status", Some(INFO_TOKEN), None)
            .await
            .expect("http")
            .status,
        200
    );
    assert_eq!(
        http::request("POST", a, "/api/v1/stop", Some(INFO_TOKEN), None)
            .await
            .expect("http")
            .status,
        403
    );

    let mut c = gw.client().await.expect("client");
    let mut s = c
        .open("rs1", Start::After((&vclock(&rs).await).into()))
        .await
        .expect("open");
    assert!(matches!(
        s.expect(SOON).await.expect("started"),
        Message::Started(_)
    ));
    let r = http::request(
        "POST",
        a,
        "/api/v1/stop",
        Some(ADMIN_TOKEN),
        Some(r#"{"term": 5}"#),
    )
    .await
    .expect("http");
    assert_eq!(r.status, 200, "{}", r.body);
    // The running stream ends, new ones are refused.
    let ended = tokio::time::timeout(SOON, async {
        loop {
            match s.next(SOON).await {
                Ok(Ok(Some(_))) => continue,
                _ => return,
            }
        }
    });
    ended.await.expect("the stream ends after stop");
    assert!(
        c.open("rs1", Start::After((&vclock(&rs).await).into()))
            .await
            .is_err()
    );
    let status = gw.status().await.expect("status");
    assert_eq!(status["running"], false);
    assert_eq!(status["term"], 5);
    let stale = http::request(
        "POST",
        a,
        "/api/v1/start",
        Some(ADMIN_TOKEN),
        Some(r#"{"term": 4}"#),
    )
    .await
    .expect("http");
    assert_eq!(stale.status, 409, "{}", stale.body);
    let r = http::request(
        "POST",
        a,
        "/api/v1/start",
        Some(ADMIN_TOKEN),
        Some(r#"{"term": 5}"#),
    )
    .await
    .expect("http");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        c.open("rs1", Start::After((&vclock(&rs).await).into()))
            .await
            .is_ok()
    );
}

/// Runs the gateway on `config` and returns (exit code, output).
async fn run_bad(config: &str) -> (Option<i32>, String) {
    let p = TcfProcess::new("tcf-gateway").expect("dir");
    let certs = tcf_common::devcerts::generate(&p.dir().join("certs"), &["gateway", "other"])
        .expect("certs");
    let (gw, other) = (
        cert(&certs, "gateway").expect("cert"),
        cert(&certs, "other").expect("cert"),
    );
    let config = config
        .replace("$CERT", &gw.cert.display().to_string())
        .replace("$KEY", &gw.key.display().to_string())
        .replace("$OTHER_KEY", &other.key.display().to_string())
        .replace("$CA", &certs.ca.cert.display().to_string());
    p.start(&config).expect("spawn");
    let code = p.wait_exit(SOON).await.expect("exits by itself");
    (code, p.log())
}

const GOOD: &str = r#"gateway:
  cluster: A
  replication_user: u
  replication_password: p
  stream_instances: [{replicaset: rs1, uri: "127.0.0.1:3301"}]
  grpc_server:
    listen: "127.0.0.1:1"
    tls: {cert_file: "$CERT", key_file: "$KEY", client_ca_file: "$CA"}
    allowed_clients: [destination]
  http_server: {listen: "127.0.0.1:1"}
  auth: {tokens: [{role: admin, token: t}]}
"#;

#[tokio::test]
async fn bad_configs_exit_with_status_2_naming_the_key() {
    let cases: Vec<(String, &str)> = vec![
        (
            GOOD.replace("  cluster: A\n", "  cluster: A\n  clusterr: B\n"),
            "clusterr",
        ),
        (GOOD.replace("  cluster: A\n", ""), "cluster"),
        (
            GOOD.replace(
                "listen: \"127.0.0.1:1\"\n    tls",
                "listen: \"not an address\"\n    tls",
            ),
            "gateway.grpc_server.listen",
        ),
        (
            GOOD.replace("\"$CERT\"", "\"/nonexistent/cert.pem\""),
            "gateway.grpc_server.tls",
        ),
        (
            GOOD.replace("\"$KEY\"", "\"$OTHER_KEY\""),
            "gateway.grpc_server.tls",
        ),
        (
            GOOD.replace(
                "    tls: {cert_file: \"$CERT\", key_file: \"$KEY\", client_ca_file: \"$CA\"}\n",
                "",
            ),
            "gateway.grpc_server",
        ),
        (
            GOOD.replace("uri: \"127.0.0.1:3301\"", "uri: \"nohost\""),
            "gateway.stream_instances[0].uri",
        ),
        (
            GOOD.replace("  replication_password: p\n", ""),
            "replication_password",
        ),
        (GOOD.replace("gateway:", "destination:"), "gateway"),
    ];
    for (config, key) in cases {
        let (code, out) = run_bad(&config).await;
        assert_eq!(code, Some(2), "config:\n{config}\noutput:\n{out}");
        assert!(out.contains(key), "the message names {key}:\n{out}");
        assert!(out.contains("config"), "{out}");
    }
}
