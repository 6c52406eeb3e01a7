//! Tarantool's binary protocol (iproto) for tokio.
//!
//! Two clients share one codec:
//! * [`Connection`]: a pipelined request/response client (PING, SELECT,
//!   INSERT, REPLACE, UPDATE, DELETE, UPSERT, CALL, EVAL), thousands of
//!   requests in flight on one socket, each with its own timeout;
//! * [`ReplicationClient`]: the anonymous-replica side of replication
//!   (FETCH_SNAPSHOT, SUBSCRIBE, acks, VOTE), yielding [`Row`]s whose bodies
//!   stay raw MessagePack, and [`TxAssembler`] to group rows into
//!   transactions.
//!
//! Every connection learns what its server speaks ([`ServerInfo`]: the
//! greeting's version and, on 2.10+, the `IPROTO_ID` features); callers
//! branch on its capabilities, never on version strings.
//!
//! Nothing here panics on input from the network: truncated, oversized and
//! malformed frames are [`ProtocolError`]s. Verified against Tarantool 2.6,
//! 2.11.5 and 3.3.0; see `docs/iproto.md` and `docs/compat.md` for the
//! protocol facts this code follows.

pub mod canon;
mod conn;
pub mod consts;
mod error;
pub mod features;
pub mod frame;
mod greeting;
pub mod msgpack;
pub mod recording;
pub mod replication;
pub mod request;
mod row;
pub mod schema;
mod snapshot;
mod txn;
mod vclock;

pub use conn::{ConnectOptions, Connection, Response};
pub use error::{Error, ProtocolError, Result, ServerError, StackEntry};
pub use features::{Feature, Features, Protocol, ServerInfo, Version};
pub use frame::{Frame, Header};
pub use greeting::{Greeting, chap_sha1_scramble};
pub use replication::{
    AckSender, Ballot, Event, ReplicasetIdentity, ReplicationClient, SubscribeRequest,
    Subscription, Timing, ack_channel, vote,
};
pub use request::{Raw, Select, ToMsgpack};
pub use row::{BodyFields, DmlKind, Row, RowKind, Synchro};
pub use snapshot::{FetchRequest, RaftState, SnapshotMeta, SnapshotStream};
pub use txn::{Boundary, Transaction, TxAssembler, TxError, TxTracker};
pub use vclock::Vclock;
