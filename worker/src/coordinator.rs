//! The leader's health checks of the active cluster and automatic failover.
//!
//! Every `health_check_delay` the leader probes the active cluster
//! ([`crate::health`]). A failed check makes it suspect; after
//! `max_suspect_counts` consecutive failed checks spanning at least
//! `failover_timeout` it fails over to the peer if the peer is promotable and
//! no failover happened within `immunity_period`. One passing check clears
//! the suspicion. Nothing is checked while a planned switch is in progress.
//!
//! A failed check is counted only when the cluster's masters, asked
//! directly (IPROTO_VOTE to the instances its workers recorded in etcd),
//! confirm it, or when none of its workers holds its etcd lease any more:
//! a cluster whose masters answer and whose workers reach etcd is never
//! failed over because its workers' HTTP does not (`docs/coordinator.md`).

use std::{sync::Arc, time::Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use tcf_api::worker::Verdict;

use crate::{
    Worker, failover, health, metrics as m,
    store::{Phase, SwitchKind, now_ms},
};

/// Runs the checks until `stop`; acts only while this worker leads.
pub(crate) async fn run(w: Arc<Worker>, stop: CancellationToken) {
    let c = w.cfg.coordinator.clone();
    let mut tick = tokio::time::interval(c.health_check_delay);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The cluster found unhealthy and when that run of failed checks began.
    let mut since: Option<(String, Instant)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let Some(lead) = w.campaign.leading(c.lease_ttl) else {
            since = None;
            *w.verdict() = Verdict::default();
            metrics::gauge!(m::LEADER).set(0.0);
            metrics::gauge!(m::SUSPECT_COUNT).set(0.0);
            continue;
        };
        metrics::gauge!(m::LEADER).set(1.0);
        let Ok(state) = w.confirmed_state() else {
            continue;
        };
        let switch = w.view().switch.clone();
        if switch.as_ref().is_some_and(|s| !s.phase.is_final()) {
            since = None;
            continue;
        }
        let Some(active) = state.active().map(str::to_owned) else {
            continue;
        };
        let problem = match health::of(&w, &active).await {
            Ok(h) => h.serving_problem(),
            Err(e) if e.misconfigured => {
                // Says nothing about the cluster: never a reason to fail over.
                tracing::error!(cluster = %active, "health check impossible, fix the config: {e}");
                w.verdict().problem = Some(format!("not judged: {e}"));
                continue;
            }
            Err(e) => Some(e.to_string()),
        };
        // What the cluster's workers say (or their silence) is checked against
        // its masters, asked directly: a worker's own trouble (its HTTP port
        // flooded, no file descriptors left) is never a cluster's death.
        let problem = match problem {
            Some(p) => match health::from_outside(&w, &active).await {
                Ok((outside, live)) if outside.serving_problem().is_none() && !live.is_empty() => {
                    let why = format!(
                        "not counted: {p}; but its masters answer when asked directly ({}) and its workers {} hold their etcd lease",
                        outside
                            .replicasets
                            .values()
                            .flat_map(|r| r.masters.iter().map(String::as_str))
                            .collect::<Vec<_>>()
                            .join(", "),
                        live.join(", ")
                    );
                    warn!(cluster = %active, "{why}");
                    since = None;
                    *w.verdict() = Verdict {
                        cluster: Some(active),
                        problem: Some(why),
                        ..Verdict::default()
                    };
                    metrics::gauge!(m::SUSPECT_COUNT).set(0.0);
                    continue;
                }
                Ok((outside, live)) => Some(format!(
                    "{p}; asked directly: {}",
                    outside.serving_problem().unwrap_or_else(|| format!(
                        "its masters answer, but none of its workers holds an etcd lease ({live:?}): cut off or dead, they fence it"
                    ))
                )),
                Err(why) => Some(format!(
                    "{p} (its masters could not be asked directly: {why})"
                )),
            },
            None => None,
        };
        let Some(problem) = problem else {
            if since.take().is_some() {
                info!(cluster = %active, "active cluster healthy again");
            }
            *w.verdict() = Verdict {
                cluster: Some(active),
                ..Verdict::default()
            };
            metrics::gauge!(m::SUSPECT_COUNT).set(0.0);
            continue;
        };
        if since.as_ref().is_some_and(|(c, _)| *c != active) {
            since = None;
        }
        let first = since
            .get_or_insert_with(|| (active.clone(), Instant::now()))
            .1;
        let count = {
            let mut v = w.verdict();
            if v.suspect_since_ms.is_none() || v.cluster.as_deref() != Some(active.as_str()) {
                *v = Verdict {
                    cluster: Some(active.clone()),
                    suspect_since_ms: Some(now_ms()),
                    ..Verdict::default()
                };
            }
            v.suspect_count += 1;
            v.problem = Some(problem.clone());
            v.suspect_count
        };
        metrics::gauge!(m::SUSPECT_COUNT).set(f64::from(count));
        warn!(cluster = %active, count, "active cluster unhealthy: {problem}");
        if count < c.max_suspect_counts || first.elapsed() < c.failover_timeout {
            continue;
        }
        if let Some(s) = switch.filter(|s| s.kind == SwitchKind::Failover && s.phase == Phase::Done)
        {
            let age = now_ms().saturating_sub(s.started_ms);
            if u128::from(age) < c.immunity_period.as_millis() {
                let why = format!(
                    "immunity: the last failover was {} s ago (immunity_period {:?})",
                    age / 1000,
                    c.immunity_period
                );
                warn!(cluster = %active, "no automatic failover: {why}");
                w.verdict().failover_blocked = Some(why);
                continue;
            }
        }
        let reason = format!("automatic: {problem}");
        match failover::fail_over(&w, &reason, "coordinator".into(), Some(&lead)).await {
            Ok(o) => {
                info!(from = %o.from, to = %o.to, term = o.term, "automatic failover done");
                since = None;
                *w.verdict() = Verdict::default();
            }
            Err(e) => {
                warn!(cluster = %active, "automatic failover not done: {e}");
                w.verdict().failover_blocked = Some(e.to_string());
            }
        }
    }
}
