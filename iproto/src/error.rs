//! Errors of the iproto client.

use std::{sync::Arc, time::Duration};

use thiserror::Error;

use crate::{consts::errcode, msgpack::DecodeError};

/// An error reported by a Tarantool server: its code, message and, on 2.4+,
/// the error stack.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("tarantool error {code}: {message}")]
pub struct ServerError {
    /// Tarantool error code (`box.error.*`), without the 0x8000 bit.
    pub code: u32,
    /// The message of the newest error.
    pub message: String,
    /// The error stack, newest first (empty before 2.4 or when absent).
    pub stack: Vec<StackEntry>,
}

/// One entry of a 2.4+ error stack (`IPROTO_ERROR`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackEntry {
    /// Error class, e.g. `ClientError`.
    pub kind: String,
    /// Error code.
    pub code: u32,
    /// Message.
    pub message: String,
    /// Source file on the server.
    pub file: String,
    /// Source line on the server.
    pub line: u32,
    /// The error's extra fields with string values (2.10+, e.g. `details`
    /// and `uuid` of `ER_REPLICA_GC`), in the order sent; for messages, not
    /// for branching.
    pub fields: Vec<(String, String)>,
}

impl ServerError {
    /// The message, followed by the newest stack entry's `details` field
    /// when the server sent one (3.x errors often keep the reason there).
    pub fn message_with_details(&self) -> String {
        let details = self
            .stack
            .first()
            .and_then(|e| e.fields.iter().find(|(k, _)| k == "details"))
            .map(|(_, v)| v.as_str());
        match details {
            Some(d) if !d.is_empty() && !self.message.contains(d) => {
                format!("{}: {d}", self.message)
            }
            _ => self.message.clone(),
        }
    }

    /// Whether this is an xlog gap: `ER_XLOG_GAP` (2.6.1+) or, on 2.6.0,
    /// `ER_PROC_LUA` with the "Missing .xlog file" message.
    pub fn is_xlog_gap(&self) -> bool {
        self.code == errcode::ER_XLOG_GAP
            || (self.code == errcode::ER_PROC_LUA && self.message.starts_with("Missing .xlog file"))
    }
}

/// Malformed input from a peer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// MessagePack that could not be decoded, with where it was read.
    #[error("malformed {what}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The decoding failure.
        #[source]
        source: DecodeError,
    },
    /// A frame longer than the configured maximum.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced length.
        len: u64,
        /// Configured maximum.
        max: usize,
    },
    /// Bytes left over inside a frame after its header and body.
    #[error("{extra} trailing byte(s) inside a frame")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// The 128-byte greeting could not be parsed.
    #[error("bad greeting: {0}")]
    Greeting(&'static str),
    /// A required key was missing from a header or body.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A response of a type the protocol does not allow here.
    #[error("unexpected response type {got} while {during}")]
    UnexpectedType {
        /// The type received.
        got: u32,
        /// What the client was doing.
        during: &'static str,
    },
}

impl ProtocolError {
    pub(crate) fn decode(what: &'static str) -> impl Fn(DecodeError) -> Self + Copy {
        move |source| Self::Decode { what, source }
    }
}

/// Everything that can go wrong talking to Tarantool.
#[derive(Debug, Error)]
pub enum Error {
    /// TCP connect failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("i/o error on the connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection.
    #[error("connection closed by the server")]
    Closed,
    /// The connection broke while this request waited; the source says why.
    #[error("connection lost: {0}")]
    ConnectionLost(#[source] Arc<Error>),
    /// No answer in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        what: &'static str,
        /// The limit.
        after: Duration,
    },
    /// The peer sent malformed data.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The server answered with an error.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The upstream no longer has the xlogs for the requested position
    /// (its own kind: the position cannot be served by this instance).
    #[error("xlog gap on the upstream")]
    XlogGap(#[source] ServerError),
    /// Nothing arrived from the upstream for `silent_for` while it was being
    /// read (4 heartbeat intervals).
    #[error("upstream silent for {silent_for:?} while being read: considered dead")]
    UpstreamDead {
        /// How long nothing arrived.
        silent_for: Duration,
    },
    /// The requested position is ahead of the upstream's vclock in a component:
    /// the upstream would silently send nothing.
    #[error(
        "requested vclock {requested} is ahead of the upstream's {upstream} (component {component})"
    )]
    AheadOfUpstream {
        /// The vclock asked for.
        requested: crate::Vclock,
        /// The upstream's vclock.
        upstream: crate::Vclock,
        /// The first component where the request is ahead.
        component: u32,
    },
    /// The upstream belongs to another replicaset than expected.
    #[error("upstream replicaset {actual} differs from the expected {expected}")]
    ReplicasetMismatch {
        /// Expected replicaset UUID.
        expected: uuid::Uuid,
        /// The upstream's replicaset UUID.
        actual: uuid::Uuid,
    },
}

impl Error {
    /// The Tarantool error code when the server answered with an error.
    pub fn server_code(&self) -> Option<u32> {
        match self {
            Self::Server(e) | Self::XlogGap(e) => Some(e.code),
            Self::ConnectionLost(e) => e.server_code(),
            _ => None,
        }
    }

    /// Whether the process ran out of file descriptors (`EMFILE`, `ENFILE`)
    /// opening or using the connection: nothing about the server.
    pub fn is_out_of_descriptors(&self) -> bool {
        let io = match self {
            Self::Connect { source, .. } | Self::Io(source) => source,
            Self::ConnectionLost(e) => return e.is_out_of_descriptors(),
            _ => return false,
        };
        matches!(io.raw_os_error(), Some(23 | 24))
    }

    /// Whether the error means the connection is unusable.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. }
                | Self::Io(_)
                | Self::Closed
                | Self::ConnectionLost(_)
                | Self::Protocol(_)
                | Self::UpstreamDead { .. }
        )
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
