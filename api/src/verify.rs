//! Online verification and repair (`docs/verify.md`): the request that
//! starts a walk (`POST /tcf/api/v1/verify` on a worker, `POST
//! /api/v1/verify` on a destination) and the report (`GET` on the same
//! paths). The destination writes these types, the worker forwards them,
//! tools read them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Mismatching keys kept per space in a report (all are counted).
pub const REPORT_KEYS_CAP: u32 = 1000;

/// What a walk does with what differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalkMode {
    /// Compare per-row hashes and report what differs.
    Verify,
    /// Also make the target equal to the source (replace differing rows,
    /// insert missing ones, delete extra ones).
    Repair,
}

impl WalkMode {
    /// The name used in JSON and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Repair => "repair",
        }
    }
}

/// Why a walk runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalkReason {
    /// An operator (or a tool) asked for it.
    Requested,
    /// The source lost the rows after the target's position
    /// (`on_wal_gap: repair`): the target is not promotable until it ends.
    WalGap,
}

/// Whether a walk is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalkState {
    /// Chunks are being made and checked.
    Running,
    /// Every space was walked.
    Done,
}

/// The body of a `POST` that starts a walk. Unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalkRequest {
    /// `verify` (role `toggle`) or `repair` (role `admin`).
    pub mode: WalkMode,
    /// Source spaces to walk; empty: every replicated space.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spaces: Vec<String>,
    /// Rows per chunk (1..=10000, default 1000): what one select on the
    /// source master may read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_rows: Option<u32>,
    /// Rows per second read on the source master (default 50000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_per_second: Option<u64>,
}

impl WalkRequest {
    /// Default rows per chunk.
    pub const DEFAULT_CHUNK_ROWS: u32 = 1000;
    /// Largest allowed rows per chunk.
    pub const MAX_CHUNK_ROWS: u32 = 10_000;
    /// Default pace.
    pub const DEFAULT_ROWS_PER_SECOND: u64 = 50_000;

    /// Parses a body and checks its bounds.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let r: Self = serde_json::from_slice(body).map_err(|e| format!("bad body: {e}"))?;
        if let Some(n) = r.chunk_rows
            && !(1..=Self::MAX_CHUNK_ROWS).contains(&n)
        {
            return Err(format!(
                "chunk_rows {n} is outside 1..={}",
                Self::MAX_CHUNK_ROWS
            ));
        }
        if r.rows_per_second == Some(0) {
            return Err("rows_per_second must be positive".into());
        }
        Ok(r)
    }
}

/// The answer to a `POST` that starts a walk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkStarted {
    /// The walk's id (the same on every replicaset).
    pub walk: String,
    /// Per replicaset label: `null` when the walk started there, else why not.
    pub replicasets: BTreeMap<String, Option<String>>,
}

/// How a key differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MismatchKind {
    /// The source has the row, the target does not.
    Missing,
    /// The target has a row the source does not.
    Extra,
    /// Both have the row, with different contents.
    Different,
}

/// One mismatching key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MismatchKey {
    /// The primary key (its MessagePack as JSON; binary strings as
    /// `{"bin": "<hex>"}`, extensions as `{"ext": type, "hex": ...}`).
    pub key: serde_json::Value,
    /// How it differs.
    pub kind: MismatchKind,
    /// Repaired (repair walks).
    pub repaired: bool,
}

/// One space of a walk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpaceReport {
    /// Chunks handled (void ones included).
    pub chunks: u64,
    /// Keys compared (on either side).
    pub compared: u64,
    /// Rows the target lacks.
    pub missing: u64,
    /// Rows only the target has.
    pub extra: u64,
    /// Rows that differ.
    pub different: u64,
    /// Rows replaced, inserted or deleted on the target.
    pub repaired: u64,
    /// Keys left unchecked: changed between the watermarks of every attempt.
    pub unverified: u64,
    /// Chunks that could say nothing and were retried.
    pub voided: u64,
    /// Not walked, and why (e.g. a collated primary key).
    pub skipped: Option<String>,
    /// Mismatching keys, at most [`REPORT_KEYS_CAP`] (the counts are complete).
    pub keys: Vec<MismatchKey>,
    /// More mismatching keys exist than are listed.
    pub keys_truncated: bool,
}

impl SpaceReport {
    /// Mismatches of every kind.
    pub fn mismatches(&self) -> u64 {
        self.missing + self.extra + self.different
    }
}

/// One walk of one replicaset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WalkReport {
    /// The walk's id.
    pub walk: String,
    /// Verify or repair.
    pub mode: WalkMode,
    /// Why it runs.
    pub reason: WalkReason,
    /// Running or done.
    pub state: WalkState,
    /// The source cluster walked.
    pub source_cluster: String,
    /// The spaces, in walk order.
    pub spaces: Vec<String>,
    /// The space being walked (`null` when done).
    pub current_space: Option<String>,
    /// Chunks made so far (the next chunk's sequence number).
    pub seq: u64,
    /// Start and end, milliseconds since the epoch (target clock).
    pub started_ms: u64,
    /// `null` while running.
    pub finished_ms: Option<u64>,
    /// Per space.
    pub by_space: BTreeMap<String, SpaceReport>,
}

impl WalkReport {
    /// Mismatches over every space.
    pub fn mismatches(&self) -> u64 {
        self.by_space.values().map(SpaceReport::mismatches).sum()
    }

    /// Whether it blocks the target's promotion: a repair after a WAL gap
    /// that has not ended.
    pub fn blocks_promotion(&self) -> bool {
        self.reason == WalkReason::WalGap && self.state == WalkState::Running
    }
}

/// A destination's report (`GET /api/v1/verify`), by replicaset label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The destination's alias.
    pub destination: String,
    /// The target cluster.
    pub cluster: String,
    /// The last walk of each replicaset (`null`: none yet, or not read yet).
    pub replicasets: BTreeMap<String, Option<WalkReport>>,
}

impl Report {
    /// Whether every replicaset's walk `walk` is done.
    pub fn done(&self, walk: &str) -> bool {
        !self.replicasets.is_empty()
            && self.replicasets.values().all(|r| {
                r.as_ref()
                    .is_some_and(|r| r.walk == walk && r.state == WalkState::Done)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_bounds() {
        let r = WalkRequest::parse(br#"{"mode": "repair", "spaces": ["test"]}"#).unwrap();
        assert_eq!(r.mode, WalkMode::Repair);
        assert!(WalkRequest::parse(br#"{"mode": "fix"}"#).is_err());
        assert!(WalkRequest::parse(br#"{"mode": "verify", "chunk_rows": 0}"#).is_err());
        assert!(WalkRequest::parse(br#"{"mode": "verify", "rows_per_second": 0}"#).is_err());
        assert!(WalkRequest::parse(br#"{"mode": "verify", "extra": 1}"#).is_err());
    }
}
