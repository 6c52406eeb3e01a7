//! The worker's HTTP API (compatible with the original product's paths).
//!
//! | method path | role | answer |
//! | --- | --- | --- |
//! | `GET /tcf/status` | `info` | `active` / `passive` / `diverged` (text) |
//! | `GET /tcf/is_active` | none | 200 active, 418 passive, 503 + `{"error"}` when it cannot tell |
//! | `POST /tcf/toggle`, `POST /tcf/switchover` | `toggle` | planned switchover (body: `{dry_run, max_lag_ms, timeout_ms}`); prechecks, then waits for the outcome |
//! | `POST /tcf/failover` | `admin` | fails the active cluster over to its peer now |
//! | `POST /tcf/resync` | `admin` | reloads this `diverged` cluster from the active one |
//! | `GET /tcf/api/v1/info` | `info` | JSON state, switch, history, replicators, leader |
//! | `GET /tcf/api/v1/health` | `info` | this cluster's health probe (for the coordinator) |
//! | `GET /tcf/api/v1/view` | `info` | this worker's state (for peer confirmation) |
//! | `GET /tcf/api/v1/overview` | `info` | both clusters, the peer's info, every worker's LB answer (tcfctl, console) |
//! | `GET /tcf/api/v1/lag` | `info` | the pairs' lag over the last minutes |
//! | `GET /tcf/console` | none (the page asks for a token) | the web console |
//! | `POST /tcf/api/v1/verify` | `toggle` (`admin` for a repair) | starts a verification walk of the passive cluster against the active one |
//! | `GET /tcf/api/v1/verify` | `info` | the walk's report |
//! | `GET /metrics` | none | Prometheus text |
//!
//! `is_active` is open to load balancers: it answers 200 only while the
//! state is confirmed from etcd or by a peer worker within `fencing_timeout`.

use std::{sync::Arc, time::Instant};

use axum::{
    Extension, Json, Router,
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderMap, StatusCode},
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use metrics_exporter_prometheus::PrometheusHandle;
use tcf_api::{
    operator::{
        ErrorBody, FailoverAnswer, FailoverResult, Prechecks, SwitchoverAnswer, SwitchoverRequest,
        SwitchoverResult,
    },
    verify::{WalkMode, WalkRequest},
    worker::{CoordinatorInfo, FenceState, Info},
};
use tcf_common::auth::{Role, RoleGuard, check, require_role};

use crate::{
    Status, Worker,
    store::{Phase, SwitchRecord},
    switch::start::{self, StartError},
};

#[derive(Clone)]
struct Ctx {
    w: Arc<Worker>,
    metrics: PrometheusHandle,
}

pub(crate) fn router(w: Arc<Worker>, metrics: PrometheusHandle) -> Router {
    // The token is checked from the headers before the (capped) body is read.
    let guard = RoleGuard::new(Arc::new(w.cfg.tokens.clone()), Role::Toggle);
    let verify_start = Router::new()
        .route("/tcf/api/v1/verify", post(verify_start))
        .route_layer(middleware::from_fn_with_state(guard, require_role));
    Router::new()
        .merge(verify_start)
        .route("/tcf/api/v1/verify", get(verify_report))
        .route("/tcf/status", get(status))
        .route("/tcf/is_active", get(is_active))
        .route("/tcf/toggle", post(switchover))
        .route("/tcf/switchover", post(switchover))
        .route("/tcf/failover", post(failover))
        .route("/tcf/resync", post(resync))
        .route("/tcf/api/v1/info", get(info))
        .route(tcf_api::health::PATH, get(health))
        .route("/tcf/api/v1/view", get(view))
        .route("/tcf/api/v1/overview", get(overview))
        .route("/tcf/api/v1/lag", get(lag))
        .route("/tcf/console", get(crate::console::index))
        .route("/tcf/console/console.js", get(crate::console::script))
        .route("/tcf/console/console.css", get(crate::console::style))
        .route("/metrics", get(metrics_text))
        // Only the switchover reads a body, after its token: a small cap.
        .layer(DefaultBodyLimit::max(tcf_common::control::MAX_BODY))
        .with_state(Ctx { w, metrics })
}

fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(ErrorBody { error: msg.into() })).into_response()
}

async fn status(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if let Err(e) = check(&ctx.w.cfg.tokens, &headers, Role::Info) {
        return e.into_response();
    }
    match ctx.w.confirmed_state() {
        Ok(s) => match s.status(&ctx.w.cfg.cluster) {
            Some(st) => st.as_str().into_response(),
            None => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "this cluster is not in the federation state",
            ),
        },
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn is_active(State(ctx): State<Ctx>) -> Response {
    let (code, body) = lb_answer(&ctx.w);
    if code == StatusCode::SERVICE_UNAVAILABLE {
        return error(code, body);
    }
    (code, body).into_response()
}

/// What `GET /tcf/is_active` answers: 200 `active`, 418 `passive` /
/// `diverged` / `leaving`, or 503 and why the worker cannot tell.
pub(crate) fn lb_answer(w: &Worker) -> (StatusCode, String) {
    let state = match w.confirmed_state() {
        Ok(s) => s,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    match state.status(&w.cfg.cluster) {
        Some(Status::Active)
            if w.view()
                .switch
                .as_ref()
                .is_some_and(|s| !s.phase.is_final() && s.from == w.cfg.cluster) =>
        {
            // Being switched or failed over away from: fenced already, and
            // the peer may answer 200 before this worker sees the flip.
            (StatusCode::IM_A_TEAPOT, "leaving".into())
        }
        Some(Status::Active) => {
            // Active on paper, but none of its instances answers.
            let v = w.view();
            if let Some(e) = v.fence_error.clone().filter(|_| v.cluster_unreachable) {
                return (StatusCode::SERVICE_UNAVAILABLE, e);
            }
            (StatusCode::OK, "active".into())
        }
        Some(s) => (StatusCode::IM_A_TEAPOT, s.as_str().into()),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "this cluster is not in the federation state".into(),
        ),
    }
}

async fn switchover(State(ctx): State<Ctx>, req: Request) -> Response {
    let role = match check(&ctx.w.cfg.tokens, req.headers(), Role::Toggle) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    // The token is checked before the body is read.
    let body = match axum::body::to_bytes(req.into_body(), tcf_common::control::MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return error(StatusCode::PAYLOAD_TOO_LARGE, format!("request body: {e}")),
    };
    let request = match SwitchoverRequest::parse(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("bad switchover request: {e}"),
            );
        }
    };
    let w = &ctx.w;
    let started = Instant::now();
    let elapsed = || Some(started.elapsed().as_millis() as u64);
    if request.dry_run {
        return match start::prechecks(w, &request).await {
            Ok((checks, _)) => {
                let mut a = SwitchoverAnswer::new(if checks.passed() {
                    SwitchoverResult::Ready
                } else {
                    SwitchoverResult::Refused
                });
                a.dry_run = true;
                a.from.clone_from(&checks.from);
                a.to.clone_from(&checks.to);
                a.term = checks.term;
                a.duration_ms = elapsed();
                a.error = checks.refusal();
                a.plan = start::steps(&checks);
                let code = if checks.passed() {
                    StatusCode::OK
                } else {
                    StatusCode::CONFLICT
                };
                a.prechecks = Some(checks);
                (code, Json(a)).into_response()
            }
            Err(e) => refused(start_error_status(&e), e.to_string(), None, true),
        };
    }
    let by = format!("{} (role {})", w.id, role.as_str());
    let (rec, checks) = match start::switchover(w, by, &request).await {
        Ok(r) => r,
        Err(start::Refusal::Start(e)) => {
            return refused(start_error_status(&e), e.to_string(), None, false);
        }
        Err(start::Refusal::Prechecks(p)) => {
            let why = p.refusal().unwrap_or_else(|| "no precheck ran".into());
            return refused(StatusCode::CONFLICT, why, Some(p), false);
        }
    };
    // Wait for the outcome (any worker may carry the phases).
    let limit = start::timeout_of(w, &request) + w.cfg.poll_interval * 10;
    let outcome = wait_outcome(w, &rec.id, limit).await;
    let mut a = SwitchoverAnswer::new(SwitchoverResult::NoOutcome);
    a.from = Some(rec.from.clone());
    a.to = Some(rec.to.clone());
    a.term = Some(rec.term);
    a.prechecks = Some(checks);
    a.duration_ms = elapsed();
    match outcome {
        Some(done) if done.phase == Phase::Done => {
            a.result = SwitchoverResult::Done;
            a.fence_vclocks = done.fence_vclocks;
            Json(a).into_response()
        }
        Some(done) => {
            a.result = SwitchoverResult::RolledBack;
            a.error = done.error;
            (StatusCode::GATEWAY_TIMEOUT, Json(a)).into_response()
        }
        None => {
            a.error = Some("no outcome within the deadline; see /tcf/api/v1/info".into());
            (StatusCode::GATEWAY_TIMEOUT, Json(a)).into_response()
        }
    }
}

/// A switchover that did not start, as a [`SwitchoverAnswer`].
fn refused(code: StatusCode, why: String, p: Option<Prechecks>, dry_run: bool) -> Response {
    let mut a = SwitchoverAnswer::new(SwitchoverResult::Refused);
    a.dry_run = dry_run;
    if let Some(p) = &p {
        a.from.clone_from(&p.from);
        a.to.clone_from(&p.to);
        a.term = p.term;
    }
    a.error = Some(why);
    a.prechecks = p;
    (code, Json(a)).into_response()
}

/// The HTTP status for a switch that did not start.
fn start_error_status(e: &StartError) -> StatusCode {
    match e {
        StartError::Etcd(_) | StartError::NoState => StatusCode::SERVICE_UNAVAILABLE,
        StartError::InProgress { .. }
        | StartError::NoActive
        | StartError::NotPassive { .. }
        | StartError::Conflict => StatusCode::CONFLICT,
    }
}

async fn wait_outcome(w: &Worker, id: &str, limit: std::time::Duration) -> Option<SwitchRecord> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Ok((Some(s), _)) = w.store.switch().await
            && s.id == id
            && s.phase.is_final()
        {
            return Some(s);
        }
        tokio::time::sleep(w.cfg.poll_interval / 2).await;
    }
    None
}

async fn info(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if let Err(e) = check(&ctx.w.cfg.tokens, &headers, Role::Info) {
        return e.into_response();
    }
    Json(info_of(&ctx.w).await).into_response()
}

async fn overview(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if let Err(e) = check(&ctx.w.cfg.tokens, &headers, Role::Info) {
        return e.into_response();
    }
    Json(crate::console::overview(&ctx.w).await).into_response()
}

async fn lag(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if let Err(e) = check(&ctx.w.cfg.tokens, &headers, Role::Info) {
        return e.into_response();
    }
    Json(ctx.w.lag.history()).into_response()
}

/// This worker's `GET /tcf/api/v1/info`: read fresh from etcd when it
/// answers, the last view (flagged stale) when not.
pub(crate) async fn info_of(w: &Worker) -> Info {
    // Fresh from etcd when it answers; the last view (flagged stale) when not.
    if let Err(e) = w.refresh().await {
        w.view().etcd_error = Some(e.to_string());
    }
    let v = w.view().clone();
    let confirmed = w.confirmed_state().is_ok();
    let history = w.store.history(20).await.unwrap_or_default();
    let replicators = match &w.cfg.replication {
        Some(r) => Some(crate::replicators::info(r).await),
        None => None,
    };
    Info {
        federation: w.cfg.federation.clone(),
        cluster: w.cfg.cluster.clone(),
        peer: w.cfg.peer.clone(),
        worker: w.id.clone(),
        term: v.state.as_ref().map(|s| s.term),
        clusters: v.state.as_ref().map(|s| s.clusters.clone()),
        stale: !w.etcd_fresh(),
        confirmed,
        etcd_error: v.etcd_error.clone(),
        switch: v.switch.clone(),
        switch_error: v.switch_error.clone(),
        fence: v.fence.map(|(fenced, term)| FenceState { fenced, term }),
        fence_error: v.fence_error.clone(),
        replicator_error: v.replicator_error.clone(),
        unmarked_commits: w.unmarked.info(),
        replicators,
        history,
        leader: v.leader.clone(),
        coordinator: CoordinatorInfo {
            enabled: w.cfg.coordinator.enabled,
            leading: w.campaign.leading(w.cfg.coordinator.lease_ttl).is_some(),
            verdict: w.verdict().clone(),
        },
    }
}

async fn failover(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    let role = match check(&ctx.w.cfg.tokens, &headers, Role::Admin) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let by = format!("{} (role {})", ctx.w.id, role.as_str());
    match crate::failover::fail_over(&ctx.w, "manual", by, None).await {
        Ok(failover) => Json(FailoverAnswer {
            result: FailoverResult::Done,
            failover,
        })
        .into_response(),
        Err(e) => {
            use crate::failover::FailoverError as F;
            let code = match &e {
                F::Etcd(_) => StatusCode::SERVICE_UNAVAILABLE,
                F::Start(s) => start_error_status(s),
                F::Replicators { .. } => StatusCode::BAD_GATEWAY,
                F::NoReplication | F::NotPromotable { .. } | F::Conflict => StatusCode::CONFLICT,
            };
            error(code, e.to_string())
        }
    }
}

async fn resync(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    let role = match check(&ctx.w.cfg.tokens, &headers, Role::Admin) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let by = format!("{} (role {})", ctx.w.id, role.as_str());
    match crate::resync::resync(&ctx.w, by).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => {
            let code = match e {
                crate::resync::ResyncError::Etcd(_) => StatusCode::SERVICE_UNAVAILABLE,
                crate::resync::ResyncError::Failed(_) => StatusCode::BAD_GATEWAY,
                _ => StatusCode::CONFLICT,
            };
            error(code, e.to_string())
        }
    }
}

async fn health(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if let Err(e) = check(&ctx.w.cfg.tokens, &headers, Role::Info) {
        return e.into_response();
    }
    Json(crate::health::probe_local(&ctx.w).await).into_response()
}

async fn view(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if let Err(e) = check(&ctx.w.cfg.tokens, &headers, Role::Info) {
        return e.into_response();
    }
    let state = ctx.w.view().state.clone();
    Json(crate::peers::PeerView {
        cluster: ctx.w.cfg.cluster.clone(),
        state,
        etcd_fresh: ctx.w.etcd_fresh(),
    })
    .into_response()
}

async fn verify_start(
    State(ctx): State<Ctx>,
    Extension(role): Extension<Role>,
    body: axum::body::Bytes,
) -> Response {
    let request = match WalkRequest::parse(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if request.mode == WalkMode::Repair && !role.allows(Role::Admin) {
        return error(
            StatusCode::FORBIDDEN,
            format!("role {role} cannot start a repair (needs admin)"),
        );
    }
    let body = serde_json::to_string(&request).unwrap_or_default();
    match crate::verify::start(&ctx.w, &body).await {
        Ok((status, started)) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            Json(started),
        )
            .into_response(),
        Err(e) => error(verify_error_status(&e), e.to_string()),
    }
}

async fn verify_report(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if let Err(e) = check(&ctx.w.cfg.tokens, &headers, Role::Info) {
        return e.into_response();
    }
    match crate::verify::report(&ctx.w).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => error(verify_error_status(&e), e.to_string()),
    }
}

fn verify_error_status(e: &crate::verify::VerifyError) -> StatusCode {
    use crate::verify::VerifyError as V;
    match e {
        V::State(_) => StatusCode::SERVICE_UNAVAILABLE,
        V::NoReplication | V::NoPair { .. } => StatusCode::CONFLICT,
        V::Unreachable { .. } | V::Answer { .. } => StatusCode::BAD_GATEWAY,
    }
}

async fn metrics_text(State(ctx): State<Ctx>) -> Response {
    tcf_common::metrics::render(&ctx.metrics)
}
