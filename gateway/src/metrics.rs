//! Metric names of `tcf-gateway` (documented in `docs/metrics.md`).
//!
//! Every metric carries the `replicaset` label, plus the global labels from
//! `metrics_labels` and `gateway` (the alias).

/// Label: source replicaset.
pub(crate) const REPLICASET: &str = "replicaset";
/// Label: skip or error kind.
pub(crate) const KIND: &str = "kind";
/// Label: which position.
pub(crate) const POSITION: &str = "position";

/// Rows received from the source (WAL rows, snapshot rows excluded).
pub(crate) const ROWS_READ: &str = "tcf_gateway_rows_read_total";
/// Bytes of row bodies received from the source.
pub(crate) const BYTES_READ: &str = "tcf_gateway_bytes_read_total";
/// Source transactions received.
pub(crate) const TRANSACTIONS_READ: &str = "tcf_gateway_transactions_read_total";
/// Rows sent to the destination.
pub(crate) const ROWS_SHIPPED: &str = "tcf_gateway_rows_shipped_total";
/// Transactions sent to the destination.
pub(crate) const TRANSACTIONS_SHIPPED: &str = "tcf_gateway_transactions_shipped_total";
/// Bytes of row payload sent to the destination.
pub(crate) const BYTES_SHIPPED: &str = "tcf_gateway_bytes_shipped_total";
/// Rows not shipped, by `kind` (nop, ddl, system, local).
pub(crate) const ROWS_SKIPPED: &str = "tcf_gateway_rows_skipped_total";
/// Transactions not shipped because a tcf destination wrote them (loop breaker).
pub(crate) const TRANSACTIONS_MARKED: &str = "tcf_gateway_transactions_marked_total";
/// Synchronous transactions dropped on ROLLBACK (with those queued behind).
pub(crate) const SYNC_ROLLED_BACK: &str = "tcf_gateway_sync_rolled_back_total";
/// Snapshot rows spooled for an initial load.
pub(crate) const SNAPSHOT_ROWS: &str = "tcf_gateway_snapshot_rows_total";
/// Stream-ending errors by `kind` (wal_gap, diverged, source_mismatch,
/// unknown_space, stopped, unavailable, internal).
pub(crate) const ERRORS: &str = "tcf_gateway_errors_total";
/// Reconnections to a source instance (including fail-overs).
pub(crate) const RECONNECTS: &str = "tcf_gateway_reconnects_total";
/// Stream state (0 idle, 1 connecting, 2 loading, 3 streaming, 4 gapped,
/// 5 diverged, 6 stopped, 7 failed).
pub(crate) const STATE: &str = "tcf_gateway_state";
/// Receipt of the oldest unacknowledged transaction to now, seconds.
pub(crate) const LAG_SECONDS: &str = "tcf_gateway_lag_seconds";
/// Source vclock signature minus the acknowledged one, rows.
pub(crate) const LAG_LSN: &str = "tcf_gateway_lag_lsn";
/// Vclock signature of a `position` (source, processed, shipped, acked).
pub(crate) const POSITION_SIGNATURE: &str = "tcf_gateway_position_signature";
/// Rows of xlog retained behind the position on the instance read.
pub(crate) const XLOG_HEADROOM: &str = "tcf_gateway_xlog_headroom_rows";
/// Bytes waiting in the replicaset's queue.
pub(crate) const QUEUE_BYTES: &str = "tcf_gateway_queue_bytes";
/// Transactions held until a synchronous CONFIRM, and their bytes.
pub(crate) const SYNC_HELD: &str = "tcf_gateway_sync_held_transactions";
/// Bytes of the transactions held until a synchronous CONFIRM.
pub(crate) const SYNC_HELD_BYTES: &str = "tcf_gateway_sync_held_bytes";
/// Verification chunks made by the walker (watermarks written, rows selected).
pub(crate) const WALK_CHUNKS: &str = "tcf_gateway_walk_chunks_total";
/// Rows selected on the source master by verification chunks.
pub(crate) const WALK_ROWS: &str = "tcf_gateway_walk_rows_total";
/// Verification chunks that failed on the source master (retried).
pub(crate) const WALK_ERRORS: &str = "tcf_gateway_walk_errors_total";
/// Verification chunks put into the stream, by `kind` (`chunk`, `void`).
pub(crate) const WALK_MARKERS: &str = "tcf_gateway_walk_markers_total";
