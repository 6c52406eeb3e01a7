//! Holding synchronous transactions until their CONFIRM.
//!
//! Tarantool streams a synchronous transaction's rows as soon as they are in
//! the WAL, before the quorum confirms them, and may follow them with a
//! ROLLBACK. The gate holds every transaction from the first unconfirmed
//! synchronous one on (those queued behind it too, as Tarantool's
//! synchronous queue does):
//! * CONFIRM `{replica_id, lsn}` releases, in order, every held synchronous
//!   transaction of that origin up to `lsn` (one CONFIRM may cover many) and
//!   whatever stands behind them up to the next unconfirmed one;
//! * ROLLBACK `{replica_id, lsn}` drops the queued transactions from the
//!   first one of that origin at or after `lsn` on; a transaction the server
//!   marked as outside the queue (no `WAIT_SYNC` flag) stays;
//! * PROMOTE/DEMOTE `{replica_id, lsn}` do both: confirm up to `lsn`, roll
//!   back the rest of the old owner's queue;
//! * a reconnect drops the whole buffer (the stream resumes from before it).
//!
//! Which transactions wait is decided per transaction ([`Wait`]): from the
//! last row's `WAIT_ACK`/`WAIT_SYNC` flags where the server sends them
//! (2.6.3+), which also covers DDL and system-space rows on 3.2+ clusters
//! with a claimed queue and `box.begin{is_sync = true}`; otherwise from the
//! spaces' `is_sync`. A transaction that ships nothing (DDL, system rows)
//! but waits is held too, as a position: the watermark must not pass it,
//! nor may anything queued behind it ship, before its CONFIRM.
//!
//! The gate also keeps the **processed watermark**: the position up to which
//! every row has been released for shipping or skipped. It never passes a
//! held transaction.

use std::collections::VecDeque;

use tcf_iproto::{Synchro, Vclock, consts::flag};

use crate::txbuf::ReadyTx;

/// Whether a rolled-back queue takes a transaction with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limbo {
    /// In the source's synchronous queue (`WAIT_SYNC`): a ROLLBACK before it
    /// drops it.
    In,
    /// Committed outside the queue (no `WAIT_SYNC` from a server that sends
    /// the flags): a ROLLBACK never drops it.
    Out,
    /// The server sends no flags (before 2.6.3): assume it is in the queue.
    Unknown,
}

/// How a finished transaction stands towards the synchronous queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wait {
    /// Only a CONFIRM covering its LSN commits it.
    pub(crate) confirm: bool,
    /// Whether a ROLLBACK before it drops it.
    pub(crate) limbo: Limbo,
}

impl Wait {
    /// Neither waits nor is in the queue (tests, and rows of no transaction).
    #[cfg(test)]
    pub(crate) const ASYNC: Wait = Wait {
        confirm: false,
        limbo: Limbo::Out,
    };

    /// From the last row's `flags` when the server sends them
    /// (`flags_known`), else from whether a row touched a synchronous space.
    pub(crate) fn of(flags_known: bool, last_row_flags: u64, sync_space: bool) -> Self {
        if flags_known {
            Wait {
                confirm: last_row_flags & flag::WAIT_ACK != 0,
                limbo: if last_row_flags & flag::WAIT_SYNC != 0 {
                    Limbo::In
                } else {
                    Limbo::Out
                },
            }
        } else {
            Wait {
                confirm: sync_space,
                limbo: Limbo::Unknown,
            }
        }
    }
}

/// One held transaction: shipped rows, or only a position.
#[derive(Debug)]
struct Entry {
    origin: u32,
    last_lsn: u64,
    vclock: Vclock,
    wait: Wait,
    /// `None`: nothing to ship (skipped rows), only the watermark moves.
    tx: Option<ReadyTx>,
}

impl Entry {
    /// Waits for a CONFIRM that `c` does not give.
    fn blocks(&self, c: Option<&Synchro>) -> bool {
        self.wait.confirm
            && !c.is_some_and(|c| self.origin == c.replica_id && self.last_lsn <= c.lsn)
    }
}

/// The gate of one replicaset stream.
#[derive(Debug)]
pub(crate) struct SyncGate {
    held: VecDeque<Entry>,
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

    /// Transactions held (shipping ones and positions waiting for CONFIRM).
    pub(crate) fn held(&self) -> usize {
        self.held
            .iter()
            .filter(|e| e.tx.is_some() || e.wait.confirm)
            .count()
    }

    /// Memory held by in-memory rows.
    pub(crate) fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// A finished transaction; returns it at once unless it must wait.
    pub(crate) fn push(&mut self, tx: ReadyTx) -> Option<ReadyTx> {
        if self.held.is_empty() && !tx.wait.confirm {
            self.processed = tx.vclock.clone();
            return Some(tx);
        }
        self.held_bytes += tx.mem_bytes;
        self.held.push_back(Entry {
            origin: tx.origin,
            last_lsn: tx.last_lsn,
            vclock: tx.vclock.clone(),
            wait: tx.wait,
            tx: Some(tx),
        });
        None
    }

    /// A transaction that ships nothing, ending at `vclock`.
    pub(crate) fn skip(&mut self, vclock: Vclock, origin: u32, last_lsn: u64, wait: Wait) {
        if self.held.is_empty() && !wait.confirm {
            self.processed = vclock;
        } else {
            self.held.push_back(Entry {
                origin,
                last_lsn,
                vclock,
                wait,
                tx: None,
            });
        }
    }

    /// Releases the front entries that nothing blocks (`c` confirms what it
    /// covers).
    fn release(&mut self, c: Option<&Synchro>) -> Vec<ReadyTx> {
        let mut out = Vec::new();
        while self.held.front().is_some_and(|e| !e.blocks(c)) {
            let Some(e) = self.held.pop_front() else {
                break;
            };
            self.processed = e.vclock;
            if let Some(tx) = e.tx {
                self.held_bytes = self.held_bytes.saturating_sub(tx.mem_bytes);
                out.push(tx);
            }
        }
        out
    }

    /// CONFIRM: releases, in order, the held transactions it covers and
    /// whatever stands behind them up to the next unconfirmed synchronous one.
    pub(crate) fn confirm(&mut self, c: Synchro) -> Vec<ReadyTx> {
        self.release(Some(&c))
    }

    /// ROLLBACK: drops every queued transaction from the first one of
    /// `replica_id` at or after `lsn` on (those behind it were rolled back
    /// too), except those the server committed outside the queue; then
    /// releases what no longer waits. Returns how many were dropped and what
    /// was released.
    pub(crate) fn rollback(&mut self, r: Synchro) -> (usize, Vec<ReadyTx>) {
        let cut = self.held.iter().position(|e| {
            e.origin == r.replica_id && e.last_lsn >= r.lsn && e.wait.limbo != Limbo::Out
        });
        let Some(cut) = cut else {
            return (0, Vec::new());
        };
        let tail = self.held.split_off(cut);
        let mut dropped = 0;
        for e in tail {
            if e.wait.limbo == Limbo::Out {
                self.held.push_back(e);
                continue;
            }
            if let Some(tx) = e.tx {
                self.held_bytes = self.held_bytes.saturating_sub(tx.mem_bytes);
                dropped += 1;
            }
        }
        (dropped, self.release(None))
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

    const SYNC: Wait = Wait {
        confirm: true,
        limbo: Limbo::In,
    };
    const QUEUED: Wait = Wait {
        confirm: false,
        limbo: Limbo::In,
    };

    fn tx_with(lsn: u64, wait: Wait) -> ReadyTx {
        ReadyTx {
            origin: 1,
            tsn: lsn,
            last_lsn: lsn,
            vclock: [(1, lsn)].into_iter().collect(),
            timestamp: 0.0,
            wait,
            rows: TxRows::Memory(Vec::new()),
            row_count: 1,
            mem_bytes: 10,
            received_at: Instant::now(),
            chunk: None,
        }
    }

    fn tx(lsn: u64, sync: bool) -> ReadyTx {
        tx_with(lsn, if sync { SYNC } else { Wait::ASYNC })
    }

    fn at(lsn: u64) -> Vclock {
        [(1, lsn)].into_iter().collect()
    }

    fn synchro(lsn: u64) -> Synchro {
        Synchro {
            replica_id: 1,
            lsn,
            term: 0,
        }
    }

    fn tsns(txs: &[ReadyTx]) -> Vec<u64> {
        txs.iter().map(|t| t.tsn).collect()
    }

    #[test]
    fn wait_follows_the_flags_when_the_server_sends_them() {
        let both = flag::WAIT_SYNC | flag::WAIT_ACK;
        assert_eq!(Wait::of(true, both, false), SYNC, "system space on 3.2+");
        assert_eq!(Wait::of(true, flag::WAIT_SYNC, true), QUEUED);
        assert_eq!(
            Wait::of(true, flag::COMMIT, true),
            Wait::ASYNC,
            "forced async"
        );
        assert_eq!(
            Wait::of(false, 0, true),
            Wait {
                confirm: true,
                limbo: Limbo::Unknown
            },
            "2.6.0: the space decides"
        );
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
        g.skip(at(5), 1, 5, Wait::ASYNC);
        assert!(g.push(tx(6, true)).is_none());
        assert_eq!(
            g.processed(),
            &at(2),
            "the watermark never passes held rows"
        );
        assert_eq!(tsns(&g.confirm(synchro(3))), [3, 4]);
        assert_eq!(g.processed(), &at(5));
        assert_eq!(g.held(), 1);
        assert_eq!(g.confirm(synchro(6)).len(), 1);
        assert_eq!(g.processed(), &at(6));
    }

    #[test]
    fn one_confirm_covers_several_transactions() {
        let mut g = SyncGate::new(at(1));
        for lsn in 2..=5 {
            assert!(g.push(tx(lsn, true)).is_none());
        }
        assert!(g.push(tx_with(6, QUEUED)).is_none());
        assert!(g.push(tx(7, true)).is_none());
        assert_eq!(tsns(&g.confirm(synchro(5))), [2, 3, 4, 5, 6]);
        assert_eq!(g.processed(), &at(6));
        assert_eq!(g.held(), 1);
    }

    #[test]
    fn a_waiting_ddl_holds_the_watermark_and_what_follows() {
        let mut g = SyncGate::new(at(1));
        // `_space` insert on a 3.2+ cluster with a claimed queue: ships
        // nothing but waits for its CONFIRM.
        g.skip(at(2), 1, 2, SYNC);
        assert_eq!(g.processed(), &at(1));
        assert!(
            g.push(tx_with(3, QUEUED)).is_none(),
            "the insert into the new space waits behind the DDL"
        );
        assert_eq!(g.held(), 2);
        assert_eq!(tsns(&g.confirm(synchro(2))), [3]);
        assert_eq!(g.processed(), &at(3));
    }

    #[test]
    fn rollback_drops_the_sync_tx_and_everything_queued_behind_it() {
        let mut g = SyncGate::new(at(1));
        assert!(g.push(tx(2, true)).is_none());
        assert!(g.push(tx_with(3, QUEUED)).is_none());
        g.skip(at(4), 1, 4, SYNC);
        let (dropped, released) = g.rollback(synchro(2));
        assert_eq!((dropped, released.len()), (2, 0));
        assert_eq!(g.held(), 0);
        assert_eq!(g.held_bytes(), 0);
        g.skip(at(5), 1, 5, Wait::ASYNC);
        assert_eq!(g.processed(), &at(5));
    }

    #[test]
    fn rollback_keeps_what_the_server_committed_outside_the_queue() {
        let mut g = SyncGate::new(at(1));
        assert!(g.push(tx(2, true)).is_none());
        assert!(
            g.push(tx(3, false)).is_none(),
            "committed outside the queue"
        );
        assert!(g.push(tx_with(4, QUEUED)).is_none());
        let (dropped, released) = g.rollback(synchro(2));
        assert_eq!(dropped, 2);
        assert_eq!(tsns(&released), [3]);
        assert_eq!(g.processed(), &at(3));
        assert_eq!(g.held(), 0);
    }

    #[test]
    fn without_flags_a_rollback_drops_everything_behind() {
        let unknown = |confirm| Wait {
            confirm,
            limbo: Limbo::Unknown,
        };
        let mut g = SyncGate::new(at(1));
        assert!(g.push(tx_with(2, unknown(true))).is_none());
        assert!(g.push(tx_with(3, unknown(false))).is_none());
        assert_eq!(g.rollback(synchro(2)).0, 2);
    }

    #[test]
    fn a_promote_confirms_up_to_its_lsn_and_rolls_back_the_rest() {
        let mut g = SyncGate::new(at(1));
        for lsn in 2..=4 {
            assert!(g.push(tx(lsn, true)).is_none());
        }
        // PROMOTE {replica_id: 1, lsn: 3}: as the reader applies it.
        assert_eq!(tsns(&g.confirm(synchro(3))), [2, 3]);
        assert_eq!(g.rollback(synchro(4)).0, 1);
        assert_eq!(g.held(), 0);
        assert_eq!(g.processed(), &at(3));
    }
}
