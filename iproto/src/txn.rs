//! Grouping replication rows into transactions.
//!
//! The rules, verified on Tarantool 2.6 (see `docs/` and the protocol notes):
//! * a row without `TSN` is a single-row transaction;
//! * otherwise `tsn = lsn - TSN`, rows share the tsn and origin, and the last
//!   one carries the COMMIT flag;
//! * a transaction whose last row was replication-local is closed by a NOP row
//!   carrying the COMMIT flag;
//! * CONFIRM/ROLLBACK (and PROMOTE/DEMOTE) come as their own rows;
//! * every row, skipped or not, advances the vclock component of its origin.

use thiserror::Error;

use crate::{Row, Vclock, row::RowKind};

/// A complete source transaction, rows in WAL order.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    /// Origin instance id of every row.
    pub replica_id: u32,
    /// LSN of the first row.
    pub tsn: u64,
    /// All rows, including NOP/synchro rows, in order.
    pub rows: Vec<Row>,
    /// The position right after this transaction.
    pub vclock: Vclock,
    /// Commit time on the origin (the last row's timestamp), if sent.
    pub timestamp: Option<f64>,
}

impl Transaction {
    /// LSN of the last row.
    pub fn last_lsn(&self) -> u64 {
        self.rows.last().map_or(self.tsn, Row::lsn)
    }

    /// The rows that change data (DML), in order.
    pub fn dml_rows(&self) -> impl Iterator<Item = &Row> {
        self.rows
            .iter()
            .filter(|r| matches!(r.kind(), RowKind::Dml(_)))
    }
}

/// A row that breaks the transaction rules: the stream cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TxError {
    /// A row whose LSN does not advance its origin's component.
    #[error("row lsn {lsn} of replica {replica_id} does not advance the vclock (at {current})")]
    NotAdvancing {
        /// Origin.
        replica_id: u32,
        /// The row's LSN.
        lsn: u64,
        /// The component's current LSN.
        current: u64,
    },
    /// A row of another transaction (or a single-row one) while one is open.
    #[error(
        "row lsn {lsn} (tsn {tsn}, replica {replica_id}) interleaves open transaction {open_tsn} of replica {open_replica}"
    )]
    Interleaved {
        /// Origin of the row.
        replica_id: u32,
        /// LSN of the row.
        lsn: u64,
        /// Its tsn.
        tsn: u64,
        /// The open transaction's tsn.
        open_tsn: u64,
        /// The open transaction's origin.
        open_replica: u32,
    },
    /// A `TSN` difference larger than the LSN.
    #[error("row lsn {lsn} has tsn difference {diff} beyond its lsn")]
    BadTsn {
        /// LSN.
        lsn: u64,
        /// The difference.
        diff: u64,
    },
    /// A row without an origin or LSN on the replication stream.
    #[error("row without replica id or lsn on the replication stream")]
    Unsigned,
}

/// Where a row stands in its transaction, as [`TxTracker::track`] judged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Boundary {
    /// Origin instance id of the transaction.
    pub replica_id: u32,
    /// The transaction's tsn (LSN of its first row).
    pub tsn: u64,
    /// The row opens a transaction.
    pub first: bool,
    /// The row ends it.
    pub last: bool,
}

/// Checks the transaction rules and tracks the vclock without storing rows,
/// for callers that keep rows their own way (spilling large transactions).
#[derive(Debug, Clone, Default)]
pub struct TxTracker {
    vclock: Vclock,
    open: Option<(u32, u64)>,
}

impl TxTracker {
    /// Starts from `vclock` (the position the subscription began at).
    pub fn new(vclock: Vclock) -> Self {
        Self { vclock, open: None }
    }

    /// The position after the last row tracked (including an open
    /// transaction's rows).
    pub fn vclock(&self) -> &Vclock {
        &self.vclock
    }

    /// Whether a transaction is partly received.
    pub fn has_open(&self) -> bool {
        self.open.is_some()
    }

    /// Forgets a partly received transaction and rewinds to `vclock`.
    pub fn reset(&mut self, vclock: Vclock) {
        self.vclock = vclock;
        self.open = None;
    }

    /// Accepts the next row: checks that it advances its origin's component
    /// and belongs to the open transaction (if any), advances the vclock, and
    /// says where the row stands. On error nothing changes and the stream
    /// should be dropped.
    pub fn track(&mut self, row: &Row) -> Result<Boundary, TxError> {
        let (replica_id, lsn) = (row.replica_id(), row.lsn());
        if lsn == 0 {
            return Err(TxError::Unsigned);
        }
        let current = self.vclock.get(replica_id);
        if lsn <= current {
            return Err(TxError::NotAdvancing {
                replica_id,
                lsn,
                current,
            });
        }
        let diff = row.header.tsn_diff.unwrap_or(0);
        let tsn = lsn.checked_sub(diff).ok_or(TxError::BadTsn { lsn, diff })?;
        if let Some((open_replica, open_tsn)) = self.open
            && (row.header.tsn_diff.is_none() || open_tsn != tsn || open_replica != replica_id)
        {
            return Err(TxError::Interleaved {
                replica_id,
                lsn,
                tsn,
                open_tsn,
                open_replica,
            });
        }
        self.vclock.follow(replica_id, lsn);
        let first = self.open.is_none();
        let last = row.is_commit();
        self.open = if last { None } else { Some((replica_id, tsn)) };
        Ok(Boundary {
            replica_id,
            tsn,
            first,
            last,
        })
    }
}

/// Turns a row stream into whole transactions, tracking the vclock.
#[derive(Debug, Clone, Default)]
pub struct TxAssembler {
    tracker: TxTracker,
    rows: Vec<Row>,
    timestamp: Option<f64>,
}

impl TxAssembler {
    /// Starts from `vclock` (the position the subscription began at).
    pub fn new(vclock: Vclock) -> Self {
        Self {
            tracker: TxTracker::new(vclock),
            rows: Vec::new(),
            timestamp: None,
        }
    }

    /// The position after the last row pushed (including an open transaction's rows).
    pub fn vclock(&self) -> &Vclock {
        self.tracker.vclock()
    }

    /// Whether a transaction is partly received.
    pub fn has_open(&self) -> bool {
        self.tracker.has_open()
    }

    /// Drops a partly received transaction (after a reconnect the stream
    /// resumes from the last complete transaction) and rewinds to `vclock`.
    pub fn reset(&mut self, vclock: Vclock) {
        self.tracker.reset(vclock);
        self.rows.clear();
        self.timestamp = None;
    }

    /// Adds a row; returns the transaction it completes, if any.
    ///
    /// On error the assembler is unchanged and the stream should be dropped.
    pub fn push(&mut self, row: Row) -> Result<Option<Transaction>, TxError> {
        let b = self.tracker.track(&row)?;
        if row.header.timestamp.is_some() {
            self.timestamp = row.header.timestamp;
        }
        self.rows.push(row);
        if !b.last {
            return Ok(None);
        }
        Ok(Some(Transaction {
            replica_id: b.replica_id,
            tsn: b.tsn,
            rows: std::mem::take(&mut self.rows),
            vclock: self.tracker.vclock().clone(),
            timestamp: self.timestamp.take(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{
        consts::{flag, request},
        frame::Header,
    };

    fn row(rt: u32, lsn: u64, tsn_diff: Option<u64>, commit: bool) -> Row {
        Row {
            header: Header {
                request_type: rt,
                replica_id: 1,
                lsn,
                tsn_diff,
                flags: if commit { flag::COMMIT } else { 0 },
                timestamp: Some(lsn as f64),
                ..Header::default()
            },
            body: Bytes::new(),
        }
    }

    #[test]
    fn single_and_multi_row_transactions() {
        let mut a = TxAssembler::new([(1, 33)].into_iter().collect());
        let t1 = a
            .push(row(request::INSERT, 34, None, false))
            .unwrap()
            .unwrap();
        assert_eq!((t1.tsn, t1.rows.len(), t1.vclock.get(1)), (34, 1, 34));
        assert!(
            a.push(row(request::INSERT, 35, Some(0), false))
                .unwrap()
                .is_none()
        );
        assert!(
            a.push(row(request::REPLACE, 36, Some(1), false))
                .unwrap()
                .is_none()
        );
        let t2 = a
            .push(row(request::UPDATE, 37, Some(2), true))
            .unwrap()
            .unwrap();
        assert_eq!(
            (t2.tsn, t2.rows.len(), t2.vclock.get(1), t2.last_lsn()),
            (35, 3, 37, 37)
        );
    }

    #[test]
    fn nop_closes_a_transaction_and_synchro_rows_stand_alone() {
        let mut a = TxAssembler::new(Vclock::new());
        assert!(
            a.push(row(request::INSERT, 44, Some(0), false))
                .unwrap()
                .is_none()
        );
        let t = a
            .push(row(request::NOP, 45, Some(1), true))
            .unwrap()
            .unwrap();
        assert_eq!(t.dml_rows().count(), 1);
        assert_eq!(t.vclock.get(1), 45);
        let c = a
            .push(row(request::CONFIRM, 46, None, false))
            .unwrap()
            .unwrap();
        assert_eq!(c.rows[0].kind(), RowKind::Confirm);
    }

    #[test]
    fn broken_streams_are_errors() {
        let mut a = TxAssembler::new([(1, 10)].into_iter().collect());
        assert!(matches!(
            a.push(row(request::INSERT, 10, None, false)),
            Err(TxError::NotAdvancing { .. })
        ));
        a.push(row(request::INSERT, 11, Some(0), false)).unwrap();
        assert!(matches!(
            a.push(row(request::INSERT, 12, None, false)),
            Err(TxError::Interleaved { .. })
        ));
        assert!(matches!(
            a.push(row(request::INSERT, 12, Some(0), false)),
            Err(TxError::Interleaved { .. })
        ));
        assert!(matches!(
            a.push(row(request::INSERT, 3, Some(9), false)),
            Err(TxError::NotAdvancing { .. })
        ));
        assert!(matches!(
            a.push(row(request::INSERT, 13, Some(20), false)),
            Err(TxError::BadTsn { .. })
        ));
        assert_eq!(a.vclock().get(1), 11);
    }
}
