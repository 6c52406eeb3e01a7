//! Planned switchover, one phase at a time, driven by the switch record in
//! etcd so that any worker can finish or roll back a switch whose driver
//! died. Each step is idempotent and moves the record with a compare-and-set.
//! Starting a switch (its checks and its record, shared with a failover) is
//! [`start`].

pub(crate) mod start;

use std::collections::BTreeMap;

use tcf_api::{
    replicator::DestinationStatus,
    worker::{HistoryOutcome, Mode, Status},
};
use tcf_iproto::Vclock;
use tracing::{info, warn};

use crate::{
    Worker, fence,
    replicators::{self, CommandError},
    store::{FedState, HistoryEntry, Phase, StoreError, SwitchRecord, now_ms},
};

/// Why a step of a switch did not happen this poll (it is tried again at
/// the next one, until the record's deadline).
#[derive(Debug, thiserror::Error)]
pub(crate) enum StepError {
    /// etcd did not answer.
    #[error("{0}")]
    Etcd(#[from] StoreError),
    /// Fencing the old active failed.
    #[error("fencing {cluster}: {source}")]
    Fence {
        /// This cluster.
        cluster: String,
        /// Why.
        #[source]
        source: fence::FenceError,
    },
    /// The old active has no writable instance to fence.
    #[error("fencing {cluster}: no writable instance answers")]
    NoMaster {
        /// This cluster.
        cluster: String,
    },
    /// This worker drives no replicators.
    #[error("no `replication` configured: this worker cannot drive the pairs")]
    NoReplication,
    /// A replicator did not answer or refused.
    #[error("{0}")]
    Replicator(#[from] CommandError),
    /// The incoming pair has not applied everything up to the fence yet.
    #[error("replicaset {replicaset}: applied {applied:?}, waiting for {fenced_at}")]
    Draining {
        /// The source replicaset UUID.
        replicaset: String,
        /// What is applied.
        applied: Option<Vclock>,
        /// The old active's vclock after the fence.
        fenced_at: Vclock,
    },
    /// The reverse pair does not stream yet.
    #[error("waiting for the reverse pair to stream")]
    Reversing,
    /// This cluster repairs after a WAL gap: it may not become active
    /// before the walk ends.
    #[error("{0}")]
    Repairing(String),
}

/// Advances the switch record `rec` (read at `rev`) by one step if this
/// worker can; returns a message when a step failed (retried next poll).
pub(crate) async fn step(
    w: &Worker,
    state: &FedState,
    state_rev: i64,
    mut rec: SwitchRecord,
    rev: i64,
) -> Result<(), StepError> {
    let me = w.cfg.cluster.as_str();
    if rec.phase.is_final() {
        return Ok(());
    }
    if now_ms() > rec.deadline_ms && rec.phase != Phase::Flip {
        let phase = rec.phase;
        rec.phase = Phase::RolledBack;
        rec.error = Some(format!("deadline passed in phase {phase:?}"));
        let entry = history(
            &rec,
            state.term,
            HistoryOutcome::RolledBack,
            &w.id,
            BTreeMap::new(),
        );
        if w.store.roll_back(rev, &rec, &entry).await? {
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
            .map_err(|source| StepError::Fence {
                cluster: me.to_owned(),
                source,
            })?;
            if report.masters.is_empty() {
                return Err(StepError::NoMaster {
                    cluster: me.to_owned(),
                });
            }
            info!(term = rec.term, masters = ?report.masters, "fenced for the switchover");
            rec.fence_vclocks = report.vclocks;
            rec.phase = Phase::Drain;
            put(w, state_rev, rev, &rec).await
        }
        Phase::Drain if rec.to == me => {
            let r = w.cfg.replication.as_ref().ok_or(StepError::NoReplication)?;
            let status: DestinationStatus =
                replicators::destinations(&r.incoming, r.token.expose()).await?;
            if let Some(why) = crate::verify::repair_problem(&status) {
                return Err(StepError::Repairing(why));
            }
            let positions = status.applied_by_source();
            for (uuid, fenced_at) in &rec.fence_vclocks {
                let applied = positions.get(uuid);
                if !applied.is_some_and(|a| fenced_at.le(a)) {
                    return Err(StepError::Draining {
                        replicaset: uuid.clone(),
                        applied: applied.cloned(),
                        fenced_at: fenced_at.clone(),
                    });
                }
            }
            info!(
                term = rec.term,
                "every incoming pair processed everything up to the fence"
            );
            rec.phase = Phase::Reverse;
            put(w, state_rev, rev, &rec).await
        }
        Phase::Reverse if rec.to == me => {
            let r = w.cfg.replication.as_ref().ok_or(StepError::NoReplication)?;
            if r.mode == Mode::OneWay {
                replicators::set_pairs(&r.outgoing, r.token.expose(), true, rec.term).await?;
            }
            let status: DestinationStatus =
                replicators::destinations(&r.outgoing, r.token.expose()).await?;
            if !status.all_streaming() {
                return Err(StepError::Reversing);
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
            let entry = history(&rec, rec.term, HistoryOutcome::Done, &w.id, loss);
            let mut done = rec.clone();
            done.phase = Phase::Done;
            if w.store
                .flip(state_rev, &next, rev, &done, &entry, None)
                .await?
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

async fn put(w: &Worker, state_rev: i64, rev: i64, rec: &SwitchRecord) -> Result<(), StepError> {
    w.store.put_switch(state_rev, rev, rec, None).await?;
    Ok(())
}

/// The history entry closing `rec` with `outcome` at `term`, written by
/// worker `by`.
pub(crate) fn history(
    rec: &SwitchRecord,
    term: u64,
    outcome: HistoryOutcome,
    by: &str,
    loss_point: BTreeMap<String, Vclock>,
) -> HistoryEntry {
    HistoryEntry {
        term,
        kind: rec.kind,
        outcome,
        from: rec.from.clone(),
        to: rec.to.clone(),
        at_ms: now_ms(),
        by: format!("{} (requested by {})", by, rec.requested_by),
        loss_point,
        detail: None,
    }
}
