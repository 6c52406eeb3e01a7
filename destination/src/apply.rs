//! From stream messages to target transactions: source rows mapped to target
//! space ids, whole source transactions coalesced into batches of one engine.

use bytes::Bytes;
use tcf_iproto::{Vclock, schema::Catalog};
use tcf_proto::v1;

use crate::{
    config::Batching,
    target::{ApplyRow, Engine},
};

/// A row names a space the target does not have.
#[derive(Debug, thiserror::Error)]
#[error("the target has no space '{0}'")]
pub(crate) struct MissingSpace(pub(crate) String);

/// A source transaction touching both engines (cannot happen on a sound
/// source: Tarantool refuses it there too).
#[derive(Debug, thiserror::Error)]
#[error("a source transaction touches memtx and vinyl spaces")]
pub(crate) struct CrossEngine;

/// Why a transaction cannot be mapped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MapError {
    #[error(transparent)]
    Missing(#[from] MissingSpace),
    #[error(transparent)]
    CrossEngine(#[from] CrossEngine),
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
    for r in rows {
        let meta = catalog
            .by_name(&r.space)
            .ok_or_else(|| MissingSpace(r.space.clone()))?;
        let e = engine_of(&meta.engine);
        if *engine.get_or_insert(e) != e {
            return Err(CrossEngine.into());
        }
        bytes += r.key.len() + r.tuple.len() + r.ops.len();
        out.push(ApplyRow {
            op: r.op,
            space_id: meta.id,
            index_id: r.index_id,
            index_base: r.index_base.unwrap_or(0),
            key: r.key,
            tuple: r.tuple,
            ops: r.ops,
        });
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
                ApplyRow {
                    op: v1::Op::Replace as i32,
                    space_id: meta.id,
                    index_id: 0,
                    index_base: 0,
                    key: Bytes::new(),
                    tuple: r.tuple,
                    ops: Bytes::new(),
                },
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
