//! What each replicaset stream is doing, for `GET /api/v1/status` and metrics.

use serde::Serialize;
use tcf_iproto::Vclock;

/// State of one replicaset's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// No destination is connected.
    Idle,
    /// Choosing or connecting to a source instance.
    Connecting,
    /// Shipping the initial load.
    Loading,
    /// Shipping transactions.
    Streaming,
    /// The source no longer has the rows after the position (`on_wal_gap: stop`).
    Gapped,
    /// The position is ahead of every source instance.
    Diverged,
    /// Stopped by an operator.
    Stopped,
    /// Ended by another error (see `last_error`).
    Failed,
}

impl State {
    /// Numeric value for the state gauge.
    pub fn code(self) -> f64 {
        match self {
            Self::Idle => 0.0,
            Self::Connecting => 1.0,
            Self::Loading => 2.0,
            Self::Streaming => 3.0,
            Self::Gapped => 4.0,
            Self::Diverged => 5.0,
            Self::Stopped => 6.0,
            Self::Failed => 7.0,
        }
    }
}

/// Status of one replicaset, as served in JSON.
#[derive(Debug, Clone, Serialize)]
pub struct RsStatus {
    /// State.
    pub state: State,
    /// The source instance read (`host:port`), if any.
    pub instance: Option<String>,
    /// The destination connected (its alias), if any.
    pub destination: Option<String>,
    /// Source replicaset UUID.
    pub source_uuid: Option<String>,
    /// The instance UUID this gateway subscribes with (stable: see
    /// `tcf_gateway::subscriber_uuid`).
    pub subscriber_uuid: Option<String>,
    /// Tarantool version of the source instance read last.
    pub source_version: Option<String>,
    /// The source's newest vclock (polled from every instance).
    pub source_vclock: Vclock,
    /// Everything up to here is shipped or skipped.
    pub processed_vclock: Vclock,
    /// Position of the last transaction sent to the destination.
    pub shipped_vclock: Vclock,
    /// What the destination acknowledged as durably committed (and what the
    /// gateway acks to the source).
    pub acked_vclock: Vclock,
    /// Receipt of the oldest unacknowledged transaction to now, gateway clock.
    pub lag_seconds: f64,
    /// `source_vclock` minus `acked_vclock`, in rows (signature difference).
    pub lag_lsn: u64,
    /// Rows of retained xlog behind the position on the instance read
    /// (position signature minus its `gc_vclock` signature; negative = gap).
    pub xlog_headroom_rows: Option<i64>,
    /// Transactions shipped since start.
    pub transactions_shipped: u64,
    /// Rows shipped since start.
    pub rows_shipped: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
}

impl Default for RsStatus {
    fn default() -> Self {
        Self {
            state: State::Idle,
            instance: None,
            destination: None,
            source_uuid: None,
            subscriber_uuid: None,
            source_version: None,
            source_vclock: Vclock::new(),
            processed_vclock: Vclock::new(),
            shipped_vclock: Vclock::new(),
            acked_vclock: Vclock::new(),
            lag_seconds: 0.0,
            lag_lsn: 0,
            xlog_headroom_rows: None,
            transactions_shipped: 0,
            rows_shipped: 0,
            last_error: None,
        }
    }
}

/// A shared, lockable status cell of one replicaset.
pub type StatusCell = tcf_common::status::Cell<RsStatus>;

/// Every replicaset's status, by label.
pub type Registry = tcf_common::status::Registry<RsStatus>;

/// Sets `replicaset`'s state and its gauge; `error`, when given, becomes
/// `last_error` (kept otherwise).
pub(crate) fn set_state(cell: &StatusCell, replicaset: &str, state: State, error: Option<String>) {
    {
        let mut s = cell.lock();
        s.state = state;
        if error.is_some() {
            s.last_error = error;
        }
    }
    metrics::gauge!(crate::metrics::STATE, crate::metrics::REPLICASET => replicaset.to_owned())
        .set(state.code());
}
