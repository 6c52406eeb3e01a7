//! The gateway's own heartbeats on a stream that has nothing to send.
//!
//! The source's heartbeats reach the destination only through the reader,
//! and only when the source has been idle for its `replication_timeout`; a
//! heartbeat also carries the lag as it stood when it was sent, which a
//! destination still applying earlier batches reads much later. So when the
//! sender has sent nothing for [`IDLE_HEARTBEAT`] it sends a heartbeat of its
//! own: the source's newest vclock (the poller's), the lag now, and as
//! `processed` this stream's reader's watermark, but only when every item
//! the reader queued before publishing it has been sent (see
//! [`QueueRx::watermark`]); otherwise the last position already sent. It
//! never claims a position whose transactions are still queued or held,
//! nor one another stream's reader processed.

use std::time::Duration;

use tcf_iproto::Vclock;
use tcf_proto::v1;
use tokio::time::Instant;

use crate::{
    pipeline::{SharedLag, lock},
    queue::QueueRx,
    status::StatusCell,
};

/// How long a stream may send nothing before the gateway sends a heartbeat
/// of its own.
pub(crate) const IDLE_HEARTBEAT: Duration = Duration::from_secs(1);

/// When the stream last sent something, and the processed position it has
/// told the destination.
#[derive(Debug)]
pub(crate) struct Keepalive {
    last_sent: Instant,
    told: Vclock,
    started: bool,
}

impl Keepalive {
    /// Nothing sent yet.
    pub(crate) fn new() -> Self {
        Self {
            last_sent: Instant::now(),
            told: Vclock::new(),
            started: false,
        }
    }

    /// Something was sent just now; `processed`, when given, is the position
    /// it covers (a heartbeat's `processed`, a shipped transaction's vclock).
    pub(crate) fn sent(&mut self, processed: Option<&Vclock>) {
        self.last_sent = Instant::now();
        self.started = true;
        if let Some(p) = processed {
            self.told.merge(p);
        }
    }

    /// When the next own heartbeat is due.
    pub(crate) fn due(&self) -> Instant {
        self.last_sent + IDLE_HEARTBEAT
    }

    /// The heartbeat to send now that the stream has been idle, or `None`
    /// before the stream has sent anything (the destination waits for
    /// `Started` first).
    pub(crate) fn heartbeat(
        &mut self,
        rx: &QueueRx,
        status: &StatusCell,
        lag: &SharedLag,
    ) -> Option<v1::Heartbeat> {
        if !self.started {
            self.last_sent = Instant::now();
            return None;
        }
        if let Some(w) = rx.watermark() {
            self.told.merge(&w);
        }
        let source = status.lock().source_vclock.clone();
        self.last_sent = Instant::now();
        Some(v1::Heartbeat {
            processed: Some((&self.told).into()),
            source_vclock: Some((&source).into()),
            source_time: 0.0,
            lag_seconds: lock(lag).seconds(),
        })
    }
}
