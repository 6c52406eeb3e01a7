//! Metric names of `tcf-destination` (documented in `docs/metrics.md`).
//! Every metric carries the `replicaset` label, plus the global labels from
//! `metrics_labels` and `destination` (the alias).

/// Label: replicaset.
pub(crate) const REPLICASET: &str = "replicaset";
/// Label: error kind.
pub(crate) const KIND: &str = "kind";
/// Label: engine of a batch.
pub(crate) const ENGINE: &str = "engine";

/// Source transactions applied.
pub(crate) const TRANSACTIONS_APPLIED: &str = "tcf_destination_transactions_applied_total";
/// Rows applied (initial load included).
pub(crate) const ROWS_APPLIED: &str = "tcf_destination_rows_applied_total";
/// Bytes of row payload applied.
pub(crate) const BYTES_APPLIED: &str = "tcf_destination_bytes_applied_total";
/// Target transactions (apply calls) committed, by `engine`.
pub(crate) const BATCHES_APPLIED: &str = "tcf_destination_batches_applied_total";
/// Duration of one apply call, seconds (histogram).
pub(crate) const APPLY_SECONDS: &str = "tcf_destination_apply_seconds";
/// Skip-only advances persisted in the local progress space.
pub(crate) const SKIP_ADVANCES: &str = "tcf_destination_skip_advances_total";
/// Transactions received at or below the position and not applied again.
pub(crate) const DUPLICATES_SKIPPED: &str = "tcf_destination_duplicates_skipped_total";
/// Snapshot rows applied by initial loads.
pub(crate) const SNAPSHOT_ROWS: &str = "tcf_destination_snapshot_rows_applied_total";
/// Errors by `kind`.
pub(crate) const ERRORS: &str = "tcf_destination_errors_total";
/// State (1 connecting, 2 loading, 3 streaming, 4 gapped, 5 diverged,
/// 6 stopped, 7 failed).
pub(crate) const STATE: &str = "tcf_destination_state";
/// Lag, seconds, on the gateway's clock.
pub(crate) const LAG_SECONDS: &str = "tcf_destination_lag_seconds";
/// Lag, rows.
pub(crate) const LAG_LSN: &str = "tcf_destination_lag_lsn";
/// Vclock signature of the applied position.
pub(crate) const POSITION_SIGNATURE: &str = "tcf_destination_position_signature";
/// Verification chunks handled (recorded with the position).
pub(crate) const WALK_CHUNKS: &str = "tcf_destination_walk_chunks_total";
/// Keys compared by verification chunks.
pub(crate) const WALK_ROWS_COMPARED: &str = "tcf_destination_walk_rows_compared_total";
/// Mismatching keys found (missing, extra or different).
pub(crate) const WALK_MISMATCHES: &str = "tcf_destination_walk_mismatches_total";
/// Rows replaced, inserted or deleted by repair walks.
pub(crate) const WALK_REPAIRED: &str = "tcf_destination_walk_repaired_total";
/// WAL gaps after which the position moved on and a repair walk started.
pub(crate) const WALK_GAPS: &str = "tcf_destination_walk_gaps_total";
