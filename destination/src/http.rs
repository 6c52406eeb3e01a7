//! The destination's HTTP API.
//!
//! | method path | role | answer |
//! | --- | --- | --- |
//! | `GET /api/v1/status` | `info` | JSON: per replicaset gateway, target, applied vclock, lag, state, last error |
//! | `POST /api/v1/start` | `toggle` | (re)starts every replicaset's apply loop; body `{"term": N}` optional |
//! | `POST /api/v1/stop` | `toggle` | stops them (what is committed stays committed) |
//! | `GET /metrics` | none | Prometheus text |

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, State},
    http::HeaderMap,
    response::{IntoResponse, Response},
    routing::get,
};
use metrics_exporter_prometheus::PrometheusHandle;
use tcf_api::replicator::DestinationStatus;
use tcf_common::auth::{Role, check};

use crate::Destination;

#[derive(Clone)]
struct Ctx {
    d: Arc<Destination>,
    metrics: PrometheusHandle,
}

/// The router of the HTTP API. Start/stop check the token before reading
/// their (capped) body: see [`tcf_common::control::router`]; no other route
/// reads a body.
pub(crate) fn router(d: Arc<Destination>, metrics: PrometheusHandle) -> Router {
    let tokens = Arc::new(d.cfg.tokens.clone());
    let control = {
        let d = Arc::clone(&d);
        move |run: bool, term: Option<u64>, reset: bool| {
            d.set_running(run, term, reset)?;
            Ok(d.control.state())
        }
    };
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/metrics", get(metrics_text))
        .merge(tcf_common::control::router(tokens, control))
        .layer(DefaultBodyLimit::max(tcf_common::control::MAX_BODY))
        .with_state(Ctx { d, metrics })
}

async fn status(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if let Err(e) = check(&ctx.d.cfg.tokens, &headers, Role::Info) {
        return e.into_response();
    }
    let (running, term) = ctx.d.control.state();
    Json(DestinationStatus {
        destination: ctx.d.cfg.alias.clone(),
        cluster: ctx.d.cfg.cluster.clone(),
        running,
        term,
        replicasets: ctx.d.status.snapshot(),
    })
    .into_response()
}

async fn metrics_text(State(ctx): State<Ctx>) -> Response {
    tcf_common::metrics::render(&ctx.metrics)
}
