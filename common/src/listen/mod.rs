//! Bounded listeners: every TCP port a tcf binary serves (the HTTP APIs of
//! the worker, gateway and destination, the gateway's gRPC port) goes
//! through this layer.
//!
//! What every listener guarantees (defaults in [`HttpLimits`] and
//! [`GrpcLimits`], documented in `docs/config.md`, "Listeners and limits"):
//!
//! * **a connection cap**: a connection beyond it is accepted and closed at
//!   once, counted in [`crate::metrics::LISTENER_REFUSED`] and logged at most
//!   every 10 s. The cap is clamped to half the process's open-file budget
//!   ([`open_files_budget`]: the soft limit less [`RESERVED_FDS`]; a process
//!   serves at most two ports), so that the process always keeps descriptors
//!   for its own outbound connections (etcd, Tarantool, peers) and a flood
//!   on one port does not starve the other. A TLS handshake in progress
//!   holds a place;
//! * **accept errors** (`EMFILE`, `ENFILE`, `ENOBUFS`...) are logged with
//!   their cause at most every 10 s and retried after a short backoff
//!   (10 ms doubling to 1 s): never a busy loop, never the end of the server;
//! * **timeouts**: the TLS handshake, the request head (which also bounds an
//!   idle keep-alive connection), the request body;
//! * **bounded shutdown**: when the shutdown future completes the listening
//!   socket is closed, in-flight requests get [`HttpLimits::shutdown_grace`]
//!   to finish, then every connection is dropped.
//!
//! Metrics: [`crate::metrics::LISTENER_CONNECTIONS`],
//! [`crate::metrics::LISTENER_CAP`], [`crate::metrics::LISTENER_REFUSED`],
//! [`crate::metrics::LISTENER_TIMEOUTS`],
//! [`crate::metrics::LISTENER_ACCEPT_ERRORS`], each labelled `listener`
//! (`http` or `grpc`).

mod accept;
mod body;
mod fdlimit;
mod grpc;
mod http;

pub use accept::Slot;
pub use body::BodyTimeout;
pub use fdlimit::{
    Budget, OpenFiles, OpenFilesError, RESERVED_FDS, budget_for, open_files_budget,
    raise_open_files_limit,
};
pub use grpc::{GrpcLimits, Guarded, plain_incoming, tls_incoming};
pub use http::{HttpLimits, serve_http};
