//! Online verification and repair while a counter workload writes to A
//! (`docs/verify.md`): an untouched federation verifies clean three times;
//! B corrupted by an administrator (rows updated, deleted, inserted, in
//! memtx and vinyl, a hot counter among them) is reported key by key;
//! repair fixes it, after which A == B row by row and no acknowledged
//! increment is lost or doubled.

use std::time::Duration;

use serde_json::json;
use tcf_api::verify::{WalkMode, WalkState};
use tcf_tests::{
    federation::{Federation, Writer, insert_counters, tally},
    verify::{corrupt, keys, mismatches, request},
    wait_until,
};

const SEED: u64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_verify_reports_exactly_the_corrupted_keys_and_repair_fixes_them() {
    let f = Federation::start(1, &[]).await.expect("federation");
    let a = f.a.master();
    insert_counters(a).await.expect("counters");
    a.eval(
        "for i = 1, ... do box.space.test:insert{i, 'seed', i} box.space.vtest:insert{i, i} end",
        &[SEED.into()],
    )
    .await
    .expect("seed");
    f.wait_equal().await.expect("equal before the walks");
    let writer = Writer::start(a, 10_000_000, 200, Duration::from_millis(4))
        .await
        .expect("writer");

    for run in 1..=3 {
        let walk = f
            .destination
            .start_walk_when_ready(&request(WalkMode::Verify))
            .await
            .expect("verify");
        let report = f.destination.wait_walk(&walk).await.expect("verify done");
        assert_eq!(
            mismatches(&report),
            0,
            "run {run} on an untouched federation: {report:#?}"
        );
        let w = report.replicasets["rs1"].as_ref().expect("rs1 walked");
        assert!(
            w.by_space["test"].compared >= SEED && w.by_space["vtest"].compared >= SEED,
            "run {run} compared too little: {w:#?}"
        );
    }

    // An administrator writes on B behind tcf's back.
    let b = f.b.master();
    corrupt(
        b,
        "box.space.test:update(5, {{'=', 2, 'corrupted'}}) box.space.test:delete(6) \
         box.space.test:insert{100000, 'extra', 0} \
         box.space.vtest:replace{7, -7} box.space.vtest:delete(8) box.space.vtest:insert{100001, 1} \
         box.space.counters:update(3, {{'+', 2, 1000}})",
        &[],
    )
    .await
    .expect("corrupt");

    let walk = f
        .destination
        .start_walk(&request(WalkMode::Verify))
        .await
        .expect("verify the corrupted target");
    let report = f.destination.wait_walk(&walk).await.expect("verify done");
    println!(
        "verify report of the corrupted target:\n{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    assert_eq!(
        keys(&report, "rs1", "test"),
        vec![
            (json!([100000]), "extra".to_owned()),
            (json!([5]), "different".to_owned()),
            (json!([6]), "missing".to_owned()),
        ]
    );
    assert_eq!(
        keys(&report, "rs1", "vtest"),
        vec![
            (json!([100001]), "extra".to_owned()),
            (json!([7]), "different".to_owned()),
            (json!([8]), "missing".to_owned()),
        ]
    );
    assert_eq!(
        keys(&report, "rs1", "counters"),
        vec![(json!([3]), "different".to_owned())]
    );
    assert_eq!(mismatches(&report), 7, "{report:#?}");

    let walk = f
        .destination
        .start_walk(&request(WalkMode::Repair))
        .await
        .expect("repair");
    let report = f.destination.wait_walk(&walk).await.expect("repair done");
    let w = report.replicasets["rs1"].as_ref().expect("rs1 repaired");
    assert_eq!(w.state, WalkState::Done);
    let repaired: u64 = w.by_space.values().map(|s| s.repaired).sum();
    assert_eq!(repaired, 7, "{report:#?}");

    let walk = f
        .destination
        .start_walk(&request(WalkMode::Verify))
        .await
        .expect("verify after the repair");
    let report = f.destination.wait_walk(&walk).await.expect("verify done");
    assert_eq!(mismatches(&report), 0, "after the repair: {report:#?}");

    let n = writer.stop().await.expect("writer");
    wait_until(
        "B to apply every writer transaction",
        Duration::from_secs(60),
        || async { tally(b).await.map(|t| t.increments == n) },
    )
    .await
    .expect("B caught up");
    let (ta, tb) = (
        tally(a).await.expect("tally A"),
        tally(b).await.expect("tally B"),
    );
    assert_eq!(ta.increments, n, "A");
    assert_eq!(tb, ta, "no increment lost or doubled on B");
    f.wait_equal().await.expect("A == B row by row");
}
