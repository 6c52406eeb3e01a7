//! Records the replay fixtures of `iproto/tests/fixtures/<version>/` from a
//! real server (see `docs/compat.md`, "Replay fixtures"):
//!
//! ```sh
//! TCF_TARANTOOL=/opt/tarantool/3.3.0/bin/tarantool \
//!     cargo nextest run -p tcf-tests -E 'test(record_fixtures)' --run-ignored only
//! ```
//!
//! Ignored by default: CI has Tarantool 2.6 only and replays what was
//! recorded here (`iproto/tests/replay.rs`, the gateway's replay tests).

use std::{path::PathBuf, time::Duration};

use tcf_iproto::{
    ConnectOptions, Event, FetchRequest, ReplicationClient, RowKind, SubscribeRequest, Timing,
    TxAssembler, ack_channel, consts::flag, recording, vote,
};
use tcf_tests::{Grant, Outcome, Replicaset, SpaceSpec, TarantoolOptions, UserSpec, wait_until};
use uuid::Uuid;

const REPL: &str = "repl";
const REPL_PASSWORD: &str = "repl-secret";
const SOON: Duration = Duration::from_secs(30);
/// The subscriber UUID of every recording (any fixed one will do).
const SUBSCRIBER: Uuid = Uuid::from_u128(0x7cf0_0000_0000_4000_8000_0000_0000_0001);

/// Claims the synchronous queue where that exists (2.10+ need it).
const CLAIM_SYNCHRO_QUEUE: &str = "if box.ctl.promote ~= nil and box.info.synchro ~= nil \
     and box.info.synchro.queue.owner == 0 then box.ctl.promote() end";
const PAUSE: &str =
    "rawset(_G, 'saved_replication', box.cfg.replication) box.cfg{replication = {}}";
const RESUME: &str = "box.cfg{replication = rawget(_G, 'saved_replication')}";

fn fixtures_dir(version: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../iproto/tests/fixtures")
        .join(version)
}

fn repl_opts() -> ConnectOptions {
    ConnectOptions::new().credentials(REPL, REPL_PASSWORD)
}

/// A recording proxy in front of `upstream`: (its address, the recording).
async fn proxy(
    upstream: String,
) -> (
    String,
    tokio::task::JoinHandle<Result<recording::Conversation, recording::RecordingError>>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    (
        addr,
        tokio::spawn(async move { Box::pin(recording::record(l, &upstream)).await }),
    )
}

async fn save(
    dir: &std::path::Path,
    name: &str,
    rec: tokio::task::JoinHandle<Result<recording::Conversation, recording::RecordingError>>,
) {
    let conv = rec.await.expect("task").expect("recording");
    let bytes = conv.encode();
    std::fs::write(dir.join(name), &bytes).expect("write fixture");
    eprintln!("recorded {name}: {} bytes", bytes.len());
}

/// Waits until the master's synchronous queue holds `n` transactions.
async fn queue_len(rs: &Replicaset, n: u64) {
    wait_until("the synchronous queue", SOON, || async {
        let v = rs
            .master()
            .eval1("return box.info.synchro.queue.len", &[])
            .await
            .expect("queue len");
        if v.as_u64() == Some(n) {
            Outcome::Ready(())
        } else {
            Outcome::Pending(format!("len {v}, want {n}"))
        }
    })
    .await
    .expect("queue");
}

#[tokio::test]
#[ignore = "records fixtures from the server named by TCF_TARANTOOL; run by hand"]
async fn record_fixtures() {
    tcf_tests::init_tracing();
    let rs = TarantoolOptions::new("fixtures")
        .replicas(1)
        .space(SpaceSpec::new("test"))
        .space(SpaceSpec::new("loc").local())
        .space(SpaceSpec::new("stest").sync())
        .user(UserSpec::new(REPL, REPL_PASSWORD).grant(Grant::replication()))
        .replication_timeout(Duration::from_millis(500))
        .synchro_quorum(2)
        .synchro_timeout(Duration::from_secs(60))
        .bootstrap_lua(CLAIM_SYNCHRO_QUEUE)
        .bootstrap_lua("box.space.test:insert{0, 'in the snapshot'}")
        .start_replicaset()
        .await
        .expect("source");
    let m = rs.master();
    let probe = ReplicationClient::connect(&m.uri(), &repl_opts())
        .await
        .expect("connect");
    let info = probe.server().clone();
    drop(probe);
    assert!(
        info.answers_id(),
        "fixtures are for 2.10+ servers; CI runs {} live",
        info.version()
    );
    let dir = fixtures_dir(&info.version().to_string());
    std::fs::create_dir_all(&dir).expect("fixtures dir");

    // 1. VOTE.
    let (addr, rec) = proxy(m.uri()).await;
    let ballot = vote(&addr, &ConnectOptions::new()).await.expect("vote");
    eprintln!("ballot: {ballot:?}");
    save(&dir, "vote.bin", rec).await;

    // 2. Greeting, IPROTO_ID, AUTH, _schema, FETCH_SNAPSHOT with its meta.
    let (addr, rec) = proxy(m.uri()).await;
    let mut client = ReplicationClient::connect(&addr, &repl_opts())
        .await
        .expect("connect");
    client.replicaset().await.expect("identity");
    let mut snap = client
        .fetch_snapshot_with(&FetchRequest {
            instance_uuid: Some(SUBSCRIBER),
        })
        .await
        .expect("fetch");
    eprintln!("meta: {:?}", snap.meta());
    let mut rows = 0;
    while snap.next_row().await.expect("row").is_some() {
        rows += 1;
    }
    eprintln!("snapshot rows: {rows}");
    drop(snap);
    save(&dir, "snapshot.bin", rec).await;

    // 3. SUBSCRIBE and a scenario of synchronous replication.
    let (addr, rec) = proxy(m.uri()).await;
    let client = ReplicationClient::connect(&addr, &repl_opts())
        .await
        .expect("connect");
    let from = vote(&m.uri(), &ConnectOptions::new())
        .await
        .expect("vote")
        .vclock
        .without_local();
    let (ack, acks) = ack_channel(from.clone());
    let req = SubscribeRequest {
        instance_uuid: SUBSCRIBER,
        timing: Timing {
            heartbeat_interval: Duration::from_millis(500),
            ack_interval: Duration::from_millis(200),
            ..Timing::default()
        },
        ..SubscribeRequest::new(from.clone())
    };
    let mut sub = client.subscribe(&req, acks).await.expect("subscribe");
    let reader = tokio::spawn(async move {
        let mut asm = TxAssembler::new(from);
        let mut txs = Vec::new();
        loop {
            let Event::Row(row) = sub.next().await.expect("stream") else {
                continue;
            };
            let marker = row.fields().ok().and_then(|f| f.tuple).is_some_and(|t| {
                rmpv::decode::read_value(&mut &t[..])
                    .ok()
                    .and_then(|v| v.as_array()?.first()?.as_u64())
                    == Some(999)
            });
            if let Some(tx) = asm.push(row).expect("well-formed") {
                ack.send_replace(tx.vclock.clone());
                txs.push(tx);
            }
            if marker {
                return txs;
            }
        }
    });
    let replica = &rs.replicas()[0];
    m.eval("box.space.test:insert{1, 'single'}", &[])
        .await
        .expect("a");
    m.eval(
        "box.begin() box.space.test:insert{2, 'multi'} box.space.test:replace{3, 'multi'} \
         box.space.test:update(1, {{'=', 2, 'updated'}}) box.commit()",
        &[],
    )
    .await
    .expect("b");
    m.eval(
        "box.begin() box.space.test:insert{4, 'local tail'} box.space.loc:insert{1} box.commit()",
        &[],
    )
    .await
    .expect("c");
    // Three synchronous transactions and an asynchronous one behind them,
    // confirmed together once the replica is back.
    replica.eval(PAUSE, &[]).await.expect("pause");
    m.eval(
        "local fiber = require('fiber') \
         for i = 10, 12 do fiber.create(function() box.space.stest:insert{i} end) end \
         fiber.create(function() box.space.test:insert{13, 'queued'} end)",
        &[],
    )
    .await
    .expect("d");
    queue_len(&rs, 4).await;
    replica.eval(RESUME, &[]).await.expect("resume");
    queue_len(&rs, 0).await;
    // A synchronous transaction rolled back by its timeout.
    replica.eval(PAUSE, &[]).await.expect("pause");
    let _ = m
        .eval(
            "box.cfg{replication_synchro_timeout = 0.5} \
             local ok = pcall(box.space.stest.insert, box.space.stest, {20}) \
             box.cfg{replication_synchro_timeout = 60} return ok",
            &[],
        )
        .await
        .expect("e");
    replica.eval(RESUME, &[]).await.expect("resume");
    // DEMOTE and PROMOTE.
    m.eval("box.ctl.demote() box.ctl.promote()", &[])
        .await
        .expect("f");
    // DDL under the claimed queue, where system spaces can be synchronous.
    let ddl = m
        .eval1(
            "return pcall(function() \
             require('compat').box_consider_system_spaces_synchronous = 'new' end) \
             and box.space._space.state ~= nil and box.space._space.state.is_sync == true",
            &[],
        )
        .await
        .expect("compat")
        .as_bool()
        == Some(true);
    if ddl {
        replica.eval(PAUSE, &[]).await.expect("pause");
        m.eval(
            "local fiber = require('fiber') \
             fiber.create(function() box.schema.space.create('late'):create_index('pk') end) \
             fiber.create(function() box.space.test:insert{30, 'behind the ddl'} end)",
            &[],
        )
        .await
        .expect("g");
        queue_len(&rs, 2).await;
        replica.eval(RESUME, &[]).await.expect("resume");
        queue_len(&rs, 0).await;
        m.eval(
            "box.space.late:insert{1} \
             require('compat').box_consider_system_spaces_synchronous = 'old'",
            &[],
        )
        .await
        .expect("g2");
    }
    m.eval("box.space.test:insert{999, 'end'}", &[])
        .await
        .expect("h");
    let txs = tokio::time::timeout(SOON, reader)
        .await
        .expect("the marker arrives")
        .expect("reader");
    save(&dir, "subscribe.bin", rec).await;

    // The recording must show what the replay tests rely on.
    let kinds: Vec<RowKind> = txs
        .iter()
        .flat_map(|t| t.rows.iter().map(|r| r.kind()))
        .collect();
    for k in [
        RowKind::Confirm,
        RowKind::Rollback,
        RowKind::Promote,
        RowKind::Demote,
    ] {
        assert!(kinds.contains(&k), "no {k:?} in {kinds:?}");
    }
    let confirm_covers = txs
        .iter()
        .filter_map(|t| {
            let r = t.rows.first()?;
            (r.kind() == RowKind::Confirm).then(|| r.synchro().ok())?
        })
        .map(|c| {
            txs.iter()
                .filter(|t| {
                    t.rows.last().is_some_and(|r| {
                        r.header.flags & flag::WAIT_ACK != 0
                            && r.lsn() <= c.lsn
                            && r.replica_id() == c.replica_id
                    })
                })
                .count()
        })
        .collect::<Vec<_>>();
    eprintln!("sync transactions covered by each CONFIRM (cumulative): {confirm_covers:?}");
    assert!(
        confirm_covers.windows(2).any(|w| w[1] >= w[0] + 2) || confirm_covers.first() >= Some(&2),
        "no CONFIRM covering several transactions: re-run the recorder"
    );
}
