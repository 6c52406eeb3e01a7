//! tcf-gateway end to end: a real source replicaset, the real binary, and a
//! gRPC client over mutual TLS playing the destination.

use std::time::Duration;

use tcf_iproto::Vclock;
use tcf_proto::v1::{self, Op, open::Start};
use tcf_tests::{
    Grant, Replicaset, Signal, SpaceSpec, Tarantool, TarantoolOptions, UserSpec,
    gateway::{GatewayOptions, Message, REPL_PASSWORD, REPL_USER, RunningGateway, Stream},
};

const SOON: Duration = Duration::from_secs(30);

fn source(name: &str) -> TarantoolOptions {
    tcf_tests::init_tracing();
    TarantoolOptions::new(name)
        .space(
            SpaceSpec::new("test")
                .field("id", "unsigned")
                .field("name", "string")
                .field("n", "integer"),
        )
        .space(SpaceSpec::new("vtest").engine(tcf_tests::Engine::Vinyl))
        .space(SpaceSpec::new("loc").local())
        .space(SpaceSpec::new("tmp").temporary())
        .space(SpaceSpec::new("_tcf_progress_memtx").primary_key(&[(1, "string"), (2, "string")]))
        // The `replication` role: `read` on `universe`, and on 3.3+ `write` on
        // `_gc_consumers` (the anonymous subscriber's WAL GC consumer).
        .user(UserSpec::new(REPL_USER, REPL_PASSWORD).grant(Grant::replication()))
        .replication_timeout(Duration::from_millis(250))
}

async fn vclock(t: &Tarantool) -> Vclock {
    tcf_iproto::vote(&t.uri(), &tcf_iproto::ConnectOptions::new())
        .await
        .expect("vote")
        .vclock
        .without_local()
}

async fn gateway(rs: &Replicaset) -> RunningGateway {
    RunningGateway::start(&[("rs1", rs.uris())], GatewayOptions::default())
        .await
        .expect("gateway starts")
}

async fn open_at(gw: &RunningGateway, start: Start) -> Stream {
    let mut client = gw.client().await.expect("client");
    let mut s = client.open("rs1", start).await.expect("stream opens");
    match s.expect(SOON).await.expect("first message") {
        Message::Started(st) => assert!(!st.source_uuid.is_empty()),
        other => panic!("expected Started, got {other:?}"),
    }
    s
}

fn ops(tx: &v1::Transaction) -> Vec<(Op, &str)> {
    tx.rows
        .iter()
        .map(|r| (Op::try_from(r.op).expect("op"), r.space.as_str()))
        .collect()
}

fn decode(raw: &[u8]) -> rmpv::Value {
    let mut s = raw;
    rmpv::decode::read_value(&mut s).expect("msgpack")
}

#[tokio::test]
async fn every_row_kind_arrives_whole_and_in_order() {
    let rs = source("kinds").start_replicaset().await.expect("source");
    let m = rs.master();
    let gw = gateway(&rs).await;
    let from = vclock(m).await;
    let mut s = open_at(&gw, Start::After((&from).into())).await;

    m.eval(
        "box.space.test:insert{1, 'one', 10} \
         box.begin() box.space.test:insert{2, 'two', 20} box.space.test:replace{3, 'three', 30} \
           box.space.test:update(1, {{'+', 3, 5}}) box.commit() \
         box.space.test:delete(2) \
         box.space.test:upsert({4, 'four', 40}, {{'+', 3, 1}}) \
         box.space.vtest:replace{7} \
         box.space.loc:insert{1} box.space.tmp:insert{1} \
         box.schema.space.create('ddl_only'):create_index('pk') \
         box.begin() box.space.test:insert{5, 'five', 50} box.space.loc:insert{2} box.commit() \
         box.space.test:truncate()",
        &[],
    )
    .await
    .expect("workload");

    let t1 = s.next_tx(SOON).await.expect("insert");
    assert_eq!(ops(&t1), [(Op::Insert, "test")]);
    assert_eq!(
        decode(&t1.rows[0].tuple),
        rmpv::Value::Array(vec![1.into(), "one".into(), 10.into()])
    );
    let t2 = s.next_tx(SOON).await.expect("multi-row");
    assert_eq!(
        ops(&t2),
        [
            (Op::Insert, "test"),
            (Op::Replace, "test"),
            (Op::Update, "test")
        ]
    );
    assert_eq!(t2.rows[2].index_base, Some(1), "INDEX_BASE travels as sent");
    assert!(!t2.rows[2].key.is_empty() && !t2.rows[2].tuple.is_empty());
    assert_eq!(
        ops(&s.next_tx(SOON).await.expect("delete")),
        [(Op::Delete, "test")]
    );
    let up = s.next_tx(SOON).await.expect("upsert");
    assert_eq!(ops(&up), [(Op::Upsert, "test")]);
    assert!(!up.rows[0].ops.is_empty());
    assert_eq!(
        ops(&s.next_tx(SOON).await.expect("vinyl")),
        [(Op::Replace, "vtest")]
    );
    // loc/tmp rows, and the DDL, are not shipped; the NOP-closed transaction
    // ships its global row only.
    let t5 = s.next_tx(SOON).await.expect("tx ending in a local row");
    assert_eq!(ops(&t5), [(Op::Insert, "test")]);
    let tr = s.next_tx(SOON).await.expect("truncate");
    assert_eq!(ops(&tr), [(Op::Truncate, "test")]);
    let last = Vclock::from(tr.vclock.clone().expect("vclock"));
    assert_eq!(
        last,
        vclock(m).await,
        "the last transaction carries the source's position"
    );
    assert!(t1.vclock.is_some() && t1.timestamp > 0.0);
}

#[tokio::test]
async fn skipped_rows_still_move_the_processed_watermark() {
    let rs = source("skips").start_replicaset().await.expect("source");
    let m = rs.master();
    let gw = gateway(&rs).await;
    let from = vclock(m).await;
    let mut s = open_at(&gw, Start::After((&from).into())).await;
    // Only rows that are never shipped: DDL, a grant, a local space.
    m.eval(
        "box.schema.space.create('x'):create_index('pk') \
         box.schema.user.create('someone') box.session.su('admin', box.schema.user.grant, 'someone', 'read', 'space', 'test') \
         box.space.loc:insert{9}",
        &[],
    )
    .await
    .expect("skip-only workload");
    let target = vclock(m).await;
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        match s
            .expect(deadline - tokio::time::Instant::now())
            .await
            .expect("message")
        {
            Message::Heartbeat(hb) => {
                let processed = Vclock::from(hb.processed.expect("processed"));
                if processed == target {
                    break;
                }
            }
            other => panic!("nothing may be shipped, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn transactions_marked_by_a_destination_are_not_shipped_back() {
    let rs = source("loop").start_replicaset().await.expect("source");
    let m = rs.master();
    let gw = gateway(&rs).await;
    let from = vclock(m).await;
    let mut s = open_at(&gw, Start::After((&from).into())).await;
    // What a destination of the opposite pair commits: data plus its progress row.
    m.eval(
        "box.begin() box.space._tcf_progress_memtx:replace{'B', 'rs1', {}} \
           box.space.test:insert{100, 'applied by tcf', 1} box.commit() \
         box.space.test:insert{101, 'written by the app', 1}",
        &[],
    )
    .await
    .expect("writes");
    let tx = s
        .next_tx(SOON)
        .await
        .expect("the application's transaction");
    assert_eq!(tx.rows.len(), 1);
    assert_eq!(
        decode(&tx.rows[0].tuple),
        rmpv::Value::Array(vec![101.into(), "written by the app".into(), 1.into()])
    );
    let metrics = tcf_tests::http::get(&gw.http_addr, "/metrics")
        .await
        .expect("metrics");
    assert!(
        metrics
            .body
            .contains("tcf_gateway_transactions_marked_total"),
        "{}",
        metrics.body
    );
}

#[tokio::test]
async fn restart_from_an_acknowledged_position_sends_no_duplicate() {
    let rs = source("resume").start_replicaset().await.expect("source");
    let m = rs.master();
    let gw = gateway(&rs).await;
    let from = vclock(m).await;
    let mut s = open_at(&gw, Start::After((&from).into())).await;
    m.eval("for i = 1, 10 do box.space.test:insert{i, 'r', i} end", &[])
        .await
        .expect("writes");
    let mut acked = from.clone();
    for i in 1..=4u64 {
        let tx = s.next_tx(SOON).await.expect("tx");
        assert_eq!(
            decode(&tx.rows[0].tuple).as_array().expect("tuple")[0].as_u64(),
            Some(i)
        );
        acked = Vclock::from(tx.vclock.expect("vclock"));
    }
    s.ack(&acked).await.expect("ack");
    drop(s);
    let mut s = open_at(&gw, Start::After((&acked).into())).await;
    for i in 5..=10u64 {
        let tx = s.next_tx(SOON).await.expect("tx");
        assert_eq!(
            decode(&tx.rows[0].tuple).as_array().expect("tuple")[0].as_u64(),
            Some(i),
            "no gap, no duplicate"
        );
    }
}

#[tokio::test]
async fn a_killed_source_instance_fails_over_without_gap_or_duplicate() {
    let rs = source("failover")
        .replicas(1)
        .start_replicaset()
        .await
        .expect("source");
    let m = rs.master();
    let gw = gateway(&rs).await;
    let from = vclock(m).await;
    let mut s = open_at(&gw, Start::After((&from).into())).await;
    m.eval(
        "for i = 1, 100 do box.space.test:insert{i, 'before', i} end",
        &[],
    )
    .await
    .expect("writes");
    let mut seen = Vec::new();
    for _ in 0..50 {
        let tx = s.next_tx(SOON).await.expect("tx");
        seen.push(
            decode(&tx.rows[0].tuple).as_array().expect("tuple")[0]
                .as_u64()
                .expect("id"),
        );
    }
    // The gateway prefers the read-only replica: kill it mid-stream.
    let status = gw.status().await.expect("status");
    assert_eq!(
        status["replicasets"]["rs1"]["instance"],
        rs.replicas()[0].uri(),
        "{status}"
    );
    rs.replicas()[0]
        .kill(Signal::SIGKILL)
        .expect("kill -9 the replica");
    m.eval(
        "for i = 101, 200 do box.space.test:insert{i, 'after', i} end",
        &[],
    )
    .await
    .expect("writes");
    while seen.len() < 200 {
        let tx = s.next_tx(SOON).await.expect("tx after fail-over");
        seen.push(
            decode(&tx.rows[0].tuple).as_array().expect("tuple")[0]
                .as_u64()
                .expect("id"),
        );
    }
    assert_eq!(
        seen,
        (1..=200).collect::<Vec<_>>(),
        "every row exactly once, in order"
    );
    let status = gw.status().await.expect("status");
    assert_eq!(
        status["replicasets"]["rs1"]["instance"],
        m.uri(),
        "{status}"
    );
}

#[tokio::test]
async fn initial_load_ships_the_snapshot_then_the_stream() {
    let rs = source("load").start_replicaset().await.expect("source");
    let m = rs.master();
    m.eval(
        "for i = 1, 1000 do box.space.test:insert{i, 'snap', i} end \
         box.space.vtest:insert{1} box.space.loc:insert{1} box.space._tcf_progress_memtx:replace{'B', 'rs1'}",
        &[],
    )
    .await
    .expect("data");
    let gw = gateway(&rs).await;
    let mut client = gw.client().await.expect("client");
    let mut s = client
        .open(
            "rs1",
            Start::InitialLoad(v1::InitialLoad { truncate: false }),
        )
        .await
        .expect("open");
    assert!(matches!(
        s.expect(SOON).await.expect("started"),
        Message::Started(_)
    ));
    let Message::SnapshotBegin(begin) = s.expect(SOON).await.expect("begin") else {
        panic!("expected SnapshotBegin")
    };
    assert_eq!(
        begin.spaces,
        ["test", "vtest"],
        "tcf's and local spaces are not loaded"
    );
    let start = Vclock::from(begin.vclock.expect("start vclock"));
    let mut rows = Vec::new();
    let end = loop {
        match s.expect(SOON).await.expect("snapshot") {
            Message::SnapshotRows(r) => rows.extend(r.rows),
            Message::SnapshotEnd(e) => break e,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(end.rows, 1001);
    assert_eq!(rows.len(), 1001);
    assert_eq!(rows.iter().filter(|r| r.space == "test").count(), 1000);
    assert_eq!(Vclock::from(end.vclock.expect("vclock")), start);
    m.eval("box.space.test:insert{1001, 'after', 1}", &[])
        .await
        .expect("write");
    let tx = s.next_tx(SOON).await.expect("streamed after the load");
    assert_eq!(
        decode(&tx.rows[0].tuple).as_array().expect("tuple")[0].as_u64(),
        Some(1001)
    );
}

#[tokio::test]
async fn current_position_starts_after_what_exists() {
    let rs = source("current").start_replicaset().await.expect("source");
    let m = rs.master();
    m.eval(
        "for i = 1, 10 do box.space.test:insert{i, 'old', i} end",
        &[],
    )
    .await
    .expect("data");
    let gw = gateway(&rs).await;
    let mut client = gw.client().await.expect("client");
    let mut s = client
        .open("rs1", Start::Current(v1::CurrentPosition {}))
        .await
        .expect("open");
    let Message::Started(st) = s.expect(SOON).await.expect("started") else {
        panic!("expected Started")
    };
    assert_eq!(Vclock::from(st.after.expect("after")), vclock(m).await);
    m.eval("box.space.test:insert{11, 'new', 1}", &[])
        .await
        .expect("write");
    let tx = s.next_tx(SOON).await.expect("tx");
    assert_eq!(
        decode(&tx.rows[0].tuple).as_array().expect("tuple")[0].as_u64(),
        Some(11)
    );
}
