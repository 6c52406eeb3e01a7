//! Planned switchover, one phase at a time, driven by the switch record in
//! etcd so that any worker can finish or roll back a switch whose driver
//! died. Each step is idempotent and moves the record with a compare-and-set.

use std::collections::BTreeMap;

use tcf_api::replicator::DestinationStatus;
use tracing::{info, warn};

use crate::{
    Worker,
    config::{Mode, Status},
    fence, replicators,
    store::{FedState, HistoryEntry, Phase, SwitchRecord, now_ms},
};

/// Advances the switch record `rec` (read at `rev`) by one step if this
/// worker can; returns a message when a step failed (retried next poll).
pub(crate) async fn step(
    w: &Worker,
    state: &FedState,
    state_rev: i64,
    mut rec: SwitchRecord,
    rev: i64,
) -> Result<(), String> {
    let me = w.cfg.cluster.as_str();
    if rec.phase.is_final() {
        return Ok(());
    }
    if now_ms() > rec.deadline_ms && rec.phase != Phase::Flip {
        let phase = rec.phase;
        rec.phase = Phase::RolledBack;
        rec.error = Some(format!("deadline passed in phase {phase:?}"));
        let entry = history(&rec, state.term, "rolled_back", &w.id, BTreeMap::new());
        if w.store
            .roll_back(rev, &rec, &entry)
            .await
            .map_err(|e| e.to_string())?
        {
            warn!(from = %rec.from, to = %rec.to, ?phase, "switchover rolled back: deadline passed");
            metrics::counter!(crate::metrics::SWITCHES, crate::metrics::OUTCOME => "rolled_back")
                .increment(1);
        }
        return Ok(());
    }
    match rec.phase {
        Phase::Fence if rec.from == me => {
            let report = fence::apply(
                &w.cfg.instances,
                &w.cfg.connect_options(),
                rec.term,
                true,
                &w.cfg.dml_users,
            )
            .await
            .map_err(|e| format!("fencing {me}: {e}"))?;
            if report.masters.is_empty() {
                return Err(format!("fencing {me}: no writable instance answers"));
            }
            info!(term = rec.term, masters = ?report.masters, "fenced for the switchover");
            rec.fence_vclocks = report.vclocks;
            rec.phase = Phase::Drain;
            put(w, state_rev, rev, &rec).await
        }
        Phase::Drain if rec.to == me => {
            let r = w
                .cfg
                .replication
                .as_ref()
                .ok_or("no `replication` configured: cannot check the drain")?;
            let status: DestinationStatus =
                replicators::status(&r.incoming.destination, r.token.expose())
                    .await
                    .map_err(|e| e.to_string())?;
            let positions = status.applied_by_source();
            for (uuid, fenced_at) in &rec.fence_vclocks {
                let applied = positions.get(uuid);
                match applied {
                    Some(a) if fenced_at.le(a) => {}
                    other => {
                        return Err(format!(
                            "replicaset {uuid}: applied {other:?}, waiting for {fenced_at}"
                        ));
                    }
                }
            }
            info!(
                term = rec.term,
                "the incoming pair processed everything up to the fence"
            );
            rec.phase = Phase::Reverse;
            put(w, state_rev, rev, &rec).await
        }
        Phase::Reverse if rec.to == me => {
            let r = w
                .cfg
                .replication
                .as_ref()
                .ok_or("no `replication` configured")?;
            if r.mode == Mode::OneWay {
                replicators::set_pair(&r.outgoing, r.token.expose(), true, rec.term)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let status: DestinationStatus =
                replicators::status(&r.outgoing.destination, r.token.expose())
                    .await
                    .map_err(|e| e.to_string())?;
            if !status.all_streaming() {
                return Err("waiting for the reverse pair to stream".into());
            }
            rec.phase = Phase::Flip;
            put(w, state_rev, rev, &rec).await
        }
        Phase::Flip => {
            let mut next = state.clone();
            next.term = rec.term;
            next.clusters.insert(rec.from.clone(), Status::Passive);
            next.clusters.insert(rec.to.clone(), Status::Active);
            let loss = rec.fence_vclocks.clone();
            let entry = history(&rec, rec.term, "done", &w.id, loss);
            let mut done = rec.clone();
            done.phase = Phase::Done;
            if w.store
                .flip(state_rev, &next, rev, &done, &entry, None)
                .await
                .map_err(|e| e.to_string())?
            {
                info!(term = rec.term, active = %rec.to, "switchover done");
                metrics::counter!(crate::metrics::SWITCHES, crate::metrics::OUTCOME => "done")
                    .increment(1);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

async fn put(w: &Worker, state_rev: i64, rev: i64, rec: &SwitchRecord) -> Result<(), String> {
    w.store
        .put_switch(state_rev, rev, rec, None)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The history entry closing `rec` with `outcome` at `term`, written by
/// worker `by`.
pub(crate) fn history(
    rec: &SwitchRecord,
    term: u64,
    outcome: &str,
    by: &str,
    loss_point: BTreeMap<String, tcf_iproto::Vclock>,
) -> HistoryEntry {
    HistoryEntry {
        term,
        kind: rec.kind.clone(),
        outcome: outcome.into(),
        from: rec.from.clone(),
        to: rec.to.clone(),
        at_ms: now_ms(),
        by: format!("{} (requested by {})", by, rec.requested_by),
        loss_point,
        detail: None,
    }
}
