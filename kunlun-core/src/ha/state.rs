//! What the HA monitor publishes (node health, events, failover records, counters) and the
//! operator controls it obeys (per-shard no-switch with a deadline, loss policy), shared
//! between the actor and the API through [`HaShared`].
//!
//! Invariant: the lock is a `std` mutex held only for copies in and out, never across an
//! `.await`; the actor is the only writer of health and records.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::choose::LossPolicy;
use super::failover::FailoverRecord;
use super::probe::NodeProbe;

/// Most events and failover records kept in memory.
const KEEP: usize = 1000;

/// Health of a node as the monitor classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Up,
    /// Some probes failed, fewer than the threshold.
    Suspect,
    Down,
}

/// Published health of one storage node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeHealth {
    pub node_id: i64,
    pub shard_id: i64,
    pub cluster_id: i64,
    pub addr: String,
    pub is_primary: bool,
    pub state: NodeState,
    pub consecutive_failures: u32,
    pub probed_at: DateTime<Utc>,
    pub probe: NodeProbe,
}

/// A state change or an action of the monitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HaEvent {
    pub at: DateTime<Utc>,
    pub cluster_id: i64,
    pub shard_id: i64,
    pub node_id: Option<i64>,
    pub what: String,
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HaStats {
    pub rounds: u64,
    pub probes: u64,
    pub probe_failures: u64,
    pub failovers: u64,
    pub failovers_refused: u64,
    pub failovers_failed: u64,
    /// Failover attempts that retried an earlier failed one.
    pub failover_retries: u64,
    /// Shards whose failover retries are used up (alarmed until an operator acts).
    pub shards_given_up: u64,
    /// Replicas whose stopped replication threads the monitor started again.
    pub replication_restarts: u64,
    /// Replicas the monitor repointed at their primary (no or another source set).
    pub replicas_repointed: u64,
    /// Followers a failover or switchover found errant and kept out for rebuild.
    pub errant_followers: u64,
    /// Followers a failover or switchover repointed that did not replicate within the bound.
    pub followers_not_replicating: u64,
    /// Primaries the monitor holds a watch session to now ([`super::watch`]).
    pub watched_primaries: u64,
}

/// What HA is doing about one shard (and one of its nodes), as the instance keeper asks it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HaStance {
    /// A failover or switchover task of the shard runs: its nodes are HA's alone.
    pub busy: bool,
    /// HA declined to fail the shard's dead primary over (refused: no provable candidate,
    /// no-switch, anti-flapping; or its retries are used up), until the shard is healthy again
    /// or fails over.
    pub declined: bool,
    /// The node is a failed-over old primary HA waits for, to rejoin it as a replica.
    pub awaiting_rejoin: bool,
}

/// A node kept out for rebuild because it holds transactions its shard's primary lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrantNode {
    pub node_id: i64,
    pub shard_id: i64,
    pub cluster_id: i64,
    /// The transactions the primary lacks, `domain-server-from..to` ranges.
    pub gtids: String,
    /// The failover or switchover record that found it.
    pub record: u64,
}

/// The shared part; see the module invariant.
#[derive(Debug, Default)]
pub struct HaShared {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    health: BTreeMap<i64, NodeHealth>,
    events: VecDeque<HaEvent>,
    records: VecDeque<FailoverRecord>,
    next_record: u64,
    /// Shard alarms (refused failovers), cleared when the shard is healthy again.
    alarms: BTreeMap<i64, String>,
    no_switch: HashMap<i64, Instant>,
    no_switch_nodes: HashSet<i64>,
    policy: HashMap<i64, LossPolicy>,
    given_up: HashSet<i64>,
    /// Errant nodes kept out for rebuild, by node id, until they are active again or gone.
    errant: BTreeMap<i64, ErrantNode>,
    /// What the instance keeper must know of HA's work (see [`HaShared::stance`]).
    busy: HashSet<i64>,
    declined: HashSet<i64>,
    rejoining: HashSet<i64>,
    memory_records: u64,
    stats: HaStats,
}

impl HaShared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Health of every probed node, by node id.
    pub fn health(&self) -> Vec<NodeHealth> {
        self.lock().health.values().cloned().collect()
    }

    /// Health of one node.
    pub fn node_health(&self, node_id: i64) -> Option<NodeHealth> {
        self.lock().health.get(&node_id).cloned()
    }

    /// Recent events, oldest first.
    pub fn events(&self) -> Vec<HaEvent> {
        self.lock().events.iter().cloned().collect()
    }

    /// Failover records, newest first, optionally of one shard.
    pub fn failovers(&self, shard_id: Option<i64>) -> Vec<FailoverRecord> {
        self.lock()
            .records
            .iter()
            .rev()
            .filter(|r| shard_id.is_none_or(|s| r.shard_id == s))
            .cloned()
            .collect()
    }

    /// Whether any record (of `shard_id`, or of any shard) is one the store could not take.
    pub fn any_memory_only_failover(&self, shard_id: Option<i64>) -> bool {
        self.lock().records.iter().any(|r| {
            r.id >= super::records::MEMORY_ID_BASE && shard_id.is_none_or(|s| r.shard_id == s)
        })
    }

    /// One failover record.
    pub fn failover(&self, id: u64) -> Option<FailoverRecord> {
        self.lock().records.iter().find(|r| r.id == id).cloned()
    }

    /// The open alarm of one shard.
    pub fn alarm(&self, shard_id: i64) -> Option<String> {
        self.lock().alarms.get(&shard_id).cloned()
    }

    /// Open alarms by shard.
    pub fn alarms(&self) -> BTreeMap<i64, String> {
        self.lock().alarms.clone()
    }

    /// Counters.
    pub fn stats(&self) -> HaStats {
        let g = self.lock();
        HaStats {
            shards_given_up: g.given_up.len() as u64,
            ..g.stats.clone()
        }
    }

    /// Nodes kept out for rebuild because they hold errant transactions.
    pub fn errant_nodes(&self) -> Vec<ErrantNode> {
        self.lock().errant.values().cloned().collect()
    }

    /// Lists `n` as kept out for rebuild (a returning old primary with errant transactions),
    /// until it is an active member again or gone.
    pub(crate) fn mark_errant(&self, n: ErrantNode) {
        self.lock().errant.insert(n.node_id, n);
    }

    /// Keeps only the errant nodes `still_out(node, shard)` says are still kept out.
    pub(crate) fn retain_errant(&self, still_out: impl Fn(i64, i64) -> bool) {
        self.lock()
            .errant
            .retain(|id, e| still_out(*id, e.shard_id));
    }

    /// What HA is doing about `shard_id` and, for a failed-over old primary, whether it waits
    /// for `node_id` to come back: what the instance keeper needs to leave roles to HA.
    pub fn stance(&self, shard_id: i64, node_id: i64) -> HaStance {
        let g = self.lock();
        HaStance {
            busy: g.busy.contains(&shard_id),
            declined: g.declined.contains(&shard_id),
            awaiting_rejoin: g.rejoining.contains(&node_id),
        }
    }

    pub(crate) fn set_busy_shards(&self, shards: impl Iterator<Item = i64>) {
        self.lock().busy = shards.collect();
    }

    pub(crate) fn set_declined(&self, shard_id: i64, on: bool) {
        let mut g = self.lock();
        if on {
            g.declined.insert(shard_id);
        } else {
            g.declined.remove(&shard_id);
        }
    }

    pub(crate) fn set_rejoining(&self, nodes: impl Iterator<Item = i64>) {
        self.lock().rejoining = nodes.collect();
    }

    /// Records kept in memory only (the store could not take them), newest first.
    pub fn memory_only_failovers(&self, shard_id: Option<i64>) -> Vec<FailoverRecord> {
        self.failovers(shard_id)
            .into_iter()
            .filter(|r| r.id >= super::records::MEMORY_ID_BASE)
            .collect()
    }

    /// Forbids automatic failover of `shard_id` until `until` (`None` lifts it).
    pub fn set_no_switch(&self, shard_id: i64, until: Option<Instant>) {
        let mut g = self.lock();
        match until {
            Some(t) => g.no_switch.insert(shard_id, t),
            None => g.no_switch.remove(&shard_id),
        };
    }

    /// The no-switch deadline of a shard, if one is still in force at `now`.
    pub fn no_switch_until(&self, shard_id: i64, now: Instant) -> Option<Instant> {
        self.lock()
            .no_switch
            .get(&shard_id)
            .copied()
            .filter(|t| *t > now)
    }

    /// Marks a node as never to be promoted (or lifts it).
    pub fn set_node_no_switch(&self, node_id: i64, on: bool) {
        let mut g = self.lock();
        if on {
            g.no_switch_nodes.insert(node_id);
        } else {
            g.no_switch_nodes.remove(&node_id);
        }
    }

    /// True when the node must never be promoted.
    pub fn node_no_switch(&self, node_id: i64) -> bool {
        self.lock().no_switch_nodes.contains(&node_id)
    }

    /// Sets the loss policy of a shard.
    pub fn set_loss_policy(&self, shard_id: i64, p: LossPolicy) {
        self.lock().policy.insert(shard_id, p);
    }

    /// The loss policy of a shard (default: refuse).
    pub fn loss_policy(&self, shard_id: i64) -> LossPolicy {
        self.lock()
            .policy
            .get(&shard_id)
            .copied()
            .unwrap_or_default()
    }

    pub(crate) fn publish_health(&self, h: NodeHealth) {
        self.lock().health.insert(h.node_id, h);
    }

    pub(crate) fn forget_missing(&self, present: &HashSet<i64>) {
        self.lock().health.retain(|id, _| present.contains(id));
    }

    pub(crate) fn event(&self, cluster_id: i64, shard_id: i64, node_id: Option<i64>, what: String) {
        tracing::info!(cluster = cluster_id, shard = shard_id, node = ?node_id, "{what}");
        let mut g = self.lock();
        g.events.push_back(HaEvent {
            at: Utc::now(),
            cluster_id,
            shard_id,
            node_id,
            what,
        });
        while g.events.len() > KEEP {
            g.events.pop_front();
        }
    }

    /// Keeps a record and returns its id: the store's id when it has one (non-zero), else a
    /// memory-only id from [`super::records::MEMORY_ID_BASE`] on.
    pub(crate) fn record(&self, mut r: FailoverRecord) -> u64 {
        let mut g = self.lock();
        if r.id == 0 {
            g.memory_records += 1;
            r.id = super::records::MEMORY_ID_BASE + g.memory_records;
        }
        g.next_record = r.id;
        g.stats.errant_followers += r.errant_followers.len() as u64;
        g.stats.followers_not_replicating += r.not_replicating.len() as u64;
        for e in &r.errant_followers {
            let n = ErrantNode {
                node_id: e.node_id,
                shard_id: r.shard_id,
                cluster_id: r.cluster_id,
                gtids: e.gtids.clone(),
                record: r.id,
            };
            g.errant.insert(e.node_id, n);
        }
        match r.outcome {
            super::failover::Outcome::Promoted => g.stats.failovers += 1,
            super::failover::Outcome::Refused => g.stats.failovers_refused += 1,
            super::failover::Outcome::Failed => g.stats.failovers_failed += 1,
        }
        g.records.push_back(r);
        while g.records.len() > KEEP {
            g.records.pop_front();
        }
        g.next_record
    }

    /// Sets the old primary's fate on a stored record.
    pub(crate) fn set_fate(&self, id: u64, fate: String) {
        if let Some(r) = self.lock().records.iter_mut().find(|r| r.id == id) {
            r.old_primary_fate = Some(fate);
        }
    }

    pub(crate) fn set_alarm(&self, shard_id: i64, why: Option<String>) {
        let mut g = self.lock();
        match why {
            Some(w) => g.alarms.insert(shard_id, w),
            None => g.alarms.remove(&shard_id),
        };
    }

    /// Counts a replica upkeep action: a restart of its threads, or a repoint.
    pub(crate) fn count_upkeep(&self, repointed: bool) {
        let mut g = self.lock();
        if repointed {
            g.stats.replicas_repointed += 1;
        } else {
            g.stats.replication_restarts += 1;
        }
    }

    pub(crate) fn count_retry(&self) {
        self.lock().stats.failover_retries += 1;
    }

    pub(crate) fn set_given_up(&self, shard_id: i64, on: bool) {
        let mut g = self.lock();
        if on {
            g.given_up.insert(shard_id);
        } else {
            g.given_up.remove(&shard_id);
        }
    }

    pub(crate) fn set_watched(&self, n: usize) {
        self.lock().stats.watched_primaries = n as u64;
    }

    pub(crate) fn count_round(&self, probes: u64, failures: u64) {
        let mut g = self.lock();
        g.stats.rounds += 1;
        g.stats.probes += probes;
        g.stats.probe_failures += failures;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stance_the_keeper_reads_follows_what_the_monitor_publishes() {
        let s = HaShared::default();
        assert_eq!(s.stance(1, 10), HaStance::default());
        s.set_busy_shards([1, 2].into_iter());
        s.set_declined(3, true);
        s.set_rejoining([10].into_iter());
        assert!(s.stance(1, 11).busy && !s.stance(3, 11).busy);
        assert!(s.stance(3, 11).declined && !s.stance(1, 11).declined);
        assert!(s.stance(1, 10).awaiting_rejoin && !s.stance(1, 11).awaiting_rejoin);
        s.set_busy_shards(std::iter::empty());
        s.set_declined(3, false);
        s.set_rejoining(std::iter::empty());
        assert_eq!(s.stance(3, 10), HaStance::default());
    }
}
