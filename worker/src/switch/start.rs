//! Starting a switch: the checks and the record shared by a planned
//! switchover and a failover. Both read the state and the switch record in
//! one etcd snapshot, refuse while another switch is under way, and write
//! their record with a compare-and-set on both revisions.
//!
//! A planned switchover also runs its prechecks ([`prechecks`]) before it
//! writes anything: the state, the target's promotability (the
//! coordinator's own [`tcf_api::health::Health::promotion_problem`]), the lag
//! gate, the unmarked-write alarm and the reverse pair. A dry run stops
//! after them.

use std::{collections::BTreeMap, time::Duration};

use tcf_api::{
    operator::{Check, CheckName, MIN_TIMEOUT_MS, Prechecks, SwitchoverRequest},
    replicator::{DestinationStatus, GatewayStatus, ReplicasetState},
    worker::{FedState, Mode, Phase, Status, SwitchKind, SwitchRecord},
};

use crate::{
    Worker, health, replicators,
    store::{StoreError, now_ms},
};

/// Why a switch did not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// etcd did not answer.
    #[error("{0}")]
    Etcd(#[from] StoreError),
    /// etcd holds no federation state.
    #[error("no federation state in etcd")]
    NoState,
    /// Another switch is under way.
    #[error(
        "a {kind} from {from} to {to} is in progress (phase {phase:?}); it ends by its deadline"
    )]
    InProgress {
        /// Its kind.
        kind: SwitchKind,
        /// Its old active.
        from: String,
        /// Its new active.
        to: String,
        /// Its phase.
        phase: Phase,
    },
    /// No cluster is active.
    #[error("no cluster is active")]
    NoActive,
    /// The cluster to become active is not passive.
    #[error("cluster {cluster} is {}: it cannot become active", status.map_or("absent", Status::as_str))]
    NotPassive {
        /// The cluster.
        cluster: String,
        /// Its status.
        status: Option<Status>,
    },
    /// The state or the record changed between the read and the write
    /// (another switch won, or leadership was lost).
    #[error("the state changed while starting the switch (another switch won)")]
    Conflict,
}

/// What a switch starts from: the state and the record as read together,
/// and the clusters it moves between.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) state: FedState,
    pub(crate) state_rev: i64,
    pub(crate) switch_rev: i64,
    /// The active cluster.
    pub(crate) from: String,
    /// The passive cluster that becomes active.
    pub(crate) to: String,
}

impl Plan {
    /// Reads the state and the switch record in one snapshot and checks
    /// that a switch may start: none under way, one cluster active, the
    /// other passive.
    pub(crate) async fn read(w: &Worker) -> Result<Self, StartError> {
        let ((state, state_rev), (switch, switch_rev)) = w.store.snapshot().await?;
        let state = state.ok_or(StartError::NoState)?;
        if let Some(s) = switch.filter(|s| !s.phase.is_final()) {
            return Err(StartError::InProgress {
                kind: s.kind,
                from: s.from,
                to: s.to,
                phase: s.phase,
            });
        }
        let from = state.active().ok_or(StartError::NoActive)?.to_owned();
        let to = if from == w.cfg.cluster {
            w.cfg.peer.clone()
        } else {
            w.cfg.cluster.clone()
        };
        if state.status(&to) != Some(Status::Passive) {
            return Err(StartError::NotPassive {
                status: state.status(&to),
                cluster: to,
            });
        }
        Ok(Self {
            state,
            state_rev,
            switch_rev,
            from,
            to,
        })
    }

    /// The record of a switch of `kind` from this plan, in its first phase
    /// (`fence` for a switchover, `failover` for a failover), at the next
    /// term, due within `switchover_timeout`. `reason` is a failover's.
    pub(crate) fn record(
        &self,
        w: &Worker,
        kind: SwitchKind,
        requested_by: String,
        reason: Option<String>,
    ) -> SwitchRecord {
        self.record_within(w.cfg.switchover_timeout, kind, requested_by, reason)
    }

    /// [`Plan::record`] due within `timeout`.
    fn record_within(
        &self,
        timeout: Duration,
        kind: SwitchKind,
        requested_by: String,
        reason: Option<String>,
    ) -> SwitchRecord {
        let phase = match kind {
            SwitchKind::Failover => Phase::Failover,
            SwitchKind::Switchover | SwitchKind::Resync => Phase::Fence,
        };
        let now = now_ms();
        SwitchRecord {
            id: uuid::Uuid::new_v4().to_string(),
            kind,
            from: self.from.clone(),
            to: self.to.clone(),
            term: self.state.term + 1,
            phase,
            deadline_ms: now.saturating_add(millis(timeout)),
            started_ms: now,
            requested_by,
            fence_vclocks: BTreeMap::new(),
            error: reason,
            loss_point: BTreeMap::new(),
        }
    }

    /// Writes `rec` if neither the state nor the record changed since this
    /// plan was read (and, with `leader`, this worker still holds that
    /// election key); returns the record's revision.
    pub(crate) async fn write(
        &self,
        w: &Worker,
        rec: &SwitchRecord,
        leader: Option<(&[u8], i64)>,
    ) -> Result<i64, StartError> {
        w.store
            .put_switch(self.state_rev, self.switch_rev, rec, leader)
            .await?
            .ok_or(StartError::Conflict)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The deadline a switchover request gets: its `timeout_ms` (at least
/// [`MIN_TIMEOUT_MS`]) capped by `switchover_timeout`, which applies when
/// it names none.
pub(crate) fn timeout_of(w: &Worker, req: &SwitchoverRequest) -> Duration {
    let cap = w.cfg.switchover_timeout;
    req.timeout_ms.map_or(cap, |t| {
        Duration::from_millis(t.max(MIN_TIMEOUT_MS)).min(cap)
    })
}

/// Why a switchover did not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    /// The state does not allow it, or etcd did not answer.
    #[error("{0}")]
    Start(#[from] StartError),
    /// A precheck failed (the report has every check).
    #[error("{}", .0.refusal().unwrap_or_else(|| "no precheck ran".into()))]
    Prechecks(Prechecks),
}

/// Runs every precheck of a switchover asked with `req` and returns them
/// with the plan they were run against. Errors only when the state cannot
/// be read (etcd) or holds nothing; a state that does not allow a switch is
/// a failed `state` check (the others are then not run).
pub(crate) async fn prechecks(
    w: &Worker,
    req: &SwitchoverRequest,
) -> Result<(Prechecks, Option<Plan>), StartError> {
    let mut p = Prechecks {
        max_lag_ms: req.max_lag_ms(),
        timeout_ms: millis(timeout_of(w, req)),
        ..Prechecks::default()
    };
    let plan = match Plan::read(w).await {
        Ok(plan) => plan,
        Err(e @ (StartError::Etcd(_) | StartError::NoState)) => return Err(e),
        Err(e) => {
            if let StartError::InProgress { from, to, .. } = &e {
                p.from = Some(from.clone());
                p.to = Some(to.clone());
            }
            p.checks.push(fail(CheckName::State, e.to_string()));
            return Ok((p, None));
        }
    };
    p.from = Some(plan.from.clone());
    p.to = Some(plan.to.clone());
    p.term = Some(plan.state.term + 1);
    p.checks.push(pass(
        CheckName::State,
        format!(
            "{} active, {} passive at term {}; no switch under way",
            plan.from, plan.to, plan.state.term
        ),
    ));
    let (target, lag, reverse) = tokio::join!(
        health::of(w, &plan.to),
        lag_check(w, &plan, req.max_lag_ms()),
        reverse_check(w, &plan),
    );
    match &target {
        Ok(h) => p.checks.push(match h.promotion_problem() {
            None => pass(CheckName::Promotable, format!("{} can take over", plan.to)),
            Some(why) => fail(
                CheckName::Promotable,
                format!("{} cannot take over: {why}", plan.to),
            ),
        }),
        Err(e) => p.checks.push(fail(
            CheckName::Promotable,
            format!(
                "{e} (the switch needs a live worker of {}; a worker of {} asks them through peer_workers)",
                plan.to, plan.from
            ),
        )),
    }
    p.checks.push(lag);
    p.checks.push(unmarked_check(
        &plan,
        target
            .as_ref()
            .map(|h| h.unmarked_writes)
            .map_err(ToString::to_string),
        req.accept_unmarked_writes,
    ));
    p.checks.push(reverse);
    Ok((p, Some(plan)))
}

/// The unmarked-write check: `writes` counted by the passive cluster's
/// worker, or why it could not be asked; `accept` lets the operator switch
/// anyway (the detail says so).
fn unmarked_check(plan: &Plan, writes: Result<u64, String>, accept: bool) -> Check {
    let name = CheckName::UnmarkedWrites;
    let (to, from) = (&plan.to, &plan.from);
    match (writes, accept) {
        (Ok(0), _) => pass(name, format!("no unmarked write on {to}")),
        (Ok(n), false) => fail(
            name,
            format!(
                "the unmarked-write alarm is raised on {to}: {n} write(s) not made by tcf, which {from} lacks"
            ),
        ),
        (Ok(n), true) => pass(
            name,
            format!(
                "the unmarked-write alarm is raised on {to} ({n} write(s)); accepted by the request"
            ),
        ),
        (Err(e), false) => fail(name, format!("cannot tell: {e}")),
        (Err(e), true) => pass(name, format!("not known ({e}); accepted by the request")),
    }
}

fn pass(name: CheckName, detail: String) -> Check {
    Check {
        name,
        ok: true,
        detail,
    }
}

fn fail(name: CheckName, detail: String) -> Check {
    Check {
        name,
        ok: false,
        detail,
    }
}

/// The pairs seen from this worker: (into `to`, leaving `to`).
fn pairs<'a>(
    w: &Worker,
    r: &'a crate::config::Replication,
    to: &str,
) -> (&'a [crate::config::Pair], &'a [crate::config::Pair]) {
    r.directions(&w.cfg.cluster, to)
}

/// The destination writing the passive cluster lags at most `max_ms` on
/// every replicaset.
async fn lag_check(w: &Worker, plan: &Plan, max_ms: u64) -> Check {
    let Some(r) = &w.cfg.replication else {
        return fail(
            CheckName::Lag,
            "this worker has no `replication` section".into(),
        );
    };
    let (into, _) = pairs(w, r, &plan.to);
    let status: DestinationStatus = match replicators::destinations(into, r.token.expose()).await {
        Ok(s) => s,
        Err(e) => {
            return fail(
                CheckName::Lag,
                format!("cannot read the lag of {}: {e}", plan.to),
            );
        }
    };
    if status.replicasets.is_empty() {
        return fail(
            CheckName::Lag,
            format!("the destination writing {} reports no replicaset", plan.to),
        );
    }
    judge_lag(plan, &status, Duration::from_millis(max_ms))
}

/// The lag check of `status` (the destination writing `plan.to`) against
/// the gate `max`: every replicaset's `lag_seconds` at most `max`.
fn judge_lag(plan: &Plan, status: &DestinationStatus, max: Duration) -> Check {
    let mut over = Vec::new();
    let mut seen = Vec::new();
    for (rs, s) in &status.replicasets {
        let lag = Duration::try_from_secs_f64(s.lag_seconds).unwrap_or(Duration::MAX);
        seen.push(format!("{rs} {:.3} s / {} rows", s.lag_seconds, s.lag_lsn));
        if lag > max {
            over.push(format!(
                "{rs} lags {:.3} s ({} rows)",
                s.lag_seconds, s.lag_lsn
            ));
        }
    }
    if over.is_empty() {
        pass(
            CheckName::Lag,
            format!("{} within {max:?}", seen.join(", ")),
        )
    } else {
        fail(
            CheckName::Lag,
            format!(
                "{} behind {}: {}, more than the lag gate {max:?}",
                plan.to,
                plan.from,
                over.join(", ")
            ),
        )
    }
}

/// Every pair leaving the passive cluster answers and holds no replicaset
/// in an error state (in `two_way` mode it must stream already); each pair
/// is named in the detail.
async fn reverse_check(w: &Worker, plan: &Plan) -> Check {
    let name = CheckName::ReversePair;
    let Some(r) = &w.cfg.replication else {
        return fail(name, "this worker has no `replication` section".into());
    };
    let (_, leaving) = pairs(w, r, &plan.to);
    let token = r.token.expose();
    let several = leaving.len() > 1;
    let results = futures::future::join_all(leaving.iter().enumerate().map(|(i, p)| {
        let what = if several {
            format!("{} -> {} pair {i} ({})", plan.to, plan.from, p.gateway)
        } else {
            format!("{} -> {}", plan.to, plan.from)
        };
        reverse_pair_check(p, token, r.mode, what)
    }))
    .await;
    let (ok, bad): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    let bad: Vec<String> = bad.into_iter().filter_map(Result::err).collect();
    if bad.is_empty() {
        pass(
            name,
            ok.into_iter()
                .filter_map(Result::ok)
                .collect::<Vec<_>>()
                .join("; "),
        )
    } else {
        fail(name, bad.join("; "))
    }
}

/// The reverse-pair check of one pair `p` (named `what`): its pass detail
/// or why it fails.
async fn reverse_pair_check(
    p: &crate::config::Pair,
    token: &str,
    mode: Mode,
    what: String,
) -> Result<String, String> {
    let (gw, dest) = tokio::join!(
        replicators::status::<GatewayStatus>(&p.gateway, token),
        replicators::status::<DestinationStatus>(&p.destination, token),
    );
    let gw = gw.map_err(|e| format!("the gateway of {what} does not answer: {e}"))?;
    let dest = dest.map_err(|e| format!("the destination of {what} does not answer: {e}"))?;
    if dest.replicasets.is_empty() {
        return Err(format!("the destination of {what} reports no replicaset"));
    }
    let broken = |s: ReplicasetState| {
        matches!(
            s,
            ReplicasetState::Gapped | ReplicasetState::Diverged | ReplicasetState::Failed
        )
    };
    let mut bad: Vec<String> = gw
        .replicasets
        .iter()
        .filter(|(_, s)| broken(s.state))
        .map(|(rs, s)| format!("gateway {rs} {}{}", s.state, cause(s.last_error.as_deref())))
        .collect();
    bad.extend(
        dest.replicasets
            .iter()
            .filter(|(_, s)| broken(s.state))
            .map(|(rs, s)| {
                format!(
                    "destination {rs} {}{}",
                    s.state,
                    cause(s.last_error.as_deref())
                )
            }),
    );
    if !bad.is_empty() {
        return Err(format!("{what} cannot stream: {}", bad.join(", ")));
    }
    if mode == Mode::TwoWay && !dest.all_streaming() {
        return Err(format!("{what} should stream in two_way mode but does not"));
    }
    let running = if dest.running {
        "running"
    } else {
        "stopped, starts in the reverse phase"
    };
    Ok(format!(
        "{what} answers ({running}), no replicaset in error"
    ))
}

fn cause(e: Option<&str>) -> String {
    e.map(|e| format!(" ({e})")).unwrap_or_default()
}

/// The steps a switchover of `p` would take (a dry run's plan).
pub(crate) fn steps(p: &Prechecks) -> Vec<String> {
    let (from, to) = (
        p.from.as_deref().unwrap_or("?"),
        p.to.as_deref().unwrap_or("?"),
    );
    vec![
        format!(
            "write the switch record {from} -> {to} at term {} (deadline {} ms)",
            p.term.unwrap_or_default(),
            p.timeout_ms
        ),
        format!("fence {from}: disable its dml users, record each master's vclock"),
        format!("drain: wait until {to} has applied everything up to the fence"),
        format!("reverse: start {to} -> {from} and wait until it streams"),
        format!(
            "flip: {to} active, {from} passive, term {}",
            p.term.unwrap_or_default()
        ),
    ]
}

/// Starts a planned switchover requested by `requested_by` with `req`
/// (not a dry run): runs the prechecks, then writes its record in phase
/// `fence` against the state they were run on; every worker then carries
/// it phase by phase (`crate::switch::step`). Returns the record written
/// and the prechecks.
pub(crate) async fn switchover(
    w: &Worker,
    requested_by: String,
    req: &SwitchoverRequest,
) -> Result<(SwitchRecord, Prechecks), Refusal> {
    let (checks, plan) = prechecks(w, req).await?;
    let plan = match plan {
        Some(plan) if checks.passed() => plan,
        _ => return Err(Refusal::Prechecks(checks)),
    };
    let rec = plan.record_within(
        timeout_of(w, req),
        SwitchKind::Switchover,
        requested_by,
        None,
    );
    plan.write(w, &rec, None).await?;
    Ok((rec, checks))
}

#[cfg(test)]
mod tests {
    use tcf_api::replicator::DestinationReplicaset;

    use super::*;

    fn plan() -> Plan {
        Plan {
            state: FedState {
                term: 3,
                clusters: BTreeMap::new(),
            },
            state_rev: 1,
            switch_rev: 0,
            from: "A".into(),
            to: "B".into(),
        }
    }

    fn status(lags: &[(&str, f64)]) -> DestinationStatus {
        DestinationStatus {
            destination: "d".into(),
            cluster: "B".into(),
            running: true,
            term: 3,
            replicasets: lags
                .iter()
                .map(|(rs, lag)| {
                    let r = DestinationReplicaset {
                        state: ReplicasetState::Streaming,
                        lag_seconds: *lag,
                        lag_lsn: 7,
                        ..DestinationReplicaset::default()
                    };
                    ((*rs).to_owned(), r)
                })
                .collect(),
        }
    }

    #[test]
    fn the_lag_gate_refuses_any_replicaset_behind_it() {
        let max = Duration::from_secs(10);
        let ok = judge_lag(&plan(), &status(&[("rs1", 0.2), ("rs2", 10.0)]), max);
        assert!(ok.ok, "{ok:?}");
        let bad = judge_lag(&plan(), &status(&[("rs1", 0.2), ("rs2", 12.5)]), max);
        assert!(!bad.ok);
        assert_eq!(bad.name, CheckName::Lag);
        assert!(
            bad.detail.contains("rs2 lags 12.500 s (7 rows)") && !bad.detail.contains("rs1 lags"),
            "{}",
            bad.detail
        );
        // A lag that is not a number is never within the gate.
        assert!(!judge_lag(&plan(), &status(&[("rs1", f64::NAN)]), max).ok);
    }

    #[test]
    fn unmarked_writes_refuse_unless_the_request_accepts_them() {
        let p = plan();
        assert!(unmarked_check(&p, Ok(0), false).ok);
        let c = unmarked_check(&p, Ok(3), false);
        assert!(!c.ok && c.detail.contains("3 write(s)"), "{c:?}");
        let c = unmarked_check(&p, Ok(3), true);
        assert!(c.ok && c.detail.contains("accepted"), "{c:?}");
        let c = unmarked_check(&p, Err("no peer_workers".into()), false);
        assert!(!c.ok && c.detail.contains("cannot tell"), "{c:?}");
        assert!(unmarked_check(&p, Err("x".into()), true).ok);
    }
}
