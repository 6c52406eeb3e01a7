//! A replicator's (gateway's or destination's) control API: the status it
//! serves at `GET /api/v1/status` and the body of `POST /api/v1/start` and
//! `/api/v1/stop`. The worker reads these types; the replicators write them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tcf_iproto::Vclock;

/// State of one replicaset's stream (gateway) or apply loop (destination).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicasetState {
    /// No destination is connected (gateway only).
    Idle,
    /// Choosing or connecting to an instance or a gateway.
    Connecting,
    /// An initial load is under way.
    Loading,
    /// Transactions flow.
    Streaming,
    /// The source no longer has the rows after the position (WAL gap).
    Gapped,
    /// The position is ahead of every source instance.
    Diverged,
    /// Stopped by an operator (or the coordinator).
    Stopped,
    /// Ended by an error that needs an operator (see `last_error`).
    Failed,
}

impl ReplicasetState {
    /// Numeric value of the `*_state` gauges (`docs/metrics.md`).
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

    /// Whether the loop is running or about to (connecting, loading,
    /// streaming): what a stop waits to see end.
    pub fn is_running(self) -> bool {
        matches!(self, Self::Connecting | Self::Loading | Self::Streaming)
    }

    /// Whether a destination in this state keeps its cluster promotable:
    /// streaming, or reconnecting (its source may be the failed cluster).
    pub fn keeps_promotable(self) -> bool {
        matches!(self, Self::Streaming | Self::Connecting)
    }

    /// The name used in JSON and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Connecting => "connecting",
            Self::Loading => "loading",
            Self::Streaming => "streaming",
            Self::Gapped => "gapped",
            Self::Diverged => "diverged",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for ReplicasetState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A replicaset status with a state and a last error (both replicators').
pub trait Stateful {
    /// Sets the state; `error`, when given, becomes the last error (the
    /// previous one is kept otherwise, so a reconnect does not hide why).
    fn set_state(&mut self, state: ReplicasetState, error: Option<String>);
}

impl Stateful for GatewayReplicaset {
    fn set_state(&mut self, state: ReplicasetState, error: Option<String>) {
        self.state = state;
        if error.is_some() {
            self.last_error = error;
        }
    }
}

impl Stateful for DestinationReplicaset {
    fn set_state(&mut self, state: ReplicasetState, error: Option<String>) {
        self.state = state;
        if error.is_some() {
            self.last_error = error;
        }
    }
}

/// One source replicaset as a gateway streams it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayReplicaset {
    /// State.
    pub state: ReplicasetState,
    /// The source instance read (`host:port`), if any.
    pub instance: Option<String>,
    /// The destination connected (its alias), if any.
    pub destination: Option<String>,
    /// Source replicaset UUID.
    pub source_uuid: Option<String>,
    /// The instance UUID this gateway subscribes with (stable per gateway
    /// alias, cluster and replicaset: the source's WAL consumer on 3.3+).
    #[serde(default)]
    pub subscriber_uuid: Option<String>,
    /// Tarantool version of the source instance read last.
    #[serde(default)]
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
    /// The verification walk whose chunks this stream makes, if any
    /// (`docs/verify.md`).
    #[serde(default)]
    pub walk: Option<String>,
    /// Why the last verification chunk failed on the source (retried).
    #[serde(default)]
    pub walk_error: Option<String>,
}

impl Default for GatewayReplicaset {
    fn default() -> Self {
        Self {
            state: ReplicasetState::Idle,
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
            walk: None,
            walk_error: None,
        }
    }
}

/// One target replicaset as a destination applies to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationReplicaset {
    /// State.
    pub state: ReplicasetState,
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
    /// The last verification walk, in short (`GET /api/v1/verify` has the
    /// report); `null` when none.
    #[serde(default)]
    pub walk: Option<WalkSummary>,
}

/// A replicaset's verification walk, in short.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkSummary {
    /// The walk's id.
    pub id: String,
    /// Verify or repair.
    pub mode: crate::verify::WalkMode,
    /// Why it runs.
    pub reason: crate::verify::WalkReason,
    /// Running or done.
    pub state: crate::verify::WalkState,
    /// Mismatches found so far.
    pub mismatches: u64,
}

impl WalkSummary {
    /// Whether it blocks the target's promotion: a repair after a WAL gap
    /// that has not ended.
    pub fn blocks_promotion(&self) -> bool {
        self.reason == crate::verify::WalkReason::WalGap
            && self.state == crate::verify::WalkState::Running
    }
}

impl Default for DestinationReplicaset {
    fn default() -> Self {
        Self {
            state: ReplicasetState::Connecting,
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
            walk: None,
        }
    }
}

/// A gateway's `GET /api/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayStatus {
    /// The gateway's alias.
    pub gateway: String,
    /// The source cluster.
    pub cluster: String,
    /// Whether it serves streams (start/stop).
    pub running: bool,
    /// The newest coordinator term seen.
    pub term: u64,
    /// By source replicaset label.
    pub replicasets: BTreeMap<String, GatewayReplicaset>,
}

/// A destination's `GET /api/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationStatus {
    /// The destination's alias.
    pub destination: String,
    /// The target cluster.
    pub cluster: String,
    /// Whether its apply loops run (start/stop).
    pub running: bool,
    /// The newest coordinator term seen.
    pub term: u64,
    /// By replicaset label.
    pub replicasets: BTreeMap<String, DestinationReplicaset>,
}

impl DestinationStatus {
    /// Each replicaset's state, `stopped` for all when the destination is
    /// stopped (its loops have ended whatever their last state says).
    pub fn states(&self) -> BTreeMap<String, ReplicasetState> {
        self.replicasets
            .iter()
            .map(|(rs, s)| {
                let state = if self.running {
                    s.state
                } else {
                    ReplicasetState::Stopped
                };
                (rs.clone(), state)
            })
            .collect()
    }

    /// The applied position per source replicaset UUID (replicasets that
    /// have not learned their source's UUID yet are left out).
    pub fn applied_by_source(&self) -> BTreeMap<String, Vclock> {
        self.replicasets
            .values()
            .filter_map(|r| {
                let uuid = r.source_uuid.clone().filter(|u| !u.is_empty())?;
                Some((uuid, r.applied_vclock.clone()))
            })
            .collect()
    }

    /// Whether every replicaset streams (and there is at least one).
    pub fn all_streaming(&self) -> bool {
        !self.replicasets.is_empty()
            && self
                .replicasets
                .values()
                .all(|r| r.state == ReplicasetState::Streaming)
    }
}

/// The body of `POST /api/v1/start` and `/api/v1/stop`: `{"term": N}`
/// (optional) and, for the `admin` role only, `"reset": true`. An empty body
/// is a command without a term.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// The coordinator's term, if it sends one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    /// Sets the newest term seen to `term` whatever it was (role `admin`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
}

impl Command {
    /// Parses a body; an empty or blank body is a command without a term.
    pub fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        serde_json::from_slice(body)
    }
}

/// The answer to a start/stop command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandAnswer {
    /// Whether it runs now.
    pub running: bool,
    /// The newest term seen now.
    pub term: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_by_name() {
        for s in [
            ReplicasetState::Idle,
            ReplicasetState::Connecting,
            ReplicasetState::Loading,
            ReplicasetState::Streaming,
            ReplicasetState::Gapped,
            ReplicasetState::Diverged,
            ReplicasetState::Stopped,
            ReplicasetState::Failed,
        ] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<ReplicasetState>(&json).unwrap(), s);
        }
    }

    #[test]
    fn a_stopped_destination_reports_every_replicaset_stopped() {
        let mut d = DestinationStatus {
            destination: "d".into(),
            cluster: "B".into(),
            running: true,
            term: 1,
            replicasets: BTreeMap::new(),
        };
        assert!(!d.all_streaming(), "no replicaset is not 'all streaming'");
        let mut rs = DestinationReplicaset {
            state: ReplicasetState::Streaming,
            source_uuid: Some("u".into()),
            ..DestinationReplicaset::default()
        };
        rs.applied_vclock.set(1, 5);
        d.replicasets.insert("rs1".into(), rs);
        assert!(d.all_streaming());
        assert_eq!(d.applied_by_source().get("u").map(|v| v.get(1)), Some(5));
        d.running = false;
        assert_eq!(d.states().get("rs1"), Some(&ReplicasetState::Stopped));
    }

    #[test]
    fn commands_parse_and_refuse_unknown_keys() {
        assert_eq!(Command::parse(b" ").unwrap(), Command::default());
        assert_eq!(Command::parse(br#"{"term": 7}"#).unwrap().term, Some(7));
        assert!(Command::parse(br#"{"tern": 7}"#).is_err());
        let c = Command {
            term: Some(3),
            reset: false,
        };
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"term":3}"#);
    }
}

#[cfg(test)]
mod untagged {
    use crate::worker::Reported;

    #[test]
    fn vclocks_parse_inside_untagged_enums() {
        let j = r#"{"destination":"d","cluster":"B","running":true,"term":0,"replicasets":{"rs1":{"state":"streaming","gateway":null,"target_instance":null,"source_uuid":null,"applied_vclock":{"1":46},"source_vclock":{},"lag_seconds":0.0,"lag_lsn":0,"transactions_applied":0,"rows_applied":0,"last_error":null}}}"#;
        let r: Reported<super::DestinationStatus> = serde_json::from_str(j).unwrap();
        let Reported::Status(s) = r else {
            panic!("{r:?}")
        };
        assert_eq!(s.replicasets["rs1"].applied_vclock.get(1), 46);
        let e: Reported<super::DestinationStatus> =
            serde_json::from_str(r#"{"error": "refused"}"#).unwrap();
        assert!(matches!(e, Reported::Error { .. }));
    }
}
