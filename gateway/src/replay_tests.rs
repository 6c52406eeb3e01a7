//! The gateway's snapshot and row paths against what Tarantool 2.11.5 and
//! 3.3.0 really sent (the fixtures of `iproto/tests/fixtures/`, replayed
//! over TCP to the real client code): the initial load spools the user
//! rows of a snapshot with its meta section, and the stream holds
//! synchronous transactions until the CONFIRM that covers them (several at
//! once), drops what a ROLLBACK cancels, passes DEMOTE/PROMOTE, and on 3.3
//! holds DDL and what follows it under a claimed queue.

use std::path::PathBuf;

use tcf_iproto::{
    ConnectOptions, Event, ReplicationClient, SubscribeRequest, Vclock, ack_channel,
    recording::{Conversation, replay},
    schema::Catalog,
};
use uuid::Uuid;

use crate::{
    classify::{ClassifyError, RowOutcome, classify},
    flow::Flow,
    spool,
    syncgate::SyncGate,
    txbuf::{ReadyTx, TxRows},
};

const VERSIONS: [&str; 2] = ["2.11.5", "3.3.0"];
const SUBSCRIBER: Uuid = Uuid::from_u128(0x7cf0_0000_0000_4000_8000_0000_0000_0001);

async fn replayed(version: &str, name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../iproto/tests/fixtures")
        .join(version)
        .join(name);
    let conv = Conversation::decode(&std::fs::read(&path).expect("fixture")).expect("recording");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let greeting = conv.greeting().unwrap();
    let exchanges = conv.exchanges().unwrap();
    tokio::spawn(async move { Box::pin(replay(l, greeting, exchanges, true)).await });
    addr
}

fn creds() -> ConnectOptions {
    ConnectOptions::new().credentials("repl", "repl-secret")
}

/// The initial load of the snapshot fixture: the catalog it yields.
async fn load(version: &str) -> Catalog {
    let addr = replayed(version, "snapshot.bin").await;
    let mut client = ReplicationClient::connect(&addr, &creds()).await.unwrap();
    client.replicaset().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (spool, _client, catalog) = spool::fetch(client, dir.path(), SUBSCRIBER).await.unwrap();
    assert_eq!(spool.rows, 1, "{version}: one user row, `test` {{0}}");
    let spaces: Vec<&str> = spool.spaces.iter().map(String::as_str).collect();
    assert_eq!(
        spaces,
        ["stest", "test"],
        "{version}: never the local space"
    );
    let mut r = spool.reader(1 << 20).unwrap();
    let rows = r.next_chunk().unwrap().unwrap();
    assert_eq!(rows[0].space, "test");
    catalog
}

/// What the gateway does with the SUBSCRIBE fixture: for every row that
/// released or dropped something, its LSN and the transactions it released
/// (first id, last LSN).
async fn stream(version: &str, mut catalog: Catalog) -> Vec<(u64, Vec<(u64, u64)>)> {
    let addr = replayed(version, "subscribe.bin").await;
    let client = ReplicationClient::connect(&addr, &creds()).await.unwrap();
    let (_ack, acks) = ack_channel(Vclock::new());
    let req = SubscribeRequest {
        instance_uuid: SUBSCRIBER,
        ..SubscribeRequest::new(Vclock::new())
    };
    let mut sub = client.subscribe(&req, acks).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut flow = Flow::new(
        Vclock::new(),
        sub.server().sends_synchro_flags(),
        1 << 20,
        dir.path().to_owned(),
    );
    let mut gate = SyncGate::new(Vclock::new());
    let mut steps = Vec::new();
    loop {
        let Event::Row(row) = sub.next().await.unwrap() else {
            continue;
        };
        let b = flow.track(&row).unwrap();
        let outcome = match classify(&row, &mut catalog) {
            Ok(o) => o,
            // Never in these fixtures: every space is in the snapshot or
            // created by a `_space` row of the stream.
            Err(e @ (ClassifyError::UnknownSpace(_) | ClassifyError::Reload)) => {
                panic!("{version}: {e}")
            }
            Err(e) => panic!("{version}: {e}"),
        };
        let marker = matches!(&outcome, RowOutcome::Data { row, .. } if id(&row.tuple) == 999);
        let step = flow.apply(b, &row, outcome, &mut gate).unwrap();
        if !step.release.is_empty() || step.rolled_back > 0 {
            let released = step
                .release
                .iter()
                .map(|tx| (first_id(tx), tx.last_lsn))
                .collect();
            steps.push((row.lsn(), released));
        }
        if marker {
            assert_eq!(gate.held(), 0, "{version}: nothing left held at the end");
            return steps;
        }
    }
}

fn id(tuple: &[u8]) -> u64 {
    rmpv::decode::read_value(&mut &tuple[..])
        .ok()
        .and_then(|t| t.as_array()?.first()?.as_u64())
        .unwrap_or(u64::MAX)
}

fn first_id(tx: &ReadyTx) -> u64 {
    match &tx.rows {
        TxRows::Memory(rows) => rows.first().map_or(u64::MAX, |r| id(&r.tuple)),
        TxRows::Spilled(_) => u64::MAX,
    }
}

#[tokio::test]
async fn recorded_snapshots_load_and_recorded_streams_ship_in_order() {
    for v in VERSIONS {
        let catalog = load(v).await;
        let steps = stream(v, catalog).await;
        let shipped: Vec<u64> = steps
            .iter()
            .flat_map(|(_, txs)| txs.iter().map(|(id, _)| *id))
            .collect();
        // The three synchronous transactions and the one queued behind them
        // are released together, by one later row (the CONFIRM).
        let (confirm_lsn, together) = steps
            .iter()
            .find(|(_, txs)| txs.iter().any(|(id, _)| *id == 10))
            .unwrap_or_else(|| panic!("{v}: 10 never shipped: {steps:?}"));
        let mut ids: Vec<u64> = together.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        assert_eq!(ids, [10, 11, 12, 13], "{v}: {steps:?}");
        assert!(together.iter().all(|(_, lsn)| lsn < confirm_lsn), "{v}");
        let mut expect = vec![1, 2, 4];
        expect.extend(together.iter().map(|(id, _)| *id));
        if v.starts_with('3') {
            // Behind the DDL under the claimed queue: released by a later
            // row too, never when it arrived.
            let (at, txs) = steps
                .iter()
                .find(|(_, txs)| txs.iter().any(|(id, _)| *id == 30))
                .unwrap_or_else(|| panic!("{v}: 30 never shipped: {steps:?}"));
            assert!(txs.iter().all(|(_, lsn)| lsn < at), "{v}: {steps:?}");
            expect.extend([30, 1]);
        }
        expect.push(999);
        // 20 was rolled back: never shipped; its ROLLBACK only dropped.
        assert_eq!(shipped, expect, "{v}: {steps:?}");
        assert!(
            steps.iter().any(|(_, txs)| txs.is_empty()),
            "{v}: a step that only dropped (the ROLLBACK): {steps:?}"
        );
        // Asynchronous transactions ship at their own last row.
        for (at, txs) in &steps {
            for (id, lsn) in txs {
                if [1, 2, 4, 999].contains(id) {
                    assert_eq!(lsn, at, "{v}: {id} was held");
                }
            }
        }
    }
}

#[tokio::test]
async fn an_interrupted_fetch_spools_nothing() {
    for v in VERSIONS {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../iproto/tests/fixtures")
            .join(v)
            .join("snapshot.bin");
        let conv = Conversation::decode(&std::fs::read(&path).unwrap()).unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (greeting, cut) = (conv.greeting().unwrap(), conv.cut_after(200).unwrap());
        tokio::spawn(async move { Box::pin(replay(l, greeting, cut, false)).await });
        let mut client = ReplicationClient::connect(&addr, &creds()).await.unwrap();
        client.replicaset().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = spool::fetch(client, dir.path(), SUBSCRIBER)
            .await
            .expect_err("a fetch cut after 200 rows is an error");
        assert!(
            matches!(err, spool::SpoolError::Source(tcf_iproto::Error::Closed)),
            "{v}: {err:?}"
        );
        // The spool is an unnamed temporary file: nothing is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
