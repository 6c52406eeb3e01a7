//! The target replicaset: its single writable instance, the tcf functions
//! installed there, the stored position and the schema.

use rmpv::Value;
use tcf_api::progress::{self, ProgressState, VerifyRow};
use tcf_iproto::{
    ConnectOptions, Connection, Error as IprotoError, Vclock, consts::request, msgpack::write,
    schema::Catalog, vote,
};
use uuid::Uuid;

use crate::{
    instance::{self, TargetInstance},
    packed::{self, ApplyRow},
};

/// The Lua functions installed on the target (versioned by name), after
/// tcf-api's [`progress::LUA`] (the rows' layout), which they use.
const LUA: &str = include_str!("../lua/tcf_v1.lua");
/// The version `tcf_v1_ensure` must report.
const LUA_VERSION: u64 = 1;
/// The verification functions (`docs/verify.md`), installed after [`LUA`].
const VERIFY_LUA: &str = include_str!("../lua/tcf_verify_v1.lua");

/// A failure talking to the target.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TargetError {
    /// No instance is writable (or none answers).
    #[error("no writable instance among {0:?}")]
    NoMaster(Vec<String>),
    /// More than one writable instance: refuse to write.
    #[error("more than one writable instance: {0:?}")]
    TwoMasters(Vec<String>),
    /// The instance chosen is not (or no longer) the replicaset's writable
    /// master (read-only, a Raft follower, the synchro queue owned by another).
    #[error("target {uri} is not the writable master: {reason}")]
    NotMaster {
        /// The instance.
        uri: String,
        /// Why.
        reason: String,
    },
    /// The stored position differs from what the batch expects (a retry of
    /// a batch that committed, or another destination writing).
    #[error("position mismatch: {0}")]
    Position(String),
    /// The stream comes from another source replicaset than the stored one.
    #[error("source mismatch: {0}")]
    Source(String),
    /// A target space is not empty before an initial load.
    #[error("{0}")]
    NonEmpty(String),
    /// The target's schema does not allow the apply.
    #[error("schema: {0}")]
    Schema(String),
    /// A walk cannot start (a repair after a WAL gap runs).
    #[error("{0}")]
    Walk(String),
    /// A batch that cannot be encoded.
    #[error(transparent)]
    Rows(#[from] packed::TooLarge),
    /// Any other error of the target.
    #[error("target {uri}: {source}")]
    Iproto {
        /// The instance.
        uri: String,
        /// The cause.
        #[source]
        source: IprotoError,
    },
}

impl TargetError {
    fn from_call(uri: &str, e: IprotoError) -> Self {
        if let IprotoError::Server(s) = &e {
            for (prefix, make) in [
                (
                    "tcf_position: ",
                    TargetError::Position as fn(String) -> TargetError,
                ),
                ("tcf_source: ", TargetError::Source),
                ("tcf_nonempty: ", TargetError::NonEmpty),
                ("tcf_schema: ", TargetError::Schema),
                ("tcf_walk: ", TargetError::Walk),
            ] {
                if let Some(rest) = s.message.strip_prefix(prefix) {
                    return make(rest.to_owned());
                }
            }
        }
        TargetError::Iproto {
            uri: uri.to_owned(),
            source: e,
        }
    }
}

/// Picks the single writable instance. IPROTO_VOTE (no login) shortlists
/// the instances that are not read-only; since 2.10 its `is_ro` folds in the
/// Raft state and the synchro queue's owner, on 2.6 it is `read_only` alone.
/// When more than one is shortlisted (a 2.6 replicaset under Raft: every
/// instance has `read_only = false`), each is asked what it is
/// ([`TargetInstance::not_writable`]) and only the writable ones count.
pub(crate) async fn find_master(
    instances: &[String],
    opts: &ConnectOptions,
) -> Result<String, TargetError> {
    let asks = instances
        .iter()
        .map(|uri| async move { (uri.clone(), vote(uri, opts).await) });
    let mut writable: Vec<String> = futures::future::join_all(asks)
        .await
        .into_iter()
        .filter_map(|(uri, b)| b.ok().filter(|b| !b.is_ro).map(|_| uri))
        .collect();
    if writable.len() > 1 {
        let asks = writable
            .iter()
            .map(|uri| async move { (uri.clone(), describe(uri, opts).await) });
        writable = futures::future::join_all(asks)
            .await
            .into_iter()
            .filter_map(|(uri, i)| i.ok().filter(|i| i.not_writable().is_none()).map(|_| uri))
            .collect();
    }
    match writable.len() {
        1 => Ok(writable.into_iter().next().unwrap_or_default()),
        0 => Err(TargetError::NoMaster(instances.to_vec())),
        _ => Err(TargetError::TwoMasters(writable)),
    }
}

/// Connects to `uri` and asks what it is.
async fn describe(uri: &str, opts: &ConnectOptions) -> Result<TargetInstance, TargetError> {
    let conn = Connection::connect(uri, opts)
        .await
        .map_err(|e| TargetError::Iproto {
            uri: uri.to_owned(),
            source: e,
        })?;
    describe_on(&conn, uri).await
}

async fn describe_on(conn: &Connection, uri: &str) -> Result<TargetInstance, TargetError> {
    let v = conn
        .eval(instance::LUA, &[][..] as &[Value])
        .await
        .map_err(|e| TargetError::from_call(uri, e))?;
    let first = v.as_array().and_then(|a| a.first()).unwrap_or(&Value::Nil);
    TargetInstance::decode(first).map_err(|e| TargetError::Schema(format!("{uri}: {e}")))
}

/// One stored progress row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProgressRow {
    pub(crate) vclock: Vclock,
    pub(crate) source_uuid: String,
    pub(crate) state: ProgressState,
    pub(crate) writer: String,
}

impl From<progress::Row> for ProgressRow {
    fn from(r: progress::Row) -> Self {
        Self {
            vclock: r.vclock,
            source_uuid: r.source_uuid,
            state: r.state,
            writer: r.writer,
        }
    }
}

/// The three progress rows of a replicaset (see `docs/progress.md`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Position {
    pub(crate) memtx: Option<ProgressRow>,
    pub(crate) vinyl: Option<ProgressRow>,
    pub(crate) local: Option<ProgressRow>,
}

impl Position {
    fn rows(&self) -> impl Iterator<Item = &ProgressRow> {
        [&self.memtx, &self.vinyl, &self.local]
            .into_iter()
            .flatten()
    }

    /// Whether anything is stored.
    pub(crate) fn exists(&self) -> bool {
        self.rows().next().is_some()
    }

    /// The position: the component-wise maximum of the rows.
    pub(crate) fn current(&self) -> Vclock {
        let mut v = Vclock::new();
        for r in self.rows() {
            v.merge(&r.vclock);
        }
        v
    }

    /// An initial load began and did not finish.
    pub(crate) fn loading(&self) -> bool {
        self.rows().any(|r| r.state == ProgressState::Loading)
    }

    /// The stored source replicaset UUID, if any.
    pub(crate) fn source_uuid(&self) -> Option<&str> {
        self.rows()
            .map(|r| r.source_uuid.as_str())
            .find(|u| !u.is_empty())
    }

    /// The vclock stored in one engine's row (empty when absent).
    pub(crate) fn of(&self, engine: Engine) -> Vclock {
        let row = match engine {
            Engine::Memtx => &self.memtx,
            Engine::Vinyl => &self.vinyl,
        };
        row.as_ref().map(|r| r.vclock.clone()).unwrap_or_default()
    }

    /// Writers other than `me` found in the rows.
    pub(crate) fn other_writers(&self, me: &str) -> Vec<String> {
        self.rows()
            .map(|r| r.writer.clone())
            .filter(|w| !w.is_empty() && w != me)
            .collect()
    }
}

/// The storage engine of a batch (2.6 refuses a transaction using both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) enum Engine {
    #[default]
    Memtx,
    Vinyl,
}

impl Engine {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Memtx => "memtx",
            Self::Vinyl => "vinyl",
        }
    }
}

/// What the apply function checks and writes with the data.
#[derive(Debug, Clone)]
pub(crate) struct Meta<'a> {
    pub(crate) cluster: &'a str,
    pub(crate) replicaset: &'a str,
    pub(crate) engine: Engine,
    pub(crate) expected: &'a Vclock,
    pub(crate) new: &'a Vclock,
    pub(crate) source_uuid: &'a str,
    pub(crate) loading: bool,
    pub(crate) destination: &'a str,
    pub(crate) writer: &'a str,
}

/// A connection to the target's writable instance with tcf's functions installed.
pub(crate) struct Target {
    conn: Connection,
    uri: String,
    instance: TargetInstance,
    catalog: Catalog,
}

impl Target {
    /// Connects to `uri`, checks that it is the replicaset's writable master
    /// (else [`TargetError::NotMaster`]), installs the functions, creates the
    /// progress spaces if missing and reads the schema.
    pub(crate) async fn connect(uri: &str, opts: &ConnectOptions) -> Result<Self, TargetError> {
        let conn = Connection::connect(uri, opts)
            .await
            .map_err(|e| TargetError::Iproto {
                uri: uri.to_owned(),
                source: e,
            })?;
        let instance = describe_on(&conn, uri).await?;
        if let Some(reason) = instance.not_writable() {
            return Err(TargetError::NotMaster {
                uri: uri.to_owned(),
                reason,
            });
        }
        install(
            &conn,
            uri,
            progress::LUA,
            None,
            "progress layout",
            progress::VERSION,
        )
        .await?;
        install(
            &conn,
            uri,
            LUA,
            Some("tcf_v1_ensure"),
            "functions",
            LUA_VERSION,
        )
        .await?;
        install(
            &conn,
            uri,
            VERIFY_LUA,
            Some("tcf_verify_v1_ensure"),
            "verification functions",
            LUA_VERSION,
        )
        .await?;
        let catalog = Catalog::load(&conn)
            .await
            .map_err(|e| TargetError::Schema(e.to_string()))?;
        Ok(Self {
            conn,
            uri: uri.to_owned(),
            instance,
            catalog,
        })
    }

    /// The target replicaset's UUID.
    pub(crate) fn uuid(&self) -> Uuid {
        self.instance.replicaset_uuid
    }

    /// What the target instance reported when this connection was made.
    pub(crate) fn instance(&self) -> &TargetInstance {
        &self.instance
    }

    /// The target's spaces.
    pub(crate) fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Reads the schema again (after a missing space was reported).
    pub(crate) async fn reload_catalog(&mut self) -> Result<(), TargetError> {
        self.catalog = Catalog::load(&self.conn)
            .await
            .map_err(|e| TargetError::Schema(e.to_string()))?;
        Ok(())
    }

    /// The stored position of `(cluster, replicaset)`.
    pub(crate) async fn position(
        &self,
        cluster: &str,
        replicaset: &str,
    ) -> Result<Position, TargetError> {
        let args = [Value::from(cluster), Value::from(replicaset)];
        let v = self
            .conn
            .call("tcf_v1_position", &args[..])
            .await
            .map_err(|e| TargetError::from_call(&self.uri, e))?;
        let rows: Vec<progress::Row> = progress::decode_answer(&v).map_err(|e| {
            TargetError::Schema(format!(
                "{}: the progress of {cluster}/{replicaset}: {e}",
                self.uri
            ))
        })?;
        let mut pos = Position::default();
        for r in rows {
            let slot = match r.engine {
                progress::Engine::Memtx => &mut pos.memtx,
                progress::Engine::Vinyl => &mut pos.vinyl,
                progress::Engine::Local => &mut pos.local,
            };
            *slot = Some(r.into());
        }
        Ok(pos)
    }

    async fn call_raw(
        &self,
        function: &str,
        args: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), TargetError> {
        self.conn
            .request_with(request::CALL, None, |o| {
                write::map_len(o, 2);
                write::uint(o, u64::from(tcf_iproto::consts::key::FUNCTION_NAME));
                write::str(o, function);
                write::uint(o, u64::from(tcf_iproto::consts::key::TUPLE));
                args(o);
            })
            .await
            .map(drop)
            .map_err(|e| TargetError::from_call(&self.uri, e))
    }

    /// Applies `rows` and the progress row in one target transaction.
    pub(crate) async fn apply(&self, m: &Meta<'_>, rows: &[ApplyRow]) -> Result<(), TargetError> {
        let rows = packed::pack(rows)?;
        self.call_raw("tcf_v1_apply", |o| {
            write::array_len(o, 2);
            write_meta(o, m);
            rows.write(o);
        })
        .await
    }

    /// The connection to the target's master (verification reads).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Every verification row of `(cluster, replicaset)`.
    pub(crate) async fn verify_load(
        &self,
        cluster: &str,
        replicaset: &str,
    ) -> Result<Vec<VerifyRow>, TargetError> {
        let args = [Value::from(cluster), Value::from(replicaset)];
        let v = self
            .conn
            .call("tcf_verify_v1_load", &args[..])
            .await
            .map_err(|e| TargetError::from_call(&self.uri, e))?;
        progress::decode_answer(&v).map_err(|e| {
            TargetError::Schema(format!(
                "{}: the verification rows of {cluster}/{replicaset}: {e}",
                self.uri
            ))
        })
    }

    /// Starts a walk of `(cluster, replicaset)` (forgets the previous one).
    pub(crate) async fn verify_start(
        &self,
        cluster: &str,
        replicaset: &str,
        walk: &Value,
    ) -> Result<(), TargetError> {
        let args = [Value::from(cluster), Value::from(replicaset), walk.clone()];
        self.conn
            .call("tcf_verify_v1_start", &args[..])
            .await
            .map(drop)
            .map_err(|e| TargetError::from_call(&self.uri, e))
    }

    /// Moves the position to `m.new` after a WAL gap and starts the repair
    /// walk `walk`, in one transaction.
    pub(crate) async fn verify_gap(&self, m: &Meta<'_>, walk: &Value) -> Result<(), TargetError> {
        self.call_raw("tcf_verify_v1_gap", |o| {
            write::array_len(o, 2);
            write_meta(o, m);
            write::value(o, walk);
        })
        .await
    }

    /// Records a chunk (position, the walk's next step, counters, keys,
    /// repairs) in one transaction of `m.engine`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn verify_chunk(
        &self,
        m: &Meta<'_>,
        walk: &Value,
        space: &str,
        delta: &Value,
        keys: &Value,
        cap: u32,
        rows: &[ApplyRow],
    ) -> Result<(), TargetError> {
        let rows = packed::pack(rows)?;
        self.call_raw("tcf_verify_v1_chunk", |o| {
            write::array_len(o, 7);
            write_meta(o, m);
            write::value(o, walk);
            write::str(o, space);
            write::value(o, delta);
            write::value(o, keys);
            write::uint(o, u64::from(cap));
            rows.write(o);
        })
        .await
    }

    /// Persists a skip-only advance in the local progress space.
    pub(crate) async fn advance_local(&self, m: &Meta<'_>) -> Result<(), TargetError> {
        self.call_raw("tcf_v1_advance_local", |o| {
            write::array_len(o, 1);
            write_meta(o, m);
        })
        .await
    }

    /// Starts an initial load of `spaces` (target ids).
    pub(crate) async fn load_begin(
        &self,
        m: &Meta<'_>,
        spaces: &[u32],
        truncate: bool,
    ) -> Result<(), TargetError> {
        self.call_raw("tcf_v1_load_begin", |o| {
            write::array_len(o, 3);
            write_meta(o, m);
            write::array_len(o, spaces.len() as u32);
            for s in spaces {
                write::uint(o, u64::from(*s));
            }
            write::bool(o, truncate);
        })
        .await
    }

    /// Records `m.new` as the position of every engine row, state streaming.
    pub(crate) async fn set_position(&self, m: &Meta<'_>) -> Result<(), TargetError> {
        self.call_raw("tcf_v1_set_position", |o| {
            write::array_len(o, 1);
            write_meta(o, m);
        })
        .await
    }
}

fn write_vclock(o: &mut Vec<u8>, v: &Vclock) {
    v.encode(o);
}

fn write_meta(o: &mut Vec<u8>, m: &Meta<'_>) {
    write::map_len(o, 9);
    for (k, v) in [
        ("cluster", m.cluster),
        ("rs", m.replicaset),
        ("engine", m.engine.name()),
        ("source_uuid", m.source_uuid),
        ("state", if m.loading { "loading" } else { "streaming" }),
        ("destination", m.destination),
        ("writer", m.writer),
    ] {
        write::str(o, k);
        write::str(o, v);
    }
    write::str(o, "expected");
    write_vclock(o, m.expected);
    write::str(o, "new");
    write_vclock(o, m.new);
}

/// EVALs `lua` on `conn` and checks the version it reports: the chunk's own
/// first return value, or with `ensure` that function's (it also creates
/// what is missing). `what` names the chunk in the error.
async fn install(
    conn: &Connection,
    uri: &str,
    lua: &str,
    ensure: Option<&str>,
    what: &str,
    expected: u64,
) -> Result<(), TargetError> {
    let none = &[][..] as &[Value];
    let mut v = conn
        .eval(lua, none)
        .await
        .map_err(|e| TargetError::from_call(uri, e))?;
    if let Some(f) = ensure {
        v = conn
            .call(f, none)
            .await
            .map_err(|e| TargetError::from_call(uri, e))?;
    }
    let version = v.as_array().and_then(|a| a.first()).and_then(Value::as_u64);
    if version == Some(expected) {
        Ok(())
    } else {
        Err(TargetError::Schema(format!(
            "tcf {what}: version {version:?} reported, {expected} expected"
        )))
    }
}

#[cfg(test)]
mod tests {
    use tcf_iproto::ServerError;

    use super::*;

    fn server(message: &str) -> IprotoError {
        IprotoError::Server(ServerError {
            code: 32,
            message: message.into(),
            stack: Vec::new(),
        })
    }

    #[test]
    fn the_lua_functions_errors_are_classified_by_their_kind() {
        let e = |m: &str| TargetError::from_call("t:3301", server(m));
        assert!(
            matches!(e("tcf_position: holds {1: 5}"), TargetError::Position(m) if m == "holds {1: 5}")
        );
        assert!(matches!(e("tcf_source: from u2"), TargetError::Source(m) if m == "from u2"));
        assert!(matches!(
            e("tcf_nonempty: space test holds 3 tuples"),
            TargetError::NonEmpty(_)
        ));
        assert!(matches!(
            e("tcf_schema: no space x"),
            TargetError::Schema(_)
        ));
        assert!(matches!(e("tcf_walk: a repair runs"), TargetError::Walk(_)));
        assert!(matches!(
            e("Duplicate key exists"),
            TargetError::Iproto { uri, .. } if uri == "t:3301"
        ));
        assert!(matches!(
            TargetError::from_call("t:3301", IprotoError::Closed),
            TargetError::Iproto { .. }
        ));
    }

    fn row(lsn: u64, state: ProgressState, uuid: &str, writer: &str) -> Option<ProgressRow> {
        Some(ProgressRow {
            vclock: [(1, lsn), (2, 10 - lsn)].into_iter().collect(),
            source_uuid: uuid.into(),
            state,
            writer: writer.into(),
        })
    }

    #[test]
    fn the_position_is_the_maximum_of_the_rows() {
        let p = Position {
            memtx: row(3, ProgressState::Streaming, "", "me"),
            vinyl: row(7, ProgressState::Streaming, "u1", "me"),
            local: None,
        };
        assert!(p.exists());
        assert_eq!(p.current(), [(1, 7), (2, 7)].into_iter().collect());
        assert_eq!(p.of(Engine::Memtx), [(1, 3), (2, 7)].into_iter().collect());
        assert_eq!(p.source_uuid(), Some("u1"));
        assert!(!p.loading());
        assert!(p.other_writers("me").is_empty());
        assert_eq!(p.other_writers("you"), ["me", "me"]);
        let empty = Position::default();
        assert!(!empty.exists() && empty.current().is_empty() && empty.source_uuid().is_none());
    }

    #[test]
    fn one_loading_row_makes_a_load_unfinished() {
        let p = Position {
            memtx: row(0, ProgressState::Streaming, "u1", "me"),
            vinyl: row(0, ProgressState::Loading, "u1", "me"),
            local: row(0, ProgressState::Streaming, "u1", ""),
        };
        assert!(p.loading());
        assert!(
            p.other_writers("me").is_empty(),
            "an empty writer is nobody"
        );
    }
}
