//! What each replicaset's apply loop is doing, for `GET /api/v1/status`.

use serde::Serialize;
use tcf_iproto::Vclock;

/// State of one replicaset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Connecting to the target or a gateway.
    Connecting,
    /// Applying an initial load.
    Loading,
    /// Applying transactions.
    Streaming,
    /// The source lost the rows after the position (WAL gap).
    Gapped,
    /// The position is ahead of every source instance.
    Diverged,
    /// Stopped by an operator.
    Stopped,
    /// Stopped by an error that needs an operator (see `last_error`).
    Failed,
}

impl State {
    /// Numeric value for the state gauge.
    pub fn code(self) -> f64 {
        match self {
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
    /// The gateway in use.
    pub gateway: Option<String>,
    /// The target instance written to (the replicaset's master).
    pub target_instance: Option<String>,
    /// The source replicaset's UUID.
    pub source_uuid: Option<String>,
    /// The committed position (source vclock space).
    pub applied_vclock: Vclock,
    /// The source's newest vclock, as the gateway last reported it.
    pub source_vclock: Vclock,
    /// Lag in seconds, measured on the gateway's clock (last heartbeat).
    pub lag_seconds: f64,
    /// `source_vclock` minus `applied_vclock`, in rows.
    pub lag_lsn: u64,
    /// Transactions applied since start.
    pub transactions_applied: u64,
    /// Rows applied since start (initial load included).
    pub rows_applied: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
}

impl Default for RsStatus {
    fn default() -> Self {
        Self {
            state: State::Connecting,
            gateway: None,
            target_instance: None,
            source_uuid: None,
            applied_vclock: Vclock::new(),
            source_vclock: Vclock::new(),
            lag_seconds: 0.0,
            lag_lsn: 0,
            transactions_applied: 0,
            rows_applied: 0,
            last_error: None,
        }
    }
}

/// A shared, lockable status cell of one replicaset.
pub type StatusCell = tcf_common::status::Cell<RsStatus>;

/// Every replicaset's status, by label.
pub type Registry = tcf_common::status::Registry<RsStatus>;
