//! Synchronous spaces through the gateway: shipped only after CONFIRM,
//! dropped on ROLLBACK, and the gateway's acks never complete a quorum on
//! their own (they carry only what the destination durably committed).

use std::time::Duration;

use tcf_iproto::Vclock;
use tcf_proto::v1::open::Start;
use tcf_tests::{
    Grant, SpaceSpec, TarantoolOptions, UserSpec,
    gateway::{GatewayOptions, Message, REPL_PASSWORD, REPL_USER, RunningGateway},
};

const SOON: Duration = Duration::from_secs(30);

/// Claims the synchronous queue on the master where that exists: 2.10+
/// refuse synchronous writes while it belongs to nobody
/// (`ER_SYNCHRO_QUEUE_UNCLAIMED`); 2.6.0 has neither the owner nor
/// `box.ctl.promote`.
const CLAIM_SYNCHRO_QUEUE: &str = "if box.ctl.promote ~= nil and box.info.synchro ~= nil \
     and box.info.synchro.queue.owner == 0 then box.ctl.promote() end";

#[tokio::test]
async fn sync_transactions_wait_for_confirm_and_rollbacks_are_dropped() {
    tcf_tests::init_tracing();
    // Quorum 2 = the master plus its one replica: the gateway (an anonymous
    // replica, whose ack counts on 2.6) must never be able to stand in.
    let rs = TarantoolOptions::new("sync")
        .replicas(1)
        .space(SpaceSpec::new("stest").sync())
        .space(SpaceSpec::new("test"))
        // The `replication` role: `read` on `universe`, and on 3.3+ `write` on
        // `_gc_consumers` (the anonymous subscriber's WAL GC consumer).
        .user(UserSpec::new(REPL_USER, REPL_PASSWORD).grant(Grant::replication()))
        .replication_timeout(Duration::from_millis(250))
        .synchro_quorum(2)
        .synchro_timeout(Duration::from_secs(2))
        .bootstrap_lua(CLAIM_SYNCHRO_QUEUE)
        .start_replicaset()
        .await
        .expect("source");
    let m = rs.master();
    let gw = RunningGateway::start(&[("rs1", vec![m.uri()])], GatewayOptions::default())
        .await
        .expect("gateway");
    let from = tcf_iproto::vote(&m.uri(), &tcf_iproto::ConnectOptions::new())
        .await
        .expect("vote")
        .vclock
        .without_local();
    let mut client = gw.client().await.expect("client");
    let mut s = client
        .open("rs1", Start::After((&from).into()))
        .await
        .expect("open");
    assert!(matches!(
        s.expect(SOON).await.expect("started"),
        Message::Started(_)
    ));

    // Confirmed by the real replica: shipped.
    m.eval("box.space.stest:insert{1, 'confirmed'}", &[])
        .await
        .expect("sync insert with quorum");
    let tx = s.next_tx(SOON).await.expect("confirmed sync tx");
    assert_eq!(tx.rows.len(), 1);
    assert_eq!(tx.rows[0].space, "stest");
    s.ack(&Vclock::from(tx.vclock.clone().expect("vclock")))
        .await
        .expect("ack");

    // The only real replica is gone; the destination acks everything it is
    // sent (and every processed watermark), yet the quorum is not reached.
    rs.replicas()[0].stop().await.expect("stop the replica");
    let acker = tokio::spawn(async move {
        let mut shipped = Vec::new();
        loop {
            match s.next(Duration::from_secs(60)).await {
                Ok(Ok(Some(Message::Heartbeat(hb)))) => {
                    if let Some(p) = hb.processed {
                        let _ = s.ack(&Vclock::from(p)).await;
                    }
                }
                Ok(Ok(Some(Message::Batch(b)))) => {
                    for tx in b.transactions {
                        if let Some(v) = &tx.vclock {
                            let _ = s.ack(&Vclock::from(v.clone())).await;
                        }
                        shipped.push(tx);
                    }
                    if shipped
                        .iter()
                        .any(|t| t.rows.iter().any(|r| r.space == "test"))
                    {
                        return shipped;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    let err = m
        .eval("box.space.stest:insert{2, 'no quorum'}", &[])
        .await
        .expect_err("quorum timeout");
    let code = err
        .chain()
        .find_map(|e| e.downcast_ref::<tcf_iproto::Error>())
        .and_then(tcf_iproto::Error::server_code);
    assert_eq!(
        code,
        Some(tcf_iproto::consts::errcode::ER_SYNC_QUORUM_TIMEOUT),
        "{err:?}"
    );
    // An asynchronous write after the rollback is shipped; the rolled-back one never is.
    m.eval("box.space.test:insert{3, 'async after rollback'}", &[])
        .await
        .expect("async insert");
    let shipped = tokio::time::timeout(SOON, acker)
        .await
        .expect("async tx shipped")
        .expect("task");
    assert!(
        shipped
            .iter()
            .all(|t| t.rows.iter().all(|r| r.space != "stest")),
        "the rolled back tx was shipped: {shipped:?}"
    );
    let metrics = tcf_tests::http::get(&gw.http_addr, "/metrics")
        .await
        .expect("metrics");
    assert!(
        metrics.body.contains("tcf_gateway_sync_rolled_back_total"),
        "{}",
        metrics.body
    );
}

/// The value of gauge `name` for replicaset `rs1` in Prometheus text.
fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains("replicaset=\"rs1\""))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Waits until the gateway holds `n` transactions for a CONFIRM.
async fn wait_held(gw: &RunningGateway, n: f64) {
    tcf_tests::wait_until("the gateway to hold the queue", SOON, || async {
        let m = tcf_tests::http::get(&gw.http_addr, "/metrics")
            .await
            .expect("metrics");
        match gauge(&m.body, "tcf_gateway_sync_held_transactions") {
            Some(v) if v >= n => tcf_tests::Outcome::Ready(()),
            other => tcf_tests::Outcome::Pending(format!("held {other:?}, want {n}")),
        }
    })
    .await
    .expect("held");
}

fn first_id(tx: &tcf_proto::v1::Transaction) -> (String, u64) {
    let row = tx.rows.first().expect("a row");
    let mut raw = &row.tuple[..];
    let t = rmpv::decode::read_value(&mut raw).expect("tuple");
    (row.space.clone(), t[0].as_u64().expect("id"))
}

/// A source whose replica can be paused: while it is away nothing is
/// confirmed (quorum 2), and every synchronous transaction waits.
async fn paused_source(name: &str) -> tcf_tests::Replicaset {
    tcf_tests::init_tracing();
    TarantoolOptions::new(name)
        .replicas(1)
        .space(SpaceSpec::new("stest").sync())
        .space(SpaceSpec::new("test"))
        .user(UserSpec::new(REPL_USER, REPL_PASSWORD).grant(Grant::replication()))
        .replication_timeout(Duration::from_millis(250))
        .synchro_quorum(2)
        .synchro_timeout(Duration::from_secs(60))
        .bootstrap_lua(CLAIM_SYNCHRO_QUEUE)
        .start_replicaset()
        .await
        .expect("source")
}

const PAUSE: &str =
    "rawset(_G, 'saved_replication', box.cfg.replication) box.cfg{replication = {}}";
const RESUME: &str = "box.cfg{replication = rawget(_G, 'saved_replication')}";

#[tokio::test]
async fn one_confirm_releases_every_transaction_it_covers_in_order() {
    let rs = paused_source("multiconfirm").await;
    let m = rs.master();
    let gw = RunningGateway::start(&[("rs1", vec![m.uri()])], GatewayOptions::default())
        .await
        .expect("gateway");
    let from = tcf_iproto::vote(&m.uri(), &tcf_iproto::ConnectOptions::new())
        .await
        .expect("vote")
        .vclock
        .without_local();
    let mut client = gw.client().await.expect("client");
    let mut s = client
        .open("rs1", Start::After((&from).into()))
        .await
        .expect("open");
    assert!(matches!(
        s.expect(SOON).await.expect("started"),
        Message::Started(_)
    ));

    rs.replicas()[0].eval(PAUSE, &[]).await.expect("pause");
    // Three synchronous transactions and an asynchronous one queued behind
    // them, each in its own fiber (each waits for the quorum).
    m.eval(
        "local fiber = require('fiber') \
         for i = 1, 3 do fiber.create(function() box.space.stest:insert{i} end) end \
         fiber.create(function() box.space.test:insert{100} end)",
        &[],
    )
    .await
    .expect("writes");
    wait_held(&gw, 4.0).await;
    rs.replicas()[0].eval(RESUME, &[]).await.expect("resume");
    let mut got = Vec::new();
    while got.len() < 4 {
        let tx = s.next_tx(SOON).await.expect("released transaction");
        s.ack(&Vclock::from(tx.vclock.clone().expect("vclock")))
            .await
            .expect("ack");
        got.push(first_id(&tx));
    }
    let mut sync: Vec<u64> = got[..3]
        .iter()
        .map(|(space, id)| {
            assert_eq!(space, "stest");
            *id
        })
        .collect();
    sync.sort_unstable();
    assert_eq!(sync, [1, 2, 3]);
    assert_eq!(got[3], ("test".to_owned(), 100), "the async one last");

    // PROMOTE and DEMOTE rows pass through (2.6.3+/2.10+: the queue owner
    // changes hands); writes after them still arrive.
    m.eval(
        "if box.ctl.demote ~= nil then box.ctl.demote() box.ctl.promote() end \
         box.space.stest:insert{4} box.space.test:insert{101}",
        &[],
    )
    .await
    .expect("demote, promote, writes");
    let a = s.next_tx(SOON).await.expect("after promote");
    let b = s.next_tx(SOON).await.expect("after promote");
    assert_eq!(
        [first_id(&a), first_id(&b)],
        [("stest".to_owned(), 4), ("test".to_owned(), 101)]
    );
}

#[tokio::test]
async fn ddl_under_a_claimed_queue_waits_for_its_confirm_with_what_follows() {
    // 3.2+ with compat.box_consider_system_spaces_synchronous = 'new': the
    // system spaces are synchronous while the queue is claimed.
    // (Set once the replica has joined: its registration would wait for a
    // quorum that needs it.)
    let rs = paused_source("syncddl").await;
    let m = rs.master();
    m.eval(
        "pcall(function() require('compat').box_consider_system_spaces_synchronous = 'new' end)",
        &[],
    )
    .await
    .expect("compat");
    let sync_ddl = m
        .eval1(
            "return box.space._space.state ~= nil and box.space._space.state.is_sync == true",
            &[],
        )
        .await
        .expect("is_sync")
        .as_bool()
        == Some(true);
    if !sync_ddl {
        eprintln!(
            "SKIP: system spaces are never synchronous on this Tarantool (3.2+ with compat.box_consider_system_spaces_synchronous)"
        );
        return;
    }
    let gw = RunningGateway::start(&[("rs1", vec![m.uri()])], GatewayOptions::default())
        .await
        .expect("gateway");
    let from = tcf_iproto::vote(&m.uri(), &tcf_iproto::ConnectOptions::new())
        .await
        .expect("vote")
        .vclock
        .without_local();
    let mut client = gw.client().await.expect("client");
    let mut s = client
        .open("rs1", Start::After((&from).into()))
        .await
        .expect("open");
    assert!(matches!(
        s.expect(SOON).await.expect("started"),
        Message::Started(_)
    ));
    rs.replicas()[0].eval(PAUSE, &[]).await.expect("pause");
    m.eval(
        "local fiber = require('fiber') \
         fiber.create(function() box.schema.space.create('late'):create_index('pk') end) \
         fiber.create(function() box.space.test:insert{200} end)",
        &[],
    )
    .await
    .expect("ddl and a write");
    // The DDL (a position, nothing shipped) and the insert behind it.
    wait_held(&gw, 2.0).await;
    let status = gw.status().await.expect("status");
    let processed: Vclock = serde_json::from_value::<std::collections::BTreeMap<String, u64>>(
        status["replicasets"]["rs1"]["processed_vclock"].clone(),
    )
    .expect("processed vclock")
    .into_iter()
    .map(|(k, v)| (k.parse::<u32>().expect("id"), v))
    .collect();
    assert_eq!(
        processed, from,
        "the watermark stops before the DDL: {status}"
    );
    rs.replicas()[0].eval(RESUME, &[]).await.expect("resume");
    let tx = s.next_tx(SOON).await.expect("the insert, once confirmed");
    assert_eq!(first_id(&tx), ("test".to_owned(), 200));
    m.eval("box.space.late:insert{1}", &[])
        .await
        .expect("insert into the new space");
    let tx = s.next_tx(SOON).await.expect("new space row");
    assert_eq!(first_id(&tx), ("late".to_owned(), 1));
}
