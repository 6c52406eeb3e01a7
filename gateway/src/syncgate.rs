//! Holding synchronous transactions until their CONFIRM.
//!
//! Tarantool streams a synchronous transaction's rows as soon as they are in
//! the WAL, before the quorum confirms them, and may follow them with a
//! ROLLBACK. The gate holds every transaction from the first unconfirmed
//! synchronous one on (asynchronous ones queued behind it too, as Tarantool's
//! limbo does): CONFIRM releases in order, ROLLBACK drops, a reconnect drops
//! the whole buffer (the stream resumes from before it).
//!
//! The gate also keeps the **processed watermark**: the position up to which
//! every row has been released for shipping or skipped. It never passes a
//! held transaction.

use std::collections::VecDeque;

use tcf_iproto::{Synchro, Vclock};

use crate::txbuf::ReadyTx;

#[derive(Debug)]
enum Held {
    Tx(ReadyTx),
    /// Skipped rows behind held transactions: the watermark may move here
    /// once everything before is released.
    Skip(Vclock),
}

/// The gate of one replicaset stream.
#[derive(Debug)]
pub(crate) struct SyncGate {
    held: VecDeque<Held>,
    processed: Vclock,
    held_bytes: usize,
}

impl SyncGate {
    /// An empty gate whose watermark starts at `position`.
    pub(crate) fn new(position: Vclock) -> Self {
        Self {
            held: VecDeque::new(),
            processed: position,
            held_bytes: 0,
        }
    }

    /// Everything up to here is released or skipped.
    pub(crate) fn processed(&self) -> &Vclock {
        &self.processed
    }

    /// Transactions held.
    pub(crate) fn held(&self) -> usize {
        self.held
            .iter()
            .filter(|h| matches!(h, Held::Tx(_)))
            .count()
    }

    /// Memory held by in-memory rows.
    pub(crate) fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// A finished transaction; returns it at once unless it must wait.
    pub(crate) fn push(&mut self, tx: ReadyTx) -> Option<ReadyTx> {
        if self.held.is_empty() && !tx.sync {
            self.processed = tx.vclock.clone();
            return Some(tx);
        }
        self.held_bytes += tx.mem_bytes;
        self.held.push_back(Held::Tx(tx));
        None
    }

    /// Rows that ship nothing, ending at `vclock`.
    pub(crate) fn skip(&mut self, vclock: Vclock) {
        if self.held.is_empty() {
            self.processed = vclock;
        } else {
            self.held.push_back(Held::Skip(vclock));
        }
    }

    /// CONFIRM: releases, in order, the held transactions it covers and
    /// whatever stands behind them up to the next unconfirmed synchronous one.
    pub(crate) fn confirm(&mut self, c: Synchro) -> Vec<ReadyTx> {
        let mut out = Vec::new();
        while let Some(front) = self.held.front() {
            match front {
                Held::Tx(tx) if tx.sync && !(tx.origin == c.replica_id && tx.last_lsn <= c.lsn) => {
                    break;
                }
                _ => {}
            }
            match self.held.pop_front() {
                Some(Held::Tx(tx)) => {
                    self.held_bytes = self.held_bytes.saturating_sub(tx.mem_bytes);
                    self.processed = tx.vclock.clone();
                    out.push(tx);
                }
                Some(Held::Skip(v)) => self.processed = v,
                None => break,
            }
        }
        out
    }

    /// ROLLBACK: drops every held transaction from the first one of
    /// `replica_id` at or after `lsn` on (those behind it were rolled back
    /// too). Returns how many were dropped.
    pub(crate) fn rollback(&mut self, r: Synchro) -> usize {
        let cut = self.held.iter().position(|h| match h {
            Held::Tx(tx) => tx.origin == r.replica_id && tx.last_lsn >= r.lsn,
            Held::Skip(_) => false,
        });
        let Some(cut) = cut else { return 0 };
        let dropped = self.held.split_off(cut);
        let mut n = 0;
        for h in dropped {
            if let Held::Tx(tx) = h {
                self.held_bytes = self.held_bytes.saturating_sub(tx.mem_bytes);
                n += 1;
            }
        }
        n
    }

    /// Drops everything held (a reconnect resumes from [`Self::processed`]).
    pub(crate) fn clear(&mut self) {
        self.held.clear();
        self.held_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::txbuf::TxRows;

    fn tx(lsn: u64, sync: bool) -> ReadyTx {
        ReadyTx {
            origin: 1,
            tsn: lsn,
            last_lsn: lsn,
            vclock: [(1, lsn)].into_iter().collect(),
            timestamp: 0.0,
            sync,
            rows: TxRows::Memory(Vec::new()),
            row_count: 1,
            mem_bytes: 10,
            received_at: Instant::now(),
        }
    }

    fn at(lsn: u64) -> Vclock {
        [(1, lsn)].into_iter().collect()
    }

    #[test]
    fn async_passes_sync_waits_for_confirm_with_what_queued_behind() {
        let mut g = SyncGate::new(at(1));
        assert!(g.push(tx(2, false)).is_some());
        assert_eq!(g.processed(), &at(2));
        assert!(g.push(tx(3, true)).is_none());
        assert!(
            g.push(tx(4, false)).is_none(),
            "async behind a pending sync tx waits"
        );
        g.skip(at(5));
        assert!(g.push(tx(6, true)).is_none());
        assert_eq!(
            g.processed(),
            &at(2),
            "the watermark never passes held rows"
        );
        let out = g.confirm(Synchro {
            replica_id: 1,
            lsn: 3,
            term: 0,
        });
        assert_eq!(out.iter().map(|t| t.tsn).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(g.processed(), &at(5));
        assert_eq!(g.held(), 1);
        let out = g.confirm(Synchro {
            replica_id: 1,
            lsn: 6,
            term: 0,
        });
        assert_eq!(out.len(), 1);
        assert_eq!(g.processed(), &at(6));
    }

    #[test]
    fn rollback_drops_the_sync_tx_and_everything_behind_it() {
        let mut g = SyncGate::new(at(1));
        assert!(g.push(tx(2, true)).is_none());
        assert!(g.push(tx(3, false)).is_none());
        assert_eq!(
            g.rollback(Synchro {
                replica_id: 1,
                lsn: 2,
                term: 0
            }),
            2
        );
        assert_eq!(g.held(), 0);
        assert_eq!(g.held_bytes(), 0);
        g.skip(at(4));
        assert_eq!(g.processed(), &at(4));
    }
}
