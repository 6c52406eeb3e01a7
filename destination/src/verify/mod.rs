//! Online verification and repair on the target side (`docs/verify.md`).
//!
//! The destination keeps each replicaset's walk on the target
//! (`destination/lua/tcf_verify_v1.lua`): the request, the next step, the
//! counters and the mismatching keys, every chunk's outcome committed in
//! the same target transaction as the position (compare-and-set), so a
//! chunk counts (and repairs) exactly once whatever restarts. It asks the
//! gateway for one chunk at a time (`WalkStep`), compares what arrives in
//! stream order ([`compare`]), and serves the report.

pub(crate) mod compare;
pub(crate) mod walk;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
};

use rmpv::Value;
use tcf_api::{
    progress::VerifyRow,
    replicator::WalkSummary,
    verify::{MismatchKey, MismatchKind, REPORT_KEYS_CAP, SpaceReport, WalkReport, WalkRequest},
};
use tokio::sync::{mpsc, oneshot};

use self::walk::{Walk, unhex};

/// A request to start a walk, for one replicaset's loop.
#[derive(Debug)]
pub(crate) struct Order {
    pub(crate) id: String,
    pub(crate) request: WalkRequest,
    /// `Err` says why this replicaset did not start it.
    pub(crate) reply: oneshot::Sender<Result<(), String>>,
}

/// The order mailboxes of every replicaset (their receivers outlive the
/// sessions: a loop holds its own while it runs).
#[derive(Debug, Default)]
pub(crate) struct Mailboxes {
    senders: BTreeMap<String, mpsc::Sender<Order>>,
    receivers: BTreeMap<String, Arc<tokio::sync::Mutex<mpsc::Receiver<Order>>>>,
}

impl Mailboxes {
    /// One mailbox per replicaset label.
    pub(crate) fn new<'a>(labels: impl IntoIterator<Item = &'a String>) -> Self {
        let mut m = Self::default();
        for rs in labels {
            let (tx, rx) = mpsc::channel(4);
            m.senders.insert(rs.clone(), tx);
            m.receivers
                .insert(rs.clone(), Arc::new(tokio::sync::Mutex::new(rx)));
        }
        m
    }

    /// The sender of every replicaset.
    pub(crate) fn senders(&self) -> &BTreeMap<String, mpsc::Sender<Order>> {
        &self.senders
    }

    /// The receiver of `rs`.
    pub(crate) fn receiver(
        &self,
        rs: &str,
    ) -> Option<Arc<tokio::sync::Mutex<mpsc::Receiver<Order>>>> {
        self.receivers.get(rs).cloned()
    }
}

/// The last walk of each replicaset, as the report serves it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reports(Arc<Mutex<BTreeMap<String, Option<WalkReport>>>>);

impl Reports {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Option<WalkReport>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every replicaset's (labels from `labels`, `None` until read).
    pub(crate) fn snapshot<'a>(
        &self,
        labels: impl IntoIterator<Item = &'a String>,
    ) -> BTreeMap<String, Option<WalkReport>> {
        let r = self.lock();
        labels
            .into_iter()
            .map(|rs| (rs.clone(), r.get(rs).cloned().flatten()))
            .collect()
    }

    /// Replaces `rs`'s report.
    pub(crate) fn set(&self, rs: &str, report: Option<WalkReport>) {
        self.lock().insert(rs.to_owned(), report);
    }

    /// Changes `rs`'s report in place.
    pub(crate) fn update(&self, rs: &str, f: impl FnOnce(&mut WalkReport)) {
        if let Some(Some(r)) = self.lock().get_mut(rs) {
            f(r);
        }
    }
}

/// The short form of a report, for the status.
pub(crate) fn summary(r: &WalkReport) -> WalkSummary {
    WalkSummary {
        id: r.walk.clone(),
        mode: r.mode,
        reason: r.reason,
        state: r.state,
        mismatches: r.mismatches(),
    }
}

/// A report's view of `walk` (counters from `spaces`).
pub(crate) fn report_of(walk: &Walk, source_cluster: &str) -> WalkReport {
    WalkReport {
        walk: walk.id.clone(),
        mode: walk.mode,
        reason: walk.reason,
        state: walk.state,
        source_cluster: source_cluster.to_owned(),
        spaces: walk.spaces.clone(),
        current_space: walk.space().map(str::to_owned),
        seq: walk.seq,
        started_ms: walk.started_ms,
        finished_ms: walk.finished_ms,
        by_space: walk
            .spaces
            .iter()
            .map(|s| (s.clone(), SpaceReport::default()))
            .collect(),
    }
}

/// Adds a chunk's outcome to `r`.
pub(crate) fn add(
    r: &mut WalkReport,
    walk: &Walk,
    space: &str,
    o: &compare::Outcome,
    unverified: u64,
) {
    r.state = walk.state;
    r.seq = walk.seq;
    r.current_space = walk.space().map(str::to_owned);
    r.finished_ms = walk.finished_ms;
    let s = r.by_space.entry(space.to_owned()).or_default();
    s.chunks += o.chunks;
    s.compared += o.compared;
    s.missing += o.missing;
    s.extra += o.extra;
    s.different += o.different;
    s.repaired += o.ops.len() as u64;
    s.voided += o.voided;
    s.unverified += unverified;
    if o.skipped.is_some() {
        s.skipped.clone_from(&o.skipped);
    }
    for (key, kind) in &o.keys {
        if s.keys.len() >= REPORT_KEYS_CAP as usize {
            s.keys_truncated = true;
            break;
        }
        s.keys.push(MismatchKey {
            key: key_json(key),
            kind: *kind,
            repaired: walk.mode == tcf_api::verify::WalkMode::Repair,
        });
    }
}

/// The rows `tcf_verify_v1_load` returns as a walk and its report; `None`
/// when there is no walk.
pub(crate) fn from_rows(rows: &[VerifyRow], source_cluster: &str) -> Option<(Walk, WalkReport)> {
    let mut walk: Option<Walk> = None;
    for row in rows {
        if row.is_walk()
            && let Some(w) = Walk::from_value(&row.data)
            && walk.as_ref().is_none_or(|cur| w.seq > cur.seq)
        {
            walk = Some(w);
        }
    }
    let walk = walk?;
    let mut r = report_of(&walk, source_cluster);
    for VerifyRow {
        space, key, data, ..
    } in rows
    {
        if space.is_empty() {
            continue;
        }
        let s = r.by_space.entry(space.clone()).or_default();
        let m = data.as_map().cloned().unwrap_or_default();
        let get = |k: &str| {
            m.iter()
                .find(|(x, _)| x.as_str() == Some(k))
                .map(|(_, v)| v)
        };
        if key.is_empty() {
            let n = |k: &str| get(k).and_then(Value::as_u64).unwrap_or_default();
            s.chunks += n("chunks");
            s.compared += n("compared");
            s.missing += n("missing");
            s.extra += n("extra");
            s.different += n("different");
            s.repaired += n("repaired");
            s.unverified += n("unverified");
            s.voided += n("voided");
            if let Some(x) = get("skipped").and_then(Value::as_str) {
                s.skipped = Some(x.to_owned());
            }
            s.keys_truncated |= get("keys_truncated")
                .and_then(Value::as_bool)
                .unwrap_or(false);
        } else if s.keys.len() < REPORT_KEYS_CAP as usize {
            let raw = get("key")
                .and_then(Value::as_str)
                .and_then(unhex)
                .unwrap_or_default();
            let kind = match get("kind").and_then(Value::as_str) {
                Some("missing") => MismatchKind::Missing,
                Some("extra") => MismatchKind::Extra,
                _ => MismatchKind::Different,
            };
            s.keys.push(MismatchKey {
                key: key_json(&raw),
                kind,
                repaired: get("repaired").and_then(Value::as_bool).unwrap_or(false),
            });
        } else {
            s.keys_truncated = true;
        }
    }
    Some((walk, r))
}

/// The name of a mismatch kind in the verification spaces.
pub(crate) fn kind_name(k: MismatchKind) -> &'static str {
    match k {
        MismatchKind::Missing => "missing",
        MismatchKind::Extra => "extra",
        MismatchKind::Different => "different",
    }
}

/// A raw MessagePack key as JSON (binary as `{"bin": hex}`, extensions as
/// `{"ext": type, "hex": ...}`, undecodable bytes as `{"raw": hex}`).
pub(crate) fn key_json(raw: &[u8]) -> serde_json::Value {
    let mut slice = raw;
    match rmpv::decode::read_value(&mut slice) {
        Ok(v) => json(&v),
        Err(_) => serde_json::json!({ "raw": walk::to_hex(raw) }),
    }
}

fn json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(i) => i
            .as_i64()
            .map(J::from)
            .or_else(|| i.as_u64().map(J::from))
            .unwrap_or(J::Null),
        Value::F32(f) => J::from(f64::from(*f)),
        Value::F64(f) => J::from(*f),
        Value::String(s) => match s.as_str() {
            Some(s) => J::from(s),
            None => serde_json::json!({ "bin": walk::to_hex(s.as_bytes()) }),
        },
        Value::Binary(b) => serde_json::json!({ "bin": walk::to_hex(b) }),
        Value::Array(a) => J::Array(a.iter().map(json).collect()),
        Value::Map(m) => J::Array(
            m.iter()
                .map(|(k, v)| J::Array(vec![json(k), json(v)]))
                .collect(),
        ),
        Value::Ext(t, d) => serde_json::json!({ "ext": t, "hex": walk::to_hex(d) }),
    }
}
