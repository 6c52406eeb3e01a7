//! Transactions on their way from the source to the destination.
//!
//! An open transaction collects its shipped rows in memory; once it grows
//! past the memory bound the rows go to a spill file, so one huge
//! transaction never raises the gateway's memory. A finished transaction is
//! shipped whole: in one `Transaction` message, or (spilled or large) in
//! consecutive pieces marked `partial`, which the destination applies as one.

use std::{
    fs::File,
    io::{self, BufReader, Read, Seek, SeekFrom, Write},
    path::Path,
    time::Instant,
};

use prost::Message;
use tcf_iproto::Vclock;
use tcf_proto::v1;

use crate::{bgfile::BgWriter, syncgate::Wait};

/// Estimated memory a queued row holds: its payload, the space name, the
/// message structs and the share of the received frame buffer it keeps
/// alive (measured: about 3x the payload for small rows).
pub(crate) fn row_size(row: &v1::Row) -> usize {
    3 * (row.key.len() + row.tuple.len() + row.ops.len()) + row.space.len() + 160
}

/// A transaction's rows: in memory or spilled to a file.
#[derive(Debug)]
pub(crate) enum TxRows {
    Memory(Vec<v1::Row>),
    Spilled(File),
}

/// A complete transaction to ship.
#[derive(Debug)]
pub(crate) struct ReadyTx {
    pub(crate) origin: u32,
    pub(crate) tsn: u64,
    pub(crate) last_lsn: u64,
    /// Position after it (covers skipped rows before it).
    pub(crate) vclock: Vclock,
    pub(crate) timestamp: f64,
    /// Whether it waits for a CONFIRM (shipped only after it) and whether a
    /// ROLLBACK may drop it.
    pub(crate) wait: Wait,
    pub(crate) rows: TxRows,
    pub(crate) row_count: usize,
    /// Estimated memory held (0 once spilled).
    pub(crate) mem_bytes: usize,
    /// When the gateway received its first row (lag is measured from here).
    pub(crate) received_at: Instant,
    /// A verification chunk to send at this transaction's position (a high
    /// watermark's transaction; it has no rows).
    pub(crate) chunk: Option<Box<v1::Chunk>>,
}

impl ReadyTx {
    /// The transaction as `Transaction` messages of at most `max_bytes`
    /// each (at least one row per piece), produced lazily: a spilled
    /// transaction is read back one piece at a time, so its size never
    /// shows in memory. Every piece but the last is `partial`; only the last
    /// carries the vclock.
    pub(crate) fn pieces(self, max_bytes: usize) -> io::Result<Pieces> {
        let source = match self.rows {
            // `mem_bytes` is at least the rows' summed `row_size`: when it
            // fits, the one piece takes the rows as they are, no move per row.
            TxRows::Memory(rows) if self.mem_bytes <= max_bytes => Source::Whole(rows),
            TxRows::Memory(rows) => Source::Memory(rows.into_iter()),
            TxRows::Spilled(mut file) => {
                file.seek(SeekFrom::Start(0))?;
                Source::Spilled {
                    input: BufReader::with_capacity(1 << 16, file),
                    left: self.row_count,
                }
            }
        };
        Ok(Pieces {
            source,
            peeked: None,
            max_bytes,
            origin: self.origin,
            tsn: self.tsn,
            vclock: Some(self.vclock),
            timestamp: self.timestamp,
        })
    }
}

enum Source {
    /// Rows that make one piece.
    Whole(Vec<v1::Row>),
    Memory(std::vec::IntoIter<v1::Row>),
    Spilled {
        input: BufReader<File>,
        left: usize,
    },
}

impl Source {
    fn next(&mut self) -> io::Result<Option<v1::Row>> {
        match self {
            // `next_piece` takes these whole; kept in order all the same.
            Source::Whole(rows) => Ok((!rows.is_empty()).then(|| rows.remove(0))),
            Source::Memory(rows) => Ok(rows.next()),
            Source::Spilled { input, left } => {
                if *left == 0 {
                    return Ok(None);
                }
                *left -= 1;
                let mut len = [0u8; 4];
                input.read_exact(&mut len)?;
                let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
                input.read_exact(&mut buf)?;
                v1::Row::decode(&buf[..])
                    .map(Some)
                    .map_err(io::Error::other)
            }
        }
    }
}

impl Pieces {
    /// Whether the rows are read from a spill file (do it on a blocking
    /// thread).
    pub(crate) fn is_spilled(&self) -> bool {
        matches!(self.source, Source::Spilled { .. })
    }
}

/// The pieces of one transaction (see [`ReadyTx::pieces`]).
pub(crate) struct Pieces {
    source: Source,
    peeked: Option<v1::Row>,
    max_bytes: usize,
    origin: u32,
    tsn: u64,
    vclock: Option<Vclock>,
    timestamp: f64,
}

impl Pieces {
    /// The next piece, `None` after the last.
    pub(crate) fn next_piece(&mut self) -> io::Result<Option<v1::Transaction>> {
        if self.vclock.is_none() {
            return Ok(None);
        }
        if let Source::Whole(rows) = &mut self.source {
            let rows = std::mem::take(rows);
            return Ok(Some(self.piece(rows, false)));
        }
        let mut rows = Vec::new();
        let mut size = 0;
        loop {
            let row = match self.peeked.take() {
                Some(r) => r,
                None => match self.source.next()? {
                    Some(r) => r,
                    None => break,
                },
            };
            let s = row_size(&row);
            if !rows.is_empty() && size + s > self.max_bytes {
                self.peeked = Some(row);
                return Ok(Some(self.piece(rows, true)));
            }
            size += s;
            rows.push(row);
        }
        Ok(Some(self.piece(rows, false)))
    }

    fn piece(&mut self, rows: Vec<v1::Row>, partial: bool) -> v1::Transaction {
        v1::Transaction {
            origin: self.origin,
            tsn: self.tsn,
            vclock: if partial {
                None
            } else {
                self.vclock.take().map(|v| (&v).into())
            },
            timestamp: self.timestamp,
            rows,
            partial,
        }
    }
}

fn write_spilled(w: &mut impl Write, row: &v1::Row) -> io::Result<()> {
    let buf = row.encode_to_vec();
    w.write_all(&(buf.len() as u32).to_le_bytes())?;
    w.write_all(&buf)
}

/// A transaction being received.
#[derive(Debug)]
pub(crate) struct OpenTx {
    origin: u32,
    tsn: u64,
    received_at: Instant,
    rows: Vec<v1::Row>,
    mem_bytes: usize,
    spill: Option<BgWriter>,
    row_count: usize,
    marked: bool,
    sync: bool,
    timestamp: f64,
    chunk: Option<Box<v1::Chunk>>,
}

/// How a finished transaction leaves the reader.
#[derive(Debug)]
pub(crate) enum Finished {
    /// Nothing to ship (only skipped rows, or marked by a destination).
    SkipOnly { marked: bool },
    /// Rows to ship.
    Ready(ReadyTx),
}

impl OpenTx {
    /// A transaction whose first row just arrived, with room for `rows`
    /// rows (the previous transaction's count: no regrowing per row).
    pub(crate) fn new(origin: u32, tsn: u64, rows: usize) -> Self {
        Self {
            origin,
            tsn,
            received_at: Instant::now(),
            rows: Vec::with_capacity(rows),
            mem_bytes: 0,
            spill: None,
            row_count: 0,
            marked: false,
            sync: false,
            timestamp: 0.0,
            chunk: None,
        }
    }

    /// The transaction is a high watermark: `chunk` goes at its position.
    pub(crate) fn chunk(&mut self, chunk: v1::Chunk) {
        self.mem_bytes += chunk
            .entries
            .iter()
            .map(|e| e.key.len() + e.tuple.len() + 32)
            .sum::<usize>();
        self.chunk = Some(Box::new(chunk));
    }

    /// Records the source commit time carried by a row.
    pub(crate) fn timestamp(&mut self, ts: Option<f64>) {
        if let Some(ts) = ts {
            self.timestamp = ts;
        }
    }

    /// The transaction writes a global progress space: drop everything.
    pub(crate) fn mark(&mut self) {
        self.marked = true;
        self.rows = Vec::new();
        self.spill = None;
        self.mem_bytes = 0;
    }

    /// Memory held by rows not yet spilled.
    #[cfg(test)]
    pub(crate) fn mem_bytes(&self) -> usize {
        self.mem_bytes
    }

    /// Rows pushed so far (spilled ones included).
    pub(crate) fn row_count(&self) -> usize {
        self.row_count
    }

    /// Whether a row of a synchronous space was pushed (what decides a
    /// transaction's [`Wait`] when the server sends no flags).
    pub(crate) fn touches_sync_space(&self) -> bool {
        self.sync
    }

    /// Adds a shipped row, spilling to `spill_dir` past `max_memory` bytes.
    pub(crate) fn push(
        &mut self,
        row: v1::Row,
        sync: bool,
        max_memory: usize,
        spill_dir: &Path,
    ) -> io::Result<()> {
        self.sync |= sync;
        if self.marked {
            return Ok(());
        }
        self.row_count += 1;
        if let Some(w) = &mut self.spill {
            return write_spilled(w, &row);
        }
        self.mem_bytes += row_size(&row);
        self.rows.push(row);
        if self.mem_bytes > max_memory {
            let mut w = BgWriter::create_in(spill_dir)?;
            for r in self.rows.drain(..) {
                write_spilled(&mut w, &r)?;
            }
            self.rows = Vec::new();
            self.mem_bytes = 0;
            self.spill = Some(w);
        }
        Ok(())
    }

    /// Closes the transaction at `vclock` (the position after its last row).
    pub(crate) fn finish(self, vclock: Vclock, last_lsn: u64, wait: Wait) -> io::Result<Finished> {
        if self.marked || (self.row_count == 0 && self.chunk.is_none()) {
            return Ok(Finished::SkipOnly {
                marked: self.marked,
            });
        }
        let rows = match self.spill {
            Some(w) => TxRows::Spilled(w.finish()?),
            None => TxRows::Memory(self.rows),
        };
        Ok(Finished::Ready(ReadyTx {
            origin: self.origin,
            tsn: self.tsn,
            last_lsn,
            vclock,
            timestamp: self.timestamp,
            wait,
            rows,
            row_count: self.row_count,
            mem_bytes: self.mem_bytes,
            received_at: self.received_at,
            chunk: self.chunk,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: u64) -> v1::Row {
        v1::Row {
            op: v1::Op::Replace as i32,
            space: "test".into(),
            tuple: bytes::Bytes::from(vec![0x91, (i % 100) as u8]),
            ..v1::Row::default()
        }
    }

    #[test]
    fn a_large_transaction_spills_and_comes_back_whole_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let mut tx = OpenTx::new(1, 10, 0);
        for i in 0..1000 {
            tx.push(row(i), false, 4096, dir.path()).unwrap();
        }
        assert_eq!(tx.mem_bytes(), 0, "spilled");
        let vclock: Vclock = [(1, 1009)].into_iter().collect();
        let Finished::Ready(ready) = tx.finish(vclock.clone(), 1009, Wait::ASYNC).unwrap() else {
            panic!()
        };
        assert_eq!(ready.row_count, 1000);
        let mut it = ready.pieces(10_000).unwrap();
        let mut pieces = Vec::new();
        while let Some(p) = it.next_piece().unwrap() {
            pieces.push(p);
        }
        assert!(pieces.len() > 1);
        assert!(
            pieces[..pieces.len() - 1]
                .iter()
                .all(|p| p.partial && p.vclock.is_none())
        );
        let last = pieces.last().unwrap();
        assert!(!last.partial);
        assert_eq!(Vclock::from(last.vclock.clone().unwrap()), vclock);
        let rows: Vec<_> = pieces.into_iter().flat_map(|p| p.rows).collect();
        assert_eq!(rows, (0..1000).map(row).collect::<Vec<_>>());
    }

    #[test]
    fn a_transaction_in_memory_ships_whole_or_in_ordered_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let finished = || {
            let mut tx = OpenTx::new(1, 10, 0);
            for i in 0..50 {
                tx.push(row(i), false, 1 << 20, dir.path()).unwrap();
            }
            let vclock: Vclock = [(1, 59)].into_iter().collect();
            let Finished::Ready(ready) = tx.finish(vclock, 59, Wait::ASYNC).unwrap() else {
                panic!()
            };
            assert!(matches!(ready.rows, TxRows::Memory(_)));
            ready
        };
        let mut whole = finished().pieces(1 << 20).unwrap();
        let only = whole.next_piece().unwrap().unwrap();
        assert!(!only.partial && only.vclock.is_some());
        assert_eq!(only.rows, (0..50).map(row).collect::<Vec<_>>());
        assert!(whole.next_piece().unwrap().is_none());
        let mut split = finished().pieces(2_000).unwrap();
        let mut pieces = Vec::new();
        while let Some(p) = split.next_piece().unwrap() {
            pieces.push(p);
        }
        assert!(pieces.len() > 1);
        assert!(
            pieces
                .last()
                .is_some_and(|p| !p.partial && p.vclock.is_some())
        );
        let rows: Vec<_> = pieces.into_iter().flat_map(|p| p.rows).collect();
        assert_eq!(rows, (0..50).map(row).collect::<Vec<_>>());
    }

    #[test]
    fn a_marked_transaction_ships_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut tx = OpenTx::new(1, 10, 0);
        tx.push(row(1), false, 4096, dir.path()).unwrap();
        tx.mark();
        tx.push(row(2), false, 4096, dir.path()).unwrap();
        assert!(matches!(
            tx.finish(Vclock::new(), 12, Wait::ASYNC).unwrap(),
            Finished::SkipOnly { marked: true }
        ));
    }
}
