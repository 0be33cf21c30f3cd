//! What the instance keeper publishes (restarts per node, crash-looping nodes with their alarm
//! and log tail, events, counters) for `/v1/ha` and `/metrics`, shared between the actor and
//! the API through [`KeeperShared`].
//!
//! Invariant: the lock is a `std` mutex held only for copies in and out, never across an
//! `.await`; the actor is the only writer; every list is bounded (events to [`KEEP`], nodes
//! and crash loops to the nodes that exist).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Most events kept in memory.
const KEEP: usize = 1000;
/// Most events returned by [`KeeperShared::status`].
const RECENT_EVENTS: usize = 100;

/// Storage or compute: node ids are per kind (two tables), so a node is `(kind, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Storage,
    Compute,
}

/// A node the keeper knows, by kind and id.
pub type NodeKey = (NodeKind, i64);

/// Restarts of one node by the keeper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRestarts {
    pub kind: NodeKind,
    pub node_id: i64,
    pub cluster_id: i64,
    pub shard_id: Option<i64>,
    /// `host:port`.
    pub addr: String,
    /// Restarts the keeper began (this term).
    pub restarts: u64,
    /// Restarts counted towards the crash-loop limit now (within the window).
    pub restarts_in_window: u64,
    pub last_at: Option<DateTime<Utc>>,
    /// `restarted`, or `failed: <why>`.
    pub last_outcome: Option<String>,
}

/// A node the keeper stopped restarting: it went down again after `max_restarts` restarts
/// within the window. Stays until the node is seen up (an operator fixed and started it) or
/// leaves service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrashLoop {
    pub kind: NodeKind,
    pub node_id: i64,
    pub cluster_id: i64,
    pub shard_id: Option<i64>,
    pub addr: String,
    pub since: DateTime<Utc>,
    /// What the operator reads: restarts, window, last error.
    pub alarm: String,
    /// The end of the server's own log (a few KB), or why it could not be read.
    pub log_tail: String,
}

/// One thing the keeper did or decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeeperEvent {
    pub at: DateTime<Utc>,
    pub cluster_id: Option<i64>,
    pub shard_id: Option<i64>,
    pub kind: Option<NodeKind>,
    pub node_id: Option<i64>,
    pub what: String,
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KeeperStats {
    pub rounds: u64,
    /// Machines checked over SSH, and checks that failed (unreachable, timed out).
    pub checks: u64,
    pub check_failures: u64,
    /// Instances found down (each time).
    pub found_down: u64,
    /// Restarts begun, and those that failed.
    pub restarts: u64,
    pub restart_failures: u64,
    /// Nodes given up on now (gauge).
    pub crash_loops: u64,
}

/// What `/v1/ha` shows of the keeper.
#[derive(Debug, Clone, Serialize)]
pub struct KeeperStatus {
    /// Seconds between two rounds.
    pub interval_secs: f64,
    pub max_restarts: u32,
    pub restart_window_secs: u64,
    pub stats: KeeperStats,
    /// Nodes the keeper restarted this term.
    pub nodes: Vec<NodeRestarts>,
    pub crash_loops: Vec<CrashLoop>,
    /// The most recent events, oldest first.
    pub events: Vec<KeeperEvent>,
}

/// The shared part; see the module invariant.
#[derive(Debug, Default)]
pub struct KeeperShared {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    settings: (f64, u32, u64),
    stats: KeeperStats,
    nodes: BTreeMap<NodeKey, NodeRestarts>,
    crash_loops: BTreeMap<NodeKey, CrashLoop>,
    events: VecDeque<KeeperEvent>,
}

impl KeeperShared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything published, with the most recent events.
    pub fn status(&self) -> KeeperStatus {
        let g = self.lock();
        let skip = g.events.len().saturating_sub(RECENT_EVENTS);
        KeeperStatus {
            interval_secs: g.settings.0,
            max_restarts: g.settings.1,
            restart_window_secs: g.settings.2,
            stats: KeeperStats {
                crash_loops: g.crash_loops.len() as u64,
                ..g.stats.clone()
            },
            nodes: g.nodes.values().cloned().collect(),
            crash_loops: g.crash_loops.values().cloned().collect(),
            events: g.events.iter().skip(skip).cloned().collect(),
        }
    }

    pub(crate) fn set_settings(&self, interval_secs: f64, max_restarts: u32, window_secs: u64) {
        self.lock().settings = (interval_secs, max_restarts, window_secs);
    }

    pub(crate) fn event(&self, e: KeeperEvent) {
        tracing::info!(cluster = ?e.cluster_id, node = ?e.node_id, kind = ?e.kind, "keeper: {}", e.what);
        let mut g = self.lock();
        g.events.push_back(e);
        while g.events.len() > KEEP {
            g.events.pop_front();
        }
    }

    pub(crate) fn count_round(&self, checks: u64, failures: u64, down: u64) {
        let mut g = self.lock();
        g.stats.rounds += 1;
        g.stats.checks += checks;
        g.stats.check_failures += failures;
        g.stats.found_down += down;
    }

    /// A restart of `n` began (its entry is created from `n`'s identity fields).
    pub(crate) fn restart_begun(&self, key: NodeKey, n: &NodeRestarts) {
        let mut g = self.lock();
        g.stats.restarts += 1;
        let e = g.nodes.entry(key).or_insert_with(|| n.clone());
        e.restarts += 1;
        e.restarts_in_window = n.restarts_in_window;
        e.last_at = Some(Utc::now());
        e.last_outcome = Some("restarting".into());
    }

    /// A restart of `key` ended with `outcome` (`Err`: why it failed).
    pub(crate) fn restart_ended(&self, key: NodeKey, outcome: Result<(), String>) {
        let mut g = self.lock();
        if outcome.is_err() {
            g.stats.restart_failures += 1;
        }
        if let Some(e) = g.nodes.get_mut(&key) {
            e.last_outcome = Some(match outcome {
                Ok(()) => "restarted".into(),
                Err(why) => format!("failed: {why}"),
            });
        }
    }

    pub(crate) fn set_crash_loop(&self, key: NodeKey, c: Option<CrashLoop>) {
        let mut g = self.lock();
        match c {
            Some(c) => g.crash_loops.insert(key, c),
            None => g.crash_loops.remove(&key),
        };
    }

    pub(crate) fn crash_looping(&self, key: NodeKey) -> bool {
        self.lock().crash_loops.contains_key(&key)
    }

    /// Forgets the restarts of nodes that no longer `exist` and the crash loops of nodes no
    /// longer `in_service` (an operator stopped it, a job removes it).
    pub(crate) fn retain(
        &self,
        exist: impl Fn(&NodeKey) -> bool,
        in_service: impl Fn(&NodeKey) -> bool,
    ) {
        let mut g = self.lock();
        g.nodes.retain(|k, _| exist(k));
        g.crash_loops.retain(|k, _| in_service(k));
    }
}
