//! What each replicaset's apply loop is doing, for `GET /api/v1/status`.

/// State of one replicaset (the contract's one enum).
pub use tcf_api::replicator::ReplicasetState as State;

/// Status of one replicaset, as served in JSON (`tcf_api` owns the layout).
pub use tcf_api::replicator::DestinationReplicaset as RsStatus;

/// A shared, lockable status cell of one replicaset.
pub type StatusCell = tcf_common::status::Cell<RsStatus>;

/// Every replicaset's status, by label.
pub type Registry = tcf_common::status::Registry<RsStatus>;
