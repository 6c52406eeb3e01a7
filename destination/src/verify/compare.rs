//! One chunk against the target: the target's rows of the chunk's range
//! (or keys) are read from its master and compared, key by key, with the
//! source's, leaving out the keys the gateway dropped (changed between the
//! chunk's watermarks). Nothing is written here: the outcome (counters,
//! mismatching keys, repairs, the walk's next step) is committed by one
//! call with the position (`tcf_verify_v1_chunk`).

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use rmpv::Value;
use tcf_api::verify::{MismatchKind, WalkMode};
use tcf_iproto::{Connection, Raw, Select, canon, msgpack::Reader, request::Iterator};
use tcf_proto::v1;

use super::walk::{Advance, Walk, to_hex};
use crate::{packed::ApplyRow, target::Engine};

/// Rows of the target read per select while scanning a range.
const PAGE: u32 = 1000;

/// What a chunk found.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) chunks: u64,
    pub(crate) compared: u64,
    pub(crate) missing: u64,
    pub(crate) extra: u64,
    pub(crate) different: u64,
    pub(crate) voided: u64,
    pub(crate) skipped: Option<String>,
    /// `(raw key, kind)` of each mismatch.
    pub(crate) keys: Vec<(Vec<u8>, MismatchKind)>,
    /// Repairs (repair walks).
    pub(crate) ops: Vec<ApplyRow>,
    pub(crate) advance: Option<Advance>,
    /// The engine of the transaction that records it.
    pub(crate) engine: Engine,
}

/// Why a chunk could not be compared (the session ends and retries).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CompareError {
    #[error("reading the target: {0}")]
    Target(#[from] tcf_iproto::Error),
    #[error("malformed row: {0}")]
    Row(String),
}

fn bad(e: impl std::fmt::Display) -> CompareError {
    CompareError::Row(e.to_string())
}

fn tuples(a: &tcf_iproto::Response) -> Result<Vec<Bytes>, CompareError> {
    let data = a.data()?;
    let mut r = Reader::new(data);
    let n = r.read_array_len().map_err(bad)?;
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let t = r.skip().map_err(bad)?;
        out.push(a.body.slice_ref(t));
    }
    Ok(out)
}

struct Side<'a> {
    entries: &'a [v1::ChunkEntry],
    index: HashMap<Vec<u8>, usize>,
    seen: Vec<bool>,
}

/// Compares chunk `c` of `walk` with the target's rows of space `space_id`
/// (primary key `pk`, engine `engine`).
pub(crate) async fn compare(
    conn: &Connection,
    walk: &Walk,
    c: &v1::Chunk,
    space_id: u32,
    pk: &[u32],
    engine: Engine,
) -> Result<Outcome, CompareError> {
    let repair = walk.mode == WalkMode::Repair;
    let mut out = Outcome {
        chunks: 1,
        engine: if repair { engine } else { Engine::Memtx },
        ..Outcome::default()
    };
    if c.void {
        out.voided = 1;
        out.advance = Some(Advance::Void);
        return Ok(out);
    }
    if !c.skipped.is_empty() {
        out.skipped = Some(c.skipped.clone());
        out.advance = Some(Advance::Skipped);
        return Ok(out);
    }
    let mut dropped = HashSet::new();
    let mut partial = Vec::new();
    for d in &c.dropped {
        dropped.insert(canon::canonical(&d.key).map_err(bad)?);
        if d.partial {
            partial.push(d.key.to_vec());
        }
    }
    let mut a = Side {
        entries: &c.entries,
        index: HashMap::new(),
        seen: vec![false; c.entries.len()],
    };
    for (i, e) in c.entries.iter().enumerate() {
        a.index.insert(canon::canonical(&e.key).map_err(bad)?, i);
    }
    if walk.keys_step() {
        for (i, e) in c.entries.iter().enumerate() {
            let k = canon::canonical(&e.key).map_err(bad)?;
            if dropped.contains(&k) {
                continue;
            }
            let opts = Select {
                iterator: Iterator::Eq,
                limit: 1,
                ..Select::default()
            };
            let b = tuples(&conn.select(space_id, &Raw(&e.key), opts).await?)?;
            match b.first() {
                Some(t) => one(&mut out, &mut a, t, &k, pk, space_id, repair)?,
                None if e.absent => {
                    out.compared += 1;
                    if let Some(s) = a.seen.get_mut(i) {
                        *s = true;
                    }
                }
                None => {}
            }
        }
        missing(&mut out, &a, &dropped, space_id, repair)?;
        out.advance = Some(Advance::Keys { partial });
        return Ok(out);
    }
    // The target's rows after `after` up to the source's last key: the
    // scan stops at the target's first key past it.
    let stop = if c.end {
        None
    } else {
        let opts = Select {
            iterator: Iterator::Gt,
            limit: 1,
            ..Select::default()
        };
        let next = tuples(&conn.select(space_id, &Raw(&c.last_key), opts).await?)?;
        match next.first() {
            Some(t) => Some(canon::canonical(&canon::key_of(t, pk).map_err(bad)?).map_err(bad)?),
            None => None,
        }
    };
    let mut cursor: Vec<u8> = walk.after.clone();
    'scan: loop {
        let opts = Select {
            iterator: if cursor.is_empty() {
                Iterator::All
            } else {
                Iterator::Gt
            },
            limit: PAGE,
            ..Select::default()
        };
        let page = if cursor.is_empty() {
            tuples(&conn.select(space_id, &Vec::<Value>::new(), opts).await?)?
        } else {
            tuples(&conn.select(space_id, &Raw(&cursor), opts).await?)?
        };
        for t in &page {
            let raw_key = canon::key_of(t, pk).map_err(bad)?;
            let k = canon::canonical(&raw_key).map_err(bad)?;
            if stop.as_ref() == Some(&k) {
                break 'scan;
            }
            if !dropped.contains(&k) {
                one(&mut out, &mut a, t, &k, pk, space_id, repair)?;
            }
            cursor = raw_key;
        }
        if page.len() < PAGE as usize {
            break;
        }
    }
    missing(&mut out, &a, &dropped, space_id, repair)?;
    out.advance = Some(Advance::Range {
        end: c.end,
        last_key: c.last_key.to_vec(),
        partial,
    });
    Ok(out)
}

/// One target row `t` (canonical key `k`) against the source's.
fn one(
    out: &mut Outcome,
    a: &mut Side<'_>,
    t: &Bytes,
    k: &[u8],
    pk: &[u32],
    space_id: u32,
    repair: bool,
) -> Result<(), CompareError> {
    out.compared += 1;
    let present = a
        .index
        .get(k)
        .copied()
        .filter(|i| a.entries.get(*i).is_some_and(|e| !e.absent));
    match present.and_then(|i| a.entries.get(i).map(|e| (i, e))) {
        Some((i, e)) => {
            if let Some(s) = a.seen.get_mut(i) {
                *s = true;
            }
            if canon::hash(t).map_err(bad)? != e.hash {
                out.different += 1;
                out.keys.push((e.key.to_vec(), MismatchKind::Different));
                if repair {
                    out.ops.push(replace(space_id, e)?);
                }
            }
        }
        None => {
            if let Some(i) = a.index.get(k)
                && let Some(s) = a.seen.get_mut(*i)
            {
                *s = true;
            }
            let key = canon::key_of(t, pk).map_err(bad)?;
            out.extra += 1;
            out.keys.push((key.clone(), MismatchKind::Extra));
            if repair {
                out.ops.push(ApplyRow {
                    key: key.into(),
                    ..ApplyRow::tuple(v1::Op::Delete, space_id, Bytes::new())
                });
            }
        }
    }
    Ok(())
}

/// The source's rows the target did not have.
fn missing(
    out: &mut Outcome,
    a: &Side<'_>,
    dropped: &HashSet<Vec<u8>>,
    space_id: u32,
    repair: bool,
) -> Result<(), CompareError> {
    for (i, e) in a.entries.iter().enumerate() {
        if e.absent || a.seen.get(i).copied().unwrap_or(true) {
            continue;
        }
        if dropped.contains(&canon::canonical(&e.key).map_err(bad)?) {
            continue;
        }
        out.compared += 1;
        out.missing += 1;
        out.keys.push((e.key.to_vec(), MismatchKind::Missing));
        if repair {
            out.ops.push(replace(space_id, e)?);
        }
    }
    Ok(())
}

fn replace(space_id: u32, e: &v1::ChunkEntry) -> Result<ApplyRow, CompareError> {
    if e.tuple.is_empty() {
        return Err(CompareError::Row(
            "a repair chunk without the source's row".into(),
        ));
    }
    Ok(ApplyRow::tuple(v1::Op::Replace, space_id, e.tuple.clone()))
}

/// Hex of a key's canonical form: its row key in the verification spaces.
pub(crate) fn key_id(raw: &[u8]) -> String {
    canon::canonical(raw).map_or_else(|_| to_hex(raw), |c| to_hex(&c))
}
