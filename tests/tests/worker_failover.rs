//! The coordinator end to end: election, automatic and manual failover with
//! the loss point, isolation, etcd down, the old active coming back
//! `diverged` and its resync. Real clusters, etcd, replicators and workers.

#![allow(clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use serde_json::Value as Json;
use tcf_api::progress;
use tcf_iproto::{ConnectOptions, Connection, Vclock};
use tcf_tests::{
    Tarantool,
    federation::{REPLICATED_SPACES, Writer, wait_count, wait_equal, write_burst},
    gateway::{ADMIN_TOKEN, INFO_TOKEN},
    http, wait_until,
    worker::{APP_PASSWORD, APP_USER, COORDINATOR, Paired, PairedOptions, RunningWorker},
};

const SOON: Duration = Duration::from_secs(90);

fn coordinated() -> PairedOptions {
    PairedOptions {
        coordinator: true,
        ..PairedOptions::default()
    }
}

async fn wait_leader(p: &Paired) -> String {
    wait_until("a coordinator to be elected", SOON, || async {
        p.wa.info()
            .await
            .ok()
            .and_then(|i| i["leader"].as_str().map(str::to_owned))
    })
    .await
    .expect("leader")
}

async fn post(w: &RunningWorker, path: &str, token: &str) -> (u16, Json) {
    let r = http::request_within("POST", &w.http_addr, path, Some(token), SOON)
        .await
        .expect("http");
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(Json::String(r.body)),
    )
}

/// The position `target` applied from `source/rs`: the component-wise
/// maximum of its progress rows, and the source replicaset UUID recorded,
/// read through the rows' one definition (`tcf_api::progress`).
async fn progress(target: &Tarantool, source: &str, rs: &str) -> (Vclock, String) {
    let out = target
        .eval(
            progress::LUA,
            &progress::Op::Read { cluster: source }.args(),
        )
        .await
        .expect("progress");
    let rows: Vec<progress::Row> = progress::decode_answer(&out).expect("progress rows");
    let mut vclock = Vclock::new();
    let mut uuid = String::new();
    for r in rows.iter().filter(|r| r.source_replicaset == rs) {
        vclock.merge(&r.vclock);
        if !r.source_uuid.is_empty() {
            uuid.clone_from(&r.source_uuid);
        }
    }
    (vclock, uuid)
}

fn loss_point_of(body: &Json, uuid: &str) -> Vclock {
    serde_json::from_value(body[uuid].clone()).unwrap_or_else(|e| panic!("{body}: {e}"))
}

async fn app_can_log_in(t: &Tarantool) -> bool {
    Connection::connect(
        &t.uri(),
        &ConnectOptions::new().credentials(APP_USER, APP_PASSWORD),
    )
    .await
    .is_ok()
}

#[tokio::test]
async fn serial_automatic_failover_when_the_active_master_dies() {
    let p = Paired::start_with(coordinated()).await.expect("setup");
    p.wa.wait_is_active(200, SOON).await.expect("probe");
    p.wb.wait_is_active(418, SOON).await.expect("probe");
    let leader = wait_leader(&p).await;
    write_burst(p.a.master(), 1, 200).await.expect("writes");
    wait_equal(p.a.master(), p.b.master(), &REPLICATED_SPACES)
        .await
        .expect("B caught up");
    let killed = Instant::now();
    p.a.master()
        .kill(nix::sys::signal::Signal::SIGKILL)
        .expect("kill A's master");
    p.wb.wait_is_active(200, SOON).await.expect("probe");
    let took = killed.elapsed();
    println!(
        "automatic failover (A's master SIGKILLed, leader {leader}): B answered 200 after {} ms; {COORDINATOR}",
        took.as_millis()
    );
    p.wa.wait_is_active(418, SOON).await.expect("probe");
    let info = p.wb.info().await.expect("info");
    assert_eq!(info["clusters"]["A"], "diverged", "{info}");
    assert_eq!(info["clusters"]["B"], "active", "{info}");
    assert_eq!(info["term"], 1, "{info}");
    let entry = &info["history"][0];
    assert_eq!(entry["kind"], "failover", "{info}");
    let (applied, uuid) = progress(p.b.master(), "A", "rs1").await;
    let loss = loss_point_of(&entry["loss_point"], &uuid);
    println!("loss point reported: {loss} (B's progress from A/rs1: {applied})");
    assert_eq!(loss, applied, "the loss point is B's applied position");
    assert!(!loss.is_empty(), "B had applied A's writes");
    assert!(app_can_log_in(p.b.master()).await, "B is unfenced");
}

#[tokio::test]
async fn serial_failover_by_hand_reports_the_loss_point_and_resync_reloads_the_old_active() {
    let p = Paired::start_with(coordinated()).await.expect("setup");
    p.wa.wait_is_active(200, SOON).await.expect("probe");
    write_burst(p.a.master(), 1, 100).await.expect("writes");
    wait_equal(p.a.master(), p.b.master(), &REPLICATED_SPACES)
        .await
        .expect("B caught up");
    let before_tail = p.a.master().vclock().await.expect("vclock");
    // The A -> B link dies; A takes 50 more transactions B never sees.
    p.gw_a.process.kill9().expect("kill A's gateway");
    write_burst(p.a.master(), 1000, 50).await.expect("tail");

    let (code, body) = post(&p.wb, "/tcf/failover", INFO_TOKEN).await;
    assert_eq!(code, 403, "an info token cannot fail over: {body}");
    let (code, body) = post(&p.wb, "/tcf/failover", ADMIN_TOKEN).await;
    assert_eq!(code, 200, "{body}");
    println!("manual failover: {body}");
    let (applied, uuid) = progress(p.b.master(), "A", "rs1").await;
    let loss = loss_point_of(&body["failover"]["loss_point"], &uuid);
    assert_eq!(loss, applied, "loss point = B's progress");
    assert_eq!(
        loss,
        before_tail.without_local(),
        "B had everything before the tail"
    );
    let history = p.wb.info().await.expect("info")["history"][0].clone();
    assert_eq!(
        loss_point_of(&history["loss_point"], &uuid),
        loss,
        "{history}"
    );

    // The old active: diverged, fenced, not promotable.
    p.wa.wait_is_active(418, SOON).await.expect("probe");
    assert_eq!(
        p.wa.info().await.expect("info")["clusters"]["A"],
        "diverged"
    );
    wait_until("A fenced", SOON, || async {
        !app_can_log_in(p.a.master()).await
    })
    .await
    .expect("fenced");
    let (code, body) = post(&p.wa, "/tcf/failover", ADMIN_TOKEN).await;
    assert_eq!(code, 409, "a diverged cluster is never promoted: {body}");

    // Resync: the tail is reported, then A is reloaded from B.
    let (code, body) = post(&p.wa, "/tcf/resync", ADMIN_TOKEN).await;
    assert_eq!(code, 200, "{body}");
    println!("resync: {body}");
    let tail = body["report"]["tail"]
        .as_object()
        .expect("tail")
        .values()
        .next()
        .cloned();
    let rows = tail.as_ref().and_then(|t| t["rows"].as_u64()).unwrap_or(0);
    assert!(rows >= 50, "the 50 tail transactions are reported: {body}");
    p.d_a
        .wait_state("rs1", "streaming")
        .await
        .expect("A reloaded");
    wait_equal(p.b.master(), p.a.master(), &REPLICATED_SPACES)
        .await
        .expect("A is an exact copy of B");
    assert_eq!(p.wa.info().await.expect("info")["clusters"]["A"], "passive");
    // ... that then replicates normally.
    write_burst(p.b.master(), 5000, 30)
        .await
        .expect("writes on B");
    wait_equal(p.b.master(), p.a.master(), &REPLICATED_SPACES)
        .await
        .expect("B's new writes reach A");
}

#[tokio::test]
async fn serial_failover_is_refused_to_a_stopped_or_loading_peer() {
    let p = Paired::start().await.expect("setup");
    p.wa.wait_is_active(200, SOON).await.expect("probe");
    // B's incoming destination stopped (at a term the workers do not reach).
    let stop = http::request(
        "POST",
        &p.d_b.http_addr,
        "/api/v1/stop",
        Some(ADMIN_TOKEN),
        Some("{\"term\": 99}"),
    )
    .await
    .expect("stop");
    assert_eq!(stop.status, 200, "{}", stop.body);
    p.d_b.wait_state("rs1", "stopped").await.expect("stopped");
    let (code, body) = post(&p.wb, "/tcf/failover", ADMIN_TOKEN).await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("stopped"),
        "{body}"
    );
    let start = http::request(
        "POST",
        &p.d_b.http_addr,
        "/api/v1/start",
        Some(ADMIN_TOKEN),
        Some("{\"term\": 99}"),
    )
    .await
    .expect("start");
    assert_eq!(start.status, 200, "{}", start.body);
    p.d_b
        .wait_state("rs1", "streaming")
        .await
        .expect("streaming");
    // An unfinished initial load recorded in B's progress space.
    p.b.master()
        .eval(
            "local P, s = tcf_progress_v1, box.space._tcf_progress_memtx \
             local r = P.decode(s:get{'A', 'rs1'}) r.state = 'loading' s:replace(P.encode(r))",
            &[],
        )
        .await
        .expect("mark loading");
    let (code, body) = post(&p.wb, "/tcf/failover", ADMIN_TOKEN).await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap_or_default().contains("load"),
        "{body}"
    );
    let info = p.wa.info().await.expect("info");
    assert_eq!(info["term"], 0, "nothing switched: {info}");
    assert_eq!(info["clusters"]["A"], "active", "{info}");
}

#[tokio::test]
async fn serial_etcd_down_switches_nothing_and_the_active_keeps_serving() {
    let p = Paired::start_with(coordinated()).await.expect("setup");
    p.wa.wait_is_active(200, SOON).await.expect("probe");
    p.wb.wait_is_active(418, SOON).await.expect("probe");
    wait_leader(&p).await;
    p.etcd.stop().await.expect("stop etcd");
    // Longer than failover_timeout + fencing_timeout: A answers 200 all along
    // (confirmed by B's worker), B 418, and the state is flagged stale.
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(12) {
        assert_eq!(p.wa.is_active().await.expect("A"), 200, "A keeps serving");
        assert_eq!(p.wb.is_active().await.expect("B"), 418, "B stays passive");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let info = p.wa.info().await.expect("info");
    assert_eq!(info["stale"], true, "flagged stale: {info}");
    assert_eq!(info["confirmed"], true, "confirmed by the peer: {info}");
    assert!(app_can_log_in(p.a.master()).await, "A is not fenced");
    p.etcd.restart().await.expect("etcd back");
    p.etcd.wait_healthy().await.expect("healthy");
    let info = wait_until("fresh state from etcd", SOON, || async {
        p.wa.info().await.ok().filter(|i| i["stale"] == false)
    })
    .await
    .expect("fresh");
    assert_eq!(info["term"], 0, "nothing switched: {info}");
}

#[tokio::test]
async fn serial_isolated_active_stops_answering_before_the_peer_is_promoted() {
    let opts = PairedOptions {
        coordinator: true,
        isolate_a: true,
        ..PairedOptions::default()
    };
    let p = Paired::start_with(opts).await.expect("setup");
    p.wa.wait_is_active(200, SOON).await.expect("probe");
    p.wb.wait_is_active(418, SOON).await.expect("probe");
    wait_leader(&p).await;
    let cut = Instant::now();
    for l in &p.a_links {
        l.cut(true);
    }
    let (mut a_stopped, mut b_promoted) = (None, None);
    // Both probes sampled every 50 ms: which side changed first matters.
    let deadline = Instant::now() + SOON;
    while (a_stopped.is_none() || b_promoted.is_none()) && Instant::now() < deadline {
        if a_stopped.is_none() && p.wa.is_active().await.ok() != Some(200) {
            a_stopped = Some(cut.elapsed());
        }
        if b_promoted.is_none() && p.wb.is_active().await.ok() == Some(200) {
            b_promoted = Some(cut.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (a_stopped, b_promoted) = (
        a_stopped.expect("A stopped"),
        b_promoted.expect("B promoted"),
    );
    println!(
        "isolation: A stopped answering 200 after {} ms, B promoted after {} ms",
        a_stopped.as_millis(),
        b_promoted.as_millis()
    );
    assert!(a_stopped < b_promoted, "never two clusters answering 200");
    // ... and A does not come back to 200 (e.g. through a peer confirmation).
    let after = Instant::now();
    while after.elapsed() < Duration::from_secs(3) {
        assert_ne!(
            p.wa.is_active().await.ok(),
            Some(200),
            "A answered 200 again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_until("isolated A fenced", SOON, || async {
        !app_can_log_in(p.a.master()).await
    })
    .await
    .expect("A fences itself");
}

#[tokio::test]
async fn serial_a_new_leader_takes_over_and_still_fails_over() {
    let opts = PairedOptions {
        coordinator: true,
        second_workers: true,
        ..PairedOptions::default()
    };
    let p = Paired::start_with(opts).await.expect("setup");
    p.wa.wait_is_active(200, SOON).await.expect("probe");
    let first = wait_leader(&p).await;
    let workers = [&p.wa, &p.wb, &p.more[0], &p.more[1]];
    let (i, leader) = workers
        .iter()
        .enumerate()
        .find(|(_, w)| first.ends_with(&w.http_addr))
        .expect("the leader is one of the workers");
    leader.process.kill9().expect("kill the leader");
    let survivors: Vec<&RunningWorker> = workers
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, w)| *w)
        .collect();
    let next = wait_until("another leader", SOON, || async {
        for w in &survivors {
            if let Some(l) = w
                .info()
                .await
                .ok()
                .and_then(|i| i["leader"].as_str().map(str::to_owned))
                && l != first
            {
                return Some(l);
            }
        }
        None
    })
    .await
    .expect("new leader");
    println!("leader {first} killed; {next} leads");
    let killed = Instant::now();
    p.a.master()
        .kill(nix::sys::signal::Signal::SIGKILL)
        .expect("kill A's master");
    let b_worker = survivors
        .iter()
        .find(|w| w.http_addr == p.wb.http_addr || w.http_addr == p.more[1].http_addr)
        .expect("a B worker survives");
    b_worker.wait_is_active(200, SOON).await.expect("probe");
    println!(
        "failover under the new leader: B answered 200 {} ms after A's master died",
        killed.elapsed().as_millis()
    );
}

#[tokio::test]
async fn serial_one_replicaset_without_master_fails_the_cluster_over() {
    let opts = PairedOptions {
        coordinator: true,
        two_replicasets: true,
        ..PairedOptions::default()
    };
    let p = Paired::start_with(opts).await.expect("setup");
    p.wa.wait_is_active(200, SOON).await.expect("probe");
    wait_leader(&p).await;
    let (a2, _) = p.rs2.as_ref().expect("rs2");
    let killed = Instant::now();
    a2.master()
        .kill(nix::sys::signal::Signal::SIGKILL)
        .expect("kill A/rs2's master");
    p.wb.wait_is_active(200, SOON).await.expect("probe");
    println!(
        "failover (only A/rs2's master SIGKILLed): {} ms",
        killed.elapsed().as_millis()
    );
    let info = p.wb.info().await.expect("info");
    let loss = info["history"][0]["loss_point"]
        .as_object()
        .expect("loss point")
        .len();
    assert_eq!(loss, 2, "a loss point per replicaset: {info}");
}

#[tokio::test]
async fn serial_ship_tail_sends_the_old_actives_tail_to_the_new_active() {
    let opts = PairedOptions {
        coordinator: true,
        on_return: Some("ship_tail".into()),
        ..PairedOptions::default()
    };
    let p = Paired::start_with(opts).await.expect("setup");
    p.wa.wait_is_active(200, SOON).await.expect("probe");
    write_burst(p.a.master(), 1, 100).await.expect("writes");
    wait_equal(p.a.master(), p.b.master(), &REPLICATED_SPACES)
        .await
        .expect("B caught up");
    // A's stream to B dies; A takes a tail of 40 transactions.
    p.gw_a.process.kill9().expect("A's gateway dies");
    write_burst(p.a.master(), 1000, 40).await.expect("tail");
    let (code, body) = post(&p.wb, "/tcf/failover", ADMIN_TOKEN).await;
    assert_eq!(code, 200, "{body}");
    // B takes new writes meanwhile.
    write_burst(p.b.master(), 5000, 20)
        .await
        .expect("writes on B");
    // A's gateway comes back: the coordinator runs A -> B to ship the tail,
    // then A is resynced and ends as an exact passive copy of B.
    p.gw_a.process.spawn().expect("A's gateway back");
    wait_until("A passive again", SOON, || async {
        p.wa.info()
            .await
            .ok()
            .filter(|i| i["clusters"]["A"] == "passive")
    })
    .await
    .expect("passive");
    p.d_a
        .wait_state("rs1", "streaming")
        .await
        .expect("A reloaded");
    wait_equal(p.b.master(), p.a.master(), &REPLICATED_SPACES)
        .await
        .expect("A == B");
    let ids =
        p.b.master()
            .eval1("return box.space.test:count()", &[])
            .await
            .expect("count");
    println!("ship_tail: B holds {ids} rows in test after the tail arrived");
    let ids_in = |lo: u64, hi: u64| {
        let b = p.b.master();
        async move {
            b.eval1(
                "local lo, hi = ... local n = 0 \
                 for _, s in ipairs({'test', 'vtest'}) do \
                   for _, t in box.space[s]:pairs() do \
                     if t[1] >= lo and t[1] < hi then n = n + 1 end \
                   end \
                 end return n",
                &[lo.into(), hi.into()],
            )
            .await
            .expect("count")
            .as_u64()
            .unwrap_or(0)
        }
    };
    assert_eq!(ids_in(1000, 1040).await, 40, "all of A's tail reached B");
    assert_eq!(ids_in(5000, 5020).await, 20, "B's own writes survived");
}

/// A failover while the old active is alive and still writing (its admin is
/// not fenced): B applies nothing of A past the loss point, and (two_way)
/// nothing of B reaches A after the flip.
async fn failover_while_the_old_active_writes(two_way: bool) {
    let opts = PairedOptions {
        coordinator: true,
        two_way,
        ..PairedOptions::default()
    };
    let p = Paired::start_with(opts).await.expect("setup");
    p.wa.wait_is_active(200, SOON).await.expect("probe");
    let writer = Writer::start(p.a.master(), 1, 0, Duration::from_millis(5))
        .await
        .expect("writer");
    wait_count(p.b.master(), "test", 50)
        .await
        .expect("A -> B flows");
    let (code, body) = post(&p.wb, "/tcf/failover", ADMIN_TOKEN).await;
    assert_eq!(code, 200, "{body}");
    let (applied, uuid) = progress(p.b.master(), "A", "rs1").await;
    let loss = loss_point_of(&body["failover"]["loss_point"], &uuid);
    assert_eq!(loss, applied, "loss point = B's progress");
    let (a_from_b, _) = progress(p.a.master(), "B", "rs1").await;
    write_burst(p.b.master(), 1_000_000, 50)
        .await
        .expect("writes on B");
    // Many polls later (A kept writing about 400 more transactions) ...
    let seen = writer.done();
    wait_until("A to write 400 more transactions", SOON, || async {
        writer.done() >= seen + 400
    })
    .await
    .expect("writer");
    let (still, _) = progress(p.b.master(), "A", "rs1").await;
    assert_eq!(still, loss, "nothing of A applied on B past the loss point");
    let (a_now, _) = progress(p.a.master(), "B", "rs1").await;
    assert_eq!(a_now, a_from_b, "nothing of B applied on the diverged A");
    writer.stop().await.expect("writer");
}

#[tokio::test]
async fn serial_failover_while_the_old_active_writes_one_way() {
    failover_while_the_old_active_writes(false).await;
}

#[tokio::test]
async fn serial_failover_while_the_old_active_writes_two_way() {
    failover_while_the_old_active_writes(true).await;
}

#[tokio::test]
async fn serial_a_worker_restarted_while_a_replicaset_is_down_still_counts_it() {
    let opts = PairedOptions {
        coordinator: true,
        two_replicasets: true,
        ..PairedOptions::default()
    };
    let p = Paired::start_with(opts).await.expect("setup");
    p.wa.wait_is_active(200, SOON).await.expect("probe");
    wait_leader(&p).await;
    // A's worker has recorded which replicaset each instance belongs to.
    wait_until("A's membership recorded", SOON, || async {
        p.wa.health().await.ok().map(|h| h.replicasets.len()) == Some(2)
    })
    .await
    .expect("two replicasets probed");
    // The worker dies, then A/rs2's only instance: the restarted worker
    // never sees rs2 answer, and must still count it.
    p.wa.process.kill9().expect("kill A's worker");
    let (a2, _) = p.rs2.as_ref().expect("rs2");
    a2.master()
        .kill(nix::sys::signal::Signal::SIGKILL)
        .expect("kill A/rs2's master");
    p.wa.process.spawn().expect("A's worker back");
    let health = wait_until("A's restarted worker to probe", SOON, || async {
        p.wa.health().await.ok()
    })
    .await
    .expect("health");
    let unreachable: Vec<_> = health
        .replicasets
        .values()
        .filter(|r| r.masters.is_empty())
        .collect();
    assert_eq!(
        unreachable.len(),
        1,
        "rs2 is known and has no master: {health:?}"
    );
    p.wb.wait_is_active(200, SOON).await.expect("probe");
}
