//! A short fuzz run of the HTTP listener: random bytes, truncated requests
//! and random header sets thrown at a live server (a bounded number of
//! cases); after each the server must still answer a valid request, and it
//! must close every connection it was given (by the client's EOF or its own
//! timeouts) instead of hanging.

// Test helpers outside #[test] fns: panicking on setup failure is the point.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::DefaultBodyLimit,
    routing::{get, post},
};
use proptest::prelude::*;
use tcf_common::{
    auth::{Role, Tokens},
    config::Secret,
    control, http,
    listen::HttpLimits,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    runtime::Runtime,
};

const DEADLINE: Duration = Duration::from_secs(20);

/// The runtime and the live server every case talks to.
fn server() -> &'static (Runtime, SocketAddr) {
    static SERVER: OnceLock<(Runtime, SocketAddr)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let rt = Runtime::new().unwrap();
        let addr = rt.block_on(async {
            let tokens = Arc::new(Tokens::from_secrets([(Role::Toggle, &Secret::new("t"))]));
            let router = Router::new()
                .route("/x", get(|| async { "ok" }))
                .route("/echo", post(|b: Bytes| async move { b }))
                .merge(control::router(tokens, |run, term, _reset| {
                    Ok((run, term.unwrap_or(0)))
                }))
                .layer(DefaultBodyLimit::max(16 * 1024));
            let listener = http::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            let addr = listener.local_addr().unwrap();
            let limits = HttpLimits {
                max_connections: 64,
                header_timeout: Duration::from_secs(1),
                body_timeout: Duration::from_secs(1),
                ..HttpLimits::DEFAULT
            };
            tokio::spawn(tcf_common::https::serve_listener_with(
                listener,
                None,
                router,
                limits,
                std::future::pending(),
            ));
            addr
        });
        (rt, addr)
    })
}

/// Sends `bytes` (then closes the write side when `eof`) and reads until the
/// server closes; panics if it does not within the deadline.
async fn throw(addr: SocketAddr, bytes: &[u8], eof: bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    if eof {
        let _ = s.shutdown().await;
    }
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
    .expect("the server closes the connection");
}

async fn still_serves(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(DEADLINE, s.read_to_string(&mut out))
        .await
        .expect("an answer")
        .unwrap();
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("ok"),
        "{out}"
    );
}

const VALID: &[&str] = &[
    "GET /x HTTP/1.1\r\nHost: x\r\n\r\n",
    "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "POST /api/v1/stop HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nContent-Length: 11\r\n\r\n{\"term\": 3}",
    "GET /metrics HTTP/1.0\r\n\r\n",
];

fn header_set() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "OPTIONS", "G\0T", ""]);
    let path = "(/[a-z0-9%?&=.]{0,30}){0,4}|\\*|[ -~]{0,40}";
    let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9", ""]);
    let name = "[A-Za-z-]{1,20}|Content-Length|Transfer-Encoding|Authorization|Host|Expect";
    let value =
        "[ -~]{0,64}|-1|99999999999999999999|chunked|100-continue|Bearer t|[\\x00-\\xff]{0,8}";
    let headers = prop::collection::vec((name, value), 0..24);
    let body = prop::collection::vec(any::<u8>(), 0..256);
    (method, path, version, headers, body).prop_map(|(m, p, v, hs, body)| {
        let mut out = format!("{m} {p} {v}\r\n").into_bytes();
        for (n, val) in hs {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(val.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        out
    })
}

fn input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..4096),
        (prop::sample::select(VALID), any::<prop::sample::Index>()).prop_map(|(v, i)| {
            let bytes = v.as_bytes();
            bytes[..i.index(bytes.len() + 1)].to_vec()
        }),
        (prop::sample::select(VALID), 1usize..4).prop_map(|(v, n)| v.repeat(n).into_bytes()),
        header_set(),
        // A huge head: over the 64 KiB read buffer.
        Just([b"GET /x HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 80 * 1024]].concat()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn http_listener_survives_garbage(bytes in input(), eof in prop::bool::weighted(0.9)) {
        let (rt, addr) = server();
        rt.block_on(async {
            throw(*addr, &bytes, eof).await;
            still_serves(*addr).await;
        });
    }
}
