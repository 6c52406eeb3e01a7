//! Starting up: reaching etcd and writing (or checking) the bootstrap
//! state, retried until it works or the process is told to stop.
//!
//! The HTTP port is served from the first moment: until the worker is ready
//! every route answers 503 with what it is waiting for, so a load balancer
//! or an operator sees why, and SIGTERM/SIGINT end the wait at once.

use std::{
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Body,
    http::{Request, StatusCode},
    response::IntoResponse,
};
use serde_json::json;
use tower::ServiceExt;
use tracing::{error, info};

use crate::{
    RunError,
    config::{Config, Status},
    store::{FedState, Store},
};

/// The router served while starting: delegates to the real one once it is
/// set, answers 503 naming what the worker waits for until then.
#[derive(Clone, Default)]
pub(crate) struct Gate {
    ready: Arc<OnceLock<Router>>,
    waiting_for: Arc<Mutex<String>>,
}

impl Gate {
    /// The router to serve from the start.
    pub(crate) fn router(&self) -> Router {
        let gate = self.clone();
        Router::new().fallback(move |req: Request<Body>| {
            let gate = gate.clone();
            async move {
                match gate.ready.get() {
                    Some(router) => match router.clone().oneshot(req).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    },
                    None => {
                        let why = gate.waiting_for().clone();
                        let error = format!("tcf-worker is starting: {why}");
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            Json(json!({ "error": error })),
                        )
                            .into_response()
                    }
                }
            }
        })
    }

    /// Serves `router` from now on.
    pub(crate) fn open(&self, router: Router) {
        let _ = self.ready.set(router);
    }

    fn waiting_for(&self) -> std::sync::MutexGuard<'_, String> {
        self.waiting_for
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn wait_for(&self, what: String) {
        *self.waiting_for() = what;
    }
}

/// Longest pause between two attempts to reach etcd at start.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Connects to etcd and writes the bootstrap state if none exists (or
/// refuses when `initial_status` contradicts a state at its bootstrap
/// term), retrying with a growing pause while etcd is unreachable. The
/// caller races it against shutdown: it may be dropped at any await.
pub(crate) async fn connect(
    cfg: &Config,
    etcd_timeout: Duration,
    gate: &Gate,
) -> Result<Store, RunError> {
    let mut backoff = Duration::from_millis(200);
    let endpoints = cfg.etcd_endpoints.join(",");
    info!(%endpoints, "connecting to etcd");
    gate.wait_for(format!("connecting to etcd at {endpoints}"));
    loop {
        let attempt = async {
            let store = Store::connect(&cfg.etcd_endpoints, |k| cfg.key(k), etcd_timeout).await?;
            bootstrap(cfg, &store).await?;
            Ok::<_, RunError>(store)
        };
        match attempt.await {
            Ok(store) => return Ok(store),
            Err(RunError::Store(e)) => {
                error!("etcd unreachable at start: {e}; retrying in {backoff:?}");
                gate.wait_for(format!("etcd unreachable: {e}"));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(other) => return Err(other),
        }
    }
}

async fn bootstrap(cfg: &Config, store: &Store) -> Result<(), RunError> {
    let mine = cfg.initial_status;
    let peer = if mine == Status::Active {
        Status::Passive
    } else {
        Status::Active
    };
    let initial = FedState {
        term: 0,
        clusters: [(cfg.cluster.clone(), mine), (cfg.peer.clone(), peer)]
            .into_iter()
            .collect(),
    };
    loop {
        match store.state().await? {
            (None, _) => {
                if store.bootstrap(&initial).await? {
                    info!(
                        term = 0,
                        ?initial,
                        "federation state bootstrapped from initial_status"
                    );
                    return Ok(());
                }
            }
            (Some(s), _) => {
                let stored = s.status(&cfg.cluster);
                if stored == Some(mine) {
                    return Ok(());
                }
                let stored = stored.map_or("absent", Status::as_str);
                if s.term == 0 {
                    return Err(RunError::Contradiction {
                        cluster: cfg.cluster.clone(),
                        configured: mine.as_str(),
                        stored,
                    });
                }
                info!(
                    configured = mine.as_str(),
                    stored,
                    term = s.term,
                    "initial_status ignored: the federation has switched since bootstrap"
                );
                return Ok(());
            }
        }
    }
}
