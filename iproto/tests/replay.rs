//! The real client code against the bytes real Tarantool 2.11.5 and 3.3.0
//! servers sent (`tests/fixtures/<version>/`, recorded by
//! `tests/tests/iproto_fixtures.rs`; see `docs/compat.md`). No server
//! needed: CI, which has only 2.6, catches a regression on the 2.11/3.x
//! paths here.

use std::path::PathBuf;

use tcf_iproto::{
    ConnectOptions, Error, Event, Feature, FetchRequest, ReplicationClient, RowKind,
    SubscribeRequest, Transaction, TxAssembler, Vclock, Version, ack_channel,
    consts::{USER_SPACE_MIN, flag},
    recording::{Conversation, Exchange, RecordingError, replay},
    vote,
};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The versions recorded.
const VERSIONS: [&str; 2] = ["2.11.5", "3.3.0"];
/// The subscriber UUID the recorder used.
const SUBSCRIBER: Uuid = Uuid::from_u128(0x7cf0_0000_0000_4000_8000_0000_0000_0001);

fn load(version: &str, name: &str) -> Conversation {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(version)
        .join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Conversation::decode(&bytes).expect("a recording")
}

async fn serve(
    conv: &Conversation,
    exchanges: Vec<Exchange>,
    hold: bool,
) -> (String, JoinHandle<Result<(), RecordingError>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let greeting = conv.greeting().expect("greeting");
    (addr, tokio::spawn(replay(l, greeting, exchanges, hold)))
}

fn creds() -> ConnectOptions {
    // The recorded server checked the password; the replay does not.
    ConnectOptions::new().credentials("repl", "repl-secret")
}

fn version(v: &str) -> Version {
    let mut p = v.split('.').map(|n| n.parse::<u8>().expect("number"));
    let mut next = || p.next().expect("part");
    Version::new(next(), next(), next())
}

#[tokio::test]
async fn ballots_decode() {
    for v in VERSIONS {
        let conv = load(v, "vote.bin");
        let (addr, server) = serve(&conv, conv.exchanges().expect("exchanges"), false).await;
        let b = vote(&addr, &ConnectOptions::new()).await.expect("vote");
        assert!(!b.is_ro && !b.is_ro_cfg, "{v}: {b:?}");
        assert!(b.vclock.get(1) > 0, "{v}: {b:?}");
        assert!(b.has_rows_after(&Vclock::new()), "{v}: {b:?}");
        server.await.expect("task").expect("replayed as recorded");
    }
}

#[tokio::test]
async fn the_handshake_learns_version_and_features() {
    for v in VERSIONS {
        let conv = load(v, "snapshot.bin");
        let (addr, _server) = serve(&conv, conv.exchanges().expect("exchanges"), true).await;
        let c = ReplicationClient::connect(&addr, &creds())
            .await
            .expect("connect");
        let info = c.server();
        assert_eq!(info.version(), version(v));
        let p = info.protocol().expect("2.10+ answer IPROTO_ID");
        assert!(p.features.unknown().next().is_none(), "{v}: {p:?}");
        for f in [
            Feature::Streams,
            Feature::Transactions,
            Feature::ErrorExtension,
            Feature::Watchers,
            Feature::Pagination,
        ] {
            assert!(info.has(f), "{v}: {f:?} in {p:?}");
        }
        if info.version().major >= 3 {
            assert_eq!(p.version, 10, "{v}");
            for f in [Feature::WatchOnce, Feature::IsSync, Feature::InsertArrow] {
                assert!(info.has(f), "{v}: {f:?} in {p:?}");
            }
        } else {
            assert_eq!(p.version, 4, "{v}");
            assert!(!info.has(Feature::IsSync));
        }
        assert!(info.snapshot_has_meta() && info.sends_synchro_flags());
    }
}

#[tokio::test]
async fn a_snapshot_with_its_meta_section_decodes_whole() {
    for v in VERSIONS {
        let conv = load(v, "snapshot.bin");
        let (addr, server) = serve(&conv, conv.exchanges().expect("exchanges"), true).await;
        let mut c = ReplicationClient::connect(&addr, &creds())
            .await
            .expect("connect");
        let id = c.replicaset().await.expect("identity");
        assert!(!id.uuid.is_nil());
        let req = FetchRequest {
            instance_uuid: Some(SUBSCRIBER),
        };
        let mut snap = c.fetch_snapshot_with(&req).await.expect("fetch");
        let meta = snap
            .meta()
            .expect("2.11.5+/3.x send the meta section")
            .clone();
        let queue = meta.queue.expect("the queue state");
        assert_eq!(queue.replica_id, 1, "{v}: the master owns the queue");
        assert!(queue.term >= 1, "{v}: {meta:?}");
        // 3.x send the Raft state too; 2.11 drops it as replication-local.
        assert_eq!(meta.raft.is_some(), v.starts_with('3'), "{v}: {meta:?}");
        assert!(!snap.start_vclock().is_empty());
        let (mut system, mut user) = (0, Vec::new());
        while let Some(row) = snap.next_row().await.expect("row") {
            assert_eq!(row.kind(), RowKind::Dml(tcf_iproto::DmlKind::Insert));
            assert_eq!(row.lsn(), 0, "snapshot rows have no LSN");
            let f = row.fields().expect("fields");
            if f.space_id >= USER_SPACE_MIN {
                let t = f.tuple.expect("tuple");
                user.push(rmpv::decode::read_value(&mut &t[..]).expect("tuple"));
            } else {
                assert!(user.is_empty(), "{v}: system spaces come first");
                system += 1;
            }
        }
        assert!(system > 300, "{v}: {system} system rows");
        assert_eq!(
            user,
            [rmpv::Value::Array(vec![0.into(), "in the snapshot".into()])],
            "{v}"
        );
        assert!(snap.end_vclock().is_some());
        // The connection goes back for SUBSCRIBE; dropping it ends the replay.
        drop(snap.into_client().expect("ended cleanly"));
        server.await.expect("task").expect("replayed as recorded");
    }
}

#[tokio::test]
async fn an_interrupted_snapshot_is_an_error_never_an_end() {
    for v in VERSIONS {
        let conv = load(v, "snapshot.bin");
        // The FETCH_SNAPSHOT answer breaks off after 50 frames.
        let (addr, server) = serve(&conv, conv.cut_after(50).expect("cut"), false).await;
        let mut c = ReplicationClient::connect(&addr, &creds())
            .await
            .expect("connect");
        c.replicaset().await.expect("identity");
        let req = FetchRequest {
            instance_uuid: Some(SUBSCRIBER),
        };
        let mut snap = c.fetch_snapshot_with(&req).await.expect("fetch");
        let err = loop {
            match snap.next_row().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("{v}: a cut snapshot must not end cleanly"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, Error::Closed), "{v}: {err:?}");
        assert!(snap.end_vclock().is_none());
        assert!(snap.into_client().is_err(), "{v}: no SUBSCRIBE after a cut");
        server.await.expect("task").expect("replayed");
    }
}

/// Every transaction of the recorded SUBSCRIBE stream, up to the marker
/// row (`test` id 999).
async fn subscribed(v: &str) -> Vec<Transaction> {
    let conv = load(v, "subscribe.bin");
    let (addr, _server) = serve(&conv, conv.exchanges().expect("exchanges"), true).await;
    let c = ReplicationClient::connect(&addr, &creds())
        .await
        .expect("connect");
    let (_ack, acks) = ack_channel(Vclock::new());
    let req = SubscribeRequest {
        instance_uuid: SUBSCRIBER,
        ..SubscribeRequest::new(Vclock::new())
    };
    let mut sub = c.subscribe(&req, acks).await.expect("subscribe");
    assert_eq!(sub.server().version(), version(v));
    let mut asm = TxAssembler::new(Vclock::new());
    let mut txs = Vec::new();
    loop {
        let Event::Row(row) = sub.next().await.expect("event") else {
            continue;
        };
        let last = first_id(&row) == Some(999);
        if let Some(tx) = asm.push(row).expect("well-formed") {
            txs.push(tx);
        }
        if last {
            return txs;
        }
    }
}

fn first_id(row: &tcf_iproto::Row) -> Option<u64> {
    let t = row.fields().ok()?.tuple?;
    rmpv::decode::read_value(&mut &t[..])
        .ok()?
        .as_array()?
        .first()?
        .as_u64()
}

fn last_flags(tx: &Transaction) -> u64 {
    tx.rows.last().map_or(0, |r| r.header.flags)
}

#[tokio::test]
async fn a_subscribe_stream_carries_the_synchronous_queue() {
    for v in VERSIONS {
        let txs = subscribed(v).await;
        let by_id = |id: u64| {
            txs.iter()
                .find(|t| t.rows.first().and_then(first_id) == Some(id))
                .unwrap_or_else(|| panic!("{v}: no transaction starting with id {id}"))
        };
        assert_eq!(by_id(2).rows.len(), 3, "{v}: a multi-row transaction");
        // 2.11.2+/3.x: no NOP after a local last row; the flag moves up.
        let tail = by_id(4);
        assert_eq!(tail.rows.len(), 1, "{v}: {tail:?}");
        assert!(tail.rows[0].is_commit());
        // Synchronous transactions carry WAIT_SYNC | WAIT_ACK, the
        // asynchronous one queued behind them WAIT_SYNC only.
        let sync = [10, 11, 12].map(by_id);
        for t in &sync {
            assert_eq!(
                last_flags(t) & (flag::WAIT_SYNC | flag::WAIT_ACK),
                flag::WAIT_SYNC | flag::WAIT_ACK,
                "{v}: {t:?}"
            );
        }
        assert_eq!(last_flags(by_id(13)) & flag::WAIT_ACK, 0, "{v}");
        assert_ne!(last_flags(by_id(13)) & flag::WAIT_SYNC, 0, "{v}");
        let synchro = |kind| {
            txs.iter()
                .filter_map(move |t| {
                    let r = t.rows.first()?;
                    (r.kind() == kind).then(|| r.synchro().expect("synchro body"))
                })
                .collect::<Vec<_>>()
        };
        // One CONFIRM covers all three (and the async one behind).
        let last_sync = sync.iter().map(|t| t.last_lsn()).max().expect("lsn");
        let first_sync = sync.iter().map(|t| t.tsn).min().expect("lsn");
        let confirms = synchro(RowKind::Confirm);
        assert!(
            confirms.iter().any(|c| c.lsn >= last_sync
                && !confirms
                    .iter()
                    .any(|o| o.lsn >= first_sync && o.lsn < c.lsn)),
            "{v}: one CONFIRM for 10..12: {confirms:?}"
        );
        let rollbacks = synchro(RowKind::Rollback);
        assert_eq!(rollbacks.len(), 1, "{v}");
        assert_eq!(rollbacks[0].lsn, by_id(20).tsn, "{v}: rolls back id 20");
        let (demote, promote) = (synchro(RowKind::Demote), synchro(RowKind::Promote));
        assert_eq!((demote.len(), promote.len()), (1, 1), "{v}");
        assert!(promote[0].term > demote[0].term, "{v}");
        if v.starts_with('3') {
            // 3.x with system spaces synchronous: DDL rows wait too.
            let ddl: Vec<&Transaction> = txs
                .iter()
                .filter(|t| {
                    t.rows
                        .iter()
                        .any(|r| r.fields().is_ok_and(|f| f.space_id == 280))
                })
                .collect();
            assert!(!ddl.is_empty(), "{v}: no DDL");
            assert!(
                ddl.iter().all(|t| last_flags(t) & flag::WAIT_ACK != 0),
                "{v}: DDL under a claimed queue is synchronous"
            );
            assert_ne!(last_flags(by_id(30)) & flag::WAIT_SYNC, 0, "{v}");
        }
    }
}
