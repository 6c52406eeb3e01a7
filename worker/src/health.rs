//! A cluster's health as the coordinator judges it. Each worker probes its
//! own cluster (`GET /tcf/api/v1/health`); the leader asks the peer's
//! workers for the other cluster.
//!
//! * It **serves** (may stay or become active) when every replicaset has
//!   exactly one reachable writable master.
//! * It is **promotable** when it serves, its incoming destination is
//!   streaming or reconnecting (not loading, gapped, diverged, stopped or
//!   failed) and every replicaset of the peer has a streaming position in its
//!   progress spaces.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::Duration,
};

use rmpv::Value;
use serde::{Deserialize, Serialize};
use tcf_api::{
    progress,
    replicator::{DestinationStatus, ReplicasetState},
};
use tcf_common::http_client::request;
use tcf_iproto::{Connection, Vclock};

use crate::{Worker, fence::vclock_of, replicators};

/// EVALed on every instance of this cluster: `(ro, replicaset uuid,
/// vclock)`. The replicaset is `box.info.replicaset` where it exists (3.0+,
/// where `box.info.cluster` is the whole cluster), else `box.info.cluster`
/// (up to 2.11); `box.info.ro` folds in the Raft state and the synchro
/// queue's owner on 2.10+ (`docs/compat.md`). On a writable instance the
/// progress and walk rows from the peer are then read through tcf-api's
/// [`progress::LUA`], the destination's own definition of them.
const PROBE: &str = r"
local rs = box.info.replicaset
if type(rs) ~= 'table' or rs.uuid == nil then rs = box.info.cluster end
local vc = setmetatable({}, {__serialize = 'map'})
for id, lsn in pairs(box.info.vclock) do if id ~= 0 then vc[id] = lsn end end
return box.info.ro, rs.uuid, vc
";

/// One replicaset of the probed cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicasetHealth {
    /// Reachable writable instances (healthy: exactly one).
    pub masters: Vec<String>,
    /// Reachable instances.
    pub instances: Vec<String>,
    /// Instances known to belong here that did not answer.
    pub unreachable: Vec<String>,
    /// The master's vclock (without component 0), when there is one master.
    pub vclock: Option<Vclock>,
}

/// What the cluster applied from the peer, per source replicaset name: the
/// component-wise maximum of its progress rows (`docs/progress.md`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// The source replicaset's UUID as recorded.
    pub source_uuid: String,
    /// The applied position.
    pub vclock: Vclock,
    /// An initial load has not finished.
    pub loading: bool,
}

/// A probe of one cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Health {
    /// The cluster.
    pub cluster: String,
    /// By replicaset UUID.
    pub replicasets: BTreeMap<String, ReplicasetHealth>,
    /// Instances that never answered (their replicaset is unknown).
    pub unknown: Vec<String>,
    /// The incoming destination's state per replicaset name, if it answered
    /// (`stopped` for every one when the destination is stopped).
    pub incoming: BTreeMap<String, ReplicasetState>,
    /// Why the incoming destination's state is unknown.
    pub incoming_error: Option<String>,
    /// Applied from the peer, by source replicaset name.
    pub applied: BTreeMap<String, Applied>,
    /// Unmarked writes counted by the probing worker's alarm while the
    /// cluster was not active (0 when it never saw one, or lowered it);
    /// a switchover to a cluster with any is refused.
    #[serde(default)]
    pub unmarked_writes: u64,
    /// Repairs after a WAL gap that have not ended, by source replicaset
    /// name: what they are (`docs/verify.md`). Such a cluster is not
    /// promotable.
    #[serde(default)]
    pub repairs: BTreeMap<String, String>,
}

impl Health {
    /// Why the cluster cannot serve as active, if it cannot.
    pub fn serving_problem(&self) -> Option<String> {
        if self.replicasets.is_empty() {
            return Some(format!("no instance of cluster {} answers", self.cluster));
        }
        let bad: Vec<String> = self
            .replicasets
            .iter()
            .filter(|(_, r)| r.masters.len() != 1)
            .map(|(uuid, r)| {
                format!(
                    "replicaset {uuid} has {} writable masters ({:?}; unreachable {:?})",
                    r.masters.len(),
                    r.masters,
                    r.unreachable
                )
            })
            .collect();
        (!bad.is_empty()).then(|| bad.join("; "))
    }

    /// Why the cluster holds an incomplete copy of the peer, if it does: a
    /// repair walk after a WAL gap has not ended (`docs/verify.md`). The
    /// predicate every promotion (failover, switchover) checks.
    pub fn repair_problem(&self) -> Option<String> {
        (!self.repairs.is_empty()).then(|| {
            let what: Vec<String> = self
                .repairs
                .iter()
                .map(|(rs, w)| format!("{rs}: {w}"))
                .collect();
            format!(
                "it is repairing after a WAL gap ({}); it is not promotable until the walk ends",
                what.join("; ")
            )
        })
    }

    /// Why the cluster cannot be promoted, if it cannot.
    pub fn promotion_problem(&self) -> Option<String> {
        if let Some(p) = self.serving_problem() {
            return Some(p);
        }
        if let Some(p) = self.repair_problem() {
            return Some(p);
        }
        if let Some(e) = &self.incoming_error {
            return Some(format!("its incoming destination does not answer: {e}"));
        }
        if self.incoming.is_empty() {
            return Some("its incoming destination reports no replicaset".into());
        }
        for (rs, state) in &self.incoming {
            if !state.keeps_promotable() {
                return Some(format!("its incoming destination is {state} for {rs}"));
            }
            match self.applied.get(rs) {
                None => return Some(format!("it holds no position from {rs}")),
                Some(a) if a.loading => {
                    return Some(format!("its initial load from {rs} has not finished"));
                }
                Some(_) => {}
            }
        }
        None
    }

    /// The loss point: the applied position by source replicaset UUID (the
    /// name when no UUID was recorded).
    pub fn loss_point(&self) -> BTreeMap<String, Vclock> {
        self.applied
            .iter()
            .map(|(rs, a)| {
                let key = if a.source_uuid.is_empty() {
                    rs.clone()
                } else {
                    a.source_uuid.clone()
                };
                (key, a.vclock.clone())
            })
            .collect()
    }
}

/// Remembers which replicaset each instance belongs to, so an unreachable
/// instance still counts against its replicaset.
#[derive(Debug, Default)]
pub(crate) struct Membership(Mutex<HashMap<String, String>>);

impl Membership {
    /// Loads the map recorded in etcd (a worker restarted while a whole
    /// replicaset is down still counts it), then keeps it there.
    pub(crate) async fn load(&self, w: &Worker) {
        match w.store.members(&w.cfg.cluster).await {
            Ok(m) => self.lock().extend(m),
            Err(e) => tracing::warn!("cannot read the recorded replicaset membership: {e}"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct Answer {
    ro: bool,
    rs: String,
    vclock: Vclock,
    /// The progress rows from the peer (a writable instance only).
    applied: Vec<progress::Row>,
    /// The walk rows from the peer (a writable instance only).
    walks: Vec<progress::WalkHead>,
}

async fn probe_one(uri: &str, w: &Worker) -> Result<Answer, String> {
    let conn = Connection::connect(uri, &w.cfg.connect_options())
        .await
        .map_err(|e| e.to_string())?;
    let out = conn
        .eval(PROBE, &[][..] as &[Value])
        .await
        .map_err(|e| e.to_string())?;
    let (ro, rs, vc) = match out.as_array().map(Vec::as_slice).unwrap_or_default() {
        [Value::Boolean(ro), Value::String(rs), vc] => (*ro, rs, vc),
        _ => return Err(format!("unexpected probe answer {out}")),
    };
    let mut a = Answer {
        ro,
        rs: rs.as_str().unwrap_or_default().to_owned(),
        vclock: vclock_of(vc).unwrap_or_default(),
        applied: Vec::new(),
        walks: Vec::new(),
    };
    if !ro {
        let peer = w.cfg.peer.as_str();
        a.applied = read_progress(&conn, progress::Op::Read { cluster: peer }).await?;
        a.walks = read_progress(&conn, progress::Op::Walks { cluster: peer }).await?;
    }
    Ok(a)
}

/// Runs a reading operation of the progress rows' definition.
async fn read_progress<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    op: progress::Op<'_>,
) -> Result<T, String> {
    let out = conn
        .eval(progress::LUA, &op.args()[..])
        .await
        .map_err(|e| e.to_string())?;
    progress::decode_answer(&out).map_err(|e| e.to_string())
}

/// Probes this worker's own cluster: every instance, and the incoming
/// destination's status when replication is configured.
pub(crate) async fn probe_local(w: &Worker) -> Health {
    let answers = futures::future::join_all(
        w.cfg
            .instances
            .iter()
            .map(|u| async move { (u.clone(), probe_one(u, w).await) }),
    )
    .await;
    let mut h = Health {
        cluster: w.cfg.cluster.clone(),
        unmarked_writes: {
            let v = w.view();
            if v.unmarked.alarm {
                v.unmarked.count.max(1)
            } else {
                0
            }
        },
        ..Health::default()
    };
    let learned = {
        let mut members = w.membership.lock();
        let mut learned = false;
        for (uri, a) in answers {
            match a {
                Ok(a) => {
                    learned |= members.insert(uri.clone(), a.rs.clone()).as_ref() != Some(&a.rs);
                    let r = h.replicasets.entry(a.rs.clone()).or_default();
                    r.instances.push(uri.clone());
                    if !a.ro {
                        r.masters.push(uri.clone());
                        r.vclock = Some(a.vclock);
                        let mut newest: BTreeMap<String, progress::WalkHead> = BTreeMap::new();
                        for walk in a.walks {
                            if newest
                                .get(&walk.source_replicaset)
                                .is_none_or(|cur| walk.seq >= cur.seq)
                            {
                                newest.insert(walk.source_replicaset.clone(), walk);
                            }
                        }
                        for (rs, walk) in newest {
                            if walk.is_running_gap_repair() {
                                h.repairs.insert(
                                    rs,
                                    format!(
                                        "repair walk {} after a WAL gap, chunk {}",
                                        walk.id, walk.seq
                                    ),
                                );
                            }
                        }
                        for row in a.applied {
                            let e = h.applied.entry(row.source_replicaset).or_default();
                            e.vclock.merge(&row.vclock);
                            if e.source_uuid.is_empty() {
                                e.source_uuid = row.source_uuid;
                            }
                            e.loading |= row.state == progress::ProgressState::Loading;
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(instance = %uri, "health probe: {e}");
                    match members.get(&uri) {
                        Some(rs) => h
                            .replicasets
                            .entry(rs.clone())
                            .or_default()
                            .unreachable
                            .push(uri),
                        None => h.unknown.push(uri),
                    }
                }
            }
        }
        learned.then(|| members.clone().into_iter().collect::<BTreeMap<_, _>>())
    };
    if let Some(m) = learned
        && let Err(e) = w.store.put_members(&w.cfg.cluster, &m).await
    {
        tracing::warn!("cannot record the replicaset membership: {e}");
    }
    for r in h.replicasets.values_mut() {
        if r.masters.len() != 1 {
            r.vclock = None;
        }
    }
    if let Some(r) = &w.cfg.replication {
        match replicators::status::<DestinationStatus>(&r.incoming.destination, r.token.expose())
            .await
        {
            Ok(s) => h.incoming = s.states(),
            Err(e) => h.incoming_error = Some(e.to_string()),
        }
    } else {
        h.incoming_error = Some("this worker has no `replication` section".into());
    }
    h
}

/// Why a cluster could not be probed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot probe cluster {cluster}: {message}")]
pub(crate) struct ProbeError {
    cluster: String,
    message: String,
    /// A peer worker answered but refused (token, wrong cluster) or none is
    /// configured: a configuration problem, no evidence about the cluster.
    pub(crate) misconfigured: bool,
}

impl From<ProbeError> for String {
    fn from(e: ProbeError) -> Self {
        e.to_string()
    }
}

/// The health of `cluster`: probed directly when it is this worker's, else
/// asked from the peer's workers (the first that answers).
pub(crate) async fn of(w: &Worker, cluster: &str) -> Result<Health, ProbeError> {
    if cluster == w.cfg.cluster {
        return Ok(probe_local(w).await);
    }
    let token = w.cfg.peer_token.as_ref().map(|t| t.expose());
    let mut errors = Vec::new();
    let mut misconfigured = w.cfg.peer_workers.is_empty();
    for peer in &w.cfg.peer_workers {
        match request(
            "GET",
            peer,
            "/tcf/api/v1/health",
            token,
            None,
            w.cfg.connect_timeout + Duration::from_secs(2),
        )
        .await
        {
            Ok(r) if r.status == 200 => match serde_json::from_str::<Health>(&r.body) {
                Ok(h) if h.cluster == cluster => return Ok(h),
                Ok(h) => {
                    misconfigured = true;
                    errors.push(format!(
                        "{peer} probes cluster {}, not {cluster}",
                        h.cluster
                    ));
                }
                Err(e) => errors.push(format!("{peer}: malformed health: {e}")),
            },
            Ok(r) => {
                misconfigured |= matches!(r.status, 401 | 403 | 404);
                errors.push(format!("{peer} answered {}: {}", r.status, r.body));
            }
            Err(e) => errors.push(format!("{peer}: {e}")),
        }
    }
    if errors.is_empty() {
        errors.push("no peer_workers configured".into());
    }
    Err(ProbeError {
        cluster: cluster.to_owned(),
        message: errors.join("; "),
        misconfigured,
    })
}

/// `cluster` judged from outside, with the ids of its workers that hold
/// their etcd lease: its instances as recorded in etcd by its own workers
/// (`members/<cluster>`), each asked for its ballot (IPROTO_VOTE, no
/// login). Used by the coordinator before it counts a failed check: a
/// cluster whose masters answer, and whose workers are alive in etcd, is not
/// failing because its workers' HTTP does not. An error means nothing can
/// be told this way (no membership recorded yet, or etcd unreadable).
pub(crate) async fn from_outside(
    w: &Worker,
    cluster: &str,
) -> Result<(Health, Vec<String>), String> {
    let members = w
        .store
        .members(cluster)
        .await
        .map_err(|e| format!("cannot read the recorded members of {cluster}: {e}"))?;
    let live = w
        .store
        .live_workers(cluster)
        .await
        .map_err(|e| format!("cannot read the live workers of {cluster}: {e}"))?;
    if members.is_empty() {
        return Err(format!("no instance of {cluster} recorded in etcd yet"));
    }
    let opts = tcf_iproto::ConnectOptions::new().connect_timeout(w.cfg.connect_timeout);
    let ballots = futures::future::join_all(members.iter().map(|(uri, rs)| {
        let opts = &opts;
        async move { (uri, rs, tcf_iproto::vote(uri, opts).await) }
    }))
    .await;
    let mut h = Health {
        cluster: cluster.to_owned(),
        ..Health::default()
    };
    for (uri, rs, ballot) in ballots {
        let r = h.replicasets.entry(rs.clone()).or_default();
        match ballot {
            Ok(b) => {
                r.instances.push(uri.clone());
                if !b.is_ro {
                    r.masters.push(uri.clone());
                }
            }
            Err(e) => {
                tracing::debug!(%cluster, instance = %uri, "ballot from outside: {e}");
                r.unreachable.push(uri.clone());
            }
        }
    }
    Ok((h, live))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(masters: &[&str]) -> ReplicasetHealth {
        ReplicasetHealth {
            masters: masters.iter().map(|m| (*m).to_owned()).collect(),
            ..ReplicasetHealth::default()
        }
    }

    fn healthy() -> Health {
        let mut h = Health {
            cluster: "B".into(),
            ..Health::default()
        };
        h.replicasets.insert("u1".into(), rs(&["b1:3301"]));
        h.incoming.insert("rs1".into(), ReplicasetState::Connecting);
        h.applied.insert(
            "rs1".into(),
            Applied {
                source_uuid: "a-u1".into(),
                vclock: [(1, 42)].into_iter().collect(),
                loading: false,
            },
        );
        h
    }

    #[test]
    fn a_replicaset_without_exactly_one_master_makes_the_cluster_unhealthy() {
        let mut h = healthy();
        assert_eq!(h.serving_problem(), None);
        h.replicasets.insert("u2".into(), rs(&[]));
        assert!(h.serving_problem().is_some_and(|p| p.contains("u2")));
        h.replicasets.insert("u2".into(), rs(&["x", "y"]));
        assert!(
            h.serving_problem()
                .is_some_and(|p| p.contains("2 writable"))
        );
        assert!(Health::default().serving_problem().is_some());
    }

    #[test]
    fn promotion_needs_a_running_destination_and_a_finished_position() {
        assert_eq!(healthy().promotion_problem(), None);
        use ReplicasetState as S;
        for state in [S::Loading, S::Gapped, S::Diverged, S::Stopped, S::Failed] {
            let mut h = healthy();
            h.incoming.insert("rs1".into(), state);
            assert!(
                h.promotion_problem()
                    .is_some_and(|p| p.contains(state.as_str())),
                "{state}"
            );
        }
        let mut h = healthy();
        if let Some(a) = h.applied.get_mut("rs1") {
            a.loading = true;
        }
        assert!(h.promotion_problem().is_some_and(|p| p.contains("load")));
        let mut h = healthy();
        h.applied.clear();
        assert!(h.promotion_problem().is_some());
        let mut h = healthy();
        h.incoming_error = Some("refused".into());
        assert!(h.promotion_problem().is_some());
    }

    #[test]
    fn a_repair_after_a_wal_gap_blocks_promotion() {
        let mut h = healthy();
        h.repairs.insert(
            "rs1".into(),
            "repair walk w after a WAL gap, chunk 3".into(),
        );
        let p = h.promotion_problem().unwrap_or_default();
        assert!(p.contains("repairing after a WAL gap"), "{p}");
        assert_eq!(h.repair_problem().as_deref(), Some(p.as_str()));
    }

    #[test]
    fn the_loss_point_is_keyed_by_source_uuid() {
        let lp = healthy().loss_point();
        assert_eq!(lp.get("a-u1").map(|v| v.get(1)), Some(42));
    }
}
