//! The anonymous-replica side of iproto against a real Tarantool (2.6, 2.11, 3.x):
//! FETCH_SNAPSHOT, SUBSCRIBE, transactions, acks, liveness and WAL gaps.

use std::time::Duration;

use tcf_iproto::{
    ConnectOptions, DmlKind, Error, Event, ReplicationClient, RowKind, SubscribeRequest,
    Subscription, Timing, Transaction, TxAssembler, Vclock, ack_channel, consts::errcode, vote,
};
use tcf_tests::{
    Grant, Privileges, Replicaset, Signal, SpaceSpec, Tarantool, TarantoolOptions, UserSpec,
};

const REPL: &str = "repl";
const REPL_PASSWORD: &str = "repl-secret";
/// Deadline for anything that should happen within a few heartbeats.
const SOON: Duration = Duration::from_secs(30);

/// Claims the synchronous queue on the master where that exists: 2.10+
/// refuse synchronous writes while it belongs to nobody
/// (`ER_SYNCHRO_QUEUE_UNCLAIMED`); 2.6.0 has neither the queue owner nor
/// `box.ctl.promote`.
const CLAIM_SYNCHRO_QUEUE: &str = "if box.ctl.promote ~= nil and box.info.synchro ~= nil \
     and box.info.synchro.queue.owner == 0 then box.ctl.promote() end";

/// 3.3+ persist an anonymous subscriber's WAL GC consumer in
/// `_gc_consumers` as the subscribing user: it needs `write` there (the
/// `replication` role has it on 3.3+).
const GC_CONSUMERS_GRANT: &str = "if box.space._gc_consumers ~= nil then \
     box.schema.user.grant('repl', 'write', 'space', '_gc_consumers') end";

fn options(name: &str) -> TarantoolOptions {
    tcf_tests::init_tracing();
    TarantoolOptions::new(name)
        .space(SpaceSpec::new("test"))
        .space(SpaceSpec::new("loc").local())
        .space(SpaceSpec::new("stest").sync())
        // `read` on `universe`: all an anonymous replica needs before 3.3.
        .user(UserSpec::new(REPL, REPL_PASSWORD).grant(Grant::Universe(Privileges::READ)))
        .replication_timeout(Duration::from_millis(250))
        .bootstrap_lua(GC_CONSUMERS_GRANT)
        .bootstrap_lua(CLAIM_SYNCHRO_QUEUE)
}

fn repl_opts() -> ConnectOptions {
    ConnectOptions::new().credentials(REPL, REPL_PASSWORD)
}

fn fast_timing() -> Timing {
    // The master drops a replica silent for 4 x replication_timeout (1 s here):
    // ack well within that.
    Timing {
        heartbeat_interval: Duration::from_millis(250),
        ack_interval: Duration::from_millis(100),
        ..Timing::default()
    }
}

async fn vclock_of(t: &Tarantool) -> Vclock {
    vote(&t.uri(), &ConnectOptions::new())
        .await
        .expect("vote")
        .vclock
        .without_local()
}

async fn space_id(t: &Tarantool, name: &str) -> u32 {
    let v = t
        .eval1("return box.space[...].id", &[name.into()])
        .await
        .expect("space id");
    v.as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .expect("numeric space id")
}

/// Subscribes to `t` from `from`, acking `from` until the caller publishes more.
async fn subscribe(t: &Tarantool, from: &Vclock) -> (Subscription, tcf_iproto::AckSender) {
    let client = ReplicationClient::connect(&t.uri(), &repl_opts())
        .await
        .expect("connect");
    let (ack, acks) = ack_channel(from.clone());
    let req = SubscribeRequest {
        timing: fast_timing(),
        ..SubscribeRequest::new(from.clone())
    };
    (client.subscribe(&req, acks).await.expect("subscribe"), ack)
}

/// Reads rows and heartbeats until the subscription fails; its error.
async fn end_of(sub: &mut Subscription) -> Error {
    loop {
        if let Err(e) = sub.next().await {
            return e;
        }
    }
}

/// Reads until a whole transaction arrives (heartbeats are skipped).
async fn next_tx(sub: &mut Subscription, asm: &mut TxAssembler) -> Transaction {
    let read = async {
        loop {
            match sub.next().await.expect("stream") {
                Event::Heartbeat { .. } => continue,
                Event::Row(row) => {
                    if let Some(tx) = asm.push(row).expect("well-formed stream") {
                        return tx;
                    }
                }
            }
        }
    };
    tokio::time::timeout(SOON, read)
        .await
        .expect("a transaction within the deadline")
}

#[tokio::test]
async fn vote_reports_vclock_and_read_only_state() {
    let rs = options("vote")
        .replicas(1)
        .start_replicaset()
        .await
        .expect("replicaset");
    let master = vote(&rs.master().uri(), &ConnectOptions::new())
        .await
        .expect("vote master");
    let replica = vote(&rs.replicas()[0].uri(), &ConnectOptions::new())
        .await
        .expect("vote replica");
    assert!(!master.is_ro && !master.is_ro_cfg, "{master:?}");
    assert!(replica.is_ro && replica.is_ro_cfg, "{replica:?}");
    assert_eq!(
        master.vclock.without_local(),
        replica.vclock.without_local()
    );
}

#[tokio::test]
async fn fetch_snapshot_returns_user_rows_then_subscribe_continues() {
    let master = options("snap").start_single().await.expect("master");
    master
        .eval(
            "for i = 1, 3 do box.space.test:insert{i, 'row-' .. i} end",
            &[],
        )
        .await
        .expect("rows");
    let test_id = space_id(&master, "test").await;

    let mut client = ReplicationClient::connect(&master.uri(), &repl_opts())
        .await
        .expect("connect");
    let rs_uuid = client.replicaset_uuid().await.expect("replicaset uuid");
    let has_meta = client.server().snapshot_has_meta();
    let mut snap = client.fetch_snapshot().await.expect("fetch snapshot");
    // 2.11+ include the local component 0 (`send_join_header`).
    assert_eq!(
        snap.start_vclock().without_local(),
        vclock_of(&master).await
    );
    // 2.11.4+/3.x send the synchronous queue's state (and 3.x the Raft term)
    // before the data.
    match snap.meta() {
        Some(meta) => {
            assert!(has_meta, "{meta:?}");
            let state = master
                .eval(
                    "return box.info.synchro.queue.owner, box.info.election.term",
                    &[],
                )
                .await
                .expect("synchro state");
            let queue = meta.queue.expect("queue state in the meta section");
            assert_eq!(Some(u64::from(queue.replica_id)), state[0].as_u64());
            if let Some(raft) = &meta.raft {
                assert_eq!(Some(raft.term), state[1].as_u64(), "{meta:?}");
            }
        }
        None => assert!(!has_meta, "the server should have sent the meta section"),
    }
    let mut user_rows = Vec::new();
    let mut system_rows = 0;
    while let Some(row) = snap.next_row().await.expect("snapshot row") {
        assert_eq!(row.kind(), RowKind::Dml(DmlKind::Insert));
        let f = row.fields().expect("body");
        if f.space_id == test_id {
            let mut raw = &f.tuple.expect("tuple")[..];
            user_rows.push(rmpv::decode::read_value(&mut raw).expect("tuple"));
        } else {
            assert!(f.space_id < 512, "only system rows besides `test`: {f:?}");
            system_rows += 1;
        }
    }
    assert!(system_rows > 100, "system spaces come first: {system_rows}");
    user_rows.sort_by_key(|t| t[0].as_u64());
    let expect: Vec<rmpv::Value> = (1..=3u64)
        .map(|i| rmpv::Value::Array(vec![i.into(), format!("row-{i}").into()]))
        .collect();
    assert_eq!(user_rows, expect);
    let start = snap.start_vclock().clone();
    assert!(snap.end_vclock().is_some());

    // SUBSCRIBE on the same socket, from the snapshot's start vclock.
    let client = snap.into_client().expect("snapshot ended");
    let (_ack, acks) = ack_channel(start.clone());
    let req = SubscribeRequest {
        replicaset_uuid: Some(rs_uuid),
        timing: fast_timing(),
        ..SubscribeRequest::new(start.clone())
    };
    let mut sub = client.subscribe(&req, acks).await.expect("subscribe");
    assert_eq!(sub.replicaset_uuid(), rs_uuid);
    master
        .eval("box.space.test:insert{4, 'row-4'}", &[])
        .await
        .expect("insert");
    let tx = next_tx(&mut sub, &mut TxAssembler::new(start.without_local())).await;
    assert_eq!(tx.rows.len(), 1);
    assert_eq!(tx.vclock, vclock_of(&master).await);
}

#[tokio::test]
async fn a_multi_row_transaction_arrives_whole_with_its_vclock() {
    let master = options("tx").start_single().await.expect("master");
    let test_id = space_id(&master, "test").await;
    let from = vclock_of(&master).await;
    let (mut sub, _ack) = subscribe(&master, &from).await;
    master
        .eval(
            "box.begin() box.space.test:insert{1, 'a'} box.space.test:replace{2, 'b'} \
             box.space.test:update(1, {{'=', 2, 'A'}}) box.commit()",
            &[],
        )
        .await
        .expect("transaction");
    let mut asm = TxAssembler::new(from.clone());
    let tx = next_tx(&mut sub, &mut asm).await;
    let kinds: Vec<_> = tx.rows.iter().map(|r| r.kind()).collect();
    assert_eq!(
        kinds,
        [
            RowKind::Dml(DmlKind::Insert),
            RowKind::Dml(DmlKind::Replace),
            RowKind::Dml(DmlKind::Update)
        ]
    );
    assert!(
        tx.rows
            .iter()
            .all(|r| r.fields().expect("body").space_id == test_id)
    );
    let master_vclock = vclock_of(&master).await;
    assert_eq!(tx.vclock, master_vclock);
    assert_eq!(tx.last_lsn() - tx.tsn, 2);
    assert_eq!(tx.vclock.signature(), from.signature() + 3);
    // The update keeps its 1-based INDEX_BASE and raw ops.
    let upd = tx.rows[2].fields().expect("update body");
    assert_eq!(upd.index_base, Some(1));
    assert!(upd.key.is_some() && upd.tuple.is_some());
}

#[tokio::test]
async fn a_transaction_ending_in_a_local_row_is_closed_by_a_nop() {
    let master = options("nop").start_single().await.expect("master");
    let from = vclock_of(&master).await;
    let (mut sub, _ack) = subscribe(&master, &from).await;
    master
        .eval("box.begin() box.space.test:insert{30, 'x'} box.space.loc:insert{1, 'local'} box.commit()", &[])
        .await
        .expect("transaction");
    master
        .eval(
            "box.space.loc:insert{2, 'local only'} box.space.test:insert{31, 'y'}",
            &[],
        )
        .await
        .expect("more");
    let mut asm = TxAssembler::new(from);
    let tx = next_tx(&mut sub, &mut asm).await;
    let kinds: Vec<_> = tx.rows.iter().map(|r| r.kind()).collect();
    // Before 2.11.2/3.0 a NOP carries the commit flag; since then the relay
    // moves the flag onto the last global row (commit 9bde48a8bc).
    assert!(
        kinds == [RowKind::Dml(DmlKind::Insert), RowKind::Nop]
            || kinds == [RowKind::Dml(DmlKind::Insert)],
        "{kinds:?}"
    );
    assert!(tx.rows.last().expect("rows").is_commit());
    assert_eq!(tx.dml_rows().count(), 1);
    // The local-only insert is never relayed: the next transaction is insert 31.
    let next = next_tx(&mut sub, &mut asm).await;
    assert_eq!(next.rows.len(), 1);
    assert_eq!(next.vclock, vclock_of(&master).await);
}

#[tokio::test]
async fn subscribing_to_a_read_only_replica_keeps_origin_ids() {
    let rs: Replicaset = options("ro")
        .replicas(1)
        .start_replicaset()
        .await
        .expect("replicaset");
    let replica = &rs.replicas()[0];
    let from = vclock_of(replica).await;
    let (mut sub, _ack) = subscribe(replica, &from).await;
    let master_id = rs
        .master()
        .eval1("return box.info.id", &[])
        .await
        .expect("id")
        .as_u64();
    let replica_id = replica
        .eval1("return box.info.id", &[])
        .await
        .expect("id")
        .as_u64();
    assert_eq!(Some(u64::from(sub.responder_id())), replica_id);
    rs.master()
        .eval("box.begin() box.space.test:insert{500, 'via-ro-1'} box.space.test:insert{501, 'via-ro-2'} box.commit()", &[])
        .await
        .expect("write on master");
    let tx = next_tx(&mut sub, &mut TxAssembler::new(from)).await;
    assert_eq!(tx.rows.len(), 2);
    assert_eq!(
        Some(u64::from(tx.replica_id)),
        master_id,
        "rows keep the master as origin"
    );
    assert_eq!(
        tx.vclock,
        vclock_of(rs.master()).await,
        "vclocks are portable"
    );
}

#[tokio::test]
async fn a_killed_upstream_ends_the_stream_with_an_error() {
    let master = options("kill").start_single().await.expect("master");
    let from = vclock_of(&master).await;
    let (mut sub, _ack) = subscribe(&master, &from).await;
    master
        .eval("box.space.test:insert{1, 'x'}", &[])
        .await
        .expect("insert");
    next_tx(&mut sub, &mut TxAssembler::new(from)).await;
    master.kill(Signal::SIGKILL).expect("kill -9");
    let end = tokio::time::timeout(SOON, end_of(&mut sub));
    let err = end
        .await
        .expect("the stream ends with an error, not a hang");
    assert!(err.is_connection_error(), "{err:?}");
}

#[tokio::test]
async fn a_silent_upstream_is_dead_but_a_paused_reader_is_not() {
    let master = options("alive").start_single().await.expect("master");
    let from = vclock_of(&master).await;
    let (mut sub, _ack) = subscribe(&master, &from).await;

    // The consumer stops reading for 8 heartbeat intervals (twice the dead
    // interval), as backpressure would make it: acks keep flowing on their own
    // timer, so the master keeps the relay, and no false death is reported.
    let pause = fast_timing().dead_after() * 2;
    tokio::time::sleep(pause).await;
    master
        .eval("box.space.test:insert{1, 'after the pause'}", &[])
        .await
        .expect("insert");
    let tx = next_tx(&mut sub, &mut TxAssembler::new(from)).await;
    assert_eq!(tx.rows.len(), 1);

    // A stopped upstream sends nothing: dead after 4 heartbeat intervals of reading.
    master.kill(Signal::SIGSTOP).expect("SIGSTOP");
    let err = tokio::time::timeout(SOON, end_of(&mut sub))
        .await
        .expect("death detected");
    master.kill(Signal::SIGCONT).expect("SIGCONT");
    assert!(matches!(err, Error::UpstreamDead { .. }), "{err:?}");
}

#[tokio::test]
async fn a_relay_silent_after_it_starts_is_given_the_start_timeout() {
    // A relay scanning a large xlog up to the subscribe position sends its
    // starting heartbeat, then nothing until the first row. Here the
    // master's replication_timeout is long, so after that heartbeat nothing
    // comes until a row is written: twice the usual dead interval of silence.
    let master = options("first")
        .replication_timeout(Duration::from_secs(30))
        .start_single()
        .await
        .expect("master");
    let silence = fast_timing().dead_after() * 2;
    let from = vclock_of(&master).await;
    let subscribe_with = |start_timeout: Duration| {
        let (uri, from) = (master.uri(), from.clone());
        async move {
            let client = ReplicationClient::connect(&uri, &repl_opts())
                .await
                .expect("connect");
            let (ack, acks) = ack_channel(from.clone());
            let req = SubscribeRequest {
                timing: Timing {
                    start_timeout,
                    ..fast_timing()
                },
                ..SubscribeRequest::new(from)
            };
            (client.subscribe(&req, acks).await.expect("subscribe"), ack)
        }
    };

    // With no grace beyond the dead interval, the silent start is a death.
    let (mut strict, _ack) = subscribe_with(fast_timing().dead_after()).await;
    let err = tokio::time::timeout(SOON, end_of(&mut strict))
        .await
        .expect("judged within the dead interval");
    assert!(matches!(err, Error::UpstreamDead { .. }), "{err:?}");
    drop(strict);

    // With the default grace, the same silence is waited out and the first
    // row arrives.
    let (mut sub, _ack) = subscribe_with(Timing::default().start_timeout).await;
    let reader = tokio::spawn(async move {
        let tx = next_tx(&mut sub, &mut TxAssembler::new(from)).await;
        (sub, tx)
    });
    tokio::time::sleep(silence).await;
    assert!(
        !reader.is_finished(),
        "the reader is still waiting, not dead"
    );
    master
        .eval("box.space.test:insert{1, 'after a silent start'}", &[])
        .await
        .expect("insert");
    let (mut sub, tx) = tokio::time::timeout(SOON, reader)
        .await
        .expect("the row arrives")
        .expect("reader task");
    assert_eq!(tx.rows.len(), 1);

    // Once a row came, the usual dead interval applies.
    master.kill(Signal::SIGSTOP).expect("SIGSTOP");
    let err = tokio::time::timeout(SOON, end_of(&mut sub))
        .await
        .expect("death detected");
    master.kill(Signal::SIGCONT).expect("SIGCONT");
    assert!(matches!(err, Error::UpstreamDead { .. }), "{err:?}");
}

#[tokio::test]
async fn acks_carry_only_the_vclock_the_caller_publishes() {
    // One registered instance and quorum 2: the anonymous ack is the only one
    // that can complete the quorum (Tarantool < 2.10 counts it).
    let master = options("acks")
        .synchro_quorum(2)
        .synchro_timeout(Duration::from_secs(1))
        .start_single()
        .await
        .expect("master");
    let from = vclock_of(&master).await;
    let (mut sub, ack) = subscribe(&master, &from).await;

    // The caller never publishes past `from`: the sync insert cannot be confirmed.
    let reader = tokio::spawn(async move {
        let mut asm = TxAssembler::new(from);
        loop {
            let tx = next_tx(&mut sub, &mut asm).await;
            if tx.rows.iter().any(|r| r.kind() == RowKind::Rollback) {
                return (sub, asm);
            }
        }
    });
    let err = master
        .eval("box.space.stest:insert{1, 'not acked'}", &[])
        .await
        .expect_err("no quorum");
    let code = err
        .chain()
        .find_map(|e| e.downcast_ref::<Error>())
        .and_then(Error::server_code);
    assert_eq!(code, Some(errcode::ER_SYNC_QUORUM_TIMEOUT), "{err:?}");
    let (mut sub, mut asm) = tokio::time::timeout(SOON, reader)
        .await
        .expect("rollback seen")
        .expect("task");

    // Now the caller publishes what it received. Before 2.10 the anonymous
    // ack completes the quorum and the next sync insert commits; since 2.10
    // anonymous acks never count, and it times out even though acked.
    if !sub.server().anon_acks_count_for_quorum() {
        let (tx, rolled_back) = tokio::join!(
            async {
                let tx = next_tx(&mut sub, &mut asm).await;
                ack.send_replace(tx.vclock.clone());
                tx
            },
            master.eval("box.space.stest:insert{2, 'acked in vain'}", &[])
        );
        assert_eq!(tx.dml_rows().count(), 1);
        let code = rolled_back
            .expect_err("anonymous acks do not count")
            .chain()
            .find_map(|e| e.downcast_ref::<Error>())
            .and_then(Error::server_code);
        assert_eq!(code, Some(errcode::ER_SYNC_QUORUM_TIMEOUT));
        let rollback = next_tx(&mut sub, &mut asm).await;
        assert_eq!(rollback.rows[0].kind(), RowKind::Rollback);
        return;
    }
    master
        .eval("box.cfg{replication_synchro_timeout = 30}", &[])
        .await
        .expect("cfg");
    let writer = tokio::spawn({
        let uri = master.uri();
        async move {
            let c = tcf_iproto::Connection::connect(
                &uri,
                &ConnectOptions::new()
                    .credentials(tcf_tests::ADMIN_USER, tcf_tests::ADMIN_PASSWORD),
            )
            .await?;
            c.eval(
                "box.space.stest:insert{2, 'acked'}",
                &[][..] as &[rmpv::Value],
            )
            .await
        }
    });
    let tx = next_tx(&mut sub, &mut asm).await;
    assert_eq!(tx.dml_rows().count(), 1);
    ack.send_replace(tx.vclock.clone());
    tokio::time::timeout(SOON, writer)
        .await
        .expect("confirmed in time")
        .expect("task")
        .expect("sync insert");
    let confirm = next_tx(&mut sub, &mut asm).await;
    assert_eq!(confirm.rows[0].kind(), RowKind::Confirm);
    assert_eq!(
        confirm.rows[0].synchro().expect("confirm body").lsn,
        tx.last_lsn()
    );
}

#[tokio::test]
async fn a_subscription_ahead_of_the_upstream_or_to_another_replicaset_is_refused() {
    let master = options("ahead").start_single().await.expect("master");
    let mut ahead = vclock_of(&master).await;
    ahead.set(1, 1_000_000);
    let client = ReplicationClient::connect(&master.uri(), &repl_opts())
        .await
        .expect("connect");
    let (_ack, acks) = ack_channel(ahead.clone());
    let err = client
        .subscribe(&SubscribeRequest::new(ahead), acks)
        .await
        .expect_err("ahead");
    assert!(
        matches!(err, Error::AheadOfUpstream { component: 1, .. }),
        "{err:?}"
    );

    let from = vclock_of(&master).await;
    let client = ReplicationClient::connect(&master.uri(), &repl_opts())
        .await
        .expect("connect");
    let (_ack, acks) = ack_channel(from.clone());
    let req = SubscribeRequest {
        replicaset_uuid: Some(uuid::Uuid::new_v4()),
        ..SubscribeRequest::new(from)
    };
    let err = client
        .subscribe(&req, acks)
        .await
        .expect_err("foreign replicaset");
    assert!(matches!(err, Error::ReplicasetMismatch { .. }), "{err:?}");
}

#[tokio::test]
async fn a_wal_gap_is_its_own_error_kind() {
    let master = options("gap")
        .checkpoint_count(1)
        .start_single()
        .await
        .expect("master");
    let away_at = vclock_of(&master).await;
    // While the subscriber is away: writes and two checkpoints; with
    // checkpoint_count = 1 the xlogs holding the rows after `away_at` go.
    master
        .eval(
            "for i = 1, 3 do box.space.test:insert{i} end box.snapshot() \
             box.space.test:insert{4} box.snapshot()",
            &[],
        )
        .await
        .expect("writes and checkpoints");
    let ballot = vote(&master.uri(), &ConnectOptions::new())
        .await
        .expect("vote");
    assert!(
        !ballot.has_rows_after(&away_at),
        "gc_vclock {} is past {away_at}",
        ballot.gc_vclock
    );

    let client = ReplicationClient::connect(&master.uri(), &repl_opts())
        .await
        .expect("connect");
    let (_ack, acks) = ack_channel(away_at.clone());
    let req = SubscribeRequest {
        timing: fast_timing(),
        ..SubscribeRequest::new(away_at)
    };
    let err = match client.subscribe(&req, acks).await {
        Err(e) => e,
        Ok(mut sub) => {
            // 2.6 answers OK when no xlog is left to scan; the gap surfaces
            // when the next write creates a new xlog file.
            master
                .eval("box.space.test:insert{5}", &[])
                .await
                .expect("write");
            tokio::time::timeout(SOON, async {
                loop {
                    match sub.next().await {
                        Ok(Event::Heartbeat { .. }) => continue,
                        Ok(Event::Row(row)) => panic!("no row may arrive across a gap: {row:?}"),
                        Err(e) => return e,
                    }
                }
            })
            .await
            .expect("the gap is reported")
        }
    };
    assert!(matches!(err, Error::XlogGap(_)), "{err:?}");
}

/// Why acks must never carry a made-up term: a hand-rolled anonymous
/// subscriber whose ack carries `IPROTO_TERM` = term + 5 moves a 2.11+
/// master to that term (it steps down and re-elects). tcf's acks carry only
/// the vclock (`replication::encode_ack`, and `gateway_compat` checks the
/// term against a real gateway).
#[tokio::test]
async fn an_ack_with_a_made_up_term_would_move_the_leaders_term() {
    use tcf_iproto::{
        Greeting, chap_sha1_scramble,
        consts::{key, request},
        frame,
        msgpack::write,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let master = options("fake-term")
        .synchro_quorum(1)
        .start_single()
        .await
        .expect("master");
    let info = ReplicationClient::connect(&master.uri(), &repl_opts())
        .await
        .expect("connect")
        .server()
        .clone();
    if !info.acts_on_ack_term() {
        eprintln!(
            "SKIP: Tarantool {} does not act on the term in acks (2.11+)",
            info.version()
        );
        return;
    }
    master
        .eval("box.cfg{election_mode = 'candidate'}", &[])
        .await
        .expect("election_mode");
    let term = tcf_tests::wait_until("a leader", SOON, || async {
        let v = master
            .eval(
                "return box.info.election.state, box.info.election.term",
                &[],
            )
            .await
            .expect("election");
        match (v[0].as_str(), v[1].as_u64()) {
            (Some("leader"), Some(t)) => tcf_tests::Outcome::Ready(t),
            other => tcf_tests::Outcome::Pending(format!("{other:?}")),
        }
    })
    .await
    .expect("leader");
    let rs_uuid = master
        .eval1("return (box.info.replicaset or box.info.cluster).uuid", &[])
        .await
        .expect("uuid");
    let from = vclock_of(&master).await;

    // greeting, AUTH, SUBSCRIBE by hand, then one ack with a term.
    let mut sock = tokio::net::TcpStream::connect(master.uri())
        .await
        .expect("tcp");
    let mut g = [0u8; 128];
    sock.read_exact(&mut g).await.expect("greeting");
    let salt = Greeting::parse(&g).expect("greeting").salt;
    let mut out = Vec::new();
    frame::encode_frame(&mut out, request::AUTH, 1, |o| {
        write::map_len(o, 2);
        write::uint(o, u64::from(key::USER_NAME));
        write::str(o, REPL);
        write::uint(o, u64::from(key::TUPLE));
        write::array_len(o, 2);
        write::str(o, "chap-sha1");
        write::bin(o, &chap_sha1_scramble(&salt, REPL_PASSWORD));
    });
    sock.write_all(&out).await.expect("auth");
    // 3.x refuse a SUBSCRIBE pipelined behind an unanswered request.
    let mut reply = Vec::new();
    loop {
        let mut r = tcf_iproto::msgpack::Reader::new(&reply);
        if let Ok(len) = r.read_u64()
            && reply.len() >= r.position() + len as usize
        {
            break;
        }
        let mut chunk = [0u8; 256];
        let n = sock.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed");
        reply.extend_from_slice(&chunk[..n]);
    }
    out.clear();
    frame::encode_frame(&mut out, request::SUBSCRIBE, 2, |o| {
        write::map_len(o, 5);
        write::uint(o, u64::from(key::CLUSTER_UUID));
        write::str(o, rs_uuid.as_str().expect("uuid string"));
        write::uint(o, u64::from(key::INSTANCE_UUID));
        write::str(o, &uuid::Uuid::new_v4().to_string());
        write::uint(o, u64::from(key::VCLOCK));
        from.encode(o);
        write::uint(o, u64::from(key::SERVER_VERSION));
        write::uint(o, 0x020b00);
        write::uint(o, u64::from(key::REPLICA_ANON));
        write::bool(o, true);
    });
    sock.write_all(&out).await.expect("send");
    // The relay reads acks only once the subscription runs.
    tcf_tests::wait_until("the subscription", SOON, || async {
        let n = master
            .eval1("return box.info.replication_anon.count", &[])
            .await
            .expect("anon count");
        if n.as_u64() == Some(1) {
            tcf_tests::Outcome::Ready(())
        } else {
            tcf_tests::Outcome::Pending(format!("{n}"))
        }
    })
    .await
    .expect("subscribed");
    let mut ack = Vec::new();
    frame::encode_frame(&mut ack, request::OK, 0, |o| {
        write::map_len(o, 2);
        write::uint(o, u64::from(key::VCLOCK));
        from.encode(o);
        write::uint(o, u64::from(key::TERM));
        write::uint(o, term + 5);
    });
    let acker = tokio::spawn(async move {
        loop {
            if sock.write_all(&ack).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    tcf_tests::wait_until("the master to take the made-up term", SOON, || async {
        let v = master
            .eval("return box.info.election.term", &[])
            .await
            .expect("term");
        match v[0].as_u64() {
            Some(t) if t >= term + 5 => tcf_tests::Outcome::Ready(()),
            other => tcf_tests::Outcome::Pending(format!("term {other:?}, was {term}")),
        }
    })
    .await
    .expect("a term-carrying ack moves the term");
    acker.abort();
}

/// 3.x: a named replicaset's name is read from `_schema` and sent in
/// SUBSCRIBE (no "Replicaset name mismatch" warning on the source), and the
/// answer names it back.
#[tokio::test]
async fn a_named_replicaset_is_subscribed_to_by_name() {
    let master = options("names").start_single().await.expect("master");
    let mut client = ReplicationClient::connect(&master.uri(), &repl_opts())
        .await
        .expect("connect");
    if !client.server().has_node_names() {
        eprintln!(
            "SKIP: Tarantool {} has no replicaset names (3.0+)",
            client.server().version()
        );
        return;
    }
    master
        .eval("box.cfg{replicaset_name = 'tcf-names'}", &[])
        .await
        .expect("name the replicaset");
    let id = client.replicaset().await.expect("identity");
    assert_eq!(id.name.as_deref(), Some("tcf-names"));
    let from = vclock_of(&master).await;
    let (_ack, acks) = ack_channel(from.clone());
    let sub = client
        .subscribe(&SubscribeRequest::new(from), acks)
        .await
        .expect("subscribe");
    assert_eq!(sub.replicaset_name(), Some("tcf-names"));
    assert_eq!(sub.replicaset_uuid(), id.uuid);
    assert!(
        !master.log_tail(200).contains("Replicaset name mismatch"),
        "{}",
        master.log_tail(200)
    );
}
