//! Failover: the active cluster is given up for its peer without waiting
//! for it. Order matters and each step is safe to repeat:
//!
//! 1. the peer must be promotable ([`tcf_api::health::Health::promotion_problem`]);
//! 2. a switch record (kind `failover`, phase `failover`) is written with a
//!    compare-and-set: from then on every worker reconciling replicators keeps
//!    the pair leaving the failed cluster stopped, and the failed cluster's
//!    workers fence it. If the driver dies, the record rolls back at its
//!    deadline like a switchover;
//! 3. the pair leaving the failed cluster is stopped (destination first) at
//!    the current term, so nothing from the failed cluster is applied after
//!    the loss point is read;
//! 4. the loss point (the peer's applied position from the failed cluster,
//!    read from its progress spaces) is read;
//! 5. one etcd transaction flips the term (+1), marks the failed cluster
//!    `diverged` and the peer `active`, records the switch and the history
//!    entry. An automatic failover also compares the leader's election key,
//!    so a deposed coordinator cannot commit one.
//!
//! A step that fails leaves the state unchanged; the stopped pair is started
//! again by the next reconciliation.

use std::{collections::BTreeMap, time::Instant};

use tcf_iproto::Vclock;
use tracing::{info, warn};

use tcf_api::worker::{HistoryOutcome, Status, SwitchKind};

use crate::{
    Worker,
    election::Leadership,
    health, replicators,
    store::{Phase, StoreError, SwitchRecord},
    switch::{
        history,
        start::{Plan, StartError},
    },
};

/// A failover that did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FailoverError {
    /// etcd did not answer.
    #[error("etcd: {0}")]
    Etcd(#[from] StoreError),
    /// The state does not allow one (a switch under way, no active
    /// cluster, the peer not passive) or it changed meanwhile.
    #[error("{0}")]
    Start(#[from] StartError),
    /// This worker drives no replicators, so it cannot stop the pair.
    #[error("this worker has no `replication` section: it cannot stop the pair")]
    NoReplication,
    /// The peer cannot take over.
    #[error("cluster {cluster} cannot be promoted: {why}")]
    NotPromotable {
        /// The peer.
        cluster: String,
        /// Why.
        why: String,
    },
    /// A replicator did not obey.
    #[error("stopping the pair from {from}: {why}")]
    Replicators {
        /// The failed cluster.
        from: String,
        /// Why.
        why: String,
    },
    /// The state changed meanwhile (or leadership was lost).
    #[error("the state changed during the failover (another switch or a new leader won)")]
    Conflict,
}

pub(crate) use tcf_api::operator::FailoverOutcome as Outcome;

/// Fails the active cluster over to its peer. `leader` makes the flip
/// conditional on still leading (automatic failover).
pub(crate) async fn fail_over(
    w: &Worker,
    reason: &str,
    requested_by: String,
    leader: Option<&Leadership>,
) -> Result<Outcome, FailoverError> {
    let started = Instant::now();
    let _acting = w.acting.lock().await;
    let plan = Plan::read(w).await?;
    let (from, to) = (plan.from.clone(), plan.to.clone());
    let probe = health::of(w, &to)
        .await
        .map_err(|e| FailoverError::NotPromotable {
            cluster: to.clone(),
            why: e.into(),
        })?;
    if let Some(why) = probe.promotion_problem() {
        return Err(FailoverError::NotPromotable { cluster: to, why });
    }
    let r = w
        .cfg
        .replication
        .as_ref()
        .ok_or(FailoverError::NoReplication)?;
    let mut rec = plan.record(
        w,
        SwitchKind::Failover,
        requested_by,
        Some(reason.to_owned()),
    );
    let term = rec.term;
    let state = plan.state.clone();
    let state_rev = plan.state_rev;
    let guard = leader.map(|l| (l.key.as_slice(), l.create_rev));
    let switch_rev = plan.write(w, &rec, guard).await?;
    let loss_point = match isolate(w, r, &rec, &probe).await {
        Ok(lp) => lp,
        Err(e) => {
            // Undo the record at once: the failed cluster is unfenced and
            // the pair restarted by the next reconciliation.
            let mut undo = rec.clone();
            undo.phase = Phase::RolledBack;
            undo.error = Some(format!("{reason}: {e}"));
            let entry = history(
                &undo,
                state.term,
                HistoryOutcome::RolledBack,
                &w.id,
                BTreeMap::new(),
            );
            if let Err(re) = w.store.roll_back(switch_rev, &undo, &entry).await {
                warn!(%from, %to, "failover record not rolled back ({re}); its deadline will");
            }
            return Err(e);
        }
    };
    let mut next = state.clone();
    next.term = term;
    next.clusters.insert(from.clone(), Status::Diverged);
    next.clusters.insert(to.clone(), Status::Active);
    rec.phase = Phase::Done;
    rec.loss_point.clone_from(&loss_point);
    let by = format!("{} ({reason})", w.id);
    let entry = history(&rec, term, HistoryOutcome::Done, &by, loss_point.clone());
    if !w
        .store
        .flip(state_rev, &next, switch_rev, &rec, &entry, guard)
        .await?
    {
        warn!(%from, %to, "failover lost a race: state unchanged");
        return Err(FailoverError::Conflict);
    }
    metrics::counter!(crate::metrics::SWITCHES, crate::metrics::OUTCOME => "failover").increment(1);
    info!(%from, %to, term, ?loss_point, reason, "failover done: {from} is diverged");
    Ok(Outcome {
        from,
        to,
        term,
        loss_point,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// Stops every pair of both directions between the clusters at the failover's term (nothing of
/// `from` is applied to `to` past this point, nothing of `to` reaches `from`)
/// and reads the loss point from `to`'s progress spaces.
async fn isolate(
    w: &Worker,
    r: &crate::config::Replication,
    rec: &SwitchRecord,
    before: &health::Health,
) -> Result<BTreeMap<String, Vclock>, FailoverError> {
    let (leaving, entering) = r.directions(&w.cfg.cluster, &rec.to);
    let token = r.token.expose();
    let failed = |why: String| FailoverError::Replicators {
        from: rec.from.clone(),
        why,
    };
    replicators::stop_pairs_best_effort(leaving, token, rec.term)
        .await
        .map_err(failed)?;
    // The pairs into the failed cluster: their gateways read `to` and must
    // stop; their destinations are on the failed side and may be unreachable.
    replicators::stop_gateways_first(entering, token, rec.term)
        .await
        .map_err(failed)?;
    let after = health::of(w, &rec.to)
        .await
        .map_err(|e| FailoverError::NotPromotable {
            cluster: rec.to.clone(),
            why: e.into(),
        })?;
    let not_promotable = |why: String| FailoverError::NotPromotable {
        cluster: rec.to.clone(),
        why,
    };
    if let Some(p) = after.serving_problem() {
        return Err(not_promotable(p));
    }
    if after.applied.keys().ne(before.applied.keys()) {
        return Err(not_promotable(format!(
            "its progress spaces changed shape while failing over ({:?} then {:?})",
            before.applied.keys().collect::<Vec<_>>(),
            after.applied.keys().collect::<Vec<_>>()
        )));
    }
    Ok(after.loss_point())
}
