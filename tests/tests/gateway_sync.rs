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
