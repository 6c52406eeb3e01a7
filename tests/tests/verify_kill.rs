//! Each process killed in the middle of a verification walk
//! (`docs/verify.md`): the gateway, the destination (SIGKILL, and a
//! failpoint exit between a chunk's commit and its ack) and the worker
//! that started it. The walk resumes where the target says it is and ends
//! with the same report as a walk nobody disturbed: every corrupted key
//! exactly once, nothing counted or repaired twice.
//!
//! The failpoint test sets `TCF_FAILPOINTS` in the test process's own
//! environment (see `federation_crash.rs` for why that is sound: one test
//! per process, a current-thread runtime).
#![allow(unsafe_code)]

use std::time::Duration;

use serde_json::json;
use tcf_api::verify::{Report, WalkMode, WalkRequest, WalkState};
use tcf_tests::{
    federation::{Federation, RunningDestination, Writer, insert_counters, wait_equal},
    gateway::ADMIN_TOKEN,
    http,
    verify::{corrupt, keys, mismatches},
    wait_until,
    worker::Paired,
};

const SEED: u64 = 1500;

/// Slow enough to kill a process in the middle.
fn slow(mode: WalkMode) -> WalkRequest {
    WalkRequest {
        mode,
        spaces: vec!["test".into(), "vtest".into()],
        chunk_rows: Some(50),
        rows_per_second: Some(1500),
    }
}

async fn seed_and_corrupt(a: &tcf_tests::Tarantool, b: &tcf_tests::Tarantool) {
    insert_counters(a).await.expect("counters");
    a.eval(
        "for i = 1, ... do box.space.test:insert{i, 'seed', i} box.space.vtest:insert{i, i} end",
        &[SEED.into()],
    )
    .await
    .expect("seed");
    wait_equal(a, b, &["test", "vtest"])
        .await
        .expect("B has the seed");
    corrupt(
        b,
        "box.space.test:update(5, {{'=', 2, 'corrupted'}}) box.space.test:delete(600) \
         box.space.test:insert{100000, 'extra', 0} \
         box.space.vtest:replace{7, -7} box.space.vtest:delete(1200) box.space.vtest:insert{100001, 1}",
        &[],
    )
    .await
    .expect("corrupt");
}

fn assert_exactly_the_corruption(report: &Report) {
    assert_eq!(
        keys(report, "rs1", "test"),
        vec![
            (json!([100000]), "extra".to_owned()),
            (json!([5]), "different".to_owned()),
            (json!([600]), "missing".to_owned()),
        ],
        "{report:#?}"
    );
    assert_eq!(
        keys(report, "rs1", "vtest"),
        vec![
            (json!([100001]), "extra".to_owned()),
            (json!([1200]), "missing".to_owned()),
            (json!([7]), "different".to_owned()),
        ],
        "{report:#?}"
    );
    assert_eq!(mismatches(report), 6, "counted once: {report:#?}");
}

/// Waits until the walk is past its first few chunks and still running.
async fn mid_walk(d: &RunningDestination, walk: &str) {
    wait_until(
        "the walk to be under way",
        Duration::from_secs(60),
        || async {
            let r = d.report().await.ok()?;
            let w = r.replicasets.get("rs1")?.clone()?;
            (w.walk == walk && w.seq >= 5 && w.state == WalkState::Running).then_some(())
        },
    )
    .await
    .expect("mid-walk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_a_gateway_killed_mid_walk_resumes_with_the_same_report() {
    let f = Federation::start(1, &[]).await.expect("federation");
    seed_and_corrupt(f.a.master(), f.b.master()).await;
    let writer = Writer::start(f.a.master(), 10_000_000, 100, Duration::from_millis(5))
        .await
        .expect("writer");
    let walk = f
        .destination
        .start_walk_when_ready(&slow(WalkMode::Verify))
        .await
        .expect("walk");
    mid_walk(&f.destination, &walk).await;
    f.gateway
        .kill9_and_respawn()
        .await
        .expect("gateway restarted");
    let report = f.destination.wait_walk(&walk).await.expect("walk done");
    assert_exactly_the_corruption(&report);
    writer.stop().await.expect("writer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_a_destination_killed_mid_walk_resumes_with_the_same_report() {
    let f = Federation::start(0, &[]).await.expect("federation");
    seed_and_corrupt(f.a.master(), f.b.master()).await;
    let writer = Writer::start(f.a.master(), 10_000_000, 100, Duration::from_millis(5))
        .await
        .expect("writer");
    let walk = f
        .destination
        .start_walk_when_ready(&slow(WalkMode::Verify))
        .await
        .expect("walk");
    mid_walk(&f.destination, &walk).await;
    f.destination
        .kill9_and_respawn()
        .await
        .expect("destination restarted");
    let report = f.destination.wait_walk(&walk).await.expect("walk done");
    assert_exactly_the_corruption(&report);
    writer.stop().await.expect("writer");
}

#[tokio::test]
async fn serial_a_destination_dying_between_a_repair_chunk_and_its_ack_repairs_exactly_once() {
    // SAFETY: own process, one test thread (see the module comment).
    unsafe { std::env::set_var("TCF_FAILPOINTS", "after_chunk=exit@12") };
    let f = Federation::start(0, &[]).await.expect("federation");
    // SAFETY: as above; the gateway and Tarantool ignore it, the destination
    // read it at its start.
    unsafe { std::env::remove_var("TCF_FAILPOINTS") };
    seed_and_corrupt(f.a.master(), f.b.master()).await;
    let walk = f
        .destination
        .start_walk_when_ready(&slow(WalkMode::Repair))
        .await
        .expect("walk");
    let code = f
        .destination
        .process
        .wait_exit(Duration::from_secs(120))
        .await
        .expect("the destination exits at the failpoint");
    assert_eq!(code, Some(86), "{}", f.destination.process.log_tail(30));
    f.destination
        .respawn()
        .await
        .expect("destination restarted");
    let report = f.destination.wait_walk(&walk).await.expect("walk done");
    assert_exactly_the_corruption(&report);
    let w = report.replicasets["rs1"].as_ref().expect("rs1");
    let repaired: u64 = w.by_space.values().map(|s| s.repaired).sum();
    assert_eq!(repaired, 6, "repaired exactly once: {w:#?}");
    wait_equal(f.a.master(), f.b.master(), &["test", "vtest"])
        .await
        .expect("A == B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_the_worker_that_started_a_walk_killed_mid_walk_does_not_change_it() {
    let p = Paired::start().await.expect("federation");
    seed_and_corrupt(p.a.master(), p.b.master()).await;
    let body = serde_json::to_string(&slow(WalkMode::Verify)).expect("body");
    let started = wait_until(
        "the worker to start a walk",
        Duration::from_secs(60),
        || async {
            let r = http::request(
                "POST",
                &p.wa.http_addr,
                "/tcf/api/v1/verify",
                Some(ADMIN_TOKEN),
                Some(&body),
            )
            .await
            .ok()?;
            (r.status == 200).then_some(r.body)
        },
    )
    .await
    .expect("walk started through the worker");
    let walk = serde_json::from_str::<tcf_api::verify::WalkStarted>(&started)
        .expect("typed answer")
        .walk;
    mid_walk(&p.d_b, &walk).await;
    p.wa.process.kill9().expect("kill A's worker");
    let report = p.d_b.wait_walk(&walk).await.expect("walk done");
    assert_exactly_the_corruption(&report);
    p.wa.process.spawn().expect("respawn A's worker");
    p.wa.process
        .wait_http(&p.wa.http_addr, "/metrics")
        .await
        .expect("worker up");
    let via_worker = wait_until(
        "the report through the worker",
        Duration::from_secs(60),
        || async {
            let r = http::request(
                "GET",
                &p.wa.http_addr,
                "/tcf/api/v1/verify",
                Some(ADMIN_TOKEN),
                None,
            )
            .await
            .ok()?;
            (r.status == 200)
                .then(|| serde_json::from_str::<Report>(&r.body).ok())
                .flatten()
        },
    )
    .await
    .expect("report");
    assert_eq!(via_worker, report);
}
