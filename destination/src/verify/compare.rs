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
    for d in &c.dropped {
        dropped.insert(canon::canonical(&d.key).map_err(bad)?);
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
        let partial = Covered::keys_step(walk)?.retry(c)?;
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
    let mut covered = Covered::range(c)?;
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
            if dropped.contains(&k) {
                covered.add(k);
            } else {
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
        partial: covered.retry(c)?,
    });
    Ok(out)
}

/// The canonical keys a chunk's selection covers: only those of its
/// dropped keys are checked again.
///
/// The gateway drops every key of the space changed between the
/// watermarks, inside the chunk's selection or not. A partial key outside
/// it is not this chunk's to check: a key of an earlier range was compared
/// (or is being retried) already, one of a later range is compared with
/// that range, and a key changed during a key retry that was not asked for
/// was compared before. Retrying it would compare it again (and report a
/// mismatch once per comparison).
#[derive(Debug, Default)]
struct Covered(HashSet<Vec<u8>>);

impl Covered {
    /// A key retry covers the keys it asked for.
    fn keys_step(walk: &Walk) -> Result<Self, CompareError> {
        walk.pending
            .iter()
            .map(|k| canon::canonical(k).map_err(bad))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// A range covers the source's keys the chunk selected; the target's
    /// keys of the same range (a key only the target has, or one the source
    /// created between the watermarks) are [`Covered::add`]ed by the scan.
    fn range(c: &v1::Chunk) -> Result<Self, CompareError> {
        c.entries
            .iter()
            .map(|e| canon::canonical(&e.key).map_err(bad))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// A target key (canonical) the scan met inside the range.
    fn add(&mut self, canonical: Vec<u8>) {
        self.0.insert(canonical);
    }

    /// The partial dropped keys of `c` (raw) inside the selection: the keys
    /// the next step checks again.
    fn retry(&self, c: &v1::Chunk) -> Result<Vec<Vec<u8>>, CompareError> {
        let mut keys = Vec::new();
        for d in c.dropped.iter().filter(|d| d.partial) {
            if self.0.contains(&canon::canonical(&d.key).map_err(bad)?) {
                keys.push(d.key.to_vec());
            }
        }
        Ok(keys)
    }
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

#[cfg(test)]
mod tests {
    use tcf_api::verify::WalkReason;

    use super::*;

    fn key(n: u8) -> Bytes {
        Bytes::from(vec![0x91, n])
    }

    fn chunk(entries: &[u8], dropped: &[(u8, bool)], end: bool) -> v1::Chunk {
        v1::Chunk {
            entries: entries
                .iter()
                .map(|n| v1::ChunkEntry {
                    key: key(*n),
                    hash: u64::from(*n),
                    ..v1::ChunkEntry::default()
                })
                .collect(),
            dropped: dropped
                .iter()
                .map(|(n, partial)| v1::DroppedKey {
                    key: key(*n),
                    partial: *partial,
                })
                .collect(),
            end,
            last_key: if end {
                Bytes::new()
            } else {
                entries.last().map(|n| key(*n)).unwrap_or_default()
            },
            ..v1::Chunk::default()
        }
    }

    fn walk() -> Walk {
        Walk::new(
            "w".into(),
            WalkMode::Verify,
            WalkReason::Requested,
            vec!["counters".into(), "test".into()],
            50,
            0,
        )
    }

    fn keys(ns: &[u8]) -> Vec<Vec<u8>> {
        ns.iter().map(|n| key(*n).to_vec()).collect()
    }

    #[test]
    fn a_key_retry_checks_again_only_the_keys_it_asked_for() {
        let mut w = walk();
        w.pending = keys(&[5, 6]);
        // 5 updated again, 6 replaced (the stream carries it), 3 updated
        // though it was not asked for.
        let c = chunk(&[5, 6], &[(5, true), (6, false), (3, true)], false);
        let retry = Covered::keys_step(&w).and_then(|k| k.retry(&c));
        assert_eq!(retry.ok(), Some(keys(&[5])));
    }

    #[test]
    fn a_range_checks_again_only_the_partial_keys_inside_it() {
        // The range (2, 5]: the source selected 3, 4, 5; the target also has
        // 4 (a key the scan met). 1 lies before it, 9 after it.
        let c = chunk(
            &[3, 4, 5],
            &[(1, true), (3, true), (4, false), (9, true)],
            false,
        );
        let mut covered = Covered::range(&c).unwrap_or_default();
        covered.add(key(4).to_vec());
        assert_eq!(covered.retry(&c).ok(), Some(keys(&[3])));
        // A key only the target has (or the source created by an UPSERT
        // between the watermarks) is inside the range when the scan met it.
        let c = chunk(&[3, 5], &[(4, true), (9, true)], false);
        let mut covered = Covered::range(&c).unwrap_or_default();
        assert_eq!(covered.retry(&c).ok(), Some(Vec::new()));
        covered.add(key(4).to_vec());
        assert_eq!(covered.retry(&c).ok(), Some(keys(&[4])));
    }

    /// The walk of `verify_corruption.rs`: a space of 10 counters in one
    /// range while a workload updates them; key 3 is compared by the range.
    /// The counters changed during the key retries that follow (3 among
    /// them) are not the retries' to check: key 3 is never compared again,
    /// and the walk goes on to the next space.
    #[test]
    fn a_key_compared_once_is_not_retried_because_it_changed_later() {
        let mut w = walk();
        let mut compared: Vec<Vec<u8>> = Vec::new();
        let mut step = |w: &mut Walk, c: &v1::Chunk| {
            let dropped: HashSet<Vec<u8>> = c
                .dropped
                .iter()
                .filter_map(|d| canon::canonical(&d.key).ok())
                .collect();
            compared.extend(
                c.entries
                    .iter()
                    .filter(|e| canon::canonical(&e.key).is_ok_and(|k| !dropped.contains(&k)))
                    .map(|e| e.key.to_vec()),
            );
            let advance = if w.keys_step() {
                Advance::Keys {
                    partial: Covered::keys_step(w)
                        .and_then(|k| k.retry(c))
                        .unwrap_or_default(),
                }
            } else {
                Advance::Range {
                    end: c.end,
                    last_key: c.last_key.to_vec(),
                    partial: Covered::range(c)
                        .and_then(|k| k.retry(c))
                        .unwrap_or_default(),
                }
            };
            w.advance(&advance);
        };
        let all: Vec<u8> = (1..=10).collect();
        step(&mut w, &chunk(&all, &[(7, true)], true));
        assert_eq!(w.pending, keys(&[7]));
        // The retry of 7: 7 changed again, and so did 3.
        step(&mut w, &chunk(&[7], &[(7, true), (3, true)], false));
        assert_eq!(w.pending, keys(&[7]), "only 7 is checked again");
        // 7 unchanged this time; 3 and 8 changed meanwhile.
        step(&mut w, &chunk(&[7], &[(3, true), (8, true)], false));
        assert!(!w.keys_step(), "{:?}", w.pending);
        assert_eq!(w.space(), Some("test"));
        let mut once = compared.clone();
        once.sort();
        once.dedup();
        assert_eq!(
            compared.len(),
            once.len(),
            "a key compared twice: {compared:?}"
        );
        assert_eq!(once, keys(&all));
    }
}
