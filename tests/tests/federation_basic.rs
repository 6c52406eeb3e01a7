//! A -> B end to end: real clusters, real tcf-gateway and tcf-destination
//! over mutual TLS.

use std::time::Duration;

use tcf_tests::federation::{Federation, dump};

#[tokio::test]
async fn a_mixed_workload_ends_with_equal_clusters() {
    let f = Federation::start(0, &[]).await.expect("federation");
    f.destination
        .wait_state("rs1", "streaming")
        .await
        .expect("streaming");
    f.a.master()
        .eval(
            "for i = 1, 200 do box.space.test:insert{i, 'row-' .. i, i} end \
             for i = 1, 10 do box.space.counters:insert{i, 0} end \
             for k = 1, 20 do for i = 1, 10 do box.space.counters:update(i, {{'+', 2, 1}}) end end \
             box.begin() for i = 1, 50 do box.space.test:replace{i, 'replaced', -i} end box.commit() \
             for i = 51, 60 do box.space.test:delete(i) end \
             for i = 1, 30 do box.space.test:upsert({1000 + i, 'ups', 1}, {{'+', 3, 1}}) end \
             for i = 1, 30 do box.space.test:upsert({1000 + i, 'ups', 1}, {{'+', 3, 1}}) end \
             for i = 1, 100 do box.space.vtest:replace{i, 'vinyl'} end \
             box.space.vtest:delete(7) \
             box.space.loc:insert{1} \
             box.space.stest:insert{1, 'sync'}",
            &[],
        )
        .await
        .expect("workload");
    f.wait_equal().await.expect("B equals A");
    let counters = dump(f.b.master(), "counters").await.expect("counters");
    assert!(counters.iter().all(|t| {
        t.as_array()
            .and_then(|a| a.get(1))
            .and_then(rmpv::Value::as_i64)
            == Some(20)
    }));
    assert!(
        dump(f.b.master(), "loc").await.expect("loc").is_empty(),
        "local spaces are not replicated"
    );
    // A truncate is replicated as a truncate.
    f.a.master()
        .eval(
            "box.space.test:truncate() box.space.test:insert{1, 'after truncate', 1}",
            &[],
        )
        .await
        .expect("truncate");
    f.wait_equal().await.expect("B equals A after a truncate");
    let status = f.destination.status().await.expect("status");
    let rs = &status["replicasets"]["rs1"];
    assert_eq!(rs["state"], "streaming", "{status}");
    assert!(
        rs["transactions_applied"].as_u64().unwrap_or(0) > 0,
        "{status}"
    );
    // Skip-only rows still move the position (persisted in the local space).
    let before =
        f.b.master()
            .eval1("return box.space._tcf_progress_local:count()", &[])
            .await
            .expect("count");
    f.a.master()
        .eval("box.schema.space.create('ddl_x'):create_index('pk')", &[])
        .await
        .expect("ddl");
    let a_vclock = tcf_iproto::vote(&f.a.master().uri(), &tcf_iproto::ConnectOptions::new())
        .await
        .expect("vote")
        .vclock
        .without_local();
    tcf_tests::wait_until(
        "the destination to reach A's position",
        Duration::from_secs(60),
        || async {
            let s = f.destination.status().await.ok()?;
            let applied: tcf_iproto::Vclock =
                serde_json::from_value(s["replicasets"]["rs1"]["applied_vclock"].clone()).ok()?;
            (applied == a_vclock).then_some(())
        },
    )
    .await
    .expect("position moved by skipped rows");
    let after =
        f.b.master()
            .eval1("return box.space._tcf_progress_local:count()", &[])
            .await
            .expect("count");
    assert!(after.as_u64() >= before.as_u64());
}
