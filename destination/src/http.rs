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
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
    routing::{get, post},
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

/// The router of the HTTP API.
pub(crate) fn router(d: Arc<Destination>, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/start", post(start))
        .route("/api/v1/stop", post(stop))
        .route("/metrics", get(metrics_text))
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

fn set_running(ctx: &Ctx, headers: &HeaderMap, body: &[u8], run: bool) -> Response {
    tcf_common::control::respond(&ctx.d.cfg.tokens, headers, body, |term, reset| {
        ctx.d.set_running(run, term, reset)?;
        Ok(ctx.d.control.state())
    })
}

async fn start(State(ctx): State<Ctx>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    set_running(&ctx, &headers, &body, true)
}

async fn stop(State(ctx): State<Ctx>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    set_running(&ctx, &headers, &body, false)
}

async fn metrics_text(State(ctx): State<Ctx>) -> Response {
    tcf_common::metrics::render(&ctx.metrics)
}
