//! Hostile clients against the real binaries' listeners (issue 10):
//!
//! * an idle-connection flood on the gateway's HTTP port under a low
//!   open-file limit is capped: the process keeps descriptors free, never
//!   hits `EMFILE`, and its gRPC port still serves the destination;
//! * the gateway's gRPC/TLS port drops a client that never sends a
//!   ClientHello after the handshake timeout, and caps connections;
//! * 100 stalled unauthenticated uploads do not grow the gateway's memory:
//!   they are refused from their headers;
//! * the gateway and the destination exit promptly on SIGTERM while clients
//!   hold partial requests and idle connections;
//! * a destination whose first gateway accepts TCP but never completes TLS
//!   reports it in `last_error` and streams from the next one.
//!
//! Waits are on conditions with generous deadlines.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::time::Duration;

use tcf_tests::{
    DEFAULT_DEADLINE, Etcd, Outcome, PortLease, Signal,
    federation::{RunningDestination, cluster_options},
    gateway::{GatewayOptions, RunningGateway},
    http, wait_until,
    worker::{RunningWorker, WorkerSpec},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
};

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The value of the first sample of `metric` whose labels contain `label`.
fn sample(metrics: &str, metric: &str, label: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A gateway reading a replicaset nobody serves (streams start on demand;
/// these tests never open one).
async fn lone_gateway(opts: GatewayOptions) -> (RunningGateway, PortLease) {
    let nowhere = PortLease::allocate().unwrap();
    let uri = format!("127.0.0.1:{}", nowhere.port());
    let gw = RunningGateway::start(&[("rs1", vec![uri])], opts)
        .await
        .expect("gateway");
    (gw, nowhere)
}

/// Connects and reads until the server closes; the task's result says
/// whether it closed (true) before the connection was dropped by the test.
fn hold(addr: String) -> (JoinHandle<bool>, tokio::sync::oneshot::Sender<()>) {
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let Ok(mut s) = TcpStream::connect(&addr).await else {
            return true;
        };
        let mut buf = [0u8; 1024];
        let read = async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::select! {
            () = read => true,
            _ = released => false,
        }
    });
    (task, release)
}

#[tokio::test]
async fn gateway_http_flood_under_a_low_file_limit_is_capped() {
    // LimitNOFILE=256: 128 kept for the process, 64 per listener.
    let (gw, _nowhere) = lone_gateway(GatewayOptions {
        open_files: Some(256),
        ..GatewayOptions::default()
    })
    .await;
    let pid = gw.process.pid().unwrap();
    let base = fd_count(pid);
    let flood = 300;
    let mut clients = Vec::new();
    for _ in 0..flood {
        clients.push(hold(gw.http_addr.clone()));
    }
    // All but the cap are closed at once; the held ones stay (until the
    // 10 s header timeout).
    wait_until(
        "the connections beyond the cap closed",
        DEFAULT_DEADLINE,
        || {
            let closed = clients.iter().filter(|(t, _)| t.is_finished()).count();
            async move {
                if closed >= flood - 64 {
                    Outcome::Ready(())
                } else {
                    Outcome::Pending(format!("{closed} of {flood} closed"))
                }
            }
        },
    )
    .await
    .unwrap();
    let fds = fd_count(pid);
    println!("gateway descriptors: {base} before the flood, {fds} during it (limit 256)");
    assert!(
        fds <= base + 64 + 8,
        "{fds} descriptors during the flood (base {base}, cap 64)"
    );
    // The gRPC port is not starved: the destination is served.
    let mut client = gw.client().await.expect("gRPC connect during the flood");
    assert_eq!(client.describe().await.unwrap().gateway, "test-gateway");
    for (_, release) in clients {
        let _ = release.send(());
    }
    let metrics = wait_until("GET /metrics after the flood", DEFAULT_DEADLINE, || async {
        http::get(&gw.http_addr, "/metrics")
            .await
            .map(|r| Outcome::Ready(r.body))
            .unwrap_or_else(|e| Outcome::Pending(format!("{e:#}")))
    })
    .await
    .unwrap();
    let refused = sample(&metrics, "tcf_listener_refused_total", "listener=\"http\"");
    assert!(
        refused.is_some_and(|n| n >= (flood - 64) as f64),
        "refused: {refused:?}\n{metrics}"
    );
    assert_eq!(
        sample(&metrics, "tcf_listener_connection_cap", "listener=\"http\""),
        Some(64.0)
    );
    let log = gw.process.log();
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(log.contains("open-file limit: soft 256"), "{log}");
}

#[tokio::test]
async fn gateway_grpc_drops_silent_tls_clients_and_caps_connections() {
    let (gw, _nowhere) = lone_gateway(GatewayOptions::default()).await;
    // Default cap 128: 200 clients that connect and never say a word.
    let n = 200;
    let silent: Vec<_> = (0..n).map(|_| hold(gw.grpc_addr.clone())).collect();
    wait_until(
        "the gRPC connections beyond the cap refused",
        DEFAULT_DEADLINE,
        || async {
            let Ok(r) = http::get(&gw.http_addr, "/metrics").await else {
                return Outcome::Pending("no metrics".into());
            };
            match sample(&r.body, "tcf_listener_refused_total", "listener=\"grpc\"") {
                Some(v) if v >= (n - 128) as f64 => Outcome::Ready(()),
                other => Outcome::Pending(format!("refused {other:?}")),
            }
        },
    )
    .await
    .unwrap();
    // Every silent client is dropped (the held ones after the 10 s TLS
    // handshake timeout), none released by the test.
    for (task, _release) in silent {
        let closed = tokio::time::timeout(DEFAULT_DEADLINE, task).await;
        assert!(
            matches!(closed, Ok(Ok(true))),
            "a silent client stayed connected"
        );
    }
    let r = http::get(&gw.http_addr, "/metrics").await.unwrap();
    let timeouts = sample(&r.body, "tcf_listener_timeouts_total", "kind=\"handshake\"");
    assert!(timeouts.is_some_and(|v| v >= 1.0), "{}", r.body);
    let mut client = gw
        .client()
        .await
        .expect("gRPC connect after the silent clients");
    assert_eq!(client.describe().await.unwrap().gateway, "test-gateway");
}

#[tokio::test]
async fn gateway_stalled_unauthenticated_uploads_do_not_grow_memory() {
    let (gw, _nowhere) = lone_gateway(GatewayOptions::default()).await;
    let pid = gw.process.pid().unwrap();
    let before = rss_kib(pid);
    let mut uploads = Vec::new();
    for _ in 0..100 {
        let addr = gw.http_addr.clone();
        uploads.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            s.write_all(
                b"POST /api/v1/stop HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                  Content-Length: 2097152\r\n\r\n",
            )
            .await
            .unwrap();
            let (mut rd, mut wr) = s.into_split();
            // Pushes up to 1 MB of the body; stalls when the server stops
            // reading (the socket buffers fill) and never finishes.
            let push = tokio::spawn(async move {
                let chunk = vec![b' '; 64 * 1024];
                for _ in 0..16 {
                    if wr.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                std::future::pending::<()>().await;
            });
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(DEFAULT_DEADLINE, rd.read_to_end(&mut answer)).await;
            push.abort();
            String::from_utf8_lossy(&answer).into_owned()
        }));
    }
    for u in uploads {
        let answer = u.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    let after = rss_kib(pid);
    println!(
        "gateway RSS: {before} KiB before 100 stalled 2 MB uploads, {after} KiB after \
         (ratio {:.2})",
        after as f64 / before as f64
    );
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

/// Holds, on `addr`: a partial request head, an idle keep-alive connection
/// and a partial body. Returns the sockets (kept open by the caller).
async fn hold_partial_requests(addr: &str) -> Vec<TcpStream> {
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(b"GET /metrics HTTP/1.1\r\nHost:")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    assert!(idle.read(&mut buf).await.unwrap() > 0);
    let mut body = TcpStream::connect(addr).await.unwrap();
    body.write_all(b"POST /api/v1/stop HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    vec![partial, idle, body]
}

#[tokio::test]
async fn replicators_exit_promptly_while_clients_hold_partial_requests() {
    let (gw, _nowhere) = lone_gateway(GatewayOptions::default()).await;
    let held = hold_partial_requests(&gw.http_addr).await;
    let mut grpc_silent = TcpStream::connect(&gw.grpc_addr).await.unwrap();
    grpc_silent.write_all(&[0x16, 0x03]).await.unwrap();
    gw.process.kill(Signal::SIGTERM).unwrap();
    let code = gw
        .process
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("the gateway exits within 15 s of SIGTERM");
    assert_eq!(code, Some(0), "{}", gw.process.log_tail(20));
    drop(held);

    let target = PortLease::allocate().unwrap();
    let d = RunningDestination::start_addresses(
        std::slice::from_ref(&gw.grpc_addr),
        &gw,
        "B",
        &[("rs1", vec![format!("127.0.0.1:{}", target.port())])],
        &[],
    )
    .await
    .expect("destination");
    let held = hold_partial_requests(&d.http_addr).await;
    d.process.kill(Signal::SIGTERM).unwrap();
    let code = d
        .process
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("the destination exits within 15 s of SIGTERM");
    assert_eq!(code, Some(0), "{}", d.process.log_tail(20));
    drop(held);
}

#[tokio::test]
async fn worker_exits_promptly_while_clients_hold_partial_requests() {
    let etcd = Etcd::start().await.expect("etcd");
    let nowhere = PortLease::allocate().unwrap();
    let w = RunningWorker::start(&WorkerSpec::lone(
        vec![format!("127.0.0.1:{}", nowhere.port())],
        etcd.endpoint(),
    ))
    .await
    .expect("worker");
    let held = hold_partial_requests(&w.http_addr).await;
    w.process.kill(Signal::SIGTERM).unwrap();
    let code = w
        .process
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("the worker exits within 15 s of SIGTERM");
    assert_eq!(code, Some(0), "{}", w.process.log_tail(20));
    drop(held);
}

#[tokio::test]
async fn destination_skips_a_gateway_that_never_completes_tls() {
    let a = cluster_options("a", "rs1")
        .start_replicaset()
        .await
        .expect("A");
    let b = cluster_options("b", "rs1")
        .start_replicaset()
        .await
        .expect("B");
    let gw = RunningGateway::start(&[("rs1", a.uris())], GatewayOptions::default())
        .await
        .expect("gateway");
    // Accepts TCP and never answers: no ServerHello ever.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let accepting = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let d = RunningDestination::start_addresses(
        &[silent_addr.clone(), gw.grpc_addr.clone()],
        &gw,
        "B",
        &[("rs1", b.uris())],
        &["  connect_timeout: 1s"],
    )
    .await
    .expect("destination");
    let rs = d
        .wait_state("rs1", "streaming")
        .await
        .expect("streams from the healthy gateway");
    let error = rs["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains(&format!(
            "TLS handshake with {silent_addr} timed out after 1s"
        )),
        "last_error: {rs}"
    );
    assert_eq!(rs["gateway"], gw.grpc_addr.as_str(), "{rs}");
    let log = d.process.log();
    assert!(
        log.contains("gateway unavailable") && log.contains(&silent_addr),
        "{log}"
    );
    accepting.abort();
}
