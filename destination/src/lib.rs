//! `tcf-destination`: pulls the stream of each source replicaset from a
//! gateway and applies it to the matching replicaset of the passive (target)
//! cluster.
//!
//! Guarantees (see `docs/destination.md` and `docs/progress.md`):
//! * **exactly once**: each target transaction holds whole source
//!   transactions, in source order, together with the progress row, written
//!   by a function that compares the stored position with the batch's
//!   expected one inside the transaction; after any error the position is
//!   re-read from the target and the stream resumes after it;
//! * a batch is one engine (Tarantool 2.6 refuses memtx + vinyl in one
//!   transaction): memtx batches carry a memtx progress row, vinyl ones a
//!   vinyl one;
//! * what it acknowledges to the gateway is committed on the target.

mod apply;
pub mod config;
mod failpoint;
mod gateways;
mod heartbeat;
mod http;
mod instance;
mod metrics;
mod packed;
mod replicaset;
pub mod status;
mod target;
mod verify;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

pub use config::Config;
pub use failpoint::EXIT_FAILPOINT;
use tcf_common::control::{Control, TermError};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{
    gateways::Pool,
    replicaset::Ctx,
    status::{Registry, State},
};

/// Why the destination stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The metrics recorder could not be installed.
    #[error("metrics: {0}")]
    Metrics(String),
    /// The HTTP server failed.
    #[error(transparent)]
    Http(#[from] tcf_common::http::HttpError),
}

/// Shared state: config, status, the start/stop switch, running loops.
pub struct Destination {
    cfg: Arc<Config>,
    ctx: Arc<Ctx>,
    status: Registry,
    control: Control,
    running: Mutex<HashMap<String, (CancellationToken, tokio::task::JoinHandle<()>)>>,
}

impl Destination {
    fn new(cfg: Config) -> Self {
        let cfg = Arc::new(cfg);
        let tls = cfg.tls.as_ref().map(|t| t.config.clone());
        let pool = Pool::new(cfg.gateways.clone(), tls, cfg.connect_timeout);
        let ctx = Arc::new(Ctx {
            cfg: Arc::clone(&cfg),
            pool,
            writer: uuid::Uuid::new_v4().to_string(),
            reports: verify::Reports::default(),
            mailboxes: verify::Mailboxes::new(cfg.replicasets.keys()),
        });
        let status = Registry::new(cfg.replicasets.keys().map(String::as_str));
        Self {
            cfg,
            ctx,
            status,
            control: Control::new(),
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Starts the loop of every replicaset that is not running (never
    /// started, stopped, or ended by a fatal error).
    fn spawn_all(&self) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        for rs in self.cfg.replicasets.keys() {
            if running.get(rs).is_some_and(|(_, h)| !h.is_finished()) {
                continue;
            }
            let Some(cell) = self.status.get(rs).cloned() else {
                continue;
            };
            let token = CancellationToken::new();
            cell.lock().state = State::Connecting;
            let handle = tokio::spawn(replicaset::run(
                Arc::clone(&self.ctx),
                rs.clone(),
                cell,
                token.clone(),
            ));
            running.insert(rs.clone(), (token, handle));
        }
    }

    fn stop_all(&self) {
        let tokens: Vec<CancellationToken> = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, (t, _))| t)
            .collect();
        for t in tokens {
            t.cancel();
        }
    }

    /// Starts or stops every replicaset's loop; refuses a stale term.
    pub fn set_running(&self, run: bool, term: Option<u64>, reset: bool) -> Result<(), TermError> {
        let changed = self.control.set(run, term, reset)?;
        if run {
            // Running loops go on; loops that ended (a fatal error) start again.
            self.spawn_all();
        } else {
            self.stop_all();
        }
        if changed {
            info!(
                running = run,
                ?term,
                "destination {}",
                if run { "started" } else { "stopped" }
            );
        }
        Ok(())
    }
}

/// Runs the destination until `shutdown` fires.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let mut labels = config.metrics_labels.clone();
    labels.insert(config::ALIAS_LABEL.into(), config.alias.clone());
    let handle = tcf_common::metrics::install_prometheus_with_labels(&labels)
        .map_err(|e| RunError::Metrics(e.to_string()))?;
    tcf_common::metrics::spawn_upkeep(handle.clone());
    let listener = tcf_common::http::bind(config.http_listen).await?;
    info!(alias = %config.alias, cluster = %config.cluster, http = %config.http_listen, "tcf-destination running");
    let d = Arc::new(Destination::new(config));
    d.spawn_all();
    let router = http::router(Arc::clone(&d), handle);
    let result =
        tcf_common::http::serve_listener(listener, router, shutdown.clone().cancelled_owned())
            .await;
    d.stop_all();
    result.map_err(RunError::from)
}
