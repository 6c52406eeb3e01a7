//! Starting and stopping the replicator pairs through their HTTP control
//! APIs. Every command carries the term; a replicator refuses one older than
//! the newest it has seen, so a deposed worker cannot undo a newer decision.

use std::time::Duration;

use serde::de::DeserializeOwned;
use tcf_api::{
    replicator::{Command, DestinationStatus, ReplicasetState},
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
    /// Several commands failed (one per pair or process).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<CommandError>),
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

/// Runs `f` on every item at once; every failure, in the order of `items`.
async fn each<'a, T, F, Fut, E>(items: &'a [T], f: F) -> Vec<E>
where
    F: Fn(&'a T) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
{
    futures::future::join_all(items.iter().map(f))
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect()
}

fn all_of(mut errors: Vec<CommandError>) -> Result<(), CommandError> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(CommandError::Several(errors)),
    }
}

/// One process of a pair: its control URL.
type Process = fn(&Pair) -> &str;

/// Starts (`run`) or stops every pair of `pairs` (one direction) at `term`.
/// Every gateway starts before any destination and stops after every
/// destination: a destination never waits on a stopped gateway longer than
/// necessary. A pair whose first command failed gets no second one; the
/// other pairs are still commanded, and every failure is returned.
pub(crate) async fn set_pairs(
    pairs: &[Pair],
    token: &str,
    run: bool,
    term: u64,
) -> Result<(), CommandError> {
    let path = if run { "/api/v1/start" } else { "/api/v1/stop" };
    let (first, second): (Process, Process) = if run {
        (|p| &p.gateway, |p| &p.destination)
    } else {
        (|p| &p.destination, |p| &p.gateway)
    };
    let firsts = futures::future::join_all(
        pairs
            .iter()
            .map(|p| async move { (p, command(first(p), path, token, term).await) }),
    )
    .await;
    let mut errors = Vec::new();
    let mut ready = Vec::new();
    for (p, r) in firsts {
        match r {
            Ok(()) => ready.push(p),
            Err(e) => errors.push(e),
        }
    }
    errors.extend(each(&ready, |p| command(second(p), path, token, term)).await);
    all_of(errors)
}

/// Stops every pair of `pairs` at `term` when the gateways' side may be
/// down: every destination must obey (it is on the surviving side) and
/// report every replicaset stopped within 10 s; then the gateways are told
/// too, their failures only logged.
pub(crate) async fn stop_pairs_best_effort(
    pairs: &[Pair],
    token: &str,
    term: u64,
) -> Result<(), String> {
    let errors = each(pairs, |p| stop_destination(p, token, term)).await;
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    for p in pairs {
        if let Err(e) = command(&p.gateway, "/api/v1/stop", token, term).await {
            tracing::info!(
                "gateway {} not stopped (its cluster may be down): {e}",
                p.gateway
            );
        }
    }
    Ok(())
}

/// Stops the destination of `pair` and waits up to 10 s until it reports
/// every replicaset stopped.
async fn stop_destination(pair: &Pair, token: &str, term: u64) -> Result<(), String> {
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
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("{} did not stop within 10 s", pair.destination));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops every pair of `pairs` at `term` when the destinations' side may be
/// down: every gateway is stopped first and must obey; then the
/// destinations are told too, their failures only logged.
pub(crate) async fn stop_gateways_first(
    pairs: &[Pair],
    token: &str,
    term: u64,
) -> Result<(), String> {
    let errors = each(pairs, |p| command(&p.gateway, "/api/v1/stop", token, term)).await;
    if !errors.is_empty() {
        return Err(CommandError::Several(errors).to_string());
    }
    for p in pairs {
        if let Err(e) = command(&p.destination, "/api/v1/stop", token, term).await {
            tracing::info!(
                "destination {} not stopped (its cluster may be down): {e}",
                p.destination
            );
        }
    }
    Ok(())
}

/// The status of every destination of `pairs` (one direction) as one: the
/// union of their replicasets, `running` when any runs (the replicasets of
/// a stopped one read `stopped`), the newest term, the aliases joined by
/// `,`. Fails when any destination does not answer: a direction is judged
/// whole or not at all.
pub(crate) async fn destinations(
    pairs: &[Pair],
    token: &str,
) -> Result<DestinationStatus, CommandError> {
    let answers = futures::future::join_all(
        pairs
            .iter()
            .map(|p| status::<DestinationStatus>(&p.destination, token)),
    )
    .await;
    let mut errors = Vec::new();
    let mut all = Vec::new();
    for a in answers {
        match a {
            Ok(s) => all.push(s),
            Err(e) => errors.push(e),
        }
    }
    all_of(errors)?;
    Ok(merge(all))
}

/// Several destinations' statuses as one (see [`destinations`]).
pub(crate) fn merge(all: Vec<DestinationStatus>) -> DestinationStatus {
    let mut aliases = Vec::new();
    let mut merged = DestinationStatus {
        destination: String::new(),
        cluster: String::new(),
        running: false,
        term: 0,
        replicasets: Default::default(),
    };
    for mut s in all {
        if !s.running {
            for r in s.replicasets.values_mut() {
                r.state = ReplicasetState::Stopped;
            }
        }
        merged.running |= s.running;
        merged.term = merged.term.max(s.term);
        if merged.cluster.is_empty() {
            merged.cluster = s.cluster;
        }
        aliases.push(s.destination);
        merged.replicasets.append(&mut s.replicasets);
    }
    merged.destination = aliases.join(",");
    merged
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

/// The status of every pair of both directions, asked at once.
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
    let (outgoing, incoming) = tokio::join!(
        futures::future::join_all(r.outgoing.iter().map(|p| pair(p, token))),
        futures::future::join_all(r.incoming.iter().map(|p| pair(p, token))),
    );
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

    fn destination(alias: &str, running: bool, rs: &str, term: u64) -> DestinationStatus {
        let r = tcf_api::replicator::DestinationReplicaset {
            state: ReplicasetState::Streaming,
            source_uuid: Some(format!("uuid-{rs}")),
            ..Default::default()
        };
        DestinationStatus {
            destination: alias.into(),
            cluster: "B".into(),
            running,
            term,
            replicasets: [(rs.to_owned(), r)].into(),
        }
    }

    #[test]
    fn the_destinations_of_a_direction_merge_into_one_status() {
        let m = merge(vec![
            destination("d1", true, "rs1", 3),
            destination("d2", true, "rs2", 5),
        ]);
        assert_eq!(m.destination, "d1,d2");
        assert_eq!(m.term, 5);
        assert!(m.running && m.all_streaming());
        assert_eq!(m.applied_by_source().len(), 2);
        // One stopped destination: its replicasets read stopped, the other's
        // keep their state, and the direction does not stream as a whole.
        let m = merge(vec![
            destination("d1", true, "rs1", 3),
            destination("d2", false, "rs2", 3),
        ]);
        let states = m.states();
        assert_eq!(states.get("rs1"), Some(&ReplicasetState::Streaming));
        assert_eq!(states.get("rs2"), Some(&ReplicasetState::Stopped));
        assert!(!m.all_streaming());
        let m = merge(vec![
            destination("d1", false, "rs1", 3),
            destination("d2", false, "rs2", 3),
        ]);
        assert!(!m.running);
        assert!(m.states().values().all(|s| *s == ReplicasetState::Stopped));
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
