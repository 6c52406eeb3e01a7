//! A cluster's health as the coordinator judges it. Each worker probes its
//! own cluster and serves the probe at `GET /tcf/api/v1/health`; the leader
//! asks the peer's workers for the other cluster. The contract and the
//! judgements on it (serves, promotable, repairing) are
//! [`tcf_api::health::Health`]'s; this module makes the probe and asks for it.

use std::{collections::BTreeMap, time::Duration};

use rmpv::Value;
pub(crate) use tcf_api::health::Health;
use tcf_api::{health, progress, replicator::DestinationStatus};
use tcf_common::http_client::request;
use tcf_iproto::{Connection, Vclock};

use crate::{Worker, fence::vclock_of, membership::Membership, replicators};

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
        unmarked_writes: w.unmarked.writes(),
        ..Health::default()
    };
    let learned = w.membership.learn(
        answers
            .iter()
            .filter_map(|(uri, a)| a.as_ref().ok().map(|a| (uri.as_str(), a.rs.as_str()))),
    );
    {
        for (uri, a) in answers {
            match a {
                Ok(a) => {
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
                    match w.membership.replicaset_of(&uri) {
                        Some(rs) => h.replicasets.entry(rs).or_default().unreachable.push(uri),
                        None => h.unknown.push(uri),
                    }
                }
            }
        }
    }
    if let Some(m) = learned {
        Membership::save(&w.store, &w.cfg.cluster, &m).await;
    }
    for r in h.replicasets.values_mut() {
        if r.masters.len() != 1 {
            r.vclock = None;
        }
    }
    if let Some(r) = &w.cfg.replication {
        let answers =
            futures::future::join_all(r.incoming.iter().map(|p| {
                replicators::status::<DestinationStatus>(&p.destination, r.token.expose())
            }))
            .await;
        let mut errors = Vec::new();
        for a in answers {
            match a {
                Ok(s) => h.incoming.extend(s.states()),
                Err(e) => errors.push(e.to_string()),
            }
        }
        h.incoming_error = (!errors.is_empty()).then(|| errors.join("; "));
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
            health::PATH,
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
