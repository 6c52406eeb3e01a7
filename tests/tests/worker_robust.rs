//! The worker against trouble that is not a cluster's death: etcd down or
//! hanging at start, a shutdown during a switchover, its own HTTP port
//! unresponsive. Real clusters, etcd, replicators and workers.

#![allow(clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tcf_tests::{
    PortLease, http, wait_until,
    worker::{COORDINATOR, Paired, PairedOptions, RunningWorker, TOGGLE_TOKEN, WorkerSpec},
};

const SOON: Duration = Duration::from_secs(90);
/// How long a process may take to exit after SIGTERM ("a few seconds";
/// generous for a loaded machine).
const EXIT: Duration = Duration::from_secs(15);

fn lone_spec(etcd: &str) -> WorkerSpec {
    WorkerSpec::lone(vec!["127.0.0.1:1".into()], etcd.into())
}

/// Starts a worker against `etcd`, waits until it answers 503 naming the
/// endpoint, sends `signal` and returns how long it took to exit.
async fn starts_then_stops(etcd: &str, signal: Signal) -> Duration {
    let w = RunningWorker::spawn(&lone_spec(etcd)).expect("spawn");
    let body = wait_until("the worker to answer 503 while starting", SOON, || async {
        let r = http::get(&w.http_addr, "/tcf/is_active").await.ok()?;
        (r.status == 503).then_some(r.body)
    })
    .await
    .expect("503 while starting");
    let host_port = etcd.trim_start_matches("http://");
    assert!(body.contains(host_port), "names the endpoint: {body}");
    assert!(w.process.is_running(), "{}", w.process.log_tail(20));
    let sent = Instant::now();
    w.process.kill(signal).expect("signal");
    let code = w.process.wait_exit(EXIT).await.expect("exits promptly");
    let took = sent.elapsed();
    println!(
        "etcd {etcd}: {signal:?} -> exit {code:?} after {} ms; 503 body: {body}",
        took.as_millis()
    );
    let log = w.process.log();
    assert!(log.contains(host_port), "the log names etcd: {log}");
    took
}

#[tokio::test]
async fn a_worker_waiting_for_a_refusing_etcd_answers_503_and_stops_on_sigterm_and_sigint() {
    // Nothing listens on a leased, unbound port: connections are refused.
    let port = PortLease::allocate().expect("port");
    let etcd = format!("http://127.0.0.1:{}", port.port());
    starts_then_stops(&etcd, Signal::SIGTERM).await;
    starts_then_stops(&etcd, Signal::SIGINT).await;
}

#[tokio::test]
async fn a_worker_waiting_for_a_hanging_etcd_answers_503_and_stops_on_sigterm() {
    // Accepts TCP and never answers: every etcd request hangs until its timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let etcd = format!("http://{}", listener.local_addr().expect("addr"));
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    starts_then_stops(&etcd, Signal::SIGTERM).await;
    held.abort();
}

#[tokio::test]
async fn serial_a_switchover_in_flight_does_not_delay_exit_and_the_next_worker_finishes_it() {
    let p = Paired::start().await.expect("setup");
    p.wa.wait_is_active(200, SOON).await.expect("A active");
    // The gateway reading A frozen, then a row written on A: B's destination
    // still answers and reports no lag (it has not seen the row), so the
    // prechecks pass, and the switch waits in `drain` for that row.
    p.gw_a
        .process
        .kill(Signal::SIGSTOP)
        .expect("freeze the gateway reading A");
    p.a.master()
        .eval("box.space.test:replace{1, 'unshipped', 1}", &[])
        .await
        .expect("a row the gateway does not ship");
    let addr = p.wb.http_addr.clone();
    let request = tokio::spawn(async move {
        http::request_within("POST", &addr, "/tcf/switchover", Some(TOGGLE_TOKEN), SOON).await
    });
    wait_until("the switch to wait in its drain phase", SOON, || async {
        let info = p.wa.info().await.ok()?;
        (info["switch"]["phase"] == "drain").then_some(())
    })
    .await
    .expect("drain");
    let sent = Instant::now();
    p.wb.process
        .kill(Signal::SIGTERM)
        .expect("SIGTERM B's worker");
    p.wb.process
        .wait_exit(EXIT)
        .await
        .expect("B's worker exits while its switchover request waits");
    println!(
        "worker with a switchover in flight exited {} ms after SIGTERM",
        sent.elapsed().as_millis()
    );
    let answered = request.await.expect("join");
    assert!(
        answered.is_err() || answered.as_ref().is_ok_and(|r| r.status != 200),
        "the interrupted request did not report success: {answered:?}"
    );
    p.gw_a.process.kill(Signal::SIGCONT).expect("thaw");
    p.wb.process.spawn().expect("restart B's worker");
    // The record, not the interrupted request, carries the switch: the
    // restarted worker finishes it (or its deadline rolls it back).
    let info = wait_until("the interrupted switch to end", SOON, || async {
        let info = p.wa.info().await.ok()?;
        matches!(
            info["switch"]["phase"].as_str(),
            Some("done" | "rolled_back")
        )
        .then_some(info)
    })
    .await
    .expect("switch ends");
    let actives = ["A", "B"]
        .iter()
        .filter(|c| info["clusters"][**c] == "active")
        .count();
    assert_eq!(actives, 1, "{info}");
    println!(
        "interrupted switch ended {}: {}",
        info["switch"]["phase"], info["clusters"]
    );
}

/// Waits until A is active and B passive, A's workers have recorded A's
/// instances (the coordinator asks them directly when A's workers do not
/// answer), and B's worker leads (a leader probes its own cluster locally:
/// A's worker, if it leads, is restarted; its lease is revoked on SIGTERM).
async fn b_judges_a(p: &Paired) {
    p.wa.wait_is_active(200, SOON).await.expect("A active");
    p.wb.wait_is_active(418, SOON).await.expect("B passive");
    wait_until("A's membership to be recorded", SOON, || async {
        let h = p.wa.health().await.ok()?;
        (!h.replicasets.is_empty()).then_some(())
    })
    .await
    .expect("membership");
    let leader = || async {
        let info = p.wb.info().await.ok()?;
        info["leader"].as_str().map(str::to_owned)
    };
    if wait_until("a leader", SOON, leader)
        .await
        .expect("leader")
        .starts_with("A@")
    {
        p.wa.process.stop().await.expect("stop A's worker");
        p.wa.process.spawn().expect("restart A's worker");
        p.wa.wait_is_active(200, SOON).await.expect("A active");
    }
    wait_until("B's worker to lead", SOON, || async {
        leader().await.filter(|l| l.starts_with("B@"))
    })
    .await
    .expect("B leads");
}

#[tokio::test]
async fn serial_a_worker_whose_http_does_not_answer_does_not_fail_its_cluster_over() {
    let p = Paired::start_with(PairedOptions {
        coordinator: true,
        isolate_a: true,
        ..PairedOptions::default()
    })
    .await
    .expect("setup");
    b_judges_a(&p).await;
    // The links between the workers die (a_links: [A->etcd, A->B, B->A]);
    // A's worker still reaches etcd and A's masters answer.
    p.a_links[1].cut(true);
    p.a_links[2].cut(true);
    let verdict = wait_until("B's coordinator to judge A from outside", SOON, || async {
        let info = p.wb.info().await.ok()?;
        let v = &info["coordinator"]["verdict"];
        let leading = info["coordinator"]["leading"] == true;
        let judged = v["problem"]
            .as_str()
            .is_some_and(|p| p.contains("asked directly") && p.contains("not counted"));
        (leading && judged).then(|| v.clone())
    })
    .await
    .expect("verdict");
    println!("B's verdict on A while A's worker does not answer B: {verdict}");
    // Longer than failover_timeout (6 s) and max_suspect_counts checks: no failover.
    assert!(COORDINATOR.contains("failover_timeout: 6s"));
    let window = Duration::from_secs(15);
    let watched = Instant::now();
    while watched.elapsed() < window {
        let info = p.wb.info().await.expect("B's info");
        assert_eq!(info["clusters"]["A"], "active", "{info}");
        assert_eq!(info["term"], 0, "{info}");
        assert_eq!(info["coordinator"]["verdict"]["suspect_count"], 0, "{info}");
        assert_eq!(p.wa.is_active().await.ok(), Some(200), "A keeps serving");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    p.a_links[1].cut(false);
    p.a_links[2].cut(false);
}

/// Open descriptors of process `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Keeps about `n` idle TCP connections open to `addr` until `stop`, opening
/// a new one whenever the server closes one (as a flooding client would).
fn flood(
    addr: String,
    n: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let (addr, mut stop) = (addr.clone(), stop.clone());
            tokio::spawn(async move {
                while !*stop.borrow() {
                    let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    let mut buf = [0u8; 64];
                    // Idle: held until the server closes it (or the test ends).
                    tokio::select! {
                        _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf) => {}
                        _ = stop.changed() => {}
                    }
                }
            })
        })
        .collect()
}

#[tokio::test]
async fn serial_an_idle_connection_flood_on_the_active_worker_fails_nothing_over() {
    // LimitNOFILE=256 on A's worker (the hard limit too: it cannot raise it).
    let p = Paired::start_with(PairedOptions {
        coordinator: true,
        a_worker_open_files: Some(256),
        ..PairedOptions::default()
    })
    .await
    .expect("setup");
    b_judges_a(&p).await;
    let pid = p.wa.process.pid().expect("pid");
    let before = fd_count(pid);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let clients = flood(p.wa.http_addr.clone(), 1100, stopped);
    // Longer than failover_timeout (6 s) with max_suspect_counts checks.
    assert!(COORDINATOR.contains("failover_timeout: 6s"));
    let (mut most_fds, mut judged) = (before, None);
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(20) {
        most_fds = most_fds.max(fd_count(pid));
        let info = p.wb.info().await.expect("B's info");
        assert_eq!(info["clusters"]["A"], "active", "no failover: {info}");
        assert_eq!(info["term"], 0, "{info}");
        if let Some(problem) = info["coordinator"]["verdict"]["problem"].as_str() {
            judged.get_or_insert_with(|| problem.to_owned());
        }
        assert!(p.wa.process.is_running(), "{}", p.wa.process.log_tail(30));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = stop.send(true);
    for c in clients {
        let _ = c.await;
    }
    println!(
        "flood of 1100 idle connections on A's worker (LimitNOFILE=256): descriptors {before} before, at most {most_fds} during; A active, term 0; B's verdict: {judged:?}"
    );
    assert!(
        most_fds < 256,
        "descriptors bounded below the limit: {most_fds}"
    );
    let log = p.wa.process.log();
    assert!(
        !log.contains("Too many open files"),
        "no EMFILE in A's worker log"
    );
    // After the flood A's worker serves again; B stays passive.
    p.wa.wait_is_active(200, SOON)
        .await
        .expect("A serves again");
    assert_eq!(p.wb.is_active().await.expect("B"), 418);
}
