//! The worker's operator routes, as `tcfctl` and the web console read them:
//! what `POST /tcf/switchover` takes (dry run, lag gate, timeout) and
//! answers (its prechecks), what `POST /tcf/failover` and `POST /tcf/resync`
//! answer, the overview of both clusters (`GET /tcf/api/v1/overview`), the
//! lag history (`GET /tcf/api/v1/lag`) and the error body of every route.
//! The worker serializes these types; the tools deserialize the same ones.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tcf_iproto::Vclock;

use crate::{
    replicator::ReplicasetState,
    worker::{Info, Reported},
};

/// The lag gate of a switchover when the request names none: the passive
/// side's destination may be at most this far behind (`lag_seconds` of every
/// replicaset). The drain phase runs while the old active is fenced, so the
/// lag is roughly the write outage a switchover adds; 10 s also leaves most
/// of the default `switchover_timeout` (30 s) for the drain and the reverse.
pub const DEFAULT_MAX_LAG_MS: u64 = 10_000;

/// The shortest deadline a request may ask for (`timeout_ms`).
pub const MIN_TIMEOUT_MS: u64 = 1_000;

/// The body of `POST /tcf/switchover` (and `/tcf/toggle`). An empty body is
/// the default request: a real switch, lag gate [`DEFAULT_MAX_LAG_MS`], the
/// worker's `switchover_timeout`. Unknown keys are refused (400).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchoverRequest {
    /// Run every precheck and say what would happen, changing nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Refuse when the passive side lags more than this (milliseconds;
    /// [`DEFAULT_MAX_LAG_MS`] when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag_ms: Option<u64>,
    /// Roll the switch back unless it flips within this (milliseconds, at
    /// least [`MIN_TIMEOUT_MS`]; capped by the worker's
    /// `switchover_timeout`, which applies when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Switch even though the passive cluster has its unmarked-write alarm
    /// raised (or its workers cannot tell): the operator has dealt with
    /// those writes. The check then passes, saying so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accept_unmarked_writes: bool,
}

impl SwitchoverRequest {
    /// Parses a body; an empty or blank body is the default request.
    pub fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        serde_json::from_slice(body)
    }

    /// The lag gate in force.
    pub fn max_lag_ms(&self) -> u64 {
        self.max_lag_ms.unwrap_or(DEFAULT_MAX_LAG_MS)
    }
}

/// One precheck of a switchover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckName {
    /// The federation state allows a switch: none under way, one cluster
    /// active, the other passive.
    State,
    /// The passive cluster can take over: it serves, its incoming
    /// destination streams (not loading, repairing, gapped or failed) and its
    /// positions are finished (the worker's promotion check).
    Promotable,
    /// The passive side's destination lags at most the lag gate.
    Lag,
    /// No unmarked-write alarm on the passive cluster (something other than
    /// tcf wrote there: the peer lacks those writes).
    UnmarkedWrites,
    /// The reverse pair (new active to old active) answers and is not in an
    /// error state, so it can stream after the flip.
    ReversePair,
}

impl CheckName {
    /// The name used in JSON and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::State => "state",
            Self::Promotable => "promotable",
            Self::Lag => "lag",
            Self::UnmarkedWrites => "unmarked_writes",
            Self::ReversePair => "reverse_pair",
        }
    }
}

impl std::fmt::Display for CheckName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one precheck.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Which check.
    pub name: CheckName,
    /// Whether it passed.
    pub ok: bool,
    /// What it found (why it failed, or what it measured).
    pub detail: String,
}

/// Every precheck of a switchover, as the worker ran them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prechecks {
    /// The active cluster, when one is.
    pub from: Option<String>,
    /// The cluster that would become active.
    pub to: Option<String>,
    /// The term the switch would produce.
    pub term: Option<u64>,
    /// The lag gate applied.
    pub max_lag_ms: u64,
    /// The deadline the switch would get (ms from its start).
    pub timeout_ms: u64,
    /// Each check, in the order run.
    pub checks: Vec<Check>,
}

impl Prechecks {
    /// Whether every check ran and passed.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }

    /// The failed checks as one line (`name: detail; ...`), if any failed.
    pub fn refusal(&self) -> Option<String> {
        let failed: Vec<String> = self
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        (!failed.is_empty()).then(|| failed.join("; "))
    }
}

/// How a switchover request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchoverResult {
    /// The roles flipped (200).
    Done,
    /// The deadline passed before the flip; nothing changed (504).
    RolledBack,
    /// No final record within the wait; see the info (504).
    NoOutcome,
    /// A precheck failed or the state does not allow a switch; nothing
    /// changed (409; 503 when etcd does not answer).
    Refused,
    /// Dry run: every precheck passed, the switch would start (200).
    Ready,
}

impl SwitchoverResult {
    /// The name used in JSON and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::RolledBack => "rolled_back",
            Self::NoOutcome => "no_outcome",
            Self::Refused => "refused",
            Self::Ready => "ready",
        }
    }
}

/// The answer of `POST /tcf/switchover`, whatever happened (token and body
/// errors aside, which get an [`ErrorBody`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwitchoverAnswer {
    /// What happened.
    pub result: SwitchoverResult,
    /// Whether this was a dry run.
    #[serde(default)]
    pub dry_run: bool,
    /// The old active.
    #[serde(default)]
    pub from: Option<String>,
    /// The new active.
    #[serde(default)]
    pub to: Option<String>,
    /// The term produced (or that would be).
    #[serde(default)]
    pub term: Option<u64>,
    /// From the request to the outcome.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// The old active's masters' vclocks after the fence (`done`).
    #[serde(default)]
    pub fence_vclocks: BTreeMap<String, Vclock>,
    /// Why it was refused or rolled back.
    #[serde(default)]
    pub error: Option<String>,
    /// The prechecks run (absent when the state alone refused it, e.g. etcd
    /// down).
    #[serde(default)]
    pub prechecks: Option<Prechecks>,
    /// Dry run: the steps the switch would take, in order.
    #[serde(default)]
    pub plan: Vec<String>,
}

impl SwitchoverAnswer {
    /// An answer with `result` and nothing else.
    pub fn new(result: SwitchoverResult) -> Self {
        Self {
            result,
            dry_run: false,
            from: None,
            to: None,
            term: None,
            duration_ms: None,
            fence_vclocks: BTreeMap::new(),
            error: None,
            prechecks: None,
            plan: Vec::new(),
        }
    }
}

/// A failover that happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverOutcome {
    /// The failed cluster, now `diverged`.
    pub from: String,
    /// The new active cluster.
    pub to: String,
    /// The new term.
    pub term: u64,
    /// The new active's applied position from `from`, by source replicaset
    /// UUID: whatever `from` committed past it is its tail.
    pub loss_point: BTreeMap<String, Vclock>,
    /// How long the failover itself took.
    pub duration_ms: u64,
}

/// The `result` of a successful failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailoverResult {
    /// It happened.
    Done,
}

/// The answer of `POST /tcf/failover` (200; failures get an [`ErrorBody`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverAnswer {
    /// Always `done`.
    pub result: FailoverResult,
    /// What happened.
    pub failover: FailoverOutcome,
}

/// What a diverged replicaset held past the loss point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tail {
    /// The loss point (what the active cluster applied from it).
    pub from: Vclock,
    /// Its master's vclock at the resync.
    pub to: Vclock,
    /// LSNs between the two (tcf's own fence records included).
    pub rows: u64,
}

/// A resync's report, also kept as the `detail` of its history entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResyncReport {
    /// The cluster resynced.
    pub cluster: String,
    /// The loss point of the failover it came back from.
    pub loss_point: BTreeMap<String, Vclock>,
    /// The tail per replicaset UUID (discarded by the reload).
    pub tail: BTreeMap<String, Tail>,
}

/// The `result` of a resync that started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResyncResult {
    /// The cluster is passive again and reloads from the active one.
    Reloading,
}

/// The answer of `POST /tcf/resync` (200; failures get an [`ErrorBody`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResyncAnswer {
    /// Always `reloading`.
    pub result: ResyncResult,
    /// The (unchanged) term.
    pub term: u64,
    /// What the cluster held past the loss point.
    pub report: ResyncReport,
}

/// The body of every error answer: `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// What one worker answers a load balancer (`GET /tcf/is_active`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbAnswer {
    /// The worker's cluster.
    pub cluster: String,
    /// The worker (its id for the answering worker, its URL for a peer).
    pub worker: String,
    /// The HTTP status (200 active, 418 passive, 503 cannot tell), `None`
    /// when it did not answer.
    pub code: Option<u16>,
    /// The body (`active`, `passive`, `leaving`, an error) or why there is
    /// no answer.
    pub answer: String,
}

/// `GET /tcf/api/v1/overview` (role `info`): both clusters as one worker
/// sees them, for `tcfctl status` and the console.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    /// When it was assembled (Unix ms, the worker's clock).
    pub at_ms: u64,
    /// The answering worker's info.
    pub worker: Info,
    /// The first of its `peer_workers` that answered with its info, or why
    /// none did (`None` without `peer_workers`).
    pub peer: Option<Reported<Box<Info>>>,
    /// The load balancers' view: this worker's and each peer worker's
    /// answer to `GET /tcf/is_active`.
    pub lb: Vec<LbAnswer>,
}

/// One sample of a destination's lag.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LagPoint {
    /// When it was taken (Unix ms).
    pub at_ms: u64,
    /// `lag_seconds` of the replicaset.
    pub seconds: f64,
    /// `lag_lsn` of the replicaset (rows).
    pub rows: u64,
    /// Its state then (`None`: the destination did not answer).
    pub state: Option<ReplicasetState>,
}

/// The samples of one replicaset of one pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LagSeries {
    /// The pair's source cluster.
    pub from: String,
    /// The pair's target cluster.
    pub to: String,
    /// The replicaset label.
    pub replicaset: String,
    /// Oldest first.
    pub points: Vec<LagPoint>,
}

/// `GET /tcf/api/v1/lag` (role `info`): the lag of the pairs that should run
/// over the last minutes, sampled by the worker from their destinations;
/// while a destination does not stream the lag grows with the time since it
/// last did (`docs/worker.md`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LagHistory {
    /// Period of the samples.
    pub interval_ms: u64,
    /// How far back samples are kept.
    pub window_ms: u64,
    /// One series per pair and replicaset.
    pub series: Vec<LagSeries>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blank_body_is_the_default_request_and_unknown_keys_are_refused() {
        assert_eq!(
            SwitchoverRequest::parse(b"").unwrap(),
            SwitchoverRequest::default()
        );
        assert_eq!(
            SwitchoverRequest::parse(b" \n").unwrap().max_lag_ms(),
            DEFAULT_MAX_LAG_MS
        );
        let r = SwitchoverRequest::parse(br#"{"dry_run": true, "max_lag_ms": 500}"#).unwrap();
        assert!(r.dry_run);
        assert_eq!(r.max_lag_ms(), 500);
        assert!(SwitchoverRequest::parse(br#"{"dry-run": true}"#).is_err());
        assert!(SwitchoverRequest::parse(br#"{"max_lag_ms": -1}"#).is_err());
        assert!(SwitchoverRequest::parse(b"[").is_err());
    }

    #[test]
    fn prechecks_pass_only_when_every_check_ran_and_passed() {
        let mut p = Prechecks::default();
        assert!(!p.passed(), "no check is not a pass");
        p.checks.push(Check {
            name: CheckName::State,
            ok: true,
            detail: "A active, B passive".into(),
        });
        assert!(p.passed());
        assert_eq!(p.refusal(), None);
        p.checks.push(Check {
            name: CheckName::Lag,
            ok: false,
            detail: "rs1 lags 12.5 s".into(),
        });
        assert!(!p.passed());
        assert_eq!(p.refusal().as_deref(), Some("lag: rs1 lags 12.5 s"));
    }

    #[test]
    fn answers_round_trip() {
        let mut a = SwitchoverAnswer::new(SwitchoverResult::Done);
        a.term = Some(1);
        a.fence_vclocks
            .insert("u".into(), [(1, 5)].into_iter().collect());
        let j = serde_json::to_string(&a).unwrap();
        assert!(j.contains(r#""result":"done""#), "{j}");
        assert_eq!(serde_json::from_str::<SwitchoverAnswer>(&j).unwrap(), a);
        // The answer older workers gave still parses.
        let old = r#"{"result":"rolled_back","error":"deadline passed in phase Drain","from":"A","to":"B","duration_ms":30012}"#;
        let o: SwitchoverAnswer = serde_json::from_str(old).unwrap();
        assert_eq!(o.result, SwitchoverResult::RolledBack);
        assert_eq!(o.duration_ms, Some(30012));
    }
}
