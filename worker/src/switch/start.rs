//! Starting a switch: the checks and the record shared by a planned
//! switchover and a failover. Both read the state and the switch record in
//! one etcd snapshot, refuse while another switch is under way, and write
//! their record with a compare-and-set on both revisions.

use std::collections::BTreeMap;

use tcf_api::worker::{FedState, Phase, Status, SwitchKind, SwitchRecord};

use crate::{
    Worker,
    store::{StoreError, now_ms},
};

/// Why a switch did not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// etcd did not answer.
    #[error("{0}")]
    Etcd(#[from] StoreError),
    /// etcd holds no federation state.
    #[error("no federation state in etcd")]
    NoState,
    /// Another switch is under way.
    #[error(
        "a {kind} from {from} to {to} is in progress (phase {phase:?}); it ends by its deadline"
    )]
    InProgress {
        /// Its kind.
        kind: SwitchKind,
        /// Its old active.
        from: String,
        /// Its new active.
        to: String,
        /// Its phase.
        phase: Phase,
    },
    /// No cluster is active.
    #[error("no cluster is active")]
    NoActive,
    /// The cluster to become active is not passive.
    #[error("cluster {cluster} is {}: it cannot become active", status.map_or("absent", Status::as_str))]
    NotPassive {
        /// The cluster.
        cluster: String,
        /// Its status.
        status: Option<Status>,
    },
    /// The cluster to become active holds an incomplete copy: a repair
    /// after a WAL gap has not ended (`crate::health::Health::repair_problem`).
    #[error("cluster {cluster} cannot become active: {why}")]
    NotPromotable {
        /// The cluster.
        cluster: String,
        /// Why.
        why: String,
    },
    /// The state or the record changed between the read and the write
    /// (another switch won, or leadership was lost).
    #[error("the state changed while starting the switch (another switch won)")]
    Conflict,
}

/// What a switch starts from: the state and the record as read together,
/// and the clusters it moves between.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) state: FedState,
    pub(crate) state_rev: i64,
    pub(crate) switch_rev: i64,
    /// The active cluster.
    pub(crate) from: String,
    /// The passive cluster that becomes active.
    pub(crate) to: String,
}

impl Plan {
    /// Reads the state and the switch record in one snapshot and checks
    /// that a switch may start: none under way, one cluster active, the
    /// other passive.
    pub(crate) async fn read(w: &Worker) -> Result<Self, StartError> {
        let ((state, state_rev), (switch, switch_rev)) = w.store.snapshot().await?;
        let state = state.ok_or(StartError::NoState)?;
        if let Some(s) = switch.filter(|s| !s.phase.is_final()) {
            return Err(StartError::InProgress {
                kind: s.kind,
                from: s.from,
                to: s.to,
                phase: s.phase,
            });
        }
        let from = state.active().ok_or(StartError::NoActive)?.to_owned();
        let to = if from == w.cfg.cluster {
            w.cfg.peer.clone()
        } else {
            w.cfg.cluster.clone()
        };
        if state.status(&to) != Some(Status::Passive) {
            return Err(StartError::NotPassive {
                status: state.status(&to),
                cluster: to,
            });
        }
        Ok(Self {
            state,
            state_rev,
            switch_rev,
            from,
            to,
        })
    }

    /// The record of a switch of `kind` from this plan, in its first phase
    /// (`fence` for a switchover, `failover` for a failover), at the next
    /// term, due within `switchover_timeout`. `reason` is a failover's.
    pub(crate) fn record(
        &self,
        w: &Worker,
        kind: SwitchKind,
        requested_by: String,
        reason: Option<String>,
    ) -> SwitchRecord {
        let phase = match kind {
            SwitchKind::Failover => Phase::Failover,
            SwitchKind::Switchover | SwitchKind::Resync => Phase::Fence,
        };
        let now = now_ms();
        SwitchRecord {
            id: uuid::Uuid::new_v4().to_string(),
            kind,
            from: self.from.clone(),
            to: self.to.clone(),
            term: self.state.term + 1,
            phase,
            deadline_ms: now
                + u64::try_from(w.cfg.switchover_timeout.as_millis()).unwrap_or(u64::MAX),
            started_ms: now,
            requested_by,
            fence_vclocks: BTreeMap::new(),
            error: reason,
            loss_point: BTreeMap::new(),
        }
    }

    /// Writes `rec` if neither the state nor the record changed since this
    /// plan was read (and, with `leader`, this worker still holds that
    /// election key); returns the record's revision.
    pub(crate) async fn write(
        &self,
        w: &Worker,
        rec: &SwitchRecord,
        leader: Option<(&[u8], i64)>,
    ) -> Result<i64, StartError> {
        w.store
            .put_switch(self.state_rev, self.switch_rev, rec, leader)
            .await?
            .ok_or(StartError::Conflict)
    }
}

/// Starts a planned switchover requested by `requested_by`: writes its
/// record in phase `fence`; every worker then carries it phase by phase
/// (`crate::switch::step`). Returns the record written.
pub(crate) async fn switchover(
    w: &Worker,
    requested_by: String,
) -> Result<SwitchRecord, StartError> {
    let plan = Plan::read(w).await?;
    if let Some(why) = crate::verify::promotion_blocked(w, &plan.to).await {
        return Err(StartError::NotPromotable {
            cluster: plan.to.clone(),
            why,
        });
    }
    let rec = plan.record(w, SwitchKind::Switchover, requested_by, None);
    plan.write(w, &rec, None).await?;
    Ok(rec)
}
