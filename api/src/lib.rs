//! The contracts between tcf processes, each with one typed owner that both
//! sides use: the server serializes these types, the client deserializes
//! the same types. Nothing here does I/O.
//!
//! | module | contract |
//! | --- | --- |
//! | [`replicator`] | `GET /api/v1/status` of a gateway or a destination, the replicaset states, the start/stop command body |

pub mod replicator;
