//! The bounded HTTP listener over real sockets: the connection cap (and the
//! descriptors it bounds), header, body and idle timeouts, a bounded
//! shutdown while clients hold partial requests, and the token checked
//! before any body byte is read.
//!
//! Every wait is on a condition with a generous deadline; the limits under
//! test are short (about 1 s) so that a server without them fails at the
//! deadline instead of passing.

// Test helpers outside #[test] fns: panicking on setup failure is the point.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Bytes,
    extract::DefaultBodyLimit,
    routing::{get, post},
};
use tcf_common::{
    auth::{Role, Tokens},
    config::Secret,
    control,
    https::serve_listener_with,
    listen::HttpLimits,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

/// How long anything may take before the test fails. Far above the limits
/// under test (1 s), so a pass never depends on timing.
const DEADLINE: Duration = Duration::from_secs(20);

const TOKEN: &str = "toggle-token";

fn limits() -> HttpLimits {
    HttpLimits {
        max_connections: 8,
        header_timeout: Duration::from_secs(60),
        body_timeout: Duration::from_secs(60),
        handshake_timeout: Duration::from_secs(60),
        shutdown_grace: Duration::from_millis(500),
        max_header_bytes: 16 * 1024,
    }
}

struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(limits: HttpLimits) -> Self {
        let tokens = Arc::new(Tokens::from_secrets([(
            Role::Toggle,
            &Secret::new(TOKEN.to_owned()),
        )]));
        let router = Router::new()
            .route("/x", get(|| async { "ok" }))
            .route("/echo", post(|b: Bytes| async move { b }))
            .route("/forever", get(std::future::pending::<&'static str>))
            .merge(control::router(tokens, |run, term, _reset| {
                Ok((run, term.unwrap_or(0)))
            }))
            .layer(DefaultBodyLimit::max(64 * 1024));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            serve_listener_with(listener, None, router, limits, shutdown)
                .await
                .unwrap();
        });
        Self { addr, stop, task }
    }

    async fn stop_within(self, limit: Duration) {
        self.stop.cancel();
        tokio::time::timeout(limit, self.task)
            .await
            .expect("the server stops within the deadline")
            .unwrap();
    }
}

/// Reads what the server sends until it closes the connection (EOF or
/// reset), within [`DEADLINE`]; panics if it is still open then.
async fn read_until_closed(s: &mut TcpStream, what: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .unwrap_or_else(|_| panic!("{what}: the server did not close the connection"));
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends a keep-alive GET and reads one whole response (`Content-Length`).
async fn get_keep_alive(s: &mut TcpStream, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(DEADLINE, async {
        loop {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before a whole response");
            out.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&out);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap();
                if body.len() >= len {
                    return text.into_owned();
                }
            }
        }
    })
    .await
    .expect("a whole response")
}

/// One `Connection: close` request; `None` when the server closed the
/// connection without answering.
async fn request_once(addr: SocketAddr, raw: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let _ = s.write_all(raw.as_bytes()).await;
    let out = read_until_closed(&mut s, "request").await;
    (!out.is_empty()).then_some(out)
}

const GET_X: &str = "GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test]
async fn cap_holds_extra_connections_are_closed_and_descriptors_stay_bounded() {
    let base_fds = open_fds();
    let server = Server::start(limits()).await;
    let cap = limits().max_connections;
    // `cap` keep-alive connections, each admitted (it got an answer) and
    // now idle: they hold the whole cap.
    let mut held = Vec::new();
    for _ in 0..cap {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        assert!(
            get_keep_alive(&mut s, "/x")
                .await
                .starts_with("HTTP/1.1 200")
        );
        held.push(s);
    }
    // Beyond the cap every connection is accepted and closed at once, with
    // no answer, even a valid request: refused promptly, never left hanging.
    let extra = 5 * cap;
    let mut refused = Vec::new();
    for i in 0..extra {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        if i % 2 == 0 {
            let _ = s.write_all(GET_X.as_bytes()).await;
        }
        let answer = read_until_closed(&mut s, "a connection beyond the cap").await;
        assert_eq!(answer, "", "served beyond the cap");
        refused.push(s);
    }
    // The server side holds `cap` sockets, not `cap + extra`: the test's own
    // sockets are `cap + extra`, plus a few for the listener and runtime.
    let server_side = open_fds() - base_fds - (cap + extra);
    assert!(
        server_side <= cap + 4,
        "{server_side} descriptors on the server side with a cap of {cap}"
    );
    // A slot freed is a slot to use again.
    drop(refused);
    drop(held.pop());
    tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(r) = request_once(server.addr, GET_X).await {
                assert!(r.starts_with("HTTP/1.1 200"), "{r}");
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("served again once a connection closed");
    drop(held);
    server.stop_within(DEADLINE).await;
}

#[tokio::test]
async fn slowloris_header_is_cut_after_the_header_timeout() {
    let server = Server::start(HttpLimits {
        header_timeout: Duration::from_secs(1),
        ..limits()
    })
    .await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (mut rd, mut wr) = s.into_split();
    // Trickles a header line every 100 ms for ever: the head never ends.
    let trickle = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for i in 0u64.. {
            tick.tick().await;
            if wr
                .write_all(format!("X-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(DEADLINE, async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    trickle.abort();
    assert!(closed.is_ok(), "a trickled header kept the connection open");
    assert!(
        request_once(server.addr, GET_X)
            .await
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );
    server.stop_within(DEADLINE).await;
}

#[tokio::test]
async fn stalled_body_is_cut_after_the_body_timeout() {
    let server = Server::start(HttpLimits {
        body_timeout: Duration::from_secs(1),
        ..limits()
    })
    .await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly a part")
        .await
        .unwrap();
    let answer = read_until_closed(&mut s, "a stalled body").await;
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A body that arrives is echoed.
    let ok = request_once(
        server.addr,
        "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await
    .unwrap();
    assert!(
        ok.starts_with("HTTP/1.1 200") && ok.ends_with("hello"),
        "{ok}"
    );
    server.stop_within(DEADLINE).await;
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = Server::start(HttpLimits {
        header_timeout: Duration::from_secs(1),
        ..limits()
    })
    .await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        get_keep_alive(&mut s, "/x")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert_eq!(
        read_until_closed(&mut s, "an idle keep-alive connection").await,
        ""
    );
    server.stop_within(DEADLINE).await;
}

#[tokio::test]
async fn shutdown_is_bounded_while_clients_hold_connections() {
    // Default timeouts (10 s) and more: only the shutdown grace may end it.
    let server = Server::start(HttpLimits {
        header_timeout: Duration::from_secs(3600),
        body_timeout: Duration::from_secs(3600),
        ..limits()
    })
    .await;
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    partial
        .write_all(b"GET /x HTTP/1.1\r\nHost:")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        get_keep_alive(&mut idle, "/x")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let mut body = TcpStream::connect(server.addr).await.unwrap();
    body.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
        .await
        .unwrap();
    let mut forever = TcpStream::connect(server.addr).await.unwrap();
    forever
        .write_all(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Each of them reached the server (a request that it answers on another
    // connection was accepted after them).
    assert!(
        request_once(server.addr, GET_X)
            .await
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );
    server.stop_within(DEADLINE).await;
    for (mut s, what) in [
        (partial, "partial head"),
        (idle, "idle"),
        (body, "partial body"),
        (forever, "request in flight"),
    ] {
        read_until_closed(&mut s, what).await;
    }
}

#[tokio::test]
async fn token_is_checked_before_any_body_byte_is_read() {
    let server = Server::start(HttpLimits {
        max_connections: 256,
        ..limits()
    })
    .await;
    // 100 uploads announcing 2 MB each, without a token, not one body byte
    // sent: each is answered 401 from its headers alone.
    let mut uploads = Vec::new();
    for _ in 0..100 {
        let addr = server.addr;
        uploads.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(
                b"POST /api/v1/stop HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n",
            )
            .await
            .unwrap();
            read_until_closed(&mut s, "an unauthenticated upload").await
        }));
    }
    for u in uploads {
        let answer = u.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    // A wrong token too, and a low role would be 403 (covered in auth tests).
    let wrong = request_once(
        server.addr,
        "POST /api/v1/stop HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\nContent-Length: 2097152\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    // With the token, a body over the cap is refused after reading at most
    // the cap: 64 KiB sent of 2 MB announced, and the answer is 413.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/stop HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 2097152\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let _ = s.write_all(&vec![b' '; 64 * 1024]).await;
    let answer = read_until_closed(&mut s, "an oversized authorised body").await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // A good command works.
    let ok = request_once(
        server.addr,
        &format!(
            "POST /api/v1/stop HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 11\r\n\r\n{{\"term\": 3}}"
        ),
    )
    .await
    .unwrap();
    assert!(
        ok.starts_with("HTTP/1.1 200") && ok.ends_with(r#"{"running":false,"term":3}"#),
        "{ok}"
    );
    server.stop_within(DEADLINE).await;
}
