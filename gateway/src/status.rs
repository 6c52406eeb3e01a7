//! What each replicaset stream is doing, for `GET /api/v1/status` and metrics.

/// State of one replicaset's stream (the contract's one enum).
pub use tcf_api::replicator::ReplicasetState as State;

/// Status of one replicaset, as served in JSON (`tcf_api` owns the layout).
pub use tcf_api::replicator::GatewayReplicaset as RsStatus;

/// A shared, lockable status cell of one replicaset.
pub type StatusCell = tcf_common::status::Cell<RsStatus>;

/// Every replicaset's status, by label.
pub type Registry = tcf_common::status::Registry<RsStatus>;

/// Sets `replicaset`'s state and its gauge; `error`, when given, becomes
/// `last_error` (kept otherwise).
pub(crate) fn set_state(cell: &StatusCell, replicaset: &str, state: State, error: Option<String>) {
    tcf_common::status::set_state(cell, crate::metrics::STATE, replicaset, state, error);
}
