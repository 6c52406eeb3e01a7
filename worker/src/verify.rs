//! Online verification from a worker (`docs/verify.md`): `POST
//! /tcf/api/v1/verify` starts a walk and `GET /tcf/api/v1/verify` reports
//! it. A walk checks the passive cluster against the active one, so both
//! go to the destination of the pair that leaves the active cluster: the
//! outgoing pair's on the active cluster's workers, the incoming pair's on
//! the passive cluster's. That destination keeps the walk on its target,
//! and the gateway of the pair writes the watermarks on the active
//! cluster's masters.

use std::time::Duration;

use tcf_api::{
    replicator::DestinationStatus,
    verify::{Report, WalkStarted},
    worker::Status,
};
use tcf_common::http_client::{HttpClientError, HttpResponse, request};

use crate::{Worker, context::Unconfirmed};

/// How long the destination may take to answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a walk could not be started or reported.
#[derive(Debug, thiserror::Error)]
pub(crate) enum VerifyError {
    /// The state is not confirmed.
    #[error("{0}")]
    State(#[from] Unconfirmed),
    /// No `replication` section: this worker knows no destination.
    #[error("this worker has no `replication` section: it knows no destination to verify with")]
    NoReplication,
    /// No cluster is active, or this cluster is neither active nor passive.
    #[error(
        "cluster {cluster} is {status}: verification needs an active cluster and its passive peer"
    )]
    NoPair {
        /// This cluster.
        cluster: String,
        /// Its status.
        status: String,
    },
    /// The destination did not answer.
    #[error("destination {url}: {source}")]
    Unreachable {
        /// Its control URL.
        url: String,
        /// Why.
        #[source]
        source: HttpClientError,
    },
    /// The destination answered something that is not the contract's JSON.
    #[error("destination {url} answered {status}: {body}")]
    Answer {
        /// Its control URL.
        url: String,
        /// Status code.
        status: u16,
        /// Body.
        body: String,
    },
}

/// The control URL of the destination that writes the passive cluster.
fn destination(w: &Worker) -> Result<String, VerifyError> {
    let r = w
        .cfg
        .replication
        .as_ref()
        .ok_or(VerifyError::NoReplication)?;
    let state = w.confirmed_state()?;
    match state.status(&w.cfg.cluster) {
        Some(Status::Active) => Ok(r.outgoing.destination.clone()),
        Some(Status::Passive) if state.active().is_some() => Ok(r.incoming.destination.clone()),
        other => Err(VerifyError::NoPair {
            cluster: w.cfg.cluster.clone(),
            status: other.map_or("absent", Status::as_str).to_owned(),
        }),
    }
}

/// Starts a walk (`body` is a checked `WalkRequest`); the destination's
/// status code and answer.
pub(crate) async fn start(w: &Worker, body: &str) -> Result<(u16, WalkStarted), VerifyError> {
    let (url, r) = forward(w, "POST", Some(body)).await?;
    match serde_json::from_str::<WalkStarted>(&r.body) {
        Ok(s) => Ok((r.status, s)),
        Err(_) => Err(VerifyError::Answer {
            url,
            status: r.status,
            body: r.body,
        }),
    }
}

/// The destination's report.
pub(crate) async fn report(w: &Worker) -> Result<Report, VerifyError> {
    let (url, r) = forward(w, "GET", None).await?;
    match (r.status, serde_json::from_str::<Report>(&r.body)) {
        (200, Ok(report)) => Ok(report),
        _ => Err(VerifyError::Answer {
            url,
            status: r.status,
            body: r.body,
        }),
    }
}

/// Sends `method /api/v1/verify` to the destination writing the passive
/// cluster, with the replicators' token; its URL and answer.
async fn forward(
    w: &Worker,
    method: &str,
    body: Option<&str>,
) -> Result<(String, HttpResponse), VerifyError> {
    let url = destination(w)?;
    let token = w.cfg.replication.as_ref().map(|r| r.token.expose());
    match request(method, &url, "/api/v1/verify", token, body, FORWARD_TIMEOUT).await {
        Ok(r) => Ok((url, r)),
        Err(source) => Err(VerifyError::Unreachable { url, source }),
    }
}

/// Why the destination's target is not promotable, from its status: a
/// repair after a WAL gap that has not ended (`None` when none does).
pub(crate) fn repair_problem(status: &DestinationStatus) -> Option<String> {
    let what: Vec<String> = status
        .replicasets
        .iter()
        .filter_map(|(rs, r)| {
            let walk = r.walk.as_ref().filter(|w| w.blocks_promotion())?;
            Some(format!("{rs}: repair walk {} after a WAL gap", walk.id))
        })
        .collect();
    (!what.is_empty()).then(|| {
        format!(
            "it is repairing after a WAL gap ({}); it is not promotable until the walk ends",
            what.join("; ")
        )
    })
}
