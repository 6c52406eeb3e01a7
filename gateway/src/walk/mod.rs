//! Online verification on the source side (`docs/verify.md`).
//!
//! A destination that asks for it sends `WalkStep`s; the [`walker`] turns
//! each into a chunk: a low watermark written on the source master, the
//! chunk's select, a high watermark. The reader (`crate::flow`) sees both
//! watermarks in its stream and, between them, every change of the chunk's
//! space ([`Window`]); at the high watermark it puts the chunk into the
//! stream, without the keys changed in between, where the destination
//! handles it in stream order.
//!
//! The walker and the reader of one stream share a [`Chunks`] registry:
//! the walker registers a chunk (by a random nonce that the watermark rows
//! carry) before writing its low watermark and fills in the selected rows
//! before writing the high one, so the reader always finds them when the
//! high watermark passes by. Watermarks whose nonce is not registered (an
//! earlier run, another gateway) are ignored.

pub(crate) mod walker;

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
};

use bytes::Bytes;
use tcf_iproto::{canon, msgpack::Reader};
use tcf_proto::v1;

/// At most this many keys changed between two watermarks are tracked; past
/// it the chunk is void (retried).
pub(crate) const MAX_TOUCHED: usize = 10_000;
/// Chunks registered at once (the walker has one in flight; a few stale
/// ones may wait for their high watermark that never comes).
const MAX_REGISTERED: usize = 8;

/// A watermark row of `_tcf_watermark`: `{walker, nonce, kind, walk, seq}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Watermark {
    pub(crate) nonce: u64,
    pub(crate) high: bool,
}

impl Watermark {
    /// Reads a watermark tuple; `None` for anything else.
    pub(crate) fn parse(tuple: &[u8]) -> Option<Self> {
        let mut r = Reader::new(tuple);
        if r.read_array_len().ok()? < 3 {
            return None;
        }
        r.skip().ok()?;
        let nonce = r.read_u64().ok()?;
        let high = match r.read_str().ok()? {
            "low" => false,
            "high" => true,
            _ => return None,
        };
        Some(Self { nonce, high })
    }
}

/// What a chunk's select found.
#[derive(Debug, Clone, Default)]
pub(crate) struct Content {
    pub(crate) entries: Vec<v1::ChunkEntry>,
    pub(crate) end: bool,
    pub(crate) last_key: Bytes,
    /// The space cannot be walked, and why.
    pub(crate) skipped: String,
}

/// A chunk the walker started.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) walk: String,
    pub(crate) seq: u64,
    pub(crate) space: String,
    /// 0-based primary key fields of `space`.
    pub(crate) pk: Vec<u32>,
    pub(crate) content: Option<Content>,
}

/// The registry shared by one stream's walker and reader.
#[derive(Debug, Clone, Default)]
pub(crate) struct Chunks(Arc<Mutex<Registry>>);

#[derive(Debug, Default)]
struct Registry {
    by_nonce: HashMap<u64, Pending>,
    order: VecDeque<u64>,
}

impl Chunks {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a chunk before its low watermark is written.
    pub(crate) fn expect(&self, nonce: u64, p: Pending) {
        let mut r = self.lock();
        r.by_nonce.insert(nonce, p);
        r.order.push_back(nonce);
        while r.order.len() > MAX_REGISTERED {
            if let Some(old) = r.order.pop_front() {
                r.by_nonce.remove(&old);
            }
        }
    }

    /// Records what the select found, before the high watermark is written.
    pub(crate) fn fill(&self, nonce: u64, content: Content) {
        if let Some(p) = self.lock().by_nonce.get_mut(&nonce) {
            p.content = Some(content);
        }
    }

    /// Forgets a chunk whose watermarks failed.
    pub(crate) fn forget(&self, nonce: u64) {
        let mut r = self.lock();
        r.by_nonce.remove(&nonce);
        r.order.retain(|n| *n != nonce);
    }

    fn get(&self, nonce: u64) -> Option<Pending> {
        self.lock().by_nonce.get(&nonce).cloned()
    }

    fn take(&self, nonce: u64) -> Option<Pending> {
        let mut r = self.lock();
        r.order.retain(|n| *n != nonce);
        r.by_nonce.remove(&nonce)
    }
}

/// How one changed row touches a key.
#[derive(Debug, Clone)]
struct Touch {
    key: Bytes,
    partial: bool,
}

/// The changes seen between a chunk's watermarks.
#[derive(Debug)]
pub(crate) struct Window {
    nonce: u64,
    origin: u32,
    space: String,
    pk: Vec<u32>,
    touched: HashMap<Vec<u8>, Touch>,
    void: Option<String>,
}

impl Window {
    fn void(&mut self, why: impl Into<String>) {
        if self.void.is_none() {
            self.void = Some(why.into());
            self.touched = HashMap::new();
        }
    }

    fn touch(&mut self, key: Bytes, partial: bool) {
        if self.void.is_some() {
            return;
        }
        let canonical = match canon::canonical(&key) {
            Ok(c) => c,
            Err(e) => return self.void(format!("a changed key cannot be read: {e}")),
        };
        self.touched
            .entry(canonical)
            .and_modify(|t| t.partial &= partial)
            .or_insert(Touch { key, partial });
        if self.touched.len() > MAX_TOUCHED {
            self.void(format!(
                "more than {MAX_TOUCHED} keys changed between the watermarks"
            ));
        }
    }
}

/// The reader's side: watches the windows of its walker's chunks.
#[derive(Debug)]
pub(crate) struct Tracker {
    chunks: Chunks,
    window: Option<Window>,
}

impl Tracker {
    pub(crate) fn new(chunks: Chunks) -> Self {
        Self {
            chunks,
            window: None,
        }
    }

    /// A watermark row of origin `origin`. A high watermark of a registered
    /// chunk returns the chunk to put into the stream.
    pub(crate) fn watermark(&mut self, wm: Watermark, origin: u32) -> Option<v1::Chunk> {
        if !wm.high {
            let p = self.chunks.get(wm.nonce)?;
            self.window = Some(Window {
                nonce: wm.nonce,
                origin,
                space: p.space,
                pk: p.pk,
                touched: HashMap::new(),
                void: None,
            });
            return None;
        }
        let p = self.chunks.take(wm.nonce)?;
        let window = self.window.take_if(|w| w.nonce == wm.nonce);
        let mut chunk = v1::Chunk {
            walk: p.walk,
            seq: p.seq,
            space: p.space,
            ..v1::Chunk::default()
        };
        let void = match (&window, &p.content) {
            (None, _) => Some("the low watermark was not seen in this subscription".to_owned()),
            (_, None) => Some("the chunk's rows were not recorded".to_owned()),
            (Some(w), _) if w.origin != origin => {
                Some("the watermarks were written by different instances".to_owned())
            }
            (Some(w), _) => w.void.clone(),
        };
        if let Some(why) = void {
            chunk.void = true;
            chunk.void_reason = why;
            return Some(chunk);
        }
        if let (Some(w), Some(c)) = (window, p.content) {
            chunk.entries = c.entries;
            chunk.end = c.end;
            chunk.last_key = c.last_key;
            chunk.skipped = c.skipped;
            chunk.dropped = w
                .touched
                .into_values()
                .map(|t| v1::DroppedKey {
                    key: t.key,
                    partial: t.partial,
                })
                .collect();
        }
        Some(chunk)
    }

    /// A shipped row of origin `origin`: a change of the window's space
    /// drops its key from the chunk.
    pub(crate) fn data(&mut self, row: &v1::Row, origin: u32) {
        let Some(w) = self.window.as_mut() else {
            return;
        };
        if origin != w.origin {
            return w.void("rows of another instance between the watermarks");
        }
        if row.space != w.space {
            return;
        }
        use v1::Op;
        match row.op() {
            Op::Insert | Op::Replace | Op::Upsert => match canon::key_of(&row.tuple, &w.pk) {
                Ok(k) => w.touch(Bytes::from(k), row.op() == Op::Upsert),
                Err(e) => w.void(format!("a changed row's key cannot be read: {e}")),
            },
            Op::Delete | Op::Update if row.index_id == 0 => {
                w.touch(row.key.clone(), row.op() == Op::Update);
            }
            Op::Delete | Op::Update => w.void("a change by a secondary key between the watermarks"),
            Op::Truncate => w.void("a truncate between the watermarks"),
            Op::Unspecified => w.void("an unknown change between the watermarks"),
        }
    }

    /// A schema change: the open window is void.
    pub(crate) fn schema_change(&mut self) {
        if let Some(w) = self.window.as_mut() {
            w.void("a schema change between the watermarks");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcf_iproto::msgpack::write;

    fn wm(nonce: u64, kind: &str) -> Vec<u8> {
        let mut t = Vec::new();
        write::array_len(&mut t, 5);
        write::str(&mut t, "gw");
        write::uint(&mut t, nonce);
        write::str(&mut t, kind);
        write::str(&mut t, "w1");
        write::uint(&mut t, 3);
        t
    }

    fn pending() -> Pending {
        Pending {
            walk: "w1".into(),
            seq: 3,
            space: "test".into(),
            pk: vec![0],
            content: None,
        }
    }

    fn row(op: v1::Op, space: &str, key: &[u8], tuple: &[u8]) -> v1::Row {
        v1::Row {
            op: op as i32,
            space: space.into(),
            key: Bytes::copy_from_slice(key),
            tuple: Bytes::copy_from_slice(tuple),
            ..v1::Row::default()
        }
    }

    #[test]
    fn watermark_rows_parse() {
        assert_eq!(
            Watermark::parse(&wm(7, "high")),
            Some(Watermark {
                nonce: 7,
                high: true
            })
        );
        assert_eq!(Watermark::parse(&wm(7, "middle")), None);
        assert_eq!(Watermark::parse(&[0x91, 0x01]), None);
    }

    #[test]
    fn keys_changed_between_the_watermarks_are_dropped() {
        let chunks = Chunks::default();
        let mut t = Tracker::new(chunks.clone());
        chunks.expect(7, pending());
        assert!(
            t.watermark(
                Watermark {
                    nonce: 7,
                    high: false
                },
                1
            )
            .is_none()
        );
        // [1, 'a'] replaced; key [2] updated; key [3] updated then replaced;
        // another space's row is ignored.
        t.data(
            &row(v1::Op::Replace, "test", &[], &[0x92, 0x01, 0xa1, b'a']),
            1,
        );
        t.data(&row(v1::Op::Update, "test", &[0x91, 0x02], &[]), 1);
        t.data(&row(v1::Op::Update, "test", &[0x91, 0xcc, 0x03], &[]), 1);
        t.data(&row(v1::Op::Replace, "test", &[], &[0x91, 0x03]), 1);
        t.data(&row(v1::Op::Replace, "other", &[], &[0x91, 0x09]), 1);
        chunks.fill(
            7,
            Content {
                end: true,
                ..Content::default()
            },
        );
        let c = t
            .watermark(
                Watermark {
                    nonce: 7,
                    high: true,
                },
                1,
            )
            .unwrap();
        assert!(!c.void, "{c:?}");
        assert!(c.end);
        let mut d: Vec<(Vec<u8>, bool)> = c
            .dropped
            .iter()
            .map(|k| (canon::canonical(&k.key).unwrap(), k.partial))
            .collect();
        d.sort();
        assert_eq!(
            d,
            vec![
                (vec![0x91, 0x01], false),
                (vec![0x91, 0x02], true),
                (vec![0x91, 0x03], false)
            ]
        );
        // Consumed: a second high watermark with the nonce is not ours.
        assert!(
            t.watermark(
                Watermark {
                    nonce: 7,
                    high: true
                },
                1
            )
            .is_none()
        );
    }

    #[test]
    fn unseen_low_watermarks_truncates_and_other_origins_void_the_chunk() {
        let chunks = Chunks::default();
        let mut t = Tracker::new(chunks.clone());
        chunks.expect(1, pending());
        chunks.fill(1, Content::default());
        let c = t
            .watermark(
                Watermark {
                    nonce: 1,
                    high: true,
                },
                1,
            )
            .unwrap();
        assert!(c.void && c.void_reason.contains("low watermark"));

        for (r, origin) in [
            (row(v1::Op::Truncate, "test", &[], &[]), 1),
            (row(v1::Op::Replace, "other", &[], &[0x91, 0x01]), 2),
            (row(v1::Op::Delete, "test", &[0x91, 0x01], &[]), 1),
        ] {
            chunks.expect(2, pending());
            t.watermark(
                Watermark {
                    nonce: 2,
                    high: false,
                },
                1,
            );
            let mut r = r;
            if r.op() == v1::Op::Delete {
                r.index_id = 1;
            }
            t.data(&r, origin);
            chunks.fill(2, Content::default());
            let c = t
                .watermark(
                    Watermark {
                        nonce: 2,
                        high: true,
                    },
                    1,
                )
                .unwrap();
            assert!(c.void, "{r:?}");
        }
        // Unknown nonces are someone else's.
        assert!(
            t.watermark(
                Watermark {
                    nonce: 99,
                    high: false
                },
                1
            )
            .is_none()
        );
        assert!(
            t.watermark(
                Watermark {
                    nonce: 99,
                    high: true
                },
                1
            )
            .is_none()
        );
    }
}
