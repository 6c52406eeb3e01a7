//! Releasing the WAL a source keeps for this gateway (`POST /api/v1/release`).
//!
//! On Tarantool 3.3+ every source instance the gateway fetched from or
//! subscribed to keeps a persistent WAL GC consumer under the gateway's
//! subscriber UUID (`_gc_consumers`, a replication-local space: one per
//! instance). It pins the xlogs after the gateway's position for
//! `replication_anon_ttl` (1 h by default) after the last disconnect. A
//! gateway removed for good must release them: for every listed instance of
//! every replicaset, `box.ctl.replica_gc(uuid)` is called when a consumer is
//! registered (it works on read-only instances too). Before 3.3 there is
//! nothing to release.
//!
//! The replication user needs, besides what streaming needs (`write` on
//! `_gc_consumers`, in the `replication` role on 3.3+), `execute` on the
//! function `box.ctl.replica_gc`:
//!
//! ```lua
//! box.schema.func.create('box.ctl.replica_gc', {if_not_exists = true})
//! box.schema.user.grant('tcf_repl', 'execute', 'function', 'box.ctl.replica_gc')
//! ```
//!
//! A consumer whose connection is still open cannot be released
//! (`ER_REPLICA_GC`, "Replica is connected"): the route only runs while the
//! gateway is stopped, and a relay that has not noticed the disconnect yet
//! goes within 4 × `replication_timeout`; try again then.

use rmpv::Value;
use serde::Serialize;
use tcf_iproto::{Connection, Select, consts::errcode};
use uuid::Uuid;

use crate::config::Config;

/// `_gc_consumers` (`BOX_GC_CONSUMERS_ID`, 3.3+).
const GC_CONSUMERS_SPACE: u32 = 388;

/// What happened on one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    /// The consumer was removed: the instance no longer keeps WAL for us.
    Released,
    /// No consumer under our UUID (never read, or already released).
    NotRegistered,
    /// The server keeps no WAL for anonymous replicas (before 3.3).
    NotApplicable,
    /// The instance refused or could not be reached; see `detail`.
    Failed,
}

/// One instance's result.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct InstanceResult {
    pub(crate) replicaset: String,
    pub(crate) instance: String,
    /// The UUID released (the gateway's subscriber UUID for the replicaset).
    pub(crate) subscriber_uuid: String,
    pub(crate) outcome: Outcome,
    /// Server version, or why it failed.
    pub(crate) detail: String,
}

/// Releases the gateway's consumers on every configured source instance.
pub(crate) async fn release_all(config: &Config) -> Vec<InstanceResult> {
    let mut jobs = Vec::new();
    for (rs, instances) in &config.replicasets {
        let uuid = crate::subscriber_uuid(&config.alias, &config.cluster, rs);
        for uri in instances {
            jobs.push(async move {
                let (outcome, detail) = release_one(config, uri, uuid).await;
                InstanceResult {
                    replicaset: rs.clone(),
                    instance: uri.clone(),
                    subscriber_uuid: uuid.to_string(),
                    outcome,
                    detail,
                }
            });
        }
    }
    futures::future::join_all(jobs).await
}

async fn release_one(config: &Config, uri: &str, uuid: Uuid) -> (Outcome, String) {
    let conn = match Connection::connect(uri, &config.connect_options()).await {
        Ok(c) => c,
        Err(e) => return (Outcome::Failed, format!("connect: {e}")),
    };
    let version = conn.server().version().to_string();
    if !conn.server().pins_wal_for_anon() {
        return (
            Outcome::NotApplicable,
            format!("Tarantool {version} keeps no WAL for anonymous replicas"),
        );
    }
    let key = [Value::from(uuid.to_string())];
    let found = conn
        .select(
            GC_CONSUMERS_SPACE,
            &key[..],
            Select {
                limit: 1,
                ..Select::default()
            },
        )
        .await
        .and_then(|r| r.data_value());
    match found {
        Ok(Value::Array(rows)) if rows.is_empty() => return (Outcome::NotRegistered, version),
        Ok(_) => {}
        Err(e) => return (Outcome::Failed, format!("reading _gc_consumers: {e}")),
    }
    match conn.call("box.ctl.replica_gc", &key[..]).await {
        Ok(_) => (Outcome::Released, version),
        Err(e) => {
            let hint = match e.server_code() {
                Some(errcode::ER_ACCESS_DENIED) => {
                    " (grant the replication user execute on function box.ctl.replica_gc: see docs/gateway.md)"
                }
                Some(errcode::ER_REPLICA_GC) => {
                    " (a relay to this gateway may still be open: retry in a few seconds)"
                }
                _ => "",
            };
            let msg = match &e {
                tcf_iproto::Error::Server(s) => s.message_with_details(),
                other => other.to_string(),
            };
            (Outcome::Failed, format!("box.ctl.replica_gc: {msg}{hint}"))
        }
    }
}
