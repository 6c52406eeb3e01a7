//! The poll loop: every `poll_interval` a worker reads etcd (and asks its
//! peers), steps the switch in progress, and reconciles its cluster's fence,
//! the unmarked-write alarm, a `ship_tail` return and the replicator pairs.
//! Everything is decided from the state just read; each step is idempotent.

use std::time::Instant;

use tcf_api::worker::Status;
use tracing::{info, warn};

use crate::{
    Worker, election, fence, health, metrics, peers, replicators, resync,
    store::{FedState, Phase, StoreError, SwitchRecord},
    switch,
};

/// Polls between two re-applications of an unchanged fence: instances
/// restart and reconnect (a restarted master does not keep a fence applied
/// only in memory), and this bounds how late one is fenced again.
const FENCE_REAPPLY_EVERY: u64 = 10;
/// Polls between two probes of this cluster's instances that learn the
/// replicaset of each (an instance that dies later still counts against
/// its replicaset); each probe connects to every instance.
const MEMBERSHIP_PROBE_EVERY: u64 = 10;
/// Polls between two checks that a `diverged` cluster's tail was shipped.
const SHIP_TAIL_EVERY: u64 = 5;
/// Polls between two reconciliations of the replicator pairs in steady
/// state (every poll while a switch is under way): each one is a round of
/// HTTP calls to four processes.
const REPLICATORS_EVERY: u64 = 4;

impl Worker {
    /// Reads the state, the switch record and the leader from etcd into
    /// the view.
    pub(crate) async fn refresh(&self) -> Result<(), StoreError> {
        let ((state, state_rev), (switch, switch_rev)) = self.store.snapshot().await?;
        let leader = election::leader(self.store.client(), &self.cfg.key("election")).await;
        let mut v = self.view();
        match leader {
            Ok(l) => v.leader = l,
            Err(e) => warn!("coordinator election: cannot read the leader: {e}"),
        }
        if let Some(s) = &state {
            ::metrics::gauge!(metrics::TERM).set(s.term as f64);
            let code = match s.status(&self.cfg.cluster) {
                Some(Status::Active) => 1.0,
                Some(Status::Passive) => 0.0,
                Some(Status::Diverged) | None => -1.0,
            };
            ::metrics::gauge!(metrics::STATUS, metrics::CLUSTER => self.cfg.cluster.clone())
                .set(code);
        }
        v.state = state;
        v.state_rev = state_rev;
        v.switch = switch;
        v.switch_rev = switch_rev;
        v.confirmed_at = Some(Instant::now());
        v.etcd_error = None;
        Ok(())
    }

    /// Fenced unless active, not being switched away from and not isolated;
    /// the term is the newest of the state's and the switch's.
    fn desired_fence(
        &self,
        state: &FedState,
        switch: Option<&SwitchRecord>,
        isolated: bool,
    ) -> (bool, u64) {
        let me = self.cfg.cluster.as_str();
        let leaving = switch.is_some_and(|s| !s.phase.is_final() && s.from == me);
        let fenced = state.status(me) != Some(Status::Active) || leaving || isolated;
        let term = state.term.max(switch.map_or(0, |s| s.term));
        (fenced, term)
    }

    async fn reconcile_fence(
        &self,
        state: &FedState,
        switch: Option<&SwitchRecord>,
        isolated: bool,
        force: bool,
    ) {
        let want = self.desired_fence(state, switch, isolated);
        if !force && self.view().fence == Some(want) {
            return;
        }
        match fence::apply(
            &self.cfg.instances,
            &self.cfg.connect_options(),
            want.1,
            want.0,
            &self.cfg.dml_users,
        )
        .await
        {
            Ok(r) => {
                if self.view().fence != Some(want) {
                    info!(fenced = want.0, term = want.1, masters = ?r.masters, "fence applied");
                }
                ::metrics::gauge!(metrics::FENCED).set(if want.0 { 1.0 } else { 0.0 });
                let mut v = self.view();
                v.fence = Some(want);
                v.fence_error = None;
                v.cluster_unreachable = false;
            }
            Err(e) => {
                ::metrics::counter!(metrics::FENCE_ERRORS).increment(1);
                let unreachable = match &e {
                    fence::FenceError::Unreachable {
                        out_of_descriptors, ..
                    } => {
                        if *out_of_descriptors {
                            tracing::error!(
                                fenced = want.0,
                                term = want.1,
                                "cannot fence: this process is out of file descriptors (raise LimitNOFILE; see docs/worker.md): {e}"
                            );
                        }
                        true
                    }
                    fence::FenceError::Instance { .. } | fence::FenceError::Ineffective { .. } => {
                        false
                    }
                };
                warn!("fence (fenced={}, term={}) failed: {e}", want.0, want.1);
                let mut v = self.view();
                v.fence_error = Some(e.to_string());
                v.cluster_unreachable = unreachable;
            }
        }
    }

    async fn reconcile_replicators(&self, state: &FedState, switch: Option<&SwitchRecord>) {
        let Some(r) = &self.cfg.replication else {
            return;
        };
        let me = self.cfg.cluster.as_str();
        let (Some(status), Some(peer_status)) = (state.status(me), state.status(&self.cfg.peer))
        else {
            return;
        };
        // A failover or resync in progress owns the replicators; the state
        // this call was given predates it: skip this round.
        let Ok(_acting) = self.acting.try_lock() else {
            return;
        };
        let (mut out, mut inc) = replicators::desired(r.mode, r.on_return, status, peer_status);
        // The newest term seen: a switch (even a rolled-back one) started pairs
        // with its own term, and the replicators refuse anything older.
        let term = state.term.max(switch.map_or(0, |s| s.term));
        // From the reverse phase on, the pair leaving the cluster becoming
        // active runs, whatever the (not yet flipped) statuses say.
        if let Some(s) = switch.filter(|s| matches!(s.phase, Phase::Reverse | Phase::Flip)) {
            if s.to == me {
                out = true;
            } else if s.from == me {
                inc = true;
            }
        }
        // A failover under way: both pairs stay stopped until the flip (its
        // driver reads the loss point; nothing may reach the failed cluster).
        if switch.is_some_and(|s| s.phase == Phase::Failover) {
            (out, inc) = (false, false);
        }
        let token = r.token.expose();
        let mut errors = Vec::new();
        for (pair, run) in [(&r.outgoing, out), (&r.incoming, inc)] {
            if let Err(e) = replicators::set_pairs(pair, token, run, term).await {
                errors.push(e.to_string());
            }
        }
        self.view().replicator_error = (!errors.is_empty()).then(|| errors.join("; "));
    }

    /// One poll (the `n`th since start).
    pub(crate) async fn tick(&self, n: u64) {
        let (refreshed, ()) = tokio::join!(self.refresh(), peers::confirm(self));
        let etcd_ok = match refreshed {
            Ok(()) => true,
            Err(e) => {
                ::metrics::counter!(metrics::ETCD_ERRORS).increment(1);
                warn!("{e}");
                self.view().etcd_error = Some(e.to_string());
                false
            }
        };
        ::metrics::gauge!(metrics::STALE).set(if self.etcd_fresh() { 0.0 } else { 1.0 });
        let (state, state_rev, switch, switch_rev) = {
            let v = self.view();
            (v.state.clone(), v.state_rev, v.switch.clone(), v.switch_rev)
        };
        if n.is_multiple_of(MEMBERSHIP_PROBE_EVERY) {
            health::probe_local(self).await;
        }
        let Some(state) = state else { return };
        if !etcd_ok {
            // Without etcd nothing is decided; cut off from the peer too for
            // fencing_timeout, the cluster is fenced (is_active answers 503).
            let isolated = self.confirmed_state().is_err();
            self.reconcile_fence(
                &state,
                switch.as_ref(),
                isolated,
                n.is_multiple_of(FENCE_REAPPLY_EVERY),
            )
            .await;
            return;
        }
        if let Some(rec) = switch.clone() {
            let result = switch::step(self, &state, state_rev, rec, switch_rev).await;
            self.view().switch_error = result.err().map(|e| e.to_string());
        }
        // Re-applied periodically: after restarts and reconnects of instances.
        self.reconcile_fence(
            &state,
            switch.as_ref(),
            false,
            n.is_multiple_of(FENCE_REAPPLY_EVERY),
        )
        .await;
        let active = state.status(&self.cfg.cluster) == Some(Status::Active);
        let fenced = matches!(self.view().fence, Some((true, _)));
        self.unmarked.check(&self.cfg, active, fenced, n).await;
        if n.is_multiple_of(SHIP_TAIL_EVERY) {
            resync::ship_tail_step(self, &state).await;
        }
        if (n.is_multiple_of(REPLICATORS_EVERY)
            || switch.as_ref().is_some_and(|s| !s.phase.is_final()))
            && self.drives_replicators()
        {
            self.reconcile_replicators(&state, switch.as_ref()).await;
        }
    }
}
