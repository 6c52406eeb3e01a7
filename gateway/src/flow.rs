//! From classified rows to shippable transactions, free of I/O.
//!
//! The reader feeds every row of a subscription here (after checking it
//! with [`Flow::track`] and classifying it) and sends what [`Flow::apply`]
//! releases; the replay tests feed recorded rows the same way. Per row:
//! shipped rows go into the open transaction (spilling past the memory
//! bound); synchro rows are kept until their (single-row) transaction ends;
//! at a transaction's end the synchro rows act on the [`SyncGate`] first
//! (CONFIRM releases, ROLLBACK drops, PROMOTE/DEMOTE do both), then the
//! finished transaction goes through the gate with its [`Wait`], decided by
//! its last row's flags (or its spaces where the server sends no flags).

use std::{io, path::PathBuf};

use tcf_iproto::{Boundary, Row, Synchro, TxError, TxTracker, Vclock};

use crate::{
    classify::{RowOutcome, SkipKind},
    syncgate::{SyncGate, Wait},
    txbuf::{Finished, OpenTx, ReadyTx},
    walk::{Chunks, Tracker},
};

/// What one row did.
#[derive(Debug, Default)]
pub(crate) struct Step {
    /// Transactions to ship now, in order.
    pub(crate) release: Vec<ReadyTx>,
    /// Held transactions a ROLLBACK (or PROMOTE/DEMOTE) dropped.
    pub(crate) rolled_back: usize,
    /// The row ended a transaction written by a tcf destination.
    pub(crate) marked: bool,
    /// The row ended a transaction.
    pub(crate) finished: bool,
}

/// The row processing of one subscription.
#[derive(Debug)]
pub(crate) struct Flow {
    tracker: TxTracker,
    open: Option<OpenTx>,
    synchro: Vec<RowOutcome>,
    flags_known: bool,
    max_tx_memory: usize,
    spool_dir: PathBuf,
    /// Verification chunks of this stream's walker, if it has one.
    chunks: Option<Tracker>,
    /// Rows of the last finished transaction (capped): the room the next
    /// one starts with.
    row_hint: usize,
}

/// The most rows a new transaction reserves room for up front.
const MAX_ROW_HINT: usize = 1024;

impl Flow {
    /// Rows after `from`; `flags_known`: the server marks synchronous
    /// transactions with row flags (`ServerInfo::sends_synchro_flags`).
    pub(crate) fn new(
        from: Vclock,
        flags_known: bool,
        max_tx_memory: usize,
        spool_dir: PathBuf,
    ) -> Self {
        Self {
            tracker: TxTracker::new(from),
            open: None,
            synchro: Vec::new(),
            flags_known,
            max_tx_memory,
            spool_dir,
            chunks: None,
            row_hint: 0,
        }
    }

    /// Watches the watermarks of `chunks` (the stream's walker) and puts
    /// their chunks into the stream at the high watermarks.
    pub(crate) fn with_chunks(mut self, chunks: Option<Chunks>) -> Self {
        self.chunks = chunks.map(Tracker::new);
        self
    }

    /// Checks the row against the transaction rules and advances the vclock.
    pub(crate) fn track(&mut self, row: &Row) -> Result<Boundary, TxError> {
        self.tracker.track(row)
    }

    /// Applies a tracked and classified row.
    pub(crate) fn apply(
        &mut self,
        b: Boundary,
        row: &Row,
        outcome: RowOutcome,
        gate: &mut SyncGate,
    ) -> io::Result<Step> {
        let tx = self
            .open
            .get_or_insert_with(|| OpenTx::new(b.replica_id, b.tsn, self.row_hint));
        tx.timestamp(row.header.timestamp);
        match outcome {
            RowOutcome::Data { row, sync } => {
                if let Some(t) = self.chunks.as_mut() {
                    t.data(&row, b.replica_id);
                }
                tx.push(row, sync, self.max_tx_memory, &self.spool_dir)?;
            }
            RowOutcome::Mark => tx.mark(),
            RowOutcome::Watermark(w) => {
                if let Some(chunk) = self
                    .chunks
                    .as_mut()
                    .and_then(|t| t.watermark(w, row.header.replica_id))
                {
                    tx.chunk(chunk);
                }
            }
            RowOutcome::Skip(SkipKind::Ddl) => {
                if let Some(t) = self.chunks.as_mut() {
                    t.schema_change();
                }
            }
            RowOutcome::Skip(_) => {}
            s @ (RowOutcome::Confirm(_) | RowOutcome::Rollback(_) | RowOutcome::Promote(_)) => {
                self.synchro.push(s);
            }
        }
        let mut step = Step::default();
        if !b.last {
            return Ok(step);
        }
        step.finished = true;
        for s in self.synchro.drain(..) {
            let (confirm, rollback) = settle(s);
            if let Some(c) = confirm {
                step.release.extend(gate.confirm(c));
            }
            if let Some(r) = rollback {
                let (n, released) = gate.rollback(r);
                step.rolled_back += n;
                step.release.extend(released);
            }
        }
        let Some(tx) = self.open.take() else {
            return Ok(step);
        };
        self.row_hint = tx.row_count().min(MAX_ROW_HINT);
        let vclock = self.tracker.vclock().clone();
        let wait = Wait::of(self.flags_known, row.header.flags, tx.touches_sync_space());
        match tx.finish(vclock.clone(), row.lsn(), wait)? {
            Finished::SkipOnly { marked } => {
                step.marked = marked;
                gate.skip(vclock, b.replica_id, row.lsn(), wait);
            }
            Finished::Ready(ready) => step.release.extend(gate.push(ready)),
        }
        Ok(step)
    }
}

/// What a synchro row confirms and what it rolls back.
fn settle(s: RowOutcome) -> (Option<Synchro>, Option<Synchro>) {
    match s {
        RowOutcome::Confirm(c) => (Some(c), None),
        RowOutcome::Rollback(r) => (None, Some(r)),
        // The old owner's queue: confirmed up to `lsn`, the rest rolled back.
        RowOutcome::Promote(p) => (
            Some(p),
            Some(Synchro {
                lsn: p.lsn + 1,
                ..p
            }),
        ),
        _ => (None, None),
    }
}
