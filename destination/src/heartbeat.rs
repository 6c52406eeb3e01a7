//! What a session keeps from the gateway's heartbeats between them.
//!
//! A heartbeat's lag is the gateway's view when it sent it; a destination
//! that was behind reads it only after applying the batches queued ahead of
//! it, and the batch it was still holding is committed after it. So:
//! * the heartbeat's `processed` covers every transaction the gateway had
//!   shipped when it sent it, its `source_vclock` everything the source had;
//!   once the committed position covers both, every transaction that
//!   heartbeat's `lag_seconds` counted is committed and the source had
//!   nothing more: the lag in seconds is 0 ([`Memo::clears_lag`]). (Covering
//!   `processed` alone would show 0 while a destination catching up is still
//!   behind the batches shipped after the heartbeat.)
//! * a skip-only advance a heartbeat offers while a batch is pending (or a
//!   partial transaction is open) is kept and tried again once that batch
//!   is committed ([`Memo::defer`], [`Memo::take_deferred`]), instead of
//!   waiting for the next heartbeat, which an idle source may not send for
//!   long.

use tcf_iproto::Vclock;

/// Per session: the last heartbeat's `processed`, and an advance to retry.
#[derive(Debug, Default)]
pub(crate) struct Memo {
    covered: Vclock,
    deferred: Option<Vclock>,
}

impl Memo {
    /// A heartbeat arrived with `processed` and `source` (its
    /// `source_vclock`).
    pub(crate) fn heard(&mut self, processed: &Vclock, source: &Vclock) {
        self.covered = processed.clone();
        self.covered.merge(source);
    }

    /// `processed` could not be persisted now (a batch pending): kept, a
    /// later offer replaces it.
    pub(crate) fn defer(&mut self, processed: Vclock) {
        self.deferred = Some(processed);
    }

    /// The advance kept by [`Memo::defer`], once.
    pub(crate) fn take_deferred(&mut self) -> Option<Vclock> {
        self.deferred.take()
    }

    /// Whether `committed` covers everything the last heartbeat's lag
    /// counted and the source's position it gave (nothing heard yet: no).
    pub(crate) fn clears_lag(&self, committed: &Vclock) -> bool {
        !self.covered.is_empty() && self.covered.le(committed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(lsn: u64) -> Vclock {
        [(1, lsn)].into_iter().collect()
    }

    #[test]
    fn the_lag_clears_once_the_heartbeat_is_covered() {
        let mut m = Memo::default();
        assert!(!m.clears_lag(&v(10)), "nothing heard: nothing to clear");
        m.heard(&v(5064), &v(5064));
        assert!(!m.clears_lag(&v(5063)));
        assert!(m.clears_lag(&v(5064)));
        assert!(m.clears_lag(&v(5072)));
        // Caught up with what was shipped, not with the source: still behind.
        m.heard(&v(4000), &v(5072));
        assert!(!m.clears_lag(&v(4000)));
        assert!(m.clears_lag(&v(5072)));
    }

    #[test]
    fn a_deferred_advance_is_taken_once_and_the_latest_wins() {
        let mut m = Memo::default();
        m.defer(v(5065));
        m.defer(v(5072));
        assert_eq!(m.take_deferred(), Some(v(5072)));
        assert_eq!(m.take_deferred(), None);
    }
}
