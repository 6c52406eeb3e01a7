//! The contracts between tcf processes, each with one typed owner that both
//! sides use: the server serializes these types, the client deserializes
//! the same types. Nothing here does I/O.
//!
//! | module | contract |
//! | --- | --- |
//! | [`progress`] | the progress and verification rows a destination keeps on its target: their layout and operations (the Lua module both the destination and the worker EVAL), the typed rows |
//! | [`replicator`] | `GET /api/v1/status` of a gateway or a destination, the replicaset states, the start/stop command body |
//! | [`verify`] | online verification and repair: the walk request and the report |
//! | [`worker`] | the federation state in etcd (state, switch record, history), a worker's view for its peers, the parts of its info |
//! | [`health`] | `GET /tcf/api/v1/health`: a worker's probe of its own cluster, read by the peer's workers, and whether it serves, is promotable or repairs |
//! | [`operator`] | the worker's operator routes: switchover request, prechecks and answer, failover and resync answers, overview, lag history, error body |

pub mod health;
pub mod operator;
pub mod progress;
pub mod replicator;
pub mod verify;
pub mod worker;
