//! The gateway's HTTP API: status, start/stop, metrics.
//!
//! | method path | role | answer |
//! | --- | --- | --- |
//! | `GET /api/v1/status` | `info` | JSON: per replicaset instance, state, vclocks, lag |
//! | `POST /api/v1/start` | `toggle` | starts serving streams; body `{"term": N}` optional |
//! | `POST /api/v1/stop` | `toggle` | ends every stream and refuses new ones |
//! | `POST /api/v1/release` | `admin` | while stopped: releases the WAL every source instance keeps for this gateway (3.3+); 409 while running |
//! | `GET /metrics` | none | Prometheus text |
//!
//! A start/stop whose `term` is older than the newest term seen is refused
//! with 409.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
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
        .route("/api/v1/release", post(release))
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

/// `POST /api/v1/release`: see `release`. 200 when every instance is
/// released (or has nothing to release), 502 when one failed; the body
/// lists every instance either way.
async fn release(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if let Err(e) = check(&ctx.gw.config.tokens, &headers, Role::Admin) {
        return e.into_response();
    }
    if ctx.gw.control_state().0 {
        return (
            StatusCode::CONFLICT,
            Json(json!({"error": "the gateway is running: stop it first (POST /api/v1/stop); releasing lets the sources drop the WAL it still needs"})),
        )
            .into_response();
    }
    let results = crate::release::release_all(&ctx.gw.config).await;
    let ok = results
        .iter()
        .all(|r| r.outcome != crate::release::Outcome::Failed);
    for r in &results {
        tracing::info!(replicaset = %r.replicaset, instance = %r.instance, outcome = ?r.outcome, detail = %r.detail, "release");
    }
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    (code, Json(json!({"released": ok, "instances": results}))).into_response()
}

async fn metrics_text(State(ctx): State<Ctx>) -> Response {
    tcf_common::metrics::render(&ctx.metrics)
}
