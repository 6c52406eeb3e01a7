//! The gateway's HTTP API: status, start/stop, metrics.
//!
//! | method path | role | answer |
//! | --- | --- | --- |
//! | `GET /api/v1/status` | `info` | JSON: per replicaset instance, state, vclocks, lag |
//! | `POST /api/v1/start` | `toggle` | starts serving streams; body `{"term": N}` optional |
//! | `POST /api/v1/stop` | `toggle` | ends every stream and refuses new ones |
//! | `GET /metrics` | none | Prometheus text |
//!
//! A start/stop whose `term` is older than the newest term seen is refused
//! with 409.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, State},
    http::HeaderMap,
    response::{IntoResponse, Response},
    routing::get,
};
use metrics_exporter_prometheus::PrometheusHandle;
use tcf_api::replicator::GatewayStatus;
use tcf_common::auth::{Role, check};

use crate::service::Gateway;

#[derive(Clone)]
struct Ctx {
    gw: Arc<Gateway>,
    metrics: PrometheusHandle,
}

/// The router of the HTTP API. Start/stop check the token before reading
/// their (capped) body: see [`tcf_common::control::router`]; no other route
/// reads a body.
pub(crate) fn router(gw: Arc<Gateway>, metrics: PrometheusHandle) -> Router {
    let tokens = Arc::new(gw.config.tokens.clone());
    let control = {
        let gw = Arc::clone(&gw);
        move |run: bool, term: Option<u64>, reset: bool| {
            gw.set_running(run, term, reset)?;
            Ok(gw.control_state())
        }
    };
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/metrics", get(metrics_text))
        .merge(tcf_common::control::router(tokens, control))
        .layer(DefaultBodyLimit::max(tcf_common::control::MAX_BODY))
        .with_state(Ctx { gw, metrics })
}

async fn status(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if let Err(e) = check(&ctx.gw.config.tokens, &headers, Role::Info) {
        return e.into_response();
    }
    let (running, term) = ctx.gw.control_state();
    let cfg = &ctx.gw.config;
    Json(GatewayStatus {
        gateway: cfg.alias.clone(),
        cluster: cfg.cluster.clone(),
        running,
        term,
        replicasets: ctx.gw.status.snapshot(),
    })
    .into_response()
}

async fn metrics_text(State(ctx): State<Ctx>) -> Response {
    tcf_common::metrics::render(&ctx.metrics)
}
