//! The progress rows and the verification rows a destination keeps on its
//! target cluster (`docs/progress.md`, `docs/verify.md`): their layout and
//! the operations other components need on them, defined once in the Lua
//! module [`LUA`] that both tcf-destination (which writes the rows) and
//! tcf-worker (which reads them and marks a replicaset for reload) EVAL, and
//! the types its answers decode into. Nobody else indexes these tuples by
//! position or rewrites their fields.
//!
//! A caller that installs nothing EVALs [`LUA`] with the arguments of an
//! [`Op`] ([`Op::args`]) and decodes the first value of the answer
//! ([`decode_answer`]) into the type the operation documents.

use rmpv::Value;
use serde::{
    Deserialize, Serialize,
    de::{DeserializeOwned, IntoDeserializer},
};
use tcf_iproto::Vclock;

use crate::verify::{WalkMode, WalkReason, WalkState};

/// The Lua module (`api/lua/tcf_progress_v1.lua`). EVAL with no arguments
/// defines the global [`GLOBAL`] and returns [`VERSION`]; with an
/// operation's arguments it also runs the operation and returns its answer.
pub const LUA: &str = include_str!("../lua/tcf_progress_v1.lua");

/// The layout version [`LUA`] returns when EVALed without arguments.
pub const VERSION: u64 = 1;

/// The Lua global holding the module's functions once [`LUA`] ran
/// (tcf-destination's own Lua uses it).
pub const GLOBAL: &str = "tcf_progress_v1";

/// Which progress (or verification) space a row is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// `_tcf_progress_memtx` / `_tcf_verify_memtx`: global, written with
    /// memtx data.
    Memtx,
    /// `_tcf_progress_vinyl` / `_tcf_verify_vinyl`: global, written with
    /// vinyl data (2.6 refuses a transaction touching both engines).
    Vinyl,
    /// `_tcf_progress_local`: `is_local`, advances over skipped rows only.
    Local,
}

/// The `state` field of a progress row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressState {
    /// An initial load began and has not finished (or a reload was asked
    /// for, [`Op::MarkReload`]).
    Loading,
    /// Transactions are applied from the stored position.
    Streaming,
}

impl ProgressState {
    /// `Loading` when `loading`, else `Streaming`.
    pub fn of_loading(loading: bool) -> Self {
        if loading {
            Self::Loading
        } else {
            Self::Streaming
        }
    }

    /// The name stored in the tuple.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loading => "loading",
            Self::Streaming => "streaming",
        }
    }
}

/// One progress row with every field of its tuple, named.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The space it is in.
    #[serde(deserialize_with = "by_name")]
    pub engine: Engine,
    /// The source cluster's name (field 1).
    pub source_cluster: String,
    /// The source replicaset's label (field 2).
    pub source_replicaset: String,
    /// The committed position in the source's vclock space (field 3).
    pub vclock: Vclock,
    /// The source replicaset's UUID, `""` when unknown (field 4).
    pub source_uuid: String,
    /// Loading or streaming (field 5).
    #[serde(deserialize_with = "by_name")]
    pub state: ProgressState,
    /// The target's clock when written, seconds since the epoch (field 6).
    pub updated_at: f64,
    /// The alias of the destination that wrote it (field 7).
    pub destination: String,
    /// The id of the destination process that wrote it (field 8).
    pub writer: String,
}

/// One verification row with every field of its tuple, named.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyRow {
    /// The space it is in ([`Engine::Memtx`] or [`Engine::Vinyl`]).
    #[serde(deserialize_with = "by_name")]
    pub engine: Engine,
    /// The source cluster's name.
    pub source_cluster: String,
    /// The source replicaset's label.
    pub source_replicaset: String,
    /// The source space (`""` for the walk row).
    pub space: String,
    /// Hex of a mismatching key's MessagePack (`""` for the walk row and a
    /// space's counters).
    pub key: String,
    /// The walk, the counters or the key's record (a map).
    pub data: Value,
}

impl VerifyRow {
    /// Whether this is a replicaset's walk row.
    pub fn is_walk(&self) -> bool {
        self.space.is_empty() && self.key.is_empty()
    }
}

/// The head of a walk row: what other components need to know of a walk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkHead {
    /// The source replicaset's label.
    pub source_replicaset: String,
    /// The space the row is in.
    #[serde(deserialize_with = "by_name")]
    pub engine: Engine,
    /// The walk's id.
    pub id: String,
    /// Verify or repair.
    #[serde(deserialize_with = "by_name")]
    pub mode: WalkMode,
    /// Requested, or a repair after a WAL gap.
    #[serde(deserialize_with = "by_name")]
    pub reason: WalkReason,
    /// Running or done.
    #[serde(deserialize_with = "by_name")]
    pub state: WalkState,
    /// The next chunk's sequence number (of two rows of the same
    /// replicaset, the higher counts).
    pub seq: u64,
}

impl WalkHead {
    /// A repair after a WAL gap that has not ended: the cluster holds an
    /// incomplete copy and is not promotable.
    pub fn is_running_gap_repair(&self) -> bool {
        self.reason == WalkReason::WalGap && self.state == WalkState::Running
    }
}

/// An operation of [`LUA`] for a caller that installs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// Every progress row from a source cluster: `Vec<`[`Row`]`>`.
    Read {
        /// The source cluster.
        cluster: &'a str,
    },
    /// Marks a replicaset for reload (rows `loading` at the empty vclock,
    /// the local row deleted): `true`. Fails with `tcf_schema: ...` where
    /// no destination ever created the spaces.
    MarkReload {
        /// The source cluster.
        cluster: &'a str,
        /// The source replicaset.
        replicaset: &'a str,
    },
    /// The walk rows of every replicaset of a source cluster:
    /// `Vec<`[`WalkHead`]`>`.
    Walks {
        /// The source cluster.
        cluster: &'a str,
    },
}

impl Op<'_> {
    /// The EVAL arguments of [`LUA`] that run this operation.
    pub fn args(&self) -> Vec<Value> {
        match *self {
            Self::Read { cluster } => vec![Value::from("read"), Value::from(cluster)],
            Self::MarkReload {
                cluster,
                replicaset,
            } => vec![
                Value::from("mark_reload"),
                Value::from(cluster),
                Value::from(replicaset),
            ],
            Self::Walks { cluster } => vec![Value::from("walks"), Value::from(cluster)],
        }
    }
}

/// An answer of [`LUA`] that is not what its operation returns.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The answer holds no value.
    #[error("the answer of tcf_progress_v1 is empty")]
    Empty,
    /// The value does not have the documented shape.
    #[error("malformed answer of tcf_progress_v1: {0}")]
    Malformed(#[from] rmpv::ext::Error),
}

/// Decodes the first value of an EVAL or CALL answer (an array of the
/// returned values) into `T`.
pub fn decode_answer<T: DeserializeOwned>(answer: &Value) -> Result<T, DecodeError> {
    let first = answer
        .as_array()
        .and_then(|a| a.first())
        .ok_or(DecodeError::Empty)?;
    decode(first)
}

/// An enum by its name. MessagePack answers go through `rmpv::ext`, which
/// reads enums only in rmp-serde's encoding; the Lua writes their names.
fn by_name<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    let name = String::deserialize(d)?;
    T::deserialize(name.into_deserializer())
}

/// Decodes one value into `T`.
pub fn decode<T: DeserializeOwned>(value: &Value) -> Result<T, DecodeError> {
    Ok(rmpv::ext::from_value(value.clone())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::from(x)
    }

    #[test]
    fn a_row_decodes_with_every_field_named() {
        let row = Value::Map(vec![
            (s("engine"), s("vinyl")),
            (s("source_cluster"), s("A")),
            (s("source_replicaset"), s("rs1")),
            (
                s("vclock"),
                Value::Map(vec![(Value::from(1), Value::from(42))]),
            ),
            (s("source_uuid"), s("u")),
            (s("state"), s("loading")),
            (s("updated_at"), Value::F64(1.5)),
            (s("destination"), s("d")),
            (s("writer"), s("w")),
        ]);
        let answer = Value::Array(vec![Value::Array(vec![row])]);
        let rows: Vec<Row> = match decode_answer(&answer) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            rows,
            vec![Row {
                engine: Engine::Vinyl,
                source_cluster: "A".into(),
                source_replicaset: "rs1".into(),
                vclock: [(1, 42)].into_iter().collect(),
                source_uuid: "u".into(),
                state: ProgressState::Loading,
                updated_at: 1.5,
                destination: "d".into(),
                writer: "w".into(),
            }]
        );
    }

    #[test]
    fn an_unknown_state_or_a_missing_field_is_an_error() {
        let bad = Value::Map(vec![(s("engine"), s("memtx")), (s("state"), s("halfway"))]);
        assert!(matches!(
            decode::<Row>(&bad),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode_answer::<Vec<Row>>(&Value::Array(vec![])),
            Err(DecodeError::Empty)
        ));
    }

    #[test]
    fn operations_name_the_lua_functions() {
        for (op, name) in [
            (Op::Read { cluster: "A" }, "read"),
            (
                Op::MarkReload {
                    cluster: "A",
                    replicaset: "rs1",
                },
                "mark_reload",
            ),
            (Op::Walks { cluster: "A" }, "walks"),
        ] {
            let args = op.args();
            assert_eq!(args.first().and_then(Value::as_str), Some(name));
            assert!(
                LUA.contains(&format!("function P.{name}(")),
                "{name} is not defined in the Lua module"
            );
        }
        assert!(LUA.contains(&format!("local VERSION = {VERSION}\n")));
        assert!(LUA.contains(&format!("rawset(_G, '{GLOBAL}', P)")));
    }

    #[test]
    fn a_gap_repair_is_running_only_while_its_walk_runs() {
        let mut w = WalkHead {
            source_replicaset: "rs1".into(),
            engine: Engine::Memtx,
            id: "w".into(),
            mode: WalkMode::Repair,
            reason: WalkReason::WalGap,
            state: WalkState::Running,
            seq: 3,
        };
        assert!(w.is_running_gap_repair());
        w.state = WalkState::Done;
        assert!(!w.is_running_gap_repair());
        w.state = WalkState::Running;
        w.reason = WalkReason::Requested;
        assert!(!w.is_running_gap_repair());
    }
}
