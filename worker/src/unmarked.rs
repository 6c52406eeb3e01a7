//! The unmarked-write alarm: something other than tcf writes on this cluster
//! while it is not active.
//!
//! While this cluster is not `active` and this worker has fenced it, every
//! second poll the worker EVALs `worker/lua/tcf_unmarked_v1.lua` on each
//! master and CALLs `tcf_unmarked_v1(true)`. That installs (once) a trigger
//! on every user space which counts the writes not marked by tcf's
//! destination, and returns the count. An increase raises the alarm. When
//! the cluster becomes active, the alarm is lowered and the triggers are
//! removed (`tcf_unmarked_v1(false)`, which also resets the count).

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard, PoisonError},
};

use rmpv::Value;
use tcf_api::worker::{UnmarkedCommits, UnmarkedReading};
use tcf_iproto::{ConnectOptions, Connection};
use tracing::{info, warn};

use crate::{Config, metrics, store::now_ms};

const LUA: &str = include_str!("../lua/tcf_unmarked_v1.lua");

/// The counters are read every this many polls.
const EVERY: u64 = 2;

/// The unmarked-write alarm of this worker's cluster: its state, owned
/// here; the worker holds one and calls [`Alarm::check`] every poll.
#[derive(Debug, Default)]
pub(crate) struct Alarm(Mutex<Unmarked>);

/// What this worker knows of unmarked writes on its cluster.
#[derive(Debug, Clone, Default)]
struct Unmarked {
    /// Raised by an unmarked write seen while this cluster is not active;
    /// lowered when it becomes active.
    alarm: bool,
    /// Unmarked writes seen since this cluster was last active.
    count: u64,
    /// When the alarm was raised (ms since the Unix epoch).
    since_ms: Option<u64>,
    /// The last reading of each master, by instance UUID.
    instances: BTreeMap<String, Reading>,
    /// Why the last reading failed (joined with `; `), `None` after a success.
    error: Option<String>,
    /// The triggers are known to be removed from every master.
    removed: bool,
}

/// One master's counter.
#[derive(Debug, Clone)]
struct Reading {
    /// The instance (`host:port`, as configured).
    uri: String,
    /// Its replicaset UUID.
    replicaset: String,
    /// Unmarked writes it counted since its triggers were installed.
    count: u64,
    /// Identifies that installation: the counter restarts with a new one.
    epoch: String,
}

impl Alarm {
    fn lock(&self) -> MutexGuard<'_, Unmarked> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The unmarked writes a switchover to this cluster must account for:
    /// the count while the alarm is raised (at least 1), else 0.
    pub(crate) fn writes(&self) -> u64 {
        let u = self.lock();
        if u.alarm { u.count.max(1) } else { 0 }
    }

    /// `unmarked_commits` of `GET /tcf/api/v1/info`.
    pub(crate) fn info(&self) -> UnmarkedCommits {
        let u = self.lock();
        UnmarkedCommits {
            alarm: u.alarm,
            count: u.count,
            since_ms: u.since_ms,
            instances: u
                .instances
                .iter()
                .map(|(uuid, r)| {
                    let reading = UnmarkedReading {
                        uri: r.uri.clone(),
                        replicaset: r.replicaset.clone(),
                        count: r.count,
                    };
                    (uuid.clone(), reading)
                })
                .collect(),
            error: u.error.clone(),
        }
    }

    /// One poll's step (`n` counts the polls): reads the counters while
    /// this cluster is not `active` and `fenced` by this worker, and lowers
    /// the alarm and removes the triggers once it is active.
    pub(crate) async fn check(&self, cfg: &Config, active: bool, fenced: bool, n: u64) {
        if !n.is_multiple_of(EVERY) {
            return;
        }
        let opts = cfg.connect_options();
        if active {
            let (alarm, removed) = {
                let mut u = self.lock();
                let was = (u.alarm, u.removed);
                *u = Unmarked {
                    removed: u.removed,
                    ..Unmarked::default()
                };
                was
            };
            if alarm {
                info!(cluster = %cfg.cluster, "unmarked-write alarm lowered: the cluster is active");
            }
            ::metrics::gauge!(metrics::UNMARKED_ALARM).set(0.0);
            if !removed {
                let (_, errors) = read(&cfg.instances, &opts, false).await;
                let mut u = self.lock();
                u.removed = errors.is_empty();
                u.error = (!errors.is_empty()).then(|| errors.join("; "));
            }
            return;
        }
        if !fenced {
            return;
        }
        self.lock().removed = false;
        let (readings, errors) = read(&cfg.instances, &opts, true).await;
        let mut u = self.lock();
        let mut seen = 0;
        for (uuid, r) in readings {
            let delta = match u.instances.get(&uuid) {
                Some(p) if p.epoch == r.epoch => r.count.saturating_sub(p.count),
                _ => r.count,
            };
            if delta > 0 {
                warn!(
                    cluster = %cfg.cluster,
                    replicaset = %r.replicaset,
                    instance = %uuid,
                    uri = %r.uri,
                    writes = delta,
                    "unmarked writes on a cluster that is not active: something other than tcf writes here"
                );
            }
            seen += delta;
            u.instances.insert(uuid, r);
        }
        u.error = (!errors.is_empty()).then(|| errors.join("; "));
        if seen > 0 {
            ::metrics::counter!(metrics::UNMARKED_COMMITS).increment(seen);
            u.count += seen;
            if !u.alarm {
                u.alarm = true;
                u.since_ms = Some(now_ms());
            }
        }
        ::metrics::gauge!(metrics::UNMARKED_ALARM).set(if u.alarm { 1.0 } else { 0.0 });
    }
}

/// CALLs `tcf_unmarked_v1(watch)` on every reachable master: the readings by
/// instance UUID, and the failures.
async fn read(
    instances: &[String],
    opts: &ConnectOptions,
    watch: bool,
) -> (Vec<(String, Reading)>, Vec<String>) {
    let masters = match crate::fence::masters(instances).await {
        Ok(m) => m,
        Err(e) => return (Vec::new(), vec![e.to_string()]),
    };
    let (mut readings, mut errors) = (Vec::new(), Vec::new());
    for uri in &masters {
        match call(uri, opts, watch).await {
            Ok(r) => readings.push(r),
            Err(e) => errors.push(format!("{uri}: {e}")),
        }
    }
    (readings, errors)
}

async fn call(uri: &str, opts: &ConnectOptions, watch: bool) -> Result<(String, Reading), String> {
    let conn = Connection::connect(uri, opts)
        .await
        .map_err(|e| e.to_string())?;
    conn.eval(LUA, &[][..] as &[Value])
        .await
        .map_err(|e| e.to_string())?;
    let out = conn
        .call("tcf_unmarked_v1", &[Value::from(watch)][..])
        .await
        .map_err(|e| e.to_string())?;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    match out.as_array().map(Vec::as_slice) {
        Some([count, epoch, uuid, rs]) if count.as_u64().is_some() => Ok((
            text(uuid),
            Reading {
                uri: uri.to_owned(),
                replicaset: text(rs),
                count: count.as_u64().unwrap_or_default(),
                epoch: text(epoch),
            },
        )),
        _ => Err(format!("unexpected answer {out}")),
    }
}
