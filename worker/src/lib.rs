//! `tcf-worker`: tells load balancers which cluster is active, keeps the
//! federation's state in etcd, fences the passive cluster, runs planned
//! switchovers and drives the replicators.
//!
//! Every decision is taken from state freshly read from etcd; statuses and
//! the term change only through etcd transactions that compare revisions, so
//! the store never holds two actives. See `docs/worker.md` and
//! `docs/state.md`.

pub mod config;
mod console;
mod context;
mod coordinator;
mod election;
mod failover;
mod fence;
pub mod health;
mod http;
mod membership;
mod metrics;
pub mod peers;
mod reconcile;
mod replicators;
mod resync;
mod startup;
pub mod store;
mod switch;
mod unmarked;
mod verify;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

pub use config::{Config, Status};
pub(crate) use context::{View, Worker};
use store::StoreError;
use tokio_util::sync::CancellationToken;
use tracing::info;

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
        membership: membership::Membership::default(),
        unmarked: unmarked::Alarm::default(),
        verdict: Mutex::default(),
        lag: console::lag::LagLog::default(),
    });
    tokio::select! {
        () = w.membership.load(&w.store, &cfg.cluster) => {}
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
    tokio::spawn(console::lag::run(Arc::clone(&w), shutdown.clone()));
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
