//! Online verification from a worker (`docs/verify.md`): `POST
//! /tcf/api/v1/verify` starts a walk and `GET /tcf/api/v1/verify` reports
//! it. A walk checks the passive cluster against the active one, so both
//! go to the destinations of the pairs that leave the active cluster: the
//! outgoing pairs' on the active cluster's workers, the incoming pairs' on
//! the passive cluster's. With several pairs the walk runs on every one
//! and the report merges theirs by replicaset. Each destination keeps the
//! walk on its target, and the gateway of its pair writes the watermarks on
//! the active cluster's masters.

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

/// The control URLs of the destinations that write the passive cluster
/// (one per pair of that direction, in configuration order).
fn destinations(w: &Worker) -> Result<Vec<String>, VerifyError> {
    let r = w
        .cfg
        .replication
        .as_ref()
        .ok_or(VerifyError::NoReplication)?;
    let state = w.confirmed_state()?;
    let pairs = match state.status(&w.cfg.cluster) {
        Some(Status::Active) => &r.outgoing,
        Some(Status::Passive) if state.active().is_some() => &r.incoming,
        other => {
            return Err(VerifyError::NoPair {
                cluster: w.cfg.cluster.clone(),
                status: other.map_or("absent", Status::as_str).to_owned(),
            });
        }
    };
    Ok(pairs.iter().map(|p| p.destination.clone()).collect())
}

/// Joins the walk ids of several destinations into the id of the walk
/// that spans them (one destination: its own id).
const WALK_SEPARATOR: &str = "+";

/// Starts a walk (`body` is a checked `WalkRequest`) on every destination
/// writing the passive cluster; the walk's id joins theirs with `+`, its
/// replicasets are the union of theirs. The status code is the first
/// non-2xx one any destination answered, else the first one.
pub(crate) async fn start(w: &Worker, body: &str) -> Result<(u16, WalkStarted), VerifyError> {
    let answers = forward_all(w, "POST", Some(body)).await?;
    let mut code = None;
    let mut ids = Vec::new();
    let mut replicasets = std::collections::BTreeMap::new();
    for (url, r) in answers {
        let Ok(mut s) = serde_json::from_str::<WalkStarted>(&r.body) else {
            return Err(VerifyError::Answer {
                url,
                status: r.status,
                body: r.body,
            });
        };
        if code.is_none_or(|c: u16| (200..300).contains(&c) && !(200..300).contains(&r.status)) {
            code = Some(r.status);
        }
        ids.push(s.walk);
        replicasets.append(&mut s.replicasets);
    }
    Ok((
        code.unwrap_or(200),
        WalkStarted {
            walk: ids.join(WALK_SEPARATOR),
            replicasets,
        },
    ))
}

/// The report of every destination writing the passive cluster, merged by
/// replicaset label. With several destinations, each one's latest walk is
/// reported under the spanning id (their ids joined with `+`, as
/// [`start`] answered) so that `Report::done` follows the whole walk.
pub(crate) async fn report(w: &Worker) -> Result<Report, VerifyError> {
    let answers = forward_all(w, "GET", None).await?;
    let mut reports = Vec::new();
    for (url, r) in answers {
        match (r.status, serde_json::from_str::<Report>(&r.body)) {
            (200, Ok(report)) => reports.push(report),
            _ => {
                return Err(VerifyError::Answer {
                    url,
                    status: r.status,
                    body: r.body,
                });
            }
        }
    }
    Ok(merge_reports(reports))
}

/// Several destinations' reports as one (see [`report`]).
fn merge_reports(mut reports: Vec<Report>) -> Report {
    if reports.len() == 1
        && let Some(r) = reports.pop()
    {
        return r;
    }
    let latest: Vec<Option<String>> = reports
        .iter()
        .map(|r| {
            r.replicasets
                .values()
                .flatten()
                .max_by_key(|w| w.started_ms)
                .map(|w| w.walk.clone())
        })
        .collect();
    let spanning = latest
        .iter()
        .cloned()
        .collect::<Option<Vec<String>>>()
        .map(|ids| ids.join(WALK_SEPARATOR));
    let mut merged = Report {
        destination: reports
            .iter()
            .map(|r| r.destination.as_str())
            .collect::<Vec<_>>()
            .join(","),
        cluster: reports
            .first()
            .map(|r| r.cluster.clone())
            .unwrap_or_default(),
        replicasets: Default::default(),
    };
    for (mut r, own) in reports.into_iter().zip(latest) {
        if let (Some(spanning), Some(own)) = (&spanning, &own) {
            for walk in r.replicasets.values_mut().flatten() {
                if &walk.walk == own {
                    walk.walk.clone_from(spanning);
                }
            }
        }
        merged.replicasets.append(&mut r.replicasets);
    }
    merged
}

/// Sends `method /api/v1/verify` to every destination writing the passive
/// cluster at once, with the replicators' token; their URLs and answers.
async fn forward_all(
    w: &Worker,
    method: &str,
    body: Option<&str>,
) -> Result<Vec<(String, HttpResponse)>, VerifyError> {
    let urls = destinations(w)?;
    let token = w.cfg.replication.as_ref().map(|r| r.token.expose());
    let answers = futures::future::join_all(
        urls.iter()
            .map(|url| request(method, url, "/api/v1/verify", token, body, FORWARD_TIMEOUT)),
    )
    .await;
    urls.into_iter()
        .zip(answers)
        .map(|(url, a)| match a {
            Ok(r) => Ok((url, r)),
            Err(source) => Err(VerifyError::Unreachable { url, source }),
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use tcf_api::verify::{WalkMode, WalkReason, WalkReport, WalkState};

    use super::*;

    fn report(alias: &str, rs: &str, walk: &str, state: WalkState) -> Report {
        let w = WalkReport {
            walk: walk.into(),
            mode: WalkMode::Verify,
            reason: WalkReason::Requested,
            state,
            source_cluster: "A".into(),
            spaces: Vec::new(),
            current_space: None,
            seq: 0,
            started_ms: 1,
            finished_ms: None,
            by_space: Default::default(),
        };
        Report {
            destination: alias.into(),
            cluster: "B".into(),
            replicasets: [(rs.to_owned(), Some(w))].into(),
        }
    }

    #[test]
    fn reports_of_several_destinations_follow_one_spanning_walk() {
        let one = merge_reports(vec![report("d1", "rs1", "w1", WalkState::Done)]);
        assert!(one.done("w1"));
        let m = merge_reports(vec![
            report("d1", "rs1", "w1", WalkState::Done),
            report("d2", "rs2", "w2", WalkState::Running),
        ]);
        assert_eq!(m.destination, "d1,d2");
        assert_eq!(m.replicasets.len(), 2);
        assert!(!m.done("w1+w2"));
        let m = merge_reports(vec![
            report("d1", "rs1", "w1", WalkState::Done),
            report("d2", "rs2", "w2", WalkState::Done),
        ]);
        assert!(m.done("w1+w2"));
        assert!(!m.done("w1"));
    }
}
