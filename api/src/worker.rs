//! The worker's contracts: the federation state it keeps in etcd
//! (`docs/state.md`), what it serves to its peers (`GET /tcf/api/v1/view`)
//! and to operators and tools (`GET /tcf/api/v1/info`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tcf_iproto::Vclock;

use crate::replicator::{DestinationStatus, GatewayStatus};

/// A cluster's status in the federation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The application writes here.
    Active,
    /// Holds a copy; writes are fenced.
    Passive,
    /// Came back after a failover holding writes the active one lacks.
    Diverged,
}

impl Status {
    /// The text served by `GET /tcf/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Passive => "passive",
            Self::Diverged => "diverged",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Both clusters' statuses and the term (`PREFIX/FED/state`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FedState {
    /// Grows by one on every switch; 0 is the bootstrap state.
    pub term: u64,
    /// Status by cluster name.
    pub clusters: BTreeMap<String, Status>,
}

impl FedState {
    /// The status of `cluster`, if known.
    pub fn status(&self, cluster: &str) -> Option<Status> {
        self.clusters.get(cluster).copied()
    }

    /// The active cluster, if any.
    pub fn active(&self) -> Option<&str> {
        self.clusters
            .iter()
            .find(|(_, s)| **s == Status::Active)
            .map(|(c, _)| c.as_str())
    }
}

/// Phases of a switch from `from` to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// `from`'s workers fence it and record each master's vclock after the fence.
    Fence,
    /// `to`'s workers wait until its incoming destination processed up to them.
    Drain,
    /// `to`'s workers start the pair leaving `to` and wait until it streams.
    Reverse,
    /// Any worker flips the state (term + 1).
    Flip,
    /// A failover is under way: its driver stops the pair leaving `from`,
    /// reads the loss point and flips to `done` (or the deadline rolls it
    /// back); meanwhile that pair stays stopped and `from` fenced.
    Failover,
    /// Finished: `to` is active.
    Done,
    /// Deadline passed before the flip: `from` stays active and is unfenced.
    RolledBack,
}

impl Phase {
    /// Whether the switch is over.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::RolledBack)
    }
}

/// What kind of switch a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchKind {
    /// Planned: fence, drain, reverse, flip; nothing lost.
    Switchover,
    /// The active cluster given up without waiting for it.
    Failover,
    /// A diverged cluster reloaded from the active one (history only).
    Resync,
}

impl SwitchKind {
    /// The name used in JSON, metrics and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Switchover => "switchover",
            Self::Failover => "failover",
            Self::Resync => "resync",
        }
    }
}

impl std::fmt::Display for SwitchKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A switch in progress, or the last one (`PREFIX/FED/switch`): the only
/// source of truth for a switch, so any worker can finish or roll it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwitchRecord {
    /// Unique id.
    pub id: String,
    /// Planned switchover or failover.
    pub kind: SwitchKind,
    /// The cluster that was active.
    pub from: String,
    /// The cluster becoming active.
    pub to: String,
    /// The term the switch produces (state term + 1 when it started).
    pub term: u64,
    /// Current phase.
    pub phase: Phase,
    /// Unix milliseconds after which an unfinished switch is rolled back.
    pub deadline_ms: u64,
    /// Unix milliseconds when it was requested.
    pub started_ms: u64,
    /// Who asked (worker id and client).
    pub requested_by: String,
    /// Each of `from`'s masters' vclock after the fence, by replicaset UUID.
    pub fence_vclocks: BTreeMap<String, Vclock>,
    /// Why it was rolled back (a failover: its reason).
    pub error: Option<String>,
    /// A failover's loss point: the new active's applied position from the
    /// old one, by source replicaset UUID (empty for a switchover).
    #[serde(default)]
    pub loss_point: BTreeMap<String, Vclock>,
}

impl SwitchRecord {
    /// Whether it is under way and leaves `cluster`.
    pub fn leaves(&self, cluster: &str) -> bool {
        !self.phase.is_final() && self.from == cluster
    }
}

/// One switch outcome (`PREFIX/FED/history/<unix ms>-<outcome>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The term after the switch (the old term for a rollback).
    pub term: u64,
    /// What kind of switch.
    pub kind: SwitchKind,
    /// `done` or `rolled_back`.
    pub outcome: HistoryOutcome,
    /// Old active.
    pub from: String,
    /// New active.
    pub to: String,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// Who asked.
    pub by: String,
    /// Position the new active had applied from the old one (none lost in a
    /// planned switchover: equal to the fence vclocks).
    pub loss_point: BTreeMap<String, Vclock>,
    /// Kind-specific details (a resync's tail report).
    #[serde(default)]
    pub detail: Option<serde_json::Value>,
}

/// How a switch recorded in the history ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryOutcome {
    /// It happened.
    Done,
    /// Nothing switched.
    RolledBack,
}

impl HistoryOutcome {
    /// The name used in the history key.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::RolledBack => "rolled_back",
        }
    }
}

/// A worker's view, as served to its peers (`GET /tcf/api/v1/view`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    /// The serving worker's cluster.
    pub cluster: String,
    /// Its last state (from etcd, or adopted from a peer).
    pub state: Option<FedState>,
    /// Whether that state was read from etcd within `fencing_timeout`.
    pub etcd_fresh: bool,
}

/// What the coordinator last concluded about the active cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The cluster checked.
    pub cluster: Option<String>,
    /// Consecutive failed checks.
    pub suspect_count: u32,
    /// Unix ms of the first failed check of the current run.
    pub suspect_since_ms: Option<u64>,
    /// Why the last check failed (or was not counted).
    pub problem: Option<String>,
    /// Why the last automatic failover did not happen.
    pub failover_blocked: Option<String>,
}

/// Which replicator pairs run in steady state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Only the pair leaving the active cluster.
    #[default]
    OneWay,
    /// Both pairs.
    TwoWay,
}

/// A replicator's status as a worker reports it: what it answered, or why
/// it did not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reported<T> {
    /// Its status.
    Status(T),
    /// Why there is none.
    Error {
        /// The failure.
        error: String,
    },
}

/// Both replicators of a pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairInfo {
    /// The gateway reading the pair's source cluster.
    pub gateway: Reported<GatewayStatus>,
    /// The destination writing the pair's target cluster.
    pub destination: Reported<DestinationStatus>,
}

/// The pairs a worker drives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicatorsInfo {
    /// Steady-state mode.
    pub mode: Mode,
    /// The pairs leaving this cluster, in configuration order (each serves
    /// a subset of its replicasets).
    pub outgoing: Vec<PairInfo>,
    /// The pairs coming into this cluster, in configuration order.
    pub incoming: Vec<PairInfo>,
}

/// The fence as last applied to this cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceState {
    /// Whether the application's users are disabled.
    pub fenced: bool,
    /// The term it was applied at.
    pub term: u64,
}

/// The coordinator's part of the info.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoordinatorInfo {
    /// `coordinator.enabled`.
    pub enabled: bool,
    /// Whether this worker leads now.
    pub leading: bool,
    /// What it last concluded (empty unless it leads).
    pub verdict: Verdict,
}

/// One master's count of unmarked writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmarkedReading {
    /// The instance (`host:port`, as configured).
    pub uri: String,
    /// Its replicaset UUID.
    pub replicaset: String,
    /// Unmarked writes it counted since its triggers were installed.
    pub count: u64,
}

/// The unmarked-write alarm: writes not made by tcf on a cluster that is
/// not active (`docs/worker.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmarkedCommits {
    /// Raised by an unmarked write seen while the cluster is not active;
    /// lowered when it becomes active.
    pub alarm: bool,
    /// Unmarked writes seen since the cluster was last active.
    pub count: u64,
    /// When the alarm was raised (ms since the Unix epoch).
    pub since_ms: Option<u64>,
    /// The last reading of each master, by instance UUID.
    pub instances: BTreeMap<String, UnmarkedReading>,
    /// Why the last reading failed (joined with `; `), `null` after a success.
    pub error: Option<String>,
}

/// A worker's `GET /tcf/api/v1/info`: what it knows of the federation, its
/// cluster and the replicators it drives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Info {
    /// The federation's name.
    pub federation: String,
    /// This worker's cluster.
    pub cluster: String,
    /// The other cluster.
    pub peer: String,
    /// This worker's id (`CLUSTER@LISTEN`).
    pub worker: String,
    /// The term, when a state is known.
    pub term: Option<u64>,
    /// Both clusters' statuses, when a state is known.
    pub clusters: Option<BTreeMap<String, Status>>,
    /// The state was not read from etcd within `fencing_timeout`.
    pub stale: bool,
    /// The state is confirmed (etcd or a peer worker) within
    /// `fencing_timeout`: `is_active` answers 200/418, not 503.
    pub confirmed: bool,
    /// The last etcd failure.
    pub etcd_error: Option<String>,
    /// The switch in progress, or the last one.
    pub switch: Option<SwitchRecord>,
    /// Why the last step of the switch did not happen.
    pub switch_error: Option<String>,
    /// The fence as last applied to this cluster.
    pub fence: Option<FenceState>,
    /// Why the last fence failed.
    pub fence_error: Option<String>,
    /// Why the last reconciliation of the replicators failed.
    pub replicator_error: Option<String>,
    /// The unmarked-write alarm.
    pub unmarked_commits: UnmarkedCommits,
    /// The replicators this worker drives (none without `replication`).
    pub replicators: Option<ReplicatorsInfo>,
    /// The newest switch outcomes, newest first.
    pub history: Vec<HistoryEntry>,
    /// The elected coordinator's id.
    pub leader: Option<String>,
    /// This worker's coordinator role.
    pub coordinator: CoordinatorInfo,
}
