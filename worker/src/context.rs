//! The worker's shared context: its config, its etcd store, what it last
//! saw and did (the [`View`]), and the state of the modules it runs
//! (election campaign, replicaset membership, the coordinator's verdict).

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use tcf_api::worker::Verdict;

use crate::{
    Config, console, election, membership,
    store::{FedState, Store, SwitchRecord},
    unmarked,
};

/// Why the worker cannot vouch for the federation state now (`is_active`
/// answers 503 with it).
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum Unconfirmed {
    /// Neither etcd nor a peer worker confirmed it within `fencing_timeout`.
    #[error("state confirmed neither from etcd nor by a peer worker for {after:?}: {}", etcd_error.as_deref().unwrap_or("no answer yet"))]
    Stale {
        /// `fencing_timeout`.
        after: Duration,
        /// The last etcd failure, if any.
        etcd_error: Option<String>,
    },
    /// etcd answers but holds no federation state.
    #[error("no federation state in etcd")]
    NoState,
}

/// What this worker last saw and did.
#[derive(Debug, Clone, Default)]
pub(crate) struct View {
    pub(crate) state: Option<FedState>,
    pub(crate) state_rev: i64,
    pub(crate) switch: Option<SwitchRecord>,
    pub(crate) switch_rev: i64,
    pub(crate) confirmed_at: Option<Instant>,
    /// When a peer worker last confirmed `state` (same term and statuses).
    pub(crate) peer_confirmed_at: Option<Instant>,
    pub(crate) etcd_error: Option<String>,
    /// The elected coordinator's id, as last read.
    pub(crate) leader: Option<String>,
    /// `(fenced, term)` as last applied to this cluster.
    pub(crate) fence: Option<(bool, u64)>,
    pub(crate) fence_error: Option<String>,
    /// The last fence found no instance of this cluster answering.
    pub(crate) cluster_unreachable: bool,
    pub(crate) switch_error: Option<String>,
    pub(crate) replicator_error: Option<String>,
}

/// A running worker.
pub(crate) struct Worker {
    pub(crate) cfg: Arc<Config>,
    pub(crate) store: Store,
    pub(crate) id: String,
    pub(crate) view: Mutex<View>,
    pub(crate) campaign: Arc<election::Campaign>,
    /// Held by whoever starts/stops replicators or fails over, so a
    /// reconciliation never undoes a failover's stop half-way.
    pub(crate) acting: tokio::sync::Mutex<()>,
    pub(crate) membership: membership::Membership,
    /// The unmarked-write alarm (`unmarked.rs` owns its state).
    pub(crate) unmarked: unmarked::Alarm,
    pub(crate) verdict: Mutex<Verdict>,
    /// The pairs' lag over the last minutes (console, gauges).
    pub(crate) lag: console::lag::LagLog,
}

impl Worker {
    pub(crate) fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn verdict(&self) -> MutexGuard<'_, Verdict> {
        self.verdict.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fresh(&self, at: Option<Instant>) -> bool {
        at.is_some_and(|t| t.elapsed() < self.cfg.coordinator.fencing_timeout)
    }

    /// Whether the state was read from etcd within `fencing_timeout`.
    pub(crate) fn etcd_fresh(&self) -> bool {
        self.fresh(self.view().confirmed_at)
    }

    /// The state, when confirmed from etcd or by a peer worker (same term
    /// and statuses) within `fencing_timeout`.
    pub(crate) fn confirmed_state(&self) -> Result<FedState, Unconfirmed> {
        let v = self.view();
        let fresh = self.fresh(v.confirmed_at) || self.fresh(v.peer_confirmed_at);
        match (&v.state, fresh) {
            (Some(s), true) => Ok(s.clone()),
            (_, false) => Err(Unconfirmed::Stale {
                after: self.cfg.coordinator.fencing_timeout,
                etcd_error: v.etcd_error.clone(),
            }),
            (None, true) => Err(Unconfirmed::NoState),
        }
    }

    /// Whether this worker starts/stops the replicators: the elected
    /// coordinator does; a worker that does not campaign does only while no
    /// coordinator is elected.
    pub(crate) fn drives_replicators(&self) -> bool {
        if self.cfg.coordinator.enabled {
            self.campaign
                .leading(self.cfg.coordinator.lease_ttl)
                .is_some()
        } else {
            self.view().leader.is_none()
        }
    }
}
