//! A real WAL gap with `on_wal_gap: repair` (`docs/verify.md`): the gateway
//! reading A is down while A inserts, updates, deletes and checkpoints its
//! xlogs away. When it comes back, the stream continues from A's current
//! position and a repair walk makes B equal to A: nothing is truncated or
//! reloaded, the rows deleted during the gap are deleted on B, and until
//! the walk ends B is not promotable (a switchover and a failover are
//! refused with the reason).

use std::time::Duration;

use rmpv::Value;
use tcf_api::verify::{WalkReason, WalkState};
use tcf_tests::{
    federation::{count, wait_equal},
    gateway::ADMIN_TOKEN,
    http, wait_until,
    worker::{Paired, PairedOptions, RunningWorker},
};

const SEED: u64 = 2000;

async fn post(w: &RunningWorker, path: &str) -> (u16, serde_json::Value) {
    let r = http::request_within(
        "POST",
        &w.http_addr,
        path,
        Some(ADMIN_TOKEN),
        Duration::from_secs(60),
    )
    .await
    .expect("http");
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(serde_json::Value::String(r.body)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_a_wal_gap_is_repaired_in_place_and_blocks_promotion_until_done() {
    let p = Paired::start_with(PairedOptions {
        gw_a_extra: vec!["  on_wal_gap: repair".into()],
        // Slow enough to ask for a switch while it runs (~10 s).
        d_b_extra: vec!["  repair_rows_per_second: 400".into()],
        a_checkpoint_count: Some(1),
        ..PairedOptions::default()
    })
    .await
    .expect("federation");
    let a = p.a.master();
    a.eval(
        "for i = 1, ... do box.space.test:insert{i, 'seed', i} box.space.vtest:insert{i, i} end",
        &[SEED.into()],
    )
    .await
    .expect("seed");
    wait_equal(a, p.b.master(), &["test", "vtest"])
        .await
        .expect("B has the seed");
    let subscriber =
        p.gw_a.status().await.expect("status")["replicasets"]["rs1"]["subscriber_uuid"]
            .as_str()
            .map(str::to_owned)
            .expect("subscriber uuid");

    // The gateway is down while A changes and checkpoints its xlogs away.
    p.gw_a.process.kill9().expect("kill the gateway");
    a.eval(
        "for i = 1, 100 do box.space.test:delete(i) box.space.vtest:delete(i) end \
         for i = 101, 150 do box.space.test:update(i, {{'=', 2, 'changed'}}) \
                             box.space.vtest:replace{i, -i} end \
         for i = 1, 50 do box.space.test:insert{100000 + i, 'new', i} end \
         box.snapshot() box.space.test:insert{200000, 'x', 0} box.snapshot()",
        &[],
    )
    .await
    .expect("changes and checkpoints while the gateway is down");
    // 3.3+ keeps the xlogs for the gateway's WAL consumer: release it (the
    // gateway is gone), as an operator retiring the gateway would.
    wait_until("the gateway's WAL consumer to be released", Duration::from_secs(60), || async {
        a.eval1(
            "local uuid = ... \
             if box.space._gc_consumers == nil or box.space._gc_consumers:get{uuid} == nil then return true end \
             local ok = pcall(box.ctl.replica_gc, uuid) box.snapshot() return ok",
            &[Value::from(subscriber.as_str())],
        )
        .await
        .map(|v| v == Value::Boolean(true))
    })
    .await
    .expect("no consumer pins A's xlogs");
    p.gw_a.process.spawn().expect("respawn the gateway");
    p.gw_a
        .process
        .wait_http(&p.gw_a.http_addr, "/metrics")
        .await
        .expect("gateway up");

    // The destination records the gap and a repair walk; meanwhile B may
    // not become active.
    let walk = wait_until(
        "a repair walk after the gap",
        Duration::from_secs(120),
        || async {
            let r = p.d_b.report().await.ok()?;
            let w = r.replicasets.get("rs1")?.clone()?;
            (w.reason == WalkReason::WalGap).then_some(w)
        },
    )
    .await
    .expect("repair walk");
    assert_eq!(walk.state, WalkState::Running, "{walk:#?}");
    let (code, body) = post(&p.wa, "/tcf/switchover").await;
    assert_eq!(code, 409, "switchover during the repair: {body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("repairing after a WAL gap")),
        "{body}"
    );
    let (code, body) = post(&p.wb, "/tcf/failover").await;
    assert_eq!(code, 409, "failover during the repair: {body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("repairing after a WAL gap")),
        "{body}"
    );

    let report = p.d_b.wait_walk(&walk.walk).await.expect("the repair ends");
    println!(
        "repair after the WAL gap:\n{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    wait_equal(a, p.b.master(), &["test", "counters", "vtest", "stest"])
        .await
        .expect("B == A");
    let b = p.b.master();
    assert_eq!(count(b, "test").await.expect("count"), SEED - 100 + 51);
    assert!(
        b.eval1(
            "return box.space.test:get{1} == nil and box.space.vtest:get{1} == nil",
            &[]
        )
        .await
        .expect("deleted")
            == Value::Boolean(true),
        "the rows deleted during the gap are gone from B"
    );
    let w = report.replicasets["rs1"].as_ref().expect("rs1");
    let t = &w.by_space["test"];
    // The rows that differ, not a reload: 100 deleted, 50 changed, 51 new.
    assert_eq!((t.extra, t.different, t.missing), (100, 50, 51), "{w:#?}");
    let v = &w.by_space["vtest"];
    assert_eq!((v.extra, v.different, v.missing), (100, 50, 0), "{w:#?}");
    let m = http::get(&p.gw_a.http_addr, "/metrics")
        .await
        .expect("metrics");
    assert!(
        !m.body.contains("tcf_gateway_snapshot_rows_total"),
        "no initial load (snapshot) after the gap"
    );

    // Once the walk ended, B is promotable again.
    let (code, body) = post(&p.wa, "/tcf/switchover").await;
    assert_eq!(code, 200, "switchover after the repair: {body}");
}
