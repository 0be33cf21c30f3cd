//! Counters of XA recovery, shared between the resolver (the only writer) and the metrics
//! endpoint (readers).
//!
//! Invariant: counters only grow; gauges describe the last complete round.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Live counters; cheap to share in an `Arc`.
#[derive(Debug, Default)]
pub struct XaMetrics {
    rounds: AtomicU64,
    found: AtomicU64,
    committed: AtomicU64,
    rolled_back: AtomicU64,
    aborts_claimed: AtomicU64,
    failed: AtomicU64,
    purged_rows: AtomicU64,
    in_doubt: AtomicU64,
    oldest_age_sec: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct XaStats {
    /// Resolver rounds run.
    pub rounds: u64,
    /// Prepared Kunlun branches discovered (each branch counted once, when first seen).
    pub found: u64,
    /// Branches committed by the manager.
    pub committed: u64,
    /// Branches rolled back by the manager.
    pub rolled_back: u64,
    /// Abort decisions the manager wrote into commit logs.
    pub aborts_claimed: u64,
    /// Lookups, claims or statements that failed (retried later).
    pub failed: u64,
    /// Commit-log rows purged by retention.
    pub purged_rows: u64,
    /// Branches left prepared after the last round.
    pub in_doubt: u64,
    /// Age in seconds of the oldest branch seen in the last round (0 when none).
    pub oldest_age_sec: u64,
}

impl XaMetrics {
    pub(crate) fn add_found(&self, n: u64) {
        self.found.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_committed(&self, n: u64) {
        self.committed.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_rolled_back(&self, n: u64) {
        self.rolled_back.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_purged(&self, n: u64) {
        self.purged_rows.fetch_add(n, Ordering::Relaxed);
    }

    /// Records one finished round.
    pub(crate) fn record_round(&self, r: &super::RoundReport) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        self.add_ended(r);
        self.in_doubt.store(r.remaining() as u64, Ordering::Relaxed);
        let age = r
            .oldest_start_ts
            .map_or(0, |ts| r.now.saturating_sub(u64::from(ts)));
        self.oldest_age_sec.store(age, Ordering::Relaxed);
    }

    /// Counts what a pass outside the resolver (failover, manual) ended.
    pub(crate) fn add_ended(&self, r: &super::RoundReport) {
        self.committed
            .fetch_add(r.committed as u64, Ordering::Relaxed);
        self.rolled_back
            .fetch_add(r.rolled_back as u64, Ordering::Relaxed);
        self.aborts_claimed
            .fetch_add(r.aborts_claimed as u64, Ordering::Relaxed);
        self.failed.fetch_add(r.failed as u64, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> XaStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        XaStats {
            rounds: g(&self.rounds),
            found: g(&self.found),
            committed: g(&self.committed),
            rolled_back: g(&self.rolled_back),
            aborts_claimed: g(&self.aborts_claimed),
            failed: g(&self.failed),
            purged_rows: g(&self.purged_rows),
            in_doubt: g(&self.in_doubt),
            oldest_age_sec: g(&self.oldest_age_sec),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xa::RoundReport;

    #[test]
    fn a_round_adds_counts_and_sets_gauges() {
        let m = XaMetrics::default();
        let r = RoundReport {
            found: 5,
            committed: 2,
            rolled_back: 1,
            oldest_start_ts: Some(100),
            now: 130,
            ..RoundReport::default()
        };
        m.add_found(5);
        m.record_round(&r);
        m.record_round(&RoundReport::default());
        let s = m.snapshot();
        assert_eq!(
            (s.rounds, s.found, s.committed, s.rolled_back),
            (2, 5, 2, 1)
        );
        assert_eq!((s.in_doubt, s.oldest_age_sec), (0, 0));
        m.record_round(&r);
        assert_eq!(m.snapshot().in_doubt, 2);
        assert_eq!(m.snapshot().oldest_age_sec, 30);
    }
}
