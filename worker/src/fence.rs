//! Fencing this cluster: the dml users are disabled on every master when the
//! cluster is passive (replicas follow through replication; read-only
//! instances are not written) and enabled when it is active. Every change
//! carries the term and is refused by an instance that recorded a newer one.
//!
//! Disabling takes away only the `session,usage` that `box.schema.user.create`
//! or a grant gave. A user that keeps `usage` another way (a role, a
//! declarative config of Tarantool 3.x listing it) cannot be fenced so: the
//! Lua function disables every user it can, then fails with
//! [`FenceError::Ineffective`] naming the user and the source.

use std::collections::BTreeMap;

use rmpv::Value;
use tcf_iproto::{ConnectOptions, Connection, Vclock, vote};

const LUA: &str = include_str!("../lua/tcf_fence_v1.lua");

/// The outcome of fencing or unfencing the cluster.
#[derive(Debug, Clone, Default)]
pub(crate) struct FenceReport {
    /// Each master's vclock after the change, by replicaset UUID.
    pub(crate) vclocks: BTreeMap<String, Vclock>,
    /// Masters changed.
    pub(crate) masters: Vec<String>,
}

/// A fence that could not be applied everywhere.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FenceError {
    /// No instance answered IPROTO_VOTE.
    #[error("no instance of this cluster answers: {}", causes.join("; "))]
    Unreachable {
        /// Each instance and why it did not answer.
        causes: Vec<String>,
        /// This process is out of file descriptors: the instances may
        /// well be up.
        out_of_descriptors: bool,
    },
    /// A dml user keeps `usage` on universe after being disabled (through a
    /// role, or granted by a 3.x declarative config): the fence does not hold.
    #[error("{uri}: the fence does not hold: {message}")]
    Ineffective {
        /// The instance.
        uri: String,
        /// Which users, and where their privilege comes from.
        message: String,
    },
    /// An instance refused or failed.
    #[error("{uri}: {message}")]
    Instance {
        /// The instance.
        uri: String,
        /// Why.
        message: String,
    },
}

/// The writable instances of `instances`, found by IPROTO_VOTE (no login);
/// an error when none of them answers.
pub(crate) async fn masters(instances: &[String]) -> Result<Vec<String>, FenceError> {
    let guest = &ConnectOptions::new();
    let ballots = futures::future::join_all(
        instances
            .iter()
            .map(|u| async move { (u.clone(), vote(u, guest).await) }),
    )
    .await;
    if ballots.iter().all(|(_, b)| b.is_err()) {
        let out_of_descriptors = ballots.iter().any(|(_, b)| {
            b.as_ref()
                .is_err_and(tcf_iproto::Error::is_out_of_descriptors)
        });
        let causes = ballots
            .iter()
            .filter_map(|(u, b)| b.as_ref().err().map(|e| format!("{u}: {e}")))
            .collect();
        return Err(FenceError::Unreachable {
            causes,
            out_of_descriptors,
        });
    }
    Ok(ballots
        .into_iter()
        .filter_map(|(u, b)| b.ok().filter(|b| !b.is_ro).map(|_| u))
        .collect())
}

/// Fences (`fence = true`) or unfences every writable instance of `instances`.
pub(crate) async fn apply(
    instances: &[String],
    opts: &ConnectOptions,
    term: u64,
    fence: bool,
    users: &[String],
) -> Result<FenceReport, FenceError> {
    let masters = masters(instances).await?;
    let mut report = FenceReport::default();
    for uri in &masters {
        let err = |m: String| FenceError::Instance {
            uri: uri.clone(),
            message: m,
        };
        let conn = Connection::connect(uri, opts)
            .await
            .map_err(|e| err(e.to_string()))?;
        conn.eval(LUA, &[][..] as &[Value])
            .await
            .map_err(|e| err(e.to_string()))?;
        let names: Vec<Value> = users.iter().map(|u| Value::from(u.as_str())).collect();
        let args = [Value::from(term), Value::from(fence), Value::Array(names)];
        let out = conn
            .call("tcf_fence_v1", &args[..])
            .await
            .map_err(|e| call_error(uri, e))?;
        let (vclock, uuid) = match out.as_array().map(Vec::as_slice) {
            Some([v @ Value::Map(_), Value::String(u)]) => (
                vclock_of(v).unwrap_or_default(),
                u.as_str().unwrap_or_default().to_owned(),
            ),
            _ => return Err(err(format!("unexpected answer {out}"))),
        };
        report.vclocks.insert(uuid, vclock);
        report.masters.push(uri.clone());
    }
    Ok(report)
}

/// The prefix of the Lua function's error for a fence that does not hold.
const INEFFECTIVE: &str = "tcf_fence_ineffective: ";

fn call_error(uri: &str, e: tcf_iproto::Error) -> FenceError {
    if let tcf_iproto::Error::Server(s) = &e
        && let Some(rest) = s.message.strip_prefix(INEFFECTIVE)
    {
        return FenceError::Ineffective {
            uri: uri.to_owned(),
            message: rest.to_owned(),
        };
    }
    FenceError::Instance {
        uri: uri.to_owned(),
        message: e.to_string(),
    }
}

/// A vclock from a msgpack map `{id: lsn}` (an empty array is empty).
pub(crate) fn vclock_of(v: &Value) -> Option<Vclock> {
    let mut out = Vclock::new();
    match v {
        Value::Map(m) => {
            for (id, lsn) in m {
                let id = id.as_u64().and_then(|i| u32::try_from(i).ok())?;
                out.set(id, lsn.as_u64()?);
            }
        }
        Value::Array(a) if a.is_empty() => {}
        _ => return None,
    }
    Some(out)
}
