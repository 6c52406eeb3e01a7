//! The destination's HTTP API.
//!
//! | method path | role | answer |
//! | --- | --- | --- |
//! | `GET /api/v1/status` | `info` | JSON: per replicaset gateway, target, applied vclock, lag, state, last error |
//! | `POST /api/v1/start` | `toggle` | (re)starts every replicaset's apply loop; body `{"term": N}` optional |
//! | `POST /api/v1/stop` | `toggle` | stops them (what is committed stays committed) |
//! | `POST /api/v1/verify` | `toggle` (`admin` for a repair) | starts a verification walk on every replicaset (`docs/verify.md`) |
//! | `GET /api/v1/verify` | `info` | the last walk's report of every replicaset |
//! | `GET /metrics` | none | Prometheus text |

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{
    Extension, Json, Router,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, StatusCode},
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tcf_api::{
    replicator::DestinationStatus,
    verify::{Report, WalkMode, WalkRequest, WalkStarted},
};
use tcf_common::auth::{Role, RoleGuard, check, require_role};
use tokio::sync::oneshot;

use crate::{Destination, verify::Order};

/// How long a replicaset's loop may take to record a new walk.
const WALK_START_TIMEOUT: Duration = Duration::from_secs(15);

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
    let guard = RoleGuard::new(Arc::clone(&tokens), Role::Toggle);
    let start = Router::new()
        .route("/api/v1/verify", post(start_walk))
        .route_layer(middleware::from_fn_with_state(guard, require_role));
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/verify", get(report))
        .merge(start)
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

async fn start_walk(
    State(ctx): State<Ctx>,
    Extension(role): Extension<Role>,
    body: axum::body::Bytes,
) -> Response {
    let request = match WalkRequest::parse(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(json!({ "error": e }))).into_response(),
    };
    if request.mode == WalkMode::Repair && !role.allows(Role::Admin) {
        let error = json!({ "error": format!("role {role} cannot start a repair (needs admin)") });
        return (StatusCode::FORBIDDEN, Json(error)).into_response();
    }
    let walk = uuid::Uuid::new_v4().to_string();
    let mut waits = Vec::new();
    for (rs, tx) in ctx.d.ctx.mailboxes.senders() {
        let (reply, rx) = oneshot::channel();
        let order = Order {
            id: walk.clone(),
            request: request.clone(),
            reply,
        };
        let sent = tokio::time::timeout(WALK_START_TIMEOUT, tx.send(order)).await;
        waits.push((rs.clone(), sent.is_ok_and(|r| r.is_ok()).then_some(rx)));
    }
    let mut replicasets = BTreeMap::new();
    for (rs, rx) in waits {
        let outcome = match rx {
            None => Some("its apply loop does not take requests now".to_owned()),
            Some(rx) => match tokio::time::timeout(WALK_START_TIMEOUT, rx).await {
                Ok(Ok(Ok(()))) => None,
                Ok(Ok(Err(e))) => Some(e),
                Ok(Err(_)) => Some("its session ended before recording the walk".to_owned()),
                Err(_) => Some(format!(
                    "not recorded within {WALK_START_TIMEOUT:?} (is it streaming?)"
                )),
            },
        };
        replicasets.insert(rs, outcome);
    }
    let code = if replicasets.values().any(Option::is_none) {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    (code, Json(WalkStarted { walk, replicasets })).into_response()
}

async fn report(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if let Err(e) = check(&ctx.d.cfg.tokens, &headers, Role::Info) {
        return e.into_response();
    }
    Json(Report {
        destination: ctx.d.cfg.alias.clone(),
        cluster: ctx.d.cfg.cluster.clone(),
        replicasets: ctx.d.ctx.reports.snapshot(ctx.d.cfg.replicasets.keys()),
    })
    .into_response()
}

async fn metrics_text(State(ctx): State<Ctx>) -> Response {
    tcf_common::metrics::render(&ctx.metrics)
}
