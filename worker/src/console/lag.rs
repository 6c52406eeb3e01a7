//! The lag of both pairs over the last minutes, sampled by the worker from
//! the destinations' status every [`SAMPLE_EVERY`] and kept for [`WINDOW`]:
//! the console's lag graph and the `tcf_worker_pair_lag_*` gauges.
//!
//! A pair that should run (by the state, `replicators::desired`) whose
//! destination streams reports the destination's own lag. While it does
//! not stream (stopped, failed, loading, not answering) the worker cannot see
//! the source's position, so the lag it reports grows with the time since
//! the replicaset last streamed: data on the target is at least that old.
//! A pair that should not run reports 0.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use tcf_api::{
    operator::{LagHistory, LagPoint, LagSeries},
    replicator::{DestinationStatus, ReplicasetState},
};
use tokio_util::sync::CancellationToken;

use crate::{Worker, metrics, replicators, store::now_ms};

/// Period of the samples.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// How long samples are kept.
pub(crate) const WINDOW: Duration = Duration::from_secs(600);

/// (source cluster, target cluster, replicaset label).
type Key = (String, String, String);

#[derive(Debug, Default)]
struct Track {
    points: VecDeque<LagPoint>,
    /// When the replicaset was last seen streaming (or first seen at all),
    /// and its lag then.
    last_ok: Option<(u64, f64)>,
}

/// The samples of every pair and replicaset.
#[derive(Debug, Default)]
pub(crate) struct LagLog(Mutex<BTreeMap<Key, Track>>);

impl LagLog {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<Key, Track>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The samples kept, oldest first.
    pub(crate) fn history(&self) -> LagHistory {
        let series = self
            .lock()
            .iter()
            .filter(|(_, t)| !t.points.is_empty())
            .map(|((from, to, rs), t)| LagSeries {
                from: from.clone(),
                to: to.clone(),
                replicaset: rs.clone(),
                points: t.points.iter().copied().collect(),
            })
            .collect();
        LagHistory {
            interval_ms: millis(SAMPLE_EVERY),
            window_ms: millis(WINDOW),
            series,
        }
    }

    /// Records one sample of the pair `from -> to`: its destination's
    /// status (or why there is none) when it should run, `None` when it
    /// should not.
    fn record(
        &self,
        from: &str,
        to: &str,
        sample: Option<Result<DestinationStatus, String>>,
        now: u64,
    ) {
        let mut log = self.lock();
        let mine = |k: &Key| k.0 == from && k.1 == to;
        let Some(sample) = sample else {
            for (k, t) in log.iter_mut().filter(|(k, _)| mine(k)) {
                t.last_ok = None;
                set_gauges(k, 0.0, 0);
            }
            return;
        };
        // (replicaset, state, streaming lag, rows)
        let seen: Vec<(String, Option<ReplicasetState>, Option<f64>, u64)> = match &sample {
            Ok(s) => s
                .states()
                .into_iter()
                .map(|(rs, state)| {
                    let r = s.replicasets.get(&rs);
                    let rows = r.map_or(0, |r| r.lag_lsn);
                    let lag = (state == ReplicasetState::Streaming)
                        .then(|| r.map_or(0.0, |r| r.lag_seconds));
                    (rs, Some(state), lag, rows)
                })
                .collect(),
            // Not answering: every replicaset seen before, state unknown.
            Err(_) => log
                .keys()
                .filter(|k| mine(k))
                .map(|k| (k.2.clone(), None, None, 0))
                .collect(),
        };
        for (rs, state, streaming_lag, rows) in seen {
            let key = (from.to_owned(), to.to_owned(), rs);
            let t = log.entry(key.clone()).or_default();
            let seconds = match streaming_lag {
                Some(lag) => {
                    t.last_ok = Some((now, lag));
                    lag
                }
                None => {
                    let (at, lag) = *t.last_ok.get_or_insert((now, 0.0));
                    lag + now.saturating_sub(at) as f64 / 1000.0
                }
            };
            // Not answering: the last rows known.
            let rows = match state {
                Some(_) => rows,
                None => t.points.back().map_or(0, |p| p.rows),
            };
            t.points.push_back(LagPoint {
                at_ms: now,
                seconds,
                rows,
                state,
            });
            let oldest = now.saturating_sub(millis(WINDOW));
            while t.points.front().is_some_and(|p| p.at_ms < oldest) {
                t.points.pop_front();
            }
            set_gauges(&key, seconds, rows);
        }
    }
}

fn set_gauges((from, to, rs): &Key, seconds: f64, rows: u64) {
    let labels = [
        (metrics::FROM, from.clone()),
        (metrics::TO, to.clone()),
        (metrics::REPLICASET, rs.clone()),
    ];
    ::metrics::gauge!(metrics::PAIR_LAG_SECONDS, &labels).set(seconds);
    ::metrics::gauge!(metrics::PAIR_LAG_ROWS, &labels).set(rows as f64);
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Samples both pairs every [`SAMPLE_EVERY`] until `stop`.
pub(crate) async fn run(w: Arc<Worker>, stop: CancellationToken) {
    let Some(r) = w.cfg.replication.clone() else {
        return;
    };
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (me, peer) = (w.cfg.cluster.clone(), w.cfg.peer.clone());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let state = w.view().state.clone();
        let Some((Some(mine), Some(theirs))) = state.map(|s| (s.status(&me), s.status(&peer)))
        else {
            continue;
        };
        let (out, inc) = replicators::desired(r.mode, r.on_return, mine, theirs);
        let token = r.token.expose();
        async fn sample(
            run: bool,
            pairs: &[crate::config::Pair],
            token: &str,
        ) -> Option<Result<DestinationStatus, String>> {
            if !run {
                return None;
            }
            let s = replicators::destinations(pairs, token).await;
            Some(s.map_err(|e| e.to_string()))
        }
        let (o, i) = tokio::select! {
            r = async {
                tokio::join!(
                    sample(out, &r.outgoing, token),
                    sample(inc, &r.incoming, token)
                )
            } => r,
            () = stop.cancelled() => return,
        };
        let now = now_ms();
        w.lag.record(&me, &peer, o, now);
        w.lag.record(&peer, &me, i, now);
    }
}

#[cfg(test)]
mod tests {
    use tcf_api::replicator::DestinationReplicaset;

    use super::*;

    fn status(running: bool, state: ReplicasetState, lag: f64) -> DestinationStatus {
        let rs = DestinationReplicaset {
            state,
            lag_seconds: lag,
            lag_lsn: 3,
            ..DestinationReplicaset::default()
        };
        DestinationStatus {
            destination: "d".into(),
            cluster: "B".into(),
            running,
            term: 0,
            replicasets: [("rs1".to_owned(), rs)].into_iter().collect(),
        }
    }

    fn last(log: &LagLog) -> LagPoint {
        let h = log.history();
        *h.series[0].points.last().expect("a point")
    }

    #[test]
    fn a_streaming_destination_reports_its_own_lag() {
        let log = LagLog::default();
        log.record(
            "A",
            "B",
            Some(Ok(status(true, ReplicasetState::Streaming, 0.25))),
            1_000,
        );
        let p = last(&log);
        assert_eq!(
            (p.seconds, p.rows, p.state),
            (0.25, 3, Some(ReplicasetState::Streaming))
        );
    }

    #[test]
    fn the_lag_grows_while_the_destination_is_stopped_or_gone() {
        let log = LagLog::default();
        log.record(
            "A",
            "B",
            Some(Ok(status(true, ReplicasetState::Streaming, 0.5))),
            10_000,
        );
        log.record(
            "A",
            "B",
            Some(Ok(status(false, ReplicasetState::Streaming, 0.5))),
            14_000,
        );
        let p = last(&log);
        assert_eq!(p.state, Some(ReplicasetState::Stopped));
        assert!((p.seconds - 4.5).abs() < 1e-9, "{p:?}");
        log.record("A", "B", Some(Err("refused".into())), 20_000);
        let p = last(&log);
        assert_eq!(p.state, None);
        assert!((p.seconds - 10.5).abs() < 1e-9, "{p:?}");
        // Streaming again: its own lag.
        log.record(
            "A",
            "B",
            Some(Ok(status(true, ReplicasetState::Streaming, 0.1))),
            21_000,
        );
        assert!((last(&log).seconds - 0.1).abs() < 1e-9);
    }

    #[test]
    fn samples_older_than_the_window_are_dropped() {
        let log = LagLog::default();
        let ok = || Some(Ok(status(true, ReplicasetState::Streaming, 0.0)));
        log.record("A", "B", ok(), 1_000);
        log.record("A", "B", ok(), 1_000 + millis(WINDOW) + 1);
        assert_eq!(log.history().series[0].points.len(), 1);
    }
}
