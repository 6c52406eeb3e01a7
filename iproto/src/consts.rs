//! Numeric constants of the iproto protocol as Tarantool defines them
//! (`src/box/iproto_constants.h`; 2.6 plus the later additions tcf reads,
//! each marked with the version that added it).

/// Header and body map keys.
pub mod key {
    /// Request or response type (header).
    pub const REQUEST_TYPE: u8 = 0x00;
    /// Request id, echoed in the response (header).
    pub const SYNC: u8 = 0x01;
    /// Origin instance id of a WAL row; the sender's id on responses (header).
    pub const REPLICA_ID: u8 = 0x02;
    /// LSN of a WAL row in its origin's vclock component (header).
    pub const LSN: u8 = 0x03;
    /// Commit time of a WAL row, send time of a heartbeat (header, double).
    pub const TIMESTAMP: u8 = 0x04;
    /// Schema version (header of responses).
    pub const SCHEMA_VERSION: u8 = 0x05;
    /// Server version id in SUBSCRIBE/JOIN bodies.
    pub const SERVER_VERSION: u8 = 0x06;
    /// Replication group: 1 means replication-local (header).
    pub const GROUP_ID: u8 = 0x07;
    /// Difference `lsn - tsn`, present only in multi-row transactions (header).
    pub const TSN: u8 = 0x08;
    /// Row flags, see [`super::flag`] (header).
    pub const FLAGS: u8 = 0x09;
    /// Stream id (2.10+, header).
    pub const STREAM_ID: u8 = 0x0a;
    /// Space id (body).
    pub const SPACE_ID: u8 = 0x10;
    /// Index id (body).
    pub const INDEX_ID: u8 = 0x11;
    /// SELECT limit (body).
    pub const LIMIT: u8 = 0x12;
    /// SELECT offset (body).
    pub const OFFSET: u8 = 0x13;
    /// SELECT iterator (body).
    pub const ITERATOR: u8 = 0x14;
    /// Field number base of update operations: 0 or 1 (body).
    pub const INDEX_BASE: u8 = 0x15;
    /// Key (body).
    pub const KEY: u8 = 0x20;
    /// Tuple; update operations for UPDATE (body).
    pub const TUPLE: u8 = 0x21;
    /// Function name for CALL (body).
    pub const FUNCTION_NAME: u8 = 0x22;
    /// User name for AUTH (body).
    pub const USER_NAME: u8 = 0x23;
    /// Instance UUID (body).
    pub const INSTANCE_UUID: u8 = 0x24;
    /// Replicaset UUID, called cluster UUID on 2.6 (body).
    pub const CLUSTER_UUID: u8 = 0x25;
    /// Vclock map `{replica_id: lsn}` (body).
    pub const VCLOCK: u8 = 0x26;
    /// Lua expression for EVAL (body).
    pub const EXPR: u8 = 0x27;
    /// Operations of UPSERT (body).
    pub const OPS: u8 = 0x28;
    /// Ballot answering VOTE (body).
    pub const BALLOT: u8 = 0x29;
    /// Data of a response (body).
    pub const DATA: u8 = 0x30;
    /// Error message of a response, pre-2.4 style (body).
    pub const ERROR_24: u8 = 0x31;
    /// Anonymous replica flag in SUBSCRIBE (body).
    pub const REPLICA_ANON: u8 = 0x50;
    /// Origins whose rows must not be sent (SUBSCRIBE body).
    pub const ID_FILTER: u8 = 0x51;
    /// Error stack, 2.4+ (body).
    pub const ERROR: u8 = 0x52;
    /// Raft term of a PROMOTE/DEMOTE body; of an ack (2.11+ acts on it).
    pub const TERM: u8 = 0x53;
    /// Protocol version in IPROTO_ID (2.10+).
    pub const VERSION: u8 = 0x54;
    /// Feature ids in IPROTO_ID (2.10+).
    pub const FEATURES: u8 = 0x55;
    /// Vclock synchronisation request id in heartbeats and acks (2.11+).
    pub const VCLOCK_SYNC: u8 = 0x5a;
    /// Authentication method in the IPROTO_ID answer (2.11+).
    pub const AUTH_TYPE: u8 = 0x5b;
    /// Replicaset name in SUBSCRIBE and its answer (3.0+).
    pub const REPLICASET_NAME: u8 = 0x5c;
    /// Instance name in SUBSCRIBE/JOIN (3.0+).
    pub const INSTANCE_NAME: u8 = 0x5d;
}

/// Keys of a RAFT row's body (`IPROTO_RAFT_*`).
pub mod raft_key {
    /// Term.
    pub const TERM: u8 = 0x00;
    /// The instance id voted for in this term.
    pub const VOTE: u8 = 0x01;
    /// 1 follower, 2 candidate, 3 leader.
    pub const STATE: u8 = 0x02;
    /// The sender's vclock (candidates).
    pub const VCLOCK: u8 = 0x03;
    /// The known leader's id.
    pub const LEADER_ID: u8 = 0x04;
    /// Whether the sender sees the leader.
    pub const IS_LEADER_SEEN: u8 = 0x05;
}

/// Request and row types.
pub mod request {
    /// Success response, heartbeat, ack, FETCH_SNAPSHOT vclock marker.
    pub const OK: u32 = 0;
    /// SELECT.
    pub const SELECT: u32 = 1;
    /// INSERT.
    pub const INSERT: u32 = 2;
    /// REPLACE.
    pub const REPLACE: u32 = 3;
    /// UPDATE.
    pub const UPDATE: u32 = 4;
    /// DELETE.
    pub const DELETE: u32 = 5;
    /// AUTH.
    pub const AUTH: u32 = 7;
    /// EVAL.
    pub const EVAL: u32 = 8;
    /// UPSERT.
    pub const UPSERT: u32 = 9;
    /// CALL (1.7+ format).
    pub const CALL: u32 = 10;
    /// WAL-only no-op: advances the LSN, may carry a transaction's commit flag.
    pub const NOP: u32 = 12;
    /// Raft state (term, vote, leader); in a snapshot's meta section (2.7.3+).
    pub const RAFT: u32 = 30;
    /// PROMOTE synchro row (2.6.3+).
    pub const RAFT_PROMOTE: u32 = 31;
    /// DEMOTE synchro row (2.7.3+).
    pub const RAFT_DEMOTE: u32 = 32;
    /// CONFIRM of synchronous transactions up to an LSN.
    pub const CONFIRM: u32 = 40;
    /// ROLLBACK of synchronous transactions from an LSN on.
    pub const ROLLBACK: u32 = 41;
    /// PING.
    pub const PING: u32 = 64;
    /// SUBSCRIBE.
    pub const SUBSCRIBE: u32 = 66;
    /// VOTE: asks for the instance's ballot; needs no authentication.
    pub const VOTE: u32 = 68;
    /// FETCH_SNAPSHOT: initial data of an anonymous replica.
    pub const FETCH_SNAPSHOT: u32 = 69;
    /// Start of a snapshot's meta section (Raft and synchro state; 2.7.3+
    /// when the request names a version).
    pub const JOIN_META: u32 = 71;
    /// End of the meta section: the data rows follow.
    pub const JOIN_SNAPSHOT: u32 = 72;
    /// IPROTO_ID: protocol version and features (2.10+).
    pub const ID: u32 = 73;
    /// Bit set in the type of an error response; the rest is the error code.
    pub const TYPE_ERROR: u32 = 0x8000;
}

/// Header `FLAGS` bits.
pub mod flag {
    /// Last row of a multi-row transaction.
    pub const COMMIT: u64 = 0x01;
    /// On the last row: the transaction waits in the synchronous queue for
    /// a CONFIRM (a synchronous one, or any queued behind it); 2.6.3, 2.7.2,
    /// 2.8.1+.
    pub const WAIT_SYNC: u64 = 0x02;
    /// On the last row: the transaction is synchronous itself (a sync space,
    /// `box.begin{is_sync = true}`, or on 3.2+ a system space while the
    /// queue is claimed); only a CONFIRM covering its LSN commits it.
    pub const WAIT_ACK: u64 = 0x04;
}

/// Replication group ids (header `GROUP_ID`).
pub mod group {
    /// Replicated to every instance.
    pub const DEFAULT: u32 = 0;
    /// Replication-local: never relayed as data.
    pub const LOCAL: u32 = 1;
}

/// Tarantool error codes tcf reacts to (`src/box/errcode.h`).
pub mod errcode {
    /// Duplicate key.
    pub const ER_TUPLE_FOUND: u32 = 3;
    /// The instance is read-only.
    pub const ER_READONLY: u32 = 7;
    /// Lua error; on 2.6.0 also the code of an xlog gap.
    pub const ER_PROC_LUA: u32 = 32;
    /// No such space.
    pub const ER_NO_SUCH_SPACE: u32 = 36;
    /// Access denied.
    pub const ER_ACCESS_DENIED: u32 = 42;
    /// Wrong password.
    pub const ER_PASSWORD_MISMATCH: u32 = 47;
    /// Unknown request type.
    pub const ER_UNKNOWN_REQUEST_TYPE: u32 = 48;
    /// No such user.
    pub const ER_NO_SUCH_USER: u32 = 45;
    /// Bad configuration; 2.x/3.x also refuse a second connection with the
    /// same replica UUID with it ("duplicate connection").
    pub const ER_CFG: u32 = 59;
    /// SUBSCRIBE with another replicaset's UUID (2.7.3+).
    pub const ER_REPLICASET_UUID_MISMATCH: u32 = 63;
    /// System error, e.g. a relay that timed out waiting for acks.
    pub const ER_SYSTEM: u32 = 115;
    /// The instance is still loading.
    pub const ER_LOADING: u32 = 116;
    /// Synchronous quorum timed out.
    pub const ER_SYNC_QUORUM_TIMEOUT: u32 = 216;
    /// Synchronous transaction rolled back.
    pub const ER_SYNC_ROLLBACK: u32 = 217;
    /// Missing xlog files (2.6.1+).
    pub const ER_XLOG_GAP: u32 = 219;
    /// `box.ctl.replica_gc` could not release a replica (3.3+).
    pub const ER_REPLICA_GC: u32 = 291;
}

/// Greeting size in bytes.
pub const GREETING_SIZE: usize = 128;
/// The largest vclock component id (Tarantool's `VCLOCK_MAX` is 32).
pub const VCLOCK_MAX: u32 = 32;
/// First id of a user space; lower ids are system spaces.
pub const USER_SPACE_MIN: u32 = 512;
