//! From stream messages to target transactions: source rows mapped to target
//! space ids, whole source transactions coalesced into batches of one engine.

use tcf_iproto::{
    Vclock,
    schema::{Catalog, SpaceMeta},
};
use tcf_proto::v1;

use crate::{config::Batching, packed::ApplyRow, target::Engine};

/// A row names a space the target does not have.
#[derive(Debug, thiserror::Error)]
#[error("the target has no space '{0}'")]
pub(crate) struct MissingSpace(pub(crate) String);

/// A source transaction touching both engines (cannot happen on a sound
/// source: Tarantool refuses it there too).
#[derive(Debug, thiserror::Error)]
#[error("a source transaction touches memtx and vinyl spaces")]
pub(crate) struct CrossEngine;

/// A row no Tarantool writes: an unknown op, or an index id or base out
/// of Tarantool's range (a broken or hostile gateway).
#[derive(Debug, thiserror::Error)]
#[error("row {row} of the transaction (space '{space}'): {what}")]
pub(crate) struct BadRow {
    row: usize,
    space: String,
    what: String,
}

/// Why a transaction cannot be mapped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MapError {
    #[error(transparent)]
    Missing(#[from] MissingSpace),
    #[error(transparent)]
    CrossEngine(#[from] CrossEngine),
    #[error(transparent)]
    BadRow(#[from] BadRow),
}

pub(crate) fn engine_of(name: &str) -> Engine {
    if name == "vinyl" {
        Engine::Vinyl
    } else {
        Engine::Memtx
    }
}

/// Maps the rows of one source transaction; returns its engine, rows and
/// payload bytes.
pub(crate) fn map_rows(
    rows: Vec<v1::Row>,
    catalog: &Catalog,
) -> Result<(Engine, Vec<ApplyRow>, usize), MapError> {
    let mut engine = None;
    let mut out = Vec::with_capacity(rows.len());
    let mut bytes = 0;
    let mut last: Option<&SpaceMeta> = None;
    for (i, r) in rows.into_iter().enumerate() {
        // Rows of a transaction mostly name the space of the row before.
        let meta = match last {
            Some(m) if m.name == r.space => m,
            _ => catalog
                .by_name(&r.space)
                .ok_or_else(|| MissingSpace(r.space.clone()))?,
        };
        last = Some(meta);
        let e = engine_of(&meta.engine);
        if *engine.get_or_insert(e) != e {
            return Err(CrossEngine.into());
        }
        let bad = |what: String| BadRow {
            row: i,
            space: r.space.clone(),
            what,
        };
        let op = match v1::Op::try_from(r.op) {
            Ok(v1::Op::Unspecified) | Err(_) => {
                return Err(bad(format!("unknown op {}", r.op)).into());
            }
            Ok(op) => op,
        };
        let index_id = u8::try_from(r.index_id)
            .map_err(|_| bad(format!("index id {} out of range", r.index_id)))?;
        let base = r.index_base.unwrap_or(0);
        let index_base =
            u8::try_from(base).map_err(|_| bad(format!("index base {base} out of range")))?;
        let row = ApplyRow {
            op,
            space_id: meta.id,
            index_id,
            index_base,
            key: r.key,
            tuple: r.tuple,
            ops: r.ops,
        };
        bytes += row.payload_len();
        out.push(row);
    }
    Ok((engine.unwrap_or(Engine::Memtx), out, bytes))
}

/// Maps snapshot rows (applied as REPLACE), grouped by engine in order.
pub(crate) fn map_snapshot(
    rows: Vec<v1::SnapshotRow>,
    catalog: &Catalog,
) -> Result<Vec<(Engine, ApplyRow)>, MissingSpace> {
    rows.into_iter()
        .map(|r| {
            let meta = catalog
                .by_name(&r.space)
                .ok_or_else(|| MissingSpace(r.space.clone()))?;
            Ok((
                engine_of(&meta.engine),
                ApplyRow::tuple(v1::Op::Replace, meta.id, r.tuple),
            ))
        })
        .collect()
}

/// Whole transactions waiting to be applied as one target transaction.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    engine: Option<Engine>,
    rows: Vec<ApplyRow>,
    bytes: usize,
    transactions: u64,
    vclock: Option<Vclock>,
}

/// A batch ready to apply.
#[derive(Debug)]
pub(crate) struct Ready {
    pub(crate) engine: Engine,
    pub(crate) rows: Vec<ApplyRow>,
    pub(crate) bytes: usize,
    pub(crate) transactions: u64,
    /// Position after the last transaction (`None` for snapshot batches).
    pub(crate) vclock: Option<Vclock>,
}

impl Pending {
    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.transactions == 0
    }

    /// Whether adding `rows`/`bytes` of `engine` must wait for a flush first.
    pub(crate) fn must_flush_before(
        &self,
        engine: Engine,
        rows: usize,
        bytes: usize,
        limits: Batching,
    ) -> bool {
        !self.is_empty()
            && (self.engine != Some(engine)
                || self.rows.len() + rows > limits.max_rows
                || self.bytes + bytes > limits.max_bytes)
    }

    /// Position after the last whole transaction pending.
    pub(crate) fn vclock(&self) -> Option<&Vclock> {
        self.vclock.as_ref()
    }

    /// Whether the batch is full.
    pub(crate) fn full(&self, limits: Batching) -> bool {
        self.rows.len() >= limits.max_rows || self.bytes >= limits.max_bytes
    }

    /// Adds a whole transaction (or snapshot rows, `vclock = None`).
    pub(crate) fn push(
        &mut self,
        engine: Engine,
        rows: Vec<ApplyRow>,
        bytes: usize,
        vclock: Option<Vclock>,
    ) {
        self.engine = Some(engine);
        self.rows.extend(rows);
        self.bytes += bytes;
        if vclock.is_some() {
            self.transactions += 1;
            self.vclock = vclock;
        }
    }

    /// Takes the batch.
    pub(crate) fn take(&mut self) -> Option<Ready> {
        if self.is_empty() {
            return None;
        }
        let p = std::mem::take(self);
        Some(Ready {
            engine: p.engine.unwrap_or(Engine::Memtx),
            rows: p.rows,
            bytes: p.bytes,
            transactions: p.transactions,
            vclock: p.vclock,
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    const LIMITS: Batching = Batching {
        max_rows: 4,
        max_bytes: 100,
    };

    fn rows(n: usize) -> Vec<ApplyRow> {
        (0..n)
            .map(|i| ApplyRow::tuple(v1::Op::Insert, 512, Bytes::from(vec![0x91, i as u8])))
            .collect()
    }

    fn vc(lsn: u64) -> Option<Vclock> {
        Some([(1, lsn)].into_iter().collect())
    }

    fn catalog() -> Catalog {
        let mut c = Catalog::default();
        let space = rmpv::Value::Array(vec![
            512.into(),
            1.into(),
            "test".into(),
            "memtx".into(),
            0.into(),
            rmpv::Value::Map(vec![]),
            rmpv::Value::Array(vec![]),
        ]);
        c.apply_space_tuple(&space).expect("a _space tuple");
        c
    }

    fn source_row(op: i32, index_id: u32, index_base: Option<u32>) -> v1::Row {
        v1::Row {
            op,
            space: "test".into(),
            index_id,
            index_base,
            key: Bytes::from_static(&[0x91, 0x01]),
            tuple: Bytes::from_static(&[0x91, 0x91]),
            ops: Bytes::new(),
        }
    }

    #[test]
    fn rows_no_tarantool_writes_are_refused_by_kind_before_any_apply() {
        let c = catalog();
        let ok = map_rows(vec![source_row(3, 1, Some(1))], &c).expect("an update");
        let (engine, rows, bytes) = ok;
        assert_eq!((engine, rows.len(), bytes), (Engine::Memtx, 1, 4));
        assert_eq!(
            rows.first().map(|r| (r.op, r.index_id, r.index_base)),
            Some((v1::Op::Update, 1, 1))
        );
        for (row, what) in [
            (source_row(0, 0, None), "unknown op 0"),
            (source_row(42, 0, None), "unknown op 42"),
            (source_row(3, 300, None), "index id 300 out of range"),
            (
                source_row(5, 0, Some(70_000)),
                "index base 70000 out of range",
            ),
        ] {
            let rows = vec![source_row(1, 0, None), row];
            match map_rows(rows, &c) {
                Err(MapError::BadRow(e)) => {
                    assert_eq!(
                        e.to_string(),
                        format!("row 1 of the transaction (space 'test'): {what}")
                    );
                }
                other => panic!("{what}: {other:?}"),
            }
        }
        let mut missing = source_row(1, 0, None);
        missing.space = "nope".into();
        assert!(matches!(
            map_rows(vec![missing], &c),
            Err(MapError::Missing(_))
        ));
    }

    #[test]
    fn only_vinyl_spaces_are_applied_as_vinyl() {
        assert_eq!(engine_of("vinyl"), Engine::Vinyl);
        assert_eq!(engine_of("memtx"), Engine::Memtx);
        assert_eq!(engine_of("sysview"), Engine::Memtx);
    }

    #[test]
    fn an_empty_batch_takes_anything_even_past_the_limits() {
        let p = Pending::default();
        assert!(p.is_empty());
        assert!(!p.must_flush_before(Engine::Vinyl, 100, 10_000, LIMITS));
        assert!(!p.full(LIMITS));
    }

    #[test]
    fn another_engine_or_the_limits_flush_first() {
        let mut p = Pending::default();
        p.push(Engine::Memtx, rows(2), 40, vc(1));
        assert!(
            !p.must_flush_before(Engine::Memtx, 2, 60, LIMITS),
            "up to the limits"
        );
        assert!(
            p.must_flush_before(Engine::Vinyl, 1, 1, LIMITS),
            "another engine"
        );
        assert!(
            p.must_flush_before(Engine::Memtx, 3, 1, LIMITS),
            "rows past max_rows"
        );
        assert!(
            p.must_flush_before(Engine::Memtx, 1, 61, LIMITS),
            "bytes past max_bytes"
        );
    }

    #[test]
    fn a_batch_is_full_at_either_limit() {
        let mut p = Pending::default();
        p.push(Engine::Memtx, rows(3), 99, vc(1));
        assert!(!p.full(LIMITS));
        p.push(Engine::Memtx, rows(1), 0, vc(2));
        assert!(p.full(LIMITS), "max_rows reached");
        let mut p = Pending::default();
        p.push(Engine::Memtx, rows(1), 100, vc(1));
        assert!(p.full(LIMITS), "max_bytes reached");
    }

    #[test]
    fn the_batch_carries_the_position_after_its_last_transaction() {
        let mut p = Pending::default();
        p.push(Engine::Vinyl, rows(1), 10, vc(5));
        p.push(Engine::Vinyl, rows(2), 20, vc(7));
        assert_eq!(p.vclock(), vc(7).as_ref());
        let Some(r) = p.take() else { panic!("a batch") };
        assert_eq!(
            (r.engine, r.rows.len(), r.bytes, r.transactions),
            (Engine::Vinyl, 3, 30, 2)
        );
        assert_eq!(r.vclock, vc(7));
        assert!(p.is_empty());
        assert!(p.take().is_none());
    }

    #[test]
    fn snapshot_rows_count_no_transaction_and_no_position() {
        let mut p = Pending::default();
        p.push(Engine::Memtx, rows(2), 10, None);
        assert!(!p.is_empty());
        let Some(r) = p.take() else { panic!("a batch") };
        assert_eq!((r.transactions, r.vclock), (0, None));
        // A transaction without rows (all skipped) still moves the position.
        p.push(Engine::Memtx, Vec::new(), 0, vc(9));
        assert!(!p.is_empty());
        assert_eq!(p.take().map(|r| (r.rows.len(), r.vclock)), Some((0, vc(9))));
    }
}
