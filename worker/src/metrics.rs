//! Metric names of `tcf-worker` (documented in `docs/metrics.md`).

/// Label: cluster.
pub(crate) const CLUSTER: &str = "cluster";
/// Label: a pair's source cluster.
pub(crate) const FROM: &str = "from";
/// Label: a pair's target cluster.
pub(crate) const TO: &str = "to";
/// Label: a replicaset of a pair (the destination's label).
pub(crate) const REPLICASET: &str = "replicaset";
/// Label: switch outcome.
pub(crate) const OUTCOME: &str = "outcome";

/// The federation's term as last read from etcd.
pub(crate) const TERM: &str = "tcf_worker_term";
/// This cluster's status: 1 active, 0 passive, -1 diverged.
pub(crate) const STATUS: &str = "tcf_worker_status";
/// 1 while the state could not be confirmed from etcd within `fencing_timeout`.
pub(crate) const STALE: &str = "tcf_worker_state_stale";
/// Switches closed by this worker, by `outcome` (done, rolled_back).
pub(crate) const SWITCHES: &str = "tcf_worker_switches_total";
/// 1 while this cluster's dml users are fenced (as last applied).
pub(crate) const FENCED: &str = "tcf_worker_fenced";
/// Fence/unfence attempts that failed.
pub(crate) const FENCE_ERRORS: &str = "tcf_worker_fence_errors_total";
/// etcd reads or writes that failed.
pub(crate) const ETCD_ERRORS: &str = "tcf_worker_etcd_errors_total";
/// Writes on this cluster not made by tcf, seen while it is not active.
pub(crate) const UNMARKED_COMMITS: &str = "tcf_worker_unmarked_commits_total";
/// 1 while the unmarked-write alarm is raised.
pub(crate) const UNMARKED_ALARM: &str = "tcf_worker_unmarked_alarm";
/// 1 while this worker leads as coordinator.
pub(crate) const LEADER: &str = "tcf_worker_coordinator_leader";
/// The leader's consecutive failed health checks of the active cluster.
pub(crate) const SUSPECT_COUNT: &str = "tcf_worker_active_suspect_count";
/// Lag of a pair that should run, per replicaset: the destination's own
/// while it streams, else growing with the time since it last did; 0 for a
/// pair that should not run.
pub(crate) const PAIR_LAG_SECONDS: &str = "tcf_worker_pair_lag_seconds";
/// Rows behind of that pair (the destination's `lag_lsn`; the last known
/// while it does not answer).
pub(crate) const PAIR_LAG_ROWS: &str = "tcf_worker_pair_lag_rows";
