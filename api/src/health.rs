//! A worker's health probe of its own cluster, `GET /tcf/api/v1/health`
//! (`docs/worker.md`): what each worker serves about its cluster and what
//! the coordinator (and the switchover and failover) reads from the peer's
//! workers, with the judgements made on it. The worker writes and reads
//! this type; the predicates are pure.
//!
//! * A cluster **serves** (may stay or become active) when every replicaset
//!   has exactly one reachable writable master.
//! * It is **promotable** when it serves, no repair after a WAL gap runs,
//!   its incoming destination is streaming or reconnecting (not loading,
//!   gapped, diverged, stopped or failed) and every replicaset of the peer
//!   has a finished position in its progress rows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tcf_iproto::Vclock;

use crate::replicator::ReplicasetState;

/// The route a worker serves its cluster's [`Health`] at (role `info`).
pub const PATH: &str = "/tcf/api/v1/health";

/// One replicaset of the probed cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicasetHealth {
    /// Reachable writable instances (healthy: exactly one).
    pub masters: Vec<String>,
    /// Reachable instances.
    pub instances: Vec<String>,
    /// Instances known to belong here that did not answer.
    pub unreachable: Vec<String>,
    /// The master's vclock (without component 0), when there is one master.
    pub vclock: Option<Vclock>,
}

/// What the cluster applied from the peer, per source replicaset name: the
/// component-wise maximum of its progress rows (`docs/progress.md`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// The source replicaset's UUID as recorded.
    pub source_uuid: String,
    /// The applied position.
    pub vclock: Vclock,
    /// An initial load has not finished.
    pub loading: bool,
}

/// A probe of one cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Health {
    /// The cluster.
    pub cluster: String,
    /// By replicaset UUID.
    pub replicasets: BTreeMap<String, ReplicasetHealth>,
    /// Instances that never answered (their replicaset is unknown).
    pub unknown: Vec<String>,
    /// The incoming destination's state per replicaset name, if it answered
    /// (`stopped` for every one when the destination is stopped).
    pub incoming: BTreeMap<String, ReplicasetState>,
    /// Why the incoming destination's state is unknown.
    pub incoming_error: Option<String>,
    /// Applied from the peer, by source replicaset name.
    pub applied: BTreeMap<String, Applied>,
    /// Unmarked writes counted by the probing worker's alarm while the
    /// cluster was not active (0 when it never saw one, or lowered it);
    /// a switchover to a cluster with any is refused.
    #[serde(default)]
    pub unmarked_writes: u64,
    /// Repairs after a WAL gap that have not ended, by source replicaset
    /// name: what they are (`docs/verify.md`). Such a cluster is not
    /// promotable.
    #[serde(default)]
    pub repairs: BTreeMap<String, String>,
}

impl Health {
    /// Why the cluster cannot serve as active, if it cannot.
    pub fn serving_problem(&self) -> Option<String> {
        if self.replicasets.is_empty() {
            return Some(format!("no instance of cluster {} answers", self.cluster));
        }
        let bad: Vec<String> = self
            .replicasets
            .iter()
            .filter(|(_, r)| r.masters.len() != 1)
            .map(|(uuid, r)| {
                format!(
                    "replicaset {uuid} has {} writable masters ({:?}; unreachable {:?})",
                    r.masters.len(),
                    r.masters,
                    r.unreachable
                )
            })
            .collect();
        (!bad.is_empty()).then(|| bad.join("; "))
    }

    /// Why the cluster holds an incomplete copy of the peer, if it does: a
    /// repair walk after a WAL gap has not ended (`docs/verify.md`). The
    /// predicate every promotion (failover, switchover) checks.
    pub fn repair_problem(&self) -> Option<String> {
        (!self.repairs.is_empty()).then(|| {
            let what: Vec<String> = self
                .repairs
                .iter()
                .map(|(rs, w)| format!("{rs}: {w}"))
                .collect();
            format!(
                "it is repairing after a WAL gap ({}); it is not promotable until the walk ends",
                what.join("; ")
            )
        })
    }

    /// Why the cluster cannot be promoted, if it cannot.
    pub fn promotion_problem(&self) -> Option<String> {
        if let Some(p) = self.serving_problem() {
            return Some(p);
        }
        if let Some(p) = self.repair_problem() {
            return Some(p);
        }
        if let Some(e) = &self.incoming_error {
            return Some(format!("its incoming destination does not answer: {e}"));
        }
        if self.incoming.is_empty() {
            return Some("its incoming destination reports no replicaset".into());
        }
        for (rs, state) in &self.incoming {
            if !state.keeps_promotable() {
                return Some(format!("its incoming destination is {state} for {rs}"));
            }
            match self.applied.get(rs) {
                None => return Some(format!("it holds no position from {rs}")),
                Some(a) if a.loading => {
                    return Some(format!("its initial load from {rs} has not finished"));
                }
                Some(_) => {}
            }
        }
        None
    }

    /// The loss point: the applied position by source replicaset UUID (the
    /// name when no UUID was recorded).
    pub fn loss_point(&self) -> BTreeMap<String, Vclock> {
        self.applied
            .iter()
            .map(|(rs, a)| {
                let key = if a.source_uuid.is_empty() {
                    rs.clone()
                } else {
                    a.source_uuid.clone()
                };
                (key, a.vclock.clone())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(masters: &[&str]) -> ReplicasetHealth {
        ReplicasetHealth {
            masters: masters.iter().map(|m| (*m).to_owned()).collect(),
            ..ReplicasetHealth::default()
        }
    }

    fn healthy() -> Health {
        let mut h = Health {
            cluster: "B".into(),
            ..Health::default()
        };
        h.replicasets.insert("u1".into(), rs(&["b1:3301"]));
        h.incoming.insert("rs1".into(), ReplicasetState::Connecting);
        h.applied.insert(
            "rs1".into(),
            Applied {
                source_uuid: "a-u1".into(),
                vclock: [(1, 42)].into_iter().collect(),
                loading: false,
            },
        );
        h
    }

    #[test]
    fn a_replicaset_without_exactly_one_master_makes_the_cluster_unhealthy() {
        let mut h = healthy();
        assert_eq!(h.serving_problem(), None);
        h.replicasets.insert("u2".into(), rs(&[]));
        assert!(h.serving_problem().is_some_and(|p| p.contains("u2")));
        h.replicasets.insert("u2".into(), rs(&["x", "y"]));
        assert!(
            h.serving_problem()
                .is_some_and(|p| p.contains("2 writable"))
        );
        assert!(Health::default().serving_problem().is_some());
    }

    #[test]
    fn promotion_needs_a_running_destination_and_a_finished_position() {
        assert_eq!(healthy().promotion_problem(), None);
        use ReplicasetState as S;
        for state in [S::Loading, S::Gapped, S::Diverged, S::Stopped, S::Failed] {
            let mut h = healthy();
            h.incoming.insert("rs1".into(), state);
            assert!(
                h.promotion_problem()
                    .is_some_and(|p| p.contains(state.as_str())),
                "{state}"
            );
        }
        let mut h = healthy();
        if let Some(a) = h.applied.get_mut("rs1") {
            a.loading = true;
        }
        assert!(h.promotion_problem().is_some_and(|p| p.contains("load")));
        let mut h = healthy();
        h.applied.clear();
        assert!(h.promotion_problem().is_some());
        let mut h = healthy();
        h.incoming_error = Some("refused".into());
        assert!(h.promotion_problem().is_some());
    }

    #[test]
    fn a_repair_after_a_wal_gap_blocks_promotion() {
        let mut h = healthy();
        h.repairs.insert(
            "rs1".into(),
            "repair walk w after a WAL gap, chunk 3".into(),
        );
        let p = h.promotion_problem().unwrap_or_default();
        assert!(p.contains("repairing after a WAL gap"), "{p}");
        assert_eq!(h.repair_problem().as_deref(), Some(p.as_str()));
    }

    #[test]
    fn the_loss_point_is_keyed_by_source_uuid() {
        let lp = healthy().loss_point();
        assert_eq!(lp.get("a-u1").map(|v| v.get(1)), Some(42));
    }
}
