//! Starting and stopping the replicator pairs through their HTTP control
//! APIs. Every command carries the term; a replicator refuses one older than
//! the newest it has seen, so a deposed worker cannot undo a newer decision.

use std::time::Duration;

use serde::de::DeserializeOwned;
use tcf_api::{
    replicator::{Command, DestinationStatus},
    worker::{PairInfo, ReplicatorsInfo, Reported},
};
use tcf_common::http_client::{HttpClientError, request};

use crate::config::{Mode, OnReturn, Pair, Replication, Status};

/// Whether the pair leaving this cluster (`outgoing`) and the pair coming
/// in (`incoming`) should run when this cluster has `status` and the peer
/// `peer`. Nothing is replicated into a `diverged` cluster; its tail leaves
/// it only with `on_return: ship_tail`.
pub(crate) fn desired(
    mode: Mode,
    on_return: OnReturn,
    status: Status,
    peer: Status,
) -> (bool, bool) {
    let ship = on_return == OnReturn::ShipTail;
    match (status, peer) {
        (Status::Active, Status::Diverged) => (false, ship),
        (Status::Diverged, Status::Active) => (ship, false),
        (Status::Active, _) => (true, mode == Mode::TwoWay),
        (Status::Passive, Status::Active) => (mode == Mode::TwoWay, true),
        _ => (false, false),
    }
}

/// A command that failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommandError {
    /// Not reachable or no answer.
    #[error(transparent)]
    Http(#[from] HttpClientError),
    /// Answered with something that is not the contract's JSON.
    #[error("{url}{path} answered {status} with a body that is not its status: {source}")]
    Malformed {
        /// Base URL.
        url: String,
        /// Path.
        path: String,
        /// Status code.
        status: u16,
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
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
    let command = Command {
        term: Some(term),
        reset: false,
    };
    let body = serde_json::to_string(&command).unwrap_or_default();
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

/// Stops `pair` at `term` when the gateway's side may be down: the
/// destination must obey (it is on the surviving side) and report every
/// replicaset stopped within 10 s; the gateway is told too, but its failure
/// is only logged.
pub(crate) async fn stop_pair_best_effort(
    pair: &Pair,
    token: &str,
    term: u64,
) -> Result<(), String> {
    command(&pair.destination, "/api/v1/stop", token, term)
        .await
        .map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s: DestinationStatus = status(&pair.destination, token)
            .await
            .map_err(|e| e.to_string())?;
        let stopped = s.states().values().all(|st| !st.is_running());
        if stopped {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("{} did not stop within 10 s", pair.destination));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Err(e) = command(&pair.gateway, "/api/v1/stop", token, term).await {
        tracing::info!(
            "gateway {} not stopped (its cluster may be down): {e}",
            pair.gateway
        );
    }
    Ok(())
}

/// Stops `pair` at `term` when its destination's side may be down: the
/// gateway must obey; the destination is told too, failures only logged.
pub(crate) async fn stop_gateway_first(pair: &Pair, token: &str, term: u64) -> Result<(), String> {
    command(&pair.gateway, "/api/v1/stop", token, term)
        .await
        .map_err(|e| e.to_string())?;
    if let Err(e) = command(&pair.destination, "/api/v1/stop", token, term).await {
        tracing::info!(
            "destination {} not stopped (its cluster may be down): {e}",
            pair.destination
        );
    }
    Ok(())
}

/// `GET /api/v1/status` of a replicator: [`GatewayStatus`] or
/// [`DestinationStatus`].
pub(crate) async fn status<T: DeserializeOwned>(url: &str, token: &str) -> Result<T, CommandError> {
    let path = "/api/v1/status";
    let r = request("GET", url, path, Some(token), None, Duration::from_secs(3)).await?;
    if r.status != 200 {
        return Err(CommandError::Refused {
            url: url.to_owned(),
            path: path.into(),
            status: r.status,
            body: r.body,
        });
    }
    serde_json::from_str(&r.body).map_err(|source| CommandError::Malformed {
        url: url.to_owned(),
        path: path.into(),
        status: r.status,
        source,
    })
}

/// The status of both pairs, asked at once.
pub(crate) async fn info(r: &Replication) -> ReplicatorsInfo {
    let token = r.token.expose();
    async fn one<T: DeserializeOwned>(url: &str, token: &str) -> Reported<T> {
        match status(url, token).await {
            Ok(v) => Reported::Status(v),
            Err(e) => Reported::Error {
                error: e.to_string(),
            },
        }
    }
    async fn pair(p: &Pair, token: &str) -> PairInfo {
        let (gateway, destination) =
            tokio::join!(one(&p.gateway, token), one(&p.destination, token));
        PairInfo {
            gateway,
            destination,
        }
    }
    let (outgoing, incoming) = tokio::join!(pair(&r.outgoing, token), pair(&r.incoming, token));
    ReplicatorsInfo {
        mode: r.mode,
        outgoing,
        incoming,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::{Active as A, Diverged as D, Passive as P};

    #[test]
    fn nothing_is_replicated_into_a_diverged_cluster() {
        for mode in [Mode::OneWay, Mode::TwoWay] {
            assert_eq!(desired(mode, OnReturn::Resync, A, D), (false, false));
            assert_eq!(desired(mode, OnReturn::Resync, D, A), (false, false));
            assert_eq!(desired(mode, OnReturn::ShipTail, A, D), (false, true));
            assert_eq!(desired(mode, OnReturn::ShipTail, D, A), (true, false));
        }
    }

    #[test]
    fn steady_state_pairs_follow_the_mode() {
        let r = OnReturn::Resync;
        assert_eq!(desired(Mode::OneWay, r, A, P), (true, false));
        assert_eq!(desired(Mode::OneWay, r, P, A), (false, true));
        assert_eq!(desired(Mode::TwoWay, r, A, P), (true, true));
        assert_eq!(desired(Mode::TwoWay, r, P, A), (true, true));
        assert_eq!(desired(Mode::TwoWay, r, P, P), (false, false));
    }
}
