//! `POST /tcf/resync`: a `diverged` cluster (the old active after a
//! failover) reports what it holds past the loss point and is reloaded from
//! the active cluster.
//!
//! Steps, under the worker's acting lock: the pair coming into this cluster
//! is stopped; each master's progress rows for the active cluster are marked
//! `loading` (a durable request: the destination starts an initial load that
//! truncates the replicated spaces first, also after a restart; the rows'
//! own definition does it, `tcf_api::progress::Op::MarkReload`); then one
//! etcd transaction turns `diverged` into `passive` (same term) with a
//! history entry carrying the tail report. The coordinator's reconciliation
//! starts the incoming pair, whose load makes this cluster an exact copy.
//! While it loads the cluster is passive but not promotable.
//!
//! With `replication.on_return: ship_tail` the coordinator runs the pair
//! leaving the diverged cluster instead, and its own workers
//! ([`ship_tail_step`]) resync it once the active cluster has processed
//! everything its masters hold: the tail is then on the active cluster
//! (conflicting keys resolved by apply order) and comes back with the load.

use std::collections::BTreeMap;

use tcf_iproto::{Connection, Vclock};
use tracing::info;

use tcf_api::{
    operator::{ResyncAnswer, ResyncReport, ResyncResult, Tail},
    progress,
    worker::{HistoryOutcome, SwitchKind},
};

use crate::{
    Worker,
    config::Status,
    health, replicators,
    store::{HistoryEntry, StoreError, now_ms},
};

/// A resync that did not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResyncError {
    /// etcd did not answer.
    #[error("etcd: {0}")]
    Etcd(#[from] StoreError),
    /// Not possible in this state.
    #[error("{0}")]
    Refused(String),
    /// An instance or a replicator failed.
    #[error("{0}")]
    Failed(String),
    /// The state changed meanwhile.
    #[error("the state changed during the resync; nothing was switched, retry")]
    Conflict,
}

/// Reports the tail and starts the reload (see the module docs).
pub(crate) async fn resync(w: &Worker, requested_by: String) -> Result<ResyncAnswer, ResyncError> {
    let _acting = w.acting.lock().await;
    let me = w.cfg.cluster.clone();
    let ((state, state_rev), (switch, _)) = w.store.snapshot().await?;
    let state = state.ok_or_else(|| ResyncError::Refused("no federation state".into()))?;
    if state.status(&me) != Some(Status::Diverged) {
        return Err(ResyncError::Refused(format!(
            "cluster {me} is {}, not diverged: nothing to resync",
            state.status(&me).map_or("absent", Status::as_str)
        )));
    }
    if state.status(&w.cfg.peer) != Some(Status::Active) {
        return Err(ResyncError::Refused(format!(
            "cluster {} is not active: nothing to reload from",
            w.cfg.peer
        )));
    }
    let r =
        w.cfg.replication.as_ref().ok_or_else(|| {
            ResyncError::Refused("this worker has no `replication` section".into())
        })?;
    let loss: BTreeMap<String, Vclock> = switch
        .filter(|s| s.kind == SwitchKind::Failover && s.from == me)
        .map(|s| s.loss_point)
        .unwrap_or_default();
    let probe = health::probe_local(w).await;
    if let Some(p) = probe.serving_problem() {
        return Err(ResyncError::Failed(format!(
            "cannot write cluster {me}: {p}"
        )));
    }
    let mut tails = BTreeMap::new();
    let mut masters = Vec::new();
    for (uuid, rs) in &probe.replicasets {
        let to = rs.vclock.clone().unwrap_or_default();
        let from = loss.get(uuid).cloned().unwrap_or_default();
        let rows = to
            .iter()
            .map(|(id, lsn)| lsn.saturating_sub(from.get(id)))
            .sum();
        tails.insert(uuid.clone(), Tail { from, to, rows });
        masters.extend(rs.masters.iter().cloned());
    }
    let sources: Vec<String> = probe.incoming.keys().cloned().collect();
    if sources.is_empty() {
        return Err(ResyncError::Failed(format!(
            "the incoming destinations ({}) report no replicaset: {}",
            r.incoming
                .iter()
                .map(|p| p.destination.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            probe.incoming_error.unwrap_or_default()
        )));
    }
    replicators::set_pairs(&r.incoming, r.token.expose(), false, state.term)
        .await
        .map_err(|e| ResyncError::Failed(format!("stopping the incoming pairs: {e}")))?;
    for uri in &masters {
        let fail = |e: String| ResyncError::Failed(format!("{uri}: {e}"));
        let conn = Connection::connect(uri, &w.cfg.connect_options())
            .await
            .map_err(|e| fail(e.to_string()))?;
        for rs in &sources {
            let op = progress::Op::MarkReload {
                cluster: &w.cfg.peer,
                replicaset: rs,
            };
            conn.eval(progress::LUA, &op.args()[..])
                .await
                .map_err(|e| fail(e.to_string()))?;
        }
    }
    let report = ResyncReport {
        cluster: me.clone(),
        loss_point: loss.clone(),
        tail: tails,
    };
    let detail = serde_json::to_value(&report)
        .map_err(|e| ResyncError::Failed(format!("encoding the tail report: {e}")))?;
    let mut next = state.clone();
    next.clusters.insert(me.clone(), Status::Passive);
    let entry = HistoryEntry {
        term: state.term,
        kind: SwitchKind::Resync,
        outcome: HistoryOutcome::Done,
        from: me.clone(),
        to: w.cfg.peer.clone(),
        at_ms: now_ms(),
        by: format!("{} (requested by {requested_by})", w.id),
        loss_point: loss,
        detail: Some(detail),
    };
    if !w.store.set_state(state_rev, &next, &entry).await? {
        return Err(ResyncError::Conflict);
    }
    info!(cluster = %me, tail = ?report.tail, "resync: passive again; the incoming pair reloads it");
    Ok(ResyncAnswer {
        result: ResyncResult::Reloading,
        term: state.term,
        report,
    })
}

/// With `on_return: ship_tail`, on a diverged cluster: once the pair leaving
/// it has processed (applied or skipped) everything its masters hold,
/// resyncs it (the shipped tail comes back with the reload).
pub(crate) async fn ship_tail_step(w: &Worker, state: &crate::store::FedState) {
    let Some(r) = w.cfg.replication.as_ref() else {
        return;
    };
    if r.on_return != crate::config::OnReturn::ShipTail
        || state.status(&w.cfg.cluster) != Some(Status::Diverged)
        || state.status(&w.cfg.peer) != Some(Status::Active)
    {
        return;
    }
    let probe = health::probe_local(w).await;
    if probe.serving_problem().is_some() {
        return;
    }
    let Ok(status) = replicators::destinations(&r.outgoing, r.token.expose()).await else {
        return;
    };
    let applied = status.applied_by_source();
    let drained = probe.replicasets.iter().all(|(uuid, rs)| {
        let held = rs.vclock.clone().unwrap_or_default();
        applied.get(uuid).is_some_and(|a| held.le(a))
    });
    if !drained {
        return;
    }
    info!(cluster = %w.cfg.cluster, "ship_tail: the active cluster processed the tail; resyncing");
    if let Err(e) = resync(w, "ship_tail".into()).await {
        tracing::warn!(cluster = %w.cfg.cluster, "ship_tail resync: {e}");
    }
}
