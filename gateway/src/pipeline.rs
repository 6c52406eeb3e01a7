//! One stream's tasks: the source reader, the sender that turns queued items
//! into gRPC messages (batching transactions, reading spools), the ack
//! receiver, and the poller of the source's newest vclock.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use tcf_iproto::Vclock;
use tcf_proto::v1::{self, gateway_message::Kind};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{info, warn};

use crate::{
    bgfile::off_thread,
    choose::{ballots, newest},
    keepalive::Keepalive,
    metrics as m,
    queue::{Item, QueueRx},
    spool::SpoolReader,
    status::StatusCell,
    txbuf::{Pieces, row_size},
};

/// How often a busy stream carries a heartbeat of its own.
const BUSY_HEARTBEAT: Duration = Duration::from_secs(1);

/// The outgoing half of a gRPC stream.
pub(crate) type Outbound = mpsc::Sender<Result<v1::GatewayMessage, Status>>;

/// Transactions shipped but not yet acknowledged, with their receipt times.
#[derive(Debug, Default)]
pub(crate) struct Lag {
    pending: VecDeque<(Vclock, Instant)>,
}

impl Lag {
    fn shipped(&mut self, vclock: Vclock, received_at: Instant) {
        self.pending.push_back((vclock, received_at));
    }

    /// Drops what `committed` covers.
    pub(crate) fn acked(&mut self, committed: &Vclock) {
        while self.pending.front().is_some_and(|(v, _)| v.le(committed)) {
            self.pending.pop_front();
        }
    }

    /// Receipt of the oldest unacknowledged transaction to now.
    pub(crate) fn seconds(&self) -> f64 {
        self.pending
            .front()
            .map_or(0.0, |(_, t)| t.elapsed().as_secs_f64())
    }
}

/// Shared lag of one stream.
pub(crate) type SharedLag = Arc<Mutex<Lag>>;

pub(crate) fn lock(lag: &SharedLag) -> std::sync::MutexGuard<'_, Lag> {
    lag.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sends queued items as messages until the queue ends, the destination goes
/// away or `cancel` fires. Transactions are batched up to `chunk_bytes`.
pub(crate) async fn send_loop(
    mut rx: QueueRx,
    out: Outbound,
    lag: SharedLag,
    status: StatusCell,
    replicaset: String,
    chunk_bytes: usize,
    cancel: CancellationToken,
) {
    let mut next: Option<Item> = None;
    let bytes_shipped = metrics::counter!(m::BYTES_SHIPPED, m::REPLICASET => replicaset.clone());
    let rows_shipped = metrics::counter!(m::ROWS_SHIPPED, m::REPLICASET => replicaset.clone());
    let txs_shipped =
        metrics::counter!(m::TRANSACTIONS_SHIPPED, m::REPLICASET => replicaset.clone());
    let queue_bytes = metrics::gauge!(m::QUEUE_BYTES, m::REPLICASET => replicaset.clone());
    let mut last_busy_heartbeat = Instant::now();
    let mut keepalive = Keepalive::new();
    loop {
        let item = match next.take() {
            Some(i) => i,
            None => tokio::select! {
                biased;
                i = rx.recv() => match i { Some(i) => i, None => break },
                () = cancel.cancelled() => {
                    // Replaced by a newer stream, or stopped by an operator.
                    let e = v1::StreamError {
                        kind: v1::ErrorKind::Stopped as i32,
                        message: "the gateway ended this stream (stopped, or replaced by a newer one)".into(),
                    };
                    let _ = out.try_send(Ok(v1::GatewayMessage { kind: Some(Kind::Error(e)) }));
                    break;
                }
                () = tokio::time::sleep_until(keepalive.due()) => {
                    // Never waits behind a full outbound channel: the
                    // destination is behind then, and the batches ahead carry
                    // busy heartbeats.
                    if let Some(hb) = keepalive.heartbeat(&rx, &status, &lag) {
                        let msg = v1::GatewayMessage { kind: Some(Kind::Heartbeat(hb)) };
                        if let Err(mpsc::error::TrySendError::Closed(_)) = out.try_send(Ok(msg)) {
                            break;
                        }
                    }
                    continue;
                }
            },
        };
        queue_bytes.set(rx.queued_bytes() as f64);
        let result = match item {
            Item::Started(s) => send(&out, Kind::Started(s)).await,
            Item::Heartbeat {
                processed,
                source_time,
            } => {
                keepalive.sent(Some(&processed));
                let hb = v1::Heartbeat {
                    processed: Some((&processed).into()),
                    source_vclock: Some((&status.lock().source_vclock).into()),
                    source_time,
                    lag_seconds: lock(&lag).seconds(),
                };
                send(&out, Kind::Heartbeat(hb)).await
            }
            Item::Error(e) => {
                let status_err = Status::failed_precondition(e.message.clone());
                let _ = send(&out, Kind::Error(e)).await;
                let _ = out.send(Err(status_err)).await;
                break;
            }
            Item::Snapshot {
                spool,
                truncate,
                source_uuid,
            } => send_snapshot(&out, spool, truncate, source_uuid, chunk_bytes, &status).await,
            Item::Tx(first) if first.chunk.is_some() => {
                send_chunk(&out, first, &lag, &status, &replicaset).await
            }
            Item::GapRestart {
                after,
                lost_from,
                message,
            } => {
                status.lock().shipped_vclock = after.clone();
                let g = v1::GapRestart {
                    after: Some((&after).into()),
                    lost_from: Some((&lost_from).into()),
                    message,
                };
                send(&out, Kind::GapRestart(g)).await
            }
            Item::Tx(first) => {
                let mut batch = Vec::new();
                let mut size = 0;
                let mut tx = Some(first);
                while let Some(t) = tx.take() {
                    let received_at = t.received_at;
                    let vclock = t.vclock.clone();
                    let rows = t.row_count as u64;
                    let mut pieces = match t.pieces(chunk_bytes) {
                        Ok(p) => p,
                        Err(e) => {
                            let _ = out
                                .send(Err(Status::internal(format!(
                                    "reading a spilled transaction: {e}"
                                ))))
                                .await;
                            return;
                        }
                    };
                    loop {
                        let next = if pieces.is_spilled() {
                            let (back, next) = off_thread(pieces, Pieces::next_piece).await;
                            pieces = back;
                            next
                        } else {
                            pieces.next_piece()
                        };
                        let piece = match next {
                            Ok(Some(p)) => p,
                            Ok(None) => break,
                            Err(e) => {
                                let _ = out
                                    .send(Err(Status::internal(format!(
                                        "reading a spilled transaction: {e}"
                                    ))))
                                    .await;
                                return;
                            }
                        };
                        let s: usize = piece.rows.iter().map(row_size).sum();
                        if !batch.is_empty() && size + s > chunk_bytes {
                            if send(
                                &out,
                                Kind::Batch(v1::Batch {
                                    transactions: std::mem::take(&mut batch),
                                }),
                            )
                            .await
                            .is_err()
                            {
                                return;
                            }
                            size = 0;
                        }
                        size += s;
                        bytes_shipped.increment(s as u64);
                        batch.push(piece);
                    }
                    lock(&lag).shipped(vclock.clone(), received_at);
                    keepalive.sent(Some(&vclock));
                    rows_shipped.increment(rows);
                    txs_shipped.increment(1);
                    {
                        let mut st = status.lock();
                        st.shipped_vclock = vclock;
                        st.transactions_shipped += 1;
                        st.rows_shipped += rows;
                    }
                    if size < chunk_bytes {
                        match rx.try_recv() {
                            Some(Item::Tx(t)) if t.chunk.is_none() => tx = Some(t),
                            other => next = other,
                        }
                    }
                }
                let sent = send(
                    &out,
                    Kind::Batch(v1::Batch {
                        transactions: batch,
                    }),
                )
                .await;
                // The source sends heartbeats only when idle: under steady
                // writes, tell the destination the source position and lag
                // once a second anyway.
                if sent.is_ok() && last_busy_heartbeat.elapsed() >= BUSY_HEARTBEAT {
                    last_busy_heartbeat = Instant::now();
                    let (shipped, source) = {
                        let st = status.lock();
                        (st.shipped_vclock.clone(), st.source_vclock.clone())
                    };
                    let hb = v1::Heartbeat {
                        processed: Some((&shipped).into()),
                        source_vclock: Some((&source).into()),
                        source_time: 0.0,
                        lag_seconds: lock(&lag).seconds(),
                    };
                    send(&out, Kind::Heartbeat(hb)).await
                } else {
                    sent
                }
            }
        };
        if result.is_err() {
            break;
        }
        keepalive.sent(None);
    }
    cancel.cancel();
}

/// Sends a verification chunk at its high watermark's position.
async fn send_chunk(
    out: &Outbound,
    tx: crate::txbuf::ReadyTx,
    lag: &SharedLag,
    status: &StatusCell,
    replicaset: &str,
) -> Result<(), ()> {
    let Some(mut chunk) = tx.chunk else {
        return Ok(());
    };
    chunk.vclock = Some((&tx.vclock).into());
    let kind = if chunk.void { "void" } else { "chunk" };
    metrics::counter!(m::WALK_MARKERS, m::REPLICASET => replicaset.to_owned(), m::KIND => kind)
        .increment(1);
    lock(lag).shipped(tx.vclock.clone(), tx.received_at);
    status.lock().shipped_vclock = tx.vclock;
    send(out, Kind::Chunk(*chunk)).await
}

async fn send(out: &Outbound, kind: Kind) -> Result<(), ()> {
    out.send(Ok(v1::GatewayMessage { kind: Some(kind) }))
        .await
        .map_err(|_| ())
}

async fn send_snapshot(
    out: &Outbound,
    spool: crate::spool::Spool,
    truncate: bool,
    source_uuid: String,
    chunk_bytes: usize,
    status: &StatusCell,
) -> Result<(), ()> {
    let start = spool.start.clone();
    let rows = spool.rows;
    let begin = v1::SnapshotBegin {
        source_uuid,
        vclock: Some((&start).into()),
        truncate,
        spaces: spool.spaces.iter().cloned().collect(),
    };
    send(out, Kind::SnapshotBegin(begin)).await?;
    let mut reader = match spool.reader(chunk_bytes) {
        Ok(r) => r,
        Err(e) => {
            let _ = out
                .send(Err(Status::internal(format!(
                    "reading the snapshot spool: {e}"
                ))))
                .await;
            return Err(());
        }
    };
    loop {
        let (back, next) = off_thread(reader, SpoolReader::next_chunk).await;
        reader = back;
        match next {
            Ok(Some(rows)) => send(out, Kind::SnapshotRows(v1::SnapshotRows { rows })).await?,
            Ok(None) => break,
            Err(e) => {
                let _ = out
                    .send(Err(Status::internal(format!(
                        "reading the snapshot spool: {e}"
                    ))))
                    .await;
                return Err(());
            }
        }
    }
    info!(rows, %start, "initial load shipped");
    status.lock().shipped_vclock = start.clone();
    send(
        out,
        Kind::SnapshotEnd(v1::SnapshotEnd {
            vclock: Some((&start).into()),
            rows,
        }),
    )
    .await
}

/// Receives acknowledgements: what the destination durably committed is what
/// the reader acks to the source (`committed`), and what clears the lag.
pub(crate) async fn ack_loop(
    mut inbound: tonic::Streaming<v1::DestinationMessage>,
    committed: watch::Sender<Vclock>,
    steps: Option<watch::Sender<Option<v1::WalkStep>>>,
    lag: SharedLag,
    status: StatusCell,
    replicaset: String,
    cancel: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            m = inbound.message() => m,
            () = cancel.cancelled() => break,
        };
        match msg {
            Ok(Some(v1::DestinationMessage {
                kind: Some(v1::destination_message::Kind::Ack(ack)),
            })) => {
                let v: Vclock = ack.committed.map(Vclock::from).unwrap_or_default();
                lock(&lag).acked(&v);
                metrics::gauge!(m::POSITION_SIGNATURE, m::REPLICASET => replicaset.clone(), m::POSITION => "acked")
                    .set(v.signature() as f64);
                status.lock().acked_vclock = v.clone();
                committed.send_replace(v);
            }
            Ok(Some(v1::DestinationMessage {
                kind: Some(v1::destination_message::Kind::Walk(step)),
            })) if steps.is_some() => {
                if let Some(s) = &steps {
                    s.send_replace(Some(step));
                }
            }
            Ok(Some(other)) => {
                warn!(replicaset = %replicaset, "unexpected message from the destination: {other:?}");
                break;
            }
            Ok(None) => break,
            Err(e) => {
                warn!(replicaset = %replicaset, "destination stream error: {e}");
                break;
            }
        }
    }
    cancel.cancel();
}

/// Polls every instance's vclock (IPROTO_VOTE) for the source position and
/// the lag in rows; updates status and gauges.
pub(crate) async fn poll_loop(
    instances: Vec<String>,
    opts: tcf_iproto::ConnectOptions,
    every: Duration,
    lag: SharedLag,
    status: StatusCell,
    replicaset: String,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = cancel.cancelled() => break,
        }
        let b = ballots(&instances, &opts, every.max(Duration::from_secs(1))).await;
        let source = newest(&b);
        let lag_s = lock(&lag).seconds();
        let mut st = status.lock();
        if !source.is_empty() {
            st.source_vclock = source.clone();
        }
        st.lag_seconds = lag_s;
        st.lag_lsn = st
            .source_vclock
            .signature()
            .saturating_sub(st.acked_vclock.signature());
        if let Some(gc) = st
            .instance
            .as_ref()
            .and_then(|i| b.iter().find(|(u, _)| u == i))
            .and_then(|(_, b)| b.as_ref().ok())
        {
            st.xlog_headroom_rows = Some(
                st.processed_vclock.signature() as i64
                    - gc.gc_vclock.without_local().signature() as i64,
            );
        }
        let rs = replicaset.clone();
        metrics::gauge!(m::LAG_SECONDS, m::REPLICASET => rs.clone()).set(lag_s);
        metrics::gauge!(m::LAG_LSN, m::REPLICASET => rs.clone()).set(st.lag_lsn as f64);
        for (name, v) in [
            ("source", &st.source_vclock),
            ("processed", &st.processed_vclock),
            ("shipped", &st.shipped_vclock),
        ] {
            metrics::gauge!(m::POSITION_SIGNATURE, m::REPLICASET => rs.clone(), m::POSITION => name).set(v.signature() as f64);
        }
        if let Some(h) = st.xlog_headroom_rows {
            metrics::gauge!(m::XLOG_HEADROOM, m::REPLICASET => rs).set(h as f64);
        }
    }
}
