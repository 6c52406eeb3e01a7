//! What to do with each WAL row: ship it (mapped to a space name), skip it
//! (and say why), or act on it (catalog changes, synchronous confirmations).

use tcf_iproto::{DmlKind, Row, RowKind, Synchro};
use tcf_proto::v1;

use tcf_iproto::schema::{Catalog, INDEX_SPACE, SPACE_SPACE, WATERMARK_SPACE, decode};

use crate::walk::Watermark;

/// `_truncate`: a truncate is an UPSERT of `[space_id, count]` into it.
const TRUNCATE_SPACE: u32 = 330;
/// System spaces whose rows are schema changes (DDL) rather than access control.
const DDL_SPACES: [u32; 7] = [272, 280, 284, 285, 288, 296, 340];

/// Why a row is not shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SkipKind {
    /// NOP, or synchro rows as data.
    Nop,
    /// Schema change: logged and counted, applied by operators on both sides.
    Ddl,
    /// Users, grants (the fence), cluster membership and other system rows.
    System,
    /// Replication-local, temporary or tcf-local spaces.
    Local,
}

impl SkipKind {
    /// Metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Nop => "nop",
            Self::Ddl => "ddl",
            Self::System => "system",
            Self::Local => "local",
        }
    }
}

/// The fate of one row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RowOutcome {
    /// A replicated change; `sync` when its space is synchronous.
    Data { row: v1::Row, sync: bool },
    /// A write to a global progress space: the whole transaction was applied
    /// by a tcf destination and must not travel back (loop breaker).
    Mark,
    /// A verification watermark (`_tcf_watermark`); never shipped as data.
    Watermark(Watermark),
    /// Not shipped.
    Skip(SkipKind),
    /// Synchronous transactions of `replica_id` up to `lsn` are confirmed.
    Confirm(Synchro),
    /// Synchronous transactions of `replica_id` from `lsn` on are rolled back.
    Rollback(Synchro),
    /// PROMOTE or DEMOTE: the old owner's (`replica_id`) queue is confirmed
    /// up to `lsn`, the rest rolled back.
    Promote(Synchro),
}

/// A row that cannot be classified.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClassifyError {
    /// A user-space row whose space id is unknown (reload the catalog, retry).
    #[error("row for unknown space id {0}")]
    UnknownSpace(u32),
    /// A body or schema row that could not be read.
    #[error("malformed row: {0}")]
    Malformed(String),
    /// `_space` changed in a way that needs the catalog re-read.
    #[error("space definition changed")]
    Reload,
}

/// Classifies `row`, updating `catalog` for `_space`/`_index` rows.
pub(crate) fn classify(row: &Row, catalog: &mut Catalog) -> Result<RowOutcome, ClassifyError> {
    let dml = match row.kind() {
        RowKind::Dml(kind) => kind,
        RowKind::Nop | RowKind::Other(_) => {
            return Ok(RowOutcome::Skip(SkipKind::Nop));
        }
        RowKind::Confirm => return synchro(row).map(RowOutcome::Confirm),
        RowKind::Rollback => return synchro(row).map(RowOutcome::Rollback),
        // DEMOTE settles the old owner's queue as PROMOTE does
        // (`txn_limbo_read_demote` is `read_promote` with no new owner).
        RowKind::Promote | RowKind::Demote => return synchro(row).map(RowOutcome::Promote),
    };
    let f = row
        .fields()
        .map_err(|e| ClassifyError::Malformed(e.to_string()))?;
    if f.space_id >= tcf_iproto::consts::USER_SPACE_MIN {
        let meta = catalog
            .get(f.space_id)
            .ok_or(ClassifyError::UnknownSpace(f.space_id))?;
        if meta.name == WATERMARK_SPACE {
            return Ok(match f.tuple.as_deref().and_then(Watermark::parse) {
                Some(w) => RowOutcome::Watermark(w),
                None => RowOutcome::Skip(SkipKind::Local),
            });
        }
        if meta.is_progress_mark() {
            return Ok(RowOutcome::Mark);
        }
        if !meta.is_replicated() {
            return Ok(RowOutcome::Skip(SkipKind::Local));
        }
        let row = v1::Row {
            op: op(dml) as i32,
            space: meta.name.clone(),
            index_id: f.index_id,
            index_base: f.index_base,
            key: f.key.unwrap_or_default(),
            tuple: f.tuple.unwrap_or_default(),
            ops: f.ops.unwrap_or_default(),
        };
        return Ok(RowOutcome::Data {
            row,
            sync: meta.is_sync,
        });
    }
    match f.space_id {
        TRUNCATE_SPACE => truncate(dml, f.tuple.as_ref(), catalog),
        SPACE_SPACE => {
            match (
                dml,
                f.tuple.as_ref().and_then(decode),
                f.key.as_ref().and_then(decode),
            ) {
                (DmlKind::Insert | DmlKind::Replace, Some(t), _) => {
                    catalog
                        .apply_space_tuple(&t)
                        .map_err(|e| ClassifyError::Malformed(e.to_string()))?
                }
                (DmlKind::Delete, _, Some(k)) => {
                    let id = k
                        .as_array()
                        .and_then(|k| k.first())
                        .and_then(rmpv::Value::as_u64);
                    if let Some(id) = id.and_then(|id| u32::try_from(id).ok()) {
                        catalog.remove(id);
                    }
                }
                _ => return Err(ClassifyError::Reload),
            }
            Ok(RowOutcome::Skip(SkipKind::Ddl))
        }
        INDEX_SPACE => {
            if let (DmlKind::Insert | DmlKind::Replace, Some(t)) =
                (dml, f.tuple.as_ref().and_then(decode))
            {
                catalog
                    .apply_index_tuple(&t)
                    .map_err(|e| ClassifyError::Malformed(e.to_string()))?;
            }
            Ok(RowOutcome::Skip(SkipKind::Ddl))
        }
        id if DDL_SPACES.contains(&id) => Ok(RowOutcome::Skip(SkipKind::Ddl)),
        _ => Ok(RowOutcome::Skip(SkipKind::System)),
    }
}

/// `UPSERT _truncate [space_id, n]` (or INSERT/REPLACE) truncates a space.
fn truncate(
    dml: DmlKind,
    tuple: Option<&bytes::Bytes>,
    catalog: &Catalog,
) -> Result<RowOutcome, ClassifyError> {
    if !matches!(dml, DmlKind::Upsert | DmlKind::Insert | DmlKind::Replace) {
        return Ok(RowOutcome::Skip(SkipKind::Ddl));
    }
    let id = tuple
        .and_then(decode)
        .and_then(|t| {
            t.as_array()
                .and_then(|a| a.first())
                .and_then(rmpv::Value::as_u64)
        })
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| ClassifyError::Malformed("_truncate row without a space id".into()))?;
    if id < tcf_iproto::consts::USER_SPACE_MIN {
        return Ok(RowOutcome::Skip(SkipKind::System));
    }
    let meta = catalog.get(id).ok_or(ClassifyError::UnknownSpace(id))?;
    if !meta.is_replicated() {
        return Ok(RowOutcome::Skip(SkipKind::Local));
    }
    let row = v1::Row {
        op: v1::Op::Truncate as i32,
        space: meta.name.clone(),
        ..v1::Row::default()
    };
    Ok(RowOutcome::Data {
        row,
        sync: meta.is_sync,
    })
}

fn synchro(row: &Row) -> Result<Synchro, ClassifyError> {
    row.synchro()
        .map_err(|e| ClassifyError::Malformed(e.to_string()))
}

fn op(kind: DmlKind) -> v1::Op {
    match kind {
        DmlKind::Insert => v1::Op::Insert,
        DmlKind::Replace => v1::Op::Replace,
        DmlKind::Update => v1::Op::Update,
        DmlKind::Delete => v1::Op::Delete,
        DmlKind::Upsert => v1::Op::Upsert,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tcf_iproto::{Header, consts::request, msgpack::write};

    use super::*;

    fn insert(space_id: u32, tuple: &rmpv::Value) -> Row {
        let mut body = Vec::new();
        write::map_len(&mut body, 2);
        write::uint(&mut body, 0x10);
        write::uint(&mut body, u64::from(space_id));
        write::uint(&mut body, 0x21);
        write::value(&mut body, tuple);
        Row {
            header: Header {
                request_type: request::INSERT,
                replica_id: 1,
                lsn: 10,
                ..Header::default()
            },
            body: Bytes::from(body),
        }
    }

    fn synchro_row(request_type: u32) -> Row {
        let mut body = Vec::new();
        write::map_len(&mut body, 3);
        for (k, v) in [(0x02u64, 1u64), (0x03, 7), (0x53, 2)] {
            write::uint(&mut body, k);
            write::uint(&mut body, v);
        }
        Row {
            header: Header {
                request_type,
                replica_id: 1,
                lsn: 11,
                ..Header::default()
            },
            body: Bytes::from(body),
        }
    }

    #[test]
    fn system_rows_never_ship() {
        let mut c = Catalog::default();
        let t = rmpv::Value::Array(vec!["x".into()]);
        // `_gc_consumers` (3.3, replication-local), `_recovery_point` (3.8,
        // global), `_cluster`, `_user`, `_priv`: never data for the target.
        for id in [388, 396, 320, 304, 312] {
            assert_eq!(
                classify(&insert(id, &t), &mut c).unwrap(),
                RowOutcome::Skip(SkipKind::System),
                "space {id}"
            );
        }
        // `_schema`, `_sequence`, `_func`: schema changes.
        for id in [272, 284, 296] {
            assert_eq!(
                classify(&insert(id, &t), &mut c).unwrap(),
                RowOutcome::Skip(SkipKind::Ddl),
                "space {id}"
            );
        }
        assert!(matches!(
            classify(&insert(600, &t), &mut c),
            Err(ClassifyError::UnknownSpace(600))
        ));
    }

    #[test]
    fn demote_settles_the_queue_like_promote() {
        let mut c = Catalog::default();
        let s = Synchro {
            replica_id: 1,
            lsn: 7,
            term: 2,
        };
        for t in [request::RAFT_PROMOTE, request::RAFT_DEMOTE] {
            assert_eq!(
                classify(&synchro_row(t), &mut c).unwrap(),
                RowOutcome::Promote(s)
            );
        }
        assert_eq!(
            classify(&synchro_row(request::CONFIRM), &mut c).unwrap(),
            RowOutcome::Confirm(s)
        );
    }
}
