//! The bounded retry policy of a failover that failed part-way (pure; unit-tested): retry after
//! a doubling backoff up to a limit, then give up and leave the shard alarmed for an operator.
//!
//! Invariant: at most `max_retries` further attempts follow the first failure, never two
//! sooner than the backoff apart; a healthy shard or a successful failover resets the count.
//! An attempt that failed because of the shard's facts (a SQL thread that cannot apply, a fence
//! that cannot be proven) is not repeated while those facts are unchanged: it becomes
//! [`RetryDecision::Unchanged`], a refusal with the earlier reason, until they change.

use std::time::{Duration, Instant};

/// How often and how soon a failed failover is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first failed one. Default 3.
    pub max_retries: u32,
    /// Wait before the first retry; doubled for each further one. Default 2 s.
    pub backoff: Duration,
    /// Longest wait between two attempts. Default 30 s.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Failed attempts of one shard's current failover episode.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attempts {
    pub failed: u32,
    pub last_failed_at: Option<Instant>,
    /// The facts (see [`super::ShardView::fingerprint`]) and reason of the last failed attempt
    /// when its failure followed from those facts.
    pub stuck_on: Option<(String, String)>,
}

/// What to do with a dead primary given the earlier failed attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryDecision {
    /// Go ahead (first attempt, or the backoff has passed).
    Attempt,
    /// Too soon; try again at this instant.
    WaitUntil(Instant),
    /// Retries are used up: stay alarmed until an operator acts or the shard heals.
    GiveUp,
    /// The last attempt failed on these same facts and would fail the same way again.
    Unchanged { reason: String },
}

impl RetryPolicy {
    /// The wait after the `failed`-th failed attempt (1-based).
    pub fn backoff_after(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(16);
        self.backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }

    /// Whether to attempt a failover at `now`, the shard's facts being `facts`.
    pub fn decide(&self, a: &Attempts, now: Instant, facts: &str) -> RetryDecision {
        if a.failed == 0 {
            return RetryDecision::Attempt;
        }
        if a.failed > self.max_retries {
            return RetryDecision::GiveUp;
        }
        if let Some((f, reason)) = &a.stuck_on {
            if f == facts {
                return RetryDecision::Unchanged {
                    reason: reason.clone(),
                };
            }
        }
        match a.last_failed_at {
            Some(t) => {
                let at = t + self.backoff_after(a.failed);
                if now >= at {
                    RetryDecision::Attempt
                } else {
                    RetryDecision::WaitUntil(at)
                }
            }
            None => RetryDecision::Attempt,
        }
    }
}

impl Attempts {
    /// Notes a failed attempt at `now`.
    pub fn failed_at(&mut self, now: Instant) {
        self.failed = self.failed.saturating_add(1);
        self.last_failed_at = Some(now);
        self.stuck_on = None;
    }

    /// Notes a failed attempt at `now` whose failure follows from `facts` (with `reason`).
    pub fn failed_on(&mut self, now: Instant, facts: String, reason: String) {
        self.failed_at(now);
        self.stuck_on = Some((facts, reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_attempt_goes_ahead_then_retries_back_off_and_end() {
        let p = RetryPolicy::default();
        let t0 = Instant::now();
        let mut a = Attempts::default();
        assert_eq!(p.decide(&a, t0, "f"), RetryDecision::Attempt);

        a.failed_at(t0);
        assert_eq!(
            p.decide(&a, t0 + Duration::from_secs(1), "f"),
            RetryDecision::WaitUntil(t0 + Duration::from_secs(2))
        );
        assert_eq!(
            p.decide(&a, t0 + Duration::from_secs(2), "f"),
            RetryDecision::Attempt
        );

        let t1 = t0 + Duration::from_secs(2);
        a.failed_at(t1);
        assert_eq!(
            p.decide(&a, t1 + Duration::from_secs(3), "f"),
            RetryDecision::WaitUntil(t1 + Duration::from_secs(4)),
            "doubled"
        );
        let t2 = t1 + Duration::from_secs(4);
        a.failed_at(t2);
        assert_eq!(
            p.decide(&a, t2 + Duration::from_secs(8), "f"),
            RetryDecision::Attempt
        );
        a.failed_at(t2 + Duration::from_secs(8));
        assert_eq!(a.failed, 4, "first attempt and three retries");
        assert_eq!(
            p.decide(&a, t2 + Duration::from_secs(3600), "f"),
            RetryDecision::GiveUp
        );
    }

    #[test]
    fn the_backoff_is_capped_and_never_overflows() {
        let p = RetryPolicy {
            max_retries: u32::MAX,
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(30),
        };
        assert_eq!(p.backoff_after(1), Duration::from_secs(2));
        assert_eq!(p.backoff_after(4), Duration::from_secs(16));
        assert_eq!(p.backoff_after(5), Duration::from_secs(30));
        assert_eq!(p.backoff_after(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn an_attempt_that_failed_on_the_facts_is_not_repeated_until_they_change() {
        let p = RetryPolicy::default();
        let t = Instant::now();
        let mut a = Attempts::default();
        a.failed_on(
            t,
            "facts-1".into(),
            "SQL thread stopped with error 1062".into(),
        );
        let later = t + Duration::from_secs(60);
        assert_eq!(
            p.decide(&a, later, "facts-1"),
            RetryDecision::Unchanged {
                reason: "SQL thread stopped with error 1062".into()
            }
        );
        assert_eq!(p.decide(&a, later, "facts-2"), RetryDecision::Attempt);
        // A failure that did not follow from the facts is retried after the backoff.
        a.failed_at(later);
        assert_eq!(
            p.decide(&a, later + Duration::from_secs(5), "facts-1"),
            RetryDecision::Attempt
        );
    }

    #[test]
    fn no_retries_means_the_first_failure_is_final() {
        let p = RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        };
        let mut a = Attempts::default();
        let t = Instant::now();
        a.failed_at(t);
        assert_eq!(
            p.decide(&a, t + Duration::from_secs(60), "f"),
            RetryDecision::GiveUp
        );
    }
}
