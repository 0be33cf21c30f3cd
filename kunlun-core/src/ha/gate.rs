//! The failover gate (pure; unit-tested): given that the probes found a shard's primary dead,
//! may its failover start now, must it wait, or is it refused (and the shard alarmed)?
//!
//! Invariant: the checks run in one fixed order (operator's no-switch, the anti-flapping
//! window, a refusal already recorded for the same facts, then the retry policy), so one
//! table of cases says the whole policy; the monitor only acts on the [`Gate`].

use std::time::{Duration, Instant};

use super::detect::in_flap_window;
use super::retry::{Attempts, RetryDecision, RetryPolicy};

/// What the gate looks at.
#[derive(Debug, Clone)]
pub struct GateFacts<'a> {
    pub now: Instant,
    /// The operator's no-switch on the shard, when it still holds.
    pub no_switch_until: Option<Instant>,
    /// When the shard last failed over.
    pub last_failover: Option<Instant>,
    pub flap_window: Duration,
    /// The shard's failed attempts in this episode.
    pub attempts: &'a Attempts,
    pub retry: &'a RetryPolicy,
    /// The shard's facts now ([`super::ShardView::fingerprint`]).
    pub facts: &'a str,
    /// The refusal key of these facts (facts and loss policy), and the one the last refusal
    /// on facts was recorded under.
    pub refusal_key: &'a str,
    pub refused_on: Option<&'a str>,
}

/// What the gate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Start the failover; `retry` when an earlier attempt of this episode failed.
    Proceed { retry: bool },
    /// Do nothing this round (a backoff, or a refusal already recorded for these facts).
    Wait,
    /// Refuse, record why and raise the shard's alarm; `give_up` when retries are used up.
    Refuse { reason: String, give_up: bool },
}

/// The gate's decision (see the module doc for the order).
pub fn gate(f: &GateFacts<'_>) -> Gate {
    let refuse = |reason: String| Gate::Refuse {
        reason,
        give_up: false,
    };
    if let Some(until) = f.no_switch_until.filter(|u| *u > f.now) {
        return refuse(format!("no-switch set for {:?} more", until - f.now));
    }
    if in_flap_window(f.last_failover, f.now, f.flap_window) {
        return refuse(format!(
            "anti-flapping: last failover less than {:?} ago",
            f.flap_window
        ));
    }
    if f.refused_on == Some(f.refusal_key) {
        return Gate::Wait;
    }
    match f.retry.decide(f.attempts, f.now, f.facts) {
        RetryDecision::Attempt => Gate::Proceed {
            retry: f.attempts.failed > 0,
        },
        RetryDecision::WaitUntil(_) => Gate::Wait,
        RetryDecision::Unchanged { reason } => refuse(format!(
            "failover not retried: attempt {} failed and nothing it depends on changed since \
             (same replicas, positions and errors): {reason}; retried once the facts change",
            f.attempts.failed
        )),
        RetryDecision::GiveUp => Gate::Refuse {
            reason: format!(
                "failover failed {} times; retries used up, shard stays alarmed until an \
                 operator acts (switchover) or the primary returns",
                f.attempts.failed
            ),
            give_up: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Case {
        no_switch: Option<Duration>,
        last_failover_ago: Option<Duration>,
        failed: u32,
        last_failed_ago: Duration,
        stuck_on_same_facts: bool,
        refused_same: bool,
    }

    impl Default for Case {
        fn default() -> Self {
            Case {
                no_switch: None,
                last_failover_ago: None,
                failed: 0,
                last_failed_ago: Duration::ZERO,
                stuck_on_same_facts: false,
                refused_same: false,
            }
        }
    }

    fn run(c: Case) -> Gate {
        // A fixed base far enough from the clock's origin for every `now - ago` below.
        let now = Instant::now() + Duration::from_secs(3600);
        let attempts = Attempts {
            failed: c.failed,
            last_failed_at: (c.failed > 0).then(|| now - c.last_failed_ago),
            stuck_on: c
                .stuck_on_same_facts
                .then(|| ("facts".to_string(), "SQL thread stopped".to_string())),
        };
        let retry = RetryPolicy::default();
        gate(&GateFacts {
            now,
            no_switch_until: c.no_switch.map(|d| now + d),
            last_failover: c.last_failover_ago.map(|d| now - d),
            flap_window: Duration::from_secs(60),
            attempts: &attempts,
            retry: &retry,
            facts: "facts",
            refusal_key: "key",
            refused_on: c.refused_same.then_some("key"),
        })
    }

    fn reason(g: &Gate) -> &str {
        match g {
            Gate::Refuse { reason, .. } => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_first_failure_proceeds() {
        assert_eq!(run(Case::default()), Gate::Proceed { retry: false });
    }

    #[test]
    fn no_switch_refuses_first_even_inside_the_flap_window() {
        let g = run(Case {
            no_switch: Some(Duration::from_secs(30)),
            last_failover_ago: Some(Duration::from_secs(1)),
            ..Case::default()
        });
        assert!(reason(&g).starts_with("no-switch set for"), "{g:?}");
    }

    #[test]
    fn the_flap_window_refuses_and_then_lets_go() {
        let g = run(Case {
            last_failover_ago: Some(Duration::from_secs(10)),
            ..Case::default()
        });
        assert!(reason(&g).starts_with("anti-flapping"), "{g:?}");
        let g = run(Case {
            last_failover_ago: Some(Duration::from_secs(61)),
            ..Case::default()
        });
        assert_eq!(g, Gate::Proceed { retry: false });
    }

    #[test]
    fn a_refusal_already_recorded_for_the_same_facts_waits() {
        let g = run(Case {
            refused_same: true,
            failed: 1,
            last_failed_ago: Duration::from_secs(100),
            ..Case::default()
        });
        assert_eq!(g, Gate::Wait);
    }

    #[test]
    fn retries_wait_for_the_backoff_then_proceed_as_retries() {
        let early = run(Case {
            failed: 1,
            last_failed_ago: Duration::from_millis(500),
            ..Case::default()
        });
        assert_eq!(early, Gate::Wait);
        let later = run(Case {
            failed: 1,
            last_failed_ago: Duration::from_secs(3),
            ..Case::default()
        });
        assert_eq!(later, Gate::Proceed { retry: true });
    }

    #[test]
    fn an_attempt_failed_on_unchanged_facts_is_refused_not_retried() {
        let g = run(Case {
            failed: 1,
            last_failed_ago: Duration::from_secs(100),
            stuck_on_same_facts: true,
            ..Case::default()
        });
        assert!(reason(&g).contains("SQL thread stopped"), "{g:?}");
        assert!(matches!(g, Gate::Refuse { give_up: false, .. }));
    }

    #[test]
    fn used_up_retries_give_up() {
        let g = run(Case {
            failed: RetryPolicy::default().max_retries + 1,
            last_failed_ago: Duration::from_secs(1000),
            ..Case::default()
        });
        assert!(matches!(g, Gate::Refuse { give_up: true, .. }), "{g:?}");
        assert!(reason(&g).contains("retries used up"));
    }
}
