//! The HTTP helpers over real TCP: `/metrics` rendering with global labels,
//! graceful shutdown, and bind errors naming the address.

// Test helpers outside #[test] fns: panicking on setup failure is the point.
#![allow(clippy::unwrap_used)]

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use axum::{Router, routing::get};
use tcf_common::{http, metrics};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::oneshot,
};

async fn get_raw(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn metrics_endpoint_and_graceful_shutdown() {
    let labels = BTreeMap::from([("dc".to_owned(), "msk".to_owned())]);
    let handle = metrics::install_prometheus_with_labels(&labels).unwrap();
    // A second install returns the same recorder.
    let again = metrics::install_prometheus().unwrap();
    let upkeep = metrics::spawn_upkeep(handle.clone());

    ::metrics::counter!("tcf_test_rows_total", "replicaset" => "rs1").increment(3);
    ::metrics::histogram!("tcf_test_apply_seconds").record(0.02);

    let app: Router = Router::new()
        .route("/health", get(|| async { "ok" }))
        .merge(metrics::router(handle));
    let listener = http::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(http::serve_listener(listener, app, async move {
        let _ = stopped.await;
    }));

    let health = get_raw(addr, "/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    let scrape = get_raw(addr, "/metrics").await;
    assert!(scrape.starts_with("HTTP/1.1 200"), "{scrape}");
    assert!(
        scrape.contains("content-type: text/plain; version=0.0.4"),
        "{scrape}"
    );
    assert!(
        scrape.contains(r#"tcf_test_rows_total{dc="msk",replicaset="rs1"} 3"#),
        "{scrape}"
    );
    assert!(
        scrape.contains(r#"tcf_test_apply_seconds_bucket{dc="msk",le="0.025"} 1"#),
        "a real histogram for *_seconds: {scrape}"
    );
    assert!(again.render().contains("tcf_test_rows_total"));

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stops after shutdown")
        .unwrap()
        .unwrap();
    upkeep.abort();
}

#[tokio::test]
async fn bind_error_names_the_address() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let err = http::serve(addr, Router::new(), async {})
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("cannot listen for HTTP on {addr}: ")),
        "{text}"
    );
}
