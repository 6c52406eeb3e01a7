//! The bounded queue between a replicaset's source reader and its sender.
//!
//! Bounded in items and in bytes: when the destination is slow the sender
//! stops taking items, the reader blocks on `send`, stops reading the source
//! socket, and the source's relay waits. Memory stays flat.

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicU64, Ordering},
};

use tcf_iproto::Vclock;
use tcf_proto::v1;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::{spool::Spool, txbuf::ReadyTx};

/// What the reader hands to the sender, in stream order.
#[derive(Debug)]
pub(crate) enum Item {
    /// The stream is set up (sent once, first).
    Started(v1::Started),
    /// An initial load to ship from its spool file.
    Snapshot {
        spool: Spool,
        truncate: bool,
        source_uuid: String,
    },
    /// A transaction to ship.
    Tx(ReadyTx),
    /// The source is idle; everything up to `processed` is shipped or skipped.
    Heartbeat { processed: Vclock, source_time: f64 },
    /// The stream ends with this error.
    Error(v1::StreamError),
    /// After a WAL gap (`on_wal_gap: repair`) the stream continues after
    /// `after`; the destination starts a repair walk.
    GapRestart {
        after: Vclock,
        lost_from: Vclock,
        message: String,
    },
}

impl Item {
    fn bytes(&self) -> usize {
        match self {
            Item::Tx(tx) => tx.mem_bytes,
            _ => 64,
        }
    }
}

/// The reader's end.
#[derive(Debug, Clone)]
pub(crate) struct QueueTx {
    tx: mpsc::Sender<(Item, OwnedSemaphorePermit)>,
    bytes: Arc<Semaphore>,
    max_bytes: usize,
    queued: Arc<AtomicU64>,
    watermark: Arc<Mutex<Vclock>>,
}

/// The sender's end.
#[derive(Debug)]
pub(crate) struct QueueRx {
    rx: mpsc::Receiver<(Item, OwnedSemaphorePermit)>,
    bytes: Arc<Semaphore>,
    max_bytes: usize,
    queued: Arc<AtomicU64>,
    taken: u64,
    watermark: Arc<Mutex<Vclock>>,
}

/// The queue is closed: the stream ended.
#[derive(Debug, thiserror::Error)]
#[error("the stream to the destination ended")]
pub(crate) struct Closed;

/// A queue of at most `max_items` items and about `max_bytes` bytes (an item
/// larger than the bound is admitted alone).
pub(crate) fn queue(max_items: usize, max_bytes: usize) -> (QueueTx, QueueRx) {
    let (tx, rx) = mpsc::channel(max_items.max(1));
    let max_bytes = max_bytes.clamp(1, Semaphore::MAX_PERMITS);
    let bytes = Arc::new(Semaphore::new(max_bytes));
    let queued = Arc::new(AtomicU64::new(0));
    let watermark = Arc::new(Mutex::new(Vclock::new()));
    (
        QueueTx {
            tx,
            bytes: Arc::clone(&bytes),
            max_bytes,
            queued: Arc::clone(&queued),
            watermark: Arc::clone(&watermark),
        },
        QueueRx {
            rx,
            bytes,
            max_bytes,
            queued,
            taken: 0,
            watermark,
        },
    )
}

impl QueueTx {
    /// Waits for room, then queues `item`.
    pub(crate) async fn send(&self, item: Item) -> Result<(), Closed> {
        let n = item.bytes().clamp(1, self.max_bytes) as u32;
        let permit = Arc::clone(&self.bytes)
            .acquire_many_owned(n)
            .await
            .map_err(|_| Closed)?;
        self.tx.send((item, permit)).await.map_err(|_| Closed)?;
        self.queued.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Queues `item` only if there is room now (heartbeats: a full queue
    /// already tells the destination the source is busy).
    pub(crate) fn try_send(&self, item: Item) -> Result<bool, Closed> {
        let n = item.bytes().clamp(1, self.max_bytes) as u32;
        let Ok(permit) = Arc::clone(&self.bytes).try_acquire_many_owned(n) else {
            return Ok(false);
        };
        match self.tx.try_send((item, permit)) {
            Ok(()) => {
                self.queued.fetch_add(1, Ordering::SeqCst);
                Ok(true)
            }
            Err(mpsc::error::TrySendError::Full(_)) => Ok(false),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Closed),
        }
    }

    /// Publishes this stream's processed watermark, after queueing every
    /// transaction it covers (see [`QueueRx::watermark`]).
    pub(crate) fn processed(&self, watermark: &Vclock) {
        self.watermark
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone_from(watermark);
    }

    /// Whether the sender is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl QueueRx {
    /// The next item, waiting for one; `None` when the reader is gone.
    pub(crate) async fn recv(&mut self) -> Option<Item> {
        let item = self.rx.recv().await.map(|(item, _permit)| item);
        self.taken += u64::from(item.is_some());
        item
    }

    /// The next item if one is ready.
    pub(crate) fn try_recv(&mut self) -> Option<Item> {
        let item = self.rx.try_recv().ok().map(|(item, _permit)| item);
        self.taken += u64::from(item.is_some());
        item
    }

    /// The reader's last published watermark, when every item queued before
    /// it was published has been taken: the reader queues a transaction
    /// before it publishes a watermark covering it, and the count of items
    /// queued is read after the watermark, so the sender, having sent what
    /// it took, may claim the watermark without passing a queued
    /// transaction. `None` while items are still queued.
    pub(crate) fn watermark(&self) -> Option<Vclock> {
        let w = self
            .watermark
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        (self.taken >= self.queued.load(Ordering::SeqCst)).then_some(w)
    }

    /// Bytes waiting.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.max_bytes
            .saturating_sub(self.bytes.available_permits())
    }
}
