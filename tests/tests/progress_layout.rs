//! The progress and verification rows have one owner (`tcf_api::progress`):
//! a real destination writes them through it, the worker-side reader (the
//! same definition, EVALed from outside as tcf-worker does) reads every field
//! back, the on-disk tuples keep the federation-wide format of
//! `docs/progress.md`, and marking a replicaset for reload makes the
//! destination reload it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rmpv::Value;
use tcf_api::{
    progress::{self, Engine, Op, ProgressState, Row, WalkHead},
    verify::{WalkMode, WalkReason, WalkState},
};
use tcf_iproto::Vclock;
use tcf_tests::{
    Tarantool, federation::Federation, gateway::ADMIN_TOKEN, http, verify, wait_until,
};

async fn run<T: serde::de::DeserializeOwned>(t: &Tarantool, op: Op<'_>) -> anyhow::Result<T> {
    let out = t.eval(progress::LUA, &op.args()).await?;
    Ok(progress::decode_answer(&out)?)
}

async fn control(f: &Federation, path: &str) {
    let r = http::request(
        "POST",
        &f.destination.http_addr,
        path,
        Some(ADMIN_TOKEN),
        None,
    )
    .await
    .expect("http");
    assert_eq!(r.status, 200, "{path}: {}", r.body);
}

/// The raw tuple of `space` keyed `('A', 'rs1')`, as its fields.
async fn raw(t: &Tarantool, space: &str) -> Vec<Value> {
    t.eval1(
        "local t = box.space[...]:get{'A', 'rs1'} return t and t:totable() or {}",
        &[Value::from(space)],
    )
    .await
    .expect("raw tuple")
    .as_array()
    .cloned()
    .unwrap_or_default()
}

/// A row read through the shared definition equals its tuple read by the
/// positions `docs/progress.md` fixes for existing clusters.
fn assert_on_disk(row: &Row, tuple: &[Value]) {
    let s = |i: usize| tuple.get(i).and_then(Value::as_str).unwrap_or("<none>");
    assert_eq!(tuple.len(), 8, "{tuple:?}");
    assert_eq!(s(0), row.source_cluster);
    assert_eq!(s(1), row.source_replicaset);
    let vclock: Vclock = tuple
        .get(2)
        .and_then(|v| progress::decode(v).ok())
        .expect("field 3 is a vclock map");
    assert_eq!(vclock, row.vclock);
    assert_eq!(s(3), row.source_uuid);
    assert_eq!(s(4), row.state.as_str());
    assert_eq!(tuple.get(5).and_then(Value::as_f64), Some(row.updated_at));
    assert_eq!(s(6), row.destination);
    assert_eq!(s(7), row.writer);
}

#[tokio::test]
async fn serial_progress_rows_are_read_and_marked_through_one_definition() {
    let f = Federation::start(0, &[]).await.expect("federation");
    f.destination
        .wait_state("rs1", "streaming")
        .await
        .expect("streaming");
    f.a.master()
        .eval(
            "for i = 1, 20 do box.space.test:insert{i, 'row', i} end \
             for i = 1, 20 do box.space.vtest:replace{i, 'vinyl'} end",
            &[],
        )
        .await
        .expect("workload");
    f.wait_equal().await.expect("B equals A");
    let source_uuid =
        f.a.master()
            .eval1(
                "local rs = box.info.replicaset \
             if type(rs) ~= 'table' or rs.uuid == nil then rs = box.info.cluster end \
             return rs.uuid",
                &[],
            )
            .await
            .expect("uuid");
    let source_uuid = source_uuid.as_str().expect("a uuid").to_owned();

    // Every field of every row, as the worker reads them.
    let b = f.b.master();
    let rows: Vec<Row> = wait_until(
        "the memtx and vinyl progress rows to cover the applied position",
        Duration::from_secs(60),
        || async {
            let s = f.destination.status().await.ok()?;
            let applied: Vclock =
                serde_json::from_value(s["replicasets"]["rs1"]["applied_vclock"].clone()).ok()?;
            let rows: Vec<Row> = run(b, Op::Read { cluster: "A" }).await.ok()?;
            let mut merged = Vclock::new();
            rows.iter().for_each(|r| merged.merge(&r.vclock));
            let engines = |e| rows.iter().any(|r: &Row| r.engine == e);
            (engines(Engine::Memtx) && engines(Engine::Vinyl) && merged == applied).then_some(rows)
        },
    )
    .await
    .expect("rows");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let writer = rows.first().map(|r| r.writer.clone()).unwrap_or_default();
    assert!(!writer.is_empty(), "{rows:?}");
    for r in &rows {
        assert_eq!(r.source_cluster, "A", "{r:?}");
        assert_eq!(r.source_replicaset, "rs1", "{r:?}");
        assert_eq!(r.source_uuid, source_uuid, "{r:?}");
        assert_eq!(r.state, ProgressState::Streaming, "{r:?}");
        assert_eq!(r.destination, "test-destination", "{r:?}");
        assert_eq!(r.writer, writer, "{r:?}");
        assert!((r.updated_at - now).abs() < 600.0, "{r:?} at {now}");
        assert!(!r.vclock.is_empty(), "{r:?}");
    }
    for (engine, space) in [
        (Engine::Memtx, "_tcf_progress_memtx"),
        (Engine::Vinyl, "_tcf_progress_vinyl"),
    ] {
        let row = rows.iter().find(|r| r.engine == engine).expect("row");
        assert_on_disk(row, &raw(b, space).await);
    }

    // The walk rows, as the worker reads them.
    let walk = f
        .destination
        .start_walk_when_ready(&verify::request(WalkMode::Verify))
        .await
        .expect("walk");
    f.destination.wait_walk(&walk).await.expect("walk done");
    let walks: Vec<WalkHead> = run(b, Op::Walks { cluster: "A" }).await.expect("walks");
    let head = walks
        .iter()
        .filter(|w| w.source_replicaset == "rs1")
        .max_by_key(|w| w.seq)
        .expect("a walk row");
    assert_eq!(head.id, walk);
    assert_eq!(head.mode, WalkMode::Verify);
    assert_eq!(head.reason, WalkReason::Requested);
    assert_eq!(head.state, WalkState::Done);
    assert!(head.seq > 0, "{head:?}");
    assert!(!head.is_running_gap_repair());

    // Marked for reload while stopped (as a resync does): both global rows
    // loading at the empty vclock, the writer kept, the local row gone.
    control(&f, "/api/v1/stop").await;
    f.destination
        .wait_state("rs1", "stopped")
        .await
        .expect("stopped");
    b.eval("box.space.test:replace{100000, 'only on B', 0}", &[])
        .await
        .expect("a row only B holds");
    let marked: bool = run(
        b,
        Op::MarkReload {
            cluster: "A",
            replicaset: "rs1",
        },
    )
    .await
    .expect("mark");
    assert!(marked);
    let rows: Vec<Row> = run(b, Op::Read { cluster: "A" }).await.expect("rows");
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in &rows {
        assert_ne!(r.engine, Engine::Local, "{r:?}");
        assert_eq!(r.state, ProgressState::Loading, "{r:?}");
        assert!(r.vclock.is_empty(), "{r:?}");
        assert_eq!(r.source_uuid, source_uuid, "{r:?}");
        assert_eq!(r.destination, "test-destination", "{r:?}");
        assert_eq!(r.writer, writer, "{r:?}");
    }
    assert_on_disk(
        rows.iter()
            .find(|r| r.engine == Engine::Memtx)
            .expect("memtx row"),
        &raw(b, "_tcf_progress_memtx").await,
    );

    // The destination reloads: B is truncated and loaded again, so the row
    // only B held is gone and B equals A, streaming from A's position.
    control(&f, "/api/v1/start").await;
    f.wait_equal().await.expect("B equals A after the reload");
    f.destination
        .wait_state("rs1", "streaming")
        .await
        .expect("streaming after the reload");
    let rows: Vec<Row> = wait_until(
        "the rows to stream again",
        Duration::from_secs(60),
        || async {
            let rows: Vec<Row> = run(b, Op::Read { cluster: "A" }).await.ok()?;
            rows.iter()
                .all(|r| r.state == ProgressState::Streaming)
                .then_some(rows)
        },
    )
    .await
    .expect("streaming rows");
    assert!(rows.iter().all(|r| r.writer == writer), "{rows:?}");
}
