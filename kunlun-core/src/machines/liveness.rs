//! Machine liveness: an actor that asks every registered machine to run `true` over a fresh
//! SSH connection each interval and keeps `server_nodes.node_stats` in step: `dead` after
//! [`FAILURES_TO_DEAD`] failures in a row, `running` again on the first success.
//!
//! Invariants: the actor owns its failure counters (no shared state); the decision is the pure
//! [`Tracker::observe`], so one missed answer never marks a machine dead; only `node_stats`
//! is written, and only when it changes (each change is logged); every SSH check and store
//! call has a deadline, a whole round has one too ([`round_deadline`]: a check that has not
//! answered by then counts as a failure and is abandoned, so one stuck machine, deleted or
//! not, cannot hold up the others or the next round), and the task stops when the manager's
//! token is cancelled.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kunlun_meta::model::{Machine, MachinePatch, NodeStats};
use kunlun_meta::store::Store;
use kunlun_provision::{SshExecutor, SshOptions};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::fleet::Provisioner;

/// Failed checks in a row that mark a machine `dead`.
pub const FAILURES_TO_DEAD: u32 = 2;
/// Machines checked at once.
const CONCURRENCY: usize = 16;

/// Settings of the liveness actor.
#[derive(Debug, Clone)]
pub(crate) struct LivenessConfig {
    pub interval: Duration,
    /// Deadline of one check (connect included).
    pub timeout: Duration,
    pub failures_to_dead: u32,
}

impl LivenessConfig {
    /// Checks every `interval`; each check gets `interval` clamped to 2..=5 s (an SSH
    /// handshake on a loaded host can take a second; a round may then outlast a short
    /// interval, and the next one simply starts later).
    pub fn new(interval: Duration) -> Self {
        LivenessConfig {
            interval,
            timeout: interval.clamp(Duration::from_secs(2), Duration::from_secs(5)),
            failures_to_dead: FAILURES_TO_DEAD,
        }
    }
}

/// Consecutive failures per machine id, and the state change each new result calls for.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    failures: HashMap<i64, u32>,
    threshold: u32,
}

impl Tracker {
    pub fn new(threshold: u32) -> Self {
        Tracker {
            failures: HashMap::new(),
            threshold: threshold.max(1),
        }
    }

    /// Records one check of `m`; returns the state to store when it must change.
    pub fn observe(&mut self, m: &Machine, ok: bool) -> Option<NodeStats> {
        if ok {
            self.failures.remove(&m.id);
            return (m.node_stats == NodeStats::Dead).then_some(NodeStats::Running);
        }
        let n = self.failures.entry(m.id).or_insert(0);
        *n = n.saturating_add(1);
        (*n >= self.threshold && m.node_stats != NodeStats::Dead).then_some(NodeStats::Dead)
    }

    /// Forgets machines that are no longer registered.
    pub fn retain(&mut self, machines: &[Machine]) {
        self.failures
            .retain(|id, _| machines.iter().any(|m| m.id == *id));
    }
}

/// The actor's loop; see the module doc.
pub(crate) async fn run(
    store: Store,
    p: Provisioner,
    cfg: LivenessConfig,
    cancel: CancellationToken,
) {
    // Its own executor: every check opens a fresh connection (idle ones are dropped at once),
    // so a pooled session that outlived the server cannot make a dead machine look alive.
    let ex = SshExecutor::new(SshOptions {
        connect_timeout: cfg.timeout,
        max_connections_per_host: 1,
        keepalive_interval: Duration::from_secs(1),
        idle_timeout: Duration::ZERO,
        ..SshOptions::default()
    });
    let mut tracker = Tracker::new(cfg.failures_to_dead);
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(interval = ?cfg.interval, "machine liveness check started");
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = round(&store, &p, &ex, &cfg, &mut tracker) => {}
        }
    }
}

/// One pass over every machine.
async fn round(
    store: &Store,
    p: &Provisioner,
    ex: &SshExecutor,
    cfg: &LivenessConfig,
    tracker: &mut Tracker,
) {
    let store_deadline = cfg.interval.max(Duration::from_secs(5));
    let machines = match tokio::time::timeout(store_deadline, store.list_machines()).await {
        Ok(Ok(ms)) => ms,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "liveness: cannot list machines");
            return;
        }
        Err(_) => {
            tracing::debug!("liveness: listing machines timed out");
            return;
        }
    };
    tracker.retain(&machines);

    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut set = JoinSet::new();
    for (i, m) in machines.iter().enumerate() {
        let target = p.target(m);
        let (ex, permits, timeout) = (ex.clone(), permits.clone(), cfg.timeout);
        set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let r = kunlun_provision::probe::alive(&ex, &target, timeout).await;
            (i, r.map_err(|e| e.to_string()))
        });
    }
    let mut results = Vec::with_capacity(machines.len());
    let deadline = round_deadline(cfg, machines.len());
    let collect = async {
        while let Some(joined) = set.join_next().await {
            if let Ok(r) = joined {
                results.push(r);
            }
        }
    };
    if tokio::time::timeout(deadline, collect).await.is_err() {
        tracing::warn!(
            unanswered = set.len(),
            deadline = ?deadline,
            "liveness round deadline passed; the checks still running are abandoned"
        );
        set.abort_all();
    }
    for i in 0..machines.len() {
        if !results.iter().any(|(j, _)| *j == i) {
            results.push((
                i,
                Err("no answer within the liveness round's deadline".into()),
            ));
        }
    }
    results.sort_by_key(|(i, _)| *i);

    for (i, outcome) in results {
        let m = &machines[i];
        if let Err(e) = &outcome {
            tracing::debug!(machine_id = m.id, hostaddr = %m.hostaddr, error = %e, "liveness check failed");
        }
        let Some(next) = tracker.observe(m, outcome.is_ok()) else {
            continue;
        };
        let patch = MachinePatch {
            node_stats: Some(next),
            ..MachinePatch::default()
        };
        match tokio::time::timeout(store_deadline, store.update_machine(m.id, &patch)).await {
            Ok(Ok(_)) => match &outcome {
                Err(e) => tracing::warn!(
                    machine_id = m.id, hostaddr = %m.hostaddr, from = %m.node_stats, to = %next,
                    error = %e, "machine state changed: no answer over SSH"
                ),
                Ok(()) => tracing::info!(
                    machine_id = m.id, hostaddr = %m.hostaddr, from = %m.node_stats, to = %next,
                    "machine state changed: answers over SSH"
                ),
            },
            // Deleted meanwhile, or the store is down: the next round decides again.
            Ok(Err(e)) => {
                tracing::debug!(machine_id = m.id, error = %e, "liveness: cannot store the state")
            }
            Err(_) => tracing::debug!(machine_id = m.id, "liveness: storing the state timed out"),
        }
    }
}

/// How long a round of `n` checks may take: each batch of [`CONCURRENCY`] checks its own
/// deadline, plus the executor's grace for killing a command and the blocking worker.
pub(crate) fn round_deadline(cfg: &LivenessConfig, n: usize) -> Duration {
    let batches = n.div_ceil(CONCURRENCY).max(1) as u32;
    cfg.timeout * batches + Duration::from_secs(10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kunlun_meta::model::MachineType;

    fn machine(id: i64, state: NodeStats) -> Machine {
        Machine {
            data_dirs: vec!["/d".into()],
            node_stats: state,
            ..crate::test_fixtures::machine(
                id,
                "127.0.0.9",
                MachineType::Storage,
                "57000-58000",
                vec![],
            )
        }
    }

    #[test]
    fn two_failures_in_a_row_mark_dead_and_one_success_revives() {
        let mut t = Tracker::new(2);
        let running = machine(1, NodeStats::Running);
        assert_eq!(t.observe(&running, false), None, "one miss is not death");
        assert_eq!(
            t.observe(&running, true),
            None,
            "a success resets the count"
        );
        assert_eq!(t.observe(&running, false), None);
        assert_eq!(t.observe(&running, false), Some(NodeStats::Dead));
        let dead = machine(1, NodeStats::Dead);
        assert_eq!(t.observe(&dead, false), None, "already dead: no write");
        assert_eq!(t.observe(&dead, true), Some(NodeStats::Running));
        assert_eq!(t.observe(&running, true), None, "running stays: no write");
    }

    #[test]
    fn idle_machines_die_but_are_not_woken_and_deleted_ones_are_forgotten() {
        let mut t = Tracker::new(2);
        let idle = machine(2, NodeStats::Idle);
        assert_eq!(t.observe(&idle, true), None);
        t.observe(&idle, false);
        assert_eq!(t.observe(&idle, false), Some(NodeStats::Dead));
        let other = machine(3, NodeStats::Running);
        t.observe(&other, false);
        t.retain(&[machine(3, NodeStats::Running)]);
        assert!(!t.failures.contains_key(&2) && t.failures.contains_key(&3));
    }

    #[test]
    fn a_round_has_a_deadline_that_grows_with_batches() {
        let cfg = LivenessConfig::new(Duration::from_secs(10));
        assert_eq!(round_deadline(&cfg, 0), Duration::from_secs(15));
        assert_eq!(round_deadline(&cfg, 16), Duration::from_secs(15));
        assert_eq!(round_deadline(&cfg, 17), Duration::from_secs(20));
    }

    #[test]
    fn check_deadline_is_clamped() {
        assert_eq!(
            LivenessConfig::new(Duration::from_millis(200)).timeout,
            Duration::from_secs(2)
        );
        assert_eq!(
            LivenessConfig::new(Duration::from_secs(60)).timeout,
            Duration::from_secs(5)
        );
    }
}
