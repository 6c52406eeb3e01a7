//! Starting and stopping the replicator pairs through their HTTP control
//! APIs. Every command carries the term; a replicator refuses one older than
//! the newest it has seen, so a deposed worker cannot undo a newer decision.

use std::time::Duration;

use serde_json::Value;
use tcf_common::http_client::{HttpClientError, request};

use crate::config::{Mode, Pair, Replication, Status};

/// Whether the pair leaving this cluster (`outgoing`) and the pair coming
/// in (`incoming`) should run when this cluster has `status`.
pub(crate) fn desired(mode: Mode, status: Status) -> (bool, bool) {
    match (mode, status) {
        (Mode::TwoWay, Status::Diverged) => (false, false),
        (Mode::TwoWay, _) => (true, true),
        (Mode::OneWay, Status::Active) => (true, false),
        (Mode::OneWay, Status::Passive) => (false, true),
        (Mode::OneWay, Status::Diverged) => (false, false),
    }
}

/// A command that failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommandError {
    /// Not reachable or no answer.
    #[error(transparent)]
    Http(#[from] HttpClientError),
    /// Answered with an error status.
    #[error("{url}{path} answered {status}: {body}")]
    Refused {
        /// Base URL.
        url: String,
        /// Path.
        path: String,
        /// Status code.
        status: u16,
        /// Body.
        body: String,
    },
}

async fn command(url: &str, path: &str, token: &str, term: u64) -> Result<(), CommandError> {
    let body = format!("{{\"term\": {term}}}");
    let r = request(
        "POST",
        url,
        path,
        Some(token),
        Some(&body),
        Duration::from_secs(5),
    )
    .await?;
    if r.status == 200 {
        Ok(())
    } else {
        Err(CommandError::Refused {
            url: url.to_owned(),
            path: path.to_owned(),
            status: r.status,
            body: r.body,
        })
    }
}

/// Starts (`run`) or stops both processes of `pair` at `term`.
pub(crate) async fn set_pair(
    pair: &Pair,
    token: &str,
    run: bool,
    term: u64,
) -> Result<(), CommandError> {
    let path = if run { "/api/v1/start" } else { "/api/v1/stop" };
    // Start the gateway first and stop it last: a destination never waits
    // on a stopped gateway longer than necessary.
    if run {
        command(&pair.gateway, path, token, term).await?;
        command(&pair.destination, path, token, term).await
    } else {
        command(&pair.destination, path, token, term).await?;
        command(&pair.gateway, path, token, term).await
    }
}

/// `GET /api/v1/status` of a replicator, as JSON.
pub(crate) async fn status(url: &str, token: &str) -> Result<Value, CommandError> {
    let r = request(
        "GET",
        url,
        "/api/v1/status",
        Some(token),
        None,
        Duration::from_secs(3),
    )
    .await?;
    if r.status != 200 {
        return Err(CommandError::Refused {
            url: url.to_owned(),
            path: "/api/v1/status".into(),
            status: r.status,
            body: r.body,
        });
    }
    serde_json::from_str(&r.body).map_err(|_| CommandError::Refused {
        url: url.to_owned(),
        path: "/api/v1/status".into(),
        status: r.status,
        body: r.body,
    })
}

/// The replicators' status for `GET /tcf/api/v1/info`.
pub(crate) async fn info(r: &Replication) -> Value {
    let token = r.token.expose();
    let one = |url: String| async move {
        match status(&url, token).await {
            Ok(v) => v,
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        }
    };
    serde_json::json!({
        "mode": match r.mode { Mode::OneWay => "one_way", Mode::TwoWay => "two_way" },
        "outgoing": { "gateway": one(r.outgoing.gateway.clone()).await, "destination": one(r.outgoing.destination.clone()).await },
        "incoming": { "gateway": one(r.incoming.gateway.clone()).await, "destination": one(r.incoming.destination.clone()).await },
    })
}
