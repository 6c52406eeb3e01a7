//! `tcf-worker`: tells load balancers which cluster is active, keeps the
//! federation's state in etcd, fences the passive cluster, runs planned
//! switchovers and drives the replicators.
//!
//! Every decision is taken from state freshly read from etcd; statuses and
//! the term change only through etcd transactions that compare revisions, so
//! the store never holds two actives. See `docs/worker.md` and
//! `docs/state.md`.

pub mod config;
mod coordinator;
mod election;
mod failover;
mod fence;
pub mod health;
mod http;
mod metrics;
pub mod peers;
mod replicators;
mod resync;
mod startup;
pub mod store;
mod switch;
mod unmarked;

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

pub use config::{Config, Status};
use store::{FedState, Store, StoreError, SwitchRecord};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Why the worker could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `initial_status` contradicts the state still at its bootstrap term.
    #[error(
        "initial_status '{configured}' of cluster {cluster} contradicts the federation state in etcd ({stored} at term 0); fix the config or the state"
    )]
    Contradiction {
        /// This cluster.
        cluster: String,
        /// What the config says.
        configured: &'static str,
        /// What etcd holds.
        stored: &'static str,
    },
    /// etcd failed at start.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The metrics recorder could not be installed.
    #[error("metrics: {0}")]
    Metrics(String),
    /// The HTTP server failed.
    #[error(transparent)]
    Http(#[from] tcf_common::http::HttpError),
    /// The HTTP server's task panicked.
    #[error("the HTTP server task failed: {0}")]
    ServerTask(#[from] tokio::task::JoinError),
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
    pub(crate) unmarked: unmarked::Unmarked,
}

/// A running worker.
pub struct Worker {
    pub(crate) cfg: Arc<Config>,
    pub(crate) store: Store,
    pub(crate) id: String,
    view: Mutex<View>,
    pub(crate) campaign: Arc<election::Campaign>,
    /// Held by whoever starts/stops replicators or fails over, so a
    /// reconciliation never undoes a failover's stop half-way.
    pub(crate) acting: tokio::sync::Mutex<()>,
    pub(crate) membership: health::Membership,
    verdict: Mutex<coordinator::Verdict>,
}

impl Worker {
    pub(crate) fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn verdict(&self) -> MutexGuard<'_, coordinator::Verdict> {
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
    pub(crate) fn confirmed_state(&self) -> Result<FedState, String> {
        let v = self.view();
        let fresh = self.fresh(v.confirmed_at) || self.fresh(v.peer_confirmed_at);
        match (&v.state, fresh) {
            (Some(s), true) => Ok(s.clone()),
            (_, false) => Err(format!(
                "state confirmed neither from etcd nor by a peer worker for {:?}: {}",
                self.cfg.coordinator.fencing_timeout,
                v.etcd_error
                    .clone()
                    .unwrap_or_else(|| "no answer yet".into())
            )),
            (None, true) => Err("no federation state in etcd".into()),
        }
    }

    /// Whether this worker starts/stops the replicators: the elected
    /// coordinator does; a worker that does not campaign does only while no
    /// coordinator is elected.
    fn drives_replicators(&self) -> bool {
        if self.cfg.coordinator.enabled {
            self.campaign
                .leading(self.cfg.coordinator.lease_ttl)
                .is_some()
        } else {
            self.view().leader.is_none()
        }
    }

    async fn refresh(&self) -> Result<(), StoreError> {
        let ((state, state_rev), (switch, switch_rev)) = self.store.snapshot().await?;
        let leader = election::leader(self.store.client(), &self.cfg.key("election")).await;
        let mut v = self.view();
        match leader {
            Ok(l) => v.leader = l,
            Err(e) => warn!("coordinator election: cannot read the leader: {e}"),
        }
        if let Some(s) = &state {
            ::metrics::gauge!(metrics::TERM).set(s.term as f64);
            let code = match s.status(&self.cfg.cluster) {
                Some(Status::Active) => 1.0,
                Some(Status::Passive) => 0.0,
                Some(Status::Diverged) | None => -1.0,
            };
            ::metrics::gauge!(metrics::STATUS, metrics::CLUSTER => self.cfg.cluster.clone())
                .set(code);
        }
        v.state = state;
        v.state_rev = state_rev;
        v.switch = switch;
        v.switch_rev = switch_rev;
        v.confirmed_at = Some(Instant::now());
        v.etcd_error = None;
        Ok(())
    }

    /// Fenced unless active, not being switched away from and not isolated;
    /// the term is the newest of the state's and the switch's.
    fn desired_fence(
        &self,
        state: &FedState,
        switch: Option<&SwitchRecord>,
        isolated: bool,
    ) -> (bool, u64) {
        let me = self.cfg.cluster.as_str();
        let leaving = switch.is_some_and(|s| !s.phase.is_final() && s.from == me);
        let fenced = state.status(me) != Some(Status::Active) || leaving || isolated;
        let term = state.term.max(switch.map_or(0, |s| s.term));
        (fenced, term)
    }

    async fn reconcile_fence(
        &self,
        state: &FedState,
        switch: Option<&SwitchRecord>,
        isolated: bool,
        force: bool,
    ) {
        let want = self.desired_fence(state, switch, isolated);
        if !force && self.view().fence == Some(want) {
            return;
        }
        match fence::apply(
            &self.cfg.instances,
            &self.cfg.connect_options(),
            want.1,
            want.0,
            &self.cfg.dml_users,
        )
        .await
        {
            Ok(r) => {
                if self.view().fence != Some(want) {
                    info!(fenced = want.0, term = want.1, masters = ?r.masters, "fence applied");
                }
                ::metrics::gauge!(metrics::FENCED).set(if want.0 { 1.0 } else { 0.0 });
                let mut v = self.view();
                v.fence = Some(want);
                v.fence_error = None;
                v.cluster_unreachable = false;
            }
            Err(e) => {
                ::metrics::counter!(metrics::FENCE_ERRORS).increment(1);
                let unreachable = match &e {
                    fence::FenceError::Unreachable {
                        out_of_descriptors, ..
                    } => {
                        if *out_of_descriptors {
                            tracing::error!(
                                fenced = want.0,
                                term = want.1,
                                "cannot fence: this process is out of file descriptors (raise LimitNOFILE; see docs/worker.md): {e}"
                            );
                        }
                        true
                    }
                    fence::FenceError::Instance { .. } => false,
                };
                warn!("fence (fenced={}, term={}) failed: {e}", want.0, want.1);
                let mut v = self.view();
                v.fence_error = Some(e.to_string());
                v.cluster_unreachable = unreachable;
            }
        }
    }

    async fn reconcile_replicators(&self, state: &FedState, switch: Option<&SwitchRecord>) {
        let Some(r) = &self.cfg.replication else {
            return;
        };
        let me = self.cfg.cluster.as_str();
        let (Some(status), Some(peer_status)) = (state.status(me), state.status(&self.cfg.peer))
        else {
            return;
        };
        // A failover or resync in progress owns the replicators; the state
        // this call was given predates it: skip this round.
        let Ok(_acting) = self.acting.try_lock() else {
            return;
        };
        let (mut out, mut inc) = replicators::desired(r.mode, r.on_return, status, peer_status);
        // The newest term seen: a switch (even a rolled-back one) started pairs
        // with its own term, and the replicators refuse anything older.
        let term = state.term.max(switch.map_or(0, |s| s.term));
        // From the reverse phase on, the pair leaving the cluster becoming
        // active runs, whatever the (not yet flipped) statuses say.
        if let Some(s) =
            switch.filter(|s| matches!(s.phase, store::Phase::Reverse | store::Phase::Flip))
        {
            if s.to == me {
                out = true;
            } else if s.from == me {
                inc = true;
            }
        }
        // A failover under way: both pairs stay stopped until the flip (its
        // driver reads the loss point; nothing may reach the failed cluster).
        if switch.is_some_and(|s| s.phase == store::Phase::Failover) {
            (out, inc) = (false, false);
        }
        let token = r.token.expose();
        let mut errors = Vec::new();
        for (pair, run) in [(&r.outgoing, out), (&r.incoming, inc)] {
            if let Err(e) = replicators::set_pair(pair, token, run, term).await {
                errors.push(e.to_string());
            }
        }
        self.view().replicator_error = (!errors.is_empty()).then(|| errors.join("; "));
    }

    async fn tick(&self, n: u64) {
        let (refreshed, ()) = tokio::join!(self.refresh(), peers::confirm(self));
        let etcd_ok = match refreshed {
            Ok(()) => true,
            Err(e) => {
                ::metrics::counter!(metrics::ETCD_ERRORS).increment(1);
                warn!("{e}");
                self.view().etcd_error = Some(e.to_string());
                false
            }
        };
        ::metrics::gauge!(metrics::STALE).set(if self.etcd_fresh() { 0.0 } else { 1.0 });
        let (state, state_rev, switch, switch_rev) = {
            let v = self.view();
            (v.state.clone(), v.state_rev, v.switch.clone(), v.switch_rev)
        };
        if n.is_multiple_of(10) {
            // Learns which replicaset each instance belongs to, so that one
            // that dies later still counts against its replicaset.
            health::probe_local(self).await;
        }
        let Some(state) = state else { return };
        if !etcd_ok {
            // Without etcd nothing is decided; cut off from the peer too for
            // fencing_timeout, the cluster is fenced (is_active answers 503).
            let isolated = self.confirmed_state().is_err();
            self.reconcile_fence(&state, switch.as_ref(), isolated, n.is_multiple_of(10))
                .await;
            return;
        }
        if let Some(rec) = switch.clone() {
            let result = switch::step(self, &state, state_rev, rec, switch_rev).await;
            self.view().switch_error = result.err();
        }
        // Re-applied periodically: after restarts and reconnects of instances.
        self.reconcile_fence(&state, switch.as_ref(), false, n.is_multiple_of(10))
            .await;
        unmarked::check(self, &state, n).await;
        if n.is_multiple_of(5) {
            resync::ship_tail_step(self, &state).await;
        }
        if (n.is_multiple_of(4) || switch.as_ref().is_some_and(|s| !s.phase.is_final()))
            && self.drives_replicators()
        {
            self.reconcile_replicators(&state, switch.as_ref()).await;
        }
    }
}

/// Serves the HTTP API at once (503 until ready), connects to etcd and
/// writes the bootstrap state if none exists (or refuses to start when
/// `initial_status` contradicts a state at its bootstrap term), then runs
/// until `shutdown`. Shutdown ends every phase promptly, the start-up wait
/// included.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let handle = tcf_common::metrics::install_prometheus_with_labels(
        &[("cluster".to_owned(), config.cluster.clone())]
            .into_iter()
            .collect(),
    )
    .map_err(|e| RunError::Metrics(e.to_string()))?;
    tcf_common::metrics::spawn_upkeep(handle.clone());
    if let Some(roots) = &config.https_roots {
        tcf_common::http_client::set_https_roots(roots.clone());
    }
    let listener = tcf_common::http::bind(config.http_listen).await?;
    let cfg = Arc::new(config);
    let gate = startup::Gate::default();
    let server = {
        let (cfg, router) = (Arc::clone(&cfg), gate.router());
        let stop = shutdown.clone().cancelled_owned();
        tokio::spawn(async move {
            tcf_common::https::serve_listener(listener, cfg.http_tls.as_ref(), router, stop).await
        })
    };
    let served = async {
        match server.await {
            Ok(r) => r.map_err(RunError::from),
            Err(e) => Err(RunError::from(e)),
        }
    };
    // A third of fencing_timeout: a dead etcd costs a tick at most that, so
    // peer confirmations still arrive within fencing_timeout.
    let etcd_timeout = (cfg.coordinator.fencing_timeout / 3).min(Duration::from_secs(3));
    let store = tokio::select! {
        r = startup::connect(&cfg, etcd_timeout, &gate) => r,
        () = shutdown.cancelled() => {
            info!("stopped while starting");
            return served.await;
        }
    };
    let store = match store {
        Ok(s) => s,
        Err(e) => {
            shutdown.cancel();
            let _ = served.await;
            return Err(e);
        }
    };
    let id = format!("{}@{}", cfg.cluster, cfg.http_listen);
    let w = Arc::new(Worker {
        cfg: Arc::clone(&cfg),
        store,
        id,
        view: Mutex::new(View::default()),
        campaign: Arc::default(),
        acting: tokio::sync::Mutex::new(()),
        membership: health::Membership::default(),
        verdict: Mutex::default(),
    });
    tokio::select! {
        () = w.membership.load(&w) => {}
        () = shutdown.cancelled() => return served.await,
    }
    let lease = election::LeaseUse {
        presence_key: w.store.presence_key(&cfg.cluster, &w.id),
        election: cfg.coordinator.enabled.then(|| cfg.key("election")),
        value: w.id.clone(),
    };
    let campaign = tokio::spawn(election::run(
        cfg.etcd_endpoints.clone(),
        lease,
        cfg.coordinator.lease_ttl,
        Arc::clone(&w.campaign),
        shutdown.clone(),
    ));
    if cfg.coordinator.enabled {
        tokio::spawn(coordinator::run(Arc::clone(&w), shutdown.clone()));
    }
    info!(federation = %cfg.federation, cluster = %cfg.cluster, http = %cfg.http_listen, "tcf-worker running");
    let ticker = {
        let (w, stop) = (Arc::clone(&w), shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(w.cfg.poll_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0u64;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.cancelled() => break,
                }
                // A tick waiting on a hung etcd or instance is cut short.
                tokio::select! {
                    () = w.tick(n) => {}
                    () = stop.cancelled() => break,
                }
                n += 1;
            }
        })
    };
    gate.open(http::router(Arc::clone(&w), handle));
    let result = served.await;
    ticker.abort();
    // Lets the lease be revoked: the next leader takes over now, and this
    // worker's presence key goes away.
    let _ = tokio::time::timeout(Duration::from_secs(3), campaign).await;
    result
}
