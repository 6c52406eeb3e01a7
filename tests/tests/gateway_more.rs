//! tcf-gateway end to end, continued: spilled transactions, an instance that
//! lost the rows, status and metrics, a stream replacing another.

use std::time::Duration;

use tcf_iproto::{Ballot, ConnectOptions, Vclock};
use tcf_proto::v1::{self, open::Start};
use tcf_tests::{
    Grant, Outcome, Replicaset, SpaceSpec, Tarantool, TarantoolOptions, UserSpec,
    gateway::{GatewayOptions, Message, REPL_PASSWORD, REPL_USER, RunningGateway, Stream},
    wait_until,
};

const SOON: Duration = Duration::from_secs(30);

async fn source(name: &str, replicas: usize) -> Replicaset {
    tcf_tests::init_tracing();
    TarantoolOptions::new(name)
        .replicas(replicas)
        .space(
            SpaceSpec::new("test")
                .field("id", "unsigned")
                .field("name", "string")
                .field("n", "integer"),
        )
        // The `replication` role: `read` on `universe`, and on 3.3+ `write` on
        // `_gc_consumers` (the anonymous subscriber's WAL GC consumer).
        .user(UserSpec::new(REPL_USER, REPL_PASSWORD).grant(Grant::replication()))
        .replication_timeout(Duration::from_millis(250))
        .start_replicaset()
        .await
        .expect("source")
}

async fn ballot(t: &Tarantool) -> Ballot {
    tcf_iproto::vote(&t.uri(), &ConnectOptions::new())
        .await
        .expect("vote")
}

async fn vclock(t: &Tarantool) -> Vclock {
    ballot(t).await.vclock.without_local()
}

async fn gateway(rs: &Replicaset, extra: &[&str]) -> RunningGateway {
    let opts = GatewayOptions {
        extra: extra.iter().map(|l| (*l).to_owned()).collect(),
        ..GatewayOptions::default()
    };
    RunningGateway::start(&[("rs1", rs.uris())], opts)
        .await
        .expect("gateway starts")
}

async fn open_at(gw: &RunningGateway, from: &Vclock) -> Stream {
    let mut client = gw.client().await.expect("client");
    let mut s = client
        .open("rs1", Start::After(from.into()))
        .await
        .expect("stream opens");
    match s.expect(SOON).await.expect("first message") {
        Message::Started(st) => assert!(!st.source_uuid.is_empty()),
        other => panic!("expected Started, got {other:?}"),
    }
    s
}

fn id(row: &v1::Row) -> u64 {
    let mut raw = &row.tuple[..];
    let tuple = rmpv::decode::read_value(&mut raw).expect("msgpack");
    tuple
        .as_array()
        .and_then(|a| a.first())
        .and_then(rmpv::Value::as_u64)
        .expect("an unsigned id first")
}

/// The ids of one whole transaction's rows.
async fn next_ids(s: &mut Stream) -> (Vec<u64>, Vclock) {
    let tx = s.next_tx(SOON).await.expect("transaction");
    (
        tx.rows.iter().map(id).collect(),
        Vclock::from(tx.vclock.expect("vclock")),
    )
}

/// A vclock as the status JSON shows it: `{"1": lsn, ...}`.
fn json_vclock(v: &Vclock) -> serde_json::Value {
    serde_json::Value::Object(
        v.iter()
            .map(|(id, lsn)| (id.to_string(), lsn.into()))
            .collect(),
    )
}

#[tokio::test]
async fn a_large_transaction_is_spilled_and_arrives_whole() {
    let rs = source("spill", 0).await;
    let m = rs.master();
    let gw = gateway(
        &rs,
        &["  max_transaction_memory: 65536", "  chunk_bytes: 65536"],
    )
    .await;
    let from = vclock(m).await;
    let mut s = open_at(&gw, &from).await;
    m.eval(
        "box.begin() for i = 1, 20000 do box.space.test:insert{i, 'payload-' .. i, i * 2} end box.commit()",
        &[],
    )
    .await
    .expect("one transaction of 20,000 rows");
    let target = vclock(m).await;

    let mut pieces: Vec<v1::Transaction> = Vec::new();
    let mut batches = 0;
    while pieces.last().is_none_or(|p| p.partial) {
        match s.expect(SOON).await.expect("message") {
            Message::Batch(b) => {
                batches += 1;
                pieces.extend(b.transactions);
            }
            Message::Heartbeat(_) => {}
            other => panic!("expected a batch, got {other:?}"),
        }
    }
    assert!(
        pieces.len() > 1,
        "{} rows of about 75 bytes in pieces of 64 KiB: got {} piece(s)",
        20_000,
        pieces.len()
    );
    assert!(batches > 1, "messages stay at about chunk_bytes");
    let (last, partial) = pieces.split_last().expect("pieces");
    for p in partial {
        assert!(p.partial, "every piece but the last is partial");
        assert!(p.vclock.is_none(), "only the last piece carries the vclock");
        assert_eq!((p.origin, p.tsn), (last.origin, last.tsn));
        let bytes: usize = p.rows.iter().map(|r| r.tuple.len()).sum();
        assert!(bytes <= 65536, "a piece of {bytes} bytes");
    }
    assert!(!last.partial);
    assert_eq!(
        Vclock::from(last.vclock.clone().expect("vclock")),
        target,
        "the last piece carries the position after the transaction"
    );
    let ids: Vec<u64> = pieces.iter().flat_map(|p| p.rows.iter().map(id)).collect();
    assert_eq!(ids, (1..=20_000).collect::<Vec<_>>(), "whole and in order");

    // The stream goes on after it.
    m.eval("box.space.test:insert{20001, 'after', 1}", &[])
        .await
        .expect("write");
    assert_eq!(next_ids(&mut s).await.0, [20_001]);
}

#[tokio::test]
async fn a_replica_that_lost_the_rows_is_passed_over() {
    let rs = source("passover", 1).await;
    let (m, replica) = (rs.master(), &rs.replicas()[0]);
    let from = vclock(m).await;
    m.eval(
        "for i = 1, 100 do box.space.test:insert{i, 'before', i} end",
        &[],
    )
    .await
    .expect("writes");
    rs.wait_replicas_caught_up().await.expect("caught up");
    // Only the replica keeps a single checkpoint and drops its old xlogs
    // (2.8+ also pause the cleanup for `wal_cleanup_delay` while registered
    // peers have not subscribed: the master never does; 2.6 has no such
    // option, hence the pcall).
    replica
        .eval(
            "pcall(box.cfg, {wal_cleanup_delay = 0}) \
             box.cfg{checkpoint_count = 1} box.snapshot()",
            &[],
        )
        .await
        .expect("replica snapshot");
    m.eval(
        "for i = 101, 200 do box.space.test:insert{i, 'between', i} end",
        &[],
    )
    .await
    .expect("writes");
    rs.wait_replicas_caught_up().await.expect("caught up");
    replica
        .eval("box.snapshot()", &[])
        .await
        .expect("replica snapshot");
    wait_until(
        "the replica's gc_vclock to pass the position",
        SOON,
        || async {
            let b = ballot(replica).await;
            if b.has_rows_after(&from) {
                Outcome::Pending(format!("gc_vclock {}", b.gc_vclock))
            } else {
                Outcome::Ready(())
            }
        },
    )
    .await
    .expect("the replica lost the rows");
    let mb = ballot(m).await;
    assert!(
        mb.has_rows_after(&from),
        "the master still has them: gc_vclock {} position {from}",
        mb.gc_vclock
    );
    assert!(ballot(replica).await.is_ro, "the replica is read-only");

    let gw = gateway(&rs, &[]).await;
    let mut s = open_at(&gw, &from).await;
    let mut seen = Vec::new();
    while seen.len() < 200 {
        seen.extend(next_ids(&mut s).await.0);
    }
    m.eval("box.space.test:insert{201, 'after', 1}", &[])
        .await
        .expect("write");
    seen.extend(next_ids(&mut s).await.0);
    assert_eq!(
        seen,
        (1..=201).collect::<Vec<_>>(),
        "every row exactly once, in order"
    );
    let status = gw.status().await.expect("status");
    assert_eq!(
        status["replicasets"]["rs1"]["instance"],
        m.uri(),
        "the master is read, not the replica: {status}"
    );
}

#[tokio::test]
async fn status_reports_positions_and_lag() {
    let rs = source("status", 0).await;
    let m = rs.master();
    let gw = gateway(&rs, &[]).await;
    let from = vclock(m).await;
    let mut s = open_at(&gw, &from).await;
    m.eval(
        "for i = 1, 5 do box.space.test:insert{i, 'row', i} end",
        &[],
    )
    .await
    .expect("five transactions");
    let mut vclocks = Vec::new();
    for i in 1..=5 {
        let (ids, v) = next_ids(&mut s).await;
        assert_eq!(ids, [i]);
        vclocks.push(v);
    }
    let (third, last) = (vclocks[2].clone(), vclocks[4].clone());
    assert_eq!(last, vclock(m).await);
    s.ack(&third).await.expect("ack");

    let rs1 = |status: &serde_json::Value| status["replicasets"]["rs1"].clone();
    let st = wait_until("the ack of the third transaction", SOON, || async {
        let st = rs1(&gw.status().await.expect("status"));
        if st["acked_vclock"] == json_vclock(&third) && st["lag_lsn"] == 2 {
            Outcome::Ready(st)
        } else {
            Outcome::Pending(st.to_string())
        }
    })
    .await
    .expect("acked and lag in rows");
    assert_eq!(st["state"], "streaming", "{st}");
    assert_eq!(st["shipped_vclock"], json_vclock(&last), "{st}");
    assert_eq!(st["source_vclock"], json_vclock(&last), "{st}");
    assert_eq!(st["instance"], m.uri(), "{st}");
    assert_eq!(st["transactions_shipped"], 5, "{st}");
    assert_eq!(st["rows_shipped"], 5, "{st}");

    s.ack(&last).await.expect("ack");
    let st = wait_until("lag_lsn 0 after acking everything", SOON, || async {
        let st = rs1(&gw.status().await.expect("status"));
        if st["acked_vclock"] == json_vclock(&last) && st["lag_lsn"] == 0 {
            Outcome::Ready(st)
        } else {
            Outcome::Pending(st.to_string())
        }
    })
    .await
    .expect("no lag");
    assert_eq!(st["source_vclock"], json_vclock(&last), "{st}");
    assert_eq!(st["state"], "streaming", "{st}");
    assert_eq!(st["lag_seconds"], 0.0, "{st}");

    let metrics = tcf_tests::http::get(&gw.http_addr, "/metrics")
        .await
        .expect("metrics");
    for name in [
        "tcf_gateway_lag_seconds",
        "tcf_gateway_position_signature",
        "tcf_gateway_xlog_headroom_rows",
    ] {
        assert!(metrics.body.contains(name), "{name}:\n{}", metrics.body);
    }
}

#[tokio::test]
async fn a_newer_stream_replaces_the_older_one() {
    let rs = source("replace", 0).await;
    let m = rs.master();
    let gw = gateway(&rs, &[]).await;
    let from = vclock(m).await;
    let mut s1 = open_at(&gw, &from).await;
    m.eval("box.space.test:insert{1, 'one', 1}", &[])
        .await
        .expect("write");
    let (ids, after_one) = next_ids(&mut s1).await;
    assert_eq!(ids, [1]);

    let mut s2 = open_at(&gw, &after_one).await;
    let deadline = tokio::time::Instant::now() + SOON;
    let end = loop {
        match s1
            .next(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
            .expect("the older stream ends within 30 s")
        {
            Ok(Some(Message::Heartbeat(_))) => {}
            // docs/stream.md: a replaced stream may be told `STOPPED` first.
            Ok(Some(Message::Error(e))) => {
                assert_eq!(e.kind, v1::ErrorKind::Stopped as i32, "{e:?}");
            }
            Ok(Some(other)) => panic!("the replaced stream sent {other:?}"),
            Ok(None) => break "ended".to_owned(),
            Err(status) => break format!("failed: {status}"),
        }
    };
    tracing::info!("the replaced stream {end}");

    m.eval("box.space.test:insert{2, 'two', 2}", &[])
        .await
        .expect("write");
    let (ids, _) = next_ids(&mut s2).await;
    assert_eq!(ids, [2], "the newer stream goes on where it started");
    let status = gw.status().await.expect("status");
    assert_eq!(
        status["replicasets"]["rs1"]["state"], "streaming",
        "{status}"
    );
}

/// The value of gauge `name` for replicaset rs1, if exported.
fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains("replicaset=\"rs1\""))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn the_state_gauge_follows_the_status() {
    let rs = source("gauge", 0).await;
    let m = rs.master();
    let gw = gateway(&rs, &[]).await;
    let s = open_at(&gw, &vclock(m).await).await;
    let streaming = wait_until("state gauge 3 (streaming)", SOON, || async {
        let body = tcf_tests::http::get(&gw.http_addr, "/metrics").await?.body;
        anyhow::Ok((gauge(&body, "tcf_gateway_state") == Some(3.0)).then_some(()))
    })
    .await;
    streaming.expect("streaming");
    drop(s);
    wait_until("status idle", SOON, || async {
        let st = gw.status().await?;
        anyhow::Ok(st["replicasets"]["rs1"]["state"] == "idle")
    })
    .await
    .expect("the status says idle once the destination is gone");
    wait_until("state gauge 0 (idle)", SOON, || async {
        let body = tcf_tests::http::get(&gw.http_addr, "/metrics").await?.body;
        let v = gauge(&body, "tcf_gateway_state");
        anyhow::Ok(if v == Some(0.0) {
            Outcome::Ready(())
        } else {
            Outcome::Pending(format!("tcf_gateway_state {v:?}"))
        })
    })
    .await
    .expect("the gauge says idle too");
}
